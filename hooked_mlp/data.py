"""Datasets of modular operations, and the counter-based randomness behind splits and batches.

All `p^2` pairs `(a, b)` are enumerated in row-major order: pair index `i = a * p + b`. The
train/validation split and the order of the batches in every epoch come from a counter-based
hash of `(seed, stream, epoch, index)`, written with exact integer tensor operations. That makes
them identical on every device, independent of which other seeds are trained in the same
batched run, and resumable from the epoch number alone (there is no generator state to save).
"""

from __future__ import annotations

import torch
from torch import Tensor

from hooked_mlp.config import MLPConfig
from hooked_mlp.family import OPERATIONS

_MASK32 = 0xFFFFFFFF
STREAM_SPLIT = 1
STREAM_SHUFFLE = 2


def all_pairs(p: int, device: torch.device | str = "cpu") -> Tensor:
    """Every pair `(a, b)` with `0 <= a, b < p`, row-major: int64 `[p*p, 2]`."""
    ar = torch.arange(p, device=device)
    return torch.stack([ar.repeat_interleave(p), ar.repeat(p)], dim=1)


def apply_operation(pairs: Tensor, p: int, operation: str = "add") -> Tensor:
    """The label of each pair under `operation` modulo `p`: int64 `[n]` (see
    `hooked_mlp.family.OPERATIONS`; for `div`, pairs with `b = 0` have no label and get 0)."""
    if operation not in OPERATIONS:
        raise ValueError(f"operation must be one of {list(OPERATIONS)}, got {operation!r}")
    return OPERATIONS[operation].label(pairs[:, 0], pairs[:, 1], p)


def valid_mask(cfg: MLPConfig, device: torch.device | str = "cpu") -> Tensor:
    """Which of the `p^2` pairs are in the dataset: bool `[p*p]` (all but `b = 0` for `div`)."""
    mask = torch.ones(cfg.p * cfg.p, dtype=torch.bool, device=device)
    if OPERATIONS[cfg.operation].excludes_b_zero:
        mask[:: cfg.p] = False  # pair index a * p + 0
    return mask


