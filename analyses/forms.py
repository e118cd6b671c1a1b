"""Competing descriptions of each neuron's weights, and which one the evidence prefers.

The study describes every weight vector `w[x]` over `x = 0..p-1` (`W_a[:, n]`, `W_b[:, n]`,
`W_out[n, :]`) by one cosine. Five forms compete here, each fitted by least squares to every
row at once (`theta = 2 pi k x / p + phi`, `k` an integer in `1..(p-1)/2`):

    cosine     s cos(theta) + o                                   5 parameters (k, s, phi, o)
    harmonics  o + sum_{h=1..3} s_h cos(h theta_h)                9 (k, o, 3 x (s_h, phi_h))
    square     s sign(cos(theta)) + o                             5 (k, s, phi, o)
    clipped    s clip(cos(theta), lo, hi) + o                     7 (k, s, phi, o, lo, hi)
    two_freq   s1 cos(theta_1) + s2 cos(theta_2) + o              9 (k1, k2, s1, s2, phi1, phi2, o)

How each is fitted, all vectorised over rows:
- cosine, harmonics, two_freq: closed form from the DFT (the Fourier basis of Z_p is orthogonal;
  `analyses.cosine_fit`). `harmonics` takes the `k` whose components at `k, 2k, 3k` hold the most
  power; `two_freq` the two frequencies with the most power.
- square: for odd p the sign pattern `sign(cos(2 pi k x / p + phi))` changes only when `phi`
  crosses `pi/2 - m pi / p`, so the `2p` phases between those points give every pattern there is;
  every (k, pattern) is scored at once (one matrix product) and `s`, `o` are a linear regression.
  The phase is the middle of the winning interval: identified to +- pi / (2p), no better.
- clipped: the clipped cosine is even about its peak, so its fundamental's phase is `phi` (up to
  aliasing of harmonics beyond p, negligible); `phi` is read from the DFT, `k` among the 3
  strongest frequencies, and `(lo, hi)` from a grid refined once around its best point (every
  grid point costs O(1) per row: cumulative sums over the sorted cosine, `_ClipSums`).

Model selection charges for parameters with the BIC, `p ln(SSE / p) + m ln(p)` over the `p`
residues (a row's SSE is floored at `1e-12` of its variance, so exact fits tie and the cheaper
form wins). An integer frequency counts as two parameters: it is the best of (p-1)/2
candidates, which one `ln p` does not pay for: on 400 draws of a cosine plus white noise
(amplitude 0.7, noise sd 0.05) counting it once picked two_freq in 8.8 % of draws at p = 61
(5.3 % at p = 113), counting it twice in 0.75 % (0.5 %); the cosine won 96.75 % (98 %). The
square wave's discrete phase counts as one. `form_replacement` replaces neurons by each
form's fit (and by each weight vector's winning form) and measures the accuracy that is left.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from analyses._common import (
    PerRow,
    Rows,
    Summary,
    Vector,
    check_all_pairs_memory,
    check_fourier,
    check_fractions,
    check_model,
    check_neurons,
    check_no_hooks,
    check_one_hot,
    check_one_layer,
    check_orders,
    headline,
    median_or_none,
    to_jsonable,
    wrap_angle,
)
from analyses.cosine_fit import fit_cosines, fit_harmonics
from analyses.fourier import SIGNALS, dft, n_frequencies, neuron_signals

FORMS = ("cosine", "harmonics", "square", "clipped", "two_freq")
N_PARAMS = {"cosine": 5, "harmonics": 9, "square": 5, "clipped": 7, "two_freq": 9}
N_HARMONICS = 3
SCORE = "bic"
CLIP_CANDIDATES = 3  # frequencies tried for the clipped cosine (the strongest ones)
CLIP_GRID = 41  # levels per side of the clipped cosine's (lo, hi) grid


# ------------------------------------------------------------------------------------ results
@dataclass
class FormFit:
    """One form fitted to every row of `w` `[n, p]`.

    `params` maps a parameter name to `[n]` (or `[n, H]` for the harmonics' scales and phases);
    `values` `[n, p]` is the fitted curves; `sse`, `r2` and `bic` are `[n]` (`r2` NaN for a
    constant row, which has no variance to explain).
    """

    form: str
    p: int
    params: dict[str, Tensor]
    values: Tensor
    sse: Tensor
    r2: Tensor
    bic: Tensor

    @property
    def n_params(self) -> int:
        return N_PARAMS[self.form]

    def formula(self, i: int, var: str = "x") -> str:
        """Row `i`'s fit as text, e.g. `0.51·sign(cos(2π·17x/113 + 1.05)) - 0.01`."""
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(self.sse):
            raise ValueError(f"i must be a row index in [0, {len(self.sse) - 1}], got {i!r}")
        q = {k: v[i].tolist() for k, v in self.params.items()}

        def cos(k: int, phi: float) -> str:
            sign = "-" if phi < 0 else "+"
            return f"cos(2π·{k}{var}/{self.p} {sign} {abs(phi):.2f})"

        if self.form == "harmonics":
            terms = [f"{s:.3g}·{cos(h * q['k'], phi)}" for h, (s, phi) in
                     enumerate(zip(q["scale"], q["phase"], strict=True), start=1)]
            body = " + ".join(terms)
        elif self.form == "two_freq":
            body = (f"{q['scale']:.3g}·{cos(q['k'], q['phase'])} + "
                    f"{q['scale2']:.3g}·{cos(q['k2'], q['phase2'])}")
        elif self.form == "square":
            body = f"{q['scale']:.3g}·sign({cos(q['k'], q['phase'])})"
        elif self.form == "clipped":
            body = (f"{q['scale']:.3g}·clip({cos(q['k'], q['phase'])}, {q['lo']:.2f}, "
                    f"{q['hi']:.2f})")
        else:
            body = f"{q['scale']:.3g}·{cos(q['k'], q['phase'])}"
        o = q["offset"]
        return f"{body} {'-' if o < 0 else '+'} {abs(o):.3g}"

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"form": self.form, "p": self.p, "n_params": self.n_params,
                            "params": self.params, "r2": self.r2, "bic": self.bic})

    def summary(self) -> Summary:
        return headline({"form": self.form, "p": self.p, "n_params": self.n_params,
                         "n_rows": int(self.sse.numel()), "r2_median": median_or_none(self.r2),
                         "bic_median": median_or_none(self.bic)})


