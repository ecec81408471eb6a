"""Report build time and page sizes for trained runs (e.g. the demo's).

    python benchmarks/bench_report.py --model runs/demo/sparse --model runs/demo/dense

Builds the site twice (the first call may also compute task scores and means that later calls
reuse), prints a table of pages and sizes and writes benchmarks/results/report.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sparse_circuits.circuits.circuit import load_circuit
from sparse_circuits.fileio import write_json
from sparse_circuits.report import build_report
from sparse_circuits.report.site import SNIPPET_WINDOWS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="run directory (repeatable)")
    parser.add_argument("--windows", type=int, default=SNIPPET_WINDOWS, help="snippet windows, as in the report")
    parser.add_argument("--out", default="benchmarks/results/report.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        builds = []
        for i in range(2):
            start = time.perf_counter()
            result = build_report(args.model, [], Path(tmp) / f"site{i}", progress=False,
                                  snippet_windows=args.windows, log=lambda *_: None)
            builds.append(time.perf_counter() - start)
    pages = result.pages
    nodes = {}
    for run in args.model:
        for d in sorted((Path(run) / "circuits").glob("*/circuit.json")):
            c = load_circuit(d.parent)
            nodes[f"circuits/{Path(run).resolve().name}--{c.task}.html"] = (c.num_nodes, c.num_edges)
    print(f"{'page':<52} {'nodes':>6} {'edges':>6} {'KB':>8}")
    for page, size in sorted(pages.items()):
        n, e = nodes.get(page, ("", ""))
        print(f"{page:<52} {n:>6} {e:>6} {size / 1e3:>8.0f}")
    total = sum(pages.values())
    print(f"{'total':<52} {'':>6} {'':>6} {total / 1e3:>8.0f}")
    print(f"build time: first {builds[0]:.1f} s, second {builds[1]:.1f} s ({len(pages) - 1} circuit pages, "
          f"{args.windows} snippet windows)")
    write_json(args.out, {"models": args.model, "windows": args.windows, "build_seconds": builds,
                          "pages": {p: {"bytes": s, "nodes_edges": nodes.get(p)} for p, s in pages.items()},
                          "total_bytes": total})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
