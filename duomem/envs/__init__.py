"""Text environments: the Environment protocol and ALFWorld on TextWorld."""

from duomem.envs.base import TASK_TYPES, Environment, Observation, TaskSpec

__all__ = ["TASK_TYPES", "Environment", "Observation", "TaskSpec"]
