"""Tasks from data, not code: a JSONL file of minimal pairs, used like a built-in task.

A researcher who wants a task the suite does not have writes its pairs, one JSON object per line:

    {"prompt_a": "...", "prompt_b": "...", "correct_a": "...", "correct_b": "...",
     "ending_a": "...", "ending_b": "..."}

`prompt_a`'s right continuation is `correct_a`, `prompt_b`'s is `correct_b`; the endings (default a
newline) complete prompt + continuation into the code that follows, exactly as `PairSpec` of a
generated task. The task is named after the file (`dict_get.jsonl` -> `dict_get`) and is used
through `--task-file` by `tasks show/eval`, `prune`, `prune-all`, `validate`, `report` and the
other commands that take a task (docs/tasks.md).

The same rules as the built-in tasks hold: each pair goes to the train, validation or test split
by a stable hash of its prompts (the 6:2:2 shares of `core.SPLIT_SHARES`), and the evaluated token
obeys the token boundary rule of core.py. A generated task redraws a pair the tokenizer cannot
express; a pair from a file was chosen by hand, so one that the tokenizer cannot express is an
error naming its line, never silently dropped. A split gives at most its own pairs: asking for 128
pairs of a file with 40 test pairs evaluates those 40.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from ..errors import UserError
from .core import DIAGNOSTICS, FILE_TASKS, TASKS, PairSpec, Split, Task, TaskDataset, TaskNotExpressible, \
    check_pair, split_of

REQUIRED_KEYS = ("prompt_a", "prompt_b", "correct_a", "correct_b")
OPTIONAL_KEYS = ("ending_a", "ending_b")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


@dataclass(frozen=True)
class FilePair:
    """One row of a task file and the line it came from (for error messages)."""
    line: int
    spec: PairSpec

    @property
    def split(self) -> Split:
        return split_of(self.spec.prompt_a + "\x00" + self.spec.prompt_b)


def _no_generator(pools) -> PairSpec:
    raise AssertionError("a task from a file has no generator; its pairs come from the file")


@dataclass(frozen=True)
class DataTask(Task):
    """A task whose pairs are the rows of a JSONL file instead of a generator's draws."""
    path: str = ""
    pairs: tuple[FilePair, ...] = ()

    def split_pairs(self, split: Split) -> list[FilePair]:
        return [p for p in self.pairs if p.split == split]

    def draw_pairs(self, split: Split, n_pairs: int, seed: int) -> list[PairSpec]:
        """Up to `n_pairs` of the split's pairs, in an order fixed by the seed (as a generator's draws)."""
        chosen = self.split_pairs(split)
        if not chosen:
            raise UserError(f"task file {self.path}: none of its {len(self.pairs)} pairs falls in the {split.value} "
                            f"split (pairs go to train/val/test 6:2:2 by a hash of their prompts); add pairs")
        random.Random(f"{self.name}/{split.value}/{seed}").shuffle(chosen)
        return [p.spec for p in chosen[:n_pairs]]

    def check_tokens(self, tokenizer: Tokenizer) -> dict[tuple[str, str], list[tuple[list[int], int, int]]]:
        """Every pair of the file obeys the token boundary rule with this tokenizer (or a one-line
        error); the token ids of each pair, by its prompts (unique in a file)."""
        tokens = {}
        for p in self.pairs:
            problem, tokens[p.spec.prompt_a, p.spec.prompt_b] = check_pair(tokenizer, p.spec)
            if problem:
                raise TaskNotExpressible(f"task file {self.path}, line {p.line}: this tokenizer cannot express the "
                                         f"pair: {problem}; end the prompt where the code's tokens split")
        return tokens

    def build(self, tokenizer: Tokenizer, split: Split | str = Split.TEST, n_pairs: int = 128,
              seed: int = 0) -> TaskDataset:
        split = Split(split)
        tokens = self.check_tokens(tokenizer)
        ds = TaskDataset(self, split, seed, [])
        for spec in self.draw_pairs(split, n_pairs, seed):
            ds.add_pair(spec, tokens[spec.prompt_a, spec.prompt_b])
        return ds


