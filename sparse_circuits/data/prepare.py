"""Corpus -> documents -> by-file split -> BPE tokenizer -> uint16 token arrays (SPEC section 4).

A data directory holds:
  tokenizer.json      Hugging Face tokenizer (byte-level BPE, the paper's pre-tokenization regex)
  train.bin, val.bin  uint16 token ids, documents separated by <|endoftext|>
  bigram.safetensors  bigram counts of the training tokens (for the model's bigram table)
  meta.json           source, file and token counts, the split, hashes, bigram baseline losses
"""

from __future__ import annotations

import enum
import glob
import hashlib
import json
import math
import os
import random
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm import tqdm

from ..errors import UserError
from ..fileio import atomic_path, read_safetensors, sha256_file, write_safetensors
from .meta import (
    BIGRAM_FILE,
    DATA_FILES,
    META_FILE,
    TOKENIZER_FILE,
    TRAIN_FILE,
    VAL_FILE,
    Baselines,
    DataMeta,
    FileCounts,
    SplitCounts,
    SplitSettings,
    SyntheticMeta,
)

EOT = "<|endoftext|>"
# The paper's pre-tokenization: letters with an optional non-letter prefix, digit runs of 1-3,
# punctuation runs that absorb trailing newlines or slashes, whitespace.
PRETOKENIZE_REGEX = r"""[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
DATA_FORMAT_VERSION = 1


@dataclass
class Document:
    name: str  # file path (or "file.jsonl:LINE") used for the split and the report
    text: str


@dataclass
class CorpusScan:
    documents: list[Document]
    skipped_unreadable: int
    skipped_non_utf8: int
    skipped_empty: int


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _python_files(source: str) -> tuple[list[Path], Path | None]:
    """Paths of the .py files a SOURCE names, and the root their names are relative to."""
    if source == "stdlib":
        root = stdlib_dir()
        files = [p for p in root.rglob("*.py") if "site-packages" not in p.relative_to(root).parts]
        return sorted(files), root
    path = Path(source)
    if path.is_dir():
        return sorted(path.rglob("*.py")), path
    if any(ch in source for ch in "*?["):
        return sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file()), None
    return [], None


def _read_text(path: Path, scan: CorpusScan) -> str | None:
    # Only regular files (a symlink to one is followed): a FIFO would block the read forever and a
    # device such as /dev/zero would never end; both count as unreadable.
    if not path.is_file():
        scan.skipped_unreadable += 1
        return None
    try:
        raw = path.read_bytes()
    except OSError:
        scan.skipped_unreadable += 1
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        scan.skipped_non_utf8 += 1
        return None


def read_corpus(source: str) -> CorpusScan:
    """Documents of SOURCE: `stdlib`, a directory or glob of .py files, or a .txt/.jsonl file."""
    scan = CorpusScan([], 0, 0, 0)
    files, root = _python_files(source)
    path = Path(source)
    if files or path.is_dir() or source == "stdlib":
        for f in files:
            text = _read_text(f, scan)
            if text is None:
                continue
            if not text.strip():
                scan.skipped_empty += 1
                continue
            scan.documents.append(Document(str(f.relative_to(root)) if root else str(f), text))
    elif path.is_file() and path.suffix == ".jsonl":
        text = _read_text(path, scan)
        for i, line in enumerate((text or "").splitlines()):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"{path}:{i + 1}: not valid JSON; each line must be an object with a 'text' field") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise UserError(f"{path}:{i + 1}: each JSONL line must be an object with a string 'text' field")
            if obj["text"].strip():
                scan.documents.append(Document(f"{path.name}:{i + 1}", obj["text"]))
            else:
                scan.skipped_empty += 1
    elif path.is_file():
        text = _read_text(path, scan)
        # A text file holds one document, or several separated by <|endoftext|>.
        for i, doc in enumerate((text or "").split(EOT)):
            if doc.strip():
                scan.documents.append(Document(f"{path.name}#{i}", doc))
    elif not any(ch in source for ch in "*?["):
        raise UserError(f"corpus source {source!r} not found: give 'stdlib', a directory or glob of .py files, "
                        "or a .txt/.jsonl file")
    if not scan.documents:
        raise UserError(f"corpus {source!r} is empty: no readable UTF-8 documents "
                        f"(skipped {scan.skipped_non_utf8} non-UTF-8, {scan.skipped_unreadable} unreadable, "
                        f"{scan.skipped_empty} empty); point --corpus at Python sources")
    return scan


def split_by_file(docs: list[Document], val_frac: float, seed: int) -> tuple[list[Document], list[Document]]:
    """Whole documents go to one side; the order is fixed by `seed`, not by the file system."""
    order = sorted(range(len(docs)), key=lambda i: docs[i].name)
    random.Random(seed).shuffle(order)
    n_val = round(val_frac * len(docs))
    if len(docs) >= 2:
        n_val = min(max(n_val, 1), len(docs) - 1)
    else:
        n_val = 0
    val = sorted((docs[i] for i in order[:n_val]), key=lambda d: d.name)
    train = sorted((docs[i] for i in order[n_val:]), key=lambda d: d.name)
    return train, val


def new_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


# Memory bound [ours]: text reaches the tokenizer in pieces of at most PIECE_CHARS characters, cut
# only where the pre-tokenizer has a boundary anyway: right after a letter or a digit, before a
# character that is neither (the letter or digit run ends there whatever follows, no pattern looks
# back, and the first piece does not end in whitespace that a lookahead would read differently).
# So the tokens are exactly those of the whole text. Newlines are preferred as cut points. A
# stretch of PIECE_CHARS with no such place (a megabyte of one word) is cut every HARD_CUT_CHARS
# characters: the only place tokens can differ from the whole text's, counted in meta.json.
PIECE_CHARS = 1 << 16
HARD_CUT_CHARS = 1 << 12
ENCODE_BATCH_CHARS = 1 << 20  # characters per encode call
_CUT_AT_NEWLINE = re.compile(r"(?<=[^\W_])\n")  # a newline right after a letter or digit
_CUT_AT_WORD_END = re.compile(r"(?<=[^\W_])\W")  # any non-word character right after one


def _last_cut(pattern: re.Pattern, text: str, start: int, end: int) -> int | None:
    cut = None
    for m in pattern.finditer(text, start, end):
        cut = m.start()
    return cut


def text_pieces(text: str, stats: dict | None = None) -> list[str]:
    """`text` in pieces of at most PIECE_CHARS that tokenize, one after the other, exactly as the
    whole text does (except at hard cuts, counted in `stats["hard_cuts"]`)."""
    if len(text) <= PIECE_CHARS:
        return [text]
    pieces, pos = [], 0
    while len(text) - pos > PIECE_CHARS:
        end = pos + PIECE_CHARS
        cut = _last_cut(_CUT_AT_NEWLINE, text, pos + 1, end) or _last_cut(_CUT_AT_WORD_END, text, pos + 1, end)
        if cut is None:
            cut = pos + HARD_CUT_CHARS
            if stats is not None:
                stats["hard_cuts"] = stats.get("hard_cuts", 0) + 1
        pieces.append(text[pos:cut])
        pos = cut
    pieces.append(text[pos:])
    return pieces


def train_tokenizer(texts: list[str], vocab_size: int, progress: bool = True) -> Tokenizer:
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bar = tqdm(total=sum(len(t) for t in texts), desc="tokenizer", unit="char", unit_scale=True, leave=False,
               disable=not progress)

    def pieces():
        for text in texts:
            yield from text_pieces(text)
            bar.update(len(text))

    tok.train_from_iterator(pieces(), trainer=trainer)
    bar.close()
    return tok


def check_same_tokenizer(data_dir: str | os.PathLike, tok: Tokenizer, owner: str) -> None:
    """A data directory must be encoded with `owner`'s tokenizer `tok`; a one-line error otherwise."""
    path = Path(data_dir) / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{data_dir}: no tokenizer.json; make the data directory with "
                        f"`sparse-circuits data --tokenizer` and {owner}'s tokenizer.json")
    if load_tokenizer(path).get_vocab() != tok.get_vocab():
        raise UserError(f"{data_dir}: tokenized differently from {owner}; use data encoded with its tokenizer "
                        "(the data it was trained on, or `sparse-circuits data --tokenizer`)")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: tokenizer not found")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises plain Exception subclasses for bad files
        raise UserError(f"{path}: not a valid tokenizer.json ({e})") from None


