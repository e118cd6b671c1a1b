"""Model checkpoints: one safetensors file per model, and the models shipped with the package.

A checkpoint's tensors are the parameters (named as `hooked_mlp.functional.param_shapes`), and
for a trained model the split (`train_mask`, bool `[p*p]`) and the per-epoch curves
(`history.<metric>`, float32 `[epochs]`); its metadata document (see `hooked_mlp.files.format`)
holds the config, and for a trained model the recipe, final metrics and provenance.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hooked_mlp.config import MLPConfig, TrainConfig
from hooked_mlp.files.format import (
    HISTORY_KEYS,
    CheckpointError,
    Expected,
    config_from,
    read_safetensors,
    write_safetensors,
)
from hooked_mlp.text import short

if TYPE_CHECKING:
    from torch import Tensor

    from hooked_mlp.model import HookedMLP
    from hooked_mlp.train_info import TrainInfo

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


@dataclass
class Checkpoint:
    """The content of a model checkpoint, without building a model (no transformer-lens)."""

    cfg: MLPConfig
    params: dict[str, Tensor]
    info: TrainInfo | None


def write_model(
    path: str | os.PathLike[str],
    cfg: MLPConfig,
    params: dict[str, Tensor],
    info: TrainInfo | None = None,
) -> None:
    """Write a model checkpoint from raw parameters (what `save` and the trainer use)."""
    import torch

    from hooked_mlp.functional import param_shapes

    tensors = {name: params[name].detach().to(torch.float32) for name in param_shapes(cfg)}
    meta: dict[str, Any] = {"kind": "model", "config": cfg.to_dict(), "train": None}
    if info is not None:
        tensors["train_mask"] = info.train_mask.detach().to(torch.bool)
        for key, values in info.history.items():
            tensors[f"history.{key}"] = torch.tensor(values, dtype=torch.float32)
        meta["train"] = {
            "train_config": info.train_config.to_dict(),
            "metrics": info.metrics,
            "provenance": info.provenance,
            "history_keys": list(info.history),
        }
    write_safetensors(path, tensors, meta)


def _model_tensors(name: str) -> Callable[[dict[str, Any], dict[str, Any]], Expected]:
    """The tensors a model document implies (its config's parameters; for a trained model the
    split and one curve per history key, of one length no longer than its recipe's epochs)."""

    def expected(doc: dict[str, Any], table: dict[str, Any]) -> Expected:
        from hooked_mlp.functional import param_shapes

        cfg = config_from(name, MLPConfig, doc.get("config"), "model config")
        want: Expected = {k: ("F32", s) for k, s in param_shapes(cfg).items()}
        train = doc.get("train")
        if train is None:
            return want
        if not isinstance(train, dict):
            raise CheckpointError(name, "corrupt metadata: 'train' is not an object")
        tcfg = config_from(name, TrainConfig, train.get("train_config"), "training config")
        want["train_mask"] = ("BOOL", (cfg.p * cfg.p,))
        keys = train.get("history_keys", [])
        if not isinstance(keys, list) or not all(k in HISTORY_KEYS for k in keys) or len(
                set(keys)) != len(keys):
            raise CheckpointError(name, f"corrupt metadata: 'history_keys' must be distinct "
                                  f"names among {list(HISTORY_KEYS)}")
        shapes = [table.get(f"history.{key}", {}).get("shape") for key in keys]
        length = shapes[0][0] if shapes and isinstance(shapes[0], list) and len(
            shapes[0]) == 1 else 0
        if length > tcfg.epochs:
            raise CheckpointError(name, f"corrupt history: {length} epochs recorded, the recipe "
                                  f"has {tcfg.epochs}")
        for key in keys:  # one length for every curve
            want[f"history.{key}"] = ("F32", (length,))
        return want

    return expected


def _check_record(name: str, metrics: Any, provenance: Any) -> None:
    """Metrics are finite numbers (or None) by name; provenance values are JSON scalars or
    lists of them (what `hooked-mlp info` shows, escaped)."""
    if not isinstance(metrics, dict) or not isinstance(provenance, dict):
        raise CheckpointError(name, "corrupt metadata: metrics or provenance is not an object")
    for key, value in metrics.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise CheckpointError(name, f"corrupt metadata: metric {short(key)} is "
                                  f"{short(value)}, not a number")
    for key, value in provenance.items():
        items = value if isinstance(value, list) else [value]
        if not all(v is None or isinstance(v, (str, int, float, bool)) for v in items):
            raise CheckpointError(name, f"corrupt metadata: provenance {short(key)} is not a "
                                  "string, a number or a list of them")


def read_model(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and check a model checkpoint."""
    from hooked_mlp.functional import param_shapes
    from hooked_mlp.train_info import TrainInfo

    name = str(path)
    doc, tensors = read_safetensors(path, "model", _model_tensors(name))
    cfg = config_from(name, MLPConfig, doc.get("config"), "model config")
    params = {key: tensors[key] for key in param_shapes(cfg)}
    info = None
    train = doc.get("train")
    if train is not None:
        tcfg = config_from(name, TrainConfig, train.get("train_config"), "training config")
        history = {key: tensors[f"history.{key}"].tolist()
                   for key in train.get("history_keys", [])}
        metrics = train.get("metrics", {})
        provenance = train.get("provenance", {})
        _check_record(name, metrics, provenance)
        info = TrainInfo(tcfg, tensors["train_mask"], history, metrics, provenance)
    return Checkpoint(cfg, params, info)


def save(model: HookedMLP, path: str | os.PathLike[str]) -> None:
    """Save `model` (weights, config and, if trained here, its training record) atomically.

    Refuses a model with NaN or infinite weights (an earlier checkpoint at `path` is kept).
    """
    write_model(path, model.cfg, model.state_tensors(), model.train_info)


def load(path: str | os.PathLike[str], device: str = "cpu") -> HookedMLP:
    """Load a checkpoint written by `save` or `hooked-mlp train` as a `HookedMLP`.

    Raises `CheckpointError` (a `ValueError`) naming the file for anything missing or damaged;
    a file of another kind (a torch `.pt`, a plain safetensors state dict) is refused with the
    importer that reads it (`hooked_mlp.import_mlp`).
    """
    import dataclasses

    from hooked_mlp.checks import check_device
    from hooked_mlp.model import HookedMLP

    dev = check_device(device)
    try:
        ckpt = read_model(path)
    except CheckpointError as e:
        if e.problem.startswith("not a"):
            raise CheckpointError(e.path, f"{e.problem}; a state dict or a checkpoint of "
                                  "another codebase is read by hooked_mlp.import_mlp(path, "
                                  "activation=...)") from None
        raise
    cfg = dataclasses.replace(ckpt.cfg, device=str(dev))
    return HookedMLP.from_params(cfg, ckpt.params, train_info=ckpt.info).eval()  # as TL loads


# --------------------------------------------------------------------------- shipped models
def pretrained_seeds() -> list[int]:
    """Seeds of the models shipped inside the package."""
    seeds = []
    for f in PRETRAINED_DIR.glob("seed-*.safetensors"):
        stem = f.name[len("seed-") : -len(".safetensors")]
        if stem.isdigit():
            seeds.append(int(stem))
    return sorted(seeds)


def pretrained_path(seed: int = 0) -> Path:
    """Path of the shipped checkpoint trained with `seed`."""
    available = pretrained_seeds()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed not in available:
        raise ValueError(f"seed must be one of the shipped seeds {available}, got {seed!r}")
    return PRETRAINED_DIR / f"seed-{seed}.safetensors"


def load_pretrained(seed: int = 0, device: str = "cpu") -> HookedMLP:
    """The shipped model trained by this project with the seed recipe (2000 epochs).

    See `hooked_mlp/pretrained/README.md` for its provenance and the command that regenerates it.
    """
    return load(pretrained_path(seed), device=device)
