import json

import numpy as np
import pytest

from sparse_circuits.data import (
    Document,
    TokenData,
    load_tokenizer,
    prepare_data,
    read_corpus,
    split_by_file,
    train_tokenizer,
)
from sparse_circuits.errors import UserError

from conftest import write_corpus

QUOTED = [f'print("{w}")\nx = f(\'{w}\')\nrows = [[1, 2], [3]]\nv = [1, 2]\n' for w in
          ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]] * 40


def pieces(tok, text):
    return [tok.decode([i]) for i in tok.encode(text).ids]


def test_pretokenizer_follows_the_paper_regex():
    tok = train_tokenizer(QUOTED, 400)
    pre = [p for p, _ in tok.pre_tokenizer.pre_tokenize_str('print("hi")\nx = [[1]]\n')]
    # Byte-level pre-tokenization shows spaces as 'Ġ' and newlines as 'Ċ'.
    assert pre == ["print", '("', "hi", '")Ċ', "x", "Ġ=", "Ġ[[", "1", "]]Ċ"]
    # Digit runs of at most three.
    assert [p for p, _ in tok.pre_tokenizer.pre_tokenize_str("12345")] == ["123", "45"]


def test_quote_and_bracket_tokens():
    tok = train_tokenizer(QUOTED, 400)
    assert '("' in pieces(tok, 'print("alpha")\n')
    assert "('" in pieces(tok, "x = f('alpha')\n")
    assert pieces(tok, "v = [1, 2]\n")[-1] == "]\n"
    for text in ['print("hi")\n', "s = 'é ü 字'\n\tx\r\n", "a = [[1]]\n"]:
        assert tok.decode(tok.encode(text).ids) == text
    assert tok.token_to_id("<|endoftext|>") is not None


def test_split_is_by_file_deterministic_and_disjoint():
    docs = [Document(f"f{i}.py", f"x = {i}\n") for i in range(100)]
    train, val = split_by_file(docs, 0.1, seed=7)
    assert len(val) == 10 and len(train) == 90
    assert not {d.name for d in train} & {d.name for d in val}
    again = split_by_file(list(reversed(docs)), 0.1, seed=7)  # input order does not matter
    assert [d.name for d in again[1]] == [d.name for d in val]
    assert [d.name for d in split_by_file(docs, 0.1, seed=8)[1]] != [d.name for d in val]


def test_prepare_data_writes_arrays_and_metadata(tmp_path, corpus_dir):
    out = tmp_path / "data"
    meta = prepare_data(str(corpus_dir), out, vocab_size=300, val_frac=0.2, log=lambda *_: None)
    assert meta.files.train == 32 and meta.files.val == 8
    train = np.fromfile(out / "train.bin", dtype=np.uint16)
    val = np.fromfile(out / "val.bin", dtype=np.uint16)
    assert (meta.tokens.train, meta.tokens.val) == (train.size, val.size)
    tok = load_tokenizer(out / "tokenizer.json")
    eot = tok.token_to_id("<|endoftext|>")
    assert int((train == eot).sum()) == 32 and int((val == eot).sum()) == 8
    # The validation files' text is exactly what val.bin decodes to.
    val_text = "".join((corpus_dir / name).read_text() for name in meta.val_files)
    assert tok.decode([int(t) for t in val if t != eot]) == val_text
    assert meta.baselines_val_loss.bigram < meta.baselines_val_loss.unigram
    assert set(meta.sha256) == {"tokenizer.json", "train.bin", "val.bin", "bigram.safetensors"}


def test_rerun_reuses_result(tmp_path, corpus_dir):
    out = tmp_path / "data"
    prepare_data(str(corpus_dir), out, vocab_size=300, log=lambda *_: None)
    mtime = (out / "train.bin").stat().st_mtime_ns
    said = []
    prepare_data(str(corpus_dir), out, vocab_size=300, log=said.append)
    assert said and "reusing" in said[0]
    assert (out / "train.bin").stat().st_mtime_ns == mtime
    # A changed setting or corpus is refused (runs trained on the old data would break), unless asked.
    with pytest.raises(UserError, match="pass --force"):
        prepare_data(str(corpus_dir), out, vocab_size=290, log=lambda *_: None)
    assert (out / "train.bin").stat().st_mtime_ns == mtime
    said.clear()
    prepare_data(str(corpus_dir), out, vocab_size=290, log=said.append, overwrite=True)
    assert not any("reusing" in s for s in said)
    assert prepare_data(str(corpus_dir), out, vocab_size=290, log=lambda *_: None).vocab_size == 290


def test_non_utf8_and_unreadable_files_are_skipped_and_counted(tmp_path):
    root = write_corpus(tmp_path / "c", n_files=5)
    (root / "latin1.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))
    (root / "empty.py").write_text("\n\n")
    scan = read_corpus(str(root))
    assert len(scan.documents) == 5
    assert scan.skipped_non_utf8 == 1 and scan.skipped_empty == 1


def test_empty_corpus_is_an_error(tmp_path):
    (tmp_path / "e").mkdir()
    with pytest.raises(UserError, match="is empty"):
        read_corpus(str(tmp_path / "e"))
    (tmp_path / "e" / "bad.py").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UserError, match="1 non-UTF-8"):
        read_corpus(str(tmp_path / "e"))
    with pytest.raises(UserError, match="not found"):
        read_corpus(str(tmp_path / "missing"))