def encode_each(tok: Tokenizer, docs: list[Document], desc: str = "encode",
                stats: dict | None = None) -> list[np.ndarray]:
    """Token ids of each document followed by <|endoftext|>, one uint16 array per document.

    Documents are encoded piece by piece (`text_pieces`), at most ENCODE_BATCH_CHARS characters per
    call, so memory stays bounded whatever the size of a file or a line."""
    eot = np.array([tok.token_to_id(EOT)], dtype=np.uint16)
    ids: list[list[np.ndarray]] = [[] for _ in docs]
    batch: list[tuple[int, str]] = []
    chars = 0

    def flush() -> None:
        for (i, _), enc in zip(batch, tok.encode_batch([p for _, p in batch], add_special_tokens=False)):
            ids[i].append(np.asarray(enc.ids, dtype=np.uint16))
        bar.update(sum(len(p) for _, p in batch))
        batch.clear()

    bar = tqdm(total=sum(len(d.text) for d in docs), desc=desc, unit="char", unit_scale=True, leave=False)
    # The text "<|endoftext|>" inside a file is text, not the document separator: encoded as characters.
    special_as_text = tok.encode_special_tokens
    tok.encode_special_tokens = True
    try:
        for i, doc in enumerate(docs):
            for piece in text_pieces(doc.text, stats):
                batch.append((i, piece))
                chars += len(piece)
                if chars >= ENCODE_BATCH_CHARS:
                    flush()
                    chars = 0
        flush()
    finally:
        tok.encode_special_tokens = special_as_text
        bar.close()
    return [np.concatenate(parts + [eot]) for parts in ids]


