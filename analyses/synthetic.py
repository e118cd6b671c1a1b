"""Random cosine models: modular addition with no learning at all.

`N` neurons with `k ~ U{1..(p-1)/2}`, `phi_a, phi_b ~ U[0, 2 pi)`, unit scale, zero offsets and
biases, and output phase `phi_a + phi_b`:

    W_a[x, n] = cos(w_n x + phi_a_n)   W_b[x, n] = cos(w_n x + phi_b_n)   (w_n = 2 pi k_n / p)
    W_out[n, c] = cos(w_n c + phi_a_n + phi_b_n)

The study reports > 95 % accuracy at N = 256 and 100 % at N = 512. Each model is an ordinary
`HookedMLP`, so every probe works on it. The random draws come from the same counter-based hash
as the trainer's shuffles: neuron `n` of seed `s` is the same whatever `N` is, so the model with
`N` neurons is the first `N` neurons of any larger one (nested sampling), which lets
`synthetic_curve` sweep `N` in one pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from analyses._common import (
    Summary,
    check_all_pairs_memory,
    headline,
    to_jsonable,
)
from hooked_mlp.checks import check_finite_logits
from hooked_mlp.config import MAX_SEED, MLPConfig
from hooked_mlp.data import hash_keys

STREAM_K, STREAM_PHI_A, STREAM_PHI_B = 101, 102, 103


def _check_positive_int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_operation(operation: Any) -> int:
    """The phase sign of an operation a random cosine model can compute (`add`, `sub`)."""
    from hooked_mlp.family import OPERATIONS

    op = OPERATIONS.get(operation) if isinstance(operation, str) else None
    if op is None or op.phase_sign is None:
        usable = [k for k, o in OPERATIONS.items() if o.phase_sign is not None]
        raise ValueError(f"operation must be one of {usable} (a random cosine model computes "
                         f"a + b or a - b), got {operation!r}")
    return op.phase_sign


def random_cosine_params(n_neurons: int, p: int = 113, seed: int = 0) -> dict[str, Tensor]:
    """`k` (int64 `[N]`, in `1..(p-1)/2`) and `phi_a`, `phi_b` (float64 `[N]`, in `[0, 2 pi)`)."""
    _check_positive_int("n_neurons", n_neurons)
    _check_positive_int("p", p, 3)
    _check_positive_int("seed", seed, 0)
    if seed > MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {seed}")
    s = torch.tensor([seed])
    K = (p - 1) // 2
    uniform = lambda stream: (hash_keys(s, stream, 0, n_neurons)[0] >> 9).double() / 2.0**53  # noqa: E731
    k = hash_keys(s, STREAM_K, 0, n_neurons)[0] % K + 1
    return {"k": k, "phi_a": 2 * math.pi * uniform(STREAM_PHI_A),
            "phi_b": 2 * math.pi * uniform(STREAM_PHI_B)}


def cosine_weights(
    k: Tensor, phi_a: Tensor, phi_b: Tensor, p: int, phi_out: Tensor | None = None
) -> dict[str, Tensor]:
    """Unit cosine weights `W_in` `[2p, N]` and `W_out` `[N, p]` (a model without biases)."""
    x = torch.arange(p, dtype=torch.float64)
    w = 2 * math.pi * k.double() / p  # [N]
    phi_out = phi_a + phi_b if phi_out is None else phi_out
    W_a = torch.cos(x[:, None] * w + phi_a)  # [p, N]
    W_b = torch.cos(x[:, None] * w + phi_b)
    W_out = torch.cos(w[:, None] * x + phi_out[:, None])  # [N, p]
    return {"W_in": torch.cat([W_a, W_b]).float(), "W_out": W_out.float()}


def random_cosine_config(n_neurons: int, p: int = 113, operation: str = "add") -> MLPConfig:
    """The configuration of a random cosine model: one hidden ReLU layer, no biases."""
    return MLPConfig(p=p, d_hidden=n_neurons, operation=operation, bias=False)


def random_cosine_model(n_neurons: int, p: int = 113, seed: int = 0,
                        operation: str = "add") -> Any:
    """A `HookedMLP` of `n_neurons` random cosine neurons (no training involved), without
    biases; for `operation="sub"` the output phase is `phi_a - phi_b`."""
    from hooked_mlp.model import HookedMLP

    sign = _check_operation(operation)
    prm = random_cosine_params(n_neurons, p, seed)
    weights = cosine_weights(prm["k"], prm["phi_a"], prm["phi_b"], p,
                             prm["phi_a"] + sign * prm["phi_b"])
    return HookedMLP.from_params(random_cosine_config(n_neurons, p, operation), weights)


@dataclass
class SyntheticCurve:
    """Accuracy over all `p^2` pairs of random cosine models, per `N` and seed."""

    p: int
    ns: list[int]
    seeds: list[int]
    accuracy: list[list[float]]  # [len(ns)][len(seeds)]
    operation: str = "add"

    @property
    def mean(self) -> list[float]:
        return [sum(r) / len(r) for r in self.accuracy]

    @property
    def sd(self) -> list[float]:
        """Sample standard deviation (the toolkit's one aggregate: mean, sd, n)."""
        out = []
        for r in self.accuracy:
            m = sum(r) / len(r)
            out.append(math.sqrt(sum((v - m) ** 2 for v in r) / max(1, len(r) - 1)))
        return out

    @property
    def min(self) -> list[float]:
        return [min(r) for r in self.accuracy]

    def at(self, n: int) -> dict[str, float]:
        i = self.ns.index(n)
        return {"mean": self.mean[i], "sd": self.sd[i], "min": self.min[i]}

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"p": self.p, "ns": self.ns, "seeds": self.seeds,
                            "operation": self.operation, "accuracy": self.accuracy,
                            "mean": self.mean, "sd": self.sd, "min": self.min})

    def summary(self) -> Summary:
        """The mean accuracy at the smallest and the largest `N`."""
        return headline({"p": self.p, "operation": self.operation, "n_seeds": len(self.seeds),
                         "n_first": self.ns[0], "accuracy_first": self.mean[0],
                         "n_last": self.ns[-1], "accuracy_last": self.mean[-1]})


