"""Training, the public API: `train` one model, `train_many` seeds, `train_stack` many recipes.

    model, history = train(MLPConfig(), TrainConfig())          # the study's recipe, seed 0
    runs = train_many(cfg, recipe, seeds=range(16))             # [(model, history), ...]
    out = train_stack([(cfg, TrainConfig(weight_decay=wd, seed=s)) for wd in ... for s in ...])
                                                                # [(params, TrainInfo), ...]

`train_stack` trains runs whose `stack_key`s agree in one stacked run (a sweep groups its cells
by `stack_key` first); each comes out bit-identical to the same run trained alone with the same
backend. Runs into a folder that survive interruptions are `hooked_mlp.training.runs.train_run`
and `resume_run`; the trainer is `hooked_mlp.training.trainer.BatchedTrainer`, its state
`hooked_mlp.training.state.TrainState`, and how its epochs are computed (the general path, or
the C accelerator) `hooked_mlp.training.backends`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from hooked_mlp.config import MLPConfig, TrainConfig
from hooked_mlp.train_info import TrainInfo
from hooked_mlp.training.snapshots import attach, parse_snapshot_spec, series_of
from hooked_mlp.training.state import stack_key
from hooked_mlp.training.trainer import (
    BatchedTrainer,
    build_models,
    drive,
    resolve_run,
    resolve_runs,
)

if TYPE_CHECKING:
    from hooked_mlp.model import HookedMLP

__all__ = ["stack_key", "train", "train_many", "train_stack"]


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
    `hooked_mlp.training.backends`. `snapshots` (`"log:64"`, `"every:100"`, a list of epochs:
    see `hooked_mlp.training.snapshots.parse_snapshot_spec`) keeps the weights at those epochs
    (and epoch 0): each model's `train_info.snapshots` is then a `SnapshotSeries` of
    `HookedMLP`s.
    """
    cfg, tcfg, seed_list, n_threads, chosen = resolve_run(cfg, tcfg, seeds, device, threads,
                                                          backend)
    if snapshots is not None:
        parse_snapshot_spec(snapshots, tcfg.epochs)  # checked before any work
    trainer = BatchedTrainer(cfg, tcfg, seed_list, device, chosen)
    models = build_models(trainer, _train(trainer, n_threads, progress, snapshots, None))
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


def train_stack(
    runs: Sequence[tuple[MLPConfig, TrainConfig]],
    *,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    progress: bool = False,
    backend: str = "auto",
    snapshots: str | Sequence[int] | None = None,
    on_epoch: Callable[[BatchedTrainer], None] | None = None,
) -> list[tuple[dict[str, Tensor], TrainInfo]]:
    """Train `runs` (`(MLPConfig, TrainConfig)` pairs with one `stack_key`) in one stacked
    run: `[(params, train_info), ...]` in the order of `runs`.

    Each run has its own seed, split seed, initial scale, train fraction and AdamW recipe (lr,
    weight decay, betas, eps); its parameters (name -> CPU tensor, as `HookedMLP.from_params`
    takes them) and record (`TrainInfo`: the recipe, the split, the per-epoch history with
    train and validation accuracy, the final metrics, the provenance) are bit-identical to those
    of the same run trained alone by `train` with the same backend, on the CPU. Runs of other
    keys raise a ValueError naming the field that differs: group them with `stack_key` first.
    `on_epoch(trainer)` is called after each epoch (`trainer.epoch` epochs done, of
    `trainer.epochs`). `snapshots` as in `train_many`: each record's `snapshots` is then that
    run's `SnapshotSeries`. `device="cuda"` runs the same code on a GPU, where a stack of
    thousands of small runs fills the device.
    """
    runs, n_threads, chosen = resolve_runs(runs, device, threads, backend)
    if snapshots is not None:
        parse_snapshot_spec(snapshots, runs[0][1].epochs)
    trainer = BatchedTrainer.for_runs(runs, device, chosen)
    results = _train(trainer, n_threads, progress, snapshots, on_epoch)
    out: list[tuple[dict[str, Tensor], TrainInfo] | None] = [None] * len(runs)
    for row, result in zip(trainer.state.order, results, strict=True):
        out[row] = result
    return out  # type: ignore[return-value]


def _train(trainer: BatchedTrainer, threads: int, progress: bool,
           snapshots: str | Sequence[int] | None,
           on_epoch: Callable[[BatchedTrainer], None] | None
           ) -> list[tuple[dict[str, Tensor], TrainInfo]]:
    """Drive `trainer` to the end; each row's parameters and record (with its snapshots)."""
    recorder = None if snapshots is None else attach(trainer, snapshots)
    wall = drive(trainer, threads=threads, progress=progress, on_epoch=on_epoch)
    results = trainer.results(threads, wall, None)
    if recorder is not None:
        infos = [info for _, info in results]
        for info, series in zip(infos, series_of(trainer, recorder, infos), strict=True):
            info.snapshots = series
    return results
