"""Scoring a model on task datasets (SPEC section 5).

Task loss: binary cross-entropy over the two candidate logits at the prompt's last position,
-log sigmoid(logit_correct - logit_wrong), averaged over every sequence (both members of every
pair), in nats per sequence. Chance is ln 2 = 0.693. Never summed over a pair.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from tqdm import tqdm

from ..errors import UserError
from ..hooks import Hooks
from ..model import GPT
from .core import Split, Task, TaskDataset, TaskNotExpressible

CHANCE_LOSS = math.log(2)
LEARNED_ACCURACY = 0.9  # a model "does" a task at test accuracy >= this (issue 10's targets count these)


@dataclass
class TaskScore:
    task: str
    split: str
    n: int  # sequences (2 per pair)
    loss: float
    accuracy: float
    logit_diff: float  # mean of logit_correct - logit_wrong
    bigram_loss: float | None = None  # the same metrics from the corpus bigram table alone
    bigram_accuracy: float | None = None
    error: str | None = None  # set when the task cannot be expressed with this tokenizer

    def as_dict(self) -> dict:
        return asdict(self)


def score_logit_diffs(diff: torch.Tensor) -> tuple[float, float, float]:
    """(loss, accuracy, mean logit difference) from logit_correct - logit_wrong per sequence.

    A tie (difference exactly 0) counts as half right, like a coin flip.
    """
    diff = diff.double()
    accuracy = float((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean())
    return float(F.softplus(-diff).mean()), accuracy, float(diff.mean())


def task_loss(correct_logits: torch.Tensor, wrong_logits: torch.Tensor) -> torch.Tensor:
    """Differentiable task loss, mean over sequences (what pruning minimises)."""
    return F.softplus(wrong_logits - correct_logits).mean()


class TaskTensors:
    """A task dataset as right-padded token tensors (prompts left-truncated to the context).

    Attention is causal, so padding after a prompt never changes the logits at its last token.
    """

    def __init__(self, ds: TaskDataset, context: int, pad_id: int):
        rows = [ids[-context:] for ids in ds.prompt_tokens]
        width = max(len(r) for r in rows)
        self.idx = torch.full((len(rows), width), pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            self.idx[i, :len(r)] = torch.tensor(r)
        self.last = torch.tensor([len(r) - 1 for r in rows])
        self.correct = torch.tensor(ds.correct_token)
        self.wrong = torch.tensor(ds.wrong_token)
        self.label = torch.tensor([e.label for e in ds.examples])
        self.n = len(rows)

    @classmethod
    def of(cls, ds: TaskDataset, model: GPT, tokenizer: Tokenizer | None = None) -> "TaskTensors":
        from ..data import EOT

        pad = tokenizer.token_to_id(EOT) if tokenizer is not None else 0
        return cls(ds, model.cfg.context, pad)

    def pair_batch(self, pair_ids: list[int]) -> torch.Tensor:
        """Row indices of both members of the given pairs (rows 2p and 2p + 1)."""
        return torch.tensor([r for p in pair_ids for r in (2 * p, 2 * p + 1)])

    def inputs(self, rows: torch.Tensor, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids of `rows`, cut after the longest of their prompts, and each row's last position.

        Causal attention: the padding after the longest prompt can change no logit we read, so it
        is not computed (prompts are ~half as long as the longest on average)."""
        last = self.last[rows]
        return self.idx[rows, : int(last.max()) + 1].to(device), last.to(device)

    def per_row(self, fn, batch_size: int) -> torch.Tensor:
        """`fn(rows)` (one value per row) over batches of rows of similar prompt length, so that
        each batch is padded only to its own longest prompt; the values come back in row order."""
        out = torch.empty(self.n)
        for rows in torch.argsort(self.last, stable=True).split(batch_size):
            out[rows] = fn(rows).float().cpu()
        return out


def logit_diffs(model: GPT, tt: TaskTensors, rows: torch.Tensor | None = None,
                hooks: Hooks | None = None) -> torch.Tensor:
    """logit_correct - logit_wrong at each prompt's last token (one forward, under `hooks`)."""
    rows = torch.arange(tt.n) if rows is None else rows
    device = next(model.parameters()).device
    idx, at = tt.inputs(rows, device)
    last = model(idx, hooks, logits_at=at)
    ar = torch.arange(len(rows), device=device)
    return last[ar, tt.correct[rows].to(device)] - last[ar, tt.wrong[rows].to(device)]


@torch.no_grad()
def all_logit_diffs(model: GPT, tt: TaskTensors, batch_size: int = 64) -> torch.Tensor:
    return tt.per_row(lambda rows: logit_diffs(model, tt, rows), batch_size)


def score_task(model: GPT, ds: TaskDataset, pad_id: int, bigram_logprobs: torch.Tensor | None = None) -> TaskScore:
    loss, acc, diff = score_logit_diffs(all_logit_diffs(model, TaskTensors(ds, model.cfg.context, pad_id)))
    score = TaskScore(ds.task.name, ds.split.value, len(ds.examples), loss, acc, diff)
    if bigram_logprobs is not None:
        last = torch.tensor([ids[-1] for ids in ds.prompt_tokens])
        rows = bigram_logprobs[last]
        ar = torch.arange(len(last))
        b_loss, b_acc, _ = score_logit_diffs(rows[ar, torch.tensor(ds.correct_token)] -
                                             rows[ar, torch.tensor(ds.wrong_token)])
        score.bigram_loss, score.bigram_accuracy = b_loss, b_acc
    return score


