"""Per-neuron cosine fits of `W_a`, `W_b` and `W_out`, and how well the study's relations hold.

For an integer frequency `k` the least-squares fit of `s cos(2 pi k x / p + phi) + o` over
`x = 0..p-1` is closed-form, because the DFT basis is orthogonal on Z_p:

    F_k = sum_x w[x] exp(-2 pi i k x / p)   =>   s = 2|F_k| / p,  phi = arg F_k,  o = mean(w)

and the best single frequency is the `k` in `1..(p-1)/2` with the largest `|F_k|`. Its R^2 (share
of the variance explained) is `|F_k|^2 / sum_j |F_j|^2`. The study fitted with a free, continuous
frequency (scipy's `curve_fit`); `refine=True` does that too, starting from the closed form, so
one can see whether it lands on an integer.

The study's claims, measured rather than assumed: `a` and `b` share `k`, `s` and `o` and differ in
phase; the output has the same `k`; and `phi_out ~ phi_a + phi_b (mod 2 pi)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from analyses._common import (
    DeadMask,
    RowFrequencies,
    Rows,
    Summary,
    check_all_pairs_memory,
    check_fourier,
    check_model,
    check_neurons,
    check_one_hot,
    check_one_layer,
    headline,
    median_or_none,
    phase_sign,
    to_jsonable,
    wrap_angle,
)
from analyses.fourier import dft, n_frequencies, neuron_signals


@dataclass
class CosineFit:
    """`w[n, x] ~ scale[n] * cos(2 pi freq[n] x / p + phase[n]) + offset[n]`, one row per neuron.

    `k` is the integer frequency of the closed-form fit; `freq` equals `k` unless the fit was
    refined with a free frequency. `r2` is the share of the row's variance the fit explains.
    """

    p: int
    k: Tensor  # int64 [n]
    scale: Tensor  # [n], >= 0
    phase: Tensor  # [n], in [-pi, pi)
    offset: Tensor  # [n]
    r2: Tensor  # [n]
    freq: Tensor  # [n], float

    def values(self, x: Tensor | None = None) -> Tensor:
        """The fitted curves at `x` (default `0..p-1`): `[n, len(x)]`."""
        x = torch.arange(self.p, dtype=torch.float64) if x is None else x.double()
        freq, phase = self.freq.double()[:, None], self.phase.double()[:, None]
        curve = self.scale.double()[:, None] * torch.cos(2 * math.pi * freq * x / self.p + phase)
        return (curve + self.offset.double()[:, None]).float()

    def formula(self, n: int, var: str = "x") -> str:
        """The fit of row `n` as text, e.g. `0.52·cos(2π·17x/113 + 1.05) - 0.01`."""
        (n,) = check_neurons([n], len(self.k), "n")
        sign = "-" if float(self.offset[n]) < 0 else "+"
        psign = "-" if float(self.phase[n]) < 0 else "+"
        f = float(self.freq[n])
        fs = f"{int(self.k[n])}" if f == float(self.k[n]) else f"{f:.3f}"
        return (f"{float(self.scale[n]):.3g}·cos(2π·{fs}{var}/{self.p} {psign} "
                f"{abs(float(self.phase[n])):.2f}) {sign} {abs(float(self.offset[n])):.3g}")

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({k: getattr(self, k) for k in
                            ("p", "k", "freq", "scale", "phase", "offset", "r2")})

    def summary(self) -> Summary:
        return _fit_headline(self.p, self.k, self.r2)


def _fit_headline(p: int, k: Tensor, r2: Tensor) -> Summary:
    """A fit's headline numbers: rows, median R^2 (finite rows), distinct frequencies."""
    return headline({"p": p, "n_rows": int(k.numel()), "r2_median": median_or_none(r2),
                     "n_frequencies": int(torch.unique(k[k > 0]).numel())})


