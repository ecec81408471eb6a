import json

import pytest
import torch

from sparse_circuits.runs import Run, load_model
from sparse_circuits.data import TokenData
from sparse_circuits.errors import UserError
from sparse_circuits.sparsity import keep_count
from sparse_circuits.train import TrainingDiverged, clip_grad_rms_, train

from conftest import tiny_config


def lm_loss(logits, targets):
    """The plain loss the model's fused one must equal."""
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("run") / "sparse"
    cfg = tiny_config(data_dir)
    train(cfg, out, progress=False)
    return out, cfg


def test_run_directory_contents(trained):
    out, cfg = trained
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metrics.jsonl"):
        assert (out / name).is_file(), name
    latest = Run(out).checkpoint_dirs()[-1]
    assert latest.name == "step_00000012"
    assert (latest / "optimizer.safetensors").is_file() and (latest / "state.json").is_file()
    assert len(Run(out).checkpoint_dirs()) == 2  # older checkpoints are removed
    recs = metrics(out)
    assert [r["step"] for r in recs] == [2, 4, 6, 8, 10, 12]
    evals = [r for r in recs if "val_loss" in r]
    assert [r["step"] for r in evals] == [6, 12]
    for key in ("train_loss", "lr", "tokens_per_s", "nonzero_frac_target"):
        assert key in recs[-1]
    assert recs[0]["train_loss"] > recs[-1]["train_loss"]  # it learns


def test_final_weights_meet_the_target_fraction(trained):
    out, cfg = trained
    model, _ = load_model(out)
    target = cfg.sparsity.nonzero_frac
    for name, p in model.sparsified_parameters().items():
        nonzero = int(torch.count_nonzero(p))
        k = keep_count(target, p.numel())
        assert nonzero <= k + (cfg.sparsity.min_per_unit * p.shape[0] if p.dim() == 2 else 0), name
        assert nonzero >= min(k, 1), name
        if p.dim() == 2:
            assert (torch.count_nonzero(p, dim=1) >= min(cfg.sparsity.min_per_unit, p.shape[1])).all(), name
    assert metrics(out)[-1]["nonzero_frac"]["blocks.0.mlp.c_fc.weight"] <= target + 4 / 32


def test_checkpoint_round_trip(trained, data_dir):
    out, cfg = trained
    model, loaded_cfg = load_model(out)
    assert loaded_cfg == cfg
    x, y = TokenData(data_dir).batch("val", 2, 16, seed=0, index=0)
    with torch.no_grad():
        ref = lm_loss(model(x), y)
    model2, _ = load_model(out)
    assert torch.equal(model2(x), model(x))
    assert float(ref) == pytest.approx(metrics(out)[-1]["val_loss"], rel=0.5)


class Killed(Exception):
    pass


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_continues_exactly(tmp_path, data_dir, precision):
    cfg = tiny_config(data_dir, precision=precision)
    full = tmp_path / "full"
    train(cfg, full, progress=False)

    def die_at_step_5(step, record):
        if step == 5:  # after the step-3 checkpoint, with metrics of steps 4 and 5 already written
            raise Killed

    broken = tmp_path / "broken"
    with pytest.raises(Killed):
        train(cfg, broken, on_step=die_at_step_5, progress=False)
    assert Run(broken).checkpoint_dirs()[-1].name == "step_00000003"
    train(cfg, broken, resume=True, progress=False)

    strip = lambda r: {k: v for k, v in r.items() if k not in ("tokens_per_s", "elapsed_s")}
    assert [strip(r) for r in metrics(broken)] == [strip(r) for r in metrics(full)]
    a, _ = load_model(full)
    b, _ = load_model(broken)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_logged_train_loss_is_the_mean_over_its_window(tmp_path, data_dir):
    every_step = tmp_path / "every"
    train(tiny_config(data_dir, steps=6, log_every=1), every_step, progress=False)
    windows = tmp_path / "windows"
    train(tiny_config(data_dir, steps=6, log_every=3), windows, progress=False)
    per_step = [r["train_loss"] for r in metrics(every_step)]
    assert [r["train_loss"] for r in metrics(windows)] == pytest.approx(
        [sum(per_step[:3]) / 3, sum(per_step[3:]) / 3], rel=1e-6)
    recs = metrics(windows)
    assert recs[0]["elapsed_s"] < recs[1]["elapsed_s"]
    # Throughput is the window's tokens over the window's time.
    assert recs[1]["tokens_per_s"] * (recs[1]["elapsed_s"] - recs[0]["elapsed_s"]) == pytest.approx(
        3 * 4 * 64, rel=0.5)