def evaluate_tasks(model: GPT, tokenizer: Tokenizer, tasks: list[Task], split: Split | str = Split.TEST,
                   n_pairs: int = 128, seed: int = 0, bigram_logprobs: torch.Tensor | None = None,
                   progress: bool = True) -> list[TaskScore]:
    from ..data import EOT

    pad_id = tokenizer.token_to_id(EOT)
    scores = []
    for t in tqdm(tasks, desc="tasks", unit="task", disable=not progress, leave=False):
        try:
            ds = t.build(tokenizer, split, n_pairs, seed)
        except TaskNotExpressible as e:
            nan = float("nan")
            scores.append(TaskScore(t.name, Split(split).value, 0, nan, nan, nan, error=str(e)))
            continue
        scores.append(score_task(model, ds, pad_id, bigram_logprobs))
    return scores


@dataclass
class RunScores:
    """A run's scores on the tasks: what `tasks eval --json` and RUN_DIR/task-scores.json hold."""
    model: str
    step: int | None  # a checkpoint's step; None: the final weights
    split: Split
    pairs: int
    seed: int
    scores: list[TaskScore]
    weights_sha256: str | None = None  # set in the cache: the weights they were computed from

    def by_task(self) -> dict[str, TaskScore]:
        return {s.task: s for s in self.scores}

    def learned(self, threshold: float) -> list[str]:
        """Tasks at test accuracy >= threshold (tasks this tokenizer cannot express never are)."""
        return [s.task for s in self.scores if s.error is None and s.accuracy >= threshold]

    def as_dict(self) -> dict:
        return {"model": self.model, "step": self.step, "split": self.split.value, "pairs": self.pairs,
                "seed": self.seed, "chance_loss": CHANCE_LOSS, "scores": [s.as_dict() for s in self.scores],
                "weights_sha256": self.weights_sha256}

    @classmethod
    def from_dict(cls, d: dict, source: str) -> "RunScores":

        try:
            return cls(d["model"], d["step"], Split(d["split"]), d["pairs"], d["seed"],
                       [TaskScore(**s) for s in d["scores"]], d.get("weights_sha256"))
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{source}: damaged task scores ({type(e).__name__}: {e}); delete it to recompute") \
                from None


def evaluate_run(run_dir: str | os.PathLike, split: Split | str = Split.TEST, n_pairs: int = 128, seed: int = 0,
                 names: list[str] | None = None, step: int | None = None, progress: bool = True) -> RunScores:
    """Scores of a run's model (or of its checkpoint at `step`) on the tasks, with bigram baselines."""
    if n_pairs < 1:
        raise UserError(f"tasks eval: --pairs must be >= 1 (pairs per task), got {n_pairs}")
    from ..data import TokenData
    from ..data.meta import META_FILE
    from ..runs import Run
    from .registry import all_tasks, get_task

    run = Run(run_dir)
    model, cfg = run.load_model(step=step)
    tok = run.tokenizer()
    chosen = [get_task(n) for n in names] if names else all_tasks()
    bigram = TokenData(cfg.data_dir).bigram_logprobs() if (Path(cfg.data_dir) / META_FILE).is_file() else None
    scores = evaluate_tasks(model, tok, chosen, split, n_pairs, seed, bigram, progress)
    return RunScores(str(run_dir), step, Split(split), n_pairs, seed, scores)


def load_or_evaluate_run(run_dir: str | os.PathLike, n_pairs: int = 128, progress: bool = True) -> RunScores:
    """Test-split scores of a run's final weights on every task, cached next to the weights.

    The cache holds the suite's tasks; tasks from files (--task-file) are scored on every call and
    appended, never cached: the file may change between calls, the weights' hash would not."""
    from ..fileio import read_json, write_json
    from ..runs import Run
    from .core import FILE_TASKS, TASKS

    run = Run(run_dir)
    path = run.task_scores_path
    weights = run.weights_sha256()
    suite = list(TASKS)
    result = None
    if path.is_file():
        cached = RunScores.from_dict(read_json(path, "task scores"), str(path))
        if cached.weights_sha256 == weights and cached.pairs == n_pairs and set(suite) <= set(cached.by_task()):
            result = cached
    if result is None:
        result = evaluate_run(run_dir, Split.TEST, n_pairs, names=suite, progress=progress)
        result.weights_sha256 = weights
        write_json(path, result.as_dict())
    if FILE_TASKS:
        result.scores += evaluate_run(run_dir, Split.TEST, n_pairs, names=list(FILE_TASKS), progress=progress).scores
    return result


def corpus_pattern_counts(tasks: list[Task], text: str) -> dict[str, tuple[int | None, int | None]]:
    """How often each class's deciding idiom (the task's `corpus_patterns`) occurs in a text."""
    out = {}
    for t in tasks:
        out[t.name] = tuple(len(re.findall(pat, text, flags=re.MULTILINE)) if pat else None
                            for pat in t.corpus_patterns)
    return out
