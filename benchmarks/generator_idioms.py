"""How often each task's deciding idiom occurs in generated programs, per generator version.

The task suite's `corpus_patterns` (one regular expression per class of each task) counted over
the same number of programs of each version, per million characters: a new version must not make
the idioms that the syntax-level tasks test rarer than the old one did (issue 26).

    python benchmarks/generator_idioms.py --programs 10000

Writes benchmarks/results/generator_idioms.json and prints the table.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402
from sparse_circuits.data.synthetic import VERSIONS, generate_programs  # noqa: E402
from sparse_circuits.tasks import all_tasks  # noqa: E402
from sparse_circuits.tasks.evaluate import corpus_pattern_counts  # noqa: E402


def per_million_chars(version: int, n_programs: int, seed: int) -> tuple[float, dict]:
    text = "\n".join(itertools.islice(generate_programs(seed, version), n_programs))
    mb = len(text) / 1e6
    return mb, {t: [None if x is None else x / mb for x in ab]
                for t, ab in corpus_pattern_counts(all_tasks(), text).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--programs", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "generator_idioms.json"))
    args = ap.parse_args()
    sizes, rates = {}, {}
    for v in VERSIONS:
        sizes[v], rates[v] = per_million_chars(v, args.programs, args.seed)
    fmt = lambda x: "-" if x is None else f"{x:,.0f}"  # noqa: E731
    print(f"{args.programs:,} programs per version ({', '.join(f'v{v}: {sizes[v]:.1f}M characters' for v in VERSIONS)}); "
          "occurrences per million characters of each class's idiom (A / B)\n")
    print("| task | " + " | ".join(f"v{v} A / B" for v in VERSIONS) + " |\n|---|" + "---|" * len(VERSIONS))
    for task in rates[VERSIONS[0]]:
        cells = [rates[v][task] for v in VERSIONS]
        if all(a is None and b is None for a, b in cells):
            continue
        print(f"| {task} | " + " | ".join(f"{fmt(a)} / {fmt(b)}" for a, b in cells) + " |")
    write_result(args.out, {"programs": args.programs, "seed": args.seed, "million_chars": sizes,
                            "per_million_chars": rates})


if __name__ == "__main__":
    main()
