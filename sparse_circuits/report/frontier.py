"""The frontier's figures (PNG files) and its report page: `sparse-circuits frontier DIR`.

DIR/frontier/frontier.png   held-out loss against the geometric mean of circuit edges (the paper's Fig. 3)
DIR/frontier/width.png      at a fixed number of nonzero weights: loss, edges and ratio against width
DIR/frontier/tasks.png      per task, task loss against circuit edges as the target loss is swept (Fig. 2)
DIR/frontier/ratio.png      the dense/sparse ratio at matched loss, per sparse setting, over seeds
DIR/frontier/history.png    circuit size and task loss against training tokens
DIR/frontier/index.html     all of them with the tables, self-contained (like every report page)
DIR/frontier/frontier.json  the numbers behind them
"""

from __future__ import annotations

import base64
import io
import os
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from ..fileio import write_bytes, write_text
from ..sweep.frontier import FRONTIER_DIR, Frontier, load_frontier, seed_means, write_frontier_json
from ..sweep.grid import ModelKind
from ..tasks.evaluate import CHANCE_LOSS
from .pages import environment
from .plots import COLOURS, OTHER_COLOURS

PAPER_RATIO = 16  # the paper's dense/sparse ratio of circuit sizes at matched pretraining loss


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _frac_label(f: float) -> str:
    fr = Fraction(f).limit_denominator(4096)
    return f"{fr.numerator}/{fr.denominator}" if fr.numerator == 1 else f"{f:g}"


