"""Neurons as functions of `(a, b)`: 2-D spectra of their activations, single-frequency fits to
the activations, and the replacement experiment done on activations instead of weights.

Where the weights no longer index residues (an input encoding other than one-hot, or any hidden
layer after the first) a neuron is still a function on the `p x p` grid of pairs, read through
the cache. Its 2-D DFT

    G[ka, kb] = sum_{a,b} g[a, b] exp(-2 pi i (ka a + kb b) / p)

puts power on `(k, 0)` / `(0, k)` for what depends on `a` or `b` alone, on `(k, k)` for
functions of `a + b` and on `(k, -k)` for functions of `a - b`. The cosines of distinct
frequency pairs are orthogonal on `Z_p^2`, so the least-squares fit of

    g[a, b] ~ o + sum_T s_T cos(2 pi (ka_T a + kb_T b) / p + phi_T),   T in terms(k)

is closed-form, as for one row of weights: `o = mean(g)`, `s_T = 2 |G[T]| / p^2`,
`phi_T = arg G[T]`. The forms (`FORMS`): `additive` (terms `a` = `(k, 0)` and `b` = `(0, k)`:
the study's pre-activation `s_a cos(w a + phi_a) + s_b cos(w b + phi_b)`), `sum` (`(k, k)`: the
`s cos(w (a + b) + phi)` that a one-hot neuron's output reads), and `full` (all four first-order
terms of one frequency). Each neuron takes the `k` in `1..(p-1)/2` whose terms hold the most
power.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from analyses._common import (
    NeuronGrids,
    RowFrequencies,
    Summary,
    check_all_pairs_memory,
    check_fourier,
    check_fractions,
    check_model,
    check_neurons,
    check_orders,
    curve_ends,
    headline,
    median_or_none,
    to_jsonable,
    wrap_angle,
)
from hooked_mlp.checks import check_finite_logits
from hooked_mlp.data import all_pairs, dataset

TERMS = {"a": (1, 0), "b": (0, 1), "sum": (1, 1), "diff": (1, -1)}
FORMS = {"additive": ("a", "b"), "sum": ("sum",), "full": ("a", "b", "sum", "diff")}
HOOKS = ("pre", "post")
HARMONIC_ORDER = 2  # harmonics (m k, n k) with |m|, |n| <= 2 count as "one frequency"


def _check_layer(model: Any, layer: Any) -> int:
    L = model.cfg.n_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not -L <= layer < L:
        raise ValueError(f"layer must be an integer in [{-L}, {L - 1}] (n_layers={L}), got "
                         f"{layer!r}")
    return layer % L


def _check_choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def hook_name(layer: int, hook: str) -> str:
    """`blocks.{layer}.mlp.hook_{hook}`."""
    return f"blocks.{layer}.mlp.hook_{hook}"


@torch.no_grad()
def layer_activations(model: Any, layer: int = 0, hook: str = "post") -> NeuronGrids:
    """Every neuron of hidden layer `layer` at `hook` (`"pre"` or `"post"`) on all `p^2` pairs,
    read through `run_with_cache` (hooks included): `[d_hidden, p, p]` float64 grids (rows `a`,
    columns `b`)."""
    check_model(model)
    layer = _check_layer(model, layer)
    _check_choice("hook", hook, HOOKS)
    check_all_pairs_memory(model.cfg, 3 * max(model.cfg.d_hidden, model.cfg.p),
                           "layer_activations")
    p, name = model.cfg.p, hook_name(layer, hook)
    _, cache = model.run_with_cache(all_pairs(p, model.device), names_filter=name)
    return cache[name].detach().cpu().double().t().reshape(-1, p, p)


def _check_grids(grids: Any) -> int:
    if not isinstance(grids, Tensor) or grids.ndim != 3 or grids.shape[1] != grids.shape[2] \
            or not grids.is_floating_point():
        raise ValueError(f"grids must be a float tensor [n, p, p], got "
                         f"{getattr(grids, 'dtype', type(grids).__name__)} "
                         f"{list(getattr(grids, 'shape', []))}")
    p = grids.shape[-1]
    if p < 3:
        raise ValueError(f"grids need p >= 3 (a frequency in 1..(p-1)/2), got p = {p}")
    return p


def _pair_index(k: Tensor, term: str, p: int) -> tuple[Tensor, Tensor]:
    ma, mb = TERMS[term]
    return (ma * k) % p, (mb * k) % p


# ------------------------------------------------------------------------------ spectra
@dataclass
class GridSpectra:
    """Where each neuron's activation power lies (its mean removed), as shares of the total.

    `axis`: functions of `a` alone or `b` alone (`ka = 0` or `kb = 0`); `sum`: functions of
    `a + b` (`ka = kb`); `diff`: of `a - b` (`ka = -kb`); `other`: the rest. `k` is the frequency
    whose low harmonics `(m k, n k)`, `|m|, |n| <= 2`, hold the most power, and
    `single_frequency` that share: near 1 for a neuron that is a smooth function of the angles
    `w a` and `w b` of one frequency `w = 2 pi k / p`. `sum_k` is the frequency of the largest
    `(k, k)` term. `n_effective` is `exp(entropy) / 2` of the power over the frequency pairs
    (a conjugate pair counts once): about 1 for a pure cosine of one pair, more as the power
    spreads over more pairs. `total` is the power itself (0 for a dead or constant neuron, whose
    shares are NaN).
    """

    p: int
    total: Tensor  # [n]
    axis: Tensor
    sum: Tensor
    diff: Tensor
    other: Tensor
    k: Tensor  # int64 [n]
    single_frequency: Tensor
    sum_k: Tensor  # int64 [n]
    n_effective: Tensor

    @property
    def alive(self) -> Tensor:
        return self.total > 1e-12 * self.total.max().clamp_min(1e-300)

    def summary(self) -> dict[str, Any]:
        """Medians over the neurons that vary, and the histogram of their frequencies."""
        m = self.alive
        med = {name: float(getattr(self, name)[m].median()) if bool(m.any()) else None
               for name in ("axis", "sum", "diff", "other", "single_frequency",
                            "n_effective")}
        counts = torch.bincount(self.k[m], minlength=(self.p - 1) // 2 + 1)[1:]
        return {"n_varying": int(m.sum()), "median_share": med,
                "k_counts": counts.tolist(),
                "n_distinct_k": int((counts > 0).sum())}

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({**{k: getattr(self, k) for k in (
            "p", "total", "axis", "sum", "diff", "other", "k", "single_frequency", "sum_k",
            "n_effective")},
            "summary": self.summary()})


def grid_spectra(grids: NeuronGrids) -> GridSpectra:
    """The 2-D power spectrum of each grid `[n, p, p]`, summarised (see `GridSpectra`)."""
    p = _check_grids(grids)
    g = grids.double()
    G = torch.fft.fft2(g - g.mean(dim=(1, 2), keepdim=True))  # [n, p, p]
    P = G.abs().square()
    total = P.sum(dim=(1, 2))
    ka = torch.arange(p)[:, None]
    kb = torch.arange(p)[None, :]
    axis_m = ((ka == 0) | (kb == 0)).double()
    sum_m = ((ka == kb) & (ka != 0)).double()
    diff_m = (((ka + kb) % p == 0) & (ka != 0)).double()
    share = lambda mask: (P * mask).sum(dim=(1, 2)) / total.clamp_min(1e-300)  # noqa: E731
    axis, s, d = share(axis_m), share(sum_m), share(diff_m)
    K = (p - 1) // 2
    ks = torch.arange(1, K + 1)

    def harmonic_share(order: int) -> Tensor:  # [n, K]: power at (m k, n k), |m|, |n| <= order
        m = torch.arange(-order, order + 1)
        ia = (ks[:, None, None] * m[None, :, None]) % p  # [K, 2m+1, 1]
        ib = (ks[:, None, None] * m[None, None, :]) % p  # [K, 1, 2m+1]
        masks = torch.zeros(K, p, p, dtype=torch.float64)
        for i in range(K):  # each pair once (at small p low harmonics can coincide)
            masks[i, ia[i].expand(-1, len(m)), ib[i].expand(len(m), -1)] = 1.0
        masks[:, 0, 0] = 0.0
        return torch.einsum("nab,kab->nk", P, masks) / total.clamp_min(1e-300)[:, None]

    harmonic = harmonic_share(HARMONIC_ORDER)
    # ties (cos 4x is also the second harmonic of k = 2) go to the k of the first-order terms
    best = (harmonic + 1e-9 * harmonic_share(1)).argmax(dim=1)
    diag = P[:, ks, ks]  # [n, K]
    q = P.flatten(1) / total.clamp_min(1e-300)[:, None]
    entropy = -(q * q.clamp_min(1e-300).log()).sum(dim=1)
    nan = torch.full_like(total, float("nan"))
    alive = total > 1e-12 * total.max().clamp_min(1e-300)

    def masked(x: Tensor) -> Tensor:
        return torch.where(alive, x, nan)

    return GridSpectra(p, total, masked(axis), masked(s), masked(d),
                       masked(1 - axis - s - d), best + 1,
                       masked(harmonic.gather(1, best[:, None]).squeeze(1)),
                       diag.argmax(dim=1) + 1, masked(entropy.exp() / 2))


# ------------------------------------------------------------------------------ fits
@dataclass
class ActivationFits:
    """`grid[n, a, b] ~ offset[n] + sum_T scale[T][n] cos(2 pi k[n] (ma_T a + mb_T b) / p
    + phase[T][n])` for the terms `T` of `form`, one neuron per row (see the module docstring).
    `r2` is the share of each grid's variance the fit explains (NaN for a constant grid)."""

    p: int
    form: str
    layer: int
    hook: str
    neurons: list[int]
    k: Tensor  # int64 [n]
    scale: dict[str, Tensor]  # term -> [n]
    phase: dict[str, Tensor]  # term -> [n], in [-pi, pi)
    offset: Tensor  # [n]
    r2: Tensor  # [n]

    def values(self) -> Tensor:
        """The fitted grids `[n, p, p]` (float64)."""
        p = self.p
        x = torch.arange(p, dtype=torch.float64)
        w = (2 * math.pi * self.k.double() / p)[:, None, None]
        out = self.offset.double()[:, None, None].expand(-1, p, p).clone()
        for term in FORMS[self.form]:
            ma, mb = TERMS[term]
            arg = w * (ma * x[:, None] + mb * x[None, :]) + self.phase[term].double()[:, None,
                                                                                      None]
            out += self.scale[term].double()[:, None, None] * torch.cos(arg)
        return out

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"p": self.p, "form": self.form, "layer": self.layer,
                            "hook": self.hook, "neurons": self.neurons, "k": self.k,
                            "scale": self.scale, "phase": self.phase, "offset": self.offset,
                            "r2": self.r2})

    def summary(self) -> Summary:
        return headline({"p": self.p, "form": self.form, "layer": self.layer, "hook": self.hook,
                         "n_neurons": len(self.neurons), "r2_median": median_or_none(self.r2)})


