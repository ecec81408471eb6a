"""A circuit node by node, as text: the raw material for the hand-written walk-throughs in docs/circuits.md.

Per node (in the pruned circuit, on the task's test split): its mean value at the last prompt token
for each class, its incoming and outgoing edges, the tokens it reads from the embedding or writes to
the unembedding, and for attention heads which prompt token the last position attends to most.
The same functions compute the report's circuit pages (sparse_circuits/report/analysis.py).

    python benchmarks/describe_circuit.py runs/demo/sparse/circuits/single_double_quote
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sparse_circuits.runs import load_model  # noqa: E402
from sparse_circuits.circuits.circuit import load_circuit  # noqa: E402
from sparse_circuits.data import load_tokenizer  # noqa: E402
from sparse_circuits.report import analysis  # noqa: E402
from sparse_circuits.tasks import Split, get_task  # noqa: E402
from sparse_circuits.tasks.evaluate import TaskTensors  # noqa: E402


def describe(circuit_dir: Path, n_pairs: int = 128) -> str:
    circuit = load_circuit(circuit_dir)
    model, _ = load_model(circuit.model_dir)
    tok = load_tokenizer(Path(circuit.model_dir) / "tokenizer.json")
    task = get_task(circuit.task)
    ds = task.build(tok, Split.TEST, n_pairs, circuit.sample.seed)
    tt = TaskTensors.of(ds, model, tok)
    nodes = circuit.nodes
    pairs = analysis.pair_activations(model, circuit, tt, nodes)
    heads = analysis.head_patterns(model, circuit, tt, nodes)
    text = lambda i: repr(tok.decode([i]))
    a, b = task.candidates
    lines = [f"{circuit.task}: {circuit.num_nodes} nodes, {circuit.num_edges} edges "
             f"(+{len(circuit.residual_links)} residual links, {len(circuit.qk_pairs)} query-key pairs); "
             f"classes a = {a!r}, b = {b!r}", "",
             "| node | mean at the last token (a / b) | edges in | edges out | vocabulary |", "|---|---|---|---|---|"]
    for node in nodes:
        key = str(node)
        ins = [f"{e.src} ({e.weight:+.2f})" for e in circuit.edges if e.dst == node]
        outs = [f"{e.dst} ({e.weight:+.2f})" for e in circuit.edges if e.src == node]
        writers = analysis.token_writers(model, node, tok)
        vocab = ""
        if writers:
            vocab = "up: " + " ".join(text(t["token"]) for t in writers["top"][:5])
            if node.location.writes_residual:
                vocab += "; down: " + " ".join(text(t["token"]) for t in writers["bottom"][:5])
        p = pairs[key]
        lines.append(f"| {key} | {p['mean_a']:+.2f} / {p['mean_b']:+.2f} | {', '.join(ins) or '-'} | "
                     f"{', '.join(outs) or '-'} | {vocab} |")
    for name, h in heads.items():
        if not h["qk_channels"]:
            lines.append(f"\nhead {name}: no query-key channel pair in the circuit (its pattern comes from the "
                         "ablated query and key values alone)")
            continue
        targets = Counter()
        for ex in h["examples"]:
            last = ex["pattern"][-1]  # the last query position; key 0 is the sink slot (0 without a sink)
            j = max(range(len(last)), key=last.__getitem__)
            targets["sink" if j == 0 else f"{text(ex['tokens'][j - 1])} at {j - len(last)}"] += 1
        lines.append(f"\nhead {name}: query-key channels {h['qk_channels']}; the last token attends most to "
                     + ", ".join(f"{t} ({n}x)" for t, n in targets.most_common()))
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("circuit_dir", type=Path)
    ap.add_argument("--pairs", type=int, default=128)
    args = ap.parse_args()
    print(describe(args.circuit_dir, args.pairs))


if __name__ == "__main__":
    main()