def test_dense_baseline_has_no_zeros(tmp_path, data_dir):
    cfg = tiny_config(data_dir, steps=4)
    cfg.sparsity.nonzero_frac = 1.0
    train(cfg, tmp_path / "dense", progress=False)
    model, _ = load_model(tmp_path / "dense")
    assert all(torch.count_nonzero(p) == p.numel() for n, p in model.sparsified_parameters().items()
               if not n.endswith("bias"))


def test_existing_run_needs_resume(trained):
    out, cfg = trained
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        train(cfg, out, progress=False)


def test_nan_loss_stops_with_a_clear_error_and_the_run_can_go_on(tmp_path, data_dir):
    cfg = tiny_config(data_dir, steps=12, lr=1e30)
    out = tmp_path / "nan"
    # Before the first checkpoint: nothing to resume, and the message must not claim one.
    with pytest.raises(TrainingDiverged, match=r"at step \d+; no checkpoint was written yet") as e:
        train(cfg, out, progress=False)
    assert "intact" not in str(e.value)
    train(tiny_config(data_dir, steps=4), out, progress=False)  # the same --out starts over
    # After a checkpoint: the advice (lower the lr, resume) can be followed.
    diverging = tiny_config(data_dir, steps=12, checkpoint_every=4, eval_every=4)
    out = tmp_path / "later"
    train(tiny_config(data_dir, steps=4, checkpoint_every=4, eval_every=4), out, progress=False)
    diverging.train.lr = 1e30
    with pytest.raises(TrainingDiverged, match=r"the last checkpoint \(step 4\) in .* is intact") as e:
        train(diverging, out, resume=True, progress=False)
    assert "intact" in str(e.value) and "--resume --lr" in str(e.value)
    diverging.train.lr = 1e-3
    assert train(diverging, out, resume=True, progress=False)["step"] == 12


def test_resume_may_change_only_steps_lr_device_and_threads(tmp_path, data_dir):
    from sparse_circuits.runs import CONFIG_HISTORY_FILE

    out = tmp_path / "run"
    base = tiny_config(data_dir, steps=6, checkpoint_every=3, eval_every=3)
    train(base, out, progress=False)
    longer = tiny_config(data_dir, steps=9, lr=base.train.lr / 2, checkpoint_every=3, eval_every=3)
    assert train(longer, out, resume=True, progress=False)["step"] == 9
    history = [json.loads(line) for line in (out / CONFIG_HISTORY_FILE).read_text().splitlines()]
    assert history == [{"resumed_at_step": 6, "changes": {"train.lr": [base.train.lr, base.train.lr / 2],
                                                         "train.steps": [6, 9]}}]
    assert json.loads((out / "config.json").read_text())["train"]["steps"] == 9
    other = tiny_config(data_dir, steps=12, batch_size=2, checkpoint_every=3, eval_every=3)
    with pytest.raises(UserError, match=r"cannot change train.batch_size \(4 -> 2\)"):
        train(other, out, resume=True, progress=False)
    with pytest.raises(UserError, match="below the last checkpoint's step 9"):
        train(tiny_config(data_dir, steps=3, checkpoint_every=3, eval_every=3), out, resume=True, progress=False)
    assert len(history) == 1 and json.loads((out / "config.json").read_text())["train"]["steps"] == 9