def _r2(grids: Tensor, fitted: Tensor) -> Tensor:
    g = grids.double()
    sst = (g - g.mean(dim=(1, 2), keepdim=True)).square().sum(dim=(1, 2))
    sse = (g - fitted).square().sum(dim=(1, 2))
    return torch.where(sst > 1e-24 * sst.max().clamp_min(1e-300), 1 - sse / sst.clamp_min(
        1e-300), torch.full_like(sst, float("nan")))


def fit_grids(grids: NeuronGrids, form: str = "full", k: RowFrequencies | None = None, *,
              layer: int = 0,
              hook: str = "post", neurons: list[int] | None = None) -> ActivationFits:
    """Closed-form least-squares fit of each grid `[n, p, p]` with the terms of `form`
    (`additive`, `sum`, `full`) at one frequency per grid: `k` (int `[n]`) if given, else the
    `k` in `1..(p-1)/2` whose terms hold the most power."""
    p = _check_grids(grids)
    _check_choice("form", form, tuple(FORMS))
    n = grids.shape[0]
    K = (p - 1) // 2
    g = grids.double()
    G = torch.fft.fft2(g)  # [n, p, p]
    ks = torch.arange(1, K + 1)
    if k is None:
        power = torch.zeros(n, K, dtype=torch.float64)
        for term in FORMS[form]:
            ia, ib = _pair_index(ks, term, p)
            power += G[:, ia, ib].abs().square()
        k = power.argmax(dim=1) + 1
    else:
        if not isinstance(k, Tensor) or k.shape != (n,) or k.dtype.is_floating_point or (
                n and not (int(k.min()) >= 1 and int(k.max()) <= K)):
            raise ValueError(f"k must be an integer tensor [{n}] with values in 1..{K}")
        k = k.long()
    rows = torch.arange(n)
    scale, phase = {}, {}
    for term in FORMS[form]:
        ia, ib = _pair_index(k, term, p)
        coeff = G[rows, ia, ib]  # [n]
        scale[term] = 2 * coeff.abs() / p**2
        phase[term] = wrap_angle(torch.angle(coeff))
    fits = ActivationFits(p, form, layer, hook,
                          list(range(n)) if neurons is None else list(neurons), k, scale, phase,
                          g.mean(dim=(1, 2)), torch.zeros(n, dtype=torch.float64))
    fits.r2 = _r2(g, fits.values())
    return fits


