"""Fast paths of the forward pass: the same arithmetic as the plain code, arranged for a CPU.

Each function here computes exactly what a few lines of plain PyTorch would, and the tests
compare the two (values and gradients, within float tolerance). They exist because on a laptop
CPU memory traffic, not arithmetic, bounds a small model (docs/results.md, issue 12):

- `head_loss`: the unembedding, the bigram table and the cross-entropy, fused and taken a block
  of rows at a time, so that the (tokens x vocabulary) logits never exist in full.
- `keep_freed_memory`: glibc's allocator otherwise hands every large freed tensor back to the
  kernel and page-faults it in again on the next step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import warnings

import torch

# [ours] Rows of logits per block: 512 x 2048 floats (4 MB) was the fastest of 128-1024 on a
# 2-core AMD EPYC (benchmarks/bench_throughput.py measures the whole step).
HEAD_CHUNK_ROWS = 512


class _HeadLoss(torch.autograd.Function):
    """Mean cross-entropy of logits = h @ W.T + b + table[current], without storing the logits.

    With gradients wanted, each block's gradient (softmax - one-hot) is used at once for the
    gradients of h, W, b and the table and then dropped; `backward` only scales them.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, table, current, targets, matmul_dtype):
        n = h.shape[0]
        # With a lower-precision product (bf16) only the logits' matrix product uses it; the
        # softmax, the loss and the gradient products stay float32.
        w_mm = weight.to(matmul_dtype) if matmul_dtype is not None else weight
        want = [ctx.needs_input_grad[i] and t is not None for i, t in enumerate((h, weight, bias, table))]
        g_h = torch.empty_like(h) if want[0] else None
        g_w = torch.zeros_like(weight) if want[1] else None
        g_b = torch.zeros_like(bias) if want[2] else None
        g_t = torch.zeros_like(table) if want[3] else None
        total = torch.zeros((), dtype=torch.float64, device=h.device)
        for s in range(0, n, HEAD_CHUNK_ROWS):
            e = min(n, s + HEAD_CHUNK_ROWS)
            h_c, y_c = h[s:e], targets[s:e]
            base = table.index_select(0, current[s:e]) if table is not None else None
            if bias is not None:
                base = bias if base is None else base.add_(bias)
            if matmul_dtype is not None:
                logits = (h_c.to(matmul_dtype) @ w_mm.t()).float()
                logits = logits.add_(base) if base is not None else logits
            else:
                logits = torch.addmm(base, h_c, weight.t()) if base is not None else h_c @ weight.t()
            picked = logits.gather(1, y_c[:, None]).squeeze(1)
            top = logits.amax(-1)
            p = logits.sub_(top[:, None]).exp_()  # in place: the logits are not needed again
            z = p.sum(-1)
            total += (z.log() + top - picked).sum(dtype=torch.float64)
            if any(want):
                g = p.div_(z[:, None])
                g[torch.arange(e - s, device=g.device), y_c] -= 1
                g.div_(n)
                if g_h is not None:
                    torch.mm(g, weight, out=g_h[s:e])
                if g_w is not None:
                    g_w.addmm_(g.t(), h_c)
                if g_b is not None:
                    g_b.add_(g.sum(0))
                if g_t is not None:
                    g_t.index_add_(0, current[s:e], g)
        ctx.save_for_backward(*(t if t is not None else torch.empty(0) for t in (g_h, g_w, g_b, g_t)))
        ctx.have = want
        return (total / n).to(h.dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        saved = ctx.saved_tensors
        return (*(saved[i] * grad_loss if ctx.have[i] else None for i in range(4)), None, None, None)


def head_loss(h: torch.Tensor, lm_head: torch.nn.Linear, table: torch.Tensor | None,
              current: torch.Tensor, targets: torch.Tensor, matmul_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy of `lm_head(h) + table[current]` (h: (..., d_model)); the
    logits' product in `matmul_dtype` when given (e.g. bf16), everything else in float32."""
    inputs = (h.reshape(-1, h.shape[-1]).float(), lm_head.weight, lm_head.bias, table)
    if not torch.is_grad_enabled():  # evaluation: no gradient blocks to compute
        inputs = tuple(t.detach() if t is not None else None for t in inputs)
    with torch.autocast(h.device.type, enabled=False):  # the precision is explicit here
        return _HeadLoss.apply(*inputs, current.reshape(-1), targets.reshape(-1), matmul_dtype)


_ALLOCATOR_TUNED = False


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of returning it to the kernel.

    By default every allocation over ~128 KB is its own mmap, unmapped when freed, so each
    training step page-faults its activations in again: elementwise ops ran 3-5x slower than
    with this setting on the development machine. The cost: the process's resident memory stays
    at its peak instead of shrinking after it. Linux with glibc only; elsewhere a no-op.
    Returns whether the setting took effect.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED or not sys.platform.startswith("linux"):
        return _ALLOCATOR_TUNED
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    _ALLOCATOR_TUNED = bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 1 << 30))
    return _ALLOCATOR_TUNED


