"""Pruning benchmark: time per task and per stage, and circuit size against the search budget.

    python benchmarks/bench_pruning.py --model runs/micro-sparse --tasks single_double_quote,while_return_true \
        --runs 8 [--out benchmarks/results]

For each task, runs the search's first `--runs` configurations (the paper's centre, then random
draws), then reports, for every budget b = 1, 2, 4, ...: the best circuit among the first b runs
against the best among all. A default budget b is good enough when its circuit is within 10% of
the best found with 8b runs. Writes benchmarks/results/pruning-<model>.json.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from sparse_circuits.circuits.ablations import ablation_values
from sparse_circuits.circuits.api import PRUNE_PAIRS, LoadedRun
from sparse_circuits.circuits.prune import PruneConfig, best_of, prune, search_configs
from sparse_circuits.fileio import write_json
from sparse_circuits.tasks import Split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="run directory")
    ap.add_argument("--tasks", required=True, help="comma-separated task names")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--pairs", type=int, default=PRUNE_PAIRS)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()

    report = {"machine": {"platform": platform.platform(), "torch": torch.__version__,
                          "threads": torch.get_num_threads()},
              "model": args.model, "runs": args.runs, "tasks": {}}
    for task in args.tasks.split(","):
        loaded = LoadedRun.load(args.model)
        ds, tt = loaded.task(task, Split.TRAIN, args.pairs, 0)
        model = loaded.model
        values = ablation_values(loaded.ablation_inputs(ds.prompt_tokens, progress=False))
        results = []
        for i, cfg in enumerate(search_configs(PruneConfig(), args.runs)):
            t0 = time.perf_counter()
            r = prune(model, tt, values[cfg.ablation], cfg)
            results.append(r)
            print(f"{task} run {i}: k_coef {cfg.k_coef:.2g} lr {cfg.lr:.2g} -> "
                  f"{r.num_nodes if r.found else 'no circuit'} nodes, {time.perf_counter() - t0:.0f} s "
                  + " ".join(f"{k} {v:.1f}s" for k, v in r.stage_seconds.items()), flush=True)
        sizes = {}
        b = 1
        while b <= args.runs:
            best = best_of(results[:b])
            sizes[b] = best.num_nodes if best.found else None
            b *= 2
        report["tasks"][task] = {
            "runs": [{"k_coef": r.config.k_coef, "lr": r.config.lr, "num_nodes": r.num_nodes if r.found else None,
                      "loss": r.loss if r.found else None, "seconds": r.seconds, "stages": r.stage_seconds}
                     for r in results],
            "best_nodes_by_budget": sizes,
            "median_seconds_per_run": statistics.median(r.seconds for r in results),
        }
    print(f"\n{'task':<28} " + " ".join(f"{'b=' + str(b):>7}" for b in report['tasks'][task]['best_nodes_by_budget'])
          + f" {'s/run':>7}")
    for task, t in report["tasks"].items():
        print(f"{task:<28} " + " ".join(f"{str(v):>7}" for v in t["best_nodes_by_budget"].values())
              + f" {t['median_seconds_per_run']:>7.1f}")
    out = Path(args.out) / f"pruning-{Path(args.model).name}.json"
    write_json(out, report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