@dataclass
class FormComparison:
    """Every form fitted to every neuron's `a`, `b` and `out` weights, and the winners.

    `fits[signal][form]` is a `FormFit`; `winners[signal]` names the form with the lowest BIC
    per neuron (in `neurons` order); `defined[signal]` is False for a constant weight vector
    (every form fits it exactly: it is counted nowhere).
    """

    p: int
    neurons: list[int]
    fits: dict[str, dict[str, FormFit]]
    winners: dict[str, list[str]]
    defined: dict[str, Tensor]
    score: str = SCORE

    def win_counts(self) -> dict[str, dict[str, int]]:
        """How many neurons each form wins, per signal (defined rows only)."""
        out = {}
        for sig, names in self.winners.items():
            ok = self.defined[sig].tolist()
            out[sig] = {f: sum(1 for n, d in zip(names, ok, strict=True) if d and n == f)
                        for f in FORMS}
        return out

    def summary(self) -> dict[str, Any]:
        """Share of neurons each form wins and the median R² of each form, per signal."""
        counts = self.win_counts()
        s: dict[str, Any] = {"score": self.score, "n_neurons": len(self.neurons)}
        for sig, fits in self.fits.items():
            ok = self.defined[sig]
            total = max(1, int(ok.sum()))
            s[sig] = {
                "n_defined": int(ok.sum()),
                "win_share": {f: counts[sig][f] / total for f in FORMS},
                "r2_median": {f: _median(fits[f].r2[ok]) for f in FORMS},
                "bic_minus_cosine_median": {
                    f: _median((fits[f].bic - fits["cosine"].bic)[ok]) for f in FORMS},
            }
        return s

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({
            "p": self.p, "neurons": self.neurons, "score": self.score, "winners": self.winners,
            "fits": {sig: {f: fit.to_dict() for f, fit in fits.items()}
                     for sig, fits in self.fits.items()},
            "summary": self.summary()})


def _median(x: Tensor) -> float:
    x = x[x.isfinite()]
    return float(x.median()) if x.numel() else float("nan")


