"""The built-in probes, registered like any plugin (entry points `hooked_mlp.probes` in this
project's `pyproject.toml`): each is a function of a model returning a result with
`to_dict()` (see `analyses.probes`)."""

from __future__ import annotations

from typing import Any

from analyses._common import fourier_structure
from analyses.cosine_fit import dead_neurons as _dead_neurons
from analyses.cosine_fit import fit_neurons
from analyses.fourier import frequency_histogram
from analyses.probes import ProbeResult
from analyses.views import plot_frequency_histogram


def _fourier_applies(model: Any) -> None:
    """Refuse a model whose Fourier structure over residues means nothing
    (`analyses._common.fourier_structure`): the report then says why, as its main sections
    do."""
    why = fourier_structure(model.cfg)
    if why is not None:
        raise ValueError(why)


def frequencies(model: Any) -> ProbeResult:
    """Which frequencies the first layer's neurons use (dominant frequency of a and b)."""
    _fourier_applies(model)
    hist = frequency_histogram(model)
    return ProbeResult(
        hist.to_dict(), {"frequencies": lambda: plot_frequency_histogram([hist])},
        f"{hist.n_distinct} of {hist.n_available} frequencies in use; at most "
        f"{hist.most_common_count} neurons share one (k = {hist.most_common})")


def cosine_fits(model: Any) -> ProbeResult:
    """How well one cosine per neuron describes the weights (the study's relations)."""
    _fourier_applies(model)
    s = fit_neurons(model).summary()
    return ProbeResult(s, text=f"median R²: a {s['r2_a_median']:.3f}, b {s['r2_b_median']:.3f}, "
                               f"out {s['r2_out_median']:.3f}; same k for a, b and out: "
                               f"{s['frac_k_all_equal']:.1%} of neurons")


def dead_neurons(model: Any) -> ProbeResult:
    """Neurons of the first hidden layer whose activation is the same on every pair."""
    dead = _dead_neurons(model)
    ids = dead.nonzero().flatten().tolist()
    return ProbeResult({"n_dead": len(ids), "dead": ids, "d_hidden": model.cfg.d_hidden},
                       text=f"{len(ids)} of {model.cfg.d_hidden} neurons are constant")
