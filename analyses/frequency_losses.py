"""The restricted and excluded losses of Nanda et al. (2023), and the key frequencies.

Over the grid of all pairs, the logits of each answer `c` are a function of `(a, b)`; for the
operation `a + s b` (`s = +1` for add, `-1` for sub) the directions `cos(w_k (a + s b))` and
`sin(w_k (a + s b))`, `w_k = 2 pi k / p`, carry the part of that function that depends on
`a + s b` through frequency `k` (the 2-D Fourier components `cos_k x cos_k -+ sin_k x sin_k`
and `sin_k x cos_k +- cos_k x sin_k`). Their projection for the key frequencies is
`P[a, b, c] = (2 / p^2) sum_{k in key} Re(G_k[c] e^{i w_k (a + s b)})` with
`G_k[c] = sum_{a, b} L[a, b, c] e^{-i w_k (a + s b)}`. The restricted logits keep the constant
term too, as the paper does (every term "besides the constant term and the ... terms
corresponding to cos(w_k(a + b)) and sin(w_k(a + b))" set to 0; its code adds back each
answer's mean logit): `R = P + mean_{a,b} L[a, b, c]`. The excluded logits lose the key
directions only: `L - P`. The restricted loss is measured on every pair (the paper's code:
`mode='all'`), the excluded loss on the training pairs, as in the paper. An ideal circuit
`L = sum_k cos(w_k (a + s b - c))` lies wholly in those directions: its restricted loss is its
loss, its excluded loss is chance.

`key_frequencies` chooses them from the final model, as in the paper, but by another criterion:
the paper reads them off the sparse Fourier spectrum of the embedding (its code: the distinct
frequencies of the neuron clusters); here they are the frequencies whose `a + s b` directions
carry the most power in the logits (`logit_frequency_power`), as many as reach `coverage` of
that power (the restricted loss is about the logits). The two can differ where the model uses
many frequencies: on the shipped snapshots' final model 34 of 56 by the logits against 26
distinct frequencies among the neurons one cosine explains; on the small grokking preset of the
tests (p = 23) 10 of 11 against 9. `analyses.dynamics.dynamics(series, keys=...)` takes any
other choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from analyses._common import PairLogits, Spectrum, check_fourier, check_model, phase_sign
from analyses.fourier import n_frequencies
from hooked_mlp.checks import check_finite_logits
from hooked_mlp.data import all_pairs, labels_of

__all__ = ["check_key_frequencies", "frequency_losses", "key_frequencies", "logit_frequency_power",
           "logits_grid"]


def _sign(model: Any, what: str) -> int:
    s = phase_sign(model.cfg)
    if s is None:
        raise ValueError(f"{what} projects the logits on cos/sin of w_k(a + s b), which needs "
                         f"an operation a + s b (add or sub); this model computes "
                         f"{model.cfg.operation!r}")
    return s


@torch.no_grad()
def logits_grid(model: Any) -> PairLogits:
    """The logits of every pair, `[p*p, p]` float64 (pair index `a * p + b`), through the
    model's forward (hooks included)."""
    return model(all_pairs(model.cfg.p, model.device)).double().cpu()


def _sum_index(p: int, sign: int) -> Tensor:
    """`(a + sign * b) mod p` for every pair index `a * p + b`: int64 `[p*p]`."""
    pairs = all_pairs(p)
    return (pairs[:, 0] + sign * pairs[:, 1]) % p


def _direction_coefficients(logits: Tensor, p: int, sign: int) -> Tensor:
    """`G_k[c] = sum_{a,b} L[a,b,c] e^{-i w_k (a + s b)}` for `k = 0..p-1`: complex `[p, p]`
    (rows `k`, columns `c`), from the logits `[p*p, p]`."""
    by_sum = torch.zeros(p, p, dtype=logits.dtype).index_add_(0, _sum_index(p, sign), logits)
    return torch.fft.fft(by_sum, dim=0)  # over s: sum_s M[s, c] e^{-2 pi i k s / p}


