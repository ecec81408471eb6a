"""What every benchmark records with its numbers: the machine, and one way to write the result."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from sparse_circuits.fileio import write_json


def machine(threads: int | None = None) -> dict:
    """The machine a result was measured on (numbers compare only within one machine and run)."""
    return {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "threads": threads if threads is not None else torch.get_num_threads()}


def write_result(path: str | os.PathLike, result: dict) -> None:
    write_json(Path(path), result)
    print(f"\nwrote {path}")
