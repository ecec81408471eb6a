"""The binding circuit of `set_or_string(_fixedvarname)`: what its heads attend to, and whether it is
a lookup of the name or a shortcut.

For a circuit pruned on `set_or_string_fixedvarname` or `set_or_string` (issue 26), on the task's
test prompts, in the pruned circuit (everything else mean-ablated):
- per attention head with a query-key pair in the circuit: where the **last token** (the use of
  the name) attends, and where the **definition's value** (the ` set` / `()` / `""` token of
  `current = set()`) attends: the paper's account has a head copy the name into the value's
  position and a later head copy the type from there to the use;
- per residual channel the circuit writes: its mean at the last token in each class;
- the model and the circuit on the diagnostic probe `set_or_string_two_vars` (a set and a string
  both defined, only the name decides): at chance there means the mechanism reads "the nearest
  definition", not the name's binding.

    python benchmarks/binding_circuit.py runs/demo/sparse/circuits/set_or_string_fixedvarname
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.describe_circuit import describe  # noqa: E402
from sparse_circuits.runs import load_model  # noqa: E402
from sparse_circuits.circuits.circuit import load_circuit  # noqa: E402
from sparse_circuits.data import load_tokenizer  # noqa: E402
from sparse_circuits.report import analysis  # noqa: E402
from sparse_circuits.tasks import Split, get_task  # noqa: E402
from sparse_circuits.tasks.evaluate import TaskTensors  # noqa: E402

VALUE_TOKENS = ("set", "()", '""', "''", "str")


def _value_position(tokens: list[str]) -> int | None:
    """The first token of the definition's value (` set`, `""`, `''`, `str`) after ` =`."""
    for i in range(1, len(tokens)):
        if tokens[i - 1].strip() == "=" and tokens[i].strip().startswith(VALUE_TOKENS):
            return i
    return None


def attention_summary(model, circuit, tt, tok) -> list[str]:
    heads = analysis.head_patterns(model, circuit, tt, circuit.nodes)
    lines = []
    for name, h in heads.items():
        if not h["qk_channels"]:
            lines.append(f"- head {name}: no query-key pair in the circuit (a fixed average over the prompt)")
            continue
        last, value = Counter(), Counter()
        for ex in h["examples"]:
            tokens = [tok.decode([t]) for t in ex["tokens"]]
            pattern = ex["pattern"]
            for query, counter in ((len(pattern) - 1, last), (_value_position(tokens), value)):
                if query is None:
                    continue
                row = pattern[query]
                j = max(range(len(row)), key=row.__getitem__)
                counter["sink" if j == 0 else f"{tokens[j - 1]!r} ({j - 1 - query:+d})"] += 1
        fmt = lambda c: ", ".join(f"{t} {n}x" for t, n in c.most_common(3)) or "-"  # noqa: E731
        lines.append(f"- head {name} (query-key channels {h['qk_channels']}): the use attends to {fmt(last)}; "
                     f"the definition's value attends to {fmt(value)}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("circuit_dir", type=Path)
    ap.add_argument("--pairs", type=int, default=128)
    args = ap.parse_args()
    circuit = load_circuit(args.circuit_dir)
    model, cfg = load_model(circuit.model_dir)
    tok = load_tokenizer(Path(circuit.model_dir) / "tokenizer.json")
    tt = TaskTensors.of(get_task(circuit.task).build(tok, Split.TEST, args.pairs, circuit.sample.seed), model, tok)
    print(describe(args.circuit_dir, args.pairs))
    print("Attention in the circuit (argmax key over the example prompts):")
    print("\n".join(attention_summary(model, circuit, tt, tok)))
    for p in analysis.probe_accuracies(model, circuit, tok, args.pairs):
        print(f"\n{p['task']} ({p['description']}): whole model accuracy {p['model']:.2f}, "
              f"circuit alone {p['circuit']:.2f} (chance 0.50)")


if __name__ == "__main__":
    main()