def test_resume_restores_final_weights_a_killed_run_left_stale_or_missing(tmp_path, trained):
    """Killed after its last checkpoint but before its final weights: the final file still holds the
    previous checkpoint's weights (or none). Resuming, even with nothing left to train, puts the
    last checkpoint's weights there."""
    import shutil

    from sparse_circuits.fileio import read_safetensors

    out, cfg = trained
    last = read_safetensors(out / "checkpoints" / "step_00000012" / "model.safetensors", "w")
    for damage in ("stale", "missing"):
        copy = tmp_path / damage
        shutil.copytree(out, copy)
        if damage == "stale":
            shutil.copyfile(copy / "checkpoints" / "step_00000009" / "model.safetensors", copy / "model.safetensors")
        else:
            (copy / "model.safetensors").unlink()
        train(cfg, copy, resume=True, progress=False)
        final = read_safetensors(copy / "model.safetensors", "w")
        assert all(torch.equal(final[k], last[k]) for k in last), damage
        model, _ = load_model(copy)
        assert model is not None


def test_a_full_disk_during_training_leaves_no_half_checkpoint_and_the_run_resumes(tmp_path, data_dir, monkeypatch):
    """The disk fills while the second checkpoint is written: an OSError (the CLI's one-line error),
    no half-written checkpoint directory, and once there is room, --resume finishes the run."""
    import safetensors

    from sparse_circuits import fileio

    cfg = tiny_config(data_dir, steps=6, checkpoint_every=3, eval_every=3)
    out = tmp_path / "full"
    real_save, calls = fileio.save_file, []

    def save_until_full(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) > 3:  # the first checkpoint (weights, optimizer) and the final weights fit
            raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device")
        real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(fileio, "save_file", save_until_full)
    with pytest.raises(OSError, match="cannot write .*No space left on device"):
        train(cfg, out, progress=False)
    monkeypatch.setattr(fileio, "save_file", real_save)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_00000003"]
    assert not list(out.rglob("*.tmp"))
    assert train(cfg, out, resume=True, progress=False)["step"] == 6
    model, _ = load_model(out)
    assert model is not None


def test_a_torn_metrics_line_does_not_break_the_run_summary(tmp_path, trained):
    import shutil

    out, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open(copy / "metrics.jsonl", "a") as f:
        f.write('{"step": 13, "train_lo')  # a run killed mid-write
    assert Run(copy).summary().step == 12


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, trained):
    import shutil

    out, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt or not a safetensors file"):
        load_model(copy)


def test_mismatched_checkpoint_is_a_clear_error(tmp_path, trained, data_dir):
    import shutil

    out, _ = trained
    other = tmp_path / "other"
    cfg = tiny_config(data_dir, steps=2)
    cfg.model.d_mlp = 64
    train(cfg, other, progress=False)
    shutil.copyfile(other / "model.safetensors", tmp_path / "m.safetensors")
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shutil.copyfile(tmp_path / "m.safetensors", copy / "model.safetensors")
    with pytest.raises(UserError, match="different model config"):
        load_model(copy)
    # Same config hash but a tensor missing: strict key check.
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from sparse_circuits.fileio import CONTENT_DIGEST

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(out / "model.safetensors"))
    del tensors["lm_head.bias"]
    meta.pop(CONTENT_DIGEST)  # written by another tool: no digest to check, the structure check remains
    save_file(tensors, str(copy / "model.safetensors"), metadata=meta)
    with pytest.raises(UserError, match="missing \\['lm_head.bias'\\]"):
        load_model(copy)


def test_clip_grad_rms():
    p = [torch.nn.Parameter(torch.zeros(100)), torch.nn.Parameter(torch.zeros(300))]
    p[0].grad = torch.full((100,), 4.0)
    p[1].grad = torch.full((300,), 4.0)
    assert clip_grad_rms_(p, 1.0) == pytest.approx(4.0)
    assert torch.allclose(p[1].grad, torch.ones(300))
    p[0].grad = torch.full((100,), 0.5)
    p[1].grad = torch.full((300,), 0.5)
    clip_grad_rms_(p, 1.0)
    assert torch.allclose(p[0].grad, torch.full((100,), 0.5))  # below the limit: untouched


