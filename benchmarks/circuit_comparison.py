"""Circuits of several models side by side: the sparse/dense edge ratio over shared tasks.

Each model is a run directory on which `sparse-circuits prune-all` has run (RUN_DIR/circuits).
Per task: test accuracy, nodes/edges of each model's circuit, test loss of the circuit, and whether
the bigram table alone decides it. Then the geometric mean of edges over the tasks every model has
a circuit for (no controls, no bigram-decided tasks) and each model's ratio to the first, with the
validation loss on the whole held-out split, so that pairs at matched pretraining loss can be read off.

    python benchmarks/circuit_comparison.py --model sparse=runs/demo/sparse --model dense=runs/demo/dense \
        --model dense-matched=runs/study/mix_concat_600_steps_dense-s0 --out benchmarks/results/circuits-mix-concat
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sparse_circuits.runs import load_model  # noqa: E402
from sparse_circuits.circuits.summary import PruneAllSummary, shared_geomean  # noqa: E402
from sparse_circuits.data import TokenData  # noqa: E402
from sparse_circuits.fileio import write_json, write_text  # noqa: E402
from sparse_circuits.sweep.frontier import interpolate_log  # noqa: E402
from sparse_circuits.train import full_validation_loss  # noqa: E402


def compare(models: dict[str, Path]) -> dict:
    summaries = {n: PruneAllSummary.load(d / "circuits") for n, d in models.items()}
    val = {}
    for name, run_dir in models.items():
        model, cfg = load_model(run_dir)
        held_out = full_validation_loss(model, TokenData(cfg.data_dir), cfg.model.context)
        val[name] = {"nats_per_token": held_out.nats_per_token, "nats_per_char": held_out.nats_per_char}
    return {"models": {n: str(d) for n, d in models.items()}, "val_loss": val,
            "summaries": {n: s.as_dict() for n, s in summaries.items()}, "shared": asdict(shared_geomean(summaries))}


def table(result: dict) -> str:
    names = list(result["models"])
    s = result["summaries"]
    head = " | ".join(f"{n} acc | {n} nodes/edges | {n} test loss" for n in names)
    lines = [f"| task | bigram-decided | {head} |", "|---|---|" + "---|---|---|" * len(names)]
    for task in s[names[0]]["tasks"]:
        cells = []
        for n in names:
            r = s[n]["tasks"][task]
            found = r["num_edges"] is not None
            cells += [f"{r['test_accuracy']:.2f}", f"{r['num_nodes']}/{r['num_edges']}" if found else "-",
                      f"{r['test_loss']:.3f}" if found else "-"]
        lines.append(f"| {task} | {'yes' if s[names[0]]['tasks'][task]['bigram_decided'] else ''} | "
                     + " | ".join(cells) + " |")
    shared = result["shared"]
    gm = shared["geomean_edges"]
    lines += ["", f"Shared tasks ({len(shared['tasks'])}): {', '.join(shared['tasks']) or '-'}", "",
              "| model | validation nats/token | nats/char | geometric mean of edges | ratio to " + names[0] + " |",
              "|---|---|---|---|---|"]
    for n in names:
        v = result["val_loss"][n]
        ratio = f"{gm[n] / gm[names[0]]:.1f}x" if gm[n] and gm[names[0]] else "-"
        lines.append(f"| {n} | {v['nats_per_token']:.3f} | {v['nats_per_char']:.4f} | "
                     + (f"{gm[n]:.1f}" if gm[n] else "-") + f" | {ratio} |")
    matched = interpolate_at_reference(result)
    if matched:
        lines += ["", f"At the reference's validation loss ({matched['loss']:.3f} nats/token), interpolating "
                      f"log(geometric mean) linearly in loss between {matched['between'][0]} and "
                      f"{matched['between'][1]}: {matched['geomean_edges']:.1f} edges, "
                      f"**{matched['ratio']:.1f}x** the reference."]
    return "\n".join(lines) + "\n"


def interpolate_at_reference(result: dict) -> dict | None:
    """The other models' geometric mean at the first model's validation loss, if two of them
    bracket it (the paper compares sparse and dense at matched pretraining loss)."""
    names = list(result["models"])
    ref = names[0]
    loss = lambda n: result["val_loss"][n]["nats_per_token"]
    gm = result["shared"]["geomean_edges"]
    others = [n for n in names[1:] if gm[n]]
    hit = interpolate_log([(loss(n), gm[n]) for n in others], loss(ref))
    if hit is None or gm[ref] is None:
        return None
    value, i, j = hit
    return {"loss": loss(ref), "between": [others[i], others[j]], "geomean_edges": value, "ratio": value / gm[ref]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="NAME=RUN_DIR (the first is the reference)")
    ap.add_argument("--out", required=True, help="directory for comparison.json and comparison.md")
    args = ap.parse_args()
    models = {}
    for spec in args.model:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            sys.exit(f"error: --model {spec!r}: give NAME=RUN_DIR")
        models[name] = Path(path)
    result = compare(models)
    result["matched"] = interpolate_at_reference(result)
    text = table(result)
    out = Path(args.out)
    write_json(out / "comparison.json", result)
    write_text(out / "comparison.md", text)
    print(text)


if __name__ == "__main__":
    main()
