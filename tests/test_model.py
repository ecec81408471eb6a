import math

import pytest
import torch

from sparse_circuits.config import BigramTable, ModelConfig, NodeLocation, Positions
from sparse_circuits.errors import UserError
from sparse_circuits.hooks import Hooks, abs_topk, kth_largest_last_dim
from sparse_circuits.model import GPT, attend, attention_pattern


def small_model(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, d_model=32, d_head=8, d_mlp=64, context=16, vocab_size=50, **kw)
    model = GPT(cfg, bigram_logprobs=torch.randn(50, 50).log_softmax(-1)).eval()
    # Give biases and sinks nonzero values so they are exercised.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "sink" in name:
                p.normal_(0, 0.5)
    return model


def tokens(batch=3, T=16, vocab=50):
    return torch.randint(0, vocab, (batch, T), generator=torch.Generator().manual_seed(1))


def test_abs_topk_keeps_k_largest_magnitudes():
    x = torch.randn(5, 7, 40)
    y = abs_topk(x, 10)
    assert (torch.count_nonzero(y, dim=-1) == 10).all()
    kept = y != 0
    assert torch.equal(y[kept], x[kept])
    smallest_kept = x.abs().masked_fill(~kept, float("inf")).amin(-1)
    largest_dropped = x.abs().masked_fill(kept, 0.0).amax(-1)
    assert (smallest_kept >= largest_dropped).all()
    assert torch.equal(abs_topk(x, 40), x)
    # The gradient passes through the kept entries only, unchanged.
    xg = x.clone().requires_grad_()
    abs_topk(xg, 10).mul(torch.arange(40.0)).sum().backward()
    assert torch.equal(xg.grad, kept * torch.arange(40.0))


