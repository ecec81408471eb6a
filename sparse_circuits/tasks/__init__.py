"""The task suite: generators of minimal pairs of Python prompts (see core.py and suite.py)."""

from .core import Split, Task, TaskDataset, TaskNotExpressible, task
from .registry import all_tasks, get_task

__all__ = ["Split", "Task", "TaskDataset", "TaskNotExpressible", "all_tasks", "get_task", "task"]
