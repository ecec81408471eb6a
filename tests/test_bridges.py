"""Bridges: the objective's terms, identity bridges, steering, resume, and the commands."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sparse_circuits.bridges import BridgeConfig, Bridged, Bridges, bridge_quality, train_bridged
from sparse_circuits.bridges.core import kl_from_dense, nmse
from sparse_circuits.bridges.run import BridgedPair
from sparse_circuits.bridges.steer import mapped_perturbation, residual_site_of
from sparse_circuits.config import ModelConfig
from sparse_circuits.errors import UserError
from sparse_circuits.hooks import Hooks
from sparse_circuits.model import GPT
from sparse_circuits.nodes import NodeId, NodeLocation
from sparse_circuits.train import train

from conftest import tiny_config
from test_cli import assert_one_line_error, cli


def tiny_gpt(seed: int, d_model: int = 32) -> GPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(n_layer=2, d_model=d_model, d_head=16, d_mlp=64, context=16, vocab_size=50)
    return GPT(cfg, torch.randn(50, 50).log_softmax(-1)).eval()


def frozen(model: GPT) -> GPT:
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 50, (3, 12), generator=g)
    return x, torch.randint(0, 50, (3, 12), generator=g)


def test_model_has_residual_sites_that_do_not_change_the_forward():
    model = tiny_gpt(0)
    assert list(model.residual_sites()) == ["0.resid_pre", "0.resid_mid", "1.resid_pre", "1.resid_mid"]
    assert not set(model.residual_sites()) & set(model.node_sites()) and not set(model.residual_sites()) & set(
        model.norm_sites())
    x, _ = batch()
    with torch.no_grad():
        plain = model(x)
        cache = {}
        recorded = model(x, Hooks().record(list(model.residual_sites()), cache))
    assert torch.equal(plain, recorded)
    torch.testing.assert_close(cache["0.resid_pre"], model.wte(x))  # after the embedding


def identity_bridges(sites, d: int) -> Bridges:
    b = Bridges(sites, d, d, encoder_topk=1.0)
    with torch.no_grad():
        for m in list(b.encoders.values()) + list(b.decoders.values()):
            m.weight.copy_(torch.eye(d))
            m.bias.zero_()
    return b


def test_identity_bridges_between_equal_models_cost_nothing():
    sparse = tiny_gpt(0)
    dense = frozen(copy.deepcopy(sparse))
    bridged = Bridged(sparse, identity_bridges(list(sparse.residual_sites()), 32), dense, BridgeConfig(encoder_topk=1.0))
    q = bridge_quality(bridged, [batch(0), batch(1)])
    for key in ("nmse_sparse_to_dense", "nmse_dense_to_sparse", "kl_dense_to_sparse", "kl_sparse_to_dense"):
        assert max(abs(v) for v in getattr(q, key).values()) < 1e-5, key
    assert abs(q.sparse_loss - q.dense_loss) < 1e-5
    for site in sparse.residual_sites():
        assert abs(q.loss_dense_to_sparse[site] - q.dense_loss) < 1e-4


def test_objective_is_lm_plus_each_term_and_trains_only_sparse_and_bridges():
    sparse, dense = tiny_gpt(0), frozen(tiny_gpt(1, d_model=48))
    sites = list(sparse.residual_sites())
    bridges = Bridges(sites, 48, 32, encoder_topk=0.25)
    cfg = BridgeConfig(nmse_coef=0.7, kl_coef=0.3)
    bridged = Bridged(sparse, bridges, dense, cfg)
    x, y = batch()
    loss = bridged(x, targets=y)
    # The same sum, written out independently: residuals by hooks, plain cross-entropy and KL.
    with torch.no_grad():
        d_res, s_res = {}, {}
        d_logits = dense(x, Hooks().record(sites, d_res))
        s_logits = sparse(x, Hooks().record(sites, s_res))
        expect = F.cross_entropy(s_logits.flatten(0, 1), y.flatten())
        for s in sites:
            dec, enc = bridges.decode(s, s_res[s]), bridges.encode(s, d_res[s])
            assert (enc != 0).sum(-1).max() <= 8  # AbsTopK: a quarter of 32 channels
            fvu = lambda p, t: ((p - t) ** 2).sum(-1).mean() / ((t - t.reshape(-1, t.shape[-1]).mean(0)) ** 2).sum(-1).mean()
            expect += 0.7 * (fvu(dec, d_res[s]) + fvu(enc, s_res[s]))
            h1 = sparse(x, Hooks().add(s, lambda _x, v=enc: v))
            h2 = dense(x, Hooks().add(s, lambda _x, v=dec: v))
            for h in (h1, h2):
                kl = F.kl_div(h.log_softmax(-1).flatten(0, 1), d_logits.log_softmax(-1).flatten(0, 1),
                              log_target=True, reduction="batchmean")
                expect += 0.3 * kl
    torch.testing.assert_close(loss.detach(), expect, rtol=1e-4, atol=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in bridges.parameters())
    assert sparse.blocks[0].attn.c_q.weight.grad is not None
    assert all(p.grad is None for p in dense.parameters())


def test_nmse_and_kl_helpers():
    t = torch.randn(4, 5, 6)
    assert float(nmse(t, t)) == 0.0
    mean_pred = t.reshape(-1, 6).mean(0).expand_as(t)
    assert abs(float(nmse(mean_pred, t)) - 1.0) < 1e-5  # predicting the mean explains nothing
    logits = torch.randn(2, 3, 7)
    assert abs(float(kl_from_dense(logits, logits))) < 1e-6


def test_switch_sites_are_a_function_of_seed_and_step():
    sparse = tiny_gpt(0)
    bridged = Bridged(sparse, Bridges(list(sparse.residual_sites()), 32, 32, 0.25), frozen(tiny_gpt(1)),
                      BridgeConfig(switches_per_step=1), seed=3)
    assert bridged.switch_sites(5) == bridged.switch_sites(5)
    assert len({tuple(bridged.switch_sites(s)) for s in range(20)}) > 1
    assert len(bridged.switch_sites(0)) == 1


def test_residual_site_of_nodes():
    assert residual_site_of(NodeId(1, NodeLocation.ATTN_IN, 3), 2) == "1.resid_pre"
    assert residual_site_of(NodeId(0, NodeLocation.ATTN_OUT, 3), 2) == "0.resid_mid"
    assert residual_site_of(NodeId(0, NodeLocation.MLP_OUT, 3), 2) == "1.resid_pre"
    with pytest.raises(UserError, match="last MLP"):
        residual_site_of(NodeId(1, NodeLocation.MLP_OUT, 3), 2)
    with pytest.raises(UserError, match="residual channel"):
        residual_site_of(NodeId(0, NodeLocation.ATTN_Q, 3), 2)


def planted_pair(tmp_path: Path) -> BridgedPair:
    sparse, dense = frozen(tiny_gpt(0)), frozen(tiny_gpt(1, d_model=48))
    bridges = Bridges(list(sparse.residual_sites()), 48, 32, 0.25)
    with torch.no_grad():  # decoder of 0.resid_mid: sparse channel 5 -> dense channel 7, nothing else
        dec = bridges.decoders["0_resid_mid"]
        dec.weight.zero_()
        dec.weight[7, 5] = 2.0
    return BridgedPair(sparse, bridges, dense, BridgeConfig(), tmp_path)


def test_planted_decoder_steers_exactly_its_dense_channel(tmp_path):
    pair = planted_pair(tmp_path)
    a, c = batch(0)[0][:1], batch(1)[0][:1]
    delta = mapped_perturbation(pair, "0.resid_mid", 5, a, c)
    assert delta.shape == (12, 48)
    others = torch.ones(48, dtype=torch.bool)
    others[7] = False
    assert torch.count_nonzero(delta[:, others]) == 0 and torch.count_nonzero(delta[:, 7]) > 0
    s_a, s_c = {}, {}
    pair.sparse(a, Hooks().record(["0.resid_mid"], s_a))
    pair.sparse(c, Hooks().record(["0.resid_mid"], s_c))
    diff = s_c["0.resid_mid"][0, :, 5] - s_a["0.resid_mid"][0, :, 5]
    moving = diff.abs() > 1e-6
    assert moving.sum() > 3 and torch.count_nonzero(delta[~moving, 7]) == 0
    ratio = delta[moving, 7] / (2.0 * diff[moving])
    assert torch.allclose(ratio, ratio[0].expand_as(ratio))  # one RMS rescaling factor for the prompt
    # The dense residual at the site moves by strength x Delta in channel 7 only.
    before, after = {}, {}
    pair.dense(a, Hooks().record(["0.resid_mid"], before))
    hooks = Hooks().add("0.resid_mid", lambda x: x + 0.5 * delta[None]).record(["0.resid_mid"], after)
    with torch.no_grad():
        steered = pair.dense(a, hooks)
        zero = pair.dense(a, Hooks().add("0.resid_mid", lambda x: x + 0.0 * delta[None]))
    moved = after["0.resid_mid"] - before["0.resid_mid"]
    torch.testing.assert_close(moved[0], 0.5 * delta)
    assert torch.equal(zero, pair.dense(a))  # strength 0 changes nothing
    assert not torch.equal(steered, zero)


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("bridges") / "dense"
    cfg = tiny_config(data_dir, steps=6)
    cfg.sparsity.nonzero_frac = 1.0
    train(cfg, out, progress=False)
    return out


def bridged_config(data_dir, steps: int = 6):
    cfg = tiny_config(data_dir, steps=steps, checkpoint_every=2)
    return cfg


def test_bridged_training_resumes_bit_exactly(tmp_path, data_dir, dense_run):
    from sparse_circuits.fileio import read_safetensors

    bcfg = BridgeConfig(switches_per_step=1, eval_batches=1)
    full = tmp_path / "full"
    train_bridged(bridged_config(data_dir), dense_run, full, bcfg, progress=False)

    killed = tmp_path / "killed"

    class Kill(Exception):
        pass

    def die(step, _):
        if step == 4:
            raise Kill

    from sparse_circuits.bridges.run import coupling, load_dense
    with pytest.raises(Kill):
        train(bridged_config(data_dir), killed, on_step=die, progress=False,
              couple=coupling(load_dense(dense_run), bcfg, 0))
    train_bridged(bridged_config(data_dir), dense_run, killed, bcfg, resume=True, progress=False)
    for name in ("model.safetensors", "bridges.safetensors"):
        a, b = read_safetensors(full / name, name), read_safetensors(killed / name, name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    quality = json.loads((full / "bridge_quality.json").read_text())
    assert set(quality["nmse_sparse_to_dense"]) == {"0.resid_pre", "0.resid_mid", "1.resid_pre", "1.resid_mid"}
    assert json.loads((full / "bridges.json").read_text())["bridge"]["switches_per_step"] == 1
    pair = BridgedPair.load(full)
    assert pair.bridges.sites == list(pair.sparse.residual_sites())


def test_only_the_main_process_writes_the_bridge_files(tmp_path, data_dir, dense_run, monkeypatch):
    """Under torchrun every rank runs train_bridged; a second writer of bridges.json would race the first
    (each atomic write removes the other's temporary file as stale), so ranks other than 0 write nothing."""
    import sparse_circuits.bridges.run as bridge_run
    from sparse_circuits.train import Distributed

    monkeypatch.setattr(bridge_run, "init_distributed", lambda device: Distributed(rank=1, world=2))
    out = tmp_path / "rank1"
    train_bridged(bridged_config(data_dir, steps=2), dense_run, out, BridgeConfig(eval_batches=1), progress=False)
    assert (out / "model.safetensors").is_file()  # training itself ran (as the only process here)
    assert not (out / "bridges.json").exists() and not (out / "bridge_quality.json").exists()
    assert not list(out.glob(".*.tmp"))


def test_mismatched_models_are_refused(tmp_path, data_dir, dense_run, corpus_dir):
    from sparse_circuits.data import prepare_data

    cfg = bridged_config(data_dir)
    cfg.model.n_layer = 3
    with pytest.raises(UserError, match="layers"):
        train_bridged(cfg, dense_run, tmp_path / "x", progress=False)
    other = tmp_path / "other-data"
    prepare_data(str(corpus_dir), other, vocab_size=300, val_frac=0.2, seed=0, log=lambda *_: None)
    cfg = tiny_config(other)
    with pytest.raises(UserError, match="tokenized differently"):
        train_bridged(cfg, dense_run, tmp_path / "y", progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    sparse = tmp_path / "sparse"  # a weight-sparse run given as the dense one
    train(tiny_config(data_dir, steps=2), sparse, progress=False)
    with pytest.raises(UserError, match="is weight-sparse"):
        train_bridged(bridged_config(data_dir), sparse, tmp_path / "z", progress=False)
    assert not (tmp_path / "z").exists()


def test_bridge_steer_and_through_bridge_commands(tmp_path, data_dir, dense_run):
    run = tmp_path / "bridged"
    bcfg = tmp_path / "b.json"
    bcfg.write_text(json.dumps({"switches_per_step": 1, "eval_batches": 1}))
    opts = tmp_path / "o.json"
    opts.write_text(json.dumps({"train": {"threads": 1, "eval_every": 3, "checkpoint_every": 3}}))
    r = cli("bridge", "--dense-run", dense_run, "--data", data_dir, "--preset", "tiny", "--out", run, "--steps", 3,
            "--config", opts, "--bridge-config", bcfg)
    assert r.returncode == 0, r.stderr
    r = cli("steer", "--model", run, "--task", "for_while", "--node", "0.attn.resid_delta:3", "--pairs", 6)
    assert r.returncode == 0, r.stderr
    saved = json.loads((run / "steering" / "for_while--0.attn.resid_delta_3.json").read_text())
    assert saved["strengths"][0] == 0.0 and len(saved["p_counterfactual_answer"]) == len(saved["strengths"])
    # strength 0: channel and control runs are the same unperturbed dense model
    assert saved["p_counterfactual_answer"][0] == pytest.approx(saved["control_p_counterfactual_answer"][0])
    assert (run / "steering" / "for_while--0.attn.resid_delta_3.png").stat().st_size > 1000
    circuit = tmp_path / "circuit"
    r = cli("prune", "--model", run, "--task", "for_while", "--out", circuit, "--target-loss", 2.0,
            "--steps", 5, "--budget", 1, "--pairs", 8)
    assert r.returncode == 0, r.stderr
    r = cli("through-bridge", "--model", run, circuit, "--pairs", 8)
    assert r.returncode == 0, r.stderr
    through = json.loads((circuit / "through_bridge.json").read_text())
    assert set(through["by_site"]) == {"0.resid_pre", "0.resid_mid", "1.resid_pre", "1.resid_mid"}
    r = cli("report", "--model", run, circuit, "--out", tmp_path / "site", "--windows", 8)
    assert r.returncode == 0, r.stderr
    index = (tmp_path / "site" / "index.html").read_text()
    assert "<h2>Bridges</h2>" in index and "0.resid_mid" in index and 'alt="steering for_while' in index
    assert_one_line_error(cli("steer", "--model", dense_run, "--task", "for_while", "--node", "0.attn.q:1"),
                          "not a bridged run")
    assert_one_line_error(cli("bridge", "--dense-run", dense_run, "--data", data_dir, "--preset", "tiny",
                              "--out", tmp_path / "z", "--bridge-config", opts), "unknown key")


def test_bridges_train_in_their_own_group_and_clip(data_dir):
    """Bridges: their own learning rate (lr_mult x the model's) and their own gradient clip, so that
    their large early gradients leave the model's LM gradient alone."""
    from sparse_circuits.data import TokenData
    from sparse_circuits.train import Distributed, Trainer, build_optimizer

    cfg = tiny_config(data_dir, steps=4)
    data = TokenData(cfg.data_dir)
    torch.manual_seed(0)
    sparse = GPT(cfg.model, data.bigram_logprobs())
    dense = frozen(GPT(cfg.model, data.bigram_logprobs()))
    bridged = Bridged(sparse, Bridges(list(sparse.residual_sites()), 32, 32, 0.25), dense, BridgeConfig(lr_mult=7.0))
    opt, names = build_optimizer(sparse, cfg, bridged.extra_modules(), bridged.lr_mults())
    trainer = Trainer(cfg, sparse, bridged, opt, names, data, Distributed(), torch.device("cpu"), bridged)
    assert len(trainer.clip_groups) == 2 and len(trainer.clip_groups[1]) == len(list(bridged.bridges.parameters()))
    assert all(float(p.detach().abs().sum()) == 0 for p in bridged.bridges.parameters())  # bridges start at zero
    trainer.step(1)
    assert opt.param_groups[2]["lr"] == pytest.approx(7.0 * opt.param_groups[0]["lr"])
    assert opt.param_groups[2]["weight_decay"] == 0.0
    assert any(float(p.detach().abs().sum()) > 0 for p in bridged.bridges.parameters())
