"""Text environments: the Environment protocol, ALFWorld on TextWorld and ScienceWorld."""

from duomem.envs.base import TASK_TYPES, Environment, Observation, TaskSpec

__all__ = ["TASK_TYPES", "Environment", "Observation", "TaskSpec"]
