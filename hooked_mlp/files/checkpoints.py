"""Model checkpoints: one safetensors file per model, and the models shipped with the package.

A checkpoint's tensors are the parameters (named as `hooked_mlp.functional.param_shapes`), and
for a trained model the split (`train_mask`, bool `[p*p]`) and the per-epoch curves
(`history.<metric>`, float32 `[epochs]`); its metadata document (see `hooked_mlp.files.format`)
holds the config, and for a trained model the recipe, final metrics and provenance. A model
imported with a learned input embedding also keeps the embedding (`embedding.<table>`,
`embedding.first_layer`: `hooked_mlp.files.embeddings`; format version 3), checked on reading
to fold to the model's `W_in`.

A training record's split must be the one its config and recipe imply
(`hooked_mlp.data.split_mask(cfg, train_frac, split seed)`): it is checked on writing and on
reading (`check_split`), so a file edited and re-signed cannot carry another split into the
validation numbers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hooked_mlp.config import MLPConfig, TrainConfig
from hooked_mlp.files import embeddings, layout
from hooked_mlp.files.format import (
    CheckpointError,
    Expected,
    config_from,
    read_safetensors,
    write_safetensors,
)
from hooked_mlp.text import short
from hooked_mlp.train_info import HISTORY_KEYS

if TYPE_CHECKING:
    from torch import Tensor

    from hooked_mlp.files.embeddings import LearnedEmbedding
    from hooked_mlp.model import HookedMLP
    from hooked_mlp.train_info import TrainInfo

PRETRAINED_DIR = layout.PRETRAINED_DIR


@dataclass
class Checkpoint:
    """The content of a model checkpoint, without building a model (no transformer-lens)."""

    cfg: MLPConfig
    params: dict[str, Tensor]
    info: TrainInfo | None
    embedding: LearnedEmbedding | None = None


def check_split(name: str, cfg: MLPConfig, tcfg: TrainConfig, train_mask: Tensor, *,
                writing: bool = False) -> None:
    """The split of a training record must be the one `(cfg, train_frac, split seed)` implies:
    a `CheckpointError` naming the file (a `ValueError` saying it was not written, `writing`)."""
    import torch

    from hooked_mlp.data import split_mask

    seed = tcfg.seed if tcfg.split_seed is None else tcfg.split_seed
    want = split_mask(cfg, tcfg.train_frac, seed)
    mask = train_mask.detach().cpu()
    if mask.shape == want.shape and mask.dtype == torch.bool and torch.equal(mask, want):
        return
    problem = (f"its train_mask is not the split its config and recipe imply "
               f"(train_frac={tcfg.train_frac}, split seed {seed}: "
               f"{int(want.sum())} training pairs, the mask has {int(mask.bool().sum())}"
               f"{'' if int(mask.bool().sum()) != int(want.sum()) else ', others'})")
    if writing:
        raise ValueError(f"{name}: not written: {problem}")
    raise CheckpointError(name, f"{problem}: it was edited after training, or written by "
                          "other code")


def write_model(
    path: str | os.PathLike[str],
    cfg: MLPConfig,
    params: dict[str, Tensor],
    info: TrainInfo | None = None,
    embedding: LearnedEmbedding | None = None,
) -> None:
    """Write a model checkpoint from raw parameters (what `save` and the trainer use), with the
    learned embedding it was imported with, if any (then format version 3)."""
    import torch

    from hooked_mlp.functional import param_shapes

    name = str(path)
    tensors = {key: params[key].detach().to(torch.float32) for key in param_shapes(cfg)}
    meta: dict[str, Any] = {"kind": "model", "config": cfg.to_dict(), "train": None}
    version = 2
    if embedding is not None:
        if not embeddings.folds_to(embedding, tensors["W_in"]):
            raise ValueError(f"{name}: not written: the model's learned_embedding does not "
                             "fold to its W_in (W_in was changed after the import); set "
                             "model.learned_embedding = None to save the model without it")
        meta["embedding"], extra = embedding.to_record()
        tensors.update(extra)
        version = 3
    if info is not None:
        check_split(name, cfg, info.train_config, info.train_mask, writing=True)
        tensors["train_mask"] = info.train_mask.detach().to(torch.bool)
        for key, values in info.history.items():
            tensors[f"history.{key}"] = torch.tensor(values, dtype=torch.float32)
        meta["train"] = {
            "train_config": info.train_config.to_dict(),
            "metrics": info.metrics,
            "provenance": info.provenance,
            "history_keys": list(info.history),
        }
    write_safetensors(path, tensors, meta, version=version)


def _model_tensors(name: str) -> Callable[[dict[str, Any], dict[str, Any]], Expected]:
    """The tensors a model document implies (its config's parameters; for a trained model the
    split and one curve per history key, of one length no longer than its recipe's epochs)."""

    def expected(doc: dict[str, Any], table: dict[str, Any]) -> Expected:
        from hooked_mlp.functional import param_shapes

        cfg = config_from(name, MLPConfig, doc.get("config"), "model config")
        want: Expected = {k: ("F32", s) for k, s in param_shapes(cfg).items()}
        if "embedding" in doc:
            shapes = embeddings.expected_tensors(doc["embedding"], cfg.p, cfg.d_hidden)
            if shapes is None or cfg.input_encoding != "one_hot" or doc.get(
                    "format_version", 0) < 3:
                raise CheckpointError(name, "corrupt metadata: 'embedding' is not a learned "
                                      "embedding's record")
            want.update({k: ("F32", s) for k, s in shapes.items()})
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
        check_split(name, cfg, tcfg, tensors["train_mask"])
        info = TrainInfo(tcfg, tensors["train_mask"], history, metrics, provenance)
    embedding = None
    if "embedding" in doc:
        try:
            embedding = embeddings.from_record(doc["embedding"], tensors)
        except ValueError as e:
            raise CheckpointError(name, f"corrupt embedding: {e}") from None
        if not embeddings.folds_to(embedding, params["W_in"]):
            raise CheckpointError(name, "its learned embedding does not fold to its W_in: the "
                                  "file was edited after it was written")
    return Checkpoint(cfg, params, info, embedding)


def save(model: HookedMLP, path: str | os.PathLike[str]) -> None:
    """Save `model` (weights, config and, if trained here, its training record; imported with a
    learned embedding, the embedding) atomically.

    Refuses a model with NaN or infinite weights (an earlier checkpoint at `path` is kept).
    """
    write_model(path, model.cfg, model.state_tensors(), model.train_info,
                getattr(model, "learned_embedding", None))


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
    model = HookedMLP.from_params(cfg, ckpt.params, train_info=ckpt.info).eval()  # as TL loads
    model.learned_embedding = ckpt.embedding
    return model


# --------------------------------------------------------------------------- shipped models
def pretrained_seeds() -> list[int]:
    """Seeds of the models shipped inside the package."""
    return sorted({seed for seed, _ in layout.model_files(PRETRAINED_DIR)})


def pretrained_path(seed: int = 0) -> Path:
    """Path of the shipped checkpoint trained with `seed`."""
    available = pretrained_seeds()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed not in available:
        raise ValueError(f"seed must be one of the shipped seeds {available}, got {seed!r}")
    return layout.model_file(PRETRAINED_DIR, seed)


def load_pretrained(seed: int = 0, device: str = "cpu") -> HookedMLP:
    """The shipped model trained by this project with the seed recipe (2000 epochs).

    See `hooked_mlp/pretrained/README.md` for its provenance and the command that regenerates it.
    """
    return load(pretrained_path(seed), device=device)
