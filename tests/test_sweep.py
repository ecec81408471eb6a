"""Sweeps and the frontier: the grid, the table's fixed-set geometric mean, the matched-loss ratio,
the figures, and a tiny grid end to end with a kill and a resume."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace

import pytest
from click.testing import CliRunner

from sparse_circuits.circuits.history import CircuitHistory, HistoryPoint
from sparse_circuits.cli import main
from sparse_circuits.errors import UserError
from sparse_circuits.fileio import write_json
from sparse_circuits.report.frontier import write_frontier
from sparse_circuits.sweep import (ModelKind, ModelRow, SweepTable, geomean_over, grid_from_dict, load_frontier,
                                   matched_ratios, ratio_spread, task_set)
from sparse_circuits.sweep import run as sweep_run
from sparse_circuits.sweep.frontier import interpolate_log
from sparse_circuits.sweep.run import MatchedPair, MatchedPoint

TINY_GRID = {
    "preset": "tiny", "widths": [16, 32], "nonzero_fracs": [0.5, 0.25], "dense_widths": [32], "seeds": [0],
    "run_overrides": {"train": {"steps": 30, "batch_size": 4, "eval_every": 10, "checkpoint_every": 10,
                                "log_every": 5, "eval_batches": 2, "threads": 1}},
    "prune": {"steps": 10, "pairs": 8},
    "history": {"width": 32, "nonzero_frac": 0.25, "task": "single_double_quote", "checkpoints": 3},
}


def row(name, kind, width, frac, seed, loss, circuits):
    return ModelRow(name=name, kind=kind, width=width, n_layer=2, d_mlp=4 * width, nonzero_frac=frac,
                    activation_frac=None, seed=seed, total_params=1000, nonzero_params=int(1000 * frac), steps=10,
                    tokens=100, val_loss=loss, val_nats_per_char=loss / 3, tasks_learned=list(circuits),
                    circuits=circuits, bigram_decided=[], no_circuit=[], train_seconds=1.0, prune_seconds=1.0,
                    weights_sha256="x", prune_settings={})


def test_grid_is_typed_and_checked_before_anything_runs():
    g = grid_from_dict(TINY_GRID)
    assert [s.name for s in g.models()] == ["dense-w32-s0", "sparse-w16-nz0.5-s0", "sparse-w16-nz0.25-s0",
                                            "sparse-w32-nz0.5-s0", "sparse-w32-nz0.25-s0"]
    with pytest.raises(UserError, match="unknown key 'widht'"):
        grid_from_dict(TINY_GRID | {"widht": [1]})
    with pytest.raises(UserError, match="dense models go in dense_widths"):
        grid_from_dict(TINY_GRID | {"nonzero_fracs": [1.0]})
    with pytest.raises(UserError, match="not a sparse model of the grid"):
        grid_from_dict(TINY_GRID | {"matched": {"width": 64, "nonzero_frac": 0.25}})
    with pytest.raises(UserError, match="unknown task"):
        grid_from_dict(TINY_GRID | {"tasks": ["no_such_task"]})
    with pytest.raises(UserError, match="expected a list"):
        grid_from_dict(TINY_GRID | {"seeds": 0})
    # Two models in one directory would leave the second "finished earlier" and never trained.
    for dup in ({"nonzero_fracs": [0.25, 0.2500001]}, {"widths": [16, 16]}, {"seeds": [0, 0]},
                {"dense_widths": [32, 32]}):
        with pytest.raises(UserError, match="share the directory"):
            grid_from_dict(TINY_GRID | dup)


def test_geometric_mean_over_a_fixed_task_set_with_a_missing_task():
    a = row("a", ModelKind.SPARSE, 64, 0.25, 0, 4.0, {"t1": 10, "t2": 1000, "t3": 5})
    b = row("b", ModelKind.DENSE, 64, 1.0, 0, 3.9, {"t1": 100, "t3": 50})  # no circuit for t2
    # A grid's fixed set: b has no mean (a mean over fewer tasks is another number) and t2 is named.
    fixed = SweepTable([a, b], task_set([a, b], ["t1", "t2"]))
    assert fixed.geomean(a) == pytest.approx(100.0)
    assert geomean_over(b, ["t1", "t2"]) == (None, ["t2"])
    d = fixed.as_dict()["rows"]
    assert d[1]["geomean_edges"] is None and d[1]["missing_tasks"] == ["t2"]
    # No fixed set: the tasks both have; t2 is reported with the model that lacks it.
    real = ["single_double_quote", "else_elif", "var_if"]
    a.circuits = {real[0]: 10, real[1]: 1000, real[2]: 5}
    b.circuits = {real[0]: 100, real[2]: 50}
    shared = task_set([a, b], [])
    assert shared.tasks == ["single_double_quote", "var_if"] and shared.left_out == {"else_elif": ["b"]}
    assert SweepTable([a, b], shared).geomean(b) == pytest.approx(math.sqrt(100 * 50))
    csv_rows = list(csv.DictReader(SweepTable([a, b], shared).csv().splitlines()))
    assert float(csv_rows[0]["geomean_edges"]) == pytest.approx(math.sqrt(10 * 5))


def test_matched_loss_interpolation_on_a_constructed_table():
    assert interpolate_log([(3.0, 1000.0), (4.0, 10.0)], 3.5)[0] == pytest.approx(100.0)
    assert interpolate_log([(4.0, 10.0), (3.0, 1000.0)], 3.75)[0] == pytest.approx(1000 ** 0.25 * 10 ** 0.75)
    assert interpolate_log([(3.0, 1000.0), (4.0, 10.0)], 4.5) is None
    rows = [
        row("d1", ModelKind.DENSE, 32, 1.0, 0, 4.0, {"t": 10}), row("d2", ModelKind.DENSE, 64, 1.0, 0, 3.0, {"t": 1000}),
        row("d1b", ModelKind.DENSE, 32, 1.0, 1, 4.2, {"t": 20}), row("d2b", ModelKind.DENSE, 64, 1.0, 1, 3.2, {"t": 2000}),
        row("s0", ModelKind.SPARSE, 64, 0.25, 0, 3.5, {"t": 4}),   # dense at 3.5: 100 -> 25x
        row("s1", ModelKind.SPARSE, 64, 0.25, 1, 3.7, {"t": 5}),   # seed 1's dense at 3.7: 200 -> 40x
        row("s2", ModelKind.SPARSE, 64, 0.0625, 0, 4.6, {"t": 2}),  # beyond every dense model: no ratio
        row("d0", ModelKind.DENSE, 16, 1.0, 0, 4.8, {}),  # would bracket s2 but cannot do the task
    ]
    table = SweepTable(rows, task_set(rows, ["t"]))
    assert [(r.name, missing) for r, missing in table.without_mean()] == [("d0", ["t"])]
    ratios = {r.sparse: r for r in matched_ratios(table)}
    assert ratios["s0"].ratio == pytest.approx(25.0) and ratios["s0"].between == ["d2", "d1"]
    assert ratios["s1"].ratio == pytest.approx(40.0) and set(ratios["s1"].between) == {"d1b", "d2b"}
    assert ratios["s2"].ratio is None and "not extrapolated" in ratios["s2"].note
    assert "d0 (4.800, missing t)" in ratios["s2"].note and "d0" not in (ratios["s0"].note or "")
    spread = {(s.width, s.nonzero_frac): s for s in ratio_spread(list(ratios.values()))}
    s = spread[(64, 0.25)]
    assert (s.n, s.mean, s.low, s.high) == (2, pytest.approx(32.5), pytest.approx(25.0), pytest.approx(40.0))
    assert s.std == pytest.approx(math.sqrt(2 * 7.5 ** 2))  # sample standard deviation of 25 and 40
    assert spread[(64, 0.0625)].n == 0 and spread[(64, 0.0625)].without_ratio == 1


def constructed_sweep(root):
    """A sweep directory written by hand: table, matched pairs, a history."""
    rows = [row("dense-w32-s0", ModelKind.DENSE, 32, 1.0, 0, 4.0, {"single_double_quote": 300, "var_if": 90}),
            row("dense-w64-s0", ModelKind.DENSE, 64, 1.0, 0, 3.6, {"single_double_quote": 900, "var_if": 400}),
            row("sparse-w64-nz0.25-s0", ModelKind.SPARSE, 64, 0.25, 0, 3.8, {"single_double_quote": 20, "var_if": 9}),
            row("sparse-w64-nz0.0625-s0", ModelKind.SPARSE, 64, 0.0625, 0, 3.9, {"single_double_quote": 12}),
            # about as many nonzero weights as the w64 1/4 model, twice as wide: a fixed-nonzero series
            replace(row("sparse-w128-nz0.0625-s0", ModelKind.SPARSE, 128, 0.0625, 0, 3.7,
                        {"single_double_quote": 10, "var_if": 5}), nonzero_params=240)]
    table = SweepTable(rows, task_set(rows, []))
    table.save(root)
    pts = [MatchedPoint(m, "single_double_quote", t, e, t, t + 0.01)
           for m, es in (("sparse-w64-nz0.25-s0", (40, 20)), ("dense-w64-s0", (2000, 900))) for t, e in zip((0.1, 0.3), es)]
    pair = MatchedPair(0, "sparse-w64-nz0.25-s0", "dense-w64-s0", 3.8, 3.6, ["single_double_quote"], pts)
    from dataclasses import asdict
    write_json(root / "matched.json", [asdict(pair)])
    h = CircuitHistory("sparse-w64-nz0.25-s0", "single_double_quote", 0.15,
                       [HistoryPoint(100, 1000, 4.5, 0.6), HistoryPoint(200, 2000, 4.0, 0.2, 30, 80, 0.14, 1.0)])
    write_json(root / "history" / "sparse-w64-nz0.25-s0" / "history.json", h.as_dict())
    return root


def test_frontier_figures_and_page_from_a_constructed_sweep(tmp_path):
    root = constructed_sweep(tmp_path / "sweep")
    fr = load_frontier(root)
    assert fr.table.task_set.tasks == ["single_double_quote"]
    assert fr.table.task_set.left_out == {"var_if": ["sparse-w64-nz0.0625-s0"]}
    result = write_frontier(root, log=lambda _: None)
    out = root / "frontier"
    for name in ("frontier", "width", "ratio", "tasks", "history"):
        png = (out / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000
    page = (out / "index.html").read_text()
    assert "var_if" in page and "sparse-w64-nz0.0625-s0" in page and page.count("data:image/png;base64,") == 5
    assert "Wider at a fixed number of nonzero weights" in page
    saved = json.loads((out / "frontier.json").read_text())
    ratio = {r["sparse"]: r["ratio"] for r in saved["matched_ratios"]}
    # sparse at 3.8 between dense 3.6 (900) and 4.0 (300): sqrt(900 * 300) / 20
    assert ratio["sparse-w64-nz0.25-s0"] == pytest.approx(math.sqrt(900 * 300) / 20)
    assert len(result.figures) == 5
    # The series: w64 1/4 (250 nonzero) and w128 1/16 (240); the w64 1/16 model (62) is alone.
    [series] = saved["fixed_nonzero_series"]
    assert series["nonzero_params"] == 240 and [(p["width"], p["nonzero_frac"]) for p in series["points"]] == [
        (64, 0.25), (128, 0.0625)]
    assert series["points"][1]["geomean"] == pytest.approx(10.0)  # its one task of the set
    assert series["points"][1]["ratio"]["mean"] == pytest.approx(ratio["sparse-w128-nz0.0625-s0"])
    # Fig. 2 per target: dense 2000 / sparse 40 at 0.1, 900 / 20 at 0.3.
    assert [(r.target_loss, r.tasks, pytest.approx(r.ratio)) for r in fr.target_ratios] == [
        (0.1, ["single_double_quote"], 50.0), (0.3, ["single_double_quote"], 45.0)]
    assert [r["ratio"] for r in saved["matched_target_ratios"]] == [pytest.approx(50.0), pytest.approx(45.0)]
    # With the grid's fixed set {quote, var_if} the 1/16 model has no mean: the page says it is not on the figure.
    SweepTable(fr.table.rows, task_set(fr.table.rows, ["single_double_quote", "var_if"])).save(root)
    write_frontier(root, log=lambda _: None)
    page = (out / "index.html").read_text()
    assert "Not on the figure" in page and "sparse-w64-nz0.0625-s0 (loss 3.900, missing var_if)" in page


def test_sweep_tiny_grid_end_to_end_kill_and_resume(tmp_path, data_dir, monkeypatch):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps(TINY_GRID))
    out = tmp_path / "sweep"
    runner = CliRunner()
    # Kill the sweep in the third model's training, after its first checkpoint.
    real_train = sweep_run.train
    calls = []

    def killed_train(cfg, run_dir, resume=False, **kw):
        calls.append(run_dir.name)
        if len(calls) == 3:
            def on_step(step, record):
                if step == 15:
                    raise KeyboardInterrupt
            return real_train(cfg, run_dir, resume=resume, on_step=on_step, **kw)
        return real_train(cfg, run_dir, resume=resume, **kw)

    monkeypatch.setattr(sweep_run, "train", killed_train)
    res = runner.invoke(main, ["sweep", "--grid", str(grid), "--data", str(data_dir), "--out", str(out), "--jobs", "1"])
    assert res.exit_code == 1 and "Aborted" in res.output  # click's answer to Ctrl-C
    first_two = [out / "models" / n for n in calls[:2]]
    finished = {d: (d / "model.safetensors").stat().st_mtime_ns for d in first_two}
    assert len(json.loads((out / "sweep.json").read_text())["rows"]) == 2

    monkeypatch.setattr(sweep_run, "train", real_train)
    res = runner.invoke(main, ["sweep", "--grid", str(grid), "--data", str(data_dir), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert res.output.count("finished earlier; kept") == 2
    for d, mtime in finished.items():  # not retrained
        assert (d / "model.safetensors").stat().st_mtime_ns == mtime
    killed = out / "models" / calls[2]
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 30  # resumed from step 10, no step logged twice

    table = json.loads((out / "sweep.json").read_text())
    assert [r["name"] for r in table["rows"]] == [s.name for s in grid_from_dict(TINY_GRID).models()]
    for r in table["rows"]:
        assert r["total_params"] > 0 and 0 < r["nonzero_params"] <= r["total_params"]
        assert r["val_loss"] > 0 and r["train_seconds"] > 0
        if r["kind"] == "sparse":
            assert r["nonzero_params"] < r["total_params"]
    statuses = {t["status"] for n in calls[:2] for t in
                json.loads((out / "models" / n / "circuits" / "summary.json").read_text())["tasks"].values()}
    assert "not-expressible" in statuses  # this small tokenizer cannot express every task: recorded, not fatal
    lines = list(csv.DictReader((out / "sweep.csv").read_text().splitlines()))
    assert len(lines) == 5 and lines[0]["name"] == "dense-w32-s0"
    history = json.loads((out / "history" / "sparse-w32-nz0.25-s0" / "history.json").read_text())
    assert [p["step"] for p in history["points"]] == [10, 20, 30]
    density = [p["weight_density"] for p in history["points"]]  # counted in each checkpoint: the L0 anneal
    assert density[0] > density[-1] and 0.2 < density[-1] < 0.35  # step 10 mid-anneal, step 30 at 1/4

    res = runner.invoke(main, ["frontier", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "frontier" / "history.png").is_file() and (out / "frontier" / "index.html").is_file()
    res = runner.invoke(main, ["report", "--model", str(first_two[0]), "--sweep", str(out), "--out", str(tmp_path / "site"),
                               "--windows", "8"])
    assert res.exit_code == 0, res.output
    index = (tmp_path / "site" / "index.html").read_text()
    assert "<h2>Frontier</h2>" in index and "sparse-w32-nz0.25-s0" in index
    # Again: nothing is retrained or pruned again.
    res = runner.invoke(main, ["sweep", "--grid", str(grid), "--data", str(data_dir), "--out", str(out)])
    assert res.exit_code == 0 and res.output.count("finished earlier; kept") == 5


def test_sweep_trains_side_by_side_one_thread_each(tmp_path, data_dir, monkeypatch):
    """`--jobs 2`: two trainings at once, and each model's tasks pruned two at a time."""
    import sparse_circuits.sweep.run as sweep_run

    prune_jobs, prune_all = [], sweep_run.prune_all
    monkeypatch.setattr(sweep_run, "prune_all", lambda *a, **k: prune_jobs.append(k["jobs"]) or prune_all(*a, **k))
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps(TINY_GRID | {"history": None, "matched": None}))
    out = tmp_path / "sweep"
    res = CliRunner().invoke(main, ["sweep", "--grid", str(grid), "--data", str(data_dir), "--out", str(out),
                                    "--jobs", "2"])
    assert res.exit_code == 0, res.output
    assert "models, 2 at a time, one thread each" in res.output and prune_jobs and set(prune_jobs) == {2}
    names = [s.name for s in grid_from_dict(TINY_GRID).models()]
    assert [r["name"] for r in json.loads((out / "sweep.json").read_text())["rows"]] == names
    for n in names:
        assert json.loads((out / "models" / n / "config.json").read_text())["train"]["threads"] == 1
    again = CliRunner().invoke(main, ["sweep", "--grid", str(grid), "--data", str(data_dir), "--out", str(out),
                                      "--jobs", "2"])
    assert again.exit_code == 0 and again.output.count("finished earlier; kept") == len(names)
    assert "at a time" not in again.output


