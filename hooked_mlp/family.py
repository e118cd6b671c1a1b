"""The members of the model family, by name: activations, operations, input encodings.

A model of the family reads `(a, b)` with `0 <= a, b < p` and predicts `op(a, b) mod p`:

    pre_1  = W_in[a] + W_in[off + b] (+ b_in)     off = p (separate inputs) or 0 (tied inputs)
    post_l = act(pre_l)                           l = 1 .. n_layers
    pre_l  = post_{l-1} @ W_hidden[l-2] (+ b_hidden[l-2])
    logits = post_L @ W_out (+ b_out)

`hooked_mlp.functional` computes exactly that from the tables below; a new activation or
operation is one entry here, and the config, the trainer, the model, the checkpoints, the CLI and
the analyses all take it from this table. The input encodings (how a residue enters the first
layer) are the third table: one-hot is a row lookup, any other encoding a dense first layer.
This module imports nothing heavy (the CLI validates configs before torch is loaded): the
activations and encodings import torch when first called, and the operations work on Python
integers and on integer tensors alike.
"""

from __future__ import annotations

import math
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


# --------------------------------------------------------------------------------- encodings
def _one_hot_features(x: Any, p: int) -> Any:
    import torch

    return torch.nn.functional.one_hot(x, p).float()


def _scalar_features(x: Any, p: int) -> Any:
    return (x.float() / p).unsqueeze(-1)


def _circle_features(x: Any, p: int) -> Any:
    import torch

    angle = 2 * math.pi * x.double() / p
    return torch.stack([angle.cos(), angle.sin()], dim=-1).float()


def _binary_bits(p: int) -> int:
    return max(1, math.ceil(math.log2(p)))


def _binary_features(x: Any, p: int) -> Any:
    import torch

    powers = 2 ** torch.arange(_binary_bits(p), device=x.device)  # least significant bit first
    return ((x.unsqueeze(-1) // powers) % 2).float()


@dataclass(frozen=True)
class InputEncoding:
    """How one operand `x` in `[0, p)` enters the first layer: a vector of `width(p)` numbers.

    `features(x, p)` maps int64 residues `[...]` to float32 `[..., width(p)]`. The first layer
    reads `[enc(a); enc(b)]` (or `enc(a) + enc(b)` with tied inputs) through `W_in`
    `[d_input, d_hidden]`. `one_hot` is a row lookup of `W_in` (`enc(x) = e_x`), and the
    only encoding whose weights are indexed by residue.
    """

    name: str
    width: Callable[[int], int]
    features: Callable[[Any, int], Any]
    description: str


INPUT_ENCODINGS: dict[str, InputEncoding] = {
    e.name: e
    for e in (
        InputEncoding("one_hot", lambda p: p, _one_hot_features,
                      "e_x, the one-hot vector of x (p numbers; the study)"),
        InputEncoding("scalar", lambda p: 1, _scalar_features, "x / p (one number)"),
        InputEncoding("circle", lambda p: 2, _circle_features,
                      "cos(2 pi x / p), sin(2 pi x / p) (two numbers)"),
        InputEncoding("binary", _binary_bits, _binary_features,
                      "the ceil(log2 p) bits of x, least significant first (0 or 1 each)"),
    )
}
