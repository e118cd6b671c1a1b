"""Configuration of a model (`MLPConfig`) and of its training recipe (`TrainConfig`).

Both are frozen dataclasses whose defaults *are* the source study: p = 113, 100 hidden ReLU
neurons, one-hot inputs of `a` and `b`; AdamW lr 3e-3, weight decay 0.5, batch 128, 2000 epochs,
80 % of the pairs for training. Every field is checked on construction and a bad value raises a
`ValueError` naming the field and what is allowed. This module imports nothing heavy, so the CLI
can use it before torch is loaded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

ACTIVATIONS = ("relu",)
OPERATIONS = ("add",)
INPUT_ENCODINGS = ("one_hot",)
MAX_SEED = 2**32 - 1


def _check_int(owner: str, name: str, value: Any, low: int, high: int | None = None) -> None:
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{owner}.{name} must be {allowed}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{owner}.{name} must be {allowed}, got {value}")


def _check_float(
    owner: str, name: str, value: Any, low: float, high: float, *, low_open: bool, high_open: bool
) -> None:
    lb = "(" if low_open else "["
    rb = ")" if high_open else "]"
    allowed = f"a finite number in {lb}{low}, {high}{rb}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{owner}.{name} must be {allowed}, got {value!r}")
    v = float(value)
    bad = (
        not math.isfinite(v)
        or v < low
        or v > high
        or (low_open and v == low)
        or (high_open and v == high)
    )
    if bad:
        raise ValueError(f"{owner}.{name} must be {allowed}, got {value!r}")


def _check_choice(owner: str, name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{owner}.{name} must be one of {list(allowed)}, got {value!r}")


def _from_dict(cls: type, data: Any, what: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{what} has unknown fields {unknown}; allowed: {sorted(names)}")
    return cls(**data)


@dataclass(frozen=True)
class MLPConfig:
    """Shape of a one-hidden-layer MLP on `(a, b)` modulo `p`.

    The model reads `x = [onehot(a); onehot(b)]` (length `2p`), has `d_hidden` neurons and `p`
    output logits. `operation` and `input_encoding` have one value today; they are fields so that
    other operations and encodings are additions, not rewrites.
    """

    p: int = 113
    d_hidden: int = 100
    activation: str = "relu"
    operation: str = "add"
    input_encoding: str = "one_hot"

    def __post_init__(self) -> None:
        _check_int("MLPConfig", "p", self.p, 2, 65_535)
        _check_int("MLPConfig", "d_hidden", self.d_hidden, 1, 1_000_000)
        _check_choice("MLPConfig", "activation", self.activation, ACTIVATIONS)
        _check_choice("MLPConfig", "operation", self.operation, OPERATIONS)
        _check_choice("MLPConfig", "input_encoding", self.input_encoding, INPUT_ENCODINGS)

    @property
    def d_input(self) -> int:
        """Length of the one-hot input `[e_a; e_b]`: rows of `W_in`."""
        return 2 * self.p

    @property
    def d_output(self) -> int:
        """Number of output logits (one per residue)."""
        return self.p

    @property
    def n_params(self) -> int:
        return self.d_input * self.d_hidden + self.d_hidden + self.d_hidden * self.p + self.p

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> MLPConfig:
        return _from_dict(cls, data, "MLPConfig")


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe: everything that changes the numbers a run produces.

    `seed` drives the initialisation and the order of the batches; `split_seed` drives which
    pairs are held out (None: the same as `seed`). Runtime choices that do not change the
    mathematics (device, threads, progress bar, checkpoint frequency) are arguments of `train`.
    """

    epochs: int = 2000
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.5
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    train_frac: float = 0.8
    seed: int = 0
    split_seed: int | None = None

    def __post_init__(self) -> None:
        _check_int("TrainConfig", "epochs", self.epochs, 1, 10_000_000)
        _check_int("TrainConfig", "batch_size", self.batch_size, 1, 10_000_000)
        _check_float("TrainConfig", "lr", self.lr, 0.0, 10.0, low_open=True, high_open=False)
        _check_float(
            "TrainConfig", "weight_decay", self.weight_decay, 0.0, 1e6, low_open=False,
            high_open=False,
        )
        for name in ("beta1", "beta2"):
            _check_float(
                "TrainConfig", name, getattr(self, name), 0.0, 1.0, low_open=False, high_open=True
            )
        _check_float("TrainConfig", "eps", self.eps, 0.0, 1.0, low_open=True, high_open=False)
        _check_float(
            "TrainConfig", "train_frac", self.train_frac, 0.0, 1.0, low_open=True, high_open=True
        )
        _check_int("TrainConfig", "seed", self.seed, 0, MAX_SEED)
        if self.split_seed is not None:
            _check_int("TrainConfig", "split_seed", self.split_seed, 0, MAX_SEED)

    @property
    def effective_split_seed(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> TrainConfig:
        return _from_dict(cls, data, "TrainConfig")
