"""Can a layer's output weights be predicted from what its neurons compute? (the study's open
question 3)

For a neuron of frequency `w = 2 pi k / p` whose input is `s cos(w a + phi_a) + s cos(w b +
phi_b)`, the even part of the activation holds `cos(w (a + b) + phi_a + phi_b)`, and the output
weight that turns it into a logit peaking at `c = a + b` is

    W_out[n, c] ~ lambda * amp_n * cos(w c + phi_a + phi_b)        (phi_a - phi_b for a - b)

with one global factor `lambda` fitted by least squares over all neurons and residues (the
offsets of the rows do not matter: a constant row adds the same to every logit). The neuron's
`k`, phases and amplitude come from one of the `SOURCES`:

- `weights`: cosine fits of the input weights `W_a`, `W_b` (`fit_joint_inputs`; one-hot, one
  hidden layer: the study's setting);
- `pre`: the additive fit `s_a cos(w a + phi_a) + s_b cos(w b + phi_b)` of the neuron's
  pre-activation over all pairs (`activation_fits`, form `additive`): the same prediction for any
  input encoding;
- `post`: the `cos(w (a + b) + phi)` term of the neuron's post-activation (form `sum`): the phase
  read directly from what the neuron computes, which also applies to the last layer of a deeper
  model, whose inputs are earlier layers' neurons rather than residues;
- `diagonal`: no single frequency at all: the neuron's post-activation projected on functions of
  `a + b` (its mean over the pairs of each sum `s`, `f_n(s)`: every `(k, k)` term at once), and
  the predicted row is `lambda * f_n(c)`, centred: the matched filter, so that the logits
  `sum_n f_n(a + b) f_n(c)` peak at `c = a + b` wherever `sum_n f_n(c)^2` is flat. For a
  one-layer cosine neuron it is the `post` prediction plus the harmonics of the activation.

`amplitude="input"` scales each neuron by its fitted amplitude (weight decay balances a ReLU
neuron's input and output norms), `"uniform"` gives every neuron the same. The replacement
experiment then swaps the output weights of a growing share of neurons for the predicted ones,
beside the same experiment with each row's own cosine fit (`fitted`), and the original.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from analyses._common import (
    DiagonalFunctions,
    Summary,
    check_fourier,
    check_fractions,
    check_model,
    check_no_hooks,
    check_one_hot,
    check_one_layer,
    check_orders,
    headline,
    phase_sign,
    to_jsonable,
    wrap_angle,
)
from analyses.activation_fits import fit_grids, layer_activations
from analyses.cosine_fit import fit_cosines, fit_joint_inputs
from analyses.readout import accuracy_as_terms_change, readout_logits
from hooked_mlp.data import dataset
from hooked_mlp.helpers import fraction_right

SOURCES = ("weights", "pre", "post", "diagonal")
AMPLITUDES = ("input", "uniform")
KINDS = ("predicted", "fitted")


@dataclass
class OutputPrediction:
    """The predicted output weights `W_out` `[d_hidden, p]` of the last hidden layer and how
    well they match the real ones.

    `k`, `phase`, `amp` `[d_hidden]` are the per-neuron frequency, predicted output phase and
    amplitude; `scale` the global least-squares factor; `r2` the share of the (row-centred)
    output weights' variance the prediction explains; `alive` `[d_hidden]` bool: the neurons
    whose post-activation varies over the pairs (a dead or constant neuron's row only shifts
    every logit alike, so it has no frequency to agree on); `k_agree` the share of the live
    neurons whose own output-weight fit has the predicted frequency; `phase_error`
    `[d_hidden]` the predicted minus the fitted output phase (wrapped), on the live neurons
    whose frequencies agree (NaN elsewhere).
    """

    p: int
    source: str
    amplitude: str
    layer: int
    k: Tensor
    phase: Tensor
    amp: Tensor
    scale: float
    W_out: Tensor  # [d_hidden, p]
    r2: float
    k_agree: float
    phase_error: Tensor
    alive: Tensor  # bool [d_hidden]

    @property
    def median_abs_phase_error(self) -> float | None:
        e = self.phase_error[~torch.isnan(self.phase_error)]
        return float(e.abs().median()) if e.numel() else None

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"p": self.p, "source": self.source, "amplitude": self.amplitude,
                            "layer": self.layer, "k": self.k, "phase": self.phase,
                            "amp": self.amp, "scale": self.scale, "r2": self.r2,
                            "k_agree": self.k_agree,
                            "alive_fraction": float(self.alive.double().mean()),
                            "median_abs_phase_error": self.median_abs_phase_error})

    def summary(self) -> Summary:
        return headline({"p": self.p, "source": self.source, "amplitude": self.amplitude,
                         "layer": self.layer, "scale": self.scale, "r2": self.r2,
                         "k_agree": self.k_agree,
                         "alive_fraction": float(self.alive.double().mean()),
                         "median_abs_phase_error": self.median_abs_phase_error})


def _sign(model: Any, what: str) -> int:
    sign = phase_sign(model.cfg)
    if sign is None:
        raise ValueError(f"{what} predicts phi_out = phi_a +/- phi_b, which holds for add and "
                         f"sub only; this model computes {model.cfg.operation!r}")
    return sign


def _neuron_terms(model: Any, source: str) -> tuple[Tensor, Tensor, Tensor]:
    """`k`, predicted output phase and amplitude of every neuron of the last layer."""
    sign = _sign(model, "predict_output_weights")
    layer = model.cfg.n_layers - 1
    if source == "weights":
        check_one_hot(model, "predict_output_weights(source='weights')")
        check_one_layer(model, "predict_output_weights(source='weights')")
        joint = fit_joint_inputs(model.W_a.detach().cpu().t(), model.W_b.detach().cpu().t())
        return (joint.k, joint.phase_a.double() + sign * joint.phase_b.double(),
                joint.scale.double())
    if source == "pre":
        fits = fit_grids(layer_activations(model, layer, "pre"), "additive", layer=layer,
                         hook="pre")
        return (fits.k, fits.phase["a"] + sign * fits.phase["b"],
                (fits.scale["a"] + fits.scale["b"]) / 2)
    grids = layer_activations(model, layer, "post")
    if sign == 1:
        fits = fit_grids(grids, "sum", layer=layer, hook="post")
        return fits.k, fits.phase["sum"], fits.scale["sum"]
    # a - b: the (k, -k) term at the frequency where it is largest
    p = model.cfg.p
    ks = torch.arange(1, (p - 1) // 2 + 1)
    k = torch.fft.fft2(grids)[:, ks, (-ks) % p].abs().argmax(dim=1) + 1
    fits = fit_grids(grids, "full", k, layer=layer, hook="post")
    return fits.k, fits.phase["diff"], fits.scale["diff"]


def diagonal_functions(model: Any) -> DiagonalFunctions:
    """Each last-layer neuron's post-activation projected on functions of `a + b` (`a - b` for
    `sub`): `f[n, s]` is its mean over the `p` pairs with `a + b = s (mod p)`, centred over `s`:
    `[d_hidden, p]` float64 (the least-squares best function of the sum)."""
    sign = _sign(model, "diagonal_functions")
    p, H = model.cfg.p, model.cfg.d_hidden
    grids = layer_activations(model, model.cfg.n_layers - 1, "post")  # [H, p, p]
    x = torch.arange(p)
    s = (x[:, None] + sign * x[None, :]) % p
    f = torch.zeros(H, p, dtype=torch.float64).index_add_(1, s.flatten(), grids.flatten(1)) / p
    return f - f.mean(dim=1, keepdim=True)


def predict_output_weights(model: Any, source: str = "weights",
                           amplitude: str = "input") -> OutputPrediction:
    """Predict the last hidden layer's output weights from what its neurons compute (see the
    module docstring); `source` in `SOURCES`, `amplitude` in `AMPLITUDES`."""
    check_model(model)
    check_fourier(model.cfg, "predict_output_weights")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {list(SOURCES)}, got {source!r}")
    if amplitude not in AMPLITUDES:
        raise ValueError(f"amplitude must be one of {list(AMPLITUDES)}, got {amplitude!r}")
    p = model.cfg.p
    if source == "diagonal":
        rows = diagonal_functions(model)  # [H, p], centred
        fit = fit_cosines(rows.float())
        k, phase, amp = fit.k, fit.phase.double(), rows.std(dim=1)
        basis = rows if amplitude == "input" else rows / amp.clamp_min(1e-300)[:, None]
    else:
        k, phase, amp = _neuron_terms(model, source)
        amp = amp if amplitude == "input" else torch.ones_like(amp)
        c = torch.arange(p, dtype=torch.float64)
        basis = amp[:, None] * torch.cos(2 * math.pi * k.double()[:, None] * c / p
                                         + phase[:, None])
    W = model.W_out.detach().cpu().double()
    Wc = W - W.mean(dim=1, keepdim=True)
    denom = float(basis.square().sum())
    lam = float((Wc * basis).sum()) / denom if denom > 0 else 0.0
    pred = lam * basis
    sst = float(Wc.square().sum())
    r2 = 1 - float((Wc - pred).square().sum()) / sst if sst > 0 else float("nan")
    own = fit_cosines(W.float())
    var = layer_activations(model, model.cfg.n_layers - 1, "post").flatten(1).var(dim=1)
    alive = var > 1e-12 * var.max().clamp_min(1e-300)
    agree = (own.k == k) & alive
    err = torch.where(agree, wrap_angle(phase - own.phase.double()),
                      torch.full_like(phase, float("nan")))
    k_agree = float(agree.sum()) / int(alive.sum()) if bool(alive.any()) else float("nan")
    return OutputPrediction(p, source, amplitude, model.cfg.n_layers - 1, k,
                            wrap_angle(phase), amp, lam, pred.float(), r2, k_agree, err, alive)


@dataclass
class OutputReplacementCurve:
    """Accuracy over the dataset as a growing share of the last layer's output weight rows is
    replaced: `accuracy[kind][i][j]` for `kind` in `predicted` / `fitted`, random order `i`,
    `fractions[j]`; `original` is the untouched model's accuracy."""

    source: str
    amplitude: str
    fractions: list[float]
    original: float
    accuracy: dict[str, list[list[float]]]
    prediction: OutputPrediction

    def mean(self, kind: str) -> list[float]:
        return [sum(col) / len(col) for col in zip(*self.accuracy[kind], strict=True)]

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"source": self.source, "amplitude": self.amplitude,
                            "fractions": self.fractions, "original": self.original,
                            "accuracy": self.accuracy,
                            "mean": {kind: self.mean(kind) for kind in self.accuracy},
                            "prediction": self.prediction.to_dict()})

    def summary(self) -> Summary:
        """The untouched accuracy, and each kind's mean accuracy at the largest fraction."""
        return headline({"source": self.source, "amplitude": self.amplitude,
                         "original": self.original, "fraction_last": self.fractions[-1],
                         **{f"{kind}_last": self.mean(kind)[-1] for kind in self.accuracy}})


