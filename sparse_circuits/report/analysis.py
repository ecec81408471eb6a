"""What a circuit page shows about each node, computed through the model's hook sites.

Everything here reads activations with `Hooks.record`; the circuit's own runs go through its
`CircuitIntervention` (keep masks, stored ablation values and, if it was pruned with them, frozen
norms): the same object pruning and validation use, so the page shows what the circuit computes,
not a re-derivation of it.
"""

from __future__ import annotations

from typing import Callable

import torch
from tokenizers import Tokenizer

from ..circuits.circuit import Circuit
from ..circuits.intervention import CircuitIntervention
from ..data import DataSplit, TokenData
from ..hooks import Hooks
from ..model import GPT, attention_pattern
from ..nodes import NodeId, NodeLocation, site_name
from ..tasks.evaluate import TaskTensors

# Snippets: for each sign, tokens at these quantiles of the node's activations of that sign
# (1.0 = the most extreme), a few per quantile, each shown with context before and after.
QUANTILES = (1.0, 0.99, 0.9, 0.5)
PER_QUANTILE = 2
CONTEXT_BEFORE, CONTEXT_AFTER = 20, 4
PAIR_EXAMPLES = 3  # task pairs shown token by token
HEAD_EXAMPLES = 2  # task pairs whose attention patterns are shown
TOP_TOKENS = 8


def circuit_hooks(model: GPT, circuit: Circuit, idx: torch.Tensor) -> Hooks:
    """The circuit's intervention for a whole-sequence forward on `idx`."""
    return circuit.intervention(model).hooks(model, idx)


@torch.no_grad()
def record_nodes(model: GPT, idx: torch.Tensor, nodes: list[NodeId],
                 hooks_for: Callable[[torch.Tensor], Hooks] | None = None, batch_size: int = 32) -> torch.Tensor:
    """Activations (N, T, len(nodes)) of the given nodes at every position of `idx` (N, T), after
    the interventions `hooks_for(batch)` makes (none: the whole model)."""
    sites = sorted({n.site for n in nodes})
    out = []
    for start in range(0, idx.shape[0], batch_size):
        batch = idx[start:start + batch_size]
        cache: dict[str, torch.Tensor] = {}
        hooks = hooks_for(batch) if hooks_for is not None else Hooks()
        model.run_with_hooks(batch, hooks.record(sites, cache))
        out.append(torch.stack([cache[n.site][..., n.index] for n in nodes], dim=-1).float())
    return torch.cat(out)


def pretraining_windows(data_dir: str, context: int, n_windows: int, seed: int = 4321) -> torch.Tensor:
    """Held-out (validation split) windows of the corpus the model was trained on."""
    data = TokenData(data_dir)
    rows, i = [], 0
    while sum(len(r) for r in rows) < n_windows:
        rows.append(data.batch(DataSplit.VAL, min(32, n_windows), context, seed, i)[0])
        i += 1
    return torch.cat(rows)[:n_windows]


def snippets(acts: torch.Tensor, windows: torch.Tensor) -> dict:
    """Where one node is most positive and most negative: {"positive": [...], "negative": [...]},
    each a list of {quantile, value, examples: [{tokens, acts, at}]}, plus how often it fires."""
    flat = acts.reshape(-1)
    T = windows.shape[1]
    out: dict = {"fires_positive": float((flat > 0).float().mean()),
                 "fires_negative": float((flat < 0).float().mean()),
                 "max": float(flat.max()), "min": float(flat.min())}
    for sign, name in ((1.0, "positive"), (-1.0, "negative")):
        signed = flat * sign
        where = (signed > 0).nonzero().squeeze(1)
        groups = []
        if len(where):
            order = where[signed[where].argsort()]  # ascending strength
            used_windows: set[int] = set()
            for q in QUANTILES:
                rank = round(q * (len(order) - 1))
                picks = []
                for r in range(rank, -1, -1):
                    pos = int(order[r])
                    if pos // T in used_windows:
                        continue
                    used_windows.add(pos // T)
                    picks.append(pos)
                    if len(picks) == PER_QUANTILE:
                        break
                if picks:
                    groups.append({"quantile": q, "value": float(flat[picks[0]]),
                                   "examples": [_window_slice(acts, windows, p) for p in picks]})
        out[name] = groups
    return out


def _window_slice(acts: torch.Tensor, windows: torch.Tensor, pos: int) -> dict:
    T = windows.shape[1]
    row, t = divmod(pos, T)
    lo, hi = max(0, t - CONTEXT_BEFORE), min(T, t + CONTEXT_AFTER + 1)
    return {"tokens": windows[row, lo:hi].tolist(), "acts": _round(acts.reshape(-1, T)[row, lo:hi]), "at": t - lo}


def _prompt(tt: TaskTensors, row: int) -> list[int]:
    return tt.idx[row, : tt.last[row] + 1].tolist()


def _round(x: torch.Tensor) -> list[float]:
    return [float(f"{v:.3g}") for v in x.tolist()]


def pair_activations(model: GPT, circuit: Circuit, tt: TaskTensors,
                     nodes: list[NodeId]) -> dict[str, dict]:
    """Per node, in the pruned circuit: its value at the last prompt token for every pair, by
    class, and token by token on a few pairs."""
    acts = record_nodes(model, tt.idx, nodes, lambda idx: circuit_hooks(model, circuit, idx), batch_size=tt.n)
    rows = torch.arange(tt.n)
    last = acts[rows, tt.last]  # (n, nodes)
    a_rows, b_rows = (tt.label == 0).nonzero().squeeze(1), (tt.label == 1).nonzero().squeeze(1)
    out = {}
    for j, node in enumerate(nodes):
        a, b = last[a_rows, j], last[b_rows, j]
        examples = []
        for p in range(min(PAIR_EXAMPLES, tt.n // 2)):
            examples.append({cls: {"tokens": _prompt(tt, r), "acts": _round(acts[r, : tt.last[r] + 1, j])}
                             for cls, r in (("a", 2 * p), ("b", 2 * p + 1))})
        out[str(node)] = {"a": _round(a), "b": _round(b), "mean_a": float(a.mean()), "mean_b": float(b.mean()),
                          "mean_diff": float((a - b).mean()), "examples": examples}
    return out


@torch.no_grad()
def head_patterns(model: GPT, circuit: Circuit, tt: TaskTensors, nodes: list[NodeId]) -> dict:
    """For each head with a circuit node: its attention on a few task prompts in the pruned circuit,
    scored only by the circuit's query/key channels of that head (other channels contribute 0)."""
    d_head = model.cfg.d_head
    heads = sorted({(n.layer, n.index // d_head) for n in nodes if n.location.head_channel})
    if not heads:
        return {}
    rows = list(range(min(2 * HEAD_EXAMPLES, tt.n)))
    idx = tt.idx[rows]
    cache: dict[str, torch.Tensor] = {}
    layers = sorted({layer for layer, _ in heads})
    q_k = (NodeLocation.ATTN_Q, NodeLocation.ATTN_K)
    model.run_with_hooks(idx, circuit_hooks(model, circuit, idx).record(
        [site_name(L, loc) for L in layers for loc in q_k], cache))
    out = {}
    for layer, h in heads:
        channels = slice(h * d_head, (h + 1) * d_head)
        q_keep, k_keep = (_head_channels(circuit, layer, loc, h, d_head) for loc in q_k)
        q = cache[site_name(layer, NodeLocation.ATTN_Q)][..., channels] * q_keep
        k = cache[site_name(layer, NodeLocation.ATTN_K)][..., channels] * k_keep
        sink = model.blocks[layer].attn.sink_logit
        probs = attention_pattern(q.unsqueeze(1), k.unsqueeze(1), None if sink is None else sink[h:h + 1])[:, 0]
        shared = (q_keep & k_keep).nonzero().squeeze(1) + h * d_head
        examples = []
        for r in rows:
            n = int(tt.last[r]) + 1
            examples.append({"tokens": _prompt(tt, r),
                             "pattern": [_round(row) for row in probs[r - rows[0], :n, : n + 1]]})
        out[f"{layer}.{h}"] = {"layer": layer, "head": h, "qk_channels": shared.tolist(),
                               "sink": sink is not None, "examples": examples}
    return out


def _head_channels(circuit: Circuit, layer: int, location: NodeLocation, head: int, d_head: int) -> torch.Tensor:
    """Which of head `head`'s channels at one q/k/v location the circuit keeps, as a (d_head,) mask."""
    keep = torch.zeros(d_head, dtype=torch.bool)
    keep[[n.index - head * d_head for n in circuit.nodes
          if (n.layer, n.location) == (layer, location) and n.index // d_head == head]] = True
    return keep


@torch.no_grad()
def token_writers(model: GPT, node: NodeId, tokenizer: Tokenizer) -> dict | None:
    """Residual channels facing the vocabulary: for a read of channel c (`act_in`), the tokens whose
    embedding writes most to c; for a write (`resid_delta`), the tokens c pushes up and down most
    through the final norm's gain and the unembedding."""
    c = node.index
    if node.location.reads_residual:
        column, kind = model.wte.weight[:, c], "embedding writes to this residual channel"
    elif node.location.writes_residual:
        column, kind = model.lm_head.weight[:, c] * model.ln_f.weight[c], "this channel's write, through the unembedding"
    else:
        return None
    column = column.float()
    top = column.topk(min(TOP_TOKENS, len(column)))
    bottom = (-column).topk(min(TOP_TOKENS, len(column)))
    pick = lambda vals, ids: [{"token": int(i), "value": float(f"{v:.3g}")} for v, i in zip(vals.tolist(), ids.tolist())
                              if v != 0]
    return {"kind": kind, "nonzero": int((column != 0).sum()), "top": pick(top.values, top.indices),
            "bottom": pick(-bottom.values, bottom.indices)}


PROBE_PAIRS = 128


@torch.no_grad()
def probe_accuracies(model: GPT, circuit: Circuit, tokenizer: Tokenizer, n_pairs: int = PROBE_PAIRS) -> list[dict]:
    """The circuit's task's diagnostic probes (tasks.registry.probes_of): test accuracy of the whole
    model and of the circuit alone on each. At chance, the mechanism does not use what the probe varies."""
    from ..tasks import Split
    from ..tasks.evaluate import TaskTensors
    from ..tasks.registry import probes_of

    out = []
    for probe in probes_of(circuit.task):
        tt = TaskTensors.of(probe.build(tokenizer, Split.TEST, n_pairs, 0), model, tokenizer)
        accuracy = {}
        for name, intervention in (("model", CircuitIntervention.keeping(None, {})),
                                   ("circuit", circuit.intervention(model))):
            _, diffs = intervention.task_loss(model, tt)
            accuracy[name] = float((diffs > 0).float().mean())
        out.append({"task": probe.name, "description": probe.description, "pairs": n_pairs} | accuracy)
    return out
