"""User-facing errors: one line saying what went wrong and what to do."""


class DuomemError(Exception):
    """An error caused by input or set-up that the user can fix; the CLI prints it as one line."""


class DataError(DuomemError):
    """Missing, malformed or unplayable task data."""


class ModelError(DuomemError):
    """A model that cannot be resolved, installed or loaded."""


class ConfigError(DuomemError):
    """An invalid configuration value."""


class EngineError(DuomemError):
    """A game engine that cannot start: its runtime (Java for ScienceWorld) or its package is missing."""


class EnvTimeout(DuomemError):
    """A game step that did not return within its time limit."""


class TrainingError(DuomemError):
    """Training that cannot go on as set (a loss or gradient that is no longer finite)."""
