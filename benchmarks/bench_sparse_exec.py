"""Sparse execution of frozen models: dense vs CSR products, and whole models at the released shapes.

    python benchmarks/bench_sparse_exec.py [--threads 2] [--prompts 32] [--prompt-len 48] [--out benchmarks/results]

1. The crossover: one linear layer, forward and backward to its input, dense vs sparse, over
   densities and shapes; it decides `kernels.SPARSE_DENSITY_THRESHOLD`.
2. Synthetic models at the released models' shapes (8 x 2048, d_mlp 8192, context 256, ~1/1000
   of weights nonzero, AbsTopK 1/8 at every node location; and 8 x 256): the forward pass, the
   forward + backward to the pruning masks, and one pruning step (the real `train_masks` for one
   step on a synthetic task batch), dense vs sparse, with the projected time of a 200-step
   pruning run. Weights are random, projected like training does; only timing is measured here
   (tests/test_kernels.py checks that the two paths agree).
Every ratio is measured in one run, dense and sparse alternated. Writes sparse_exec.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sparse_circuits.circuits.masks import Ablation
from sparse_circuits.circuits.prune import PruneConfig, train_masks
from sparse_circuits.config import ModelConfig
from sparse_circuits.kernels import SPARSE_DENSITY_THRESHOLD, SparseWeight, keep_freed_memory, sparse_linear
from sparse_circuits.model import GPT, Linear
from sparse_circuits.nodes import NodeLocation
from sparse_circuits.sparsity import project_
from sparse_circuits.tasks.evaluate import TaskTensors

from common import machine, write_result  # benchmarks/ (this script's directory)

SHAPES = {
    "8x2048 (csp_yolo2, 1/1000)": dict(n_layer=8, d_model=2048, d_mlp=8192, frac=1 / 1000),
    "8x256 (csp_sweep1 1x, 1/1000)": dict(n_layer=8, d_model=256, d_mlp=1024, frac=1 / 1000),
}


def timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def crossover(tokens: int, repeats: int) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    for out_f, in_f in ((256, 256), (1024, 256), (2048, 2048), (8192, 2048), (2048, 8192)):
        for density in (0.3, 0.1, 0.03, 0.01, 0.003, 0.001):
            w = torch.randn(out_f, in_f, generator=g)
            project_(w, density, min_per_unit=0)
            x = torch.randn(tokens, in_f, generator=g, requires_grad=True)
            sw = SparseWeight(w)

            def dense():
                F.linear(x, w).sum().backward()

            def sparse():
                sparse_linear(x, sw, None).sum().backward()

            td, ts = timed(dense, repeats), timed(sparse, repeats)
            rows.append({"shape": [out_f, in_f], "density": sw.density, "tokens": tokens, "dense_ms": td * 1e3,
                         "sparse_ms": ts * 1e3, "speedup": td / ts})
            print(f"   {out_f:>5}x{in_f:<5} density {sw.density:7.4f}: dense {td * 1e3:8.2f} ms  sparse "
                  f"{ts * 1e3:8.2f} ms  {td / ts:6.1f}x", flush=True)
    return rows


def synthetic_model(n_layer: int, d_model: int, d_mlp: int, frac: float) -> GPT:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=n_layer, d_model=d_model, d_head=16, d_mlp=d_mlp, context=256, vocab_size=2048,
                      activation_topk={loc: 1 / 8 for loc in NodeLocation})
    model = GPT(cfg, torch.randn(2048, 2048).log_softmax(-1)).eval()
    with torch.no_grad():
        for p in model.sparsified_parameters().values():
            if p.dim() == 2:
                project_(p, frac, min_per_unit=0)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def synthetic_task(n_prompts: int, length: int) -> TaskTensors:
    g = torch.Generator().manual_seed(1)
    tt = TaskTensors.__new__(TaskTensors)
    tt.idx = torch.randint(0, 2048, (n_prompts, length), generator=g)
    tt.last = torch.randint(length // 2, length, (n_prompts,), generator=g)
    tt.correct = torch.randint(0, 2048, (n_prompts,), generator=g)
    tt.wrong = torch.randint(0, 2048, (n_prompts,), generator=g)
    tt.label = torch.arange(n_prompts) % 2
    tt.n = n_prompts
    return tt


def model_rows(name: str, spec: dict, n_prompts: int, length: int, repeats: int) -> dict:
    model = synthetic_model(spec["n_layer"], spec["d_model"], spec["d_mlp"], spec["frac"])
    linears = [m for m in model.modules() if isinstance(m, Linear)]
    density = sum(int(torch.count_nonzero(m.weight)) for m in linears) / sum(m.weight.numel() for m in linears)
    tt = synthetic_task(n_prompts, length)
    means = {site: torch.zeros(s.width) for site, s in model.node_sites().items()}
    gates = {site: torch.ones(s.width, requires_grad=True) for site, s in model.node_sites().items()}
    cfg = PruneConfig(steps=1, batch_pairs=n_prompts // 2, ablation=Ablation.MEAN_TASK)

    def forward():
        with torch.no_grad():
            model(tt.idx, logits_at=tt.last)

    def forward_backward():
        from sparse_circuits.hooks import Hooks
        hooks = Hooks()
        for site, gate in gates.items():
            hooks.add(site, lambda t, g=gate: t * g)
        model(tt.idx, hooks, logits_at=tt.last).logsumexp(-1).sum().backward()

    def prune_step():
        train_masks(model, tt, means, cfg)

    out = {"model": name, "params": sum(p.numel() for p in model.parameters()), "linear_density": density,
           "prompts": n_prompts, "prompt_len": length}
    for label, fn in (("forward", forward), ("forward_backward_to_masks", forward_backward),
                      ("pruning_step", prune_step)):
        times = {"dense": [], "sparse": []}
        for _ in range(repeats):  # alternate, so that machine noise hits both
            model.use_sparse_weights(0.0)
            times["dense"].append(timed(fn, 1))
            model.use_sparse_weights(1.0)
            times["sparse"].append(timed(fn, 1))
        td, ts = statistics.median(times["dense"]), statistics.median(times["sparse"])
        out[label] = {"dense_s": td, "sparse_s": ts, "speedup": td / ts}
        print(f"   {label:>26}: dense {td:8.3f} s  sparse {ts:8.3f} s  {td / ts:6.1f}x", flush=True)
    step = out["pruning_step"]
    out["projected_200_step_pruning_min"] = {"dense": 200 * step["dense_s"] / 60, "sparse": 200 * step["sparse_s"] / 60}
    print(f"   200 pruning steps (mask training only, projected): dense {200 * step['dense_s'] / 60:.1f} min, "
          f"sparse {200 * step['sparse_s'] / 60:.1f} min")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=32, help="prompts per pruning batch (pairs x 2)")
    ap.add_argument("--prompt-len", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-large", action="store_true", help="leave out the 8 x 2048 model (1.7 GB of weights)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()

    print(f"1. one linear layer, forward + backward to the input, {args.prompts * args.prompt_len} tokens "
          f"(median of {args.repeats})")
    cross = crossover(args.prompts * args.prompt_len, args.repeats)
    models = []
    for name, spec in SHAPES.items():
        if args.skip_large and spec["d_model"] > 1024:
            continue
        print(f"\n2. {name}: {args.prompts} prompts x {args.prompt_len} tokens")
        models.append(model_rows(name, spec, args.prompts, args.prompt_len, args.repeats))
    result = {"machine": machine(args.threads),
              "threshold_in_code": SPARSE_DENSITY_THRESHOLD, "crossover": cross, "models": models}
    write_result(Path(args.out) / "sparse_exec.json", result)


if __name__ == "__main__":
    main()
