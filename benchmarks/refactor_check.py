"""Does a refactor change any output? Runs the same small pipeline with this code and with an
earlier commit (checked out into a temporary git worktree) and compares every file byte by byte.

    python benchmarks/refactor_check.py --baseline main [--keep /tmp/refactor-check]

The pipeline, from a corpus of generated programs (`--corpus synthetic`, fixed budget): `data`,
`train --preset tiny` (30 steps, sparse and dense), `tasks eval`, `prune-all` on the sparse run,
`info --json`, `export-openai` and `demo --quick`. Files that hold wall-clock times are compared
with those fields removed (JSON keys listed in TIMED); the report's pages embed them too and are
compared after dropping timing lines. A difference is printed with the first differing key.
Writes benchmarks/results/refactor/check.txt.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_throughput import baseline_checkout  # noqa: E402  (the same temporary git worktree)
TIMED = {"seconds", "elapsed_s", "tokens_per_s", "train_seconds", "prune_seconds", "wall_s", "stages", "created",
         "search_seconds", "stage_seconds", "total_seconds"}
STEPS = [
    ["data", "--corpus", "synthetic", "--synthetic-files", "400", "--vocab-size", "300", "--out", "{w}/data"],
    ["train", "--data", "{w}/data", "--preset", "tiny", "--steps", "30", "--out", "{w}/sparse"],
    ["train", "--data", "{w}/data", "--preset", "tiny", "--steps", "30", "--dense", "--out", "{w}/dense"],
    ["tasks", "eval", "--model", "{w}/sparse", "--pairs", "16", "--json", "{w}/scores.json"],
    ["prune-all", "--model", "{w}/sparse", "--target-loss", "0.6", "--steps", "60", "--pairs", "16"],
    ["info", "{w}/sparse", "--json"],
    ["export-openai", "{w}/sparse", "--out", "{w}/exported"],
    ["demo", "--quick", "--out", "{w}/demo"],
]


def run_pipeline(code: Path, work: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(code), OMP_NUM_THREADS="1")
    work.mkdir(parents=True, exist_ok=True)
    for step in STEPS:
        args = [a.format(w=work) for a in step]
        r = subprocess.run([sys.executable, "-m", "sparse_circuits.cli", *args], env=env, cwd=str(work),
                           capture_output=True, text=True)
        (work / f"stdout-{step[0]}.txt").write_text(r.stdout)
        if r.returncode:
            raise SystemExit(f"{code}: `{' '.join(args)}` failed: {r.stderr.strip()[-500:]}")


# Hashes of whole files: safetensors writes its metadata in a per-process order (a hash map), so equal
# tensors can give different bytes; the tensors and the metadata themselves are compared instead.
FILE_HASHES = {"weights_sha256", "model_sha256", "dense_weights_sha256"}


def _strip(x):
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if k not in TIMED | FILE_HASHES}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


def _json_same(da: bytes, db: bytes, lines: bool) -> bool:
    load = (lambda d: [json.loads(x) for x in d.decode().splitlines()]) if lines else (lambda d: json.loads(d))
    # Compared as canonical text: NaN equals NaN there, as it should for "the same output".
    canon = lambda d: json.dumps(_strip(load(d)), sort_keys=True)
    return canon(da) == canon(db)


def _tensors_same(a: dict, b: dict) -> bool:
    import torch
    return a.keys() == b.keys() and all(
        x.dtype == b[k].dtype and x.shape == b[k].shape and torch.equal(x.reshape(-1).view(torch.uint8), b[k].reshape(-1).view(torch.uint8))
        for k, x in a.items() if isinstance(x, torch.Tensor))


def same(a: Path, b: Path) -> tuple[bool, str]:
    da, db = a.read_bytes(), b.read_bytes()
    if da == db:
        return True, ""
    if a.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file
        meta = lambda p: {k: v for k, v in (safe_open(str(p), "pt").metadata() or {}).items() if k not in FILE_HASHES}
        return _tensors_same(load_file(a), load_file(b)) and meta(a) == meta(b), "tensors or metadata differ"
    if a.suffix == ".pt":
        import torch
        return _tensors_same(torch.load(a, weights_only=True), torch.load(b, weights_only=True)), "tensors differ"
    if a.suffix in (".json", ".jsonl"):
        try:
            return _json_same(da, db, a.suffix == ".jsonl"), "differs beyond timing fields"
        except ValueError:
            return False, "not JSON"
    if a.name.startswith("stdout-") or a.suffix in (".html", ".txt"):
        # Two jobs side by side interleave their log lines: compare the lines as a multiset. Timing
        # fields inside embedded JSON are blanked; human-readable timing lines are dropped.
        timed = re.compile(r'"(' + "|".join(sorted(TIMED)) + r')": [-+0-9.eE]+')
        keep = lambda t: sorted(timed.sub(r'"\1": T', line)
                                for line in t.decode(errors="replace").replace("[", "\n[").splitlines()
                                if line.strip() and not any(w in line for w in (" s)", " s ", "min ", "time",
                                                                             "tokens/s", "/tmp/sc-", "sha256")))
        return keep(da) == keep(db), "differs beyond timing lines"
    return False, "bytes differ"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, help="git revision of the code before the refactor")
    ap.add_argument("--keep", help="run here (and keep the outputs) instead of a temporary directory")
    ap.add_argument("--compare-only", action="store_true", help="compare the outputs already under --keep")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "refactor" / "check.txt"))
    args = ap.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="sc-refactor-out-"))
    with contextlib.nullcontext() if args.compare_only else baseline_checkout(args.baseline) as base:
        # The same absolute path for both runs: paths recorded in the outputs then agree.
        for label, code in () if args.compare_only else (("before", base), ("after", REPO)):
            work = root / "w"
            if work.exists():
                subprocess.run(["rm", "-rf", str(work)], check=True)
            print(f"{label}: running the pipeline with {code}", flush=True)
            run_pipeline(code, work)
            work.rename(root / label)
    before, after = root / "before", root / "after"
    files = sorted({p.relative_to(before) for p in before.rglob("*") if p.is_file()}
                   | {p.relative_to(after) for p in after.rglob("*") if p.is_file()})
    lines, bad = [], 0
    for rel in files:
        a, b = before / rel, after / rel
        if not (a.is_file() and b.is_file()):
            lines.append(f"ONLY {'before' if a.is_file() else 'after'}: {rel}")
            bad += 1
            continue
        ok, why = same(a, b)
        if not ok:
            lines.append(f"DIFFERS: {rel} ({why})")
            bad += 1
    lines.append(f"{len(files) - bad} of {len(files)} files identical (timing fields aside); {bad} differ"
                 f" (baseline {args.baseline})")
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
