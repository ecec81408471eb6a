"""Data-parallel training through torchrun: two CPU processes on gloo match one process."""

import json
import os
import subprocess
import sys

import torch

from sparse_circuits.runs import load_model
from sparse_circuits.config import to_dict
from sparse_circuits.train import train

from conftest import tiny_config


def test_two_process_ddp_matches_single_process(tmp_path, data_dir):
    cfg = tiny_config(data_dir, steps=6, batch_size=4, checkpoint_every=3, eval_every=3)
    single = tmp_path / "single"
    train(cfg, single, progress=False)

    cfg_file = tmp_path / "cfg.json"
    overrides = to_dict(cfg)
    overrides.pop("preset")
    cfg_file.write_text(json.dumps(overrides))
    ddp = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "sparse_circuits.cli", "train", "--data", str(data_dir), "--preset", "tiny",
         "--config", str(cfg_file), "--out", str(ddp)],
        capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    a, _ = load_model(single)
    b, _ = load_model(ddp)
    # Each process takes half of the same global batch; DDP averages the gradients.
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5, msg=name)
    ms = [json.loads(l) for l in (single / "metrics.jsonl").read_text().splitlines()]
    md = [json.loads(l) for l in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in ms] == [m["step"] for m in md]
    assert ms[-1]["processes"] == 1 and md[-1]["processes"] == 2
    assert abs(ms[-1]["train_loss"] - md[-1]["train_loss"]) < 1e-3


def test_bridged_training_runs_data_parallel(tmp_path, data_dir):
    """Bridges under torchrun: two processes train the sparse model and the bridges together. The
    NMSE normaliser is each process's own half batch, so the result is close to one process's, not equal."""
    from sparse_circuits.bridges import BridgeConfig, train_bridged
    from sparse_circuits.fileio import read_safetensors

    dense_cfg = tiny_config(data_dir, steps=3, batch_size=4)
    dense_cfg.sparsity.nonzero_frac = 1.0
    dense = tmp_path / "dense"
    train(dense_cfg, dense, progress=False)
    cfg = tiny_config(data_dir, steps=4, batch_size=4, checkpoint_every=2, eval_every=2)
    single = tmp_path / "single"
    train_bridged(cfg, dense, single, BridgeConfig(eval_batches=1), progress=False)

    cfg_file, bridge_file = tmp_path / "cfg.json", tmp_path / "bridge.json"
    overrides = to_dict(cfg)
    overrides.pop("preset")
    cfg_file.write_text(json.dumps(overrides))
    bridge_file.write_text(json.dumps({"eval_batches": 1}))
    ddp = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "sparse_circuits.cli", "bridge", "--dense-run", str(dense), "--data", str(data_dir), "--preset", "tiny",
         "--config", str(cfg_file), "--bridge-config", str(bridge_file), "--out", str(ddp)],
        capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = read_safetensors(single / "bridges.safetensors", "a"), read_safetensors(ddp / "bridges.safetensors", "b")
    assert a.keys() == b.keys()
    for name in a:  # moved from zero by the same updates, up to the per-process normaliser
        assert float(a[name].abs().sum()) > 0
        torch.testing.assert_close(a[name], b[name], rtol=0.1, atol=2e-2, msg=name)
    md = [json.loads(l) for l in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert md[-1]["processes"] == 2 and "bridges" in md[-1]
