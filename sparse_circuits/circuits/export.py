"""A circuit in other tools' formats (`sparse-circuits export-circuit`), and its faithfulness curve.

- `graph`: the attribution-graph JSON that Neuronpedia's graph viewer and circuit-tracer read
  (schema: apps/webapp/app/api/graph/graph-schema.json in the public Neuronpedia repository).
  One node per circuit node (`feature` = its channel, `layer`, `ctx_idx` = the prompt's last
  position, since our nodes are ablated at every position; `clerp` = its description), one link
  per circuit edge (weight: the model weight) and per residual link (weight 1), the task's first
  prompt tokenized.
- `mib`: the circuit-localization format of the MIB benchmark's circuit track (its loader reads
  `cfg`, `nodes` {name: in_graph}, `edges` {"parent->child[<q|k|v>]": {score, in_graph}} and,
  at neuron resolution, `neurons` {name: [bool] * d_model}). MIB's nodes are components: the
  input, each attention head `aL.hH`, each MLP `mL`, the logits. [ours] Mapping: a residual link
  of channel c from a writer to a reader is an MIB edge from the writing component (the heads
  whose kept value channels the output projection connects to c; the MLP; the embedding when no
  circuit node writes c before the reader) to the reading one (the heads whose kept q/k/v
  channels read c, with <q>, <k> or <v>; the MLP; the logits for every kept output channel).
  The edge's score is the summed |weight| of the circuit edges that carry it (1 per channel for
  the logits and the embedding); `neurons` marks the residual channels each component writes in
  the circuit ("channels as neuron-level entries"). Every other edge of the component graph is
  listed with in_graph false and score 0.

Both carry the circuit's faithfulness curve (validate.faithfulness_curve) as `faithfulness`.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from importlib.metadata import PackageNotFoundError, version

from tokenizers import Tokenizer

from ..model import GPT
from ..nodes import NodeId, NodeLocation, site_name
from .circuit import Circuit


def _version() -> str:
    try:
        return version("sparse-circuits")
    except PackageNotFoundError:  # run from a checkout without installing
        return "unknown"


class ExportFormat(str, enum.Enum):
    MIB = "mib"
    GRAPH = "graph"


def describe(node: NodeId, d_head: int) -> str:
    """A short, plain label for a node (the viewers' `clerp`)."""
    loc, c, layer = node.location, node.index, node.layer
    if loc.head_channel:
        return f"layer {layer} attention {loc.value.split('.')[1]} channel {c} (head {c // d_head})"
    return {NodeLocation.ATTN_IN: f"residual channel {c} read by layer {layer} attention",
            NodeLocation.ATTN_OUT: f"residual channel {c} written by layer {layer} attention",
            NodeLocation.MLP_IN: f"residual channel {c} read by layer {layer} MLP",
            NodeLocation.MLP_NEURON: f"layer {layer} MLP neuron {c}",
            NodeLocation.MLP_OUT: f"residual channel {c} written by layer {layer} MLP"}[loc]


def _graph_id(node: NodeId, ctx: int) -> str:
    return f"{node.layer}_{node.location.value}:{node.index}_{ctx}"


def graph_json(circuit: Circuit, model: GPT, tokenizer: Tokenizer, prompt: list[int], model_name: str) -> dict:
    ctx = len(prompt) - 1
    d_head = model.cfg.d_head
    nodes = [{"node_id": _graph_id(n, ctx), "feature": n.index, "layer": n.layer, "ctx_idx": ctx,
              "feature_type": n.location.value, "jsNodeId": f"{n.layer}_{n.location.value}:{n.index}-0",
              "clerp": describe(n, d_head), "influence": None, "activation": None} for n in circuit.nodes]
    links = [{"source": _graph_id(e.src, ctx), "target": _graph_id(e.dst, ctx), "weight": float(e.weight)}
             for e in circuit.edges]
    links += [{"source": _graph_id(e.src, ctx), "target": _graph_id(e.dst, ctx), "weight": 1.0}
              for e in circuit.residual_links]
    return {
        "metadata": {
            "slug": f"{model_name}-{circuit.task}", "scan": f"sparse-circuits/{model_name}",
            "prompt_tokens": [tokenizer.decode([t]) for t in prompt], "prompt": tokenizer.decode(prompt),
            "info": {"description": f"circuit of task {circuit.task!r}: {circuit.num_nodes} nodes, "
                                    f"{circuit.num_edges} edges, {len(circuit.residual_links)} residual links; "
                                    f"{circuit.ablation.value} ablation, loss {circuit.loss:.3f} "
                                    f"(target {circuit.target_loss})",
                     "generator": {"name": "sparse-circuits", "version": _version()}},
        },
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both"},
        "nodes": nodes,
        "links": links,
    }


def mib_component_edges(n_layer: int, n_head: int) -> list[str]:
    """Every edge of MIB's component graph of a sequential (not parallel attention/MLP) model."""
    sources, out = ["input"], []
    for layer in range(n_layer):
        heads = [f"a{layer}.h{h}" for h in range(n_head)]
        out += [f"{s}->{h}<{x}>" for h in heads for x in "qkv" for s in sources]
        sources = sources + heads
        out += [f"{s}->m{layer}" for s in sources]
        sources = sources + [f"m{layer}"]
    return out + [f"{s}->logits" for s in sources]


def mib_json(circuit: Circuit, model: GPT) -> dict:
    cfg = model.cfg
    n_head, d_head, d_model = cfg.d_model // cfg.d_head, cfg.d_head, cfg.d_model
    by_site = circuit.nodes_by_site()
    kept = lambda layer, loc: set(by_site.get(site_name(layer, loc), []))
    # Which heads write residual channel c (value channel -> output channel), which read it and how.
    writers: dict[tuple[int, int], set[str]] = defaultdict(set)  # (layer, channel) -> heads
    readers: dict[tuple[int, int], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for e in circuit.edges:
        if e.src.location == NodeLocation.ATTN_V and e.dst.location == NodeLocation.ATTN_OUT:
            writers[e.dst.layer, e.dst.index].add(f"a{e.dst.layer}.h{e.src.index // d_head}")
        elif e.src.location == NodeLocation.ATTN_IN and e.dst.location.head_channel:
            letter = e.dst.location.value.split(".")[1]
            readers[("attn", e.src.layer, e.src.index)][f"a{e.src.layer}.h{e.dst.index // d_head}<{letter}>"] += \
                abs(e.weight)
        elif e.src.location == NodeLocation.MLP_IN:
            readers[("mlp", e.src.layer, e.src.index)][f"m{e.src.layer}"] += abs(e.weight)

    def sources_of(loc: NodeLocation, layer: int, c: int) -> set[str]:
        if loc == NodeLocation.ATTN_OUT:
            return writers.get((layer, c), set())
        return {f"m{layer}"}

    scores: dict[str, float] = defaultdict(float)
    neurons: dict[str, set[int]] = defaultdict(set)
    written = set()
    for link in circuit.residual_links:
        w, r = link.src, link.dst
        written.add((r.layer, r.location, r.index))
        targets = readers[("attn" if r.location == NodeLocation.ATTN_IN else "mlp", r.layer, r.index)]
        for s in sources_of(w.location, w.layer, w.index):
            neurons[s].add(w.index)
            for t, score in targets.items():
                scores[f"{s}->{t}"] += score
    for loc, kind in ((NodeLocation.ATTN_IN, "attn"), (NodeLocation.MLP_IN, "mlp")):  # read from the embedding
        for layer in range(cfg.n_layer):
            for c in kept(layer, loc):
                if (layer, loc, c) not in written and c < d_model:
                    neurons["input"].add(c)
                    for t, score in readers[(kind, layer, c)].items():
                        scores[f"input->{t}"] += score
    for layer in range(cfg.n_layer):  # every kept output channel reaches the logits
        for loc in (NodeLocation.ATTN_OUT, NodeLocation.MLP_OUT):
            for c in kept(layer, loc):
                for s in sources_of(loc, layer, c):
                    neurons[s].add(c)
                    scores[f"{s}->logits"] += 1.0
    all_edges = mib_component_edges(cfg.n_layer, n_head)
    known = set(all_edges)
    stray = [e for e in scores if e not in known]
    if stray:  # an edge MIB's graph lacks would be dropped silently by their loader
        raise ValueError(f"MIB export: edges outside the component graph: {stray[:3]}")
    in_graph_nodes = {e.split("->")[0] for e in scores} | {e.split("->")[1].split("<")[0] for e in scores}
    names = ["input"] + [f"a{layer}.h{h}" for layer in range(cfg.n_layer) for h in range(n_head)] + \
        [f"m{layer}" for layer in range(cfg.n_layer)]
    return {
        "cfg": {"n_layers": cfg.n_layer, "n_heads": n_head, "d_model": d_model, "d_head": d_head,
                "d_mlp": cfg.d_mlp, "parallel_attn_mlp": False, "model_name": "sparse-circuits"},
        "nodes": {n: n in in_graph_nodes for n in names},
        "edges": {e: {"score": scores.get(e, 0.0), "in_graph": e in scores} for e in all_edges},
        "neurons": {n: [c in neurons.get(n, set()) for c in range(d_model)] for n in names},
    }