def _restricted(logits: Tensor, p: int, sign: int, keys: Sequence[int]) -> Tensor:
    """Each answer's logits projected on `cos/sin(w_k (a + s b))` for the key frequencies
    (`P` of the module's docstring, without the constant term): `[p*p, p]`."""
    G = _direction_coefficients(logits, p, sign)
    ks = torch.tensor(list(keys), dtype=torch.int64)
    s = torch.arange(p, dtype=torch.float64)
    waves = torch.exp(2j * math.pi * s[:, None] * ks[None, :].double() / p)  # [p (s), n_keys]
    by_sum = (2.0 / p**2) * (waves @ G[ks]).real  # [p (s), p (c)]
    return by_sum[_sum_index(p, sign)]


def logit_frequency_power(model: Any) -> Spectrum:
    """Power of the logits along `cos/sin(w_k (a + s b))` for `k = 1..(p-1)/2`: float64 `[K]`
    (the squared norm of each frequency's restricted logits over all pairs and answers)."""
    check_model(model)
    check_fourier(model.cfg, "logit_frequency_power")
    p = model.cfg.p
    G = _direction_coefficients(logits_grid(model), p, _sign(model, "logit_frequency_power"))
    K = n_frequencies(p)
    return (2.0 / p**2) * G[1 : K + 1].abs().square().sum(dim=1)


def key_frequencies(model: Any, coverage: float = 0.95) -> list[int]:
    """The key frequencies of a (trained) model: the fewest frequencies, strongest first, whose
    `a + s b` directions carry `coverage` of the logits' power in all such directions.
    Ascending. (Nanda et al. read them off the embedding's spectrum; see the module's
    docstring.)"""
    if isinstance(coverage, bool) or not isinstance(coverage, (int, float)) or not (
            0 < coverage <= 1):
        raise ValueError(f"coverage must be a number in (0, 1], got {coverage!r}")
    power = logit_frequency_power(model)
    total = float(power.sum())
    if total <= 0:
        raise ValueError("the model's logits have no component along any frequency of "
                         "a + s b: it has no key frequencies")
    order = torch.argsort(power, descending=True)
    share = torch.cumsum(power[order], 0) / total
    n = int((share < coverage - 1e-12).sum()) + 1
    return sorted(int(k) + 1 for k in order[:n])


def check_key_frequencies(keys: Any, p: int) -> list[int]:
    """`keys` as a sorted list of distinct frequencies in `[1, (p-1)/2]`, or a ValueError."""
    K = n_frequencies(p)
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence) or not keys or not all(
            isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= K for k in keys):
        raise ValueError(f"keys: the key frequencies must be a non-empty list of integers in "
                         f"[1, {K}], got {keys!r}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"key frequencies must be distinct, got {list(keys)}")
    return sorted(keys)


@torch.no_grad()
def frequency_losses(model: Any, keys: Sequence[int],
                     grid: Tensor | None = None) -> dict[str, float]:
    """Loss on every pair, restricted loss (every pair; `restricted_loss_train` on the
    training pairs) and excluded loss (training pairs; every pair for a model without a
    training record), for the key frequencies `keys` (see the module's docstring: the
    restricted logits keep the constant term, the excluded logits lose the key directions
    only). `grid`: the model's logits of every pair `[p*p, p]` float64 (`a * p + b`) when
    already computed."""
    check_model(model)
    check_fourier(model.cfg, "frequency_losses")
    p = model.cfg.p
    keys = check_key_frequencies(keys, p)
    sign = _sign(model, "frequency_losses")
    logits = logits_grid(model) if grid is None else grid
    labels = labels_of(all_pairs(p), model.cfg)
    check_finite_logits(logits, "the restricted and excluded losses")
    key_part = _restricted(logits, p, sign, keys)  # P: the key directions, no constant term
    restricted = key_part + logits.mean(dim=0, keepdim=True)  # R = P + each answer's mean
    info = model.train_info
    on = info.train_mask.cpu() if info is not None else torch.ones(p * p, dtype=torch.bool)
    excluded = (logits - key_part)[on]
    per_pair = F.cross_entropy(restricted, labels, reduction="none")
    return {
        "loss_all": float(F.cross_entropy(logits, labels)),
        "restricted_loss": float(per_pair.mean()),
        "restricted_loss_train": float(per_pair[on].mean()),
        "excluded_loss": float(F.cross_entropy(excluded, labels[on])),
        "restricted_acc": float((restricted.argmax(-1) == labels).double().mean()),
    }