def _check_w(w: Any) -> tuple[int, int]:
    if not isinstance(w, Tensor) or w.ndim != 2 or not w.is_floating_point():
        raise ValueError(f"w must be a 2-D float tensor [n, p], got "
                         f"{getattr(w, 'dtype', type(w).__name__)} {list(getattr(w, 'shape', []))}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("w holds NaN or infinite values: no fit of it would mean anything")
    n, p = w.shape
    if p < 3 or n < 1:
        raise ValueError(f"w must have at least one row and p >= 3 columns, got {list(w.shape)}")
    return n, p


def _check_k(k: Any, n: int, K: int) -> Tensor:
    """Frequencies as int64 `[n]`, each in `[1, K]`."""
    k = torch.as_tensor(k)
    if k.is_floating_point() or k.is_complex() or k.dtype == torch.bool:
        raise ValueError(f"k must hold {n} integer frequencies in [1, {K}], got dtype {k.dtype}")
    k = k.to(torch.int64)
    if k.shape != (n,) or int(k.min()) < 1 or int(k.max()) > K:
        raise ValueError(f"k must hold {n} integer frequencies in [1, {K}], got "
                         f"{k.tolist() if k.numel() <= 8 else list(k.shape)}")
    return k


def _r2(w: Tensor, fitted: Tensor) -> Tensor:
    """Share of each row's variance the fit explains; NaN for a constant row (no variance to
    explain: its fit says nothing), never a flattering 1."""
    w = w.double()
    sst = (w - w.mean(dim=1, keepdim=True)).square().sum(dim=1)
    sse = (w - fitted.double()).square().sum(dim=1)
    return torch.where(sst > 0, 1 - sse / sst.clamp_min(1e-300),
                       torch.full_like(sst, float("nan"))).float()


def fit_cosines(w: Rows, k: RowFrequencies | None = None) -> CosineFit:
    """Closed-form least-squares cosine fit of each row of `w` (`[n, p]`).

    With `k` (int `[n]`) the frequencies are fixed; otherwise each row takes the frequency in
    `1..(p-1)/2` with the most power.
    """
    n, p = _check_w(w)
    F = dft(w)  # [n, K+1] complex128
    K = n_frequencies(p)
    k = F[:, 1:].abs().argmax(dim=1) + 1 if k is None else _check_k(k, n, K)
    Fk = F.gather(1, k[:, None]).squeeze(1)
    scale = (2 * Fk.abs() / p).float()
    phase = wrap_angle(torch.angle(Fk)).float()
    offset = w.double().mean(dim=1).float()
    fit = CosineFit(p, k, scale, phase, offset, torch.zeros(n), k.double())
    fit.r2 = _r2(w, fit.values())
    return fit


def refine_free_frequency(w: Rows, fit: CosineFit, maxfev: int = 2000) -> CosineFit:
    """Refit each row with a continuous frequency (scipy `curve_fit`), from the closed form.

    The search is local: the frequency stays within `k +- 0.5` and the scale non-negative, so
    the refinement cannot wander to another frequency. A row keeps its closed-form values
    (`freq == k`) where the optimiser fails or does not lower the squared error.
    """
    import numpy as np
    from scipy.optimize import curve_fit

    p = fit.p
    x = np.arange(p, dtype=np.float64)

    def model(x, s, f, phi, o):
        return s * np.cos(2 * np.pi * f * x / p + phi) + o

    rows = w.detach().double().cpu().numpy()
    scale, freq, phase, offset = (fit.scale.double().clone(), fit.freq.double().clone(),
                                  fit.phase.double().clone(), fit.offset.double().clone())
    for i, row in enumerate(rows):
        k = float(fit.k[i])
        p0 = [float(scale[i]), k, float(phase[i]), float(offset[i])]
        lower = [0.0, k - 0.5, -np.inf, -np.inf]
        upper = [np.inf, k + 0.5, np.inf, np.inf]
        try:
            (s, f, phi, o), _ = curve_fit(model, x, row, p0=p0, bounds=(lower, upper),
                                          max_nfev=maxfev)
        except (RuntimeError, ValueError):
            continue
        if ((model(x, s, f, phi, o) - row) ** 2).sum() >= ((model(x, *p0) - row) ** 2).sum():
            continue
        scale[i], freq[i], phase[i], offset[i] = s, f, phi, o
    out = replace(fit, scale=scale.float(), freq=freq, phase=wrap_angle(phase).float(),
                  offset=offset.float())
    out.r2 = _r2(w, out.values())
    return out


@dataclass
class HarmonicFit:
    """`w[n, x] ~ offset[n] + sum_h scale[n, h] cos(2 pi (h+1) k[n] x / p + phase[n, h])`.

    A cosine of frequency `k` plus its harmonics `2k, 3k, ...` (taken modulo p). Closed form
    like `fit_cosines`, since the harmonics are distinct DFT components (for prime p).
    """

    p: int
    k: Tensor  # int64 [n]
    scale: Tensor  # [n, H]
    phase: Tensor  # [n, H]
    offset: Tensor  # [n]
    r2: Tensor  # [n]

    def values(self) -> Tensor:
        x = torch.arange(self.p, dtype=torch.float64)
        out = self.offset.double()[:, None].expand(-1, self.p).clone()
        for h in range(self.scale.shape[1]):
            arg = 2 * math.pi * ((h + 1) * self.k).double()[:, None] * x / self.p
            out += self.scale[:, h].double()[:, None] * torch.cos(
                arg + self.phase[:, h].double()[:, None])
        return out.float()

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self.__dict__)

    def summary(self) -> Summary:
        return _fit_headline(self.p, self.k, self.r2) | {"n_harmonics": int(self.scale.shape[1])}


