"""Per-neuron Fourier measures of one model, and the lottery over frequencies between two.

`neuron_measures` (one hidden layer): per neuron the inverse participation ratio of its input
spectrum, `IPR = sum_k |c_k|^4 / (sum_k |c_k|^2)^2` over the frequency magnitudes `|c_k|^2 =
|F_a,k|^2 + |F_b,k|^2`, `k = 1..(p-1)/2` (He et al. 2026; the constant term is left out: IPR is
1 for one frequency and 1/K for a flat spectrum), its dominant frequency, its phase error
`phi_out - (phi_a + s phi_b)` at that frequency (`- 2 phi` with tied inputs), whether one cosine
explains its inputs (R^2 >= 0.9 for a and b; the study's ReLU outputs carry harmonics, so their
R^2 is reported apart) and how many distinct frequencies such neurons use.

`lottery` compares each neuron's initial spectrum with its final frequency (He et al.).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from analyses._common import (
    PerRows,
    Spectrum,
    Summary,
    check_fourier,
    check_model,
    check_one_hot,
    check_one_layer,
    headline,
    phase_sign,
    to_jsonable,
    wrap_angle,
)
from analyses.fourier import dft, n_frequencies

__all__ = ["CLEAR_FREQUENCY", "R2_EXPLAINED", "Lottery", "NeuronMeasures", "ipr", "lottery",
           "neuron_measures"]

R2_EXPLAINED = 0.9
CLEAR_FREQUENCY = 0.5  # a neuron's final frequency counts in the lottery above this power share


# --------------------------------------------------------------------------- neurons
@dataclass
class NeuronMeasures:
    """Per-neuron Fourier measures of one model (one hidden layer); tensors are `[d_hidden]`,
    `power` is each neuron's input power spectrum `[d_hidden, K]` (frequency `k` at column
    `k - 1`), normalised to sum 1 (0 for a constant neuron)."""

    ipr: Tensor
    ipr_out: Tensor
    dominant: Tensor  # int64, 0 for a neuron with no variance
    phase_error: Tensor | None  # None where the operation predicts no phase relation
    r2: Tensor  # the smaller of a's and b's best single-cosine share
    r2_out: Tensor  # the output weights' best single-cosine share
    power: Tensor

    @property
    def explained(self) -> Tensor:
        """Neurons whose inputs one cosine explains (R^2 >= 0.9 for a and b)."""
        return self.r2 >= R2_EXPLAINED

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({**self.__dict__, "summary": self.summary()})

    def summary(self) -> dict[str, float]:
        """The headline numbers; an undefined one is NaN here (None in JSON), since
        `analyses.dynamics` keeps these as float series over the snapshots."""
        ex = self.explained
        n_freq = int(torch.unique(self.dominant[ex]).numel()) if bool(ex.any()) else 0
        err = float("nan")
        if self.phase_error is not None:
            live = self.dominant > 0
            err = float(self.phase_error[live].abs().mean()) if bool(live.any()) else err
        return {"ipr_mean": float(self.ipr.mean()), "ipr_out_mean": float(self.ipr_out.mean()),
                "phase_error_abs_mean": err, "frac_cosine": float(ex.float().mean()),
                "frac_cosine_out": float((self.r2_out >= R2_EXPLAINED).float().mean()),
                "n_frequencies": n_freq}


def ipr(power: Spectrum) -> PerRows:
    """Inverse participation ratio of spectra given as powers `|c_k|^2` `[..., K]`:
    `sum_k |c_k|^4 / (sum_k |c_k|^2)^2`, 1 for a single frequency, `1/K` for a flat spectrum
    (NaN for an all-zero spectrum)."""
    total = power.sum(dim=-1)
    return torch.where(total > 0, power.square().sum(dim=-1) / total.clamp_min(1e-300).square(),
                       torch.full_like(total, float("nan")))


def _spectra(model: Any) -> tuple[Tensor, Tensor, Tensor]:
    """The DFTs `[d_hidden, K + 1]` of every neuron's `W_a`, `W_b`, `W_out` (one layer)."""
    return (dft(model.W_a.detach().t().cpu()), dft(model.W_b.detach().t().cpu()),
            dft(model.W_out.detach().cpu()))


def neuron_measures(model: Any) -> NeuronMeasures:
    """Per-neuron IPR, dominant frequency, phase error and single-cosine R^2 (see the module's
    docstring for the definitions)."""
    check_model(model)
    check_fourier(model.cfg, "neuron_measures")
    check_one_layer(model, "neuron_measures")
    check_one_hot(model, "neuron_measures")
    Fa, Fb, Fo = _spectra(model)
    pa, pb, po = (f[:, 1:].abs().square() for f in (Fa, Fb, Fo))
    p_in = pa + pb
    total = p_in.sum(dim=1, keepdim=True)
    dominant = torch.where(total[:, 0] > 0, p_in.argmax(dim=1) + 1, 0)

    def share(pw: Tensor) -> Tensor:
        t = pw.sum(dim=1)
        return torch.where(t > 0, pw.max(dim=1).values / t.clamp_min(1e-300),
                           torch.zeros_like(t))

    r2 = torch.minimum(share(pa), share(pb))
    s = phase_sign(model.cfg)
    err = None
    if s is not None:
        k = dominant.clamp_min(1)[:, None]
        pha, phb, pho = (torch.angle(f.gather(1, k)).squeeze(1) for f in (Fa, Fb, Fo))
        err = wrap_angle(pho - (pha + s * phb)).float()
    return NeuronMeasures(ipr=ipr(p_in).float(), ipr_out=ipr(po).float(), dominant=dominant,
                          phase_error=err, r2=r2.float(), r2_out=share(po).float(),
                          power=(p_in / total.clamp_min(1e-300)).float())



