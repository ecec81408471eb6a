"""The registered tasks, looked up by name. Importing the suite is what registers them (core.task)."""

from __future__ import annotations

from ..errors import UserError
from . import suite  # noqa: F401  (registers the tasks)
from .core import DIAGNOSTICS, FILE_TASKS, TASKS, Task


def get_task(name: str) -> Task:
    """A task of the suite, a diagnostic probe or a task from a file (`use_task_files`), by name."""
    for registry in (TASKS, DIAGNOSTICS, FILE_TASKS):
        if name in registry:
            return registry[name]
    raise UserError(f"unknown task {name!r}; `sparse-circuits tasks list` shows the {len(TASKS)} tasks and "
                    f"{len(DIAGNOSTICS)} diagnostic probes (a task from data needs its --task-file FILE.jsonl)")


def all_tasks(include_controls: bool = True) -> list[Task]:
    """The suite: the paper's 20 tasks and the controls (never the diagnostic probes), then the tasks
    from files given to this process (`use_task_files`)."""
    return [t for t in TASKS.values() if include_controls or not t.control] + list(FILE_TASKS.values())


def diagnostic_tasks() -> list[Task]:
    return list(DIAGNOSTICS.values())


def probes_of(task_name: str) -> list[Task]:
    """The diagnostic probes that separate the mechanisms a model may use for this suite task."""
    return [t for t in DIAGNOSTICS.values() if task_name in t.probes]
