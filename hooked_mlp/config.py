"""Configuration of a model (`MLPConfig`) and of its training recipe (`TrainConfig`).

Both are frozen dataclasses whose defaults *are* the source study: p = 113, 100 hidden ReLU
neurons, one-hot inputs of `a` and `b`, `a + b`; AdamW lr 3e-3, weight decay 0.5, batch 128,
2000 epochs, 80 % of the pairs for training. Every field is checked on construction and a bad
value raises a `ValueError` naming the field and what is allowed. This module imports nothing
heavy, so the CLI can use it before torch is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from hooked_mlp.family import ACTIVATIONS, OPERATIONS, is_prime
from hooked_mlp.family import INPUT_ENCODINGS as _ENCODINGS
from hooked_mlp.text import short

INPUT_ENCODINGS = tuple(_ENCODINGS)
MAX_SEED = 2**32 - 1
MAX_LAYERS = 16
MAX_PARAMS = 2**31 - 1  # the C kernel's and safetensors' index ranges; 8 GiB of float32


def _check_int(owner: str, name: str, value: Any, low: int, high: int | None = None) -> None:
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{owner}.{name} must be {allowed}, got {short(value)}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{owner}.{name} must be {allowed}, got {short(value)}")


def _check_float(
    owner: str, name: str, value: Any, low: float, high: float, *, low_open: bool, high_open: bool
) -> None:
    lb = "(" if low_open else "["
    rb = ")" if high_open else "]"
    allowed = f"a finite number in {lb}{low}, {high}{rb}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{owner}.{name} must be {allowed}, got {short(value)}")
    try:
        v = float(value)
    except OverflowError:  # an int too large for a float, e.g. 10**400
        raise ValueError(f"{owner}.{name} must be {allowed}, got an integer of "
                         f"{value.bit_length()} bits") from None
    bad = (
        not math.isfinite(v)
        or v < low
        or v > high
        or (low_open and v == low)
        or (high_open and v == high)
    )
    if bad:
        raise ValueError(f"{owner}.{name} must be {allowed}, got {short(value)}")


def _check_bool(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{owner}.{name} must be True or False, got {short(value)}")


def _check_choice(owner: str, name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{owner}.{name} must be one of {list(allowed)}, got {short(value)}")


# A field's `check(owner, name, value)`: one of these, with its limits.
Check = Callable[[str, str, Any], None]


def integer(low: int, high: int | None = None) -> Check:
    """A field holding an integer in `[low, high]`."""
    return lambda owner, name, value: _check_int(owner, name, value, low, high)


def number(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Check:
    """A field holding a finite number in `[low, high]` (`(` / `)` where open)."""
    return lambda owner, name, value: _check_float(owner, name, value, low, high,
                                                   low_open=low_open, high_open=high_open)


def boolean() -> Check:
    """A field holding True or False."""
    return _check_bool


def choice(allowed: Any) -> Check:
    """A field holding one of the names in `allowed` (a table of `hooked_mlp.family`, read when
    the check runs: an entry added to the table is a value the field takes)."""
    return lambda owner, name, value: _check_choice(owner, name, value, tuple(allowed))


def optional(check: Check) -> Check:
    """A field holding None, or what `check` accepts."""
    return lambda owner, name, value: None if value is None else check(owner, name, value)


def _from_dict(cls: type, data: Any, what: str, exclude: tuple[str, ...] = ()) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in fields(cls)} - set(exclude)
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{what} has unknown fields {unknown}; allowed: {sorted(names)}")
    return cls(**data)


# Each field of a config says, beside its default, what the command line's flag for it says
# (`help`), which values it takes (`check(owner, name, value)`: `integer`, `number`, `boolean`,
# `choice`, `optional` above), how the model is put into words (`words(value, cfg)`: a phrase,
# or None to leave it out; without one, `name = value` when it differs from the default), and
# its `role`:
#   "size"      changes the size of the tensors, not the computation (p, d_hidden);
#   "data"      changes the labels or the initial weights, not the computation (operation,
#               init_scale);
#   "structure" changes the computation: the default, so that a new field is taken to change
#               it until said otherwise (the C accelerator then refuses its non-default values);
#   "runtime"   not part of the model (device).
# A new field is one line here: its check (`__post_init__`), the CLI flag (`hooked_mlp.cli`), the
# words (`describe`, `settings`: `HookedMLP.__repr__`, `hooked-mlp info`, the pages), what the
# accelerator accepts (`hooked_mlp.training.c_kernel.supports`) and the checkpoint (`to_dict`,
# `from_dict`) all read it from this metadata; `tests/test_config.py` fails until every one of
# them shows the new field.
ROLES = ("size", "data", "structure", "runtime")
_GENERIC = object()


def _field(default: Any, help: str, check: Check, *, role: str = "structure",
           words: Any = _GENERIC, flag: bool = True) -> Any:
    assert role in ROLES
    return field(default=default, metadata={"help": help, "check": check, "role": role,
                                            "words": words, "flag": flag})


def _check_fields(config: Any) -> None:
    """Run every field's own check (a ValueError naming the field and what it takes)."""
    owner = type(config).__name__
    for f in fields(config):
        check = f.metadata.get("check")
        if check is not None:
            check(owner, f.name, getattr(config, f.name))