@torch.no_grad()
def synthetic_curve(
    ns: Sequence[int] = (16, 32, 64, 128, 256, 512, 1024, 2048),
    seeds: Sequence[int] = range(5),
    p: int = 113,
    chunk: int = 256,
    operation: str = "add",
) -> SyntheticCurve:
    """Accuracy of `random_cosine_model(N, p, seed, operation)` for every `N` in `ns` and seed.

    Evaluated in one pass per seed: without biases the logits are a sum over neurons, so the
    model of `N` neurons is the running sum of `functional.forward` over blocks of `chunk`
    neurons (each block a model of its own), read off on the way to the largest `N`. The
    numbers equal evaluating each model separately (tests check it).
    """
    from hooked_mlp.data import dataset
    from hooked_mlp.functional import forward

    sign = _check_operation(operation)
    if isinstance(ns, (str, bytes)) or not hasattr(ns, "__iter__"):
        raise ValueError(f"ns must be a list of integers >= 1, got {ns!r}")
    ns = sorted({_check_positive_int("ns", n) for n in ns})
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise ValueError(f"seeds must be a list of integers >= 0, got {seeds!r}")
    seeds = [_check_positive_int("seeds", s, 0) for s in seeds]
    _check_positive_int("p", p, 3)
    _check_positive_int("chunk", chunk)
    if not ns or not seeds:
        raise ValueError("ns and seeds must each name at least one value")
    check_all_pairs_memory(random_cosine_config(1, p, operation), p + 3 * min(chunk, ns[-1]),
                           "synthetic_curve")
    tokens, labels = dataset(random_cosine_config(1, p, operation))
    acc: list[list[float]] = [[0.0] * len(seeds) for _ in ns]
    for j, seed in enumerate(seeds):
        prm = random_cosine_params(ns[-1], p, seed)
        logits = torch.zeros(len(tokens), p)
        done = 0
        for i, n in enumerate(ns):
            for lo in range(done, n, chunk):
                hi = min(n, lo + chunk)
                block = cosine_weights(prm["k"][lo:hi], prm["phi_a"][lo:hi],
                                       prm["phi_b"][lo:hi], p,
                                       prm["phi_a"][lo:hi] + sign * prm["phi_b"][lo:hi])
                logits += forward(random_cosine_config(hi - lo, p, operation), block, tokens)
            done = n
            check_finite_logits(logits, f"the accuracy of {n} random cosine neurons")
            acc[i][j] = float((logits.argmax(dim=1) == labels).float().mean())
    return SyntheticCurve(p, ns, seeds, acc, operation)


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
    _check_positive_int("p", p, 3)
    return QUAD_GROUP


def _grouped_phases(n_neurons: int, p: int, seed: int, group: int, step_b: int
                    ) -> dict[str, Tensor]:
    """Per neuron: the frequency and phases of its group (from `random_cosine_params`, so a
    model with `N` neurons is the first `N` neurons of any larger one), plus the lattice
    offsets `2 pi j / group` (for a) and `2 pi step_b j / group` (for b)."""
    _check_positive_int("n_neurons", n_neurons)
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

    _check_positive_int("n_neurons", n_neurons)
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

    _check_positive_int("n_neurons", n_neurons)
    cfg = MLPConfig(p=p, d_hidden=n_neurons, activation="quad", bias=False)  # sizes checked
    prm = _grouped_phases(n_neurons, p, seed, PIZZA_GROUP, 1)
    return HookedMLP.from_params(cfg, cosine_weights(prm["k"], prm["phi_a"], prm["phi_a"], p))