@pytest.mark.parametrize("shape, k", [((3, 7, 64), 16), ((5, 80), 20), ((2, 4, 256), 64), ((9, 13), 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_fast_row_selection_is_torch_topk_exactly(shape, k, dtype):
    """kth_largest_last_dim (numpy's introselect on the CPU) picks the same entry as torch.topk,
    ties and zeros included."""
    x = torch.randn(shape).to(dtype)
    x[..., :4] = x[..., 4:5]  # ties at some rows' threshold
    x.view(-1, shape[-1])[0] = 0.0  # an all-zero row
    m = x.abs()
    expected = m.topk(k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
    got = kth_largest_last_dim(m, k)
    assert got.dtype == m.dtype and torch.equal(got, expected)
    y = abs_topk(x, k)
    assert torch.equal(y, torch.where(m >= expected, x, 0.0))  # (-0.0 == 0.0)


def test_activation_sparsity_at_every_site():
    model = small_model()
    _, cache = model.run_with_cache(tokens())
    assert len(cache) == 2 * 8
    for name, site in model.node_sites().items():
        assert cache[name].shape[-1] == site.width
        assert (torch.count_nonzero(cache[name], dim=-1) <= site.topk_k).all(), name


def test_sites_follow_public_names():
    model = small_model()
    expected = {f"{layer}.{loc.value}" for layer in range(2) for loc in NodeLocation}
    assert set(model.node_sites()) == expected
    norms = {"0.ln_1.scale", "0.ln_2.scale", "1.ln_1.scale", "1.ln_2.scale", "ln_f.scale"}
    residual = {"0.resid_pre", "0.resid_mid", "1.resid_pre", "1.resid_mid"}
    assert set(model.norm_sites()) == norms and set(model.residual_sites()) == residual
    assert set(model.hook_sites()) == expected | norms | residual
    assert {"0.attn.act_in", "1.mlp.post_act", "1.attn.resid_delta"} <= expected


def test_node_ids_have_one_text_form_and_sort_in_forward_order():
    from sparse_circuits.nodes import NodeId, parse_site

    node = NodeId.parse("1.attn.v:21")
    assert (node.layer, node.location, node.index) == (1, NodeLocation.ATTN_V, 21)
    assert str(node) == "1.attn.v:21" and node.site == "1.attn.v" and NodeId.at("1.attn.v", 21) == node
    shuffled = [NodeId.parse(t) for t in ("1.attn.act_in:0", "0.mlp.resid_delta:2", "0.attn.q:9", "0.attn.q:3")]
    assert [str(n) for n in sorted(shuffled)] == ["0.attn.q:3", "0.attn.q:9", "0.mlp.resid_delta:2", "1.attn.act_in:0"]
    assert [loc for loc in NodeLocation if loc.reads_residual] == [NodeLocation.ATTN_IN, NodeLocation.MLP_IN]
    assert [loc for loc in NodeLocation if loc.writes_residual] == [NodeLocation.ATTN_OUT, NodeLocation.MLP_OUT]
    for bad in ("0.attn.v", "0.attn.w:1", "x.attn.v:1", "0.attn.v:-1"):
        with pytest.raises(UserError, match="not a node"):
            NodeId.parse(bad)
    with pytest.raises(UserError, match="not a node site"):
        parse_site("ln_f.scale")


def test_block_wiring_names_real_weights_between_node_sites():
    model = small_model(positions=Positions.CONCAT, d_pos=4)
    widths = {name: site.width for name, site in model.node_sites().items()}
    block = model.blocks[0]
    wiring = block.wiring()
    assert len(wiring) == 6
    for weight, src, dst in wiring:
        # rows: destination channels; columns: source channels (+ read-only position channels)
        assert weight.shape[0] == widths[f"0.{dst.value}"]
        assert weight.shape[1] in (widths[f"0.{src.value}"], widths[f"0.{src.value}"] + 4)
    assert wiring[3][0] is block.attn.c_proj.weight and wiring[3][1] == NodeLocation.ATTN_V


def test_topk_only_at_configured_locations():
    model = small_model(activation_topk={NodeLocation.MLP_NEURON: 0.125})
    sites = model.hook_sites()
    assert sites["0.mlp.post_act"].topk_k == 8
    assert sites["0.attn.q"].topk_k is None


def direct_sink_attention(q, k, v, sink):
    """Softmax over [sink slot, causal keys] written out, with the sink's value zero."""
    probs = attention_pattern(q, k, sink)
    return probs[..., 1:] @ v, probs[..., 0]


def test_sink_attention_matches_direct_computation():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 4, generator=g) for _ in range(3))
    sink = torch.tensor([-1.0, 0.0, 3.0], requires_grad=True)
    ours = attend(q, k, v, sink)
    ref, sink_prob = direct_sink_attention(q, k, v, sink)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    # A large sink logit makes the head attend to nothing.
    assert sink_prob[:, 2].mean() > sink_prob[:, 0].mean()
    ours.sum().backward()
    assert sink.grad is not None and sink.grad.abs().sum() > 0
    # Without a sink it is plain causal attention.
    plain, no_sink = direct_sink_attention(q, k, v, None)
    torch.testing.assert_close(attend(q, k, v, None), plain, rtol=1e-5, atol=1e-6)
    assert no_sink.abs().max() == 0


def test_hooked_forward_equals_plain_forward():
    model = small_model()
    x = tokens()
    plain = model(x)
    logits, cache = model.run_with_cache(x)
    assert torch.equal(plain, logits)
    hooks = Hooks()
    for name in model.hook_sites():
        hooks.add(name, lambda a: a)
        hooks.add(name, lambda a: a.clone())
    assert torch.equal(model.run_with_hooks(x, hooks), plain)


def test_interventions_change_the_output_and_compose_in_order():
    model = small_model()
    x = tokens()
    plain = model(x)
    zeroed = model.run_with_hooks(x, Hooks().add("1.mlp.post_act", torch.zeros_like))
    assert not torch.allclose(zeroed, plain)
    # A recorder added after an intervention sees the intervened value.
    store = {}
    hooks = Hooks().add("0.attn.v", lambda a: a * 2).record(["0.attn.v"], store)
    _, clean = model.run_with_cache(x, ["0.attn.v"])
    model.run_with_hooks(x, hooks)
    torch.testing.assert_close(store["0.attn.v"], clean["0.attn.v"] * 2)


def test_rmsnorm_matches_torch_and_its_scale_can_be_frozen():
    model = small_model()
    x = torch.randn(2, 5, 32)
    ref = torch.nn.functional.rms_norm(x, (32,), model.ln_f.weight, 1e-5)
    torch.testing.assert_close(model.ln_f(x, None), ref)
    store = {}
    model.ln_f(x, Hooks().record(["ln_f.scale"], store))
    # Freezing the scale recorded on x makes the norm linear in its input.
    frozen = Hooks().add("ln_f.scale", lambda s: store["ln_f.scale"])
    torch.testing.assert_close(model.ln_f(0.01 * x, frozen), 0.01 * ref)


def test_logits_at_one_position_per_row():
    model = small_model()
    x = tokens()
    at = torch.tensor([15, 3, 0])
    torch.testing.assert_close(model(x, logits_at=at), model(x)[torch.arange(3), at])


def test_unknown_site_is_an_error():
    model = small_model()
    with pytest.raises(UserError, match="unknown hook site '0.attn.query'"):
        model.run_with_hooks(tokens(), Hooks().add("0.attn.query", lambda a: a))


def test_bigram_table_is_added_at_the_current_token():
    fixed = small_model(bigram_table=BigramTable.FIXED)
    none = small_model(bigram_table=BigramTable.NONE)
    none.load_state_dict({k: v for k, v in fixed.state_dict().items() if k != "bigram"})
    x = tokens()
    torch.testing.assert_close(fixed(x) - none(x), fixed.bigram[x])
    assert "bigram" not in dict(fixed.named_parameters())
    learnable = small_model(bigram_table=BigramTable.LEARNABLE)
    assert "bigram" in dict(learnable.named_parameters())


def test_learned_positions_are_an_option_and_sparsified():
    model = small_model(positions=Positions.LEARNED)
    assert "wpe.weight" in model.sparsified_parameters()
    model_np = small_model()
    assert "wpe.weight" not in model_np.sparsified_parameters()


def test_concatenated_positions_are_read_only_channels():
    model = small_model(positions=Positions.CONCAT, d_pos=8)
    names = set(model.sparsified_parameters())
    # The position table is never weight-projected; the weights that read it are.
    assert "pos_channels" not in names and "blocks.0.attn.c_q.weight" in names
    assert model.blocks[0].attn.c_q.weight.shape == (32, 32 + 8)
    assert model.blocks[1].mlp.c_fc.weight.shape == (64, 32 + 8)
    x = tokens()
    _, cache = model.run_with_cache(x)
    # Nothing writes the position channels: every residual read and write keeps d_model channels.
    for name, act in cache.items():
        if name.endswith(("act_in", "resid_delta")):
            assert act.shape[-1] == 32, name
    # Positions change the logits (the channels are read) ...
    with torch.no_grad():
        before = model(x)
        model.pos_channels.add_(torch.randn_like(model.pos_channels))
        assert not torch.allclose(before, model(x))
    # ... and a prefix's logits do not depend on what follows (causality holds with the extra reads).
    torch.testing.assert_close(model(x[:, :5]), model(x)[:, :5])


def test_legacy_learned_positions_key_still_loads():
    from sparse_circuits.config import run_config_from_dict, to_dict, RunConfig

    data = to_dict(RunConfig())
    del data["model"]["positions"]
    data["model"]["learned_positions"] = True
    assert run_config_from_dict(data).model.positions == Positions.LEARNED


def test_sparsified_parameters_exclude_gains_sinks_bigram():
    names = set(small_model(bigram_table=BigramTable.LEARNABLE).sparsified_parameters())
    assert "wte.weight" in names and "lm_head.weight" in names and "lm_head.bias" in names
    assert "blocks.0.attn.c_q.bias" in names and "blocks.1.mlp.c_proj.weight" in names
    assert not any("ln_" in n or "sink" in n or "bigram" in n for n in names)


def test_init_scales():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=4, d_model=256, d_head=16, d_mlp=1024, context=8, vocab_size=100)
    model = GPT(cfg)
    assert model.blocks[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].mlp.c_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(8), rel=0.05)
    assert model.blocks[0].attn.c_q.bias.abs().sum() == 0


def test_context_overflow_is_an_error():
    model = small_model()
    with pytest.raises(ValueError, match="exceeds the model's context"):
        model(torch.zeros(1, 17, dtype=torch.long))
