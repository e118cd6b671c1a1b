"""Small helpers shared by the analyses: argument checks, JSON conversion, evaluation.

Which analyses see hooks: an analysis that runs the model (`hooked_mlp.helpers.accuracy`,
`activation_grids`, `dead_neurons`, the views of activations) runs its forward, permanent hooks
included, as `model(tokens)` does; an analysis that reads the weights (spectra, fits) describes the
parameters, which hooks do not change; and an analysis that computes a model's behaviour from
its weights (`replacement_curve`, `replace_neurons`) refuses a model that carries permanent
hooks, whose effect it would silently leave out (`check_no_hooks`).
"""

from __future__ import annotations

import math
import operator
import statistics
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Complex, Float, Int
from torch import Tensor

from hooked_mlp._moved import renamed
from hooked_mlp.helpers import check_all_pairs_memory as check_all_pairs_memory  # shared

__getattr__ = renamed(__name__)  # its old names: the rows of analyses/__init__.py

# the shapes of the analyses' tensors (jaxtyping; dimension names as in hooked_mlp.shapes)
Rows = Float[Tensor, "rows p"]  # weight vectors over the residues, one per row (a neuron)
Vector = Float[Tensor, "p"]  # one such vector
Spectrum = Float[Tensor, "*rows K"]  # powers of the frequencies k = 1..(p-1)/2, last axis
ComplexSpectrum = Complex[Tensor, "*rows K_and_0"]  # DFT terms k = 0..(p-1)/2, last axis
NeuronGrids = Float[Tensor, "neurons p p"]  # one value per neuron and pair: rows a, columns b
PerRow = Float[Tensor, "rows"]  # one number per row (neuron)
PerRows = Float[Tensor, "*rows"]  # one number per row of a stack of rows
RowFrequencies = Int[Tensor, "rows"]  # one integer frequency per row
PairLogits = Float[Tensor, "p_squared p"]  # the logits of every pair, pair a * p + b
DiagonalFunctions = Float[Tensor, "neurons p"]  # per neuron, a function of a + b (mod p)
DeadMask = Bool[Tensor, "d_hidden"]

Summary = dict[str, Any]  # name -> a number, a word, None, or a (nested) group or list of such


@runtime_checkable
class Result(Protocol):
    """What every result object of `analyses` and `analyses.experiments` offers.

    `summary()` gives its headline numbers: a dict of plain Python numbers, words or None (a
    number that is not defined is None), or of named groups or short lists of them
    (`{"median_share": {"sum": 0.9, ...}, "k_counts": [0, 3, ...]}`), small enough to print;
    `to_dict()` gives everything it holds that JSON can carry (tensors as lists, NaN as null).
    `tests/test_results_protocol.py` walks the result classes and holds each to this.
    """

    def summary(self) -> Summary: ...

    def to_dict(self) -> dict[str, Any]: ...


def headline(values: dict[str, Any]) -> Summary:
    """`values` as a `summary()`: tensors and numpy scalars as numbers, NaN as None."""
    return to_jsonable(values)


def curve_ends(fractions: Sequence[float], mean: Sequence[float]) -> dict[str, float]:
    """The headline numbers of an accuracy curve: its first and last fractions and means."""
    return {"fraction_first": fractions[0], "accuracy_first": mean[0],
            "fraction_last": fractions[-1], "accuracy_last": mean[-1]}


def median_or_none(values: Tensor) -> float | None:
    """The median of the finite entries of `values` (None when there is none)."""
    v = values.detach().double().flatten()
    v = v[torch.isfinite(v)]
    return float(v.median()) if v.numel() else None


def check_model(model: Any, *, finite: bool = True) -> None:
    """`model` must be a `HookedMLP` (with finite weights, unless `finite=False`)."""
    from hooked_mlp.model import HookedMLP

    if not isinstance(model, HookedMLP):
        raise TypeError(f"model must be a HookedMLP, got {type(model).__name__}")
    if finite:
        for name, value in model.state_tensors().items():
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"model.{name} holds NaN or infinite values: no analysis of "
                                 "it would mean anything")


def check_one_layer(model: Any, what: str) -> None:
    """Refuse a deeper model in an analysis of one hidden layer's input and output weights."""
    L = model.cfg.n_layers
    if L != 1:
        raise ValueError(
            f"{what} reads each neuron's input weights (W_in) and output weights (W_out), which "
            f"belong to the same neurons only with one hidden layer; this model has "
            f"n_layers={L} (fit its first layer's inputs with fit_cosines(model.W_a.T), or "
            "study each layer through the cache)")


def check_one_hot(model_or_cfg: Any, what: str) -> None:
    """Refuse a model whose input weights are not indexed by residue (an input encoding other
    than one-hot) in an analysis that reads `W_in` row by row as a function of `a` and `b`."""
    cfg = getattr(model_or_cfg, "cfg", model_or_cfg)
    encoding = getattr(cfg, "input_encoding", "one_hot")
    if encoding != "one_hot":
        raise ValueError(
            f"{what} reads the input weights as functions of the residues a and b, which they "
            f"are only with one-hot inputs; this model has input_encoding={encoding!r} (a dense "
            f"[{cfg.d_input}, {cfg.d_hidden}] first layer). Study it through its activations: "
            "analyses.activation_fits (or fit model.input_table(), the residue-indexed view)")