# -- sparse execution of a frozen model -------------------------------------------------------------

# [ours] Below this fraction of nonzero entries a frozen weight runs as a CSR sparse matrix
# (benchmarks/bench_sparse_exec.py measures the crossover against the dense product on this
# kind of machine; above it, or while the weight is being trained, the dense product runs).
SPARSE_DENSITY_THRESHOLD = 0.01


class SparseWeight:
    """A frozen weight (out x in) as CSR, and its transpose: the forward pass multiplies by the
    transpose, the backward pass to the layer's input by the weight itself.

    Made once per weight; `version` remembers the weight's in-place version counter, so that a
    weight edited afterwards is noticed (the layer then runs dense again)."""

    def __init__(self, weight: torch.Tensor):
        w = weight.detach()
        self.version = weight._version
        with warnings.catch_warnings():  # PyTorch calls CSR support "beta"; the tests check our use of it
            warnings.simplefilter("ignore", UserWarning)
            self.csr = w.to_sparse_csr()
            self.csr_t = w.t().contiguous().to_sparse_csr()
        self.density = self.csr.values().numel() / max(1, w.numel())

    def matches(self, weight: torch.Tensor) -> bool:
        return weight._version == self.version and weight.device == self.csr.device


class _SparseLinear(torch.autograd.Function):
    """y = x @ W.T + b with W sparse and frozen: gradients flow to x and b, never to W."""

    @staticmethod
    def forward(ctx, x, bias, sparse: SparseWeight):
        # dense @ CSR keeps the output row-major (CSR @ dense.T and a transpose back were 4x slower).
        rows = x.reshape(-1, x.shape[-1])
        y = torch.addmm(bias, rows, sparse.csr_t) if bias is not None else rows @ sparse.csr_t
        ctx.sparse, ctx.has_bias = sparse, bias is not None
        return y.reshape(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad_y):
        rows = grad_y.reshape(-1, grad_y.shape[-1])
        grad_x = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (rows @ ctx.sparse.csr).reshape(*grad_y.shape[:-1], -1)
        if ctx.has_bias and ctx.needs_input_grad[1]:
            grad_b = rows.sum(0)
        return grad_x, grad_b, None


def sparse_linear(x: torch.Tensor, sparse: SparseWeight, bias: torch.Tensor | None) -> torch.Tensor:
    return _SparseLinear.apply(x, bias, sparse)


# -- sparse products while training -----------------------------------------------------------------

class _TrainingSparseLinear(torch.autograd.Function):
    """y = x @ W.T + b for a weight being trained whose entries are mostly zero (projected every
    step): the forward product and the product back to x run on W's nonzeros, the weight's
    gradient stays the dense grad_y.T @ x, because the paper regrows weights from it (SPEC section
    3): an entry that is zero now gets its gradient and may enter the top-k at the next projection.

    The CSR copies are made afresh on every call (the weights change every step); the copy of
    W.T comes from W's CSC form (the same arrays read as the transpose), so one pass over W
    makes both."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        w = weight.detach()
        with warnings.catch_warnings():  # PyTorch calls CSR support "beta"; the tests check our use of it
            warnings.simplefilter("ignore", UserWarning)
            csr = w.to_sparse_csr()
            csc = w.to_sparse_csc()
            csr_t = torch.sparse_csr_tensor(csc.ccol_indices(), csc.row_indices(), csc.values(),
                                            size=(w.shape[1], w.shape[0]))
        rows = x.reshape(-1, x.shape[-1])
        y = torch.addmm(bias, rows, csr_t) if bias is not None else rows @ csr_t
        ctx.csr, ctx.has_bias = csr, bias is not None
        ctx.save_for_backward(rows)
        return y.reshape(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad_y):
        (rows,) = ctx.saved_tensors
        g = grad_y.reshape(-1, grad_y.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (g @ ctx.csr).reshape(*grad_y.shape[:-1], -1)
        if ctx.needs_input_grad[1]:
            grad_w = g.t() @ rows  # dense: every entry's gradient, zeros included
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b


def training_sparse_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return _TrainingSparseLinear.apply(x, weight, bias)
