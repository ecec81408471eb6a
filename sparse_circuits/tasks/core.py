"""What a task is: a generator of minimal pairs, and the datasets and token checks built from it.

A task is a function that draws one minimal pair from a `Pools` object (names, values and
preceding-code templates of one split) and returns a `PairSpec`: two prompts that differ only in
the deciding detail, their two continuations, and for each an ending that makes
prompt + continuation + ending a complete Python module. Registering it with `@task(...)` is all
it takes to add it to the suite (docs/tasks.md walks through one).

Token boundary rule [ours, stricter than SPEC section 5]: the evaluated token of a continuation
is the token that follows the prompt's tokens in the tokenization of the *whole* example,
prompt + continuation + ending, i.e. the token the model would see at that point in real code
(`")\n`, not `")`, when a newline follows). The prompt's tokens must be a prefix of those tokens,
and the two evaluated tokens of a pair must differ. Pairs that break the rule for a given
tokenizer are redrawn; if more than `MAX_REJECTED` of the draws break it, the task cannot be
expressed with that tokenizer and building it fails with a message naming the strings.
"""

from __future__ import annotations

import ast
import enum
import hashlib
import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

from tokenizers import Tokenizer

from ..errors import UserError

MAX_REJECTED = 0.25


class Split(str, enum.Enum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


# Share of every pool that goes to each split, by a stable hash of the item.
SPLIT_SHARES = ((Split.TRAIN, 6), (Split.VAL, 2), (Split.TEST, 2))


def split_of(item: str) -> Split:
    bucket = int(hashlib.sha256(item.encode()).hexdigest(), 16) % sum(n for _, n in SPLIT_SHARES)
    for split, n in SPLIT_SHARES:
        if bucket < n:
            return split
        bucket -= n
    raise AssertionError("unreachable")


def split_pool(items: Sequence[str], split: Split) -> list[str]:
    chosen = [x for x in items if split_of(x) == split]
    if not chosen:
        raise ValueError(f"pool {items[:3]}... has no item in split {split.value}")
    return chosen


@dataclass
class PairSpec:
    """One minimal pair. Prompt A's correct continuation is `cont_a`, prompt B's is `cont_b`."""

    prompt_a: str
    prompt_b: str
    cont_a: str
    cont_b: str
    ending_a: str = "\n"
    ending_b: str = "\n"


@dataclass(frozen=True)
class Example:
    prompt: str
    correct: str  # the continuation that is right for this prompt
    wrong: str  # the other member's continuation
    ending: str
    label: int  # 0: this is prompt A (correct = candidate a), 1: prompt B
    pair: int  # index of the pair in its dataset


@dataclass
class TaskDataset:
    task: "Task"
    split: Split
    seed: int
    examples: list[Example]
    prompt_tokens: list[list[int]] = field(default_factory=list)
    correct_token: list[int] = field(default_factory=list)
    wrong_token: list[int] = field(default_factory=list)
    rejected: int = 0  # pairs redrawn because the tokenizer broke the boundary rule

    def add_pair(self, spec: PairSpec, tokens: list[tuple[list[int], int, int]]) -> None:
        """Append both members of a pair that passed `check_pair` (whose token ids are `tokens`)."""
        i = len(self.examples) // 2
        for label, (prompt, correct, wrong, ending) in enumerate(
                ((spec.prompt_a, spec.cont_a, spec.cont_b, spec.ending_a),
                 (spec.prompt_b, spec.cont_b, spec.cont_a, spec.ending_b))):
            self.examples.append(Example(prompt, correct, wrong, ending, label, i))
            p_ids, c_id, w_id = tokens[label]
            self.prompt_tokens.append(p_ids)
            self.correct_token.append(c_id)
            self.wrong_token.append(w_id)


Generator = Callable[["Pools"], PairSpec]


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    candidates: tuple[str, str]  # how the two continuations read, for lists and tables
    generate: Generator
    control: bool = False  # a nonsense task: nothing in the prompt decides the answer sensibly
    corpus_patterns: tuple[str, str] = ("", "")  # regexes counting each class's idiom in a corpus
    # Not one of the paper's tasks: a probe that separates two mechanisms of one (e.g. a lookup by
    # name from "the nearest definition"). Evaluated and pruned by name, never counted in the suite.
    diagnostic: bool = False
    probes: tuple[str, ...] = ()  # a diagnostic's suite tasks: their circuit pages score it too

    def draw_pairs(self, split: Split, n_pairs: int, seed: int) -> list[PairSpec]:
        rng = random.Random(f"{self.name}/{split.value}/{seed}")
        pools = Pools(rng, split)
        return [self.generate(pools) for _ in range(n_pairs)]

    def examples(self, split: Split, n_pairs: int, seed: int) -> list[Example]:
        out = []
        for i, p in enumerate(self.draw_pairs(split, n_pairs, seed)):
            out.append(Example(p.prompt_a, p.cont_a, p.cont_b, p.ending_a, 0, i))
            out.append(Example(p.prompt_b, p.cont_b, p.cont_a, p.ending_b, 1, i))
        return out

    def build(self, tokenizer: Tokenizer, split: Split | str = Split.TEST, n_pairs: int = 128,
              seed: int = 0) -> TaskDataset:
        """Token-checked dataset: `n_pairs` pairs that obey the boundary rule with this tokenizer."""
        split = Split(split)
        ds = TaskDataset(self, split, seed, [])
        attempts = 0
        first_failure = ""
        batch = n_pairs
        while len(ds.examples) < 2 * n_pairs:
            # Draw more than needed in a fresh stream so results do not depend on how many failed.
            for spec in self.draw_pairs(split, batch, seed + 1000003 * attempts):
                problem, tokens = check_pair(tokenizer, spec)
                if problem:
                    ds.rejected += 1
                    first_failure = first_failure or problem
                    continue
                if len(ds.examples) >= 2 * n_pairs:
                    break
                ds.add_pair(spec, tokens)
            attempts += 1
            drawn = attempts * batch
            if ds.rejected > MAX_REJECTED * drawn or attempts > 20:
                raise TaskNotExpressible(
                    f"task {self.name!r} cannot be expressed with this tokenizer: {ds.rejected} of {drawn} "
                    f"pairs break the token boundary rule, e.g. {first_failure}")
        return ds


class TaskNotExpressible(UserError):
    pass


def _evaluated_token(tokenizer: Tokenizer, prompt: str, continuation: str, ending: str
                     ) -> tuple[list[int], int | None, str]:
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False).ids
    full_ids = tokenizer.encode(prompt + continuation + ending, add_special_tokens=False).ids
    if full_ids[:len(prompt_ids)] != prompt_ids or len(full_ids) == len(prompt_ids):
        pieces = [tokenizer.decode([t]) for t in full_ids[max(0, len(prompt_ids) - 2):len(prompt_ids) + 1]]
        return prompt_ids, None, (f"prompt {prompt[-30:]!r} + continuation {continuation!r}: tokens merge "
                                  f"across the boundary ({pieces!r})")
    return prompt_ids, full_ids[len(prompt_ids)], ""