@pytest.mark.parametrize("positions", ["learned", "concat"])
def test_training_with_each_position_option(tmp_path, data_dir, positions):
    from sparse_circuits.config import Positions

    cfg = tiny_config(data_dir, steps=4, checkpoint_every=2, eval_every=2)
    cfg.model.positions = Positions(positions)
    cfg.sparsity.anneal_end = 0.0  # the target fraction from the first step
    final = train(cfg, tmp_path / positions, progress=False)
    assert final["step"] == 4
    model, _ = load_model(tmp_path / positions)
    if positions == "learned":
        wpe = model.wpe.weight
        assert torch.count_nonzero(wpe) == keep_count(cfg.sparsity.nonzero_frac, wpe.numel())
    else:
        # The read-only position channels are never projected: every entry stays nonzero,
        # while the weights that read them are at the target fraction.
        assert torch.count_nonzero(model.pos_channels) == model.pos_channels.numel()
        c_q = model.blocks[0].attn.c_q.weight
        assert c_q.shape[1] == cfg.model.d_model + cfg.model.d_pos
        assert torch.count_nonzero(c_q) <= keep_count(cfg.sparsity.nonzero_frac, c_q.numel()) + 4 * c_q.shape[0]


def test_weights_saved_before_positions_existed_still_load(tmp_path, trained):
    """Run directories from before `positions` replaced `learned_positions` keep working."""
    import hashlib
    import shutil

    from sparse_circuits.config import to_dict
    from sparse_circuits.fileio import read_safetensors, read_safetensors_metadata, write_safetensors

    out, cfg = trained
    old = tmp_path / "old"
    shutil.copytree(out, old)
    legacy = to_dict(cfg.model)
    legacy["learned_positions"] = legacy.pop("positions") == "learned"
    for later in ("d_pos", "norm_eps", "positions_at_input_site"):  # keys those versions did not have
        del legacy[later]
    meta = read_safetensors_metadata(old / "model.safetensors")
    meta["model_config_sha"] = hashlib.sha256(json.dumps(legacy, sort_keys=True).encode()).hexdigest()[:16]
    write_safetensors(old / "model.safetensors", read_safetensors(old / "model.safetensors", "w"), metadata=meta)
    saved = json.loads((old / "config.json").read_text())
    saved["model"] = legacy
    (old / "config.json").write_text(json.dumps(saved))
    model, loaded = load_model(old)
    assert loaded.model.positions.value == "none"
    meta["model_config_sha"] = "0" * 16  # anything else is still refused
    write_safetensors(old / "model.safetensors", read_safetensors(old / "model.safetensors", "w"), metadata=meta)
    with pytest.raises(UserError, match="different model config"):
        load_model(old)


def test_full_validation_loss_scores_every_window_of_the_split(trained):
    from sparse_circuits.train import full_validation_loss

    out, cfg = trained
    model, _ = load_model(out)
    data = TokenData(cfg.data_dir)
    context = cfg.model.context
    held_out = full_validation_loss(model, data, context, batch_size=3)
    n = (data.val.size - 1) // context
    assert held_out.tokens_scored == n * context
    # The same number, one window at a time through the model's own loss.
    tokens = torch.from_numpy(data.val[: n * context + 1].astype("int64"))
    windows = [tokens[i * context: (i + 1) * context + 1] for i in range(n)]
    with torch.no_grad():
        per_window = [float(lm_loss(model(w[None, :-1]), w[None, 1:])) for w in windows]
    assert held_out.nats_per_token == pytest.approx(sum(per_window) / n, rel=1e-5)
    meta = data.meta
    assert held_out.nats_per_char == pytest.approx(held_out.nats_per_token * meta.tokens.val
                                                   / meta.chars.val)


