"""Task prompts against the training tokens: contamination and naturalness (issue 10).

For every task's test-split prompts, as the data directory's tokenizer encodes them:
- **verbatim**: the share of prompts whose whole token sequence occurs in the training tokens,
  anywhere, and right after an `<|endoftext|>` (as the start of a training document). A prompt
  found verbatim may have been memorised; the share must be ~0. Very short prompts (a few tokens
  such as `for x`) can occur by chance in any large corpus, so the report also gives the share
  among prompts of at least `LONG_PROMPT` tokens.
- **naturalness**: how often the prompt's last three tokens occur as a sequence in the training
  tokens (the model's decision is made there), and the share of prompts holding a trigram seen
  fewer than `RARE_LAST3` times is flagged: a prompt that ends in a token sequence the model has
  (almost) never seen tests the tokenizer's blind spots, not the idiom. Also the mean share of a
  prompt's trigrams seen fewer than `RARE` times (names are drawn at random, so some always are).

Exact search in a few seconds over tens of millions of tokens: every window hash comes from one
prefix sum of token x P^-i (mod 2^64), so each prompt length costs one pass of vector arithmetic.
"""

from __future__ import annotations

import os
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ..data import EOT, load_tokenizer
from ..data.meta import TOKENIZER_FILE, TRAIN_FILE, DataMeta
from ..errors import UserError
from ..fileio import read_json, write_json
from .core import Split, Task, TaskNotExpressible
from .registry import all_tasks

CONTAMINATION_FILE = "contamination.json"
REPORT_VERSION = 1
LONG_PROMPT = 12  # tokens; shorter prompts can occur verbatim by chance
RARE = 3  # a trigram seen fewer times than this in training is "(almost) never seen"
RARE_LAST3 = 10  # the same for the prompt's last three tokens, where the decision is made
_P = np.uint64(0x9E3779B97F4A7C15)  # odd, so invertible mod 2^64
_P_INV = pow(int(_P), -1, 1 << 64)


class WindowHashes:
    """Hashes of every window of a token array, any length, from one prefix sum."""

    def __init__(self, tokens: np.ndarray):
        n = tokens.size
        with np.errstate(over="ignore"):
            self.pow = np.concatenate([[np.uint64(1)], np.cumprod(np.full(n, _P, dtype=np.uint64))])  # P^i
            inv = np.cumprod(np.full(n, np.uint64(_P_INV), dtype=np.uint64))
            inv = np.concatenate([[np.uint64(1)], inv[:-1]])  # P^-i
            terms = (tokens.astype(np.uint64) + np.uint64(1)) * inv
            self.prefix = np.concatenate([[np.uint64(0)], np.cumsum(terms, dtype=np.uint64)])
        self.n = n

    def of_length(self, length: int) -> np.ndarray:
        """Hash of the window starting at every position s (n - length + 1 of them)."""
        with np.errstate(over="ignore"):
            return (self.prefix[length:] - self.prefix[:self.n + 1 - length]) * self.pow[:self.n + 1 - length]


def sequence_hash(seq: list[int]) -> np.uint64:
    """The hash WindowHashes gives a window holding exactly `seq`."""
    h = 0
    p = 1
    for t in seq:
        h = (h + (t + 1) * p) % (1 << 64)
        p = p * _P_INV % (1 << 64)
    return np.uint64(h)


@dataclass
class TaskContamination:
    task: str
    prompts: int
    verbatim: int  # prompts found anywhere in the training tokens
    verbatim_doc_start: int  # found right after <|endoftext|>
    long_prompts: int  # prompts of at least LONG_PROMPT tokens
    long_verbatim: int
    last3_median_count: float  # occurrences of the prompt's last three tokens in training
    last3_rare_share: float  # share of prompts whose last three tokens occur < RARE_LAST3 times
    rare_trigram_frac: float  # mean share of a prompt's trigrams seen < RARE times in training
    rare_last3: list[tuple[str, int]] = field(default_factory=list)  # commonest rare endings: (text (count), prompts)
    error: str | None = None

    @property
    def verbatim_share(self) -> float:
        return self.verbatim / self.prompts if self.prompts else float("nan")


@dataclass
class ContaminationReport:
    """DATA_DIR/contamination.json: every task's test prompts measured against the training tokens."""
    key: dict  # the data fingerprint, REPORT_VERSION and the number of pairs: a cached report is reused only for these
    split: str
    long_prompt_tokens: int
    rare_trigram: int
    rare_last3: int
    tasks: list[TaskContamination]

    @property
    def long_verbatim(self) -> int:
        """Long test prompts found verbatim in the training tokens, over every task."""
        return sum(r.long_verbatim for r in self.tasks)

    def as_dict(self) -> dict:
        return {"key": self.key, "split": self.split, "long_prompt_tokens": self.long_prompt_tokens,
                "rare_trigram": self.rare_trigram, "rare_last3": self.rare_last3,
                "tasks": [asdict(r) | {"verbatim_share": r.verbatim_share} for r in self.tasks]}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> ContaminationReport:
        try:
            rows = [TaskContamination(**{k: v for k, v in r.items() if k != "verbatim_share"}) for r in d["tasks"]]
            return cls(d["key"], d["split"], d["long_prompt_tokens"], d["rare_trigram"], d["rare_last3"], rows)
        except (KeyError, TypeError) as e:
            raise UserError(f"{where}: not a contamination report ({type(e).__name__}: {e}); delete it to measure "
                            "again") from None


