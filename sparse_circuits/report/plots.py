"""The report's static figures, drawn with matplotlib and embedded as SVG data URIs."""

from __future__ import annotations

import base64
import io
import math

import matplotlib
from matplotlib.figure import Figure

COLOURS = {"sparse": "#c2410c", "dense": "#1d4ed8"}
OTHER_COLOURS = ["#15803d", "#7e22ce", "#a16207", "#0f766e"]


def model_colour(kind: str, i: int) -> str:
    return COLOURS.get(kind, OTHER_COLOURS[i % len(OTHER_COLOURS)])


def svg_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    # Text as text (small files, selectable), fixed ids and no date (the same figure gives the same bytes).
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "sparse-circuits"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def training_curves(runs: list[dict]) -> str:
    """runs: [{label, kind, metrics: [metrics.jsonl rows], baselines: {bigram, unigram}}]."""
    fig = Figure(figsize=(9, 3.6))
    ax = fig.add_subplot()
    for i, run in enumerate(runs):
        colour = model_colour(run["kind"], i)
        train = [(m["tokens"], m["train_loss"]) for m in run["metrics"] if "train_loss" in m]
        val = [(m["tokens"], m["val_loss"]) for m in run["metrics"] if "val_loss" in m]
        if train:
            ax.plot(*zip(*train), color=colour, alpha=0.35, linewidth=1, label=f"{run['label']} train")
        if val:
            ax.plot(*zip(*val), color=colour, marker="o", markersize=3, linewidth=1.8, label=f"{run['label']} val")
    bigrams = {r["baselines"].get("bigram") for r in runs if r["baselines"].get("bigram") is not None}
    for b in sorted(bigrams):
        ax.axhline(b, color="#6b7280", linestyle="--", linewidth=1, label=f"bigram baseline {b:.3f}")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("loss (nats / token)")
    every = [m[k] for r in runs for m in r["metrics"] for k in ("train_loss", "val_loss") if m.get(k) is not None]
    val = [m["val_loss"] for r in runs for m in r["metrics"] if m.get("val_loss") is not None]
    if every:  # the early steps' losses (~ln vocab) would flatten the part worth seeing
        lo = min(every) - 0.1
        ax.set_ylim(lo, max(min(max(val or every), lo + 2.5), max(bigrams, default=lo)) + 0.1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncols=2)
    return svg_data_uri(fig)


def circuit_sizes(tasks: list[str], models: list[dict]) -> str:
    """models: [{label, kind, edges: {task: n or None}, nodes: {task: n or None}}]; bars per task."""
    fig = Figure(figsize=(max(5, 0.9 * len(tasks) + 2), 3.6))
    axes = fig.subplots(1, 2)
    width = 0.8 / max(1, len(models))
    for ax, key in zip(axes, ("edges", "nodes")):
        for i, m in enumerate(models):
            xs = [t + (i - (len(models) - 1) / 2) * width for t in range(len(tasks))]
            values = [m[key].get(task) for task in tasks]
            ax.bar([x for x, v in zip(xs, values) if v is not None], [max(v, 0.5) for v in values if v is not None],
                   width, color=model_colour(m["kind"], i), label=m["label"])
            for x, v in zip(xs, values):
                ax.annotate("none" if v is None else str(v), (x, max(v or 0.5, 0.5)), ha="center", va="bottom",
                            fontsize=6, rotation=90 if len(tasks) > 6 else 0)
        ax.set_yscale("log")
        ax.set_xticks(range(len(tasks)), tasks, rotation=40, ha="right", fontsize=7)
        ax.set_ylabel(f"circuit {key}")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return svg_data_uri(fig)


def loss_vs_kept(curve: list[list[float]], target: float, num_nodes: int, loss: float) -> str:
    """The discretisation sweep of the chosen pruning run: task loss keeping the top-k nodes by mask score."""
    fig = Figure(figsize=(5.5, 3))
    ax = fig.add_subplot()
    if curve:
        ks, losses = zip(*sorted(curve))
        ax.plot(ks, losses, marker="o", markersize=3, color="#374151", label="top-k by mask score")
    ax.axhline(target, color="#b91c1c", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.axhline(math.log(2), color="#9ca3af", linestyle=":", linewidth=1, label="chance (ln 2)")
    ax.plot([num_nodes], [loss], marker="*", markersize=12, color="#c2410c", linestyle="none",
            label=f"circuit: {num_nodes} nodes, {loss:.3f}")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("kept nodes")
    ax.set_ylabel("task loss (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return svg_data_uri(fig)


def faithfulness_curve(points: list[list[float]], cpr: float, cmd: float) -> str:
    """Validation's faithfulness curve: normalised faithfulness f against the circuit's edges as its
    nodes are added by mask score (MIB's CPR = area under f, CMD = area under |1 - f|)."""
    fig = Figure(figsize=(5.5, 3))
    ax = fig.add_subplot()
    ax.plot([p[1] for p in points], [p[3] for p in points], marker="o", markersize=3, color="#374151",
            label=f"CPR {cpr:.2f}, CMD {cmd:.2f}")
    ax.axhline(1.0, color="#9ca3af", linestyle=":", linewidth=1, label="the whole model")
    ax.set_xlabel("edges kept (nodes added by mask score)")
    ax.set_ylabel("faithfulness f (test)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return svg_data_uri(fig)
