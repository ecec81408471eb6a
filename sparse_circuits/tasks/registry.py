"""The registered tasks, looked up by name. Importing the suite is what registers them (core.task)."""

from __future__ import annotations

from ..errors import UserError
from . import suite  # noqa: F401  (registers the tasks)
from .core import TASKS, Task


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; `sparse-circuits tasks list` shows the {len(TASKS)} tasks")
    return TASKS[name]


def all_tasks(include_controls: bool = True) -> list[Task]:
    return [t for t in TASKS.values() if include_controls or not t.control]
