"""The paper's two bridge experiments at our scale (docs/bridges.md, docs/results.md "Bridges").

    python benchmarks/bridge_experiments.py --bridged runs/micro-bridged --alone runs/micro-sparse-alone \
        [--tasks single_double_quote while_return_true] [--out benchmarks/results/bridges.json]

For each task: the task scores of the dense, bridged-sparse and sparse-alone models; the bridged
sparse model's circuit (pruned with the default settings, reused when already there); steering
through *every* residual-channel node of that circuit (no picking of the best one: all are
reported, with the random-direction control); and the dense model's task loss with its residual
replaced by dec(circuit) at each site. Plus the bridge quality and what the bridges cost the
sparse model (validation loss against the same config trained alone).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sparse_circuits.bridges import BridgedPair
from sparse_circuits.bridges.run import sparse_alone_comparison
from sparse_circuits.bridges.steer import circuit_through_bridge, residual_site_of, steer, steering_plot
from sparse_circuits.runs import BRIDGE_QUALITY_FILE, STEERING_DIR
from sparse_circuits.circuits.api import NoCircuit, prune_task
from sparse_circuits.circuits.circuit import load_circuit
from sparse_circuits.errors import UserError
from sparse_circuits.fileio import read_json
from sparse_circuits.nodes import NodeLocation
from sparse_circuits.tasks.evaluate import evaluate_run

from common import machine, write_result  # benchmarks/ (this script's directory)

RESIDUAL = {NodeLocation.ATTN_IN, NodeLocation.ATTN_OUT, NodeLocation.MLP_IN, NodeLocation.MLP_OUT}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bridged", required=True)
    ap.add_argument("--alone", required=True, help="the same sparse config trained without bridges")
    ap.add_argument("--tasks", nargs="+", default=["single_double_quote", "while_return_true"])
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bridges.json"))
    args = ap.parse_args()
    bridged = Path(args.bridged)
    pair = BridgedPair.load(bridged)
    dense_dir = read_json(bridged / "bridges.json", "bridge record")["dense_run"]
    result = {"machine": machine(), "bridged": str(bridged), "dense": dense_dir, "alone": args.alone,
              "quality": read_json(bridged / BRIDGE_QUALITY_FILE, "bridge quality"),
              "cost_to_sparse": sparse_alone_comparison(bridged, args.alone), "tasks": {}}
    print(f"bridges cost the sparse model: {result['cost_to_sparse']}")
    scores = {name: {s.task: s.as_dict() for s in evaluate_run(d, names=args.tasks, progress=False).scores}
              for name, d in (("dense", dense_dir), ("bridged", bridged), ("alone", args.alone))}
    for task in args.tasks:
        row = {"scores": {k: {m: v[task][m] for m in ("loss", "accuracy")} for k, v in scores.items()}}
        print(f"\n{task}: " + ", ".join(f"{k} acc {v['accuracy']:.2f}" for k, v in row["scores"].items()))
        circuit_dir = bridged / "circuits" / task
        t0 = time.perf_counter()
        try:
            circuit = load_circuit(circuit_dir) if (circuit_dir / "circuit.json").is_file() else \
                prune_task(bridged, task, circuit_dir, progress=False)[0]
        except NoCircuit as e:
            row["circuit"] = {"error": str(e)}
            print(f"  no circuit: {e}")
            result["tasks"][task] = row
            continue
        row["circuit"] = {"nodes": circuit.num_nodes, "edges": circuit.num_edges, "seconds": time.perf_counter() - t0}
        print(f"  circuit: {circuit.num_nodes} nodes, {circuit.num_edges} edges")
        row["steering"] = []
        for node in circuit.nodes:
            if node.location not in RESIDUAL:
                continue
            try:
                residual_site_of(node, pair.sparse.cfg.n_layer)
            except UserError:
                continue
            res = steer(pair, task, node, n_pairs=args.pairs)
            stem = f"{task}--{str(node).replace(':', '_')}"
            steering_plot(res, bridged / STEERING_DIR / f"{stem}.png")
            (bridged / STEERING_DIR / f"{stem}.json").write_text(json.dumps(res.as_dict(), indent=2))
            row["steering"].append(res.as_dict())
            print(f"  steer {node} via {res.site}: P(cf) {res.p_counterfactual_answer[0]:.4f} -> "
                  f"{res.p_counterfactual_answer[-1]:.4f} (control -> {res.control_p_counterfactual_answer[-1]:.4f}), "
                  f"P(actual) {res.p_actual_answer[0]:.4f} -> {res.p_actual_answer[-1]:.4f}")
        row["through_bridge"] = circuit_through_bridge(pair, circuit, args.pairs).as_dict()
        tb = row["through_bridge"]
        print(f"  through the bridge: dense {tb['dense_loss']:.3f}, sparse {tb['sparse_loss']:.3f}, circuit "
              f"{tb['circuit_loss']:.3f}; " + ", ".join(f"{s} whole {v['whole_sparse']:.3f} circuit {v['circuit']:.3f}"
                                                         for s, v in tb["by_site"].items()))
        result["tasks"][task] = row
    write_result(args.out, result)


if __name__ == "__main__":
    main()