def _row(path: Path, line: int, text: str) -> PairSpec:
    where = f"task file {path}, line {line}"
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not JSON ({e.msg}); each line is one object with {', '.join(REQUIRED_KEYS)}") \
            from None
    if not isinstance(row, dict):
        raise UserError(f"{where}: a {type(row).__name__}, not a JSON object with {', '.join(REQUIRED_KEYS)}")
    unknown = sorted(set(row) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; the keys are "
                        f"{', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if k not in row]
    if missing:
        raise UserError(f"{where}: missing {', '.join(missing)}")
    for key, value in row.items():
        if not isinstance(value, str):
            raise UserError(f"{where}: {key} must be a string, got {type(value).__name__}")
        if key in REQUIRED_KEYS and not value:
            raise UserError(f"{where}: {key} is empty")
    if row["correct_a"] == row["correct_b"]:
        raise UserError(f"{where}: correct_a and correct_b are both {row['correct_a']!r}; a minimal pair's "
                        "continuations differ")
    if row["prompt_a"] == row["prompt_b"]:
        raise UserError(f"{where}: prompt_a and prompt_b are the same; a minimal pair's prompts differ in the "
                        "detail that decides the continuation")
    return PairSpec(row["prompt_a"], row["prompt_b"], row["correct_a"], row["correct_b"],
                    row.get("ending_a", "\n"), row.get("ending_b", "\n"))


def read_task_file(path: str | os.PathLike) -> DataTask:
    """The task of one JSONL file, every row checked; a bad file is a one-line `UserError`."""
    path = Path(path)
    name = path.stem
    if not path.is_file():
        raise UserError(f"task file {path}: not found (a .jsonl file of minimal pairs, docs/tasks.md)")
    if not NAME.fullmatch(name):
        raise UserError(f"task file {path}: the task is named after the file, and {name!r} is not a name "
                        "(letters, digits, _ and -); rename the file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"task file {path}: not UTF-8 (byte {e.start}); save it as UTF-8") from None
    pairs, seen = [], {}
    for line, row_text in enumerate(text.splitlines(), 1):
        if not row_text.strip():
            continue
        spec = _row(path, line, row_text)
        key = (spec.prompt_a, spec.prompt_b)
        if key in seen:
            raise UserError(f"task file {path}, line {line}: the same prompts as line {seen[key]}; "
                            "remove the duplicate pair")
        seen[key] = line
        pairs.append(FilePair(line, spec))
    if not pairs:
        raise UserError(f"task file {path}: no pairs; write one JSON object per line with {', '.join(REQUIRED_KEYS)}")
    (cand_a, cand_b), _ = Counter((p.spec.cont_a, p.spec.cont_b) for p in pairs).most_common(1)[0]
    return DataTask(name, f"from {path.name} ({len(pairs)} pairs)", (cand_a, cand_b), _no_generator,
                    path=str(path), pairs=tuple(pairs))


def use_task_files(paths: list[str | os.PathLike]) -> list[DataTask]:
    """Read task files and register their tasks for this process (`get_task`, `all_tasks`).

    A name that a built-in task, a diagnostic probe or another file already has is an error; giving
    the same file twice is not."""
    tasks = [read_task_file(p) for p in paths]
    registered = dict(FILE_TASKS)  # registered only when every file is good
    for t in tasks:
        if t.name in TASKS or t.name in DIAGNOSTICS:
            raise UserError(f"task file {t.path}: {t.name!r} is the name of a built-in task; rename the file")
        other = registered.get(t.name)
        if other is not None and Path(other.path).resolve() != Path(t.path).resolve():
            raise UserError(f"task files {other.path} and {t.path} both name a task {t.name!r}; rename one")
        registered[t.name] = t
    FILE_TASKS.update(registered)
    return tasks


def forget_task_files() -> None:
    """Unregister every task from a file (tests, notebooks that load another set)."""
    FILE_TASKS.clear()