# ------------------------------------------------------------------------------------ fitting
def _check_rows(w: Any) -> Tensor:
    if not isinstance(w, Tensor) or not w.is_floating_point():
        raise TypeError(f"w must be a 2-D float tensor [n, p], got "
                        f"{getattr(w, 'dtype', type(w).__name__)}")
    if w.ndim != 2:
        raise ValueError(f"w must be a 2-D float tensor [n, p], got shape {list(w.shape)}")
    if w.shape[0] < 1 or w.shape[1] < 5:
        raise ValueError(f"w must have at least one row and p >= 5 columns (two frequencies), "
                         f"got {list(w.shape)}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("w holds NaN or infinite values: no fit of it would mean anything")
    return w.detach().double().cpu()


def score_fit(w: Rows, values: Rows, n_params: int) -> tuple[PerRow, PerRow, PerRow]:
    """SSE, R² and BIC of fitted curves `values` against rows `w` (both float64 `[n, p]`), for
    a form with `n_params` parameters: `[n]` each.

    `BIC = p ln(SSE / p) + n_params ln p` (Gaussian residuals, their variance estimated by
    `SSE / p`, the same for every form, so it is not counted). SSE is floored at `1e-12` of the
    row's variance: exact fits tie and the cheaper form wins. R² is NaN for a constant row.
    """
    p = w.shape[1]
    sst = (w - w.mean(dim=1, keepdim=True)).square().sum(dim=1)
    sse = (w - values).square().sum(dim=1)
    r2 = torch.where(sst > 0, 1 - sse / sst.clamp_min(1e-300), torch.full_like(sst, math.nan))
    floor = 1e-12 * sst + 1e-300
    bic = p * torch.log(torch.maximum(sse, floor) / p) + n_params * math.log(p)
    return sse, r2, bic


def _finish(form: str, w: Tensor, params: dict[str, Tensor], values: Tensor) -> FormFit:
    """The `FormFit` of `values` (float64 `[n, p]`) fitted to `w`."""
    sse, r2, bic = score_fit(w, values, N_PARAMS[form])
    return FormFit(form, w.shape[1], params, values, sse, r2, bic)


def _angle(k: Tensor, phase: Tensor, p: int) -> Tensor:
    """`2 pi k x / p + phase` for `x = 0..p-1`: `[n, p]` from `k`, `phase` `[n]`."""
    x = torch.arange(p, dtype=torch.float64)
    return 2 * math.pi * k.double()[:, None] * x / p + phase.double()[:, None]


def _fit_cosine(w: Tensor) -> FormFit:
    c = fit_cosines(w)
    params = {"k": c.k, "scale": c.scale.double(), "phase": c.phase.double(),
              "offset": c.offset.double()}
    values = params["scale"][:, None] * torch.cos(_angle(c.k, params["phase"], w.shape[1]))
    return _finish("cosine", w, params, values + params["offset"][:, None])


def _fit_harmonics(w: Tensor) -> FormFit:
    p = w.shape[1]
    K = n_frequencies(p)
    power = torch.fft.fft(w, dim=-1).abs().square()  # [n, p]
    ks = torch.arange(1, K + 1)
    total = sum(power[:, (h * ks) % p] for h in range(1, N_HARMONICS + 1))  # [n, K]
    k = total.argmax(dim=1) + 1
    h = fit_harmonics(w, k, N_HARMONICS)
    params = {"k": k, "scale": h.scale.double(), "phase": h.phase.double(),
              "offset": h.offset.double()}
    values = params["offset"][:, None].expand(-1, p).clone()
    for j in range(N_HARMONICS):
        values += params["scale"][:, j, None] * torch.cos(_angle((j + 1) * k, params["phase"][:, j],
                                                                 p))
    return _finish("harmonics", w, params, values)


def _fit_two_freq(w: Tensor) -> FormFit:
    p = w.shape[1]
    F = dft(w)[:, 1:]  # [n, K]: frequencies 1..K
    top = F.abs().topk(2, dim=1).indices + 1  # [n, 2]
    c1, c2 = fit_cosines(w, top[:, 0]), fit_cosines(w, top[:, 1])
    params = {"k": c1.k, "scale": c1.scale.double(), "phase": c1.phase.double(),
              "k2": c2.k, "scale2": c2.scale.double(), "phase2": c2.phase.double(),
              "offset": c1.offset.double()}
    values = (params["scale"][:, None] * torch.cos(_angle(c1.k, params["phase"], p))
              + params["scale2"][:, None] * torch.cos(_angle(c2.k, params["phase2"], p))
              + params["offset"][:, None])
    return _finish("two_freq", w, params, values)


@lru_cache(maxsize=8)
def _square_patterns(p: int) -> tuple[Tensor, Tensor]:
    """Every square-wave pattern of Z_p: `[K, 2p, p]` (+-1), and the phases `[2p]` (middles of
    the intervals between the phases where a pattern changes)."""
    m = torch.arange(2 * p, dtype=torch.float64)
    phases = math.pi / 2 - (m + 0.5) * math.pi / p
    k = torch.arange(1, n_frequencies(p) + 1, dtype=torch.float64)
    x = torch.arange(p, dtype=torch.float64)
    arg = 2 * math.pi * k[:, None, None] * x / p + phases[None, :, None]
    return torch.sign(torch.cos(arg)), phases


def _fit_square(w: Tensor) -> FormFit:
    n, p = w.shape
    patterns, phases = _square_patterns(p)  # [K, M, p], [M]
    K, M = patterns.shape[:2]
    g_mean = patterns.mean(dim=-1)  # [K, M]
    g_var = p * (1 - g_mean.square())  # sum_x (g - mean g)^2, as g^2 = 1
    wc = w - w.mean(dim=1, keepdim=True)
    corr = (wc @ patterns.reshape(K * M, p).t()).reshape(n, K, M)  # [n, K, M]
    gain = corr.square() / g_var  # the drop in squared error
    best = gain.reshape(n, -1).argmax(dim=1)
    ki, mi = best // M, best % M
    scale = corr[torch.arange(n), ki, mi] / g_var[ki, mi]
    offset = w.mean(dim=1) - scale * g_mean[ki, mi]
    phase = wrap_angle(phases[mi] + math.pi * (scale < 0))  # a negative scale: shifted by pi
    params = {"k": ki + 1, "scale": scale.abs(), "phase": phase, "offset": offset}
    values = params["scale"][:, None] * torch.sign(torch.cos(_angle(ki + 1, phase, p)))
    return _finish("square", w, params, values + offset[:, None])


class _ClipSums:
    """Least squares of rows `w` `[n, p]` on `clip(basis, lo, hi)` for many levels at once.

    With each basis curve `[n, C, p]` sorted, `clip(c, lo, hi)` is `lo` below one index, `c`
    between two and `hi` above, so every sum the regression needs is a difference of cumulative
    sums at the indices `searchsorted` gives: O(p log p + L) per curve instead of O(L p).
    """

    def __init__(self, w: Tensor, basis: Tensor) -> None:
        self.p = w.shape[1]
        self.c, order = basis.sort(dim=-1)  # [n, C, p]
        ws = w[:, None, :].expand_as(basis).gather(-1, order)
        zero = torch.zeros(*basis.shape[:-1], 1, dtype=torch.float64)
        self.s1 = torch.cat([zero, self.c.cumsum(-1)], dim=-1)  # [n, C, p + 1]
        self.s2 = torch.cat([zero, self.c.square().cumsum(-1)], dim=-1)
        self.sw = torch.cat([zero, ws.cumsum(-1)], dim=-1)
        self.scw = torch.cat([zero, (self.c * ws).cumsum(-1)], dim=-1)

    def scores(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Squared-error drop, scale and offset `[n, C, L]` for levels `lo`, `hi` `[n, C, L]`."""
        p = self.p
        i = torch.searchsorted(self.c.contiguous(), lo.contiguous())  # values below lo
        j = torch.searchsorted(self.c.contiguous(), hi.contiguous(), right=True)
        j = torch.maximum(i, j)

        def at(cum: Tensor, k: Tensor) -> Tensor:
            return cum.gather(-1, k)

        n_lo, n_hi = i.double(), (p - j).double()
        sum_g = lo * n_lo + at(self.s1, j) - at(self.s1, i) + hi * n_hi
        sum_g2 = lo.square() * n_lo + at(self.s2, j) - at(self.s2, i) + hi.square() * n_hi
        sum_w = self.sw[..., -1:]
        sum_gw = (lo * at(self.sw, i) + at(self.scw, j) - at(self.scw, i)
                  + hi * (sum_w - at(self.sw, j)))
        var = (sum_g2 - sum_g.square() / p).clamp_min(1e-300)
        cov = sum_gw - sum_g * sum_w / p
        scale = cov / var
        offset = (sum_w - scale * sum_g) / p
        return cov.square() / var, scale, offset


def _fit_clipped(w: Tensor) -> FormFit:
    n, p = w.shape
    F = dft(w)[:, 1:]  # [n, K]: frequencies 1..K
    C = min(CLIP_CANDIDATES, F.shape[1])
    cand = F.abs().topk(C, dim=1).indices  # [n, C]
    phase = torch.angle(F.gather(1, cand))  # [n, C]
    x = torch.arange(p, dtype=torch.float64)
    basis = torch.cos(2 * math.pi * (cand + 1).double()[..., None] * x / p + phase[..., None])
    sums = _ClipSums(w, basis)
    levels = torch.linspace(-1, 1, CLIP_GRID, dtype=torch.float64)
    lo_g, hi_g = torch.meshgrid(levels, levels, indexing="ij")
    keep = hi_g - lo_g > 1.5 / (CLIP_GRID - 1)
    lo_all, hi_all = lo_g[keep], hi_g[keep]  # [L]
    L = len(lo_all)
    gain, _, _ = sums.scores(lo_all.expand(n, C, L), hi_all.expand(n, C, L))  # [n, C, L]
    best = gain.reshape(n, -1).argmax(dim=1)
    ci, li = best // L, best % L
    # refine: a finer grid around the best (lo, hi), on every candidate (cheap), best kept
    step = 2 / (CLIP_GRID - 1)
    fine = torch.linspace(-step, step, 11, dtype=torch.float64)
    dlo, dhi = torch.meshgrid(fine, fine, indexing="ij")
    lo2 = (lo_all[li][:, None] + dlo.flatten()).clamp(-1, 1)  # [n, 121]
    hi2 = torch.maximum((hi_all[li][:, None] + dhi.flatten()).clamp(-1, 1), lo2 + 1e-3)
    lo2, hi2 = lo2[:, None, :].expand(n, C, -1), hi2[:, None, :].expand(n, C, -1)
    gain2, scale2, off2 = sums.scores(lo2.contiguous(), hi2.contiguous())
    r = torch.arange(n)
    j = gain2[r, ci].argmax(dim=1)
    scale, offset = scale2[r, ci, j], off2[r, ci, j]
    lo, hi = lo2[r, ci, j], hi2[r, ci, j]
    ph = phase[r, ci]
    # a negative scale is the same curve as the clipped cosine shifted by pi, levels negated
    neg = scale < 0
    lo, hi = torch.where(neg, -hi, lo), torch.where(neg, -lo, hi)
    ph = torch.where(neg, wrap_angle(ph + math.pi), ph)
    k = cand[r, ci] + 1
    params = {"k": k, "scale": scale.abs(), "phase": ph, "offset": offset, "lo": lo, "hi": hi}
    curve = torch.minimum(torch.maximum(torch.cos(_angle(k, ph, p)), lo[:, None]), hi[:, None])
    values = params["scale"][:, None] * curve + offset[:, None]
    return _finish("clipped", w, params, values)


_FITTERS = {"cosine": _fit_cosine, "harmonics": _fit_harmonics, "square": _fit_square,
            "clipped": _fit_clipped, "two_freq": _fit_two_freq}


def fit_form(w: Rows, form: str) -> FormFit:
    """Fit `form` (one of `FORMS`) to every row of `w` (`[n, p]`, `p >= 5`)."""
    if form not in _FITTERS:
        raise ValueError(f"form must be one of {list(FORMS)}, got {form!r}")
    return _FITTERS[form](_check_rows(w))


def fit_forms(w: Rows, forms: Sequence[str] = FORMS) -> dict[str, FormFit]:
    """Every form of `forms` fitted to every row of `w` (`[n, p]`): `{form: FormFit}`."""
    if isinstance(forms, str) or not all(f in _FITTERS for f in forms) or not forms:
        raise ValueError(f"forms must be a non-empty list drawn from {list(FORMS)}, got {forms!r}")
    rows = _check_rows(w)
    return {f: _FITTERS[f](rows) for f in forms}


def select_forms(fits: dict[str, FormFit]) -> list[str]:
    """The form with the lowest BIC per row (ties go to the earlier form of `FORMS`), from
    `fit_forms`'s `{form: FormFit}`."""
    if not isinstance(fits, dict) or not fits or any(
            not isinstance(v, FormFit) or k not in FORMS for k, v in fits.items()):
        raise TypeError("fits must be a non-empty {form: FormFit} dict, as fit_forms returns")
    names = [f for f in FORMS if f in fits]
    bic = torch.stack([fits[f].bic for f in names], dim=1)  # [n, F]
    return [names[i] for i in bic.argmin(dim=1).tolist()]


def compare_forms(model: Any, neurons: Sequence[int] | None = None) -> FormComparison:
    """Fit every form of `FORMS` to every neuron's `W_a`, `W_b` and `W_out` weights and pick
    each weight vector's form by BIC. One hidden layer (a neuron's output weights), one-hot
    inputs (weights indexed by residue), p >= 5. `neurons`: indices (None: every neuron)."""
    check_model(model)
    check_fourier(model.cfg, "compare_forms")
    check_one_layer(model, "compare_forms")
    check_one_hot(model, "compare_forms")
    if model.cfg.p < 5:
        raise ValueError(f"compare_forms needs p >= 5 (two frequencies for two_freq), got "
                         f"p={model.cfg.p}")
    chosen = check_neurons(neurons, model.cfg.d_hidden)
    if not chosen:
        raise ValueError("neurons must name at least one neuron (None: all of them)")
    idx = torch.tensor(chosen)
    signals = neuron_signals(model)
    fits, winners, defined = {}, {}, {}
    for sig in SIGNALS:
        w = signals[sig][idx]
        fits[sig] = fit_forms(w)
        winners[sig] = select_forms(fits[sig])
        defined[sig] = fits[sig]["cosine"].r2.isfinite()
    return FormComparison(model.cfg.p, chosen, fits, winners, defined)


# -------------------------------------------------------------------------------- replacement
REPLACEMENT_FORMS = (*FORMS, "best")


@dataclass
class FormReplacement:
    """Accuracy (all pairs) as neurons are replaced by the fit of each form, in random orders.

    `curves[form]` is a `analyses.replacement.ReplacementCurve` (its `form` field holds the form
    name); `"best"` replaces each weight vector by its own winning form.
    """

    curves: dict[str, Any]
    fractions: list[float] = field(default_factory=list)

    def at(self, fraction: float) -> dict[str, float]:
        return {f: c.at(fraction) for f, c in self.curves.items()}

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"fractions": self.fractions,
                            "curves": {f: c.to_dict() for f, c in self.curves.items()},
                            "at_0.9": self.at(0.9), "at_1.0": self.at(1.0)})

    def summary(self) -> Summary:
        """Each form's mean accuracy with every neuron replaced (`at_1.0`)."""
        return headline({f"{form}_at_1.0": c.at(1.0) for form, c in self.curves.items()})