# --------------------------------------------------------------------------- the lottery
@dataclass
class Lottery:
    """Whether each neuron's final frequency is the one its initial spectrum ranked first.

    Over the `n_neurons` neurons whose final input spectrum has a clear frequency (power share
    >= 0.5): `hit_rate_magnitude` (first by initial input power `|F_a,k|^2 + |F_b,k|^2`) and
    `hit_rate_alignment` (first by `sqrt(|F_a,k| |F_b,k|) |F_out,k| cos(D_k)`, `D_k = phi_out,k
    - (phi_a,k + s phi_b,k)`: the growth rate of frequency `k` in He et al.'s gradient-flow
    picture, large initial magnitudes with aligned phases). `chance` is the hit rate expected if
    the initial first choice were independent of the final frequency (the sum over `k` of the
    two frequencies' shares), `uniform` is `1/K`. `final_rank_median` is the median rank (1 =
    first) of the final frequency in the initial magnitude order.
    """

    n_neurons: int
    n_frequencies: int
    hit_rate_magnitude: float
    hit_rate_alignment: float | None
    chance_magnitude: float
    chance_alignment: float | None
    uniform: float
    final_rank_median: float
    final: list[int] = field(default_factory=list)
    initial_magnitude: list[int] = field(default_factory=list)
    initial_alignment: list[int] = field(default_factory=list)
    initial_epoch: int = 0

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self.__dict__)

    def summary(self) -> Summary:
        return headline({k: v for k, v in self.__dict__.items() if not isinstance(v, list)})

    def describe(self) -> str:
        """The lottery in a sentence."""
        if self.n_neurons == 0:  # no hit rate to give (they are NaN): say why instead
            return (f"no neuron's final input spectrum has a clear frequency (power share >= "
                    f"0.5), so there is no hit rate to compare with chance (1/K = "
                    f"{self.uniform:.1%})")
        align = ("" if self.hit_rate_alignment is None else
                 f"; by alignment {self.hit_rate_alignment:.0%} (chance "
                 f"{self.chance_alignment:.0%})")
        return (f"{self.n_neurons} neuron{'s' * (self.n_neurons != 1)}: the final frequency was "
                f"the initial spectrum's first "
                f"by magnitude for {self.hit_rate_magnitude:.0%} (chance "
                f"{self.chance_magnitude:.0%}, 1/K = {self.uniform:.1%}){align}; median rank "
                f"of the final frequency at epoch {self.initial_epoch}: "
                f"{self.final_rank_median:g}")


def _chance(a: Tensor, b: Tensor, K: int) -> float:
    qa = torch.bincount(a - 1, minlength=K).double() / max(len(a), 1)
    qb = torch.bincount(b - 1, minlength=K).double() / max(len(b), 1)
    return float((qa * qb).sum())


def lottery(initial: Any, final: Any, initial_epoch: int = 0) -> Lottery:
    """The lottery over frequencies between two snapshots of one model (one hidden layer)."""
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, int) or initial_epoch < 0:
        raise ValueError(f"initial_epoch must be a non-negative integer (the epoch of `initial`), "
                         f"got {initial_epoch!r}")
    for name, m in (("initial", initial), ("final", final)):
        check_model(m)
        check_one_layer(m, f"lottery ({name})")
    check_fourier(final.cfg, "lottery")
    check_one_hot(final, "lottery")
    if initial.cfg != final.cfg:
        raise ValueError("initial and final must be snapshots of one model (their configs "
                         "differ)")
    K = n_frequencies(final.cfg.p)
    fin = neuron_measures(final)
    clear = fin.power.max(dim=1).values >= CLEAR_FREQUENCY
    Fa, Fb, Fo = (f[:, 1:] for f in _spectra(initial))
    mag = Fa.abs().square() + Fb.abs().square()
    first_mag = mag.argmax(dim=1) + 1
    order = torch.argsort(mag, dim=1, descending=True) + 1  # [H, K] frequencies, strongest first
    final_k = fin.dominant
    ranks = (order == final_k[:, None]).double().argmax(dim=1) + 1
    s = phase_sign(final.cfg)
    first_align = None
    if s is not None:
        D = torch.angle(Fo) - (torch.angle(Fa) + s * torch.angle(Fb))
        score = (Fa.abs() * Fb.abs()).sqrt() * Fo.abs() * torch.cos(D)
        first_align = score.argmax(dim=1) + 1
    idx = clear.nonzero().flatten()
    n = len(idx)
    nan = float("nan")

    def rate(first: Tensor | None) -> float | None:
        if first is None:
            return None
        return float((first[idx] == final_k[idx]).double().mean()) if n else nan

    return Lottery(
        n_neurons=n, n_frequencies=K,
        hit_rate_magnitude=rate(first_mag),
        hit_rate_alignment=rate(first_align),
        chance_magnitude=_chance(first_mag[idx], final_k[idx], K) if n else nan,
        chance_alignment=None if first_align is None else (
            _chance(first_align[idx], final_k[idx], K) if n else nan),
        uniform=1.0 / K,
        final_rank_median=float(ranks[idx].median()) if n else nan,
        final=final_k[idx].tolist(), initial_magnitude=first_mag[idx].tolist(),
        initial_alignment=[] if first_align is None else first_align[idx].tolist(),
        initial_epoch=initial_epoch,
    )

