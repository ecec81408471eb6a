"""The wide grid's models beside another sweep's (issue 29): one table, one frontier.

    python benchmarks/wide_frontier.py --sweep runs/sweep-wide --with benchmarks/results/sweep-default \
        --out benchmarks/results/sweep-wide-merged

While `sweep --grid wide` is partly done, its sparse models can be read against the default grid's
dense baselines and width-128 model: the same data, schedule, prune settings and task set. A model
present in several keeps the first row (--sweep, then each --with in order). --with repeats: parts
of the wide grid trained in different places (grid files listing some of its models, each part's
sweep.json copied under benchmarks/results/) merge into one table. The merged directory gets sweep.json / sweep.csv (with a
`source` column in merged.json) and `frontier`'s figures and page. Rows from another machine act
like another seed (docs/results.md): the output says which rows came from where.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sparse_circuits.fileio import write_json
from sparse_circuits.report.frontier import write_frontier
from sparse_circuits.sweep import SweepTable, task_set


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", required=True, help="the wide sweep's directory")
    ap.add_argument("--with", dest="others", action="append", required=True,
                    help="a sweep directory (or its copied sweep.json); repeatable")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    wide = SweepTable.load(args.sweep)
    rows, source = list(wide.rows), {r.name: args.sweep for r in wide.rows}
    for other_dir in args.others:
        other = SweepTable.load(other_dir)
        if wide.task_set.fixed_by_grid != other.task_set.fixed_by_grid or \
                (wide.task_set.fixed_by_grid and wide.task_set.tasks != other.task_set.tasks):
            raise SystemExit(f"the task sets of {args.sweep} and {other_dir} differ ({wide.task_set.tasks} / "
                             f"{other.task_set.tasks}): their geometric means do not compare")
        for r in other.rows:
            if r.name not in source:
                rows.append(r)
                source[r.name] = other_dir
    table = SweepTable(rows, task_set(rows, wide.task_set.tasks if wide.task_set.fixed_by_grid else []))
    out = Path(args.out)
    table.save(out)
    write_json(out / "merged.json", {"sweep": args.sweep, "with": args.others, "source": source})
    result = write_frontier(out)
    for s in result.frontier.spread:
        ratio = "no ratio" if s.mean is None else f"{s.mean:.1f}x" + (f" +- {s.std:.1f}" if s.std is not None else "")
        print(f"width {s.width}, nonzero {s.nonzero_frac:g}: dense/sparse at matched loss {ratio} ({s.n} seeds)")
    for s in result.frontier.series:
        for p in s.points:
            print(f"  series ~{s.nonzero_params / 1000:.0f}k: width {p.width} ({p.seeds} seeds, "
                  f"{p.nonzero_params:.0f} nonzero): loss {p.loss_mean:.3f}, geomean edges "
                  f"{'-' if p.geomean is None else f'{p.geomean:.1f}'}")


if __name__ == "__main__":
    main()
