"""Training throughput in fp32 and bf16, and two trainings side by side against one after the other.

    python benchmarks/bench_precision.py --data runs/study/data-mix2 [--steps 40] [--repeats 3]

Part 1 (precision): tokens/s of `train.precision` fp32 and bf16 at the demo's shape (2 x 64) and
at `micro` (2 x 128), sparse and dense, batch 8 and 32, 2 threads; every measurement its own child
process, interleaved over `--repeats` rounds (a busy machine slows both alike); plus the matrix
products alone at those shapes. The rule of issue 26: bf16 becomes a default only where it is
>= 1.5x faster (and, measured separately, within 0.02 nats/token of fp32's loss).

Part 2 (side by side): two single-thread trainings at once against the same two one after the
other, and one two-thread training: tokens/s of the pair, at the demo's shape and batch.

Writes benchmarks/results/precision.json and prints both tables. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, write_result  # noqa: E402

SHAPES = {"demo (2 x 64)": {"d_model": 64, "d_mlp": 256}, "micro (2 x 128)": {}}
MATMULS = [(4096, 64, 256), (4096, 256, 64), (4096, 128, 512), (4096, 512, 128), (4096, 64, 2048), (1024, 1024, 1024)]


def _config(data_dir: str, shape: str, dense: bool, precision: str, batch: int, steps: int, threads: int):
    from sparse_circuits.config import resolve_run_config
    from sparse_circuits.data import DataMeta
    return resolve_run_config("micro", {
        "data_dir": data_dir, "model": {"vocab_size": DataMeta.load(data_dir).vocab_size} | SHAPES[shape],
        "sparsity": {"nonzero_frac": 1.0} if dense else {},
        "train": {"steps": 2000, "batch_size": batch, "threads": threads, "precision": precision},
    })


def worker(args: argparse.Namespace) -> None:
    """Time `--steps` optimizer steps after 5 warm-up steps, mid-anneal; print tokens/s as JSON."""
    import torch

    from sparse_circuits.config import BigramTable
    from sparse_circuits.data import TokenData
    from sparse_circuits.kernels import keep_freed_memory
    from sparse_circuits.model import GPT
    from sparse_circuits.train import Distributed, Trainer, build_optimizer

    cfg = _config(args.data, args.shape, args.dense, args.precision, args.batch, args.steps, args.threads)
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    torch.manual_seed(0)
    data = TokenData(cfg.data_dir)
    model = GPT(cfg.model, data.bigram_logprobs() if cfg.model.bigram_table != BigramTable.NONE else None)
    model.compute_dtype = cfg.train.precision.dtype
    opt, names = build_optimizer(model, cfg)
    trainer = Trainer(cfg, model, model, opt, names, data, Distributed(), torch.device("cpu"))
    first = 500  # in the anneal, where the projection works every step
    for s in range(first, first + 5):
        trainer.step(s)
    start = time.perf_counter()
    for s in range(first + 5, first + 5 + args.steps):
        trainer.step(s)
    seconds = time.perf_counter() - start
    print(json.dumps({"tokens_per_s": args.steps * cfg.train.batch_size * cfg.model.context / seconds}))


def matmul_worker(args: argparse.Namespace) -> None:
    import torch
    torch.set_num_threads(args.threads)
    out = {}
    for m, k, n in MATMULS:
        for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a, b = torch.randn(m, k, dtype=dt), torch.randn(k, n, dtype=dt)
            for _ in range(3):
                a @ b
            reps, start = 0, time.perf_counter()
            while time.perf_counter() - start < 0.5:
                a @ b
                reps += 1
            out[f"{m}x{k}x{n} {name}"] = 2 * m * k * n * reps / (time.perf_counter() - start) / 1e9
    print(json.dumps(out))


def child(args: argparse.Namespace, **kw) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--data", args.data, "--steps", str(args.steps)]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def result_of(p: subprocess.Popen) -> dict:
    out, _ = p.communicate()
    if p.returncode:
        raise SystemExit(f"a measurement failed (exit {p.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "precision.json"))
    ap.add_argument("--part", choices=["all", "precision", "parallel"], default="all")
    # child process options
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--matmul", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--shape", default="demo (2 x 64)", help=argparse.SUPPRESS)
    ap.add_argument("--dense", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=32, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if args.matmul:
        return matmul_worker(args)

    result: dict = {"machine": machine(2), "steps": args.steps, "repeats": args.repeats}
    if args.part in ("all", "precision"):
        samples: dict[tuple, list[float]] = {}
        matmuls: list[dict] = []
        for _ in range(args.repeats):
            matmuls.append(result_of(child(args, matmul=True, threads=2)))
            for shape in SHAPES:
                for dense in (False, True):
                    for batch in (8, 32):
                        for precision in ("fp32", "bf16"):
                            kw = dict(worker=True, shape=shape, precision=precision, batch=batch, threads=2)
                            if dense:
                                kw["dense"] = True
                            r = result_of(child(args, **kw))
                            samples.setdefault((shape, dense, batch, precision), []).append(r["tokens_per_s"])
        rows = []
        print("| shape | kind | batch | fp32 tokens/s | bf16 tokens/s | bf16 / fp32 |\n|---|---|---|---|---|---|")
        for shape in SHAPES:
            for dense in (False, True):
                for batch in (8, 32):
                    f = statistics.median(samples[(shape, dense, batch, "fp32")])
                    b = statistics.median(samples[(shape, dense, batch, "bf16")])
                    rows.append({"shape": shape, "kind": "dense" if dense else "sparse", "batch": batch,
                                 "fp32_tokens_per_s": f, "bf16_tokens_per_s": b, "ratio": b / f})
                    print(f"| {shape} | {rows[-1]['kind']} | {batch} | {f:,.0f} | {b:,.0f} | {b / f:.2f}x |")
        mm = {k: statistics.median(m[k] for m in matmuls) for k in matmuls[0]}
        print("\nmatrix products alone (GFLOP/s, 2 threads):")
        for m, k, n in MATMULS:
            f, b = mm[f"{m}x{k}x{n} fp32"], mm[f"{m}x{k}x{n} bf16"]
            print(f"  {m} x {k} x {n}: fp32 {f:.0f}, bf16 {b:.0f} ({b / f:.2f}x)")
        result["precision"] = rows
        result["matmul_gflops"] = mm
    if args.part in ("all", "parallel"):
        shape, batch = "demo (2 x 64)", 8
        rates: dict[str, list[float]] = {"one 2-thread run": [], "two 1-thread runs side by side": [],
                                         "one 1-thread run": []}
        for _ in range(args.repeats):
            rates["one 2-thread run"].append(result_of(child(args, worker=True, shape=shape, batch=batch,
                                                             threads=2))["tokens_per_s"])
            pair = [child(args, worker=True, shape=shape, batch=batch, threads=1),
                    child(args, worker=True, shape=shape, batch=batch, threads=1, dense=True)]
            rates["two 1-thread runs side by side"].append(sum(result_of(p)["tokens_per_s"] for p in pair))
            rates["one 1-thread run"].append(result_of(child(args, worker=True, shape=shape, batch=batch,
                                                             threads=1))["tokens_per_s"])
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(f"\nside by side ({shape}, batch {batch}, sparse + dense):")
        for k, v in med.items():
            print(f"  {k}: {v:,.0f} tokens/s ({v / med['one 2-thread run']:.2f}x one 2-thread run)")
        result["parallel"] = {"shape": shape, "batch": batch, "tokens_per_s": med, "samples": rates}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
