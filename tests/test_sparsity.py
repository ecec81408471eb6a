import math
import sys
from pathlib import Path

import pytest
import torch

from sparse_circuits.config import AnnealSchedule, SparsityConfig, UnitAxis
from sparse_circuits.sparsity import (
    drop_mask,
    restore_unit_floor_,
    keep_count,
    kth_largest_bisect,
    kth_largest,
    kth_largest_reference,
    kth_largest_sampled,
    nonzero_fraction,
    project_,
    sharkfin_lr,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from baselines import project_naive_  # noqa: E402  (the benchmark's baseline, outside the library)


@pytest.mark.parametrize("shape", [(7,), (33, 17), (300, 400), (1024, 1024)])
@pytest.mark.parametrize("frac", [0.001, 0.0625, 0.5])
def test_projection_keeps_exactly_k_largest(shape, frac):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(shape, generator=g)
    before = w.clone()
    mask = project_(w, frac, min_per_unit=0)
    k = keep_count(frac, w.numel())
    assert int(mask.sum()) == k == int(torch.count_nonzero(w))
    kept = before.abs()[mask]
    dropped = before.abs()[~mask]
    if dropped.numel():
        assert kept.min() >= dropped.max()
    assert torch.equal(w[mask], before[mask])  # kept values untouched


def test_projection_breaks_ties_by_lowest_index():
    w = torch.tensor([3.0, 1.0, -2.0, 2.0, 2.0, -2.0, 0.5])
    mask = project_(w, 3 / 7, min_per_unit=0)  # k = 3: the 3, then two of the four tied 2s
    assert mask.tolist() == [True, False, True, True, False, False, False]
    assert int(torch.count_nonzero(w)) == 3


def test_all_equal_tensor_keeps_exactly_k():
    w = torch.ones(64, 64)
    project_(w, 0.1, min_per_unit=0)
    assert int(torch.count_nonzero(w)) == keep_count(0.1, 4096)


def test_floor_gives_every_unit_j_nonzeros():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(20, 50, generator=g)
    w[3] *= 1e-3  # a row whose entries would all lose the global top-k
    w[:, 7] *= 1e-3
    k = keep_count(0.05, w.numel())
    a = w.abs()
    global_mask = drop_mask(a, k).logical_not()  # the global top-k alone
    assert int(global_mask[3].sum()) == 0
    mask = project_(w, 0.05, min_per_unit=4, unit_axis=UnitAxis.OUTPUT)
    assert (mask.sum(dim=1) >= 4).all()
    # The floor only adds each short row's own largest entries.
    assert set(mask[3].nonzero().squeeze(1).tolist()) == set(a[3].topk(4).indices.tolist())
    assert torch.equal(mask & ~global_mask, mask ^ global_mask)

    w2 = torch.randn(20, 50, generator=g)
    w2[:, 7] *= 1e-3
    mask2 = project_(w2, 0.05, min_per_unit=4, unit_axis=UnitAxis.INPUT)
    assert (mask2.sum(dim=0) >= 4).all()


def test_floor_is_noop_for_vectors():
    v = torch.randn(10)
    drop = torch.ones(10, dtype=torch.bool)
    assert torch.equal(restore_unit_floor_(drop.clone(), v.abs(), 4, UnitAxis.OUTPUT), drop)


@pytest.mark.parametrize("n", [10, 1000, 300_000])
def test_fast_selections_match_reference(n):
    g = torch.Generator().manual_seed(n)
    a = torch.randn(n, generator=g).abs()
    a[: n // 10] = 0.0  # many zeros, as in a sparse weight
    for k in {1, max(1, n // 100), n // 2, n}:
        ref = kth_largest_reference(a, k)
        assert kth_largest_bisect(a, k) == ref
        assert kth_largest_sampled(a, k, torch.Generator().manual_seed(0)) == ref
        assert kth_largest(a, k) == ref  # the CPU's path (np.partition)
        assert kth_largest(a.double(), k) == ref.double()


def test_fast_projection_equals_naive_without_ties():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(512, 700, generator=g)
    w_naive = w.clone()
    project_(w, 0.01, min_per_unit=4)
    project_naive_(w_naive, 0.01, min_per_unit=4)
    assert torch.equal(w, w_naive)


def test_linear_annealing():
    cfg = SparsityConfig(nonzero_frac=0.1, anneal=AnnealSchedule.LINEAR, anneal_end=0.5)
    assert nonzero_fraction(0.1, 0, 100, cfg) == 1.0
    assert nonzero_fraction(0.1, 25, 100, cfg) == pytest.approx(0.55)
    assert nonzero_fraction(0.1, 50, 100, cfg) == 0.1
    assert nonzero_fraction(0.1, 99, 100, cfg) == 0.1


def test_exponential_annealing_is_geometric():
    cfg = SparsityConfig(nonzero_frac=0.01, anneal=AnnealSchedule.EXPONENTIAL, anneal_end=0.8)
    assert nonzero_fraction(0.01, 0, 100, cfg) == 1.0
    assert nonzero_fraction(0.01, 40, 100, cfg) == pytest.approx(0.1)
    assert nonzero_fraction(0.01, 80, 100, cfg) == 0.01
    fracs = [nonzero_fraction(0.01, s, 100, cfg) for s in range(100)]
    assert all(a >= b for a, b in zip(fracs, fracs[1:]))


def test_dense_target_never_anneals():
    cfg = SparsityConfig(nonzero_frac=1.0)
    assert {nonzero_fraction(1.0, s, 10, cfg) for s in range(10)} == {1.0}


def test_sharkfin_learning_rate():
    total = 1000
    lrs = [sharkfin_lr(1.0, s, total, 0.01, 1.0) for s in range(total)]
    assert lrs[0] == pytest.approx(0.1)  # warmup over 10 steps
    assert lrs[9] == pytest.approx(1.0)
    assert max(lrs) == pytest.approx(1.0)
    assert lrs[-1] < 0.002 and all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    # The 1/sqrt(nonzero fraction) factor.
    assert sharkfin_lr(1.0, 500, total, 0.01, 0.25) == pytest.approx(2 * sharkfin_lr(1.0, 500, total, 0.01, 1.0))
    assert sharkfin_lr(2.0, 500, total, 0.01, 1 / 16) == pytest.approx(8 * lrs[500])
    assert math.isclose(sharkfin_lr(1.0, total, total, 0.01, 1.0), 0.0)