def fit_activations(model: Any, layer: int = 0, hook: str = "post", form: str = "full",
                    neurons: Sequence[int] | None = None) -> ActivationFits:
    """Fit every chosen neuron of hidden layer `layer` at `hook` (`"pre"`, `"post"`) as a
    function of `(a, b)` with `form` (see `fit_grids`). Works for every input encoding and
    every layer: the grids come from the cache, not from the weights."""
    check_model(model)
    check_fourier(model.cfg, "fit_activations")
    layer = _check_layer(model, layer)
    chosen = check_neurons(neurons, model.cfg.d_hidden)
    grids = layer_activations(model, layer, hook)[chosen]
    return fit_grids(grids, form, layer=layer, hook=hook, neurons=chosen)


# ------------------------------------------------------------------------------ replacement
@dataclass
class ActivationReplacementCurve:
    """Accuracy over every pair of the dataset as a growing share of a layer's neurons have
    their activation at `hook` replaced by its fit (`form`), through a hook; `accuracy[i][j]`
    is order `i` at `fractions[j]`."""

    layer: int
    hook: str
    form: str
    fractions: list[float]
    accuracy: list[list[float]]
    seed: int

    @property
    def mean(self) -> list[float]:
        return [sum(col) / len(col) for col in zip(*self.accuracy, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"layer": self.layer, "hook": self.hook, "form": self.form,
                            "fractions": self.fractions, "accuracy": self.accuracy,
                            "mean": self.mean, "seed": self.seed})

    def summary(self) -> Summary:
        return headline({"layer": self.layer, "hook": self.hook, "form": self.form,
                         **curve_ends(self.fractions, self.mean), "n_orders": len(self.accuracy)})


