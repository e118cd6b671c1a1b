"""Training, the public API: `train` one model, `train_many` seeds in one batched run.

    model, history = train(MLPConfig(), TrainConfig())          # the study's recipe, seed 0
    runs = train_many(cfg, recipe, seeds=range(16))             # [(model, history), ...]

Runs into a folder that survive interruptions are `hooked_mlp.training.runs.train_run` and
`resume_run`; the trainer itself is `hooked_mlp.training.trainer.BatchedTrainer`, and how its
epochs are
computed (the general autograd path, or the C accelerator) is `hooked_mlp.training.backends`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hooked_mlp.config import MLPConfig, TrainConfig
from hooked_mlp.model import HookedMLP
from hooked_mlp.training.snapshots import attach, parse_snapshot_spec, series_of
from hooked_mlp.training.trainer import BatchedTrainer, build_models, drive, resolve_run


def train_many(
    cfg: MLPConfig | None = None,
    tcfg: TrainConfig | None = None,
    seeds: Sequence[int] = (0,),
    *,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    progress: bool = True,
    backend: str = "auto",
    snapshots: str | Sequence[int] | None = None,
) -> list[tuple[HookedMLP, dict[str, list[float]]]]:
    """Train one model per seed in a single batched run: `[(model, history), ...]`.

    On the CPU each seed's model is bit-identical to the one `train` gives for that seed alone
    (same initialisation, same batches, per-seed arithmetic independent of the others).
    `tcfg.seed` is ignored; `tcfg.split_seed` (if set) gives every seed the same split,
    otherwise each seed has its own. `backend` is `"auto"`, `"c"` or `"torch"`: see
    `hooked_mlp.training.backends`. `snapshots` (`"log:64"`, `"every:100"`, a list of epochs: see
    `hooked_mlp.training.snapshots.parse_snapshot_spec`) keeps the weights at those epochs (and
    epoch
    0): each model's `train_info.snapshots` is then a `SnapshotSeries` of `HookedMLP`s.
    """
    cfg, tcfg, seed_list, n_threads, chosen = resolve_run(cfg, tcfg, seeds, device, threads,
                                                          backend)
    if snapshots is not None:
        parse_snapshot_spec(snapshots, tcfg.epochs)  # checked before any work
    trainer = BatchedTrainer(cfg, tcfg, seed_list, device, chosen)
    recorder = None if snapshots is None else attach(trainer, snapshots)
    wall = drive(trainer, threads=n_threads, progress=progress)
    models = build_models(trainer, trainer.results(n_threads, wall, None))
    if recorder is not None:
        infos = [m.train_info for m in models]
        for info, series in zip(infos, series_of(trainer, recorder, infos), strict=True):
            info.snapshots = series
    return [(m, m.train_info.history) for m in models]


def train(
    cfg: MLPConfig | None = None,
    tcfg: TrainConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    progress: bool = True,
    backend: str = "auto",
    snapshots: str | Sequence[int] | None = None,
) -> tuple[HookedMLP, dict[str, list[float]]]:
    """Train one model with the recipe `tcfg` (default: the seed recipe): `(model, history)`.

    `history` maps `train_loss`, `train_acc` (and, with a validation split, `val_loss`,
    `val_acc`) to one value per epoch; `model.train_info` also holds the split, the final
    metrics and the provenance. Deterministic: the same configs, device and backend give
    bit-identical weights (on the CPU whatever the thread count). `snapshots` keeps the
    weights at chosen epochs in `model.train_info.snapshots` (see `train_many`).
    """
    tcfg = TrainConfig() if tcfg is None else tcfg
    if not isinstance(tcfg, TrainConfig):
        raise TypeError(f"tcfg must be a TrainConfig, got {type(tcfg).__name__}")
    return train_many(cfg, tcfg, [tcfg.seed], device=device, threads=threads,
                      progress=progress, backend=backend, snapshots=snapshots)[0]
