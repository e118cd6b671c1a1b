"""Random cosine models measured: their accuracy over all pairs as the number of neurons grows.

The models themselves (random cosine neurons, the exact `quad` constructions) are built in
`analyses.models`; their names are importable from here too, where they used to live.
`synthetic_curve` sweeps `N` in one pass, since the model with `N` neurons is the first `N`
neurons of any larger one (nested sampling).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from analyses._common import (
    Summary,
    check_all_pairs_memory,
    check_positive_int,
    headline,
    mean_sd,
    to_jsonable,
)
from analyses.models.constructions import (  # noqa: F401 (their old home: kept importable)
    PIZZA_GROUP,
    QUAD_GROUP,
    QUAD_PHASE_STEP,
    pizza_construction,
    quad_construction,
    quad_construction_neurons,
)
from analyses.models.cosine import (  # noqa: F401 (their old home: kept importable)
    STREAM_K,
    STREAM_PHI_A,
    STREAM_PHI_B,
    check_cosine_operation,
    cosine_weights,
    random_cosine_config,
    random_cosine_model,
    random_cosine_params,
)
from hooked_mlp.checks import check_finite_logits


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
        """Sample standard deviation over the seeds at each `N` (0 for one seed), through the
        toolkit's one aggregate (`analyses._common.mean_sd`)."""
        return [mean_sd(r)["sd"] for r in self.accuracy]

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

    sign = check_cosine_operation(operation)
    if isinstance(ns, (str, bytes)) or not hasattr(ns, "__iter__"):
        raise ValueError(f"ns must be a list of integers >= 1, got {ns!r}")
    ns = sorted({check_positive_int("ns", n) for n in ns})
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise ValueError(f"seeds must be a list of integers >= 0, got {seeds!r}")
    seeds = [check_positive_int("seeds", s, 0) for s in seeds]
    check_positive_int("p", p, 3)
    check_positive_int("chunk", chunk)
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
