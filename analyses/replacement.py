"""Replace neurons by their cosine fits and measure what the model still computes.

`replace_neurons` builds a new `HookedMLP` whose chosen neurons have their input weights (the
columns of `W_a` and `W_b`) and output weights (the row of `W_out`) replaced by cosine fits;
biases and every other neuron are kept. `replacement_curve` measures accuracy over all pairs of
the dataset as the replaced fraction grows from 0 to 1, over several random neuron orders (with
spread) or in a fixed order (best- or worst-fitting neurons first). Both need one hidden layer
(a neuron's input and output weights), and compute from the weights: a model that carries
permanent hooks is refused rather than measured without them.

The fit form is a choice the study left implicit, so it is an argument:
- `"separate"`: `a`, `b` and the output each have their own `k`, scale, phase, offset;
- `"joint"`: the study's form for the inputs, `a` and `b` sharing `k`, scale and offset;
- `"study"`: the joint input form, and the output forced onto the input frequency with
  phase `phi_a + phi_b` (only its scale and offset are fitted): the algorithm as the study
  states it;
- `"harmonic"`: separate input fits, and outputs fitted with the neuron's frequency *and its
  second harmonic* `2k` (this project finds ~13 % of the output weights' variance there).
`parts` replaces the inputs, the outputs, or both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from analyses._common import (
    Summary,
    check_all_pairs_memory,
    check_count,
    check_fractions,
    check_model,
    check_neurons,
    check_no_hooks,
    check_one_hot,
    check_one_layer,
    check_seed,
    curve_ends,
    headline,
    mean_sd,
    to_jsonable,
)
from analyses.cosine_fit import (
    CosineFit,
    NeuronFits,
    fit_cosines,
    fit_harmonics,
    fit_neurons,
    weights_digest,
)
from analyses.readout import accuracy_as_terms_change, readout_logits
from hooked_mlp.data import dataset

FORMS = ("separate", "joint", "study", "harmonic")
PARTS = ("both", "inputs", "outputs")
ORDERS = ("random", "best_first", "worst_first")


def _study_output_fit(fits: NeuronFits, w_out: torch.Tensor) -> CosineFit:
    """Output fit at the joint input frequency, phase fixed to `phi_a + phi_b`; scale and
    offset by least squares."""
    import math

    j = fits.joint
    p = fits.p
    x = torch.arange(p, dtype=torch.float64)
    if fits.phase_sign is None:
        raise ValueError("form='study' forces the output phase to phi_a + phi_b (or phi_a - phi_b "
                         "for a - b); no such relation is predicted for this model's operation: "
                         "use form='separate', 'joint' or 'harmonic'")
    phase = (j.phase_a + fits.phase_sign * j.phase_b).double()
    basis = torch.cos(2 * math.pi * j.k.double()[:, None] * x / p + phase[:, None])  # [n, p]
    bc = basis - basis.mean(dim=1, keepdim=True)
    wc = w_out.double() - w_out.double().mean(dim=1, keepdim=True)
    scale = (bc * wc).sum(dim=1) / bc.square().sum(dim=1)  # may be negative: no sign freedom
    offset = w_out.double().mean(dim=1) - scale * basis.mean(dim=1)
    fit = CosineFit(p, j.k, scale.float(), phase.float(), offset.float(),
                    torch.zeros(len(scale)), j.k.double())
    return fit


def _check_fits(model: Any, fits: Any) -> None:
    if not isinstance(fits, NeuronFits):
        raise TypeError(f"fits must be a NeuronFits (from fit_neurons), got {type(fits).__name__}")
    if fits.p != model.cfg.p or any(not 0 <= n < model.cfg.d_hidden for n in fits.neurons):
        raise ValueError(f"fits do not belong to this model: fitted with p={fits.p} on neurons "
                         f"{fits.neurons[:5]}..., the model has p={model.cfg.p} and "
                         f"{model.cfg.d_hidden} neurons")
    if fits.weights_digest and fits.weights_digest != weights_digest(model):
        raise ValueError("fits do not belong to this model: they were fitted on other weights "
                         "(fit_neurons(model) fits this one)")


def fitted_weights(model: Any, fits: NeuronFits, form: str = "separate") -> dict[str, torch.Tensor]:
    """Cosine versions of every fitted neuron's weights: `W_a`, `W_b` `[p, n]`, `W_out` `[n, p]`."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {list(FORMS)}, got {form!r}")
    idx = torch.tensor(fits.neurons)
    if form in ("separate", "harmonic"):
        fa, fb, fo = fits.a, fits.b, fits.out
        if form == "harmonic":
            fo = fit_harmonics(model.W_out.detach().cpu()[idx], fits.out.k, 2)
    else:
        fa, fb = fits.joint.as_fits()
        fo = fits.out
        if form == "study":
            fo = _study_output_fit(fits, model.W_out.detach().cpu()[idx])
        else:  # joint: the output fitted at the shared input frequency
            fo = fit_cosines(model.W_out.detach().cpu()[idx], fits.joint.k)
    return {"W_a": fa.values().t(), "W_b": fb.values().t(), "W_out": fo.values()}


