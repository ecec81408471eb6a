"""The command line as a user meets it: exit codes and one-line errors."""

import json
import subprocess
import sys

import pytest
import torch

from sparse_circuits.tasks.core import DIAGNOSTICS, TASKS


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sparse_circuits.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_data_then_train_then_resume(tmp_path, corpus_dir):
    data = tmp_path / "data"
    r = cli("data", "--corpus", corpus_dir, "--out", data, "--vocab-size", 300)
    assert r.returncode == 0, r.stderr
    assert json.loads((data / "meta.json").read_text())["files"]["train"] > 0
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"train": {"eval_every": 3, "checkpoint_every": 3, "log_every": 1, "threads": 1}}))
    r = cli("train", "--data", data, "--preset", "tiny", "--out", run, "--steps", 6, "--seed", 3,
            "--nonzero-frac", 0.5, "--config", cfg)
    assert r.returncode == 0, r.stderr
    assert "trained" in r.stdout
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["seed"] == 3 and saved["sparsity"]["nonzero_frac"] == 0.5
    assert saved["model"]["vocab_size"] == json.loads((data / "meta.json").read_text())["vocab_size"]
    assert_one_line_error(cli("train", "--data", data, "--preset", "tiny", "--out", run), "--resume")
    r = cli("train", "--out", run, "--resume")
    assert r.returncode == 0, r.stderr
    # Scripts re-run the same command: a finished run reports its final metrics.
    r = cli("train", "--data", data, "--preset", "tiny", "--out", run, "--resume-if-exists")
    assert r.returncode == 0, r.stderr
    assert '"step": 6' in r.stdout and "val_loss" in r.stdout
    r = cli("info", run)
    assert r.returncode == 0, r.stderr
    assert "step 6/6" in r.stdout and "bigram model validation loss" in r.stdout and "wte.weight" in r.stdout


def test_data_with_generated_programs(tmp_path, corpus_dir):
    data = tmp_path / "mix"
    r = cli("data", "--corpus", corpus_dir, "--corpus", "synthetic", "--synthetic-share", 0.3, "--out", data,
            "--vocab-size", 300)
    assert r.returncode == 0, r.stderr
    meta = json.loads((data / "meta.json").read_text())
    assert meta["sources"] == [str(corpus_dir), "synthetic"]
    assert 0.3 <= meta["synthetic"]["share_of_train_tokens"] < 0.4
    report = json.loads((data / "contamination.json").read_text())
    assert {row["task"] for row in report["tasks"]} >= {"for_while", "nonsense_parity"}
    assert "verbatim" in r.stdout  # the table is printed


@pytest.mark.parametrize("case", ["unknown_key", "empty_corpus", "missing_data", "corrupt_checkpoint",
                                  "synthetic_share_alone", "corrupt_tensor_data", "config_not_an_object",
                                  "vocab_size", "val_frac", "port", "prune_target"])
def test_bad_input_gives_one_line_error(tmp_path, corpus_dir, data_dir, case):
    if case == "corrupt_tensor_data":
        # A valid header with overwritten data: caught by the checksum, not trained on.
        run = tmp_path / "run"
        cfg = tmp_path / "cfg.json"
        cfg.write_text(json.dumps({"train": {"checkpoint_every": 2, "threads": 1}}))
        assert cli("train", "--data", data_dir, "--preset", "tiny", "--out", run, "--steps", 2,
                   "--config", cfg).returncode == 0
        weights = run / "checkpoints" / "step_00000002" / "model.safetensors"
        raw = bytearray(weights.read_bytes())
        raw[-64:] = bytes(64)
        weights.write_bytes(bytes(raw))
        assert_one_line_error(cli("train", "--out", run, "--resume", "--steps", 4), "model weights is corrupt",
                              "checksum")
    elif case == "config_not_an_object":
        run = tmp_path / "run"
        run.mkdir()
        for text in ("null", "[1, 2]"):
            (run / "config.json").write_text(text)
            assert_one_line_error(cli("info", run), "must hold a JSON object")
    elif case == "vocab_size":
        for size in (-5, 0, 70000):
            r = cli("data", "--corpus", corpus_dir, "--out", tmp_path / "d", "--vocab-size", size)
            assert_one_line_error(r, "--vocab-size must be between 257")
        assert not (tmp_path / "d").exists()
    elif case == "val_frac":
        for frac in (1.5, 0, -0.1):
            r = cli("data", "--corpus", corpus_dir, "--out", tmp_path / "d", "--val-frac", frac)
            assert_one_line_error(r, "--val-frac", "between 0 and 1")
        assert not (tmp_path / "d").exists()
    elif case == "port":
        (tmp_path / "site").mkdir()
        assert_one_line_error(cli("view", tmp_path / "site", "--port", 99999), "--port must be between 0 and 65535")
    elif case == "prune_target":
        r = cli("prune", "--model", tmp_path / "nowhere", "--task", "for_while", "--out", tmp_path / "c",
                "--target-loss", -1)
        assert_one_line_error(r, "target_loss = -1.0 is impossible")
    elif case == "unknown_key":
        cfg = tmp_path / "cfg.json"
        cfg.write_text(json.dumps({"model": {"n_layers": 3}}))
        r = cli("train", "--data", data_dir, "--preset", "tiny", "--out", tmp_path / "r", "--config", cfg)
        assert_one_line_error(r, "unknown key 'n_layers'", "n_layer")
    elif case == "empty_corpus":
        (tmp_path / "empty").mkdir()
        assert_one_line_error(cli("data", "--corpus", tmp_path / "empty", "--out", tmp_path / "d"), "is empty")
    elif case == "synthetic_share_alone":
        r = cli("data", "--corpus", "synthetic", "--synthetic-share", 0.5, "--out", tmp_path / "d")
        assert_one_line_error(r, "--synthetic-share", "needs a real-code source")
        assert not (tmp_path / "d").exists()
    elif case == "missing_data":
        r = cli("train", "--data", tmp_path / "nope", "--preset", "tiny", "--out", tmp_path / "r")
        assert_one_line_error(r, "not found")
    elif case == "corrupt_checkpoint":
        run = tmp_path / "run"
        cfg = tmp_path / "cfg.json"
        cfg.write_text(json.dumps({"train": {"checkpoint_every": 2, "threads": 1}}))
        assert cli("train", "--data", data_dir, "--preset", "tiny", "--out", run, "--steps", 2,
                   "--config", cfg).returncode == 0
        ckpt = run / "checkpoints" / "step_00000002" / "optimizer.safetensors"
        ckpt.write_bytes(b"garbage")
        assert_one_line_error(cli("train", "--out", run, "--resume"), "optimizer state is corrupt")


def test_a_failed_start_leaves_the_run_directory_usable(tmp_path, data_dir):
    run = tmp_path / "run"
    bad = [("--device", "cuda", "no CUDA device"), ("--device", "bogus", "train.device must be"),
           ("--lr", "nan", "train.lr must be a finite number")]
    if torch.cuda.is_available():
        bad = bad[1:]
    for option, value, message in bad:
        assert_one_line_error(cli("train", "--data", data_dir, "--preset", "tiny", "--out", run, option, value),
                              message)
        assert not (run / "config.json").exists(), option  # checked before anything was written
    r = cli("train", "--data", data_dir, "--preset", "tiny", "--out", run, "--steps", 2)
    assert r.returncode == 0, r.stderr
    assert_one_line_error(cli("train", "--out", run, "--resume", "--batch-size", 2),
                          "cannot change train.batch_size")
    r = cli("train", "--out", run, "--resume", "--steps", 4)  # extending a run is allowed
    assert r.returncode == 0 and '"step": 4' in r.stdout, r.stderr


def test_tasks_commands(tmp_path, data_dir):
    r = cli("tasks", "list")
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and "single_double_quote" in r.stdout
    # the 20 tasks and the control, then the diagnostic probes, marked as such
    assert len(lines) == len(TASKS) + len(DIAGNOSTICS) == 22
    assert all("DIAGNOSTIC" in line for line in lines[-len(DIAGNOSTICS):])
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"train": {"threads": 1}}))
    assert cli("train", "--data", data_dir, "--preset", "tiny", "--out", run, "--steps", 2, "--config", cfg).returncode == 0
    r = cli("tasks", "show", "for_while", "--model", run, "-n", 1)
    assert r.returncode == 0, r.stderr
    assert "prompt A" in r.stdout and "prompt B" in r.stdout and "correct" in r.stdout
    assert_one_line_error(cli("tasks", "show", "nope", "--model", run), "unknown task 'nope'")
    out = tmp_path / "scores.json"
    r = cli("tasks", "eval", "--model", run, "--pairs", 4, "--task", "for_while", "--task", "var_if", "--json", out)
    assert r.returncode == 0, r.stderr
    scores = json.loads(out.read_text())["scores"]
    assert [s["task"] for s in scores] == ["for_while", "var_if"]
    assert all(s["error"] or 0 <= s["accuracy"] <= 1 for s in scores)


