"""How each type's next uses are distributed in the generated programs, per generator version.

For every name bound to a value whose type the binding shows (`x = set()`, `x = ""`, `with
open(p, "w") as x`, ...), `sparse_circuits.data.coherence` records how the name is used next, and
every use the type does not support (a violation). A coherent generator ties a type to its uses
(a set is next used with `.add`, never with ` +=`); that is what a model can learn by looking a
variable up.

    python benchmarks/generator_usage.py --programs 20000

Writes benchmarks/results/generator_usage.json and prints one table per version.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402
from sparse_circuits.data.coherence import Kind, analyse_all, usage_table  # noqa: E402
from sparse_circuits.data.synthetic import VERSIONS, generate_programs  # noqa: E402

KINDS = (Kind.SET, Kind.STR, Kind.LIST, Kind.DICT, Kind.INT, Kind.FILE_READ, Kind.FILE_WRITE)


def measure(version: int, n_programs: int, seed: int) -> dict:
    start = time.perf_counter()
    programs = list(itertools.islice(generate_programs(seed, version), n_programs))
    uses = analyse_all(programs)
    rows = usage_table(uses, KINDS, top=8)
    return {
        "version": version, "programs": n_programs, "seed": seed,
        "chars_per_program": sum(map(len, programs)) / n_programs,
        "violations": len(uses.violations),
        "violations_by_use": [[k.value, use, n] for (k, use), n in
                              Counter((v.kind, v.use) for v in uses.violations).most_common(10)],
        "types": [{"type": kind.value, "bindings": uses.bindings[kind], "next_uses": total,
                   "commonest": [[label, n] for label, n in top], "violating_uses": bad}
                  for kind, total, top, bad in rows],
        "seconds": time.perf_counter() - start,
    }


def table(result: dict) -> str:
    lines = [f"generator v{result['version']}: {result['programs']:,} programs (seed {result['seed']}), "
             f"{result['chars_per_program']:.0f} characters each, {result['violations']:,} uses a type does not "
             "support", "", "| type | next uses | commonest next uses (count) | violating uses |", "|---|---|---|---|"]
    for t in result["types"]:
        common = ", ".join(f"`{label.strip()}` {n:,}" for label, n in t["commonest"])
        lines.append(f"| {t['type']} | {t['next_uses']:,} | {common} | {t['violating_uses']:,} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--programs", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "generator_usage.json"))
    args = ap.parse_args()
    results = [measure(v, args.programs, args.seed) for v in VERSIONS]
    for r in results:
        print(table(r) + "\n")
    write_result(args.out, {"results": results})


if __name__ == "__main__":
    main()
