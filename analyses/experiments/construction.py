"""Exact constructions beside trained models: the accuracy of Gromov's `quad` construction
over `N`, and how a trained `quad` model compares with it.

`analyses.models.constructions.quad_construction` groups neurons by six on a phase lattice that
cancels every unwanted term exactly, so it reaches 100 % at 6 neurons (and at every multiple of
6; an incomplete last group breaks it); Gromov's own statement (`random_phase_quad_model`) draws
the phases at random, and the unwanted terms then only average away as `N` grows. `quad_curve`
measures both over `N`. `compare_quad` reads a (trained) model the way the construction is
written: each neuron's frequency, phases and scales (cosine fits), and for each frequency the
seven phase sums the construction sets to zero,

    |sum_n s_n exp(i (m1 phi_a_n + m2 phi_b_n))| / sum_n s_n,
    (m1, m2) in (1, 1), (1, -1), (3, 1), (1, 3), (2, 2), (0, 2), (2, 0),

(`s_n = s_a s_b s_out`, the product of the neuron's two input scales and its output scale: an
x² neuron's terms in the logits are quadratic in its input scales, linear in its output), which
are 0 for the construction and about `1 / sqrt(n)` for `n` neurons with random phases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from analyses._common import (
    Summary,
    check_model,
    check_one_hot,
    check_one_layer,
    headline,
    to_jsonable,
    wrap_angle,
)
from analyses.cosine_fit import fit_neurons
from analyses.models.constructions import (
    quad_construction,
    quad_construction_neurons,
    random_phase_quad_model,
)
from hooked_mlp.helpers import accuracy

CHARACTERS = ((1, 1), (1, -1), (3, 1), (1, 3), (2, 2), (0, 2), (2, 0))


@dataclass
class QuadCurve:
    """Accuracy over all pairs of the exact construction and of random phases, per `N`."""

    p: int
    ns: list[int]
    seeds: list[int]
    exact: list[list[float]]  # [len(ns)][len(seeds)]
    random_phases: list[list[float]]
    predicted: int

    def to_dict(self) -> dict[str, Any]:
        mean = lambda rows: [sum(r) / len(r) for r in rows]  # noqa: E731
        return to_jsonable({**self.__dict__, "exact_mean": mean(self.exact),
                            "random_phases_mean": mean(self.random_phases)})

    def summary(self) -> Summary:
        """The predicted width, the smallest `N` whose construction is right on every pair for
        every seed (None: none), and the mean accuracies at the largest `N`."""
        exact = [n for n, row in zip(self.ns, self.exact, strict=True) if min(row) == 1.0]
        return headline({"p": self.p, "predicted": self.predicted,
                         "smallest_n_exact": min(exact) if exact else None, "n_last": self.ns[-1],
                         "exact_last": sum(self.exact[-1]) / len(self.exact[-1]),
                         "random_phases_last": sum(self.random_phases[-1])
                         / len(self.random_phases[-1])})


def quad_curve(ns: Sequence[int] = (1, 2, 3, 4, 5, 6, 7, 9, 12, 24, 48, 96, 192),
               p: int = 113, seeds: Sequence[int] = range(3)) -> QuadCurve:
    """Accuracy of `quad_construction(N, p, seed)` and of `random_phase_quad_model(N, p, seed)`
    for every `N` in `ns` and seed."""
    if isinstance(ns, (str, bytes)) or not ns or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in ns):
        raise ValueError(f"ns must be a non-empty list of integers >= 1, got {ns!r}")
    if isinstance(seeds, (str, bytes)) or not list(seeds):
        raise ValueError(f"seeds must name at least one seed, got {seeds!r}")
    seeds = list(seeds)
    exact = [[accuracy(quad_construction(n, p, s)) for s in seeds] for n in ns]
    rand = [[accuracy(random_phase_quad_model(n, p, s)) for s in seeds] for n in ns]
    return QuadCurve(p, list(ns), seeds, exact, rand, quad_construction_neurons(p))


def compare_quad(model: Any) -> dict[str, Any]:
    """A one-hidden-layer model of `a + b` read as the construction is written: frequencies,
    phase relation, scales and the phase sums per frequency (see the module's text)."""
    check_model(model)
    check_one_layer(model, "compare_quad")
    check_one_hot(model, "compare_quad")
    if model.cfg.operation != "add":
        raise ValueError(f"compare_quad compares with a construction for a + b; this model "
                         f"computes {model.cfg.operation!r}")
    fits = fit_neurons(model)
    live = fits.defined & ~fits.dead if fits.dead.numel() else fits.defined
    if not bool(live.any()):
        raise ValueError("compare_quad needs at least one live neuron whose weights vary; "
                         "every neuron of this model is dead or constant")
    k = fits.joint.k[live]
    phi_a, phi_b = fits.a.phase[live].double(), fits.b.phase[live].double()
    weight = (fits.a.scale * fits.b.scale * fits.out.scale)[live].double()  # s_a s_b s_out
    sums, random_level = [], []
    for freq in torch.unique(k).tolist():
        sel = k == freq
        w = weight[sel]
        row = []
        for m1, m2 in CHARACTERS:
            z = (w * torch.exp(1j * (m1 * phi_a[sel] + m2 * phi_b[sel]))).sum()
            row.append(float(z.abs() / w.sum().clamp_min(1e-30)))
        sums.append(row)
        random_level.append(float(torch.sqrt((w ** 2).sum()) / w.sum().clamp_min(1e-30)))
    sums_t = torch.tensor(sums, dtype=torch.float64)
    counts = torch.bincount(k)[torch.unique(k)]
    err = wrap_angle(fits.out.phase - fits.a.phase - fits.b.phase)[live]
    same_k = (fits.a.k == fits.b.k) & (fits.b.k == fits.out.k)
    return to_jsonable({
        "p": model.cfg.p, "d_hidden": model.cfg.d_hidden, "activation": model.cfg.activation,
        "accuracy": accuracy(model), "n_live": int(live.sum()),
        "n_frequencies": len(sums), "neurons_per_frequency_median": float(counts.double().median()),
        "frac_k_shared": float(same_k[live].double().mean()),
        "phase_error_abs_median": float(err.abs().median()),
        "frac_phase_error_below_pi_8": float((err.abs() < math.pi / 8).double().mean()),
        "r2_in_median": float(((fits.a.r2 + fits.b.r2) / 2)[live].median()),
        "r2_out_median": float(fits.out.r2[live].median()),
        "scale_in_median": float(((fits.a.scale + fits.b.scale) / 2)[live].median()),
        "scale_out_median": float(fits.out.scale[live].median()),
        "scale_a_over_b_median": float((fits.a.scale / fits.b.scale.clamp_min(1e-30))[live]
                                       .median()),
        "offset_over_scale_median": float((fits.a.offset.abs() / fits.a.scale.clamp_min(1e-30))
                                          [live].median()),
        "phase_sum_mean": sums_t.mean(dim=0).tolist(),  # per character, over frequencies
        "phase_sum_random_level_mean": sum(random_level) / len(random_level),
        "characters": [list(c) for c in CHARACTERS],
    })


__all__ = ["CHARACTERS", "QuadCurve", "compare_quad", "quad_curve", "random_phase_quad_model"]