def replace_neurons(
    model: Any,
    neurons: Sequence[int],
    fits: NeuronFits | None = None,
    form: str = "separate",
    parts: str = "both",
    weights: dict[str, torch.Tensor] | None = None,
) -> Any:
    """A new `HookedMLP` with `neurons`' weights replaced by their cosine fits (one hidden
    layer; the new model has no hooks, so a model carrying permanent hooks is refused).

    `weights`, if given, replaces the fits of `form`: `W_a`, `W_b` `[p, n]` and `W_out`
    `[n, p]` for the `n` neurons of `fits` (all of them when `fits` is None), e.g.
    `analyses.forms.form_weights`."""
    from hooked_mlp.model import HookedMLP

    check_model(model)
    check_one_layer(model, "replace_neurons")
    check_one_hot(model, "replace_neurons")
    check_no_hooks(model, "replace_neurons")
    if parts not in PARTS:
        raise ValueError(f"parts must be one of {list(PARTS)}, got {parts!r}")
    chosen = check_neurons(neurons, model.cfg.d_hidden)
    if fits is None:
        fits = fit_neurons(model)
    _check_fits(model, fits)
    if weights is None:
        weights = fitted_weights(model, fits, form)
    col = {n: i for i, n in enumerate(fits.neurons)}
    missing = [n for n in chosen if n not in col]
    if missing:
        raise ValueError(f"neurons {missing} have no fit in `fits` (fitted: {fits.neurons})")
    params = {k: v.detach().cpu().clone() for k, v in model.state_tensors().items()}
    if chosen:
        idx = torch.tensor(chosen)
        fidx = torch.tensor([col[n] for n in chosen])
        if parts in ("both", "inputs"):
            _put_inputs(model.cfg, params["W_in"], idx, weights["W_a"][:, fidx],
                        weights["W_b"][:, fidx])
        if parts in ("both", "outputs"):
            params["W_out"][idx] = weights["W_out"][fidx]
    return HookedMLP.from_params(model.cfg, params)


def _put_inputs(cfg: Any, W_in: torch.Tensor, idx: torch.Tensor, W_a: torch.Tensor,
                W_b: torch.Tensor) -> None:
    """Write input weights into columns `idx` of `W_in` (with tied inputs `a` and `b` share the
    one weight, and their fits are the same: `W_a` is written)."""
    p = cfg.p
    if cfg.tied_inputs:
        W_in[:, idx] = W_a
    else:
        W_in[:p, idx] = W_a
        W_in[p:, idx] = W_b


@dataclass
class ReplacementCurve:
    """Accuracy (all `p^2` pairs) against the fraction of neurons replaced."""

    fractions: list[float]
    order: str
    form: str
    parts: str
    accuracy: list[list[float]]  # [n_orders][len(fractions)]
    seed: int

    @property
    def mean(self) -> list[float]:
        n = len(self.accuracy)
        return [sum(run[i] for run in self.accuracy) / n for i in range(len(self.fractions))]

    @property
    def sd(self) -> list[float]:
        """Sample standard deviation over the orders at each fraction (0 for one order),
        through the toolkit's one aggregate (`analyses._common.mean_sd`)."""
        return [mean_sd(run[i] for run in self.accuracy)["sd"]
                for i in range(len(self.fractions))]

    def at(self, fraction: float) -> float:
        """Mean accuracy at the fraction closest to `fraction`."""
        i = min(range(len(self.fractions)), key=lambda j: abs(self.fractions[j] - fraction))
        return self.mean[i]

    def largest_fraction_above(self, threshold: float) -> float:
        """The largest fraction replaced whose mean accuracy is still >= `threshold`."""
        ok = [f for f, a in zip(self.fractions, self.mean, strict=True) if a >= threshold]
        return max(ok) if ok else 0.0

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"fractions": self.fractions, "order": self.order, "form": self.form,
                            "parts": self.parts, "seed": self.seed, "accuracy": self.accuracy,
                            "mean": self.mean, "sd": self.sd})

    def summary(self) -> Summary:
        return headline({"order": self.order, "form": self.form, "parts": self.parts,
                         **curve_ends(self.fractions, self.mean), "n_orders": len(self.accuracy),
                         "largest_fraction_above_0.9": self.largest_fraction_above(0.9)})