def _counts(sorted_hashes: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return np.searchsorted(sorted_hashes, queries, side="right") - np.searchsorted(sorted_hashes, queries, side="left")


def measure(train_tokens: np.ndarray, tokenizer: Tokenizer, tasks: list[Task] | None = None,
            split: Split = Split.TEST, n_pairs: int = 128, seed: int = 0) -> list[TaskContamination]:
    tasks = tasks if tasks is not None else all_tasks()
    eot = tokenizer.token_to_id(EOT)
    windows = WindowHashes(np.asarray(train_tokens))
    trigrams = np.sort(windows.of_length(3))
    datasets = {}
    results: dict[str, TaskContamination] = {}
    by_length: dict[int, set] = defaultdict(set)  # prompt length -> hashes to look for
    for t in tasks:
        try:
            ds = t.build(tokenizer, split, n_pairs, seed)
        except TaskNotExpressible as e:
            results[t.name] = TaskContamination(t.name, 0, 0, 0, 0, 0, float("nan"), float("nan"), float("nan"),
                                                error=str(e))
            continue
        datasets[t.name] = ds
        for ids in ds.prompt_tokens:
            by_length[len(ids)].add(sequence_hash(ids))
            by_length[len(ids) + 1].add(sequence_hash([eot] + ids))
    found: set = set()
    for length, wanted in by_length.items():
        if length <= windows.n:
            wanted_sorted = np.sort(np.fromiter(wanted, dtype=np.uint64, count=len(wanted)))
            hashes = windows.of_length(length)
            at = np.minimum(np.searchsorted(wanted_sorted, hashes), wanted_sorted.size - 1)
            found.update(np.unique(hashes[wanted_sorted[at] == hashes]).tolist())
    for name, ds in datasets.items():
        prompts = ds.prompt_tokens
        anywhere = [int(sequence_hash(ids)) in found for ids in prompts]
        doc_start = [int(sequence_hash([eot] + ids)) in found for ids in prompts]
        long = [len(ids) >= LONG_PROMPT for ids in prompts]
        ends = [ids[-3:] for ids in prompts if len(ids) >= 3]
        last3 = _counts(trigrams, np.array([sequence_hash(e) for e in ends], dtype=np.uint64))
        rare_ends: dict[str, int] = defaultdict(int)
        for e, c in zip(ends, last3.tolist()):
            if c < RARE_LAST3:
                rare_ends[f"{tokenizer.decode(e)!r} ({c}x)"] += 1
        fractions = []
        for ids in prompts:
            tri = [ids[i:i + 3] for i in range(len(ids) - 2)]
            if tri:
                c = _counts(trigrams, np.array([sequence_hash(g) for g in tri], dtype=np.uint64))
                fractions.append(float((c < RARE).mean()))
        results[name] = TaskContamination(
            name, len(prompts), sum(anywhere), sum(doc_start), sum(long),
            sum(a and b for a, b in zip(anywhere, long)),
            float(statistics.median(last3.tolist())) if last3.size else float("nan"),
            float((last3 < RARE_LAST3).mean()) if last3.size else float("nan"),
            statistics.fmean(fractions) if fractions else float("nan"),
            sorted(rare_ends.items(), key=lambda kv: -kv[1])[:4])
    return [results[t.name] for t in tasks]


def contamination_report(data_dir: str | os.PathLike, n_pairs: int = 128, log=print) -> ContaminationReport:
    """Measure the data directory's training tokens against every task; write contamination.json."""
    data_dir = Path(data_dir)
    meta = DataMeta.load(data_dir)
    path = data_dir / CONTAMINATION_FILE
    key = {"fingerprint": meta.fingerprint, "version": REPORT_VERSION, "pairs": n_pairs}
    if path.is_file():
        cached = read_json(path, "contamination report")
        if isinstance(cached, dict) and cached.get("key") == key:
            log(f"contamination: reusing {path}")
            return ContaminationReport.from_dict(cached, str(path))
    tokens = np.fromfile(data_dir / TRAIN_FILE, dtype=np.uint16)
    rows = measure(tokens, load_tokenizer(data_dir / TOKENIZER_FILE), n_pairs=n_pairs)
    report = ContaminationReport(key, Split.TEST.value, LONG_PROMPT, RARE, RARE_LAST3, rows)
    write_json(path, report.as_dict())
    log(format_report(report))
    return report


def format_report(report: ContaminationReport) -> str:
    lines = [f"{'task':28} {'verbatim':>9} {'doc start':>9} {'long verb.':>10} {'last-3 median':>13} "
             f"{'last-3 rare':>11} {'rare 3-grams':>12}  commonest rare ending"]
    for r in report.tasks:
        if r.error:
            lines.append(f"{r.task:28} not expressible with this tokenizer")
            continue
        lines.append(f"{r.task:28} {r.verbatim:>4}/{r.prompts:<4} {r.verbatim_doc_start:>9} "
                     f"{r.long_verbatim:>4}/{r.long_prompts:<5} {r.last3_median_count:>13,.0f} "
                     f"{r.last3_rare_share:>11.2f} {r.rare_trigram_frac:>12.2f}  "
                     + (f"{r.rare_last3[0][0]} in {r.rare_last3[0][1]}" if r.rare_last3 else ""))
    return "\n".join(lines)