def role(f: Any) -> str:
    """The role of a dataclass field of a config (see above)."""
    return f.metadata.get("role", "structure")


def flag_fields(cls: type) -> list[Any]:
    """The fields of `cls` that the command line sets by a flag of their own (`--<name>`)."""
    return [f for f in fields(cls) if f.metadata.get("flag", True) and f.metadata.get("help")]


def describe(cfg: MLPConfig) -> str:
    """The model in words, e.g. `p = 113, 1 hidden layer of 100 relu neurons, a + b, separate
    input weights for a and b`: each field's phrase, in the order of the fields."""
    parts = []
    for f in fields_of(type(cfg)):
        value, words = getattr(cfg, f.name), f.metadata.get("words", _GENERIC)
        if words is _GENERIC:
            phrase = None if value == f.default else f"{f.name} = {value}"
        else:
            phrase = words(value, cfg) if words is not None else None
        if phrase:
            parts.append(phrase)
    return ", ".join(parts)


def settings(cfg: Any, always: tuple[str, ...] | None = None) -> list[tuple[str, Any]]:
    """`(name, value)` of every field of a config (`MLPConfig` or `TrainConfig`) but runtime
    ones; with `always`, only those fields and the others that differ from their default."""
    out = []
    for f in fields_of(type(cfg)):
        value = getattr(cfg, f.name)
        if always is None or f.name in always or value != f.default:
            out.append((f.name, value))
    return out


