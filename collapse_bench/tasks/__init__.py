"""Task and suite definitions (typed YAML) and their registry."""

from .loader import Suite, Task, TaskRegistry

__all__ = ["Suite", "Task", "TaskRegistry"]
