"""Are two prune-all results the same? For checking that a change leaves circuits bit-for-bit alone.

    sparse-circuits prune-all --model runs/demo/sparse --out /tmp/after    # with the changed code
    python benchmarks/compare_circuits.py runs/demo/sparse/circuits /tmp/after

Compares summary.json row by row and every circuit.json and validation.json, ignoring wall times
and the run directory's path; prints each difference and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

IGNORED = {"seconds"}  # wall times differ between any two runs


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in IGNORED}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def differences(before: Path, after: Path) -> list[str]:
    out = []
    a, b = (json.loads((d / "summary.json").read_text()) for d in (before, after))
    for key in ("geomean_edges", "geomean_tasks", "bigram_decided", "tasks_with_circuit"):
        if a.get(key) != b.get(key):
            out.append(f"summary {key}: {a.get(key)} != {b.get(key)}")
    for task, row in a["tasks"].items():
        other = b["tasks"].get(task, {})
        for key, value in _strip(row).items():
            if other.get(key) != value:
                out.append(f"summary {task}.{key}: {value} != {other.get(key)}")
    for path in sorted(before.glob("*/circuit.json")):
        task = path.parent.name
        for name in ("circuit.json", "validation.json"):
            if not (after / task / name).is_file():
                out.append(f"{task}/{name}: missing after")
                continue
            x, y = (_strip(json.loads((d / task / name).read_text())) for d in (before, after))
            if name == "circuit.json":
                x["model"].pop("dir"), y["model"].pop("dir")
            out += [f"{task}/{name} {k}: differs" for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="a prune-all output directory")
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    diffs = differences(args.before, args.after)
    circuits = len(list(args.before.glob("*/circuit.json")))
    print("\n".join(diffs) if diffs else f"identical: summary rows and {circuits} circuits with their validations "
                                           "(wall times ignored)")
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
