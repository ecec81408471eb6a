"""Every fast path equals the plain computation it replaces, in values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from sparse_circuits import kernels
from sparse_circuits.config import BigramTable
from sparse_circuits.model import attend, attention_pattern

from test_model import small_model, tokens


def plain_loss(model, x, y):
    """The loss written out: full logits, then cross-entropy."""
    return F.cross_entropy(model(x).reshape(-1, model.cfg.vocab_size), y.reshape(-1))


@pytest.mark.parametrize("table", [BigramTable.FIXED, BigramTable.LEARNABLE, BigramTable.NONE])
def test_fused_head_loss_equals_plain_loss_and_gradients(table, monkeypatch):
    monkeypatch.setattr(kernels, "HEAD_CHUNK_ROWS", 7)  # several blocks, the last one short
    model = small_model(bigram_table=table).train()
    x, y = tokens(batch=3), tokens(batch=3).roll(1, 0)
    params = [p for p in model.parameters() if p.requires_grad]
    ref = plain_loss(model, x, y)
    ref_grads = torch.autograd.grad(ref, params)
    fused = model(x, targets=y)
    fused_grads = torch.autograd.grad(fused * 3.0, params)  # a scaled loss scales every gradient
    torch.testing.assert_close(fused, ref, rtol=1e-6, atol=1e-6)
    for p, a, b in zip(params, ref_grads, fused_grads):
        torch.testing.assert_close(b, 3.0 * a, rtol=1e-5, atol=1e-7)
    if table == BigramTable.LEARNABLE:
        assert dict(zip(params, fused_grads))[model.bigram].abs().sum() > 0
    with torch.no_grad():
        torch.testing.assert_close(model(x, targets=y), ref.detach(), rtol=1e-6, atol=1e-6)


def test_sink_attention_gradients_equal_the_written_out_softmax():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 4, generator=g, requires_grad=True) for _ in range(3))
    sink = torch.tensor([-1.0, 0.0, 3.0], requires_grad=True)
    probs = attention_pattern(q, k, sink)
    ref = probs[..., 1:] @ v
    out = attend(q, k, v, sink)
    weights = torch.randn(out.shape, generator=g)
    ref_grads = torch.autograd.grad((ref * weights).sum(), (q, k, v, sink))
    grads = torch.autograd.grad((out * weights).sum(), (q, k, v, sink))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(ref_grads, grads):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_keep_freed_memory_is_harmless_to_call_twice():
    first = kernels.keep_freed_memory()
    assert kernels.keep_freed_memory() == first
    assert torch.ones(1 << 20).sum() == 1 << 20


def sparse_model():
    from sparse_circuits.sparsity import project_
    model = small_model()
    with torch.no_grad():
        for p in model.sparsified_parameters().values():
            if p.dim() == 2:
                project_(p, 0.05, min_per_unit=1)
    return model


def test_sparse_execution_equals_dense_forward_and_backward_to_activations():
    model = sparse_model()
    for p in model.parameters():
        p.requires_grad_(False)
    x = tokens()
    gates = {name: torch.ones(site.width, requires_grad=True) for name, site in model.node_sites().items()}

    def run():
        from sparse_circuits.hooks import Hooks
        hooks = Hooks()
        for name, gate in gates.items():
            hooks.add(name, lambda t, g=gate: t * g)
        logits = model(x, hooks)
        return logits, torch.autograd.grad(logits.pow(2).mean(), list(gates.values()))

    dense_logits, dense_grads = run()
    chosen = model.use_sparse_weights(threshold=0.5)
    assert "blocks.0.mlp.c_fc" in chosen and "lm_head" in chosen
    sparse_logits, sparse_grads = run()
    torch.testing.assert_close(sparse_logits, dense_logits, rtol=1e-5, atol=1e-5)
    for a, b in zip(dense_grads, sparse_grads):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    assert model.use_sparse_weights(threshold=0.0) == []  # and off again


def test_sparse_execution_steps_aside_for_training_and_edited_weights():
    model = sparse_model()
    model.use_sparse_weights(threshold=0.5)
    x = tokens()
    # Trainable weights: the dense product runs, so the weights get gradients.
    model(x).sum().backward()
    assert model.blocks[0].mlp.c_fc.weight.grad is not None
    # A weight changed after the sparse copy was made is used as it is now.
    with torch.no_grad():
        model.lm_head.weight.mul_(2.0)
        edited = model(x)
        model.use_sparse_weights(threshold=0.0)
        torch.testing.assert_close(edited, model(x), rtol=1e-5, atol=1e-5)



@pytest.mark.parametrize("bias", [True, False])
def test_sparse_training_product_equals_the_dense_one_in_values_and_every_gradient(bias):
    """The forward and the product back to x run on the nonzeros; the weight's gradient must still
    be the dense one, with entries where the weight is zero (the paper regrows weights from them)."""
    torch.manual_seed(0)
    w = (torch.randn(48, 24) * (torch.rand(48, 24) < 0.1)).requires_grad_()
    b = torch.randn(48, requires_grad=True) if bias else None
    x = torch.randn(3, 7, 24, requires_grad=True)
    gy = torch.randn(3, 7, 48)
    inputs = [t for t in (x, w, b) if t is not None]
    fast = kernels.training_sparse_linear(x, w, b)
    fast_grads = torch.autograd.grad(fast, inputs, gy)
    plain = F.linear(x, w, b)
    plain_grads = torch.autograd.grad(plain, inputs, gy)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
    for a, e in zip(fast_grads, plain_grads):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)
    zero = w.detach() == 0
    assert fast_grads[1][zero].abs().sum() > 0  # the zero entries do get their gradient


def test_sparse_training_products_switch_on_below_their_threshold_and_train_alike():
    """Through the model: with the switch on, the sparse layers take the CSR path (and only they),
    and a few training steps give the same loss and weights as the dense path."""
    from sparse_circuits.sparsity import project_

    def run(below: float):
        model = sparse_model().train()
        dense_layer = model.blocks[0].attn.c_q
        with torch.no_grad():
            dense_layer.weight.normal_()  # this one stays dense: above any threshold below 1
        model.use_sparse_training_products(below)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        calls = []
        real = kernels.training_sparse_linear

        def counted(x, weight, bias):
            calls.append(id(weight))
            return real(x, weight, bias)

        losses = []
        import sparse_circuits.model as model_mod
        model_mod.training_sparse_linear = counted
        try:
            for _ in range(3):
                loss = model(tokens(), targets=tokens())
                loss.backward()
                opt.step()
                opt.zero_grad()
                with torch.no_grad():
                    for name, p in model.sparsified_parameters().items():
                        if p.dim() == 2 and "c_q" not in name:
                            project_(p, 0.05, min_per_unit=1)
                losses.append(float(loss.detach()))
        finally:
            model_mod.training_sparse_linear = real
        return calls, losses, {k: v.detach().clone() for k, v in model.state_dict().items()}, id(dense_layer.weight)

    plain_calls, plain_losses, plain_state, _ = run(0.0)
    fast_calls, fast_losses, fast_state, dense_weight = run(0.5)
    assert plain_calls == [] and len(fast_calls) > 0 and dense_weight not in fast_calls
    assert all(abs(a - b) < 1e-4 for a, b in zip(plain_losses, fast_losses)), (plain_losses, fast_losses)
    for k in plain_state:
        torch.testing.assert_close(fast_state[k], plain_state[k], rtol=1e-4, atol=1e-5)
