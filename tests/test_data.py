import pytest
import torch

from hooked_mlp import MLPConfig
from hooked_mlp.data import (
    _mix32,
    _mix32_int,
    all_pairs,
    apply_operation,
    dataset,
    hash_keys,
    labels_of,
    n_train_pairs,
    permutations,
    split_indices,
    split_mask,
    split_masks,
)

STUDY = MLPConfig()


def test_all_pairs_row_major_and_labels():
    pairs = all_pairs(5)
    assert pairs.shape == (25, 2) and pairs.dtype == torch.int64
    assert pairs[7].tolist() == [1, 2]  # index a*p + b
    labels = apply_operation(pairs, 5)
    assert labels[7] == 3 and labels[24] == (4 + 4) % 5
    with pytest.raises(ValueError, match="operation must be one of"):
        apply_operation(pairs, 5, "pow")


@pytest.mark.parametrize("p", [5, 7, 13])
def test_every_operation_against_python_integers(p):
    """Each entry of the operation table, on tensors, equals its definition on Python ints."""
    a, b = all_pairs(p).T.tolist()
    want = {
        "add": [(x + y) % p for x, y in zip(a, b, strict=True)],
        "sub": [(x - y) % p for x, y in zip(a, b, strict=True)],
        "mul": [(x * y) % p for x, y in zip(a, b, strict=True)],
        "x2_xy_y2": [(x * x + x * y + y * y) % p for x, y in zip(a, b, strict=True)],
    }
    for op, labels in want.items():
        assert apply_operation(all_pairs(p), p, op).tolist() == labels, op
    # division: the dataset leaves out b = 0, and (a / b) * b = a for every pair it holds
    cfg = MLPConfig(p=p, d_hidden=4, operation="div")
    tokens, labels = dataset(cfg)
    assert len(tokens) == p * (p - 1) and int(tokens[:, 1].min()) == 1
    assert ((labels * tokens[:, 1]) % p).tolist() == tokens[:, 0].tolist()
    with pytest.raises(ValueError, match="no answer for b = 0"):
        labels_of(torch.tensor([[3, 0]]), cfg)


def test_mix32_matches_python_reference():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2**32, (2000,), dtype=torch.int64, generator=gen)
    assert _mix32(x).tolist() == [_mix32_int(v) for v in x.tolist()]
    # pinned: every split and batch order rests on this hash
    assert _mix32_int(0) == 0 and _mix32_int(1) == 0x688990C0


def test_split_sizes_and_determinism(shipped):
    assert n_train_pairs(113 * 113, 0.8) == 10215  # 80 % of 12,769, rounded down
    m = split_mask(STUDY, 0.8, seed=0)
    assert m.dtype == torch.bool and m.shape == (12769,) and int(m.sum()) == 10215
    assert torch.equal(m, split_mask(STUDY, 0.8, seed=0))
    assert not torch.equal(m, split_mask(STUDY, 0.8, seed=1))
    # the split of the shipped model is the one the current code draws (it was trained on it)
    assert torch.equal(shipped.train_info.train_mask, m)
    # a seed's split does not depend on the other seeds computed with it
    both = split_masks(STUDY, 0.8, torch.tensor([5, 0]))
    assert torch.equal(both[1], m)
    with pytest.raises(ValueError, match="need at least one pair"):
        n_train_pairs(4, 0.1)
    # train_frac = 1: every pair, no validation side
    assert n_train_pairs(4, 1.0) == 4
    full = split_mask(MLPConfig(p=7, d_hidden=4), 1.0, seed=3)
    train_idx, val_idx = split_indices(MLPConfig(p=7, d_hidden=4), full)
    assert len(train_idx) == 49 and len(val_idx) == 0


def test_division_splits_only_pairs_it_can_label():
    cfg = MLPConfig(p=11, d_hidden=4, operation="div")
    m = split_mask(cfg, 0.5, seed=2)
    train_idx, val_idx = split_indices(cfg, m)
    assert len(train_idx) == int(0.5 * 110) and len(train_idx) + len(val_idx) == 110
    assert not bool(m[::11].any())  # no pair (a, 0) is ever trained on
    assert not bool(torch.isin(val_idx, torch.arange(0, 121, 11)).any())


def test_permutations_are_permutations_and_vary_by_epoch():
    seeds = torch.tensor([0, 1])
    p0 = permutations(seeds, 2, 0, 1000)
    assert all(sorted(row.tolist()) == list(range(1000)) for row in p0)
    assert not torch.equal(p0[0], p0[1])
    assert not torch.equal(p0, permutations(seeds, 2, 1, 1000))
    assert torch.equal(p0[1:], permutations(torch.tensor([1]), 2, 0, 1000))
    keys = hash_keys(seeds, 2, 0, 1000)
    assert int(keys.min()) >= 0 and int(keys.max()) < 2**62
    # roughly uniform: each decile of positions holds ~10 % of the first hundred indices
    first = (p0[0] < 100).nonzero().flatten() // 100
    assert torch.bincount(first, minlength=10).max() <= 25