def dataset(cfg: MLPConfig, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """The dataset's pairs and their labels: tokens int64 `[n, 2]`, labels int64 `[n]`.

    Row-major over `(a, b)`; `n = p^2`, or `p (p - 1)` for `div` (no pair with `b = 0`).
    """
    pairs = all_pairs(cfg.p, device)
    if OPERATIONS[cfg.operation].excludes_b_zero:
        pairs = pairs[valid_mask(cfg, device)]
    return pairs, apply_operation(pairs, cfg.p, cfg.operation)


def labels_of(tokens: Tensor, cfg: MLPConfig) -> Tensor:
    """The right answer for each row `(a, b)` of `tokens` `[n, 2]` under `cfg`'s operation."""
    if OPERATIONS[cfg.operation].excludes_b_zero and tokens.numel() and bool(
            (tokens[:, 1] == 0).any()):
        raise ValueError(f"operation {cfg.operation!r} has no answer for b = 0: those pairs are "
                         "not in its dataset")
    return apply_operation(tokens, cfg.p, cfg.operation)


def _mul32(x: Tensor, c: int) -> Tensor:
    """`(x * c) mod 2^32` for `x` in `[0, 2^32)`, without leaving int64's exact range."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _MASK32


def _mix32(x: Tensor) -> Tensor:
    """A 32-bit integer hash (the 'lowbias32' mixer), exact on any device."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _mix32_int(x: int) -> int:
    """`_mix32` on a Python int (for the per-seed, per-epoch prefix of a key)."""
    x &= _MASK32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def hash_prefix(seed: int, stream: int, epoch: int) -> int:
    """The 32-bit hash of `(seed, stream, epoch)` that every key of that draw starts from."""
    h = _mix32_int((seed & _MASK32) ^ 0x9E3779B9)
    h = _mix32_int(h ^ (stream & _MASK32))
    h = _mix32_int(h ^ (epoch & _MASK32))
    return _mix32_int(h ^ ((epoch >> 32) & _MASK32))


def hash_keys(seeds: Tensor, stream: int, epoch: int, n: int) -> Tensor:
    """Pseudo-random sort keys in `[0, 2^62)`: int64 `[len(seeds), n]`.

    Key `[s, i]` depends only on `(seeds[s], stream, epoch, i)`. Its top 32 bits,
    `mix32(prefix ^ i)`, already differ for every `i` (`mix32` is a bijection), so the order of
    the keys is the order of those bits; the C kernel sorts by them alone.
    """
    prefix = [hash_prefix(seed, stream, epoch) for seed in seeds.tolist()]
    h_t = torch.tensor(prefix, dtype=torch.int64, device=seeds.device).reshape(-1, 1)
    idx = torch.arange(n, device=seeds.device, dtype=torch.int64).reshape(1, -1)
    k1 = _mix32(h_t ^ idx)
    k2 = _mix32(k1 ^ 0x85EBCA6B)
    return (k1 << 30) | (k2 >> 2)


def permutations(seeds: Tensor, stream: int, epoch: int, n: int) -> Tensor:
    """One permutation of `range(n)` per seed: int64 `[len(seeds), n]`."""
    return torch.argsort(hash_keys(seeds, stream, epoch, n), dim=1, stable=True)


def n_train_pairs(n: int, train_frac: float) -> int:
    """How many of `n` pairs go to training (rounded down).

    `train_frac = 1` takes them all (no validation split); below 1, both sides keep a pair.
    """
    if train_frac >= 1.0:
        return n
    n_train = int(train_frac * n + 1e-9)  # 0.29 * 100 is 28.999...: do not lose a pair to rounding
    if not 1 <= n_train <= n - 1:
        raise ValueError(
            f"train_frac={train_frac} leaves {n_train} of {n} pairs for training; both the "
            "train and the validation split need at least one pair (or train_frac=1.0: "
            "every pair, no validation)"
        )
    return n_train


def split_masks(cfg: MLPConfig, train_frac: float, split_seeds: Tensor) -> Tensor:
    """Which pairs are for training, per split seed: bool `[len(split_seeds), p*p]`.

    Exactly `n_train_pairs(n, train_frac)` of the dataset's `n` pairs are True in each row (the
    first ones of a hashed permutation of the dataset's pair indices); pairs outside the
    dataset are never True.
    """
    valid = valid_mask(cfg).nonzero().flatten()  # the dataset's pair indices, ascending
    n = len(valid)
    n_train = n_train_pairs(n, train_frac)
    perm = permutations(split_seeds, STREAM_SPLIT, 0, n)
    mask = torch.zeros(len(split_seeds), cfg.p * cfg.p, dtype=torch.bool, device=perm.device)
    mask.scatter_(1, valid.to(perm.device)[perm[:, :n_train]], True)
    return mask


def split_mask(cfg: MLPConfig, train_frac: float = 0.8, seed: int = 0) -> Tensor:
    """The train mask of one split: bool `[p*p]` (True: the pair is used for training)."""
    return split_masks(cfg, train_frac, torch.tensor([seed]))[0]


def split_indices(cfg: MLPConfig, train_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Pair indices of the train and validation sides of a train mask `[p*p]`, ascending.

    The validation side is the rest of the dataset (empty when every pair was trained on).
    """
    if train_mask.dtype != torch.bool or tuple(train_mask.shape) != (cfg.p * cfg.p,):
        raise ValueError(f"train_mask must be a bool tensor [{cfg.p * cfg.p}], got "
                         f"{train_mask.dtype} {list(train_mask.shape)}")
    val = valid_mask(cfg, train_mask.device) & ~train_mask
    return train_mask.nonzero().flatten(), val.nonzero().flatten()