@dataclass(frozen=True)
class MLPConfig:
    """A member of the model family: an MLP on `(a, b)` modulo `p` (see `hooked_mlp.family`).

    The defaults are the study: one hidden layer of 100 ReLU neurons, separate input weights for
    `a` and `b` (the one-hot input `[e_a; e_b]`), biases, `a + b mod 113`.

    - `activation`: a name in `hooked_mlp.family.ACTIVATIONS` (relu, gelu, silu, quad, identity).
    - `operation`: a name in `hooked_mlp.family.OPERATIONS` (add, sub, mul, div, x2_xy_y2).
    - `input_encoding`: a name in `hooked_mlp.family.INPUT_ENCODINGS`: `one_hot` (the study),
      `scalar` (`x / p`), `circle` (`cos`, `sin` of `2 pi x / p`), `binary` (the bits of `x`);
      any but one-hot makes the first layer a dense `[d_input, d_hidden]` weight.
    - `tied_inputs`: one input weight `[p, d_hidden]` applied to `a` and to `b`
      (`pre = W_in[a] + W_in[b]`, the input `e_a + e_b`) instead of `[2p, d_hidden]`.
    - `bias`: with (default) or without the biases of every layer.
    - `n_layers`: hidden layers of width `d_hidden`.
    - `init_scale`: a multiplier on the initialisation (`nn.Linear`'s `U(-1/sqrt(fan_in), +)`).

    TransformerLens names answer too: `d_mlp` (= d_hidden), `d_vocab` and `d_vocab_out` (= p),
    `act_fn` (= activation), `n_layers`, `device` (where the model lives: set by `HookedMLP`
    and kept up to date by `.to()`; not part of the model's identity, equality or checkpoint)
    and `dtype` (always float32).
    """

    p: int = _field(113, "modulus", integer(2, 65_535), role="size",
                    words=lambda v, c: f"p = {v}")
    d_hidden: int = _field(
        100, "hidden neurons per layer", integer(1, 1_000_000), role="size",
        words=lambda v, c: f"{c.n_layers} hidden layer{'s' if c.n_layers > 1 else ''} of {v} "
        f"{c.activation} neurons")
    activation: str = _field("relu", f"activation: {', '.join(ACTIVATIONS)}",
                             choice(ACTIVATIONS), words=None)  # in d_hidden's words
    operation: str = _field(
        "add", "what the model computes modulo p: " + ", ".join(
            f"{name} ({op.symbol})" for name, op in OPERATIONS.items()),
        choice(OPERATIONS), role="data", words=lambda v, c: OPERATIONS[v].symbol)
    input_encoding: str = _field(
        "one_hot", f"how a and b enter the first layer: {', '.join(_ENCODINGS)}",
        choice(_ENCODINGS), words=lambda v, c: None if v == "one_hot" else f"{v} input encoding")
    tied_inputs: bool = _field(
        False, "true: one input weight [p, d_hidden] for a and b (input e_a + e_b)", boolean(),
        words=lambda v, c: "one input weight shared by a and b" if v
        else "separate input weights for a and b")
    bias: bool = _field(True, "false: no biases", boolean(),
                        words=lambda v, c: None if v else "no biases")
    n_layers: int = _field(1, "hidden layers", integer(1, MAX_LAYERS),
                           words=None)  # in d_hidden's words
    init_scale: float = _field(
        1.0, "multiplier on the initialisation", number(0.0, 1e6, low_open=True), role="data",
        words=lambda v, c: None if v == 1.0 else f"initialisation × {v}")
    device: str = field(default="cpu", compare=False, repr=False,
                        metadata={"role": "runtime", "flag": False})

    def __post_init__(self) -> None:
        _check_fields(self)
        if not isinstance(self.device, str):
            raise ValueError(f"MLPConfig.device must be a device name such as 'cpu' or "
                             f"'cuda:0', got {self.device!r}")
        op = OPERATIONS[self.operation]
        if op.needs_prime and not is_prime(self.p):
            raise ValueError(f"MLPConfig.operation={self.operation!r} needs a prime p (every "
                             f"b other than 0 must have an inverse modulo p), got p={self.p}")
        if op.excludes_b_zero and self.p < 3:
            raise ValueError(f"MLPConfig.operation={self.operation!r} needs p >= 3, got "
                             f"p={self.p}")
        if self.n_params > MAX_PARAMS:
            raise ValueError(
                f"MLPConfig: p={self.p}, d_hidden={self.d_hidden}, n_layers={self.n_layers} "
                f"make {self.n_params:,} parameters; at most {MAX_PARAMS:,} are allowed")

    # ----------------------------------------------------------------------------- shapes
    @property
    def d_input(self) -> int:
        """Rows of `W_in`: twice the encoding's width (`2p` for one-hot `[e_a; e_b]`), or once
        with tied inputs (`e_a + e_b`)."""
        return self.d_operand * (1 if self.tied_inputs else 2)

    @property
    def d_operand(self) -> int:
        """Numbers encoding one operand: `p` (one-hot), 1 (scalar), 2 (circle), or
        `ceil(log2 p)` (binary)."""
        return _ENCODINGS[self.input_encoding].width(self.p)

    @property
    def d_output(self) -> int:
        """Number of output logits (one per residue)."""
        return self.p

    @property
    def n_params(self) -> int:
        H, L, bias = self.d_hidden, self.n_layers, int(self.bias)
        return (self.d_input * H + bias * H + (L - 1) * (H * H + bias * H)
                + H * self.p + bias * self.p)

    # ----------------------------------------------------------------------------- TL names
    @property
    def d_mlp(self) -> int:
        """TransformerLens's name for the hidden width: `d_hidden`."""
        return self.d_hidden

    @property
    def d_vocab(self) -> int:
        """TransformerLens's input vocabulary: the `p` residues."""
        return self.p

    @property
    def d_vocab_out(self) -> int:
        """TransformerLens's output vocabulary: the `p` residues."""
        return self.p

    @property
    def act_fn(self) -> str:
        """TransformerLens's name for the activation: `activation`."""
        return self.activation

    @property
    def n_heads(self) -> int:
        """TransformerLens's attention heads: an MLP has none, and reading this raises an
        AttributeError saying what to use instead (see its message)."""
        raise AttributeError(
            "MLPConfig has no n_heads: a HookedMLP has no attention heads, residual stream or "
            "positions, so TransformerLens's patching functions for attention heads, resid_pre/"
            "resid_mid, attn_out and mlp_out do not apply to it; sweep its neurons with "
            "transformer_lens.patching.generic_activation_patch(..., activation_name='post', "
            "index_df=make_df_from_ranges([cfg.n_layers, cfg.d_mlp], ['layer', 'neuron'])) "
            "(axis names are inferred for transformers only), or with analyses.patching")

    @property
    def dtype(self) -> Any:
        """The parameters' dtype (`torch.float32`: every model of the toolkit is float32)."""
        import torch

        return torch.float32

    def to_dict(self) -> dict[str, Any]:
        """The fields that define the model (everything but `device`), for JSON."""
        out = asdict(self)
        del out["device"]
        return out

    @classmethod
    def from_dict(cls, data: Any) -> MLPConfig:
        """The inverse of `to_dict`; a missing field takes its default (files written before
        the field existed)."""
        return _from_dict(cls, data, "MLPConfig", exclude=("device",))


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe: everything that changes the numbers a run produces.

    `seed` drives the initialisation and the order of the batches; `split_seed` drives which
    pairs are held out (None: the same as `seed`). `train_frac=1.0` trains on every pair: the
    run then has no validation split, and no validation metrics (absent, not NaN). Runtime
    choices that do not change the mathematics (device, threads, progress bar, checkpoint
    frequency) are arguments of `train`.
    """

    epochs: int = _field(2000, "epochs", integer(1, 10_000_000))
    batch_size: int = _field(128, "batch size", integer(1, 10_000_000))
    lr: float = _field(3e-3, "AdamW learning rate", number(0.0, 10.0, low_open=True))
    weight_decay: float = _field(0.5, "AdamW weight decay", number(0.0, 1e6))
    beta1: float = _field(0.9, "AdamW beta1", number(0.0, 1.0, high_open=True))
    beta2: float = _field(0.999, "AdamW beta2", number(0.0, 1.0, high_open=True))
    eps: float = _field(1e-8, "AdamW eps", number(0.0, 1.0, low_open=True))
    train_frac: float = _field(0.8, "fraction of pairs used for training (1.0: all, no "
                               "validation)", number(0.0, 1.0, low_open=True))
    # the command line has its own --seed, --seeds and --split-seed
    seed: int = _field(0, "seed of the initialisation and batch order", integer(0, MAX_SEED),
                       flag=False)
    split_seed: int | None = _field(None, "seed of the train/validation split (None: the "
                                    "run's own seed)", optional(integer(0, MAX_SEED)),
                                    flag=False)

    def __post_init__(self) -> None:
        _check_fields(self)

    # ---------------------------------------------------------------- the grokking preset
    @classmethod
    def grokking(cls, **changes: Any) -> TrainConfig:
        """A recipe that groks: train accuracy reaches 99 % within ~100 epochs, validation
        accuracy stays near 0 for hundreds more and then jumps (measured in
        bench/dynamics_speed.py). Full batch (4096 covers every pair for p <= 64), AdamW lr 3e-3,
        weight decay 2.0, half of the pairs for training, 5000 epochs; for the model
        `MLPConfig(**TrainConfig.grokking_model())` (p = 47, 256 ReLU neurons): about 15 s on
        one core. `changes` override any field."""
        return cls(**{**PRESETS["grokking"].train, **changes})

    @staticmethod
    def grokking_model() -> dict[str, Any]:
        """The model fields of the grokking preset, for `MLPConfig(**...)`: p = 47, 256 hidden
        ReLU neurons (the study's other defaults)."""
        return dict(PRESETS["grokking"].model)

    @property
    def effective_split_seed(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> TrainConfig:
        return _from_dict(cls, data, "TrainConfig")


# ------------------------------------------------------------------------------ presets
@dataclass(frozen=True)
class Preset:
    """A named starting point: the model and recipe fields it sets (every other field keeps the
    study's default). `hooked-mlp train --recipe NAME`; `recipe(NAME, **fields)` in Python."""

    description: str
    model: dict[str, Any]
    train: dict[str, Any]


PRESETS: dict[str, Preset] = {
    "study": Preset("the source study", {}, {}),
    "grokking": Preset(
        "p=47, 256 neurons, full batch, lr 3e-3, weight decay 2, half the pairs, 5000 epochs: "
        "validation accuracy jumps long after train accuracy",
        {"p": 47, "d_hidden": 256},
        {"epochs": 5000, "batch_size": 4096, "lr": 3e-3, "weight_decay": 2.0, "train_frac": 0.5}),
}


def recipe(preset: str | None = None, **fields: Any) -> tuple[MLPConfig, TrainConfig]:
    """The model and the training recipe of `preset` (a name in `PRESETS`; None: the study),
    with any field of `MLPConfig` or `TrainConfig` given in `fields` overriding it:
    `recipe("grokking", d_hidden=128, seed=3)`. An unknown field or preset is refused with a
    ValueError naming it and what there is; each value is checked by its config."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset must be one of {list(PRESETS)}, got {short(preset)}")
    chosen = PRESETS[preset or "study"]
    model_names = {f.name for f in fields_of(MLPConfig)}
    train_names = {f.name for f in fields_of(TrainConfig)}
    unknown = sorted(set(fields) - model_names - train_names)
    if unknown:
        raise ValueError(f"unknown field{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(short, unknown))}: a recipe sets the fields of "
                         f"MLPConfig {sorted(model_names)} and TrainConfig {sorted(train_names)}")
    model = {**chosen.model, **{k: v for k, v in fields.items() if k in model_names}}
    train = {**chosen.train, **{k: v for k, v in fields.items() if k in train_names}}
    return MLPConfig(**model), TrainConfig(**train)


def fields_of(cls: type) -> list[Any]:
    """The fields of a config class that describe a model or a run (not where it runs)."""
    return [f for f in fields(cls) if role(f) != "runtime"]