def frontier_figure(fr: Frontier) -> Figure | None:
    """Fig. 3: one curve per width through the seed means, every seed's model as a faint point."""
    t = fr.table
    rows = [r for r in t.rows if t.geomean(r) is not None]
    if not rows:
        return None
    fig = Figure(figsize=(7, 4.6))
    ax = fig.add_subplot()
    widths = sorted({r.width for r in rows if r.kind == ModelKind.SPARSE})
    means = seed_means(rows, t)
    for i, w in enumerate(widths):
        colour = OTHER_COLOURS[i % len(OTHER_COLOURS)] if len(widths) > 1 else COLOURS["sparse"]
        pts = sorted([(m, x, y) for m, x, y in means if m.kind == ModelKind.SPARSE and m.width == w],
                     key=lambda p: -p[0].nonzero_frac)
        singles = [r for r in rows if r.kind == ModelKind.SPARSE and r.width == w]
        ax.scatter([r.val_loss for r in singles], [t.geomean(r) for r in singles], color=colour, alpha=0.3, s=14)
        if pts:
            ax.plot([p[1] for p in pts], [p[2] for p in pts], color=colour, marker="o", label=f"sparse, width {w}")
            for m, x, y in pts:
                ax.annotate(_frac_label(m.nonzero_frac), (x, y), textcoords="offset points", xytext=(5, 4),
                            fontsize=8, color=colour)
    dense = sorted([(m, x, y) for m, x, y in means if m.kind == ModelKind.DENSE], key=lambda p: p[1])
    dense_singles = [r for r in rows if r.kind == ModelKind.DENSE]
    ax.scatter([r.val_loss for r in dense_singles], [t.geomean(r) for r in dense_singles], color="black",
               marker="s", alpha=0.3, s=14)
    if dense:
        ax.plot([p[1] for p in dense], [p[2] for p in dense], color="black", marker="s", linestyle="--",
                label="dense")
        for m, x, y in dense:
            ax.annotate(f"w{m.width}", (x, y), textcoords="offset points", xytext=(5, -10), fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("held-out loss on real code (nats / token)")
    ax.set_ylabel(f"geometric mean of circuit edges\n({len(t.task_set.tasks)} tasks)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def tasks_figure(fr: Frontier) -> Figure | None:
    """Fig. 2: one panel per task of the matched pairs; edges (log) against held-out task loss."""
    pairs = [p for p in fr.matched if p.tasks]
    if not pairs:
        return None
    tasks = sorted({t for p in pairs for t in p.tasks})
    cols = min(4, len(tasks))
    rows_n = (len(tasks) + cols - 1) // cols
    fig = Figure(figsize=(3.2 * cols, 2.8 * rows_n))
    axes = fig.subplots(rows_n, cols, squeeze=False)
    for k, task in enumerate(tasks):
        ax = axes[k // cols][k % cols]
        for n, p in enumerate(pairs):
            for model, kind in ((p.sparse, "sparse"), (p.dense, "dense")):
                pts = sorted((q.edges, q.test_loss) for q in p.points
                             if q.model == model and q.task == task and q.edges is not None and q.test_loss is not None)
                if pts:
                    ax.plot([max(e, 1) for e, _ in pts], [l for _, l in pts], marker="o", color=COLOURS[kind],
                            alpha=1.0 if n == 0 else 0.4, label=f"{kind} (seed {p.seed})" if k == 0 else None)
        ax.axhline(CHANCE_LOSS, color="#6b7280", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # labels at every minor tick overlap on a narrow panel
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("circuit edges", fontsize=8)
        ax.set_ylabel("task loss (test)", fontsize=8)
        ax.grid(alpha=0.3, which="both")
    for k in range(len(tasks), rows_n * cols):
        axes[k // cols][k % cols].set_visible(False)
    fig.legend(loc="upper center", ncols=4, fontsize=8, bbox_to_anchor=(0.5, 1.02))
    fig.tight_layout()
    return fig


def ratio_figure(fr: Frontier) -> Figure | None:
    spread = [s for s in fr.spread if s.n]
    if not spread:
        return None
    fig = Figure(figsize=(max(4.5, 1.2 * len(spread) + 2), 3.8))
    ax = fig.add_subplot()
    labels = []
    for i, s in enumerate(spread):
        labels.append(f"w{s.width}\n{_frac_label(s.nonzero_frac)}" + ("" if s.activation_frac is None
                                                                       else f"\nact {s.activation_frac:g}"))
        vals = [r.ratio for r in fr.ratios if r.ratio is not None and (r.width, r.nonzero_frac, r.activation_frac)
                == (s.width, s.nonzero_frac, s.activation_frac)]
        ax.scatter([i] * len(vals), vals, color=COLOURS["sparse"], alpha=0.5, s=16)
        ax.errorbar([i], [s.mean], yerr=[[s.mean - s.low], [s.high - s.mean]], fmt="o", color="black", capsize=4)
    ax.axhline(PAPER_RATIO, color="#6b7280", linestyle="--", linewidth=1, label=f"paper ~{PAPER_RATIO}x")
    ax.axhline(1, color="#6b7280", linestyle=":", linewidth=1, label="equal size")
    ax.set_xticks(range(len(spread)), labels, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("dense / sparse edges\nat matched loss")
    ax.grid(alpha=0.3, which="both", axis="y")
    ax.legend(fontsize=8)
    return fig


def width_figure(fr: Frontier) -> Figure | None:
    """Fig. 3 along the width: per fixed-nonzero series, held-out loss, geometric mean of edges and
    the dense/sparse ratio at matched loss against the width (seed mean; bars: the seeds' range)."""
    series = fr.series
    if not series:
        return None
    fig = Figure(figsize=(11, 3.6))
    ax_l, ax_e, ax_r = fig.subplots(1, 3)
    for i, s in enumerate(series):
        colour = OTHER_COLOURS[i % len(OTHER_COLOURS)]
        label = f"~{s.nonzero_params / 1000:.0f}k nonzero"
        ws = [p.width for p in s.points]
        ax_l.errorbar(ws, [p.loss_mean for p in s.points], yerr=[p.loss_std or 0 for p in s.points], marker="o",
                      color=colour, capsize=3, label=label)
        for p in s.points:
            ax_l.annotate(_frac_label(p.nonzero_frac), (p.width, p.loss_mean), textcoords="offset points",
                          xytext=(4, 4), fontsize=7, color=colour)
        e = [p for p in s.points if p.geomean is not None]
        if e:
            ax_e.errorbar([p.width for p in e], [p.geomean for p in e],
                          yerr=[[p.geomean - p.geomean_low for p in e], [p.geomean_high - p.geomean for p in e]],
                          marker="o", color=colour, capsize=3, label=label)
        r = [p for p in s.points if p.ratio is not None and p.ratio.mean is not None]
        if r:
            ax_r.errorbar([p.width for p in r], [p.ratio.mean for p in r],
                          yerr=[[p.ratio.mean - p.ratio.low for p in r], [p.ratio.high - p.ratio.mean for p in r]],
                          marker="o", color=colour, capsize=3, label=label)
    ax_r.axhline(PAPER_RATIO, color="#6b7280", linestyle="--", linewidth=1, label=f"paper ~{PAPER_RATIO}x")
    ax_r.axhline(1, color="#6b7280", linestyle=":", linewidth=1)
    ax_l.set_ylabel("held-out loss (nats / token)")
    ax_e.set_ylabel(f"geometric mean of edges ({len(fr.table.task_set.tasks)} tasks)")
    ax_r.set_ylabel("dense / sparse edges at matched loss")
    for ax in (ax_e, ax_r):
        ax.set_yscale("log")
    widths = sorted({p.width for s in series for p in s.points})
    for ax in (ax_l, ax_e, ax_r):
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("width (d_model)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def history_figure(fr: Frontier) -> Figure | None:
    hs = [h for h in fr.histories if h.points]
    if not hs:
        return None
    fig = Figure(figsize=(9, 3.6))
    ax_e, ax_l = fig.subplots(1, 2)
    for i, h in enumerate(hs):
        colour = OTHER_COLOURS[i % len(OTHER_COLOURS)]
        label = f"{Path(h.run).name}: {h.task}"
        found = [(p.tokens, p.num_edges) for p in h.points if p.num_edges is not None]
        if found:
            ax_e.plot(*zip(*found), marker="o", color=colour, label=label)
        none = [p.tokens for p in h.points if p.num_edges is None]
        if none:
            ax_e.scatter(none, [1] * len(none), marker="x", color=colour, label="no circuit at the target")
        ax_l.plot([p.tokens for p in h.points], [p.full_model_loss for p in h.points], marker="o", color=colour,
                  label="whole model")
        circ = [(p.tokens, p.circuit_loss) for p in h.points if p.circuit_loss is not None]
        if circ:
            ax_l.plot(*zip(*circ), marker="s", linestyle="--", color=colour, label="circuit")
        ax_l.axhline(h.target_loss, color="#6b7280", linestyle="--", linewidth=1, label="target")
    ax_l.axhline(CHANCE_LOSS, color="#6b7280", linestyle=":", linewidth=1, label="chance")
    dens = [(p.tokens, p.weight_density) for h in hs[:1] for p in h.points if p.weight_density is not None]
    if dens:  # the first history's weight density: does the circuit shrink only because weights go?
        ax_d = ax_e.twinx()
        ax_d.plot(*zip(*dens), color="#6b7280", linestyle=":", marker=".", label="nonzero weights (right)")
        ax_d.set_yscale("log")
        ax_d.set_ylabel("nonzero share of weights", fontsize=8)
        ax_d.legend(fontsize=7, loc="lower left")
    ax_e.set_yscale("log")
    ax_e.set_ylabel("circuit edges")
    ax_l.set_ylabel("task loss (pruning pairs)")
    for ax in (ax_e, ax_l):
        ax.set_xlabel("training tokens")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


FIGURES = {"frontier": frontier_figure, "width": width_figure, "tasks": tasks_figure, "ratio": ratio_figure,
           "history": history_figure}


def figure_pngs(fr: Frontier) -> dict[str, bytes]:
    """name -> PNG of every figure the sweep has data for."""
    figs = {name: draw(fr) for name, draw in FIGURES.items()}
    return {name: _png(fig) for name, fig in figs.items() if fig is not None}


def section_context(fr: Frontier, pngs: dict[str, bytes]) -> dict:
    """What the templates' frontier_section macro needs."""
    images = {name: "data:image/png;base64," + base64.b64encode(png).decode("ascii") for name, png in pngs.items()}
    return {"fr": fr, "images": images, "paper_ratio": PAPER_RATIO, "frac_label": _frac_label}


@dataclass(frozen=True)
class FrontierPage:
    """What `write_frontier` wrote: the figures, the page, and the frontier they show."""
    figures: list[Path]
    page: Path
    frontier: Frontier


def write_frontier(sweep_dir: str | os.PathLike, log=print) -> dict:
    """Figures, frontier.json and the page for a sweep directory."""

    start = time.perf_counter()
    fr = load_frontier(sweep_dir)
    out = Path(sweep_dir) / FRONTIER_DIR
    write_frontier_json(fr, out)
    pngs = figure_pngs(fr)
    files = []
    for name, png in pngs.items():
        write_bytes(out / f"{name}.png", png)
        files.append(out / f"{name}.png")
    page = environment().get_template("frontier.html.j2").render(
        title="sparse-circuits frontier", sweep_dir=str(sweep_dir), **section_context(fr, pngs))
    write_text(out / "index.html", page)
    os.chmod(out / "index.html", 0o644)
    log(f"frontier: {len(fr.table.rows)} models, {len(pngs)} figures in {time.perf_counter() - start:.1f} s "
        f"-> {out / 'index.html'}")
    return FrontierPage(files, out / "index.html", fr)
