"""Small helpers shared by the analyses: argument checks, JSON conversion, evaluation."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from hooked_mlp.data import dataset


def check_model(model: Any) -> None:
    from hooked_mlp.model import HookedMLP

    if not isinstance(model, HookedMLP):
        raise TypeError(f"model must be a HookedMLP, got {type(model).__name__}")


def check_neurons(neurons: Iterable[int] | None, d_hidden: int, name: str = "neurons") -> list[int]:
    """Neuron indices as a list, each checked to lie in `[0, d_hidden)`."""
    if neurons is None:
        return list(range(d_hidden))
    if isinstance(neurons, int):
        neurons = [neurons]
    if isinstance(neurons, Tensor):
        neurons = neurons.flatten().tolist()
    if isinstance(neurons, (str, bytes)) or not hasattr(neurons, "__iter__"):
        raise TypeError(f"{name} must be integers in [0, {d_hidden - 1}], got {neurons!r}")
    out = []
    for n in neurons:
        try:
            if isinstance(n, bool):
                raise TypeError
            n = operator.index(n)
        except TypeError:
            raise TypeError(f"{name} must be integers in [0, {d_hidden - 1}], got {n!r}") from None
        if not 0 <= n < d_hidden:
            raise ValueError(f"{name} must lie in [0, {d_hidden - 1}] (d_hidden={d_hidden}), "
                             f"got {n}")
        out.append(n)
    return out


def check_fractions(fractions: Sequence[float]) -> list[float]:
    """A non-empty list of numbers in [0, 1]."""
    message = f"fractions must be a non-empty list of numbers in [0, 1], got {fractions!r}"
    if isinstance(fractions, (str, bytes)) or not hasattr(fractions, "__iter__"):
        raise ValueError(message)
    try:
        out = [float(f) for f in fractions]
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if not out or any(not (0.0 <= f <= 1.0) for f in out):  # NaN fails the comparison too
        raise ValueError(message)
    return out


def to_jsonable(x: Any) -> Any:
    """Tensors and numpy values to lists and floats; NaN and infinities to None."""
    import numpy as np

    if isinstance(x, Tensor):
        return to_jsonable(x.detach().cpu().tolist())
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    return x


@torch.no_grad()
def accuracy(model: Any, split: str = "all") -> float:
    """Fraction of pairs whose top logit is the right answer.

    `split` is `"all"` (every one of the p^2 pairs), or `"train"` / `"val"` for a model that
    carries its training record.
    """
    check_model(model)
    tokens, labels = dataset(model.cfg, model.device)
    if split != "all":
        if split not in ("train", "val"):
            raise ValueError(f"split must be one of ['all', 'train', 'val'], got {split!r}")
        if model.train_info is None:
            raise ValueError(f"split={split!r} needs a model with a training record")
        mask = model.train_info.train_mask.to(model.device)
        mask = mask if split == "train" else ~mask
        tokens, labels = tokens[mask], labels[mask]
    return float((model(tokens).argmax(-1) == labels).float().mean())


def wrap_angle(x: Tensor) -> Tensor:
    """Angles mapped to `[-pi, pi)`."""
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi
