"""Reading and writing the dense model through the bridges (paper 3.3, A.4).

Steering: a residual channel of the sparse model (a node at `attn.act_in` / `mlp.act_in`, which
read the residual, or `attn.resid_delta` / `mlp.resid_delta`, which write it) is perturbed from
its value in a task's actual prompt to its value in the counterfactual prompt, at every position.
The perturbation (delta_t on channel i) goes through the decoder of the residual site where that
channel lives (W_dec[:, i] * delta_t; the bias cancels in a difference) and is rescaled so that
it stands to the dense residual as it stands to the decoded sparse residual:
    Delta_t = W_dec[:, i] * delta_t * rms(h_dense) / rms(dec(h_sparse))
[ours, as we read appendix A.4: the RMS ratio is taken over the prompt's positions at that site].
`strength` in [0, 1] scales Delta before it is added to the dense residual. The control is a random
dense direction with the same norm at every position.

Circuits through the bridge: the dense model's task loss when its residual at one site is replaced
by dec(the sparse model's residual there), with the sparse model whole or reduced to a circuit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..circuits.circuit import Circuit
from ..errors import UserError
from ..fileio import read_json, write_json
from ..hooks import Hooks
from ..nodes import NodeId, NodeLocation, ResidualPoint, SiteName
from ..runs import Run
from ..tasks.core import Split
from ..tasks.evaluate import TaskTensors, score_logit_diffs
from ..tasks.registry import get_task
from .run import BridgedPair

STRENGTHS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def residual_site_of(node: NodeId, n_layer: int) -> str:
    """The bridge site where the node's residual channel lives."""
    loc, L = node.location, node.layer
    if loc == NodeLocation.ATTN_IN:
        return SiteName.residual(L, ResidualPoint.PRE)
    if loc in (NodeLocation.ATTN_OUT, NodeLocation.MLP_IN):
        return SiteName.residual(L, ResidualPoint.MID)
    if loc == NodeLocation.MLP_OUT:
        if L + 1 >= n_layer:
            raise UserError(f"node {node}: the last MLP writes past the last bridge site; pick a channel that a "
                            "later block reads (an act_in node) or an earlier write")
        return SiteName.residual(L + 1, ResidualPoint.PRE)
    raise UserError(f"node {node}: steering moves a residual channel; give a node at attn.act_in, "
                    "attn.resid_delta, mlp.act_in or mlp.resid_delta")


@dataclass
class SteeringResult:
    task: str
    node: str
    site: str
    pairs_used: int  # pairs whose two prompts have the same number of tokens (positions align)
    pairs_skipped: int
    strengths: list[float]
    # mean over pairs of the dense model's probability of the actual prompt's answer (correct) and of
    # the counterfactual prompt's answer (the answer the perturbation steers towards)
    p_actual_answer: list[float] = field(default_factory=list)
    p_counterfactual_answer: list[float] = field(default_factory=list)
    control_p_actual_answer: list[float] = field(default_factory=list)
    control_p_counterfactual_answer: list[float] = field(default_factory=list)
    delta_norm: float = 0.0  # mean per-position norm of the mapped perturbation at strength 1

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def load(cls, path: Path) -> SteeringResult:
        d = read_json(path, "steering result")
        try:
            return cls(**d)
        except TypeError as e:
            raise UserError(f"{path}: not a steering result ({e}); run `sparse-circuits steer` again") from None


class _AnswerSums:
    """Probabilities of the two answers, summed over pairs, one entry per strength."""

    def __init__(self, n_strengths: int):
        self.actual = torch.zeros(n_strengths)
        self.counterfactual = torch.zeros(n_strengths)


def _aligned_pairs(tt: TaskTensors) -> tuple[list[int], int]:
    used, skipped = [], 0
    for p in range(tt.n // 2):
        if int(tt.last[2 * p]) == int(tt.last[2 * p + 1]):
            used.append(p)
        else:
            skipped += 1
    return used, skipped


def _record(model, idx: torch.Tensor, site: str) -> torch.Tensor:
    return model.run_with_cache(idx, [site])[1][site]


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean(-1).sqrt().mean()


@torch.no_grad()
def mapped_perturbation(pair: BridgedPair, site: str, channel: int, actual: torch.Tensor,
                        counterfactual: torch.Tensor) -> torch.Tensor:
    """Delta_t (T, d_dense): the sparse channel's counterfactual-minus-actual value at every position,
    through the decoder column, RMS-rescaled (module docstring). Both prompts: (1, T) token ids."""
    h_a, h_c = _record(pair.sparse, actual, site), _record(pair.sparse, counterfactual, site)
    delta = h_c[0, :, channel] - h_a[0, :, channel]
    scale = _rms(_record(pair.dense, actual, site)) / _rms(pair.bridges.decode(site, h_a)).clamp_min(1e-12)
    return delta[:, None] * pair.bridges.decoder_weight(site)[:, channel][None, :] * scale


@torch.no_grad()
def steer(pair: BridgedPair, task: str, node: NodeId, n_pairs: int = 32, seed: int = 0,
          strengths: tuple[float, ...] = STRENGTHS, split: Split = Split.TEST) -> SteeringResult:
    """The dense model's answer probabilities as the sparse channel is moved, against a random control."""
    if any(not 0.0 <= s <= 1.0 for s in strengths):
        raise UserError(f"steer: strengths must lie in [0, 1], got {list(strengths)}")
    site = residual_site_of(node, pair.sparse.cfg.n_layer)
    width = pair.sparse.cfg.d_model
    if not 0 <= node.index < width:
        raise UserError(f"node {node}: channel {node.index} is outside the residual width {width}")
    tok = Run(pair.run_dir).tokenizer()
    ds = get_task(task).build(tok, split, n_pairs, seed)
    tt = TaskTensors.of(ds, pair.sparse, tok)
    used, skipped = _aligned_pairs(tt)
    if not used:
        raise UserError(f"steer: no pair of task {task!r} has two prompts of equal token length to align")
    g = torch.Generator().manual_seed(seed + 1)
    u = torch.randn(pair.dense.cfg.d_model, generator=g)
    u = u / u.norm()
    res = SteeringResult(task, str(node), site, len(used), skipped, list(strengths))
    # Summed over pairs, per strength: P(actual answer) and P(counterfactual answer), for the mapped
    # perturbation (steered) and for the random direction (control).
    steered, ctrl = _AnswerSums(len(strengths)), _AnswerSums(len(strengths))
    norms = []
    for p in used:
        a, c = 2 * p, 2 * p + 1
        T = int(tt.last[a]) + 1
        ia, ic = tt.idx[a:a + 1, :T], tt.idx[c:c + 1, :T]
        mapped = mapped_perturbation(pair, site, node.index, ia, ic)  # (T, d_dense)
        control = u[None, :] * mapped.norm(dim=-1, keepdim=True)
        norms.append(float(mapped.norm(dim=-1).mean()))
        answers = torch.tensor([int(tt.correct[a]), int(tt.wrong[a])])
        for j, s in enumerate(strengths):
            for sums, vec in ((steered, mapped), (ctrl, control)):
                probs = pair.dense(ia, Hooks().add(site, lambda x, v=vec, s=s: x + s * v[None]))[0, -1].softmax(-1)
                sums.actual[j] += probs[answers[0]]
                sums.counterfactual[j] += probs[answers[1]]
    n = len(used)
    res.p_actual_answer = (steered.actual / n).tolist()
    res.p_counterfactual_answer = (steered.counterfactual / n).tolist()
    res.control_p_actual_answer = (ctrl.actual / n).tolist()
    res.control_p_counterfactual_answer = (ctrl.counterfactual / n).tolist()
    res.delta_norm = sum(norms) / n
    return res


def save_steering(res: SteeringResult, run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the result's JSON and plot as OUT/TASK--NODE.{json,png}; by default OUT is the bridged run's
    steering directory, where the report finds them. Returns the path without its suffix."""
    out = Path(out_dir) if out_dir is not None else Run(run_dir).steering_dir
    stem = f"{res.task}--{res.node.replace(':', '_')}"  # node names hold dots: no with_suffix
    write_json(out / f"{stem}.json", res.as_dict())
    steering_plot(res, out / f"{stem}.png")
    return out / stem


def steering_plot(res: SteeringResult, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    ax.plot(res.strengths, res.p_counterfactual_answer, "o-", color="#b91c1c", label="counterfactual answer, channel")
    ax.plot(res.strengths, res.p_actual_answer, "o-", color="#1d4ed8", label="actual answer, channel")
    ax.plot(res.strengths, res.control_p_counterfactual_answer, "--", color="#b91c1c", alpha=0.6,
            label="counterfactual answer, random direction")
    ax.plot(res.strengths, res.control_p_actual_answer, "--", color="#1d4ed8", alpha=0.6,
            label="actual answer, random direction")
    ax.set_yscale("log")
    ax.set_xlabel("steering strength")
    ax.set_ylabel("dense model's probability")
    ax.set_title(f"{res.task}: steering {res.node} via {res.site} ({res.pairs_used} pairs)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    from ..fileio import atomic_path
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


@dataclass
class ThroughBridge:
    """The dense model's task loss on the test split: its own, and with its residual at each site
    replaced by dec(sparse residual) from the whole sparse model and from the circuit."""

    task: str
    dense_loss: float
    sparse_loss: float
    circuit_loss: float
    by_site: dict[str, dict[str, float]]  # site -> {"whole_sparse": loss, "circuit": loss}

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def circuit_through_bridge(pair: BridgedPair, circuit: Circuit, n_pairs: int = 64) -> ThroughBridge:
    tok = Run(pair.run_dir).tokenizer()
    ds = get_task(circuit.task).build(tok, Split.TEST, n_pairs, circuit.sample.seed)
    tt = TaskTensors.of(ds, pair.sparse, tok)
    intervention = circuit.intervention(pair.sparse)
    sites = pair.bridges.sites
    ar = torch.arange(tt.n)

    def loss_of(logits_last: torch.Tensor) -> float:
        return score_logit_diffs(logits_last[ar, tt.correct] - logits_last[ar, tt.wrong])[0]

    store_whole: dict[str, torch.Tensor] = {}
    sparse_last = pair.sparse(tt.idx, Hooks().record(sites, store_whole), logits_at=tt.last)
    circuit_hooks = intervention.hooks(pair.sparse, tt.idx, tt.last)
    store_circuit: dict[str, torch.Tensor] = {}
    circuit_last = pair.sparse(tt.idx, circuit_hooks.record(sites, store_circuit), logits_at=tt.last)
    dense_last = pair.dense(tt.idx, logits_at=tt.last)
    by_site = {}
    for s in sites:
        by_site[s] = {}
        for label, store in (("whole_sparse", store_whole), ("circuit", store_circuit)):
            decoded = pair.bridges.decode(s, store[s])
            out = pair.dense(tt.idx, Hooks().add(s, lambda _x, d=decoded: d), logits_at=tt.last)
            by_site[s][label] = loss_of(out)
    return ThroughBridge(circuit.task, loss_of(dense_last), loss_of(sparse_last), loss_of(circuit_last), by_site)