def test_text_jsonl_and_glob_sources(tmp_path, corpus_dir):
    txt = tmp_path / "c.txt"
    txt.write_text("x = 1\n<|endoftext|>y = 2\n")
    assert [d.text for d in read_corpus(str(txt)).documents] == ["x = 1\n", "y = 2\n"]
    jl = tmp_path / "c.jsonl"
    jl.write_text(json.dumps({"text": "a = 1\n"}) + "\n" + json.dumps({"text": "b = 2\n"}) + "\n")
    assert len(read_corpus(str(jl)).documents) == 2
    jl.write_text('{"code": 1}\n')
    with pytest.raises(UserError, match="'text' field"):
        read_corpus(str(jl))
    assert len(read_corpus(str(corpus_dir / "pkg0" / "*.py")).documents) == 14


def test_batches_are_a_function_of_seed_and_index(data_dir):
    data = TokenData(data_dir)
    x1, y1 = data.batch("train", 4, 16, seed=0, index=5)
    x2, _ = data.batch("train", 4, 16, seed=0, index=5)
    x3, _ = data.batch("train", 4, 16, seed=0, index=6)
    assert torch_equal(x1, x2) and not torch_equal(x1, x3)
    assert torch_equal(x1[:, 1:], y1[:, :-1])
    half, _ = data.batch("train", 4, 16, seed=0, index=5, rows=slice(2, 4))
    assert torch_equal(half, x1[2:])
    with pytest.raises(ValueError):
        data.batch("validation", 4, 16, seed=0, index=5)  # a misspelt split is never a silent fallback


def torch_equal(a, b):
    return bool((a == b).all())


def test_long_texts_are_encoded_in_pieces_with_exactly_the_whole_texts_tokens(data_dir):
    import random

    from conftest import make_python_file
    from sparse_circuits.data import PIECE_CHARS, Document, encode_each, load_tokenizer, text_pieces

    tok = load_tokenizer(data_dir / "tokenizer.json")
    rng = random.Random(0)
    code = "\n".join(make_python_file(rng, i) for i in range(400))  # ~4 pieces of real-looking code
    code += "x = '" + "ab cd, 12 " * 20000 + "'\n"  # a 200k-character line: cut at word ends
    stats: dict = {}
    pieces = text_pieces(code, stats)
    assert "".join(pieces) == code and len(pieces) > 5 and max(map(len, pieces)) <= PIECE_CHARS
    assert stats.get("hard_cuts", 0) == 0
    whole = tok.encode(code, add_special_tokens=False).ids
    (encoded,) = encode_each(tok, [Document("f.py", code)])
    assert encoded[:-1].tolist() == whole and encoded[-1] == tok.token_to_id("<|endoftext|>")
    # One 300k-character word has no boundary at all: hard cuts, counted.
    word = "".join(random.Random(1).choices("abcdefghij", k=300_000))
    pieces = text_pieces(word, stats)
    assert "".join(pieces) == word and stats["hard_cuts"] >= 1


def test_fifos_and_devices_in_a_corpus_are_skipped_not_read(tmp_path):
    """A FIFO named like a source file would block `data` forever, a link to /dev/zero would read
    until memory runs out: both are skipped and counted as unreadable (a link to a regular file is
    followed, as any file of the corpus)."""
    import os
    import subprocess
    import sys

    root = write_corpus(tmp_path / "c", n_files=6)
    os.mkfifo(root / "pipe.py")
    (root / "zero.py").symlink_to("/dev/zero")
    (root / "link.py").symlink_to(next(root.rglob("mod_0.py")))
    r = subprocess.run([sys.executable, "-m", "sparse_circuits.cli", "data", "--corpus", str(root), "--out",
                        str(tmp_path / "d"), "--vocab-size", "300", "--val-frac", "0.3", "--no-contamination"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["files"]["skipped_unreadable"] == 2
    assert meta["files"]["train"] + meta["files"]["val"] == 7  # six files and the followed link


def test_end_of_text_written_inside_a_file_is_text_not_a_separator(tmp_path):
    root = write_corpus(tmp_path / "c", n_files=6)
    (root / "tricky.py").write_text("SEP = '<|endoftext|>'\nprint(SEP)\n" * 3)
    meta = prepare_data(str(root), tmp_path / "d", vocab_size=300, val_frac=0.2, log=lambda *_: None)
    tok = load_tokenizer(tmp_path / "d" / "tokenizer.json")
    eot = tok.token_to_id("<|endoftext|>")
    train = np.fromfile(tmp_path / "d" / "train.bin", dtype=np.uint16)
    val = np.fromfile(tmp_path / "d" / "val.bin", dtype=np.uint16)
    # exactly one separator per document, at its end
    assert int((train == eot).sum()) == meta.files.train and int((val == eot).sum()) == meta.files.val
    assert tok.encode("<|endoftext|>").ids == [eot]  # the saved tokenizer still knows the separator


def test_a_damaged_or_torn_data_directory_is_refused_when_opened(tmp_path, corpus_dir):
    """Token ids beyond the vocabulary, an odd-length or empty train.bin, tokens that do not match
    meta.json (a directory half rewritten): one-line errors when the data is opened."""
    import shutil

    good = tmp_path / "good"
    prepare_data(str(corpus_dir), good, vocab_size=300, val_frac=0.2, log=lambda *_: None)
    TokenData(good)
    train = np.fromfile(good / "train.bin", dtype=np.uint16)
    damages = {
        "beyond the vocabulary": lambda d: np.concatenate([train[:-1], [299 + 7]]).astype(np.uint16).tofile(d / "train.bin"),
        "odd length": lambda d: (d / "train.bin").write_bytes((good / "train.bin").read_bytes()[:-1]),
        "empty": lambda d: (d / "train.bin").write_bytes(b""),
        "torn": lambda d: train[: train.size // 2].tofile(d / "train.bin"),
    }
    for what, damage in damages.items():
        d = tmp_path / what.replace(" ", "-")
        shutil.copytree(good, d)
        damage(d)
        with pytest.raises(UserError, match="--force"):
            TokenData(d)
