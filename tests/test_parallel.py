"""Trainings side by side, one thread each (parallel.py): the same runs as one after the other."""

import shutil

import pytest
import torch

from sparse_circuits.runs import load_model
from sparse_circuits.errors import UserError
from sparse_circuits.parallel import TrainJob, one_thread, side_by_side_workers, train_side_by_side
from sparse_circuits.train import train

from conftest import tiny_config


def test_two_runs_side_by_side_equal_the_same_runs_one_after_the_other(tmp_path, data_dir):
    cfgs = [one_thread(tiny_config(data_dir, seed=0)),
            one_thread(tiny_config(data_dir, seed=1))]
    cfgs[1].sparsity.nonzero_frac = 1.0  # a sparse and a dense run, as in the demo
    for i, cfg in enumerate(cfgs):
        train(cfg, tmp_path / f"alone{i}", progress=False)
    finals = train_side_by_side([TrainJob(cfg, tmp_path / f"beside{i}", False) for i, cfg in enumerate(cfgs)],
                                workers=2, progress=False)
    assert [f["step"] for f in finals] == [cfg.train.steps for cfg in cfgs]
    for i in range(2):
        a, cfg_a = load_model(tmp_path / f"alone{i}")
        b, cfg_b = load_model(tmp_path / f"beside{i}")
        assert cfg_b.train.threads == 1 and cfg_a == cfg_b
        for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(pa, pb), (i, name)


def test_a_failing_run_is_a_one_line_error_naming_it_and_the_other_finishes(tmp_path, data_dir):
    good = tiny_config(data_dir)
    shutil.copytree(data_dir, tmp_path / "data")
    bad = tiny_config(tmp_path / "data")
    (tmp_path / "data" / "train.bin").unlink()  # checked when its run starts
    with pytest.raises(UserError, match=r"^run-b: .*train.bin: missing"):
        train_side_by_side([TrainJob(good, tmp_path / "a", False), TrainJob(bad, tmp_path / "b", False)],
                           workers=2, progress=False, names=["run-a", "run-b"])
    assert (tmp_path / "a" / "model.safetensors").is_file()


def test_workers_follow_the_cores_and_the_device():
    assert side_by_side_workers("cuda", 4) == 1
    assert 1 <= side_by_side_workers("cpu", 2) <= 2
    assert side_by_side_workers("cpu", 1) == 1
