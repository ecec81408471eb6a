"""Sparse-aware training steps (issue 29): the dense step against the step whose linear layers
multiply on their nonzeros, per width and weight density, in one run.

    python benchmarks/bench_sparse_training.py --data runs/study/data-mix [--widths 128 256 512]
        [--densities 16 64 256] [--steps 4] [--threads 2] [--out benchmarks/results]

Each (width, density) is the `micro` shape (2 layers, d_mlp = 4 x width, context 128, batch 32)
with `nonzero_frac` = 1/density, trained through the same `Trainer.step` as `train`, at a step
past the end of the annealing (so the projection holds the weights at the target density). The
two paths alternate on the same model, step by step, so a busy machine slows both alike:

- dense: every product dense (the default, `train.sparse_products_below` 0);
- sparse fwd+dx: the forward product and the product back to the layer's input on the nonzeros
  (CSR, `kernels.training_sparse_linear`); the weight gradient stays dense (the paper regrows
  weights from it). The unembedding stays in the fused dense head loss.

Also one linear layer (d_model -> d_mlp, the step's token count) timed product by product,
dense against CSR, to show where the time goes. Writes sparse_training.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import torch

from sparse_circuits.config import resolve_run_config
from sparse_circuits.data import TokenData
from sparse_circuits.data.meta import DataMeta
from sparse_circuits.kernels import keep_freed_memory
from sparse_circuits.model import GPT
from sparse_circuits.train import Distributed, Trainer, build_optimizer

from common import machine, write_result  # benchmarks/ (this script's directory)

PATHS = {"dense": 0.0, "sparse fwd+dx": 1.0}  # train.sparse_products_below


def step_times(data: TokenData, data_dir: str, width: int, density: int, steps: int, warmup: int) -> dict:
    cfg = resolve_run_config("micro", {
        "data_dir": data_dir, "model": {"vocab_size": DataMeta.load(data_dir).vocab_size, "d_model": width,
                                        "d_mlp": 4 * width},
        "sparsity": {"nonzero_frac": 1 / density}, "train": {"steps": 2000}})
    torch.manual_seed(0)
    model = GPT(cfg.model, data.bigram_logprobs())
    opt, names = build_optimizer(model, cfg)
    trainer = Trainer(cfg, model, model, opt, names, data, Distributed(), torch.device("cpu"))
    times: dict[str, list[float]] = {p: [] for p in PATHS}
    for i in range(warmup + steps):
        for path, below in PATHS.items():
            model.use_sparse_training_products(below)
            t0 = time.perf_counter()
            trainer.step(1500 + 2 * i + (path != "dense"))
            if i >= warmup:
                times[path].append(time.perf_counter() - t0)
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.sparsified_parameters().values())
    total = sum(p.numel() for p in model.sparsified_parameters().values())
    out = {"width": width, "density": f"1/{density}", "nonzero_frac": nonzero / total, "nonzero": nonzero,
           "tokens_per_step": cfg.train.batch_size * cfg.model.context}
    for path, ts in times.items():
        out[path] = {"step_s": statistics.median(ts), "all_s": ts}
    out["speedup"] = out["dense"]["step_s"] / out["sparse fwd+dx"]["step_s"]
    return out


def one_layer(width: int, density: int, tokens: int, reps: int = 5) -> dict:
    """d_model -> d_mlp at the step's token count: each product, dense and CSR (ms, median)."""
    def ms(fn):
        fn()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return 1e3 * statistics.median(ts)

    torch.manual_seed(0)
    w = torch.randn(4 * width, width) * (torch.rand(4 * width, width) < 1 / density)
    x, gy = torch.randn(tokens, width), torch.randn(tokens, 4 * width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        csr, csc = w.to_sparse_csr(), w.to_sparse_csc()
        csr_t = torch.sparse_csr_tensor(csc.ccol_indices(), csc.row_indices(), csc.values(), size=(width, 4 * width))
        return {"width": width, "density": f"1/{density}",
                "dense forward": ms(lambda: x @ w.t()), "csr forward": ms(lambda: x @ csr_t),
                "dense dx": ms(lambda: gy @ w), "csr dx": ms(lambda: gy @ csr),
                "dense dW (both paths)": ms(lambda: gy.t() @ x),
                "csr copies": ms(lambda: (w.to_sparse_csr(), w.to_sparse_csc()))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--densities", type=int, nargs="+", default=[16, 64, 256], help="1/N of the weights nonzero")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    data = TokenData(args.data)
    rows, layers = [], []
    print(f"{'width':>5} {'density':>7} {'nonzero':>8} {'dense s/step':>12} {'sparse s/step':>13} {'speedup':>7}")
    for width in args.widths:
        for density in args.densities:
            r = step_times(data, args.data, width, density, args.steps, args.warmup)
            rows.append(r)
            print(f"{width:>5} {r['density']:>7} {r['nonzero']:>8} {r['dense']['step_s']:>12.3f} "
                  f"{r['sparse fwd+dx']['step_s']:>13.3f} {r['speedup']:>6.2f}x", flush=True)
            layers.append(one_layer(width, density, r["tokens_per_step"]))
    print("\none layer d_model -> 4 d_model at the step's tokens (ms):")
    keys = [k for k in layers[0] if k not in ("width", "density")]
    print(f"{'width':>5} {'density':>7} " + " ".join(f"{k:>20}" for k in keys))
    for r in layers:
        print(f"{r['width']:>5} {r['density']:>7} " + " ".join(f"{r[k]:>20.2f}" for k in keys))
    write_result(Path(args.out) / "sparse_training.json",
                 {"machine": machine(args.threads), "steps": rows, "one_layer": layers})


if __name__ == "__main__":
    main()
