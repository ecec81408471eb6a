"""The one-command demo, end to end at the quick (tiny) scale, and a second call that reuses it."""

import json

from click.testing import CliRunner

from sparse_circuits.cli import main
from sparse_circuits.parallel import side_by_side_workers


def test_demo_quick_end_to_end_then_reused(tmp_path):
    out = tmp_path / "demo"
    runner = CliRunner()
    res = runner.invoke(main, ["demo", "--quick", "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "demo.json").read_text())
    meta = json.loads((out / "data" / "meta.json").read_text())
    assert meta["sources"] == ["stdlib", "synthetic"] and meta["synthetic"]["tokens"] >= 500_000
    assert "generated" in summary["stages"][0]["note"]
    assert all(isinstance(r["bigram_decided"], bool) for r in summary["tasks"].values())
    both = side_by_side_workers("cpu", 2) >= 2  # two cores: the two models train, then prune, side by side
    training = ["train sparse + dense"] if both else ["train sparse", "train dense"]
    pruning = ["prune sparse + dense"] if both else ["prune sparse", "prune dense"]
    assert [s["name"] for s in summary["stages"]] == ["data"] + training + ["task scores"] + pruning + ["report"]
    for kind in ("sparse", "dense"):
        assert (out / kind / "model.safetensors").is_file()
        assert json.loads((out / kind / "circuits" / "summary.json").read_text())["tasks"]
    index = out / "report" / "index.html"
    assert index.is_file() and "sparse-circuits report" in index.read_text()
    assert str(index) in res.output and "dense/sparse edges" in res.output  # where the report is, and the table
    pruned = [t for t, r in summary["tasks"].items() if r["sparse"]["edges"] is not None]
    assert len(list((out / "report" / "circuits").glob("*.html"))) >= len(pruned)

    again = runner.invoke(main, ["demo", "--quick", "--out", str(out)])
    assert again.exit_code == 0, again.output
    notes = {s["name"]: s["note"] for s in json.loads((out / "demo.json").read_text())["stages"]}
    if len(training) == 1:
        assert "sparse reused" in notes[training[0]] and "dense reused" in notes[training[0]]
    else:
        assert notes["train sparse"].startswith("reused") and notes["train dense"].startswith("reused")
    assert "reusing" in again.output  # the data
    assert "skipped, whole-model loss" not in again.output  # every task came from the earlier prune-all


def test_demo_refuses_two_scales_before_writing_anything(tmp_path):
    res = CliRunner().invoke(main, ["demo", "--quick", "--wide", "--out", str(tmp_path / "demo")])
    assert res.exit_code == 2 and "--quick and --wide" in res.output
    assert not (tmp_path / "demo").exists()


def test_every_scale_resolves_and_the_seed_reaches_both_models(tmp_path, data_dir):
    import shutil

    from sparse_circuits.config import ModelKind
    from sparse_circuits.demo import DEFAULT, KINDS, QUICK, REFERENCE, WIDE, Demo

    for scale in (DEFAULT, WIDE, REFERENCE, QUICK):
        demo = Demo(tmp_path / scale.name, scale, seed=3)
        shutil.copytree(data_dir, demo.data_dir)
        for kind in KINDS:
            cfg = demo.run_config(kind)
            assert cfg.train.seed == 3 and cfg.sparsity.kind == kind
            assert (cfg.sparsity.nonzero_frac == 1.0) == (kind == ModelKind.DENSE)
            if demo.side_by_side:
                assert cfg.train.threads == 1
    res = CliRunner().invoke(main, ["demo", "--reference", "--quick", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "--quick and --reference" in res.output