def check_pair(tokenizer: Tokenizer, spec: PairSpec) -> tuple[str, list[tuple[list[int], int, int]]]:
    """Empty string and the (prompt ids, correct id, wrong id) of both members, or the problem.

    The wrong candidate is scored as it would be tokenized at the same place, followed by the
    ending it has in its own member of the pair.
    """
    out = []
    members = ((spec.prompt_a, spec.cont_a, spec.ending_a), (spec.prompt_b, spec.cont_b, spec.ending_b))
    for (prompt, correct, ending), (_, wrong, wrong_ending) in zip(members, members[::-1]):
        ids, c_id, problem = _evaluated_token(tokenizer, prompt, correct, ending)
        if not problem:
            _, w_id, problem = _evaluated_token(tokenizer, prompt, wrong, wrong_ending)
        if problem:
            return problem, []
        if c_id == w_id:
            return (f"continuations {correct!r} and {wrong!r} start with the same token "
                    f"{tokenizer.decode([c_id])!r}"), []
        out.append((ids, c_id, w_id))
    return "", out


def parses(example: Example) -> bool:
    try:
        ast.parse(example.prompt + example.correct + example.ending)
    except SyntaxError:
        return False
    return True


# -- pools -------------------------------------------------------------------------------------

class Pools:
    """Names, values and code templates of one split, drawn with one seeded random stream."""

    def __init__(self, rng: random.Random, split: Split):
        from . import pools  # the word lists

        self.rng = rng
        self.split = split
        self._pools = {name: split_pool(items, split) for name, items in pools.POOLS.items()}

    def choice(self, pool: str) -> str:
        return self.rng.choice(self._pools[pool])

    def distinct(self, pool: str, n: int) -> list[str]:
        return self.rng.sample(self._pools[pool], n)

    def var(self) -> str:
        return self.choice("variables")

    def vars(self, n: int) -> list[str]:
        return self.distinct("variables", n)

    def func(self) -> str:
        return self.choice("functions")

    def word(self) -> str:
        return self.choice("words")

    def number(self) -> str:
        return str(self.rng.choice([0, 1, 2, 3, 5, 8, 10, 16, 32, 42, 64, 100, 255, 1000]))

    def preceding(self, indent: str, n_max: int = 2) -> str:
        """0..n_max realistic lines of unrelated code at this indentation."""
        lines = []
        for _ in range(self.rng.randint(0, n_max)):
            template = self.choice("statements")
            a, b = self.vars(2)
            lines.append(indent + template.format(a=a, b=b, f=self.func(), w=self.word(), n=self.number()) + "\n")
        return "".join(lines)

    def scope(self, depth: int | None = None) -> tuple[str, str]:
        """(header, indent): top level, in a function, or in a method, with unrelated lines before."""
        depth = self.rng.randint(0, 2) if depth is None else depth
        header = self.choice("headers") if self.rng.random() < 0.5 else ""
        if depth == 0:
            return header + self.preceding(""), ""
        if depth == 1:
            args = ", ".join(self.vars(self.rng.randint(0, 2)))
            return header + f"def {self.func()}({args}):\n" + self.preceding("    "), "    "
        cls = self.choice("classes")
        args = "".join(", " + v for v in self.vars(self.rng.randint(0, 2)))
        return (header + f"class {cls}:\n    def {self.func()}(self{args}):\n" + self.preceding("        "),
                "        ")


# -- the registry ------------------------------------------------------------------------------

TASKS: dict[str, Task] = {}
DIAGNOSTICS: dict[str, Task] = {}  # probes, kept out of the suite (Task.diagnostic)
FILE_TASKS: dict[str, Task] = {}  # tasks a researcher brought as JSONL files (from_file.py, --task-file)


def task(name: str, description: str, candidates: tuple[str, str], control: bool = False,
         corpus_patterns: tuple[str, str] = ("", ""), diagnostic: bool = False,
         probes: tuple[str, ...] = ()) -> Callable[[Generator], Generator]:
    def register(fn: Generator) -> Generator:
        if name in TASKS or name in DIAGNOSTICS or name in FILE_TASKS:
            raise ValueError(f"task {name!r} is registered twice")
        if probes and not diagnostic:
            raise ValueError(f"task {name!r}: only a diagnostic probes other tasks")
        (DIAGNOSTICS if diagnostic else TASKS)[name] = Task(name, description, candidates, fn, control,
                                                            corpus_patterns, diagnostic, probes)
        return fn
    return register
