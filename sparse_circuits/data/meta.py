"""`DataMeta`: the record of a data directory's meta.json (what `sparse-circuits data` made, from
what, and the hashes that tie the token files to it). One reader and one writer for every stage.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UserError
from ..fileio import read_json, write_json

META_FILE = "meta.json"
TOKENIZER_FILE = "tokenizer.json"
TRAIN_FILE = "train.bin"
VAL_FILE = "val.bin"
BIGRAM_FILE = "bigram.safetensors"
DATA_FILES = (TOKENIZER_FILE, TRAIN_FILE, VAL_FILE, BIGRAM_FILE)  # hashed in meta.json


@dataclass(frozen=True)
class SplitCounts:
    train: int
    val: int


@dataclass(frozen=True)
class FileCounts:
    train: int
    val: int
    skipped_non_utf8: int
    skipped_unreadable: int
    skipped_empty: int


@dataclass(frozen=True)
class SplitSettings:
    seed: int
    val_frac: float
    by: str  # always "file": no file is in both splits
    validation: str  # "real code", or "generated programs (a separate stream)" for a generated-only corpus


@dataclass(frozen=True)
class SyntheticMeta:
    budget: dict  # SyntheticBudget.as_dict()
    files: int
    tokens: int
    chars: int
    share_of_train_tokens: float
    target_tokens: int | None  # None: a file budget


@dataclass(frozen=True)
class Baselines:
    """Validation loss (nats/token) of the unigram and bigram statistics of the training tokens."""
    unigram: float
    bigram: float | None  # None: a validation split too short for bigrams


@dataclass(frozen=True)
class DataMeta:
    format_version: int
    source: str
    sources: list[str]
    fingerprint: str  # of the corpus and every setting: equal fingerprints, equal data
    vocab_size: int
    pretokenize_regex: str
    split: SplitSettings
    files: FileCounts
    tokens: SplitCounts
    hard_cuts: int
    chars: SplitCounts
    synthetic: SyntheticMeta | None
    baselines_val_loss: Baselines
    val_files: list[str]
    sha256: dict[str, str]  # DATA_FILES -> digest

    def as_dict(self) -> dict:
        return asdict(self)

    def save(self, data_dir: str | os.PathLike) -> None:
        write_json(Path(data_dir) / META_FILE, self.as_dict())

    @classmethod
    def from_dict(cls, d: dict, where: str) -> DataMeta:
        try:
            if not isinstance(d, dict):
                raise TypeError(f"a JSON object was expected, not {type(d).__name__}")
            synthetic = d.get("synthetic")
            return cls(
                format_version=int(d["format_version"]), source=d["source"], sources=list(d["sources"]),
                fingerprint=d["fingerprint"], vocab_size=int(d["vocab_size"]),
                pretokenize_regex=d["pretokenize_regex"], split=SplitSettings(**d["split"]),
                files=FileCounts(**d["files"]), tokens=SplitCounts(**d["tokens"]), hard_cuts=int(d.get("hard_cuts", 0)),
                chars=SplitCounts(**d["chars"]), synthetic=SyntheticMeta(**synthetic) if synthetic else None,
                baselines_val_loss=Baselines(**d["baselines_val_loss"]), val_files=list(d["val_files"]),
                sha256=dict(d["sha256"]))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UserError(f"{where}: not a data directory's metadata ({type(e).__name__}: {e}); "
                            "re-run `sparse-circuits data` for it") from None

    @classmethod
    def load(cls, data_dir: str | os.PathLike) -> DataMeta:
        path = Path(data_dir) / META_FILE
        return cls.from_dict(read_json(path, "data metadata (run `sparse-circuits data` first)"), str(path))