def encode_documents(tok: Tokenizer, docs: list[Document], desc: str, stats: dict | None = None) -> np.ndarray:
    pieces = encode_each(tok, docs, desc, stats)
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint16)


def bigram_counts(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    pairs = tokens[:-1].astype(np.int64) * vocab_size + tokens[1:].astype(np.int64)
    return np.bincount(pairs, minlength=vocab_size * vocab_size).reshape(vocab_size, vocab_size)


def bigram_logprobs(counts: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """Add-alpha smoothed log p(next | current), one row per current token."""
    c = counts.double() + alpha
    return (c / c.sum(dim=1, keepdim=True)).log().float()


def bigram_loss(logprobs: torch.Tensor, tokens: np.ndarray) -> float:
    t = torch.from_numpy(tokens.astype(np.int64))
    return float(-logprobs[t[:-1], t[1:]].double().mean())


def unigram_loss(train: np.ndarray, val: np.ndarray, vocab_size: int) -> float:
    p = (np.bincount(train, minlength=vocab_size) + 0.1).astype(np.float64)
    p /= p.sum()
    return float(-np.log(p[val]).mean())


SYNTHETIC = "synthetic"  # the source name of the generated simple programs (synthetic.py)
# The default corpus of `data` and `demo`: the stdlib with generated programs as half the training
# tokens. The capability study (docs/results.md) found the generated programs buy most tasks.
DEFAULT_SOURCES = ("stdlib", SYNTHETIC)
# [ours] Defaults when `synthetic` is a source and no budget is given.
DEFAULT_SYNTHETIC_SHARE = 0.5  # of the training tokens, next to real code
DEFAULT_SYNTHETIC_TOKENS = 10_000_000  # alone
CHARS_PER_TOKEN_GUESS = 3.0  # sizes the first draw of programs only; the budget itself is met in tokens


@dataclass(frozen=True)
class SyntheticBudget:
    """How much generated code goes into the training split: exactly one of the three budgets.

    `share`: that fraction of the training tokens (real code is the rest); `tokens`: that many
    training tokens; `files`: that many programs. Token budgets are met by whole programs, in
    generation order, so the last one may overshoot by less than one program.
    """

    share: float | None = None
    tokens: int | None = None
    files: int | None = None
    seed: int = 0
    version: int = 0  # of the program generator (synthetic.VERSIONS); 0: the current default

    def __post_init__(self) -> None:
        from .synthetic import GENERATOR_VERSION, VERSIONS

        if self.version == 0:
            object.__setattr__(self, "version", GENERATOR_VERSION)
        if self.version not in VERSIONS:
            raise UserError(f"data: --synthetic-version {self.version} is unknown; known: "
                            f"{', '.join(map(str, VERSIONS))}")

    @classmethod
    def resolve(cls, has_real: bool, share: float | None, tokens: int | None, files: int | None,
                seed: int, version: int = 0) -> "SyntheticBudget":
        given = [n for n, v in (("share", share), ("tokens", tokens), ("files", files)) if v is not None]
        if len(given) > 1:
            raise UserError(f"data: give one synthetic budget, not {' and '.join(given)}")
        if not given:
            if has_real:
                share = DEFAULT_SYNTHETIC_SHARE
            else:
                tokens = DEFAULT_SYNTHETIC_TOKENS
        if share is not None and not (has_real and 0.0 < share < 1.0):
            raise UserError(f"data: --synthetic-share {share} needs a real-code source beside 'synthetic' and a "
                            "value in (0, 1); use --synthetic-tokens for a synthetic-only corpus")
        for name, value in (("tokens", tokens), ("files", files)):
            if value is not None and value < 1:
                raise UserError(f"data: --synthetic-{name} must be >= 1, got {value}")
        return cls(share, tokens, files, seed, version)

    def as_dict(self) -> dict:
        return {"share": self.share, "tokens": self.tokens, "files": self.files, "seed": self.seed,
                "version": self.version}


def _fingerprint(docs: list[Document], vocab_size: int, val_frac: float, seed: int,
                 synthetic: SyntheticBudget | None = None, tokenizer_sha: str | None = None) -> str:
    settings: list = [DATA_FORMAT_VERSION, PRETOKENIZE_REGEX, vocab_size, val_frac, seed]
    if synthetic is not None:
        budget = synthetic.as_dict()
        version = budget.pop("version")
        settings.append({"synthetic": budget, "generator": version})  # (version 1 fingerprints stay as they were)
    if tokenizer_sha is not None:
        settings.append({"given_tokenizer": tokenizer_sha})
    h = hashlib.sha256(json.dumps(settings).encode())
    for d in sorted(docs, key=lambda d: d.name):
        h.update(d.name.encode("utf-8", "surrogateescape") + b"\0" + d.text.encode("utf-8") + b"\0")
    return h.hexdigest()


def read_sources(sources: list[str]) -> CorpusScan:
    """The documents of every real-code source; names get the source's index when there are several."""
    scans = [read_corpus(s) for s in sources]
    if len(scans) == 1:
        return scans[0]
    merged = CorpusScan([], 0, 0, 0)
    for i, scan in enumerate(scans):
        merged.documents += [Document(f"{i}:{d.name}", d.text) for d in scan.documents]
        merged.skipped_non_utf8 += scan.skipped_non_utf8
        merged.skipped_unreadable += scan.skipped_unreadable
        merged.skipped_empty += scan.skipped_empty
    return merged


class _SyntheticDraw:
    """Generated programs in order, as documents, drawn as many at a time as asked."""

    def __init__(self, seed: int, version: int):
        from .synthetic import generate_programs

        self._stream = generate_programs(seed, version)
        self.docs: list[Document] = []

    def more(self, n_files: int = 0, n_chars: int = 0) -> list[Document]:
        new: list[Document] = []
        chars = 0
        while len(new) < n_files or chars < n_chars:
            text = next(self._stream)
            new.append(Document(f"{SYNTHETIC}/{len(self.docs) + len(new):07d}.py", text))
            chars += len(text)
        self.docs += new
        return new


MIN_VOCAB, MAX_VOCAB = 257, 1 << 16


def _check_options(sources: str | list[str], vocab_size: int, val_frac: float, given_tok: Tokenizer | None,
                   tokenizer, synthetic_share, synthetic_tokens, synthetic_files, synthetic_seed,
                   synthetic_version) -> tuple[list[str], int, SyntheticBudget | None]:
    """(sources, vocab size, generated-code budget) from `prepare_data`'s options; one-line errors."""
    if given_tok is not None:
        if given_tok.token_to_id(EOT) is None:
            raise UserError(f"{tokenizer}: has no {EOT} token to separate documents")
        vocab_size = given_tok.get_vocab_size()
    if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise UserError(f"data: --vocab-size must be between {MIN_VOCAB} (the 256 bytes and {EOT}) and "
                        f"{MAX_VOCAB} (tokens are stored as 16-bit integers), got {vocab_size}")
    if not 0.0 < val_frac < 1.0:
        raise UserError(f"data: --val-frac is the fraction of files held out for validation and must be "
                        f"between 0 and 1 (exclusive), got {val_frac}")
    sources = [sources] if isinstance(sources, str) else list(sources)
    if not sources:
        raise UserError("data: give at least one --corpus source")
    if len(set(sources)) != len(sources):
        raise UserError(f"data: a --corpus source is given twice ({sources})")
    budget = None
    if SYNTHETIC in sources:
        budget = SyntheticBudget.resolve(any(s != SYNTHETIC for s in sources), synthetic_share, synthetic_tokens,
                                         synthetic_files, synthetic_seed, synthetic_version)
    elif (synthetic_share, synthetic_tokens, synthetic_files) != (None, None, None) or synthetic_version:
        raise UserError("data: a synthetic budget was given but 'synthetic' is not a --corpus source; "
                        "add --corpus synthetic")
    return sources, vocab_size, budget


def _first_draw(budget: SyntheticBudget, train_docs: list[Document], has_real: bool,
                val_frac: float) -> tuple[_SyntheticDraw, list[Document] | None]:
    """Generated programs for the training split, about as many as the budget asks (encoding decides
    the exact cut); and, for a generated-only corpus, its validation programs (a separate stream)."""
    draw = _SyntheticDraw(budget.seed, budget.version)
    if budget.files is not None:
        draw.more(n_files=budget.files)
    elif budget.tokens is not None:
        draw.more(n_chars=int(budget.tokens * CHARS_PER_TOKEN_GUESS * 1.1))
    else:
        real_chars = sum(len(d.text) for d in train_docs)
        draw.more(n_chars=int(real_chars * budget.share / (1 - budget.share) * 1.1))
    if has_real:
        return draw, None
    n_val = max(1, round(len(draw.docs) * val_frac / (1 - val_frac)))
    return draw, [Document(f"{SYNTHETIC}/val/{i:07d}.py", d.text) for i, d in
                  enumerate(_SyntheticDraw(budget.seed + 1_000_003, budget.version).more(n_files=n_val))]


def _encode_generated(tok: Tokenizer, draw: _SyntheticDraw, budget: SyntheticBudget, real_tokens: int
                      ) -> tuple[np.ndarray, list[Document], int | None]:
    """The generated programs' tokens, cut at the first whole program that meets the budget (drawing
    more if the first draw fell short); the programs kept; the token target (None: a file budget)."""
    pieces = encode_each(tok, draw.docs, "encode generated")
    target = None
    if budget.files is None:
        target = budget.tokens if budget.tokens is not None else \
            math.ceil(real_tokens * budget.share / (1 - budget.share))
        have = sum(p.size for p in pieces)
        while have < target:  # the first draw fell short: draw more
            more = encode_each(tok, draw.more(n_chars=int((target - have) * 4)))
            pieces += more
            have += sum(p.size for p in more)
        cum = np.cumsum([p.size for p in pieces])
        pieces = pieces[:int(np.searchsorted(cum, target)) + 1]
    return np.concatenate(pieces), draw.docs[:len(pieces)], target


def _write_arrays(out: Path, tok: Tokenizer, train_tokens: np.ndarray, val_tokens: np.ndarray,
                  counts: np.ndarray) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / TOKENIZER_FILE) as tmp:
        tok.save(str(tmp))
    for name, arr in ((TRAIN_FILE, train_tokens), (VAL_FILE, val_tokens)):
        with atomic_path(out / name) as tmp:
            arr.tofile(tmp)
    write_safetensors(out / BIGRAM_FILE, {"counts": torch.from_numpy(counts).to(torch.int32)})


def prepare_data(sources: str | list[str], out_dir: str | os.PathLike, vocab_size: int = 2048,
                 val_frac: float = 0.05, seed: int = 0, synthetic_share: float | None = None,
                 synthetic_tokens: int | None = None, synthetic_files: int | None = None,
                 synthetic_seed: int = 0, tokenizer: str | os.PathLike | None = None, log=print,
                 synthetic_version: int = 0, overwrite: bool = False) -> DataMeta:
    """Build (or reuse) a data directory; returns its metadata.

    `sources`: 'stdlib', directories, globs, .txt/.jsonl files, and 'synthetic' (generated simple
    programs, synthetic.py). Real code is split by file; generated programs all go to the
    training split, so the validation split, and with it "pretraining loss", stays real code.
    A synthetic-only corpus validates on further generated programs. `tokenizer`: a tokenizer.json
    to encode with instead of training one (e.g. an imported model's; vocab_size is then its size).
    `synthetic_version`: the program generator's version (0: the current one; 1 rebuilds older corpora).
    A directory made with other settings or another corpus is refused unless `overwrite` (runs
    trained on it could no longer resume, and caches computed on it would mislead); a damaged one
    with the same settings is rebuilt.
    """
    out = Path(out_dir)
    given_tok = load_tokenizer(tokenizer) if tokenizer is not None else None
    sources, vocab_size, budget = _check_options(sources, vocab_size, val_frac, given_tok, tokenizer,
                                                 synthetic_share, synthetic_tokens, synthetic_files, synthetic_seed,
                                                 synthetic_version)
    real = [s for s in sources if s != SYNTHETIC]
    scan = read_sources(real) if real else CorpusScan([], 0, 0, 0)
    fingerprint = _fingerprint(scan.documents, vocab_size, val_frac, seed, budget,
                               sha256_file(tokenizer) if tokenizer is not None else None)
    if (out / META_FILE).is_file():
        earlier = DataMeta.load(out)
        if earlier.fingerprint == fingerprint and all(
                (out / name).is_file() and sha256_file(out / name) == digest
                for name, digest in earlier.sha256.items()):
            log(f"data: reusing {out} (same corpus and settings)")
            return earlier
        if earlier.fingerprint != fingerprint and not overwrite:
            raise UserError(f"{out}: holds data made from another corpus or with other settings; pass --force to "
                            "replace it (runs trained on it will no longer resume) or choose another --out")

    train_docs, val_docs = split_by_file(scan.documents, val_frac, seed) if real else ([], [])
    draw = None
    if budget is not None:
        draw, generated_val = _first_draw(budget, train_docs, bool(real), val_frac)
        val_docs = generated_val if generated_val is not None else val_docs
    tokenizer_docs = train_docs + (draw.docs if draw else [])
    log(f"data: {len(scan.documents)} documents from {real or 'no real-code source'}"
        + (f" + generated programs ({budget.as_dict()})" if budget else "")
        + (f"; encoding with {tokenizer}" if given_tok else f"; training a {vocab_size}-token BPE"))
    tok = given_tok or train_tokenizer([d.text for d in tokenizer_docs], vocab_size)
    cuts: dict = {}
    train_tokens = encode_documents(tok, train_docs, "encode train", cuts)
    val_tokens = encode_documents(tok, val_docs, "encode val", cuts)
    synthetic_meta = None
    if budget is not None:
        synth, kept, target = _encode_generated(tok, draw, budget, train_tokens.size)
        synthetic_meta = SyntheticMeta(budget=budget.as_dict(), files=len(kept), tokens=int(synth.size),
                                       chars=sum(len(d.text) for d in kept),
                                       share_of_train_tokens=synth.size / (synth.size + train_tokens.size),
                                       target_tokens=target)
        train_tokens = np.concatenate([train_tokens, synth])
        train_docs = train_docs + kept
    vocab = tok.get_vocab_size()
    counts = bigram_counts(train_tokens, vocab)
    logprobs = bigram_logprobs(torch.from_numpy(counts))
    _write_arrays(out, tok, train_tokens, val_tokens, counts)
    meta = DataMeta(
        format_version=DATA_FORMAT_VERSION,
        source=" + ".join(s if s != "stdlib" else f"stdlib ({stdlib_dir()})" for s in sources),
        sources=sources,
        fingerprint=fingerprint,
        vocab_size=vocab,
        pretokenize_regex=PRETOKENIZE_REGEX,
        split=SplitSettings(seed=seed, val_frac=val_frac, by="file",
                            validation="real code" if real else "generated programs (a separate stream)"),
        files=FileCounts(train=len(train_docs), val=len(val_docs), skipped_non_utf8=scan.skipped_non_utf8,
                         skipped_unreadable=scan.skipped_unreadable, skipped_empty=scan.skipped_empty),
        tokens=SplitCounts(train=int(train_tokens.size), val=int(val_tokens.size)),
        hard_cuts=cuts.get("hard_cuts", 0),
        chars=SplitCounts(train=sum(len(d.text) for d in train_docs), val=sum(len(d.text) for d in val_docs)),
        synthetic=synthetic_meta,
        baselines_val_loss=Baselines(unigram=unigram_loss(train_tokens, val_tokens, vocab),
                                     bigram=bigram_loss(logprobs, val_tokens) if val_tokens.size > 1 else None),
        val_files=[d.name for d in val_docs],
        sha256={name: sha256_file(out / name) for name in DATA_FILES},
    )
    meta.save(out)
    log(f"data: {meta.tokens.train:,} train / {meta.tokens.val:,} validation tokens"
        + (f" ({synthetic_meta.tokens:,} train tokens generated, {synthetic_meta.share_of_train_tokens:.0%})"
           if synthetic_meta else "")
        + f"; skipped {scan.skipped_non_utf8} non-UTF-8 and {scan.skipped_unreadable} unreadable files -> {out}")
    return meta


class DataSplit(str, enum.Enum):
    """The two token splits of a data directory (the tasks have their own, `tasks.Split`)."""
    TRAIN = "train"
    VAL = "val"


class TokenData:
    """The token arrays of a data directory, and the model's batches drawn from them."""

    def __init__(self, data_dir: str | os.PathLike):
        self.dir = Path(data_dir)
        self.meta = DataMeta.load(self.dir)
        for name in (TRAIN_FILE, VAL_FILE, TOKENIZER_FILE):
            if not (self.dir / name).is_file():
                raise UserError(f"{self.dir / name}: missing; re-run `sparse-circuits data --out {self.dir}`")
        # Checked once, here: every stage that reads tokens opens them through this class.
        arrays = []
        for name, n in ((TRAIN_FILE, self.meta.tokens.train), (VAL_FILE, self.meta.tokens.val)):
            size = (self.dir / name).stat().st_size
            if size != 2 * n:
                raise UserError(f"{self.dir / name}: {size} bytes, but meta.json counts {n} tokens ({2 * n} bytes): "
                                f"the directory is damaged or half rewritten; re-run `sparse-circuits data --out "
                                f"{self.dir} --force`")
            arrays.append(np.memmap(self.dir / name, dtype=np.uint16, mode="r") if n else np.zeros(0, np.uint16))
        self.train, self.val = arrays
        self.vocab_size = self.meta.vocab_size
        for name, arr in zip((TRAIN_FILE, VAL_FILE), arrays):
            if arr.size and int(arr.max()) >= self.vocab_size:
                raise UserError(f"{self.dir / name}: token id {int(arr.max())} is not below the vocabulary size "
                                f"{self.vocab_size}; the directory is damaged; re-run `sparse-circuits data --out "
                                f"{self.dir} --force`")

    def bigram_logprobs(self) -> torch.Tensor:
        counts = read_safetensors(self.dir / BIGRAM_FILE, "bigram counts")["counts"]
        return bigram_logprobs(counts)

    def batch(self, split: DataSplit, batch_size: int, context: int, seed: int, index: int,
              rows: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows, a pure function of (seed, split, index): resuming needs no RNG state.

        `rows` selects this process's share of the global batch in data-parallel training.
        """
        split = DataSplit(split)  # a misspelt split is an error, never a silent fallback
        tokens = self.train if split == DataSplit.TRAIN else self.val
        if tokens.size < context + 2:
            raise UserError(f"{self.dir}: the {split.value} split has {tokens.size} tokens, fewer than the context "
                            f"{context} + 2; use a larger corpus or a smaller context")
        rng = np.random.default_rng([seed, 0 if split == DataSplit.TRAIN else 1, index])
        starts = rng.integers(0, tokens.size - context - 1, size=batch_size)[rows]
        windows = np.stack([tokens[s:s + context + 1] for s in starts]).astype(np.int64)
        w = torch.from_numpy(windows)
        return w[:, :-1], w[:, 1:]