def replacement_curve(
    model: Any,
    fractions: Sequence[float] = tuple(i / 10 for i in range(11)),
    order: str = "random",
    n_orders: int = 10,
    seed: int = 0,
    form: str = "separate",
    parts: str = "both",
    fits: NeuronFits | None = None,
) -> ReplacementCurve:
    """Accuracy as more and more neurons are replaced by their cosine fits.

    `order="random"` averages `n_orders` random neuron orders (drawn from `seed`);
    `"best_first"` / `"worst_first"` replace neurons by decreasing / increasing mean R^2 of
    their three fits (one order).
    """
    check_model(model)
    check_one_layer(model, "replacement_curve")
    check_one_hot(model, "replacement_curve")
    check_no_hooks(model, "replacement_curve")
    check_all_pairs_memory(model.cfg, 4 * model.cfg.d_hidden + 2 * model.cfg.p,
                           "replacement_curve")
    fracs = check_fractions(fractions)
    check_seed(seed)
    if order not in ORDERS:
        raise ValueError(f"order must be one of {list(ORDERS)}, got {order!r}")
    if parts not in PARTS:
        raise ValueError(f"parts must be one of {list(PARTS)}, got {parts!r}")
    check_count("n_orders", n_orders)
    H = model.cfg.d_hidden
    if fits is None:
        fits = fit_neurons(model)
    _check_fits(model, fits)
    if fits.neurons != list(range(H)):
        raise ValueError("fits must cover every neuron of the model (fit_neurons(model))")
    weights = fitted_weights(model, fits, form)
    if order == "random":
        gen = torch.Generator().manual_seed(seed)
        orders = [torch.randperm(H, generator=gen).tolist() for _ in range(n_orders)]
    else:
        quality = (fits.a.r2 + fits.b.r2 + fits.out.r2) / 3
        ranked = torch.argsort(quality, descending=(order == "best_first"), stable=True)
        orders = [ranked.tolist()]
    curves = accuracy_along_orders(model, weights, parts, orders, fracs)
    return ReplacementCurve(fracs, order, form, parts, curves, seed)


@torch.no_grad()
def accuracy_along_orders(
    model: Any, weights: dict[str, torch.Tensor], parts: str, orders: list[list[int]],
    fracs: list[float],
) -> list[list[float]]:
    """Accuracy after replacing the first `round(f * H)` neurons of each order, for each `f`:
    `[len(orders)][len(fracs)]`. `weights` holds the replacements of every neuron, `W_a`,
    `W_b` `[p, H]` and `W_out` `[H, p]` (as `fitted_weights` gives them); `parts` is one of
    `PARTS`; an order is a permutation of `range(H)`.

    Replacing a neuron changes the logits only through its own term `post_n * W_out[n]`, so the
    logits are updated neuron block by neuron block instead of re-running the model
    (`analyses.readout.accuracy_as_terms_change`); the
    activations come from `hooked_mlp.functional` (the model's definition) for the original and
    for the fitted input weights, and the result equals `accuracy(replace_neurons(...))` up to
    float rounding (tests check it).
    """
    from hooked_mlp.functional import hidden_activations

    cfg, H = model.cfg, model.cfg.d_hidden
    tokens, labels = dataset(cfg)
    params = {k: v.detach().cpu() for k, v in model.state_tensors().items()}
    post_old = hidden_activations(cfg, params, tokens)  # [n_pairs, H]
    post_new, W_out, W_out_new = post_old, params["W_out"], params["W_out"]
    if parts in ("both", "inputs"):
        fitted = dict(params, W_in=params["W_in"].clone())
        _put_inputs(cfg, fitted["W_in"], torch.arange(H), weights["W_a"], weights["W_b"])
        post_new = hidden_activations(cfg, fitted, tokens)
    if parts in ("both", "outputs"):
        W_out_new = weights["W_out"]
    base = readout_logits(post_old, W_out, params["b_out"] if cfg.bias else None)
    return accuracy_as_terms_change(base, labels, post_old, W_out, orders,
                                    [round(f * H) for f in fracs], W_out_new, post_new,
                                    what="the accuracy with fitted neurons")
