"""The record of how a model was trained (`TrainInfo`), kept with the model and its checkpoint.

Kept apart from `model.py` so that the trainer and the checkpoint code can run without importing
transformer-lens (which takes seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from hooked_mlp.config import TrainConfig

# the per-epoch curves a training record may hold (`TrainInfo.history`), in the order the trainer
# keeps them; the validation ones only with a validation split
HISTORY_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc")


@dataclass
class TrainInfo:
    """How a model was trained: recipe, held-out pairs, curves and provenance.

    `train_mask` is bool `[p*p]` over pair indices `a * p + b` (True: used for training); the
    validation pairs are the dataset's other pairs (`hooked_mlp.data.split_indices`), none when
    the recipe trained on every pair. `history` maps a metric name (`train_loss`, `train_acc`,
    and with a validation split `val_loss`, `val_acc`) to one float per epoch; `metrics` holds
    the final losses and accuracies measured on the whole splits.
    """

    train_config: TrainConfig
    train_mask: Tensor
    history: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    # the weights at chosen epochs (`hooked_mlp.training.snapshots.SnapshotSeries`) when the run
    # took
    # them with `train(..., snapshots=...)`; in memory only (a run folder keeps them in
    # `snapshots-seed-<s>.safetensors`, read by `hooked_mlp.load_snapshots`)
    snapshots: Any = field(default=None, repr=False, compare=False)