def test_wide_grid_names_and_a_grid_grown_model_by_model_resumes(tmp_path, data_dir):
    """`sweep --grid wide` lists sparse models one by one (a fixed nonzero count over widths); a sweep
    started on part of a grid and run again on the whole keeps what is finished and adds the rest."""
    from sparse_circuits.sweep.grid import load_grid

    wide = load_grid("wide")
    sparse = [s.name for s in wide.models() if s.kind == ModelKind.SPARSE and s.seed == 0]
    assert sparse == ["sparse-w128-nz0.0625-s0", "sparse-w256-nz0.0625-s0", "sparse-w256-nz0.015625-s0",
                      "sparse-w512-nz0.00390625-s0"]
    assert len(wide.models()) == 3 * (4 + 3) and wide.tasks == load_grid("default").tasks
    with pytest.raises(UserError, match="share the directory"):
        grid_from_dict({"sparse_models": [{"width": 16, "nonzero_frac": 0.5}, {"width": 16, "nonzero_frac": 0.5000001}]})
    with pytest.raises(UserError, match="share the directory"):  # also one given in the product and again by itself
        grid_from_dict({"widths": [16], "nonzero_fracs": [0.5], "sparse_models": [{"width": 16, "nonzero_frac": 0.5}]})

    part = {k: v for k, v in TINY_GRID.items() if k not in ("widths", "nonzero_fracs", "history")}
    part["run_overrides"] = json.loads(json.dumps(part["run_overrides"]))
    part["run_overrides"]["train"]["sparse_products_below"] = 0.3  # the fast path inside a real sweep
    part |= {"dense_widths": [], "sparse_models": [{"width": 32, "nonzero_frac": 0.125}]}
    whole = part | {"dense_widths": [16], "sparse_models": [{"width": 16, "nonzero_frac": 0.5}] + part["sparse_models"]}
    out = tmp_path / "sweep"
    for grid, kept in ((part, 0), (whole, 1)):
        path = tmp_path / "grid.json"
        path.write_text(json.dumps(grid))
        res = CliRunner().invoke(main, ["sweep", "--grid", str(path), "--data", str(data_dir), "--out", str(out),
                                        "--jobs", "1"])
        assert res.exit_code == 0, res.output
        assert res.output.count("finished earlier; kept") == kept
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["dense-w16-s0", "sparse-w16-nz0.5-s0", "sparse-w32-nz0.125-s0"]
    assert json.loads((out / "grid.json").read_text())["grid"]["sparse_models"][1] == {"width": 32,
                                                                                      "nonzero_frac": 0.125}


def test_sweep_refuses_bad_input_before_writing(tmp_path, data_dir):
    runner = CliRunner()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(TINY_GRID | {"widths": [20, 32]}))  # not a multiple of the tiny preset's d_head 16
    res = runner.invoke(main, ["sweep", "--grid", str(bad), "--data", str(data_dir), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "d_head" in res.output and not (tmp_path / "o").exists()
    res = runner.invoke(main, ["sweep", "--grid", "quick", "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "meta.json" in res.output and not (tmp_path / "o").exists()
    res = runner.invoke(main, ["sweep", "--grid", "quick", "--data", str(data_dir), "--out", str(tmp_path / "o"),
                               "--shard", "2/2"])
    assert res.exit_code == 2 and "K/N" in res.output
    res = runner.invoke(main, ["frontier", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "sweep.json" in res.output
    # A directory that holds something else (a run, here without its weights) is not taken over.
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    res = runner.invoke(main, ["sweep", "--grid", "quick", "--data", str(data_dir), "--out", str(run)])
    assert res.exit_code == 2 and "not a sweep; choose another --out" in res.output
    assert [p.name for p in run.iterdir()] == ["config.json"]