def form_weights(comparison: FormComparison, form: str) -> dict[str, Tensor]:
    """The fitted weights of `form` (or `"best"`: each vector's winner) for every compared
    neuron: `W_a`, `W_b` `[p, n]` and `W_out` `[n, p]` (float32)."""
    if not isinstance(comparison, FormComparison):
        raise TypeError(f"comparison must be a FormComparison (from compare_forms), got "
                        f"{type(comparison).__name__}")
    if form not in REPLACEMENT_FORMS:
        raise ValueError(f"form must be one of {list(REPLACEMENT_FORMS)}, got {form!r}")
    out = {}
    for sig, key in (("a", "W_a"), ("b", "W_b"), ("out", "W_out")):
        fits = comparison.fits[sig]
        if form == "best":
            rows = [fits[f].values[i] for i, f in enumerate(comparison.winners[sig])]
            values = torch.stack(rows)
        else:
            values = fits[form].values
        out[key] = (values if sig == "out" else values.t()).float()
    return out


def form_replacement(
    model: Any,
    comparison: FormComparison | None = None,
    forms: Sequence[str] = REPLACEMENT_FORMS,
    fractions: Sequence[float] = tuple(i / 10 for i in range(11)),
    n_orders: int = 5,
    seed: int = 0,
) -> FormReplacement:
    """Replace a growing fraction of neurons (inputs and outputs) by each form's fit and
    measure the accuracy over all pairs, averaged over `n_orders` random orders (the same
    orders for every form). Needs a comparison of every neuron (`compare_forms(model)`).

    The logits are updated neuron by neuron (`analyses.replacement.accuracy_along_orders`),
    from the original model for fractions up to 1/2 and, for the larger ones, from the model
    with every neuron replaced, restoring the original weights in the reversed order: a curve
    costs the same, and `fractions=[0.9, 1.0]` costs a tenth of the neurons' updates.
    """
    from analyses.cosine_fit import fit_neurons
    from analyses.replacement import ReplacementCurve, accuracy_along_orders, replace_neurons

    check_model(model)
    check_one_layer(model, "form_replacement")
    check_one_hot(model, "form_replacement")
    check_no_hooks(model, "form_replacement")
    check_all_pairs_memory(model.cfg, 4 * model.cfg.d_hidden + 2 * model.cfg.p,
                           "form_replacement")
    fracs = check_fractions(fractions)
    check_orders(n_orders, seed)
    if isinstance(forms, str) or not forms or any(f not in REPLACEMENT_FORMS for f in forms):
        raise ValueError(f"forms must be a non-empty list drawn from {list(REPLACEMENT_FORMS)}, "
                         f"got {forms!r}")
    H = model.cfg.d_hidden
    if comparison is None:
        comparison = compare_forms(model)
    if not isinstance(comparison, FormComparison):
        raise TypeError(f"comparison must be a FormComparison (from compare_forms), got "
                        f"{type(comparison).__name__}")
    if comparison.neurons != list(range(H)) or comparison.p != model.cfg.p:
        raise ValueError("comparison must cover every neuron of this model "
                         "(compare_forms(model))")
    gen = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(H, generator=gen).tolist() for _ in range(n_orders)]
    counts = [round(f * H) for f in fracs]
    low = [i for i, m in enumerate(counts) if 2 * m <= H]  # from the original model
    high = [i for i, m in enumerate(counts) if 2 * m > H]  # back from the replaced one
    original = {"W_a": model.W_a.detach().cpu(), "W_b": model.W_b.detach().cpu(),
                "W_out": model.W_out.detach().cpu()}
    reversed_orders = [order[::-1] for order in orders]
    fits = fit_neurons(model) if high else None  # replace_neurons indexes neurons by a fit
    curves = {}
    for form in forms:
        weights = form_weights(comparison, form)
        acc = [[0.0] * len(fracs) for _ in orders]
        parts = []
        if low:
            parts.append((low, accuracy_along_orders(
                model, weights, "both", orders, [counts[i] / H for i in low])))
        if high:
            replaced = replace_neurons(model, range(H), fits, weights=weights)
            parts.append((high, accuracy_along_orders(
                replaced, original, "both", reversed_orders,
                [(H - counts[i]) / H for i in high])))
        for where, runs in parts:
            for row, run in zip(acc, runs, strict=True):
                for i, a in zip(where, run, strict=True):
                    row[i] = a
        curves[form] = ReplacementCurve(fracs, "random", form, "both", acc, seed)
    return FormReplacement(curves, fracs)


def discover(w: Vector, budget_s: float | None = None, **kwargs: Any) -> Any:
    """Automated discovery of one weight vector's closed form (`[p]`): the library of this
    module and, with the `symbolic` extra, symbolic regression. See
    `analyses.discovery.discover`, which this calls (and which imports this module)."""
    from analyses.discovery import discover as _discover

    return _discover(w, budget_s=budget_s, **kwargs)


__all__ = ["FORMS", "N_PARAMS", "REPLACEMENT_FORMS", "FormComparison", "FormFit",
           "FormReplacement", "compare_forms", "discover", "fit_form", "fit_forms",
           "form_replacement", "form_weights", "score_fit", "select_forms"]
