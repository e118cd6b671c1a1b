"""The Fourier basis of Z_p, each neuron's spectrum, and the histogram of their frequencies.

For a weight vector `w[x]`, `x = 0..p-1`, the DFT `F_k = sum_x w[x] exp(-2 pi i k x / p)` splits
its variance over the frequencies `k = 1..(p-1)/2` (Parseval: `sum_x (w - mean)^2 =
(2/p) sum_k |F_k|^2` for odd p), so `|F_k|^2 / sum_k |F_k|^2` is the fraction of the variance that
the best cosine of frequency `k` explains. A neuron has three such signals: its input weights
from `a` (`W_a[:, n]`), from `b` (`W_b[:, n]`) and its output weights (`W_out[n, :]`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from analyses._common import (
    ComplexSpectrum,
    Rows,
    Spectrum,
    Summary,
    check_fourier,
    check_model,
    check_one_hot,
    headline,
    median_or_none,
    to_jsonable,
)
from hooked_mlp._moved import renamed
from hooked_mlp.helpers import fourier_basis

SIGNALS = ("a", "b", "out")
__all__ = [
    "SIGNALS",
    "fourier_basis",
    "frequency_histogram",
    "n_frequencies",
    "neuron_signals",
    "neuron_spectra",
    "power_spectrum",
]
__getattr__ = renamed(__name__)  # its old names: the rows of analyses/__init__.py


def n_frequencies(p: int) -> int:
    """Number of non-constant frequencies used: `(p - 1) // 2` (for even p the Nyquist term is
    left out)."""
    return (p - 1) // 2


def dft(w: Rows) -> ComplexSpectrum:
    """`F_k` for `k = 0..(p-1)/2` along the last dimension: complex `[..., (p-1)/2 + 1]`."""
    p = w.shape[-1]
    return torch.fft.rfft(w.double(), dim=-1)[..., : n_frequencies(p) + 1]


def power_spectrum(w: Rows) -> Spectrum:
    """`|F_k|^2` for `k = 1..(p-1)/2` along the last dimension: `[..., (p-1)/2]` (float64)."""
    return dft(w)[..., 1:].abs().square()


def neuron_signals(model: Any) -> dict[str, Rows]:
    """Each neuron's weight vectors over `0..p-1`: `{'a','b','out'}` -> `[d_hidden, p]`.

    With tied inputs `a` and `b` are the same vector. In a deeper model the output weights
    belong to the last layer's neurons, not to the first layer's: only `a` and `b` are given.
    """
    check_model(model)
    check_fourier(model.cfg, "neuron_signals")
    check_one_hot(model, "neuron_signals")
    out = {"a": model.W_a.detach().t().cpu(), "b": model.W_b.detach().t().cpu()}
    if model.cfg.n_layers == 1:
        out["out"] = model.W_out.detach().cpu()
    return out


@dataclass
class NeuronSpectra:
    """Per-neuron power spectra of `W_a`, `W_b` and `W_out`.

    `power[s]` is `[d_hidden, K]` (frequency `k` at column `k - 1`), `dominant[s]` the frequency
    with the most power, `top_fraction[s]` the share of the variance it explains.
    """

    p: int
    power: dict[str, Tensor]
    dominant: dict[str, Tensor]
    top_fraction: dict[str, Tensor]

    @property
    def input_frequency(self) -> Tensor:
        """Each neuron's frequency read from `a` and `b` together (most power summed)."""
        pw = self.power["a"] + self.power["b"]
        return torch.where(pw.sum(dim=1) > 0, pw.argmax(dim=1) + 1, 0)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({
            "p": self.p, "dominant": self.dominant, "top_fraction": self.top_fraction,
            "input_frequency": self.input_frequency,
        })

    def summary(self) -> Summary:
        freq = self.input_frequency
        return headline({"p": self.p, "n_neurons": int(freq.numel()),
                         "n_input_frequencies": int(torch.unique(freq[freq > 0]).numel()),
                         **{f"top_fraction_{s}_median": median_or_none(t)
                            for s, t in self.top_fraction.items()}})


def neuron_spectra(model: Any) -> NeuronSpectra:
    """Power spectra of every neuron's input (a, b) and output weights."""
    signals = neuron_signals(model)
    power, dominant, top = {}, {}, {}
    for name, w in signals.items():
        pw = power_spectrum(w)  # [n, K]
        power[name] = pw
        dominant[name] = torch.where(pw.sum(dim=1) > 0, pw.argmax(dim=1) + 1, 0)
        total = pw.sum(dim=1)
        # a constant vector has no frequency: its share is undefined, not 0
        top[name] = torch.where(total > 0, pw.max(dim=1).values / total.clamp_min(1e-300),
                                torch.full_like(total, float("nan")))
    return NeuronSpectra(model.cfg.p, power, dominant, top)


@dataclass
class FrequencyHistogram:
    """How many neurons use each frequency, and how concentrated that use is.

    `counts[k - 1]` neurons have frequency `k`; `n_distinct` frequencies are used at all;
    `effective_number` is `exp(entropy)` of the distribution (equal to `n_distinct` when the
    neurons spread evenly, near 1 when one frequency dominates); `top_fraction_median` is the
    median share of a neuron's variance that its own frequency explains. Neurons whose weights
    are constant (no variance: dead or never trained) have no frequency: they are counted in
    `n_without_frequency`, not in `counts`.
    """

    p: int
    source: str
    counts: list[int]
    n_neurons: int
    n_distinct: int
    n_available: int
    most_common: int
    most_common_count: int
    effective_number: float
    top_fraction_median: float
    n_without_frequency: int = 0

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self.__dict__)

    def summary(self) -> Summary:
        return headline({k: v for k, v in self.__dict__.items() if k != "counts"})


def frequency_histogram(model: Any, source: str = "input") -> FrequencyHistogram:
    """Histogram of neurons' dominant frequencies.

    `source`: `"input"` (a and b together, the default), `"a"`, `"b"` or `"out"`.
    """
    if source not in ("input", *SIGNALS):
        raise ValueError(f"source must be one of ['input', 'a', 'b', 'out'], got {source!r}")
    spectra = neuron_spectra(model)
    if source not in ("input", *spectra.power):
        raise ValueError(f"source={source!r}: the output weights of this {model.cfg.n_layers}-"
                         "layer model belong to its last layer, not to the first layer's "
                         "neurons; use 'input', 'a' or 'b'")
    if source == "input":
        freq = spectra.input_frequency
        pw = spectra.power["a"] + spectra.power["b"]
        total = pw.sum(dim=1)
        top = torch.where(total > 0, pw.max(dim=1).values / total.clamp_min(1e-300),
                          torch.full_like(total, float("nan")))
    else:
        freq, top = spectra.dominant[source], spectra.top_fraction[source]
    K = n_frequencies(model.cfg.p)
    has = freq > 0  # a neuron whose weights are constant has no frequency
    counts = torch.bincount(freq[has] - 1, minlength=K)
    probs = counts[counts > 0].double() / counts.sum().clamp_min(1)
    return FrequencyHistogram(
        p=model.cfg.p, source=source, counts=counts.tolist(), n_neurons=int(counts.sum()),
        n_distinct=int((counts > 0).sum()), n_available=K,
        most_common=int(counts.argmax()) + 1 if bool(has.any()) else 0,
        most_common_count=int(counts.max()),
        effective_number=float(torch.exp(-(probs * probs.log()).sum())),
        top_fraction_median=float(top[has].median()) if bool(has.any()) else float("nan"),
        n_without_frequency=int((~has).sum()),
    )
