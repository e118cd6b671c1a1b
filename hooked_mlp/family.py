"""The members of the model family, by name: activations and operations, one table each.

A model of the family reads `(a, b)` with `0 <= a, b < p` and predicts `op(a, b) mod p`:

    pre_1  = W_in[a] + W_in[off + b] (+ b_in)     off = p (separate inputs) or 0 (tied inputs)
    post_l = act(pre_l)                           l = 1 .. n_layers
    pre_l  = post_{l-1} @ W_hidden[l-2] (+ b_hidden[l-2])
    logits = post_L @ W_out (+ b_out)

`hooked_mlp.functional` computes exactly that from the tables below; a new activation or
operation is one entry here, and the config, the trainer, the model, the checkpoints, the CLI and
the analyses all take it from this table. This module imports nothing heavy (the CLI validates
configs before torch is loaded): the activations import torch when first called, and the
operations work on Python integers and on integer tensors alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


# --------------------------------------------------------------------------------- activations
def _relu(x: Any) -> Any:
    return x.relu()


def _gelu(x: Any) -> Any:
    from torch.nn.functional import gelu

    return gelu(x)  # the exact (erf) form, as nn.GELU()


def _silu(x: Any) -> Any:
    from torch.nn.functional import silu

    return silu(x)


def _quad(x: Any) -> Any:
    return x * x


def _identity(x: Any) -> Any:
    return x


@dataclass(frozen=True)
class Activation:
    """An elementwise nonlinearity: `fn` maps a tensor to a tensor of the same shape."""

    name: str
    fn: Callable[[Any], Any]
    description: str


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("relu", _relu, "max(x, 0) (the study)"),
        Activation("gelu", _gelu, "x * Phi(x), the exact GELU of nn.GELU()"),
        Activation("silu", _silu, "x * sigmoid(x)"),
        Activation("quad", _quad, "x^2 (Gromov's construction)"),
        Activation("identity", _identity, "x (a linear model)"),
    )
}


# --------------------------------------------------------------------------------- operations
def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    f = 2
    while f * f <= n:
        if n % f == 0:
            return False
        f += 1
    return True


def _add(a: Any, b: Any, p: int) -> Any:
    return (a + b) % p


def _sub(a: Any, b: Any, p: int) -> Any:
    return (a - b) % p


def _mul(a: Any, b: Any, p: int) -> Any:
    return (a * b) % p


def _div(a: Any, b: Any, p: int) -> Any:
    """`a * b^(p-2) mod p`, Fermat's inverse (p prime; b = 0 has no inverse and is excluded)."""
    if isinstance(b, int):
        return (a * pow(b, p - 2, p)) % p
    inverse = b.new_tensor([0] + [pow(x, p - 2, p) for x in range(1, p)])
    return (a * inverse[b]) % p


def _x2_xy_y2(a: Any, b: Any, p: int) -> Any:
    return (a * a + a * b + b * b) % p


@dataclass(frozen=True)
class Operation:
    """A binary operation modulo p.

    `label(a, b, p)` works on Python ints and on int64 tensors. `needs_prime`: p must be prime.
    `excludes_b_zero`: pairs with `b = 0` are not in the dataset (no inverse of 0).
    `phase_sign`: in the residue Fourier basis, a neuron that computes this operation has
    `phi_out ~ phi_a + phase_sign * phi_b` (the product of two cosines holds both the sum and
    the difference of their arguments); None where no such single-frequency relation is
    expected, with `fourier_note` saying why.
    """

    name: str
    symbol: str
    label: Callable[[Any, Any, int], Any]
    needs_prime: bool = False
    excludes_b_zero: bool = False
    phase_sign: int | None = 1
    fourier_note: str = ""


OPERATIONS: dict[str, Operation] = {
    o.name: o
    for o in (
        Operation("add", "a + b", _add, phase_sign=1),
        Operation("sub", "a - b", _sub, phase_sign=-1),
        Operation("mul", "a * b", _mul, phase_sign=None,
                  fourier_note="multiplication is addition of discrete logarithms: its Fourier "
                  "structure lives in the discrete-log basis, not over residues"),
        Operation("div", "a / b", _div, needs_prime=True, excludes_b_zero=True,
                  phase_sign=None,
                  fourier_note="division is subtraction of discrete logarithms: its Fourier "
                  "structure lives in the discrete-log basis, not over residues"),
        Operation("x2_xy_y2", "a^2 + ab + b^2", _x2_xy_y2, phase_sign=None,
                  fourier_note="a^2 + ab + b^2 is not a function of a + b or a - b, so no "
                  "single-frequency phase relation over residues is predicted"),
    )
}


def is_prime(n: int) -> bool:
    """Whether `n` is a prime number."""
    return _is_prime(n)
