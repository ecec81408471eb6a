"""Circuits under every ablation kind (issue 30): per task, the circuit's size and its held-out loss
when pruned and validated with each kind, and whether it is fragile (validate's complement check),
for a sparse and a dense model.

    python benchmarks/ablation_kinds.py --model runs/demo-s0/sparse --model runs/demo-s0/dense \
        [--kinds mean-pretrain zero ...] [--budget 1] [--out runs/ablation-kinds]

Tasks: those each model's `prune-all` (RUN/circuits/summary.json) counted, i.e. learned, attempted
and not decided by the bigram table. Every (model, task, kind) is pruned with the same settings as
`prune-all` apart from the ablation, then validated on the test split (loss of the circuit alone
under its own kind, and under every other kind). Circuits go to OUT/circuits/MODEL/KIND/TASK;
the table to OUT/ablation_kinds.json (rewritten after each circuit: a killed run keeps what it did
and `--reuse` skips it) and is printed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from sparse_circuits.circuits.ablations import ablation_choices
from sparse_circuits.circuits.api import LoadedRun, NoCircuit, prune_task, validate_loaded
from sparse_circuits.circuits.circuit import load_circuit
from sparse_circuits.circuits.masks import Ablation
from sparse_circuits.circuits.prune import PruneConfig
from sparse_circuits.circuits.summary import PruneAllSummary
from sparse_circuits.fileio import read_json, write_json

from common import machine  # benchmarks/ (this script's directory)


def counted_tasks(run_dir: Path) -> list[str]:
    summary = PruneAllSummary.load(run_dir / "circuits")
    return [name for name, outcome in summary.tasks.items() if outcome.counted]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--kinds", nargs="+", default=ablation_choices(), choices=ablation_choices())
    ap.add_argument("--budget", type=int, default=1)
    ap.add_argument("--out", default="runs/ablation-kinds")
    ap.add_argument("--reuse", action="store_true", help="keep the rows of an earlier run of the same command")
    args = ap.parse_args()
    out = Path(args.out)
    table_path = out / "ablation_kinds.json"
    rows = read_json(table_path, "table")["rows"] if args.reuse and table_path.is_file() else []
    done = {(r["model"], r["task"], r["kind"]) for r in rows}
    start = time.perf_counter()
    for model_dir in map(Path, args.model):
        loaded = LoadedRun.load(model_dir)
        for task in counted_tasks(model_dir):
            for kind in map(Ablation, args.kinds):
                if (str(model_dir), task, kind.value) in done:
                    continue
                circuit_dir = out / "circuits" / model_dir.name / kind.value / task
                t0 = time.perf_counter()
                row = {"model": str(model_dir), "task": task, "kind": kind.value}
                try:
                    circuit, _ = prune_task(loaded, task, circuit_dir, PruneConfig(ablation=kind), args.budget,
                                            progress=False)
                    v = validate_loaded(loaded, load_circuit(circuit_dir), progress=False)
                    v.save(circuit_dir)
                    row |= {"nodes": circuit.num_nodes, "edges": circuit.num_edges, "train_loss": circuit.loss,
                            "test_loss": v.sufficiency.loss, "test_accuracy": v.sufficiency.accuracy,
                            "full_model_test_loss": v.full_model.loss,
                            "test_loss_under": {k.value: x for k, x in v.ablation_sensitivity.items()},
                            "fragile": v.complement.fragile, "restored_worst_loss": v.complement.worst_loss,
                            "adversary_loss": v.complement.adversary_loss}
                except NoCircuit as e:
                    row |= {"nodes": None, "edges": None, "note": str(e)}
                row["seconds"] = time.perf_counter() - t0
                rows.append(row)
                write_json(table_path, {"machine": machine(), "kinds": args.kinds, "budget": args.budget,
                                        "rows": rows})
                print(f"{model_dir.name:>8} {task:<22} {kind.value:<14} edges {row['edges']!s:>5} "
                      f"test loss {row.get('test_loss', float('nan')):.3f}{'  FRAGILE' if row.get('fragile') else ''}"
                      f"  ({row['seconds']:.0f} s)", flush=True)
    print(f"\n{len(rows)} circuits in {(time.perf_counter() - start) / 60:.1f} min (this run)")
    print(f"\n{'model':<8} {'kind':<14} " + "  ".join(f"{'edges':>6} {'test':>6}" for _ in [0]) +
          "   (median over tasks; per task in the JSON)")
    for model in dict.fromkeys(r["model"] for r in rows):
        for kind in args.kinds:
            got = [r for r in rows if r["model"] == model and r["kind"] == kind and r["edges"] is not None]
            if got:
                print(f"{Path(model).name:<8} {kind:<14} {statistics.median(r['edges'] for r in got):>6.0f} "
                      f"{statistics.median(r['test_loss'] for r in got):>6.3f}  ({len(got)} tasks)")


if __name__ == "__main__":
    main()
