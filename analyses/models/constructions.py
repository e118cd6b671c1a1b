"""Exact constructions: hand-set `quad` (x^2) networks that add mod p (issue 11).

Each is an ordinary `HookedMLP` (no biases) built from `analyses.models.cosine`'s draws, so a
model with `N` neurons is the first `N` neurons of any larger one. `analyses.experiments.
construction` measures them beside trained models.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from analyses._common import check_positive_int
from analyses.models.cosine import cosine_weights, random_cosine_params
from hooked_mlp.config import MLPConfig

__all__ = ["PIZZA_GROUP", "QUAD_GROUP", "QUAD_PHASE_STEP", "pizza_construction",
           "quad_construction", "quad_construction_neurons", "random_phase_quad_model"]

# ------------------------------------------------------------- exact constructions (issue 11)
# Gromov 2023's construction for x^2 activations, with phases chosen so that it is exact. A
# neuron with frequency k (theta = 2 pi k / p) and input phases phi, psi computes
#     (cos(theta a + phi) + cos(theta b + psi))^2
#       = 1 + cos(2 theta a + 2 phi) / 2 + cos(2 theta b + 2 psi) / 2
#         + cos(theta (a + b) + phi + psi) + cos(theta (a - b) + phi - psi),
# and with output weights cos(theta c + phi + psi) it adds to logit c the wanted term
# cos(theta (a + b - c)) / 2 and seven unwanted ones, each carrying a phase factor
# exp(i (m1 phi + m2 psi)) for (m1, m2) in (1, 1), (1, -1), (3, 1), (1, 3), (2, 2), (0, 2),
# (2, 0). A group of M neurons with phi_j = alpha + 2 pi j / M, psi_j = beta + 2 pi c j / M sums
# each of those factors to zero unless M divides m1 + c m2; M = 6, c = 4 is the smallest group
# of this one-parameter form for which none does (every c fails for M = 3, 4, 5; a full 3 x 3
# grid of (phi, psi) would also do, with 9 neurons). So one complete group gives exactly
# logit_c = 3 cos(2 pi k (a + b - c) / p), whose maximum over c is at c = a + b alone when k is
# coprime with p (any k for prime p): 6 neurons add mod p with 100 % accuracy, and so does
# every multiple of 6. Between multiples the last, incomplete group's uncancelled terms are of
# the order of the whole margin (3 (1 - cos(2 pi / p)), 0.005 at p = 113) and break it: 7
# neurons add only 19-23 % of the pairs at p = 113 (seeds 0-2).
QUAD_GROUP, QUAD_PHASE_STEP = 6, 4
PIZZA_GROUP = 3


def quad_construction_neurons(p: int) -> int:
    """The smallest neuron count at which `quad_construction` is predicted to reach 100 %
    accuracy: one complete group (for prime `p`, or when the group's frequency is coprime with
    `p`). Every multiple of it does too; counts in between do not (an incomplete group)."""
    check_positive_int("p", p, 3)
    return QUAD_GROUP


def _grouped_phases(n_neurons: int, p: int, seed: int, group: int, step_b: int
                    ) -> dict[str, Tensor]:
    """Per neuron: the frequency and phases of its group (from `random_cosine_params`, so a
    model with `N` neurons is the first `N` neurons of any larger one), plus the lattice
    offsets `2 pi j / group` (for a) and `2 pi step_b j / group` (for b)."""
    check_positive_int("n_neurons", n_neurons)
    groups = -(-n_neurons // group)
    prm = random_cosine_params(groups, p, seed)
    g = torch.arange(n_neurons) // group
    j = (torch.arange(n_neurons) % group).double()
    phi_a = torch.remainder(prm["phi_a"][g] + 2 * math.pi * j / group, 2 * math.pi)
    phi_b = torch.remainder(prm["phi_b"][g] + 2 * math.pi * step_b * j / group, 2 * math.pi)
    return {"k": prm["k"][g], "phi_a": phi_a, "phi_b": phi_b}


def quad_construction(n_neurons: int, p: int = 113, seed: int = 0) -> Any:
    """Gromov's construction for `quad` (x^2) activations, exact: a `HookedMLP` (no biases)
    whose neurons come in groups of 6 sharing a frequency (drawn from `seed`), with input
    phases on the lattice that cancels every unwanted term (see the comment above). With
    `n_neurons` a multiple of `quad_construction_neurons(p)` (6) it adds mod p with 100 %
    accuracy (prime `p`); otherwise the last, incomplete group adds uncancelled terms back, and
    they break it (7 neurons: about 20 % at p = 113)."""
    from hooked_mlp.model import HookedMLP

    check_positive_int("n_neurons", n_neurons)
    cfg = MLPConfig(p=p, d_hidden=n_neurons, activation="quad", bias=False)  # sizes checked
    prm = _grouped_phases(n_neurons, p, seed, QUAD_GROUP, QUAD_PHASE_STEP)
    return HookedMLP.from_params(cfg, cosine_weights(prm["k"], prm["phi_a"], prm["phi_b"], p))


def pizza_construction(n_neurons: int, p: int = 113, seed: int = 0) -> Any:
    """A pure pizza (Zhong et al. 2023) with `quad` activations: groups of 3 neurons sharing a
    frequency, each with the same phase for `a` and `b` (`phi_j = alpha + 2 pi j / 3`, output
    phase `2 phi_j`). A neuron then sees `2 cos(theta (a + b) / 2 + phi) cos(theta (a - b) / 2)`;
    a complete group gives `logit_c = 3/2 cos(theta (a + b - c)) + 3/4 cos(theta (2a - c)) +
    3/4 cos(theta (2b - c))`, so the correct logit, `3/2 (1 + cos(theta (a - b)))`, depends on
    the distance `a - b` only, and pairs near antipodal are often wrong."""
    from hooked_mlp.model import HookedMLP

    check_positive_int("n_neurons", n_neurons)
    cfg = MLPConfig(p=p, d_hidden=n_neurons, activation="quad", bias=False)  # sizes checked
    prm = _grouped_phases(n_neurons, p, seed, PIZZA_GROUP, 1)
    return HookedMLP.from_params(cfg, cosine_weights(prm["k"], prm["phi_a"], prm["phi_a"], p))


def random_phase_quad_model(n_neurons: int, p: int = 113, seed: int = 0) -> Any:
    """Gromov's construction as he states it: unit cosine neurons with random frequencies and
    phases (`random_cosine_params`), output phase `phi_a + phi_b`, `quad` activations."""
    from hooked_mlp.model import HookedMLP

    prm = random_cosine_params(n_neurons, p, seed)
    cfg = MLPConfig(p=p, d_hidden=n_neurons, activation="quad", bias=False)
    return HookedMLP.from_params(cfg, cosine_weights(prm["k"], prm["phi_a"], prm["phi_b"], p))
