"""Peak memory and time of `sparse-circuits data` on large and pathological corpora.

    python benchmarks/bench_data.py [--mb 100] [--out benchmarks/results/data.json]

Each case runs `sparse-circuits data` in its own process on a corpus written to a temporary
directory and reports the process's peak resident memory (ru_maxrss) and wall time:
- `stdlib xN`: the Python standard library's files copied until the corpus holds --mb megabytes;
- `one line of letters`: a single file of --mb/2 megabytes of random letters, no whitespace;
- `one line of words`: a single line of --mb/2 megabytes of short words and spaces;
- `many lines`: --mb/2 megabytes of generated code in one file.
Prints a table and writes JSON. Compare rows measured in one run (the machine may be busy).
"""

from __future__ import annotations

import argparse
import platform
import random
import shutil
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sparse_circuits.data.meta import META_FILE, DataMeta
from sparse_circuits.data.prepare import HARD_CUT_CHARS, PIECE_CHARS, Document, split_by_file, stdlib_dir
from sparse_circuits.fileio import write_json


def stdlib_copies(dest: Path, megabytes: float) -> None:
    files = sorted(p for p in Path(stdlib_dir()).rglob("*.py") if p.is_file())
    written, copy = 0, 0
    while written < megabytes * 1e6:
        for f in files:
            try:
                text = f.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            out = dest / f"copy{copy}" / f.relative_to(stdlib_dir())
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
            written += len(text.encode())
            if written >= megabytes * 1e6:
                break
        copy += 1


def small_files(dest: Path) -> None:
    """Ordinary files beside the big one, so that the by-file split can hold one out for validation
    and the big file goes to training (where the tokenizer is trained): the name is chosen so."""
    big = next(p for p in dest.iterdir() if p.is_file())
    names = [f"small{i}.py" for i in range(19)]
    for attempt in range(100):
        name = f"big{attempt}.py"
        train, _ = split_by_file([Document(n, "") for n in names + [name]], 0.05, 0)
        if name in {d.name for d in train}:
            break
    big.rename(dest / name)
    for n in names:
        (dest / n).write_text("def f(x):\n    return x + 1\n" * 200, encoding="utf-8")


def one_line(dest: Path, megabytes: float, words: bool) -> None:
    rng = random.Random(0)
    dest.mkdir(parents=True)
    n = int(megabytes * 1e6)
    if words:
        chunk = " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 8))) for _ in range(20000))
    else:
        chunk = "".join(rng.choices(string.ascii_letters, k=200_000))
    with open(dest / "big.py", "w", encoding="utf-8") as f:
        for _ in range(n // len(chunk) + 1):
            f.write(chunk)
    small_files(dest)


def many_lines(dest: Path, megabytes: float) -> None:
    from sparse_circuits.data.synthetic import generate_programs

    dest.mkdir(parents=True)
    stream = generate_programs(0)
    with open(dest / "generated.py", "w", encoding="utf-8") as f:
        written = 0
        while written < megabytes * 1e6:
            text = next(stream)
            f.write(text + "\n")
            written += len(text) + 1
    small_files(dest)


# The child reports its own peak resident memory as it exits.
_PEAK = ("import atexit, resource, sys; atexit.register(lambda: sys.stderr.write("
         "'PEAK_KB %d\\n' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)); "
         "from sparse_circuits.cli import main; main()")


def run_data(corpus: Path, out: Path, timeout: float) -> dict:
    start = time.perf_counter()
    peak_kb = None
    try:
        r = subprocess.run([sys.executable, "-c", _PEAK, "data", "--corpus", str(corpus), "--out", str(out)],
                           capture_output=True, text=True, timeout=timeout)
        status = "ok" if r.returncode == 0 else f"exit {r.returncode}"
        peaks = [int(line.split()[1]) for line in r.stderr.splitlines() if line.startswith("PEAK_KB ")]
        peak_kb = peaks[-1] if peaks else None
    except subprocess.TimeoutExpired:
        status = f"timeout after {timeout:.0f} s"
    seconds = time.perf_counter() - start
    meta = DataMeta.load(out) if (out / META_FILE).is_file() else None
    return {"status": status, "seconds": seconds, "peak_rss_mb": peak_kb / 1024 if peak_kb else None,
            "tokens": meta.tokens.train if meta else None, "hard_cuts": meta.hard_cuts if meta else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100.0, help="size of the stdlib corpus in megabytes")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--out", default="benchmarks/results/data.json")
    parser.add_argument("--cases", default="letters,words,lines,stdlib", help="which cases, comma-separated")
    args = parser.parse_args()

    cases = [("letters", "one line of letters", lambda d: one_line(d, args.mb / 2, words=False)),
             ("words", "one line of words", lambda d: one_line(d, args.mb / 2, words=True)),
             ("lines", "many lines", lambda d: many_lines(d, args.mb / 2)),
             ("stdlib", f"stdlib x{args.mb:g} MB", lambda d: stdlib_copies(d, args.mb))]
    chosen = args.cases.split(",")
    cases = [(name, make) for key, name, make in cases if key in chosen]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in cases:
            corpus = Path(tmp) / "corpus"
            make(corpus)
            size = sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file())
            row = {"case": name, "corpus_mb": size / 1e6} | run_data(corpus, Path(tmp) / "data", args.timeout)
            rows.append(row)
            print(f"{name:<24} {row['corpus_mb']:>8.1f} MB  {row['status']:<10} {row['seconds']:>7.1f} s  peak "
                  + (f"{row['peak_rss_mb']:>7.0f} MB" if row["peak_rss_mb"] else "    -")
                  + f"  hard cuts {row['hard_cuts']}", flush=True)
            shutil.rmtree(corpus)
            shutil.rmtree(Path(tmp) / "data", ignore_errors=True)
    write_json(args.out, {"machine": {"platform": platform.platform(), "python": platform.python_version()},
                          "piece_chars": PIECE_CHARS, "hard_cut_chars": HARD_CUT_CHARS, "cases": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
