"""Random cosine models: modular addition with no learning at all.

`N` neurons with `k ~ U{1..(p-1)/2}`, `phi_a, phi_b ~ U[0, 2 pi)`, unit scale, zero offsets and
biases, and output phase `phi_a + phi_b`:

    W_a[x, n] = cos(w_n x + phi_a_n)   W_b[x, n] = cos(w_n x + phi_b_n)   (w_n = 2 pi k_n / p)
    W_out[n, c] = cos(w_n c + phi_a_n + phi_b_n)

The study reports > 95 % accuracy at N = 256 and 100 % at N = 512 (`analyses.synthetic.
synthetic_curve` measures it). Each model is an ordinary `HookedMLP`, so every probe works on
it. The random draws come from the same counter-based hash as the trainer's shuffles: neuron `n`
of seed `s` is the same whatever `N` is, so the model with `N` neurons is the first `N` neurons
of any larger one (nested sampling).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from analyses._common import check_positive_int
from hooked_mlp.config import MAX_SEED, MLPConfig
from hooked_mlp.data import hash_keys

__all__ = ["check_cosine_operation", "cosine_weights", "random_cosine_config",
           "random_cosine_model", "random_cosine_params"]

STREAM_K, STREAM_PHI_A, STREAM_PHI_B = 101, 102, 103


def check_cosine_operation(operation: Any) -> int:
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
    check_positive_int("n_neurons", n_neurons)
    check_positive_int("p", p, 3)
    check_positive_int("seed", seed, 0)
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

    sign = check_cosine_operation(operation)
    prm = random_cosine_params(n_neurons, p, seed)
    weights = cosine_weights(prm["k"], prm["phi_a"], prm["phi_b"], p,
                             prm["phi_a"] + sign * prm["phi_b"])
    return HookedMLP.from_params(random_cosine_config(n_neurons, p, operation), weights)
