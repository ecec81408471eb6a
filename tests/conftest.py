"""Shared fixtures: every test makes its own data (offline, CPU, seconds)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sparse_circuits.config import resolve_run_config
from sparse_circuits.data import DataMeta, prepare_data

NAMES = ["items", "values", "result", "path", "data", "name", "count", "total", "line", "key"]


def make_python_file(rng: random.Random, i: int) -> str:
    """A small, varied, valid Python module: quotes, brackets, dicts, loops, classes."""
    a, b = rng.sample(NAMES, 2)
    q = rng.choice(["'", '"'])
    depth = rng.randint(1, 2)
    lst = "[" * depth + ", ".join(str(rng.randint(0, 99)) for _ in range(3)) + "]" * depth
    return (
        f"import os\n\n\n"
        f"def func_{i}({a}, {b}=None):\n"
        f"    {a} = {lst}\n"
        f"    print({q}{a} is{q})\n"
        f"    for x in range(len({a})):\n"
        f"        if x == {rng.randint(0, 9)}:\n"
        f"            {b} = {{{q}k{q}: x}}\n"
        f"    return {a}, {b}\n\n\n"
        f"class Thing{i}:\n"
        f"    def __init__(self, {a}, {b}):\n"
        f"        self.{a} = {a}\n"
        f"        self.{b} = {b}\n"
    )


def write_corpus(root: Path, n_files: int = 40, seed: int = 0) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        sub = root / f"pkg{i % 3}"
        sub.mkdir(exist_ok=True)
        (sub / f"mod_{i}.py").write_text(make_python_file(rng, i) * 4, encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, corpus_dir) -> Path:
    out = tmp_path_factory.mktemp("data")
    prepare_data(str(corpus_dir), out, vocab_size=320, val_frac=0.2, seed=0, log=lambda *_: None)
    return out


def tiny_config(data_dir: Path, **train):
    vocab = DataMeta.load(data_dir).vocab_size
    overrides = {"data_dir": str(data_dir), "model": {"vocab_size": vocab},
                 "train": {"steps": 12, "batch_size": 4, "eval_every": 6, "checkpoint_every": 3,
                           "log_every": 2, "eval_batches": 2, "threads": 1} | train}
    return resolve_run_config("tiny", overrides)
