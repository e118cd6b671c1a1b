"""Names, shapes and initialisation of a HookedMLP's parameters, and the record of its training.

Kept apart from `model.py` so that the trainer and the checkpoint code can run without importing
transformer-lens (which takes seconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from hooked_mlp.config import MLPConfig, TrainConfig

PARAM_NAMES = ("W_in", "b_in", "W_out", "b_out")


def param_shapes(cfg: MLPConfig) -> dict[str, tuple[int, ...]]:
    """Shape of each parameter of a model with configuration `cfg`."""
    return {
        "W_in": (cfg.d_input, cfg.d_hidden),
        "b_in": (cfg.d_hidden,),
        "W_out": (cfg.d_hidden, cfg.d_output),
        "b_out": (cfg.d_output,),
    }


def init_params(cfg: MLPConfig, seed: int) -> dict[str, Tensor]:
    """The initial parameters for `seed`: `nn.Linear`'s default, `U(-1/sqrt(fan_in), +)`.

    Drawn on the CPU from a generator seeded with `seed`, in the order W_in, b_in, W_out, b_out,
    so that a seed gives the same start on every device.
    """
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in param_shapes(cfg).items():
        fan_in = cfg.d_input if name in ("W_in", "b_in") else cfg.d_hidden
        bound = 1.0 / math.sqrt(fan_in)
        out[name] = torch.empty(shape).uniform_(-bound, bound, generator=gen)
    return out


@dataclass
class TrainInfo:
    """How a model was trained: recipe, held-out pairs, curves and provenance.

    `train_mask` is bool `[p*p]` over pair indices `a * p + b` (True: used for training).
    `history` maps a metric name (`train_loss`, `train_acc`, `val_loss`, `val_acc`) to one float
    per epoch; `metrics` holds the final accuracies and losses measured on the whole splits.
    """

    train_config: TrainConfig
    train_mask: Tensor
    history: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