def test_prune_validate_and_wrong_model(tmp_path, data_dir):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"train": {"threads": 1}}))
    for name, seed in (("run", 0), ("other", 1)):
        assert cli("train", "--data", data_dir, "--preset", "tiny", "--out", tmp_path / name, "--steps", 3,
                   "--seed", seed, "--config", cfg).returncode == 0
    circuit = tmp_path / "circuit"
    # A loose target, so that even a barely trained model has a circuit to write.
    r = cli("prune", "--model", tmp_path / "run", "--task", "for_while", "--out", circuit, "--target-loss", 2.0,
            "--steps", 5, "--budget", 2, "--pairs", 8)
    assert r.returncode == 0, r.stderr
    saved = json.loads((circuit / "circuit.json").read_text())
    for key in ("task", "model", "ablation", "target_loss", "loss", "loss_calibrated", "nodes", "num_nodes",
                "num_edges", "hyperparameters", "format_version"):
        assert key in saved
    assert saved["num_nodes"] == sum(len(v) for v in saved["nodes"].values())
    assert len(saved["search"]) == 2 and saved["loss"] <= 2.0
    assert (tmp_path / "run" / "means.safetensors").is_file()
    r = cli("validate", circuit, "--pairs", 8, "--random", 2)
    assert r.returncode == 0, r.stderr
    assert "sufficiency" in r.stdout and "necessity" in r.stdout
    assert json.loads((circuit / "validation.json").read_text())["split"] == "test"
    assert_one_line_error(cli("validate", circuit, "--model", tmp_path / "other", "--pairs", 8),
                          "pruned from another model")
    moved = json.loads((circuit / "circuit.json").read_text())
    moved["model"]["dir"] = str(tmp_path / "moved-away")
    (tmp_path / "moved").mkdir()
    for f in ("circuit.safetensors",):
        (tmp_path / "moved" / f).write_bytes((circuit / f).read_bytes())
    (tmp_path / "moved" / "circuit.json").write_text(json.dumps(moved))
    assert_one_line_error(cli("validate", tmp_path / "moved", "--pairs", 8), "has no weights there", "--model")
    for missing in (tmp_path / "nowhere", tmp_path / "moved"):  # no run there / a directory without weights
        assert_one_line_error(cli("prune-all", "--model", missing, "--pairs", 8), str(missing))
    bad = tmp_path / "prune.json"
    bad.write_text(json.dumps({"ablation": "median"}))
    assert_one_line_error(cli("prune", "--model", tmp_path / "run", "--task", "for_while", "--out", circuit,
                              "--config", bad), "unknown value 'median'", "mean-pretrain")