@torch.no_grad()
def accuracy_with_replaced(model: Any, fits: ActivationFits, neurons: Sequence[int],
                           _values: Tensor | None = None) -> float:
    """Accuracy over the dataset's pairs when `neurons` (of `fits.layer`) have their value at
    `fits.hook` replaced by the fitted grids, through a hook (`run_with_hooks`)."""
    check_model(model)
    if fits.p != model.cfg.p or max(fits.neurons, default=-1) >= model.cfg.d_hidden:
        raise ValueError(f"fits do not belong to this model (fitted with p={fits.p} on "
                         f"{len(fits.neurons)} neurons)")
    chosen = check_neurons(list(neurons), model.cfg.d_hidden)
    col = {n: i for i, n in enumerate(fits.neurons)}
    missing = [n for n in chosen if n not in col]
    if missing:
        raise ValueError(f"neurons {missing[:5]} have no fit")
    tokens, labels = dataset(model.cfg)
    tokens, labels = tokens.to(model.device), labels.to(model.device)
    p = model.cfg.p
    flat = (fits.values() if _values is None else _values).reshape(len(fits.neurons), p * p)
    rows = tokens[:, 0] * p + tokens[:, 1]
    idx = torch.tensor(chosen, dtype=torch.int64)
    fidx = torch.tensor([col[n] for n in chosen], dtype=torch.int64)
    value = flat[fidx][:, rows].t().float().to(model.device)  # [batch, len(chosen)]

    def replace(act: Tensor, hook: Any) -> Tensor:
        act = act.clone()
        act[:, idx.to(act.device)] = value
        return act

    logits = model.run_with_hooks(tokens, fwd_hooks=[(hook_name(fits.layer, fits.hook),
                                                      replace)])
    check_finite_logits(logits, "the accuracy with fitted activations")
    return float((logits.argmax(-1) == labels).double().mean())


def activation_replacement_curve(
    model: Any, layer: int = 0, hook: str = "pre", form: str = "additive",
    fractions: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0), n_orders: int = 3,
    seed: int = 0, fits: ActivationFits | None = None,
) -> ActivationReplacementCurve:
    """Replace a growing random share of layer `layer`'s neurons' values at `hook` by their
    `form` fits (`n_orders` random orders drawn from `seed`) and measure the accuracy: the
    study's replacement experiment on activations instead of weights. With `hook="pre"` the
    activation function still follows the fit."""
    check_model(model)
    fracs = check_fractions(fractions)
    check_orders(n_orders, seed)
    if fits is None:
        fits = fit_activations(model, layer, hook, form)
    elif not isinstance(fits, ActivationFits):
        raise TypeError(f"fits must be ActivationFits (fit_activations), got "
                        f"{type(fits).__name__}")
    H = model.cfg.d_hidden
    gen = torch.Generator().manual_seed(seed)
    values = fits.values()
    curves = []
    for _ in range(n_orders):
        order = torch.randperm(H, generator=gen).tolist()
        curves.append([accuracy_with_replaced(model, fits, order[:round(f * H)], values)
                       for f in fracs])
    return ActivationReplacementCurve(fits.layer, fits.hook, fits.form, fracs, curves, seed)


__all__ = ["FORMS", "TERMS", "ActivationFits", "ActivationReplacementCurve", "GridSpectra",
           "accuracy_with_replaced", "activation_replacement_curve", "fit_activations",
           "fit_grids", "grid_spectra", "layer_activations"]