def test_a_damaged_means_cache_is_recomputed(tmp_path, trained):
    import pickle
    import shutil

    from sparse_circuits.circuits.means import load_or_compute_means

    out, cfg = trained
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    model, _ = load_model(copy)
    first = load_or_compute_means(model, copy, cfg.data_dir, n_batches=1, batch_size=2, progress=False)
    (copy / "means.safetensors").write_bytes(pickle.dumps({"not": "tensors"}))  # never unpickled
    said = []
    again = load_or_compute_means(model, copy, cfg.data_dir, n_batches=1, batch_size=2, progress=False,
                                  log=said.append)
    assert "recomputing" in said[0] and all(torch.equal(first[k], again[k]) for k in first)


def test_writes_clean_up_what_a_killed_write_left(tmp_path, trained):
    import shutil

    from sparse_circuits.fileio import write_json
    from sparse_circuits.train import build_optimizer

    stale = tmp_path / ".summary.json.abc123.tmp"
    stale.write_text("half")
    other = tmp_path / ".other.json.abc123.tmp"  # another file's: not ours to remove
    other.write_text("half")
    write_json(tmp_path / "summary.json", {"a": 1})
    assert not stale.exists() and other.exists()
    assert json.loads((tmp_path / "summary.json").read_text()) == {"a": 1}

    out, cfg = trained
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "checkpoints" / ".step_14.xyz").mkdir()
    model, _ = load_model(copy)
    opt, names = build_optimizer(model, cfg)
    Run(copy).save_checkpoint(model, opt, names, {"step": 14, "window_loss": 0.0, "window_steps": 0, "elapsed_s": 0.0})
    assert not (copy / "checkpoints" / ".step_14.xyz").exists()
    assert (copy / "checkpoints" / "step_00000014" / "state.json").is_file()


def test_load_model_runs_sparse_weights_sparsely(trained, data_dir):
    out, _ = trained
    model, _ = load_model(out, sparse_threshold=1.0)
    dense, _ = load_model(out, sparse_threshold=0.0)
    assert model.lm_head.sparse is not None and dense.lm_head.sparse is None
    x, _ = TokenData(data_dir).batch("val", 2, 16, seed=0, index=0)
    with torch.no_grad():
        torch.testing.assert_close(model(x), dense(x), rtol=1e-5, atol=1e-5)


def test_bf16_products_keep_float32_weights_and_nearly_the_same_loss(tmp_path, data_dir):
    """bf16 autocast changes the products only: the loss stays within a tolerance of fp32, weights,
    optimizer state, the projection and checkpoints stay float32, and evaluation runs as trained."""
    from safetensors import safe_open

    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        train(tiny_config(data_dir, precision=precision), out, progress=False)
        runs[precision] = out
    losses = {p: [r["train_loss"] for r in metrics(out) if "train_loss" in r] for p, out in runs.items()}
    assert losses["fp32"] != losses["bf16"]  # the products did change precision
    for a, b in zip(losses["fp32"], losses["bf16"]):
        assert abs(a - b) < 0.05 * a
    for name in ("model.safetensors", "checkpoints/step_00000012/model.safetensors",
                 "checkpoints/step_00000012/optimizer.safetensors"):
        with safe_open(str(runs["bf16"] / name), "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} <= {"F32", "I64", "F64"}, name
    model, cfg = load_model(runs["bf16"])
    assert cfg.train.precision.value == "bf16" and model.compute_dtype == torch.bfloat16
    frac = cfg.sparsity.nonzero_frac
    for name, p in model.sparsified_parameters().items():
        assert p.dtype == torch.float32 and int(torch.count_nonzero(p)) <= keep_count(frac, p.numel()) + 4 * p.shape[0], name
    x = TokenData(data_dir).batch("val", 2, cfg.model.context, 0, 0)[0]
    logits = model(x)
    assert logits.dtype == torch.float32
    model.compute_dtype = None
    assert torch.allclose(logits, model(x), atol=0.15, rtol=0.05)  # bf16 products: ~3 significant digits
