"""Circuits and their critics (issue 30), for every task a model has learned:

1. ablation kinds: the circuit's size and held-out loss when pruned and validated under each kind
   (the mean-pretrain circuit is the one `prune-all` wrote, with its validation);
2. the complement check's flag and losses (validate's `fragile`), per kind;
3. pruning seeds and backups: `backups` (its first round is the seed agreement: Jaccard, the
   nodes every seed keeps), rounds until no seed reaches the target;
4. both exports of the mean-pretrain circuit (MIB, graph) and their faithfulness areas.

    python benchmarks/circuit_critics.py --model runs/demo-s0/sparse --model runs/demo-s0/dense \
        [--out runs/critics] [--seeds 3] [--max-rounds 10] [--reuse]

Models run side by side, one process and one thread each (sparse_circuits/parallel.py). Tasks:
those each model's `prune-all` (RUN/circuits/summary.json) counted: learned, attempted, not decided
by the bigram table. Every step is timed. Each model's record goes to OUT/MODEL.json, rewritten
after every step (a killed run keeps what it did; `--reuse` skips it); the merged table to
OUT/circuit_critics.json, printed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from sparse_circuits.circuits.ablations import ablation_choices
from sparse_circuits.circuits.api import LoadedRun, NoCircuit, export_circuit, prune_task, validate_loaded
from sparse_circuits.circuits.backups import backup_analysis, task_pruner
from sparse_circuits.circuits.circuit import load_circuit
from sparse_circuits.circuits.export import ExportFormat
from sparse_circuits.circuits.masks import Ablation
from sparse_circuits.circuits.prune import PruneConfig
from sparse_circuits.circuits.summary import PruneAllSummary
from sparse_circuits.circuits.validate import Validation
from sparse_circuits.fileio import read_json, write_json
from sparse_circuits.parallel import Job, side_by_side

from common import machine  # benchmarks/ (this script's directory)


def counted_tasks(run_dir: Path) -> list[str]:
    summary = PruneAllSummary.load(run_dir / "circuits")
    return [name for name, outcome in summary.tasks.items() if outcome.counted]


def kind_row(circuit, v: Validation) -> dict:
    c = v.complement
    return {"nodes": circuit.num_nodes, "edges": circuit.num_edges, "train_loss": circuit.loss,
            "test_loss": v.sufficiency.loss, "test_accuracy": v.sufficiency.accuracy,
            "full_model_test_loss": v.full_model.loss,
            "test_loss_under": {k.value: x for k, x in v.ablation_sensitivity.items()},
            "fragile": c.fragile, "restored": [{"fraction": r.fraction, "mean_loss": r.mean_loss,
                                                "worst_loss": r.worst_loss} for r in c.random],
            "adversary_size": c.adversary_size, "adversary_loss": c.adversary_loss, "worst_loss": c.worst_loss}


def critique_model(model_dir: str, out: str, kinds: list[str], seeds: int, max_rounds: int, budget: int,
                   reuse: bool) -> dict:
    """Everything for one model (run in its own process); returns and writes OUT/MODEL.json."""
    model_dir, out = Path(model_dir), Path(out)
    record_path = out / f"{model_dir.name}.json"
    record = read_json(record_path, "record") if reuse and record_path.is_file() else {}
    record |= {"model": str(model_dir), "machine": machine(1), "kinds": kinds, "seeds": seeds,
               "max_rounds": max_rounds, "budget": budget}
    tasks = record.setdefault("tasks", {})
    loaded = LoadedRun.load(model_dir)
    log = lambda msg: print(f"[{model_dir.name}] {msg}", flush=True)
    save = lambda: write_json(record_path, record)
    for task in counted_tasks(model_dir):
        t = tasks.setdefault(task, {"kinds": {}})
        for kind in map(Ablation, kinds):
            if kind.value in t["kinds"]:
                continue
            t0 = time.perf_counter()
            if kind == Ablation.MEAN_PRETRAIN:  # prune-all's own circuit and validation
                circuit_dir = model_dir / "circuits" / task
                circuit, v = load_circuit(circuit_dir), Validation.load(circuit_dir)
                row = kind_row(circuit, v) | {"from": "prune-all"}
            else:
                circuit_dir = out / model_dir.name / "kinds" / kind.value / task
                try:
                    circuit, _ = prune_task(loaded, task, circuit_dir, PruneConfig(ablation=kind), budget,
                                            progress=False)
                    v = validate_loaded(loaded, circuit, progress=False)
                    v.save(circuit_dir)
                    row = kind_row(circuit, v)
                except NoCircuit as e:
                    row = {"nodes": None, "edges": None, "note": str(e)}
            row["seconds"] = time.perf_counter() - t0
            t["kinds"][kind.value] = row
            save()
            log(f"{task:<22} {kind.value:<14} edges {row['edges']!s:>5} test loss "
                f"{row.get('test_loss', float('nan')):.3f}{'  FRAGILE' if row.get('fragile') else ''} "
                f"({row['seconds']:.0f} s)")
        if "backups" not in t:
            t0 = time.perf_counter()
            a = backup_analysis(task_pruner(loaded, task, PruneConfig(), budget, progress=False), seeds,
                                out / model_dir.name / "backups" / task, max_rounds,
                                log=lambda m: log(f"{task} backups: {m}"))
            first = a.rounds[0].agreement
            t["backups"] = {"rounds": len(a.rounds), "backups": a.backups, "stopped": a.stopped,
                            "core": a.core, "seed_jaccard_mean": first.jaccard_mean,
                            "seed_jaccard_min": first.jaccard_min, "seed_nodes": first.nodes,
                            "seed_edges": first.edges, "seed_union": first.union,
                            "nodes_per_round": [r.agreement.nodes for r in a.rounds],
                            "seconds": time.perf_counter() - t0}
            save()
        if "exports" not in t:
            t0 = time.perf_counter()
            t["exports"] = {}
            for fmt in ExportFormat:
                data = export_circuit(model_dir / "circuits" / task, fmt,
                                      out / model_dir.name / "exports" / f"{task}.{fmt.value}.json")
                f = data["faithfulness"]
                t["exports"][fmt.value] = {"cpr": f["cpr"], "cmd": f["cmd"]} | (
                    {"nodes": len(data["nodes"]), "links": len(data["links"])} if fmt == ExportFormat.GRAPH else
                    {"edges_in_graph": sum(e["in_graph"] for e in data["edges"].values()),
                     "edges": len(data["edges"])})
            t["exports"]["seconds"] = time.perf_counter() - t0
            save()
    record["seconds"] = sum(r.get("seconds", 0) for t in tasks.values() for r in t["kinds"].values()) + sum(
        t[part]["seconds"] for t in tasks.values() for part in ("backups", "exports") if part in t)
    save()
    return record


def print_tables(records: list[dict], kinds: list[str]) -> None:
    print(f"\n{'model':<8} {'task':<22} " + " ".join(f"{k:>16}" for k in kinds) + "   (edges / test loss, ! fragile)")
    for rec in records:
        for task, t in rec["tasks"].items():
            cells = []
            for k in kinds:
                r = t["kinds"].get(k, {})
                cells.append("-" if r.get("edges") is None else
                             f"{r['edges']}/{r['test_loss']:.3f}{'!' if r['fragile'] else ''}")
            print(f"{Path(rec['model']).name:<8} {task:<22} " + " ".join(f"{c:>16}" for c in cells))
    print(f"\n{'model':<8} {'task':<22} {'rounds':>6} {'backups':>7} {'core':>5} {'jaccard':>8}  "
          f"{'MIB CPR':>7} {'CMD':>6}  stopped")
    for rec in records:
        for task, t in rec["tasks"].items():
            b, e = t.get("backups"), t.get("exports", {}).get("mib")
            if b is None:
                continue
            jm = "-" if b["seed_jaccard_mean"] is None else f"{b['seed_jaccard_mean']:.2f}"
            print(f"{Path(rec['model']).name:<8} {task:<22} {b['rounds']:>6} {b['backups']:>7} {len(b['core']):>5} "
                  f"{jm:>8}  {e['cpr'] if e else float('nan'):>7.3f} {e['cmd'] if e else float('nan'):>6.3f}  "
                  f"{b['stopped']}")
    print()
    for rec in records:
        per_kind = {k: [t["kinds"][k]["edges"] for t in rec["tasks"].values()
                        if t["kinds"].get(k, {}).get("edges") is not None] for k in kinds}
        print(f"{Path(rec['model']).name}: median edges " + ", ".join(
            f"{k} {statistics.median(v):.0f}" for k, v in per_kind.items() if v) +
            f"; {rec['seconds'] / 60:.1f} min of one thread")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--kinds", nargs="+", default=ablation_choices(), choices=ablation_choices())
    ap.add_argument("--seeds", type=int, default=3, help="pruning seeds per backup round")
    ap.add_argument("--max-rounds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=1, help="pruning runs per circuit (prune-all's default)")
    ap.add_argument("--out", default="runs/critics")
    ap.add_argument("--reuse", action="store_true", help="keep what an earlier run of the same command wrote")
    args = ap.parse_args()
    start = time.perf_counter()
    jobs = [Job(Path(m).name, critique_model, {"model_dir": m, "out": args.out, "kinds": args.kinds,
                                               "seeds": args.seeds, "max_rounds": args.max_rounds,
                                               "budget": args.budget, "reuse": args.reuse}) for m in args.model]
    records = side_by_side(jobs, workers=min(2, len(jobs)))
    wall = time.perf_counter() - start
    write_json(Path(args.out) / "circuit_critics.json", {"machine": machine(1), "wall_seconds": wall,
                                                         "models": records})
    print_tables(records, args.kinds)
    print(f"all of it: {wall / 60:.1f} min wall clock, {len(records)} models side by side")


if __name__ == "__main__":
    main()
