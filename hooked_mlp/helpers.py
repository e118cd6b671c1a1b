"""Helpers for the task: pairs, labels, splits, loss, accuracy, grids and Fourier bases.

    from hooked_mlp import helpers
    tokens, labels = helpers.split_tokens(model, "val")    # the validation pairs and answers
    helpers.accuracy(model, "val"), helpers.loss(model, "train")
    grid = helpers.to_grid(cache["post", 0])                # [p, p, d_hidden]: rows a, columns b
    basis, names = helpers.fourier_basis(model.cfg.p)       # [p, p] orthonormal, "cos 3", ...
    spectrum = helpers.fourier_2d(helpers.to_grid(logits))  # over (a, b)

Every tensor over all pairs is in the row-major order of `all_pairs(p)` (pair index `a * p + b`),
so `to_grid` makes it `[p, p, ...]` with rows `a` and columns `b`. `accuracy` and `loss` refuse
logits that overflowed (`hooked_mlp.checks.LogitsOverflowError`) rather than answer from NaNs or
ties between infinities, and a model whose forward over every pair would not fit in memory
(`check_all_pairs_memory`, which the analyses share).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from hooked_mlp.checks import available_memory, check_finite_logits
from hooked_mlp.config import MLPConfig
from hooked_mlp.data import all_pairs, dataset, labels_of, split_indices
from hooked_mlp.shapes import Basis, Grid, Labels, Logits, PerPair, Tokens

__all__ = ["accuracy", "all_pairs", "fourier_1d", "fourier_2d", "fourier_basis",
           "fourier_names_2d", "fraction_right", "labels_of", "loss", "split_tokens", "to_grid"]

SPLITS = ("all", "train", "val")


def _cfg(model_or_cfg: Any) -> MLPConfig:
    cfg = getattr(model_or_cfg, "cfg", model_or_cfg)
    if not isinstance(cfg, MLPConfig):
        raise TypeError(f"expected a HookedMLP or an MLPConfig, got {type(model_or_cfg).__name__}")
    return cfg


def split_tokens(model: Any, split: str = "all") -> tuple[Tokens, Labels]:
    """The pairs and right answers of a split: tokens int64 `[n, 2]`, labels `[n]`.

    `"all"` is the dataset (every pair, or `p (p - 1)` for `div`); `"train"` and `"val"` need a
    model with a training record (`model.train_info`). On the model's device.
    """
    cfg = _cfg(model)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    device = getattr(model, "device", "cpu")
    if split == "all":
        return dataset(cfg, device)
    info = getattr(model, "train_info", None)
    if info is None:
        raise ValueError(f"split={split!r} needs a model with a training record (model."
                         "train_info); this one has none: use split='all'")
    train_idx, val_idx = split_indices(cfg, info.train_mask)
    idx = (train_idx if split == "train" else val_idx).to(device)
    if not len(idx):
        raise ValueError(f"this model has no {split!r} pairs (it was trained with train_frac="
                         f"{info.train_config.train_frac})")
    tokens = all_pairs(cfg.p, device)[idx]
    return tokens, labels_of(tokens, cfg)


def check_all_pairs_memory(cfg: Any, floats_per_pair: int, what: str) -> None:
    """Refuse work over all `p^2` pairs whose tensors would not fit in memory.

    `floats_per_pair` is how many float32 values the work holds per pair at its peak
    (activations and logits). Refused with a message when that exceeds half of what this
    process can still allocate, rather than failing deep inside torch.
    """
    need = cfg.p * cfg.p * floats_per_pair * 4
    avail = available_memory()
    if avail is not None and need > avail // 2:
        raise ValueError(
            f"{what} holds about {need / 2**30:.1f} GiB for the {cfg.p ** 2:,} pairs of p="
            f"{cfg.p} (d_hidden={cfg.d_hidden}), more than half of the {avail / 2**30:.1f} GiB "
            "this process can still allocate; analyse a model with a smaller p")


@torch.no_grad()
def accuracy(model: Any, split: str = "all") -> float:
    """Fraction of a split's pairs whose top logit is the right answer (through the model's
    forward, its hooks included; a tie with an earlier residue is a miss, as `argmax` says).

    `split` is `"all"` (every pair of the dataset: the `p^2` pairs, or `p (p - 1)` for `div`),
    or `"train"` / `"val"` for a model that carries its training record. Logits that
    overflowed are refused (`LogitsOverflowError`): their argmax is a tie; so is a model whose
    forward over every pair would not fit in memory.
    """
    cfg = _cfg(model)
    check_all_pairs_memory(cfg, 3 * max(cfg.d_hidden, cfg.p), "accuracy")
    tokens, labels = split_tokens(model, split)
    return fraction_right(model(tokens), labels)


def fraction_right(logits: Logits, labels: Labels, what: str = "the accuracy") -> float:
    """The share of rows of `logits` `[batch, p]` whose top logit is `labels` `[batch]` (the
    arithmetic of `accuracy`, for logits computed another way). Logits that overflowed are
    refused (`LogitsOverflowError`, naming `what`)."""
    check_finite_logits(logits, what)
    return float((logits.argmax(-1) == labels).float().mean())


@torch.no_grad()
def loss(model: Any, split: str = "all") -> float:
    """Mean cross-entropy on a split's pairs (through the model's forward, hooks included).
    Logits that overflowed are refused (`LogitsOverflowError`): the loss would be NaN."""
    tokens, labels = split_tokens(model, split)
    return float(model(tokens, return_type="loss", labels=labels))


def to_grid(x: PerPair, p: int | None = None) -> Grid:
    """A tensor over all `p^2` pairs `[p*p, ...]` (the order of `all_pairs`) as `[p, p, ...]`:
    rows `a`, columns `b`. `p` defaults to the square root of the first dimension."""
    if not isinstance(x, Tensor) or x.ndim < 1:
        raise ValueError(f"x must be a tensor [p*p, ...], got {type(x).__name__}")
    n = x.shape[0]
    p = math.isqrt(n) if p is None else p
    if p * p != n:
        raise ValueError(f"x must have p*p = {p * p if p else 'a square number of'} rows (one "
                         f"per pair, as all_pairs(p) orders them), got {n}")
    return x.reshape(p, p, *x.shape[1:])


def fourier_basis(p: int) -> tuple[Basis, list[str]]:
    """Orthonormal real Fourier basis of Z_p: `[p, p]` (one basis vector per row) and a name
    per row: `const`, then `cos k` and `sin k` for `k = 1..(p-1)/2` (and `cos p/2` for even p).
    """
    if isinstance(p, bool) or not isinstance(p, int) or p < 2:
        raise ValueError(f"p must be an integer >= 2, got {p!r}")
    x = torch.arange(p, dtype=torch.float64)
    rows, names = [torch.ones(p, dtype=torch.float64)], ["const"]
    for k in range(1, (p - 1) // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
        names += [f"cos {k}", f"sin {k}"]
    if p % 2 == 0:
        rows.append(torch.cos(math.pi * x))
        names.append(f"cos {p // 2}")
    basis = torch.stack(rows)
    return (basis / basis.norm(dim=1, keepdim=True)).float(), names


def fourier_1d(x: Tensor, dim: int = 0) -> Tensor:
    """`x` with its residue axis `dim` (length p) changed to the Fourier basis: component `i`
    along `dim` is the coefficient of `fourier_basis(p)` row `i` (names from there). Weights:
    `fourier_1d(model.W_a, 0)` (`[p, d_hidden]`), `fourier_1d(model.W_out, 1)`."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {type(x).__name__}")
    p = x.shape[dim]
    basis, _ = fourier_basis(p)
    moved = x.movedim(dim, -1)
    return (moved @ basis.to(moved.dtype).to(moved.device).T).movedim(-1, dim)


def fourier_2d(grid: Grid) -> Grid:
    """A grid `[p, p, ...]` over `(a, b)` (`to_grid`) in the 2-D Fourier basis: entry `[i, j]`
    is the coefficient of `basis[i] (x) basis[j]` (row `i` over `a`, `j` over `b`; names from
    `fourier_names_2d`)."""
    if not isinstance(grid, Tensor) or grid.ndim < 2 or grid.shape[0] != grid.shape[1]:
        raise ValueError(f"grid must be a tensor [p, p, ...], got "
                         f"{list(getattr(grid, 'shape', []))}")
    return fourier_1d(fourier_1d(grid, 0), 1)


def fourier_names_2d(p: int) -> list[list[str]]:
    """Names of the 2-D components: `names[i][j]` is `"<a component> x <b component>"`."""
    _, names = fourier_basis(p)
    return [[f"{row} x {col}" for col in names] for row in names]
