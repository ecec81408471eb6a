"""GPT-2-style BPE files (`encoder.json` + `vocab.bpe`, the form tiktoken's data-gym loader reads)
to and from a `tokenizers` Tokenizer with our pre-tokenizer.

OpenAI's `tinypython_2k` comes as these two files; its token ids are ranks: the 256 single bytes
first, in the data-gym order (printable bytes other than space, then the rest, each in byte
order), then one token per merge of `vocab.bpe` in file order, then `<|endoftext|>` (2047).
`export_bpe` writes our tokenizer in that layout and returns the id permutation the weights need.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tokenizers import Tokenizer, models

from ..data.prepare import EOT, new_tokenizer
from ..errors import UserError
from ..fileio import write_json, write_text

ENCODER_FILE = "encoder.json"
MERGES_FILE = "vocab.bpe"


# Bytes that stand for themselves in byte-level BPE files: printable Latin-1 other than space.
_OWN_BYTES = [b for b in range(256) if chr(b).isprintable() and b != 0x20]


def byte_chars() -> list[str]:
    """The printable character that stands for each byte in byte-level BPE files (index = byte):
    the `_OWN_BYTES` stand for themselves, every other byte for chr(256 + n), n counting those
    bytes in order."""
    chars, n = [""] * 256, 0
    for b in range(256):
        if b in _OWN_BYTES:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return chars


def byte_rank_order() -> list[int]:
    """Bytes in the order of their token ids in a data-gym BPE (tiktoken's rule)."""
    return _OWN_BYTES + [b for b in range(256) if b not in _OWN_BYTES]


def load_bpe(directory: str | os.PathLike) -> Tokenizer:
    """`encoder.json` + `vocab.bpe` of `directory` as a Tokenizer with our pre-tokenizer;
    `<|endoftext|>` keeps its id in encoder.json, or takes the next free id."""
    directory = Path(directory)
    enc_path, merges_path = directory / ENCODER_FILE, directory / MERGES_FILE
    for p in (enc_path, merges_path):
        if not p.is_file():
            raise UserError(f"{p}: not found; the tokenizer directory must hold {ENCODER_FILE} and {MERGES_FILE}")
    try:
        encoder = json.loads(enc_path.read_text(encoding="utf-8"))
        lines = merges_path.read_text(encoding="utf-8").split("\n")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{directory}: unreadable BPE files ({e}); restore {ENCODER_FILE} and {MERGES_FILE}") from None
    if not isinstance(encoder, dict) or not all(isinstance(v, int) for v in encoder.values()):
        raise UserError(f"{enc_path}: expected a JSON object of token -> id")
    # data-gym: a version line first, one "a b" merge per line, a trailing newline
    merges = []
    for i, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise UserError(f"{merges_path}:{i}: a merge line must be two tokens separated by one space")
        merges.append((parts[0], parts[1]))
    eot_id = encoder.pop(EOT, None)
    if sorted(encoder.values()) != list(range(len(encoder))):
        raise UserError(f"{enc_path}: token ids must be 0..{len(encoder) - 1} without gaps (besides {EOT})")
    missing = [a + b for a, b in merges if a + b not in encoder]
    if missing:
        raise UserError(f"{merges_path}: merge result {missing[0]!r} is not in {ENCODER_FILE}; the files do not belong together")
    # Every token but the 256 bytes is made by a merge: tokens no merge makes mean a truncated file,
    # which would still load and spend far more tokens on the same text.
    made = set(byte_chars()) | {a + b for a, b in merges}
    unmade = [t for t in encoder if t not in made]
    if unmade:
        raise UserError(f"{merges_path}: {len(unmade)} tokens of {ENCODER_FILE} are made by no merge (e.g. "
                        f"{unmade[0]!r}): the file is empty or truncated; restore the full {MERGES_FILE}")
    tok = new_tokenizer()
    # ignore_merges: a piece that is a whole token is that token, as tiktoken encodes
    tok.model = models.BPE(vocab=encoder, merges=merges, ignore_merges=True)
    tok.add_special_tokens([EOT])
    if eot_id is not None and tok.token_to_id(EOT) != eot_id:
        raise UserError(f"{enc_path}: {EOT} has id {eot_id}, expected {tok.token_to_id(EOT)} (the id after the last token)")
    return tok


def export_bpe(tok: Tokenizer, directory: str | os.PathLike) -> list[int]:
    """Write `tok` as `encoder.json` + `vocab.bpe` in the data-gym id layout. Returns `order`:
    new id i is old id order[i], for permuting the rows of embeddings, unembeddings and tables."""
    spec = json.loads(tok.to_str())
    model = spec["model"]
    if model.get("type") != "BPE":
        raise UserError(f"tokenizer model is {model.get('type')}, not BPE: it has no {MERGES_FILE} form")
    vocab: dict[str, int] = model["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    chars = byte_chars()
    order_tokens = [chars[b] for b in byte_rank_order()] + [a + b for a, b in merges]
    missing = [t for t in order_tokens if t not in vocab]
    if missing:
        raise UserError(f"tokenizer: token {missing[0]!r} (a byte or a merge result) is not in its vocabulary; "
                        "only byte-level BPE tokenizers export")
    if len(set(order_tokens)) != len(order_tokens):
        raise UserError("tokenizer: two merges give the same token; the data-gym format cannot express that")
    eot = tok.token_to_id(EOT)
    order = [vocab[t] for t in order_tokens] + ([eot] if eot is not None else [])
    if sorted(order) != list(range(tok.get_vocab_size())):
        extra = sorted(set(range(tok.get_vocab_size())) - set(order))
        raise UserError(f"tokenizer: ids {extra[:5]} are neither bytes, merges nor {EOT}; they cannot be exported")
    directory = Path(directory)
    encoder = {t: i for i, t in enumerate(order_tokens)}
    if eot is not None:
        encoder[EOT] = len(order_tokens)
    write_json(directory / ENCODER_FILE, encoder)
    write_text(directory / MERGES_FILE, "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return order