def test_the_test_command_ends_with_pytests_summary_line(tmp_path):
    # CI logs must end with the counts: `make test` runs pytest with the project's settings
    # (addopts "-q"); one more -q in the Makefile would hide the summary line.
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    recipe = (root / "Makefile").read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "-m pytest" in recipe and "-q" not in recipe
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    r = subprocess.run([sys.executable, "-m", "pytest", "-c", str(root / "pyproject.toml"), "--rootdir", str(tmp_path),
                        "-p", "no:cacheprovider", str(tmp_path / "test_one.py")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    assert "1 passed in" in r.stdout.strip().splitlines()[-1]


def test_counts_below_one_are_errors_not_defaults(tmp_path, data_dir):
    """--pairs 0, --budget 0, --batches 0 or -2, --windows -3: one-line errors, and nothing written
    over (a valid means cache stays valid)."""
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"train": {"threads": 1}}))
    assert cli("train", "--data", data_dir, "--preset", "tiny", "--out", run, "--steps", 2, "--config", cfg).returncode == 0
    assert cli("means", "--model", run, "--batches", 1).returncode == 0
    cache = (run / "means.safetensors").read_bytes()
    for batches in (0, -2):
        assert_one_line_error(cli("means", "--model", run, "--batches", batches), "--batches must be >= 1")
    assert (run / "means.safetensors").read_bytes() == cache
    for pairs in (0, -3):
        assert_one_line_error(cli("tasks", "eval", "--model", run, "--pairs", pairs), "--pairs must be >= 1")
    for command in (["prune", "--task", "for_while", "--out", tmp_path / "c"], ["prune-all"],
                    ["backups", "--task", "for_while", "--out", tmp_path / "c"]):
        assert_one_line_error(cli(*command, "--model", run, "--pairs", 0), "--pairs must be >= 2")
        assert_one_line_error(cli(*command, "--model", run, "--budget", 0), "--budget", "must be >= 1")
    for command in (["prune"], ["backups"]):
        assert_one_line_error(cli(*command, "--task", "for_while", "--out", tmp_path / "c", "--model", run,
                                  "--seeds", 0), "--seeds must be >= 1")
    assert_one_line_error(cli("backups", "--task", "for_while", "--out", tmp_path / "c", "--model", run,
                              "--max-rounds", 0), "--max-rounds must be >= 1")
    assert not (tmp_path / "c").exists()
    assert_one_line_error(cli("report", "--model", run, "--windows", -3, "--out", tmp_path / "site"),
                          "--windows must be >= 1")
    assert not (tmp_path / "site").exists()


def test_a_run_has_one_writer(tmp_path, data_dir):
    """While one process writes a run (here: this test holds its lock), a second `train` on it
    (resume or fresh) stops with a one-line error and changes nothing; the lock goes with the writer."""
    from sparse_circuits.runs import Run

    run = tmp_path / "run"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"train": {"threads": 1}}))
    assert cli("train", "--data", data_dir, "--preset", "tiny", "--out", run, "--steps", 2, "--config", cfg).returncode == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    lock = Run(run).lock()
    try:
        assert_one_line_error(cli("train", "--out", run, "--resume", "--steps", 4), "another process is writing this run")
        fresh = tmp_path / "fresh"
        other = Run(fresh).lock()
        try:
            assert_one_line_error(cli("train", "--data", data_dir, "--preset", "tiny", "--out", fresh, "--steps", 2),
                                  "another process is writing this run")
        finally:
            other.release()
    finally:
        lock.release()
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    r = cli("train", "--out", run, "--resume", "--steps", 4)
    assert r.returncode == 0 and '"step": 4' in r.stdout, r.stderr


def test_a_damaged_data_meta_is_a_one_line_error(tmp_path, data_dir):
    """meta.json that is not an object, lacks vocab_size or has baselines that are not a record: `info`
    and `train` name the file and the fix instead of a traceback."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"train": {"threads": 1}}))
    assert cli("train", "--data", data, "--preset", "tiny", "--out", run, "--steps", 2, "--config", cfg).returncode == 0
    meta = json.loads((data / "meta.json").read_text())
    for broken in ([1, 2], {k: v for k, v in meta.items() if k != "vocab_size"}, meta | {"baselines_val_loss": 5}):
        (data / "meta.json").write_text(json.dumps(broken))
        assert_one_line_error(cli("info", run), "meta.json", "sparse-circuits data")
        assert_one_line_error(cli("train", "--data", data, "--preset", "tiny", "--out", tmp_path / "r2", "--steps", 2),
                              "meta.json")


def test_unwritable_output_paths_are_one_line_errors(tmp_path, data_dir):
    """--out or --json under a path whose parent is a file: a one-line error naming the path."""
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"train": {"threads": 1}}))
    assert_one_line_error(cli("train", "--data", data_dir, "--preset", "tiny", "--out", afile / "sub", "--steps", 2,
                              "--config", cfg), "afile")
    assert cli("train", "--data", data_dir, "--preset", "tiny", "--out", run, "--steps", 2, "--config", cfg).returncode == 0
    assert_one_line_error(cli("tasks", "eval", "--model", run, "--pairs", 2, "--task", "for_while",
                              "--json", afile / "x.json"), "afile")
    assert_one_line_error(cli("export-openai", run, "--out", afile / "sub"), "afile")
    assert_one_line_error(cli("data", "--corpus", "synthetic", "--synthetic-files", 20, "--vocab-size", 300,
                              "--out", afile / "sub"), "afile")