def fit_harmonics(w: Rows, k: RowFrequencies, n_harmonics: int = 2) -> HarmonicFit:
    """Least-squares fit of each row of `w` (`[n, p]`) by frequency `k[n]` and its harmonics.

    A harmonic that aliases onto an earlier one (possible only for composite p) is dropped.
    """
    if isinstance(n_harmonics, bool) or not isinstance(n_harmonics, int) or n_harmonics < 1:
        raise ValueError(f"n_harmonics must be a positive integer, got {n_harmonics!r}")
    n, p = _check_w(w)
    k = _check_k(k, n, n_frequencies(p))
    F = torch.fft.fft(w.double(), dim=-1)  # [n, p]
    scale = torch.zeros(n, n_harmonics, dtype=torch.float64)
    phase = torch.zeros(n, n_harmonics, dtype=torch.float64)
    seen = torch.zeros(n, p, dtype=torch.bool)
    seen[:, 0] = True
    for h in range(n_harmonics):
        kk = ((h + 1) * k) % p
        canon = torch.minimum(kk, p - kk)
        fresh = ~seen.gather(1, canon[:, None]).squeeze(1)
        fresh &= ~((p % 2 == 0) & (canon == p // 2))  # the Nyquist term has no phase
        Fk = F.gather(1, kk[:, None]).squeeze(1)
        scale[:, h] = torch.where(fresh, 2 * Fk.abs() / p, torch.zeros_like(scale[:, h]))
        phase[:, h] = torch.angle(Fk)
        seen.scatter_(1, canon[:, None], True)
    fit = HarmonicFit(p, k, scale.float(), wrap_angle(phase).float(),
                      w.double().mean(dim=1).float(), torch.zeros(n))
    fit.r2 = _r2(w, fit.values())
    return fit


@dataclass
class JointInputFit:
    """The study's form for the inputs: `a` and `b` share `k`, `scale` and `offset`.

    `W_a[x, n] ~ scale cos(2 pi k x / p + phase_a) + offset` and the same for `b` with
    `phase_b`. Least squares over both at once is closed-form too: `k` maximises
    `|F_a,k| + |F_b,k|`, the phases are those of `F_a,k` and `F_b,k`, the scale is the mean of
    the two amplitudes and the offset the mean of all `2p` weights. (With the scale shared, the
    squared error left is `sum (w - mean)^2 - (|F_a,k| + |F_b,k|)^2 / p`, so `k` maximises
    `|F_a,k| + |F_b,k|`.)
    """

    p: int
    k: Tensor
    scale: Tensor
    offset: Tensor
    phase_a: Tensor
    phase_b: Tensor
    r2_a: Tensor
    r2_b: Tensor

    def as_fits(self) -> tuple[CosineFit, CosineFit]:
        """The joint fit as two `CosineFit`s (for `a` and for `b`)."""
        common = {"p": self.p, "k": self.k, "scale": self.scale, "offset": self.offset,
                  "freq": self.k.double()}
        return (CosineFit(phase=self.phase_a, r2=self.r2_a, **common),
                CosineFit(phase=self.phase_b, r2=self.r2_b, **common))

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self.__dict__)

    def summary(self) -> Summary:
        return _fit_headline(self.p, self.k, torch.minimum(self.r2_a, self.r2_b))


def fit_joint_inputs(w_a: Rows, w_b: Rows) -> JointInputFit:
    """Fit `a` and `b` together with a shared frequency, scale and offset (rows: neurons)."""
    if w_a.shape != w_b.shape:
        raise ValueError(f"w_a and w_b must have the same shape, got {list(w_a.shape)} and "
                         f"{list(w_b.shape)}")
    n, p = w_a.shape
    Fa, Fb = dft(w_a)[:, 1:], dft(w_b)[:, 1:]
    k = (Fa.abs() + Fb.abs()).argmax(dim=1) + 1
    fa, fb = fit_cosines(w_a, k), fit_cosines(w_b, k)
    scale = (fa.scale + fb.scale) / 2
    offset = (fa.offset + fb.offset) / 2
    joint = JointInputFit(p, k, scale, offset, fa.phase, fb.phase, torch.zeros(n), torch.zeros(n))
    ja, jb = joint.as_fits()
    joint.r2_a, joint.r2_b = _r2(w_a, ja.values()), _r2(w_b, jb.values())
    return joint


@dataclass
class NeuronFits:
    """Cosine fits of every neuron's `W_a`, `W_b` (separately and jointly) and `W_out`.

    `phase_sign` is `s` in the predicted `phi_out = phi_a + s * phi_b` for the model's
    operation (+1 for `a + b`, -1 for `a - b`), None where no such relation over residues is
    predicted (`mul`, `div`, `a^2 + ab + b^2`). `tied`: the model has one input weight for `a`
    and `b` (so `a` and `b` have the same fit, and the relation reads `phi_out = 2 phi`).
    """

    p: int
    neurons: list[int]
    a: CosineFit
    b: CosineFit
    out: CosineFit
    joint: JointInputFit
    refined: bool = False
    dead: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    phase_sign: int | None = 1
    tied: bool = False
    weights_digest: str = ""

    @property
    def phase_error(self) -> Tensor:
        """`phi_out - (phi_a + s phi_b)` wrapped to `[-pi, pi)`, per neuron (`s`:
        `phase_sign`)."""
        if self.phase_sign is None:
            raise ValueError("no phase relation over residues is predicted for this model's "
                             "operation (phase_sign is None)")
        return wrap_angle(self.out.phase - (self.a.phase + self.phase_sign * self.b.phase))

    @property
    def shared_frequency(self) -> Tensor:
        """Neurons whose `a`, `b` and output fits have the same integer frequency."""
        return (self.a.k == self.b.k) & (self.b.k == self.out.k)

    @property
    def defined(self) -> Tensor:
        """Neurons whose three weight vectors all vary (a constant vector has no fit)."""
        return self.a.r2.isfinite() & self.b.r2.isfinite() & self.out.r2.isfinite()

    def summary(self) -> dict[str, Any]:
        """The study's relations as measured numbers, over the neurons whose fits are defined
        (`n_constant` neurons have a constant weight vector and no fit; phase entries are None
        where the operation predicts no phase relation)."""
        ok = self.defined
        a, b, out = (_rows_of(f, ok) for f in (self.a, self.b, self.out))
        nan = float("nan")

        def med(x: Tensor) -> float:
            return float(x.median()) if x.numel() else nan

        def frac(x: Tensor) -> float:
            return float(x.float().mean()) if x.numel() else nan

        # relative numbers with no floor on the divisor (a floor made them scale-dependent:
        # 2.7e-21 instead of 0.0057 on a model x 1e-30); a zero scale gives NaN
        mean_scale = (a.scale + b.scale) / 2
        rel_scale = _ratio((a.scale - b.scale).abs(), mean_scale)
        rel_offset = _ratio((a.offset - b.offset).abs(), mean_scale)
        shared = (a.k == b.k) & (b.k == out.k)
        s: dict[str, Any] = {
            "n_neurons": len(self.neurons),
            "n_dead": int(self.dead.sum()) if self.dead.numel() else 0,
            "n_constant": int((~ok).sum()),
            "frac_k_a_eq_b": frac(a.k == b.k),
            "frac_k_out_eq_a": frac(out.k == a.k),
            "frac_k_all_equal": frac(shared),
            "scale_rel_diff_median": med(rel_scale),
            "frac_scale_within_10pct": frac(rel_scale <= 0.10),
            "offset_diff_over_scale_median": med(rel_offset),
            "offset_over_scale_median": med(_ratio(a.offset.abs(), a.scale)),
            "phase_a_minus_b_abs_median": med(wrap_angle(a.phase - b.phase).abs()),
            "r2_a_median": med(a.r2),
            "r2_b_median": med(b.r2),
            "r2_out_median": med(out.r2),
            "r2_joint_median": med(((self.joint.r2_a + self.joint.r2_b) / 2)[ok]),
            "n_distinct_k": int(torch.unique(a.k).numel()),
            "phase_sign": self.phase_sign,
        }
        if self.phase_sign is None:
            s.update(phase_error_abs_median=None, phase_error_abs_mean=None,
                     frac_phase_error_below_pi_8=None, phase_error_abs_median_all=None)
        else:
            err = self.phase_error.abs()[ok]
            err_shared = err[shared]
            s.update(
                phase_error_abs_median=med(err_shared),
                phase_error_abs_mean=float(err_shared.mean()) if err_shared.numel() else nan,
                frac_phase_error_below_pi_8=frac(err_shared < math.pi / 8),
                phase_error_abs_median_all=med(err),
            )
        if self.refined:
            dev = torch.cat([(f.freq - f.k.double()).abs() for f in (a, b, out)])
            s.update(free_freq_abs_dev_median=med(dev),
                     free_freq_abs_dev_max=float(dev.max()) if dev.numel() else nan,
                     frac_free_freq_within_0_05=frac(dev < 0.05))
        return headline(s)  # NaN (nothing to measure) as None, as the protocol says

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({
            "p": self.p, "neurons": self.neurons, "refined": self.refined,
            "a": self.a.to_dict(), "b": self.b.to_dict(), "out": self.out.to_dict(),
            "joint": self.joint.to_dict(),
            "phase_error": None if self.phase_sign is None else self.phase_error,
            "phase_sign": self.phase_sign, "tied": self.tied,
            "dead": self.dead, "summary": self.summary(),
        })


def _rows_of(fit: CosineFit, keep: Tensor) -> CosineFit:
    return replace(fit, k=fit.k[keep], scale=fit.scale[keep], phase=fit.phase[keep],
                   offset=fit.offset[keep], r2=fit.r2[keep], freq=fit.freq[keep])


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """`num / den` where `den > 0`, NaN elsewhere (no floor: the ratio is scale-invariant)."""
    return torch.where(den > 0, num / den.where(den > 0, torch.ones_like(den)),
                       torch.full_like(num, math.nan))


def dead_neurons(model: Any) -> DeadMask:
    """Neurons of the first hidden layer whose activation is the same on every pair, so that
    they carry no information about `(a, b)` (for ReLU: the pre-activation is <= 0
    everywhere): bool `[d_hidden]`. Read through the cache, hooks included."""
    from hooked_mlp.data import all_pairs

    name = "blocks.0.mlp.hook_post"
    with torch.no_grad():
        _, cache = model.run_with_cache(all_pairs(model.cfg.p, model.device), names_filter=name)
    return constant_units(cache[name]).cpu()


def constant_units(post: Tensor) -> Tensor:
    """bool `[..., H]`: the units of `post` `[..., n_pairs, H]` whose activation is the same on
    every pair (the definition of a dead neuron, `dead_neurons`)."""
    return post.amax(dim=-2) == post.amin(dim=-2)


def fit_neurons(model: Any, neurons: list[int] | None = None, refine: bool = False) -> NeuronFits:
    """Fit every neuron's `W_a`, `W_b` and `W_out` with a cosine (closed form; `refine=True`
    also fits a free frequency with `curve_fit`, as the study did). One hidden layer only: a
    deeper model's output weights belong to other neurons."""
    check_model(model)
    check_fourier(model.cfg, "fit_neurons")
    check_one_layer(model, "fit_neurons")
    check_one_hot(model, "fit_neurons")
    check_all_pairs_memory(model.cfg, 3 * max(model.cfg.d_hidden, model.cfg.p), "fit_neurons")
    signals = neuron_signals(model)
    chosen = check_neurons(neurons, model.cfg.d_hidden)
    if not chosen:
        raise ValueError("neurons must name at least one neuron (None: all of them)")
    idx = torch.tensor(chosen, dtype=torch.int64)
    w = {name: sig[idx] for name, sig in signals.items()}
    fits = {name: fit_cosines(sig) for name, sig in w.items()}
    if refine:
        fits = {name: refine_free_frequency(w[name], fit) for name, fit in fits.items()}
    joint = fit_joint_inputs(w["a"], w["b"])
    return NeuronFits(model.cfg.p, chosen, fits["a"], fits["b"], fits["out"], joint,
                      refined=refine, dead=dead_neurons(model)[idx],
                      phase_sign=phase_sign(model.cfg), tied=model.cfg.tied_inputs,
                      weights_digest=weights_digest(model))


def weights_digest(model: Any) -> str:
    """A fingerprint of a model's weights (SHA-256 of `W_in` and `W_out`), so that fits are
    never applied to a model they were not fitted on."""
    import hashlib

    h = hashlib.sha256()
    for name in ("W_in", "W_out"):
        h.update(getattr(model, name).detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