@torch.no_grad()
def output_replacement_curve(
    model: Any, source: str = "weights", amplitude: str = "input",
    fractions: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0), n_orders: int = 3,
    seed: int = 0,
) -> OutputReplacementCurve:
    """Replace the output weights of a growing random share of the last layer's neurons by their
    predicted rows (`predict_output_weights(model, source, amplitude)`) and, beside it, by each
    row's own cosine fit; `n_orders` random orders from `seed`, the same for both."""
    check_model(model)
    check_no_hooks(model, "output_replacement_curve")
    fracs = check_fractions(fractions)
    check_orders(n_orders, seed)
    pred = predict_output_weights(model, source, amplitude)
    cfg, H, p = model.cfg, model.cfg.d_hidden, model.cfg.p
    tokens, labels = dataset(cfg)
    post = layer_activations(model, cfg.n_layers - 1, "post").reshape(H, p * p).t()
    post = post[tokens[:, 0] * p + tokens[:, 1]].float()  # [n_pairs, H]
    W = model.W_out.detach().cpu()
    base = readout_logits(post, W, model.b_out.detach().cpu() if cfg.bias else None)
    new = {"predicted": pred.W_out, "fitted": fit_cosines(W).values()}
    gen = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(H, generator=gen).tolist() for _ in range(n_orders)]
    counts = [round(f * H) for f in fracs]
    what = "the accuracy with predicted output weights"
    out = {kind: accuracy_as_terms_change(base, labels, post, W, orders, counts, rows, what=what)
           for kind, rows in new.items()}  # a replaced row adds post_n * (new_n - old_n)
    return OutputReplacementCurve(source, amplitude, fracs, fraction_right(base, labels, what), out,
                                  pred)


__all__ = ["AMPLITUDES", "SOURCES", "OutputPrediction", "OutputReplacementCurve",
           "diagonal_functions",
           "output_replacement_curve", "predict_output_weights"]