def check_no_hooks(model: Any, what: str) -> None:
    """Refuse a model with permanent hooks in an analysis that computes from its weights."""
    hooked = sorted(name for name, hp in model.hook_dict.items() if hp.fwd_hooks or hp.bwd_hooks)
    if hooked:
        raise ValueError(
            f"{what} computes the model's behaviour from its weights, so it would leave out the "
            f"permanent hooks on {hooked}; remove them (model.reset_hooks(including_permanent="
            "True)) or write their effect into the weights first")


def check_fourier(cfg: Any, what: str) -> None:
    """Fourier analyses need at least one non-constant frequency: p >= 3."""
    if cfg.p < 3:
        raise ValueError(f"{what} needs p >= 3 (with p = {cfg.p} there is no frequency "
                         "between 1 and (p - 1) / 2 to fit)")


def fourier_structure(cfg: Any) -> str | None:
    """None where models of `cfg` have residue Fourier structure to measure (the frequencies
    neurons use, their cosine fits), else why not: an operation with no single-frequency
    relation over residues, or too few frequencies for agreement to mean anything."""
    from hooked_mlp.family import OPERATIONS

    op = OPERATIONS[cfg.operation]
    if op.phase_sign is None:
        return f"not applicable to {cfg.operation} ({op.symbol}): {op.fourier_note}"
    if (cfg.p - 1) // 2 < 3:
        return (f"not applicable with p = {cfg.p}: there are only {(cfg.p - 1) // 2} "
                "frequencies, so neurons agree on one by chance")
    return None


def phase_sign(cfg: Any) -> int | None:
    """`s` in the predicted `phi_out = phi_a + s * phi_b` for `cfg`'s operation, or None where
    no such relation over residues is predicted (see `hooked_mlp.family.OPERATIONS`)."""
    from hooked_mlp.family import OPERATIONS

    return OPERATIONS[cfg.operation].phase_sign


def check_neurons(neurons: Iterable[int] | None, d_hidden: int, name: str = "neurons") -> list[int]:
    """Neuron indices as a list, each checked to lie in `[0, d_hidden)`."""
    if neurons is None:
        return list(range(d_hidden))
    if isinstance(neurons, int):
        neurons = [neurons]
    if isinstance(neurons, Tensor):
        neurons = neurons.flatten().tolist()
    if isinstance(neurons, (str, bytes)) or not hasattr(neurons, "__iter__"):
        raise TypeError(f"{name} must be integers in [0, {d_hidden - 1}], got {neurons!r}")
    out = []
    for n in neurons:
        try:
            if isinstance(n, bool):
                raise TypeError
            n = operator.index(n)
        except TypeError:
            raise TypeError(f"{name} must be integers in [0, {d_hidden - 1}], got {n!r}") from None
        if not 0 <= n < d_hidden:
            raise ValueError(f"{name} must lie in [0, {d_hidden - 1}] (d_hidden={d_hidden}), "
                             f"got {n}")
        out.append(n)
    return out


def check_fractions(fractions: Sequence[float]) -> list[float]:
    """A non-empty list of numbers in [0, 1]."""
    message = f"fractions must be a non-empty list of numbers in [0, 1], got {fractions!r}"
    if isinstance(fractions, (str, bytes)) or not hasattr(fractions, "__iter__"):
        raise ValueError(message)
    try:
        out = [float(f) for f in fractions]
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if not out or any(not (0.0 <= f <= 1.0) for f in out):  # NaN fails the comparison too
        raise ValueError(message)
    return out


def check_count(name: str, value: Any) -> None:
    """`value` (the argument `name`) is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_positive_int(name: str, value: Any, low: int = 1) -> int:
    """`value` if it is an integer >= `low` (not a bool), else a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def check_seed(seed: Any) -> None:
    """`seed` is an integer in [0, 2^63), as `torch.Generator.manual_seed` takes it."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def check_orders(n_orders: Any, seed: Any) -> None:
    """`n_orders` random neuron orders (a positive integer) drawn from `seed` (an integer in
    [0, 2^63)), as the replacement experiments take them."""
    check_count("n_orders", n_orders)
    check_seed(seed)


def to_jsonable(x: Any) -> Any:
    """Tensors and numpy values to lists and floats; NaN and infinities to None."""
    import numpy as np

    if isinstance(x, Tensor):
        return to_jsonable(x.detach().cpu().tolist())
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    return x


def mean_sd(values: Iterable[float | None]) -> dict[str, float]:
    """The one aggregate of the toolkit: mean, sample standard deviation (`sd`, 0 for one
    value), min, max and count `n` of the values that are numbers (None and NaN are left out;
    with none left, every statistic is NaN and `n` is 0)."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    if not v:
        nan = float("nan")
        return {"mean": nan, "sd": nan, "min": nan, "max": nan, "n": 0}
    return {"mean": statistics.fmean(v), "sd": statistics.stdev(v) if len(v) > 1 else 0.0,
            "min": min(v), "max": max(v), "n": len(v)}


def wrap_angle(x: Tensor) -> Tensor:
    """Angles mapped to `[-pi, pi)`."""
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi
