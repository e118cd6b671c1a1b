"""Run folders: training into a folder, resumable after any interruption, one run at a time.

A run folder (its file names: `hooked_mlp.files.layout`) holds `seed-<s>.safetensors` per
finished seed and, while the run lasts, `state.safetensors`: the whole run state (parameters,
AdamW moments and step, epoch, history), written atomically every `checkpoint_every` epochs.
`resume_run(folder)` continues from it to final weights bit-identical to an uninterrupted run
(the batch order is a function of seed and epoch, so there is no generator state to lose). The
folder is locked (`.lock`) while a run lasts. With snapshots (`hooked_mlp.training.snapshots`) it
also holds `snapshots-seed-<s>.safetensors` per finished seed and, while the run lasts,
`snapshots-part-<epoch>.safetensors` (the snapshots taken up to each checkpoint, written before
its state).

Every argument, and the memory the run and its snapshots will take, is checked before the
folder is touched; a run refused after the lock was taken (a state that cannot be built) leaves
the folder as it found it: a folder this call created is removed again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hooked_mlp.checks import check_device, check_seeds, check_threads
from hooked_mlp.config import MLPConfig, TrainConfig
from hooked_mlp.files import layout
from hooked_mlp.files.checkpoints import write_model
from hooked_mlp.files.format import (
    CheckpointError,
    config_from,
    read_safetensors,
    write_safetensors,
)
from hooked_mlp.files.layout import STATE_FILE
from hooked_mlp.training.backends import BACKENDS, resolve_backend
from hooked_mlp.training.snapshots import (
    SnapshotRecorder,
    attach,
    check_snapshot_memory,
    parse_snapshot_spec,
    write_run_snapshots,
)
from hooked_mlp.training.trainer import (
    BatchedTrainer,
    TrainingDivergedError,
    drive,
    resolve_run,
    state_shapes,
)


class RunLockedError(RuntimeError):
    """Another process is training into the same output folder."""


class RunLock:
    """An exclusive `flock` on `DIR/.lock`; released by the OS even if the process is killed.

    The lock file is opened without following links and must be a regular file of this folder
    with no other name, so a planted link can never make the lock write into another file.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = layout.lock_file(self.folder)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ValueError(f"{path} is a symbolic link; a run folder's lock file must be "
                                 "a plain file: remove the link") from None
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                raise ValueError(f"{path} is not a plain file of its own (it is a "
                                 f"{'hard link' if stat.S_ISREG(info.st_mode) else 'special file'}"
                                 "); remove it")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunLockedError(
                    f"another hooked-mlp train is writing to {self.folder} (it holds {path}); "
                    "wait for it to finish or choose another --out"
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        _remove_stale_temporaries(self.folder)
        return self

    def undo(self, created: bool) -> None:
        """Remove the lock file (while still holding the lock) and, when this run created the
        folder and nothing else is in it, the folder: for a run refused before any output."""
        with contextlib.suppress(OSError):
            (layout.lock_file(self.folder)).unlink()
            if created and not any(self.folder.iterdir()):
                self.folder.rmdir()

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _remove_stale_temporaries(folder: Path) -> None:
    """Remove the hidden temporary files an earlier, killed run of this folder left behind
    (`layout.stale_temporaries`); the lock is held, so no other run is writing them."""
    for tmp in layout.stale_temporaries(folder):
        with contextlib.suppress(OSError):
            tmp.unlink()


def _write_state(folder: Path, trainer: BatchedTrainer, threads: int, every: int, wall_s: float,
                 command: str | None) -> None:
    meta = {
        "kind": "train-state",
        "config": trainer.cfg.to_dict(),
        "train_config": trainer.tcfg.to_dict(),
        "seeds": trainer.seeds,
        "epoch": trainer.epoch,
        "device": str(trainer.device),
        "backend": trainer.backend,
        "threads": threads,
        "checkpoint_every": every,
        "wall_s": wall_s,
        "command": command,
    }
    if trainer.snapshots is not None:  # their epochs; the snapshots are in the part files
        meta["snapshots"] = trainer.snapshots.epochs
    write_safetensors(layout.state_file(folder), trainer.state_tensors(), meta)


def _finish(folder: Path, trainer: BatchedTrainer, threads: int, wall_s: float,
            command: str | None) -> list[Path]:
    paths = []
    results = trainer.results(threads, wall_s, command)
    if trainer.snapshots is not None:
        write_run_snapshots(folder, trainer, [info for _, info in results])
    for seed, (params, info) in zip(trainer.seeds, results, strict=True):
        path = layout.model_file(folder, seed)
        write_model(path, trainer.cfg, params, info)
        paths.append(path)
    layout.state_file(folder).unlink(missing_ok=True)
    for _, part in layout.part_files(folder):
        part.unlink(missing_ok=True)
    return paths


def _run_folder(
    folder: Path, trainer: BatchedTrainer, *, threads: int, progress: bool, checkpoint_every: int,
    wall_before: float, command: str | None,
) -> list[Path]:
    started = time.perf_counter()

    def checkpoint(t: BatchedTrainer) -> None:
        wall = wall_before + time.perf_counter() - started
        if t.snapshots is not None:  # before the state: a state never outlives its snapshots
            t.snapshots.flush(folder, t.epoch)
        _write_state(folder, t, threads, checkpoint_every, wall, command)

    try:
        drive(trainer, threads=threads, progress=progress, on_checkpoint=checkpoint,
              checkpoint_every=checkpoint_every)
    except TrainingDivergedError as e:
        state = layout.state_file(folder)
        kept = (
            f"the last good checkpoint is kept in {state}" if state.exists()
            else "no checkpoint had been written (use --checkpoint-every)"
        )
        raise TrainingDivergedError(f"{e}; {kept}") from None
    wall = wall_before + time.perf_counter() - started
    return _finish(folder, trainer, threads, wall, command)


def check_checkpoint_every(checkpoint_every: Any) -> int:
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or (
        checkpoint_every < 0
    ):
        raise ValueError(
            f"checkpoint_every must be a non-negative integer (0: never), got {checkpoint_every!r}"
        )
    return checkpoint_every


def train_run(
    out_dir: str | os.PathLike[str],
    cfg: MLPConfig | None = None,
    tcfg: TrainConfig | None = None,
    seeds: Sequence[int] | None = None,
    *,
    checkpoint_every: int = 0,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    progress: bool = True,
    command: str | None = None,
    backend: str = "auto",
    snapshots: str | Sequence[int] | None = None,
) -> list[Path]:
    """Train into the folder `out_dir`: one `seed-<s>.safetensors` per seed; returns their paths.

    `snapshots` (`"log:64"`, `"every:100"`, a list of epochs) also keeps the weights at those
    epochs, one `snapshots-seed-<s>.safetensors` per seed (`hooked_mlp.load_snapshots`); they
    survive an interruption as the run state does.

    Every `checkpoint_every` epochs the whole run state (parameters, AdamW moments and step,
    epoch, history) is written atomically to `out_dir/state.safetensors`, so an interrupted run
    continues with `resume_run(out_dir)` to bit-identical weights. The folder is locked while
    the run lasts; a second run into it is refused. Every argument is checked before anything
    is written.
    """
    cfg, tcfg, seed_list, n_threads, chosen = resolve_run(cfg, tcfg, seeds, device, threads,
                                                          backend)
    every = check_checkpoint_every(checkpoint_every)
    if snapshots is not None:  # checked, with the memory they take, before anything is written
        check_snapshot_memory(cfg, len(seed_list), snapshots, tcfg.epochs)
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"out_dir must be a folder, but {folder} is a file")
    created = not folder.exists()
    with RunLock(folder) as lock:
        if layout.state_file(folder).exists():
            raise ValueError(
                f"{folder} holds an unfinished run; continue it with "
                f"`hooked-mlp train --resume {folder}` or choose another --out"
            )
        existing = [path for s in seed_list for path in (layout.model_file(folder, s),
                                                          layout.series_file(folder, s))
                    if path.exists()]
        if existing:
            raise ValueError(
                f"{existing[0]} already exists; choose another --out or remove it first"
            )
        for _, part in layout.part_files(folder):  # left by a run that finished or never started
            part.unlink(missing_ok=True)
        try:
            trainer = BatchedTrainer(cfg, tcfg, seed_list, device, chosen)
            if snapshots is not None:
                attach(trainer, snapshots)
        except BaseException:
            lock.undo(created)  # refused before any output: leave nothing behind
            raise
        if every:
            if trainer.snapshots is not None:
                trainer.snapshots.flush(folder, 0)
            _write_state(folder, trainer, n_threads, every, 0.0, command)
        return _run_folder(folder, trainer, threads=n_threads, progress=progress,
                           checkpoint_every=every, wall_before=0.0, command=command)


def _resume_snapshots(folder: Path, name: str, epochs: Any, trainer: BatchedTrainer,
                      epoch: int) -> None:
    """Continue taking the snapshots a run state records, with those already taken."""
    if epochs is None:
        return
    try:
        if not isinstance(epochs, list) or parse_snapshot_spec(epochs, trainer.tcfg.epochs) \
                != epochs:
            raise ValueError("not an ascending list of epochs from 0 to the last")
    except (TypeError, ValueError) as e:
        raise CheckpointError(name, f"invalid 'snapshots' in the run state: {e}") from None
    recorder = SnapshotRecorder(epochs)
    recorder.restore(folder, epoch, trainer.flat.numel())
    trainer.snapshots = recorder
    recorder.capture(trainer)


def _state_value(doc: dict[str, Any], key: str, name: str, check: Any, default: Any) -> Any:
    """A field of a run state's metadata, checked like the argument it stands for."""
    value = doc.get(key, default)
    try:
        return check(value)
    except (TypeError, ValueError) as e:
        raise CheckpointError(name, f"invalid {key!r} in the run state: {e}") from None


def resume_run(
    out_dir: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    threads: int | None = None,
    progress: bool = True,
    checkpoint_every: int | None = None,
    backend: str | None = None,
) -> list[Path]:
    """Continue the run in `out_dir` from its last checkpoint to the end.

    By default on the device, backend and thread count the run started with, which makes the
    final weights bit-identical to an uninterrupted run on the CPU. The state is checked
    (config, seeds, every tensor's shape) before anything is allocated for it.
    """
    folder = Path(out_dir)
    state = layout.state_file(folder)
    if not folder.is_dir():
        raise ValueError(f"resume needs a run folder, but {folder} is not a folder")
    if threads is not None:
        check_threads(threads)
    if checkpoint_every is not None:
        check_checkpoint_every(checkpoint_every)
    if not state.exists():  # checked before the lock, so that no lock file is left here
        finished = layout.model_files(folder)
        if finished:
            raise ValueError(f"the run in {folder} is already finished ({finished[0][1].name})")
        raise ValueError(f"{folder} holds no run to resume (no {STATE_FILE})")
    with RunLock(folder):
        if not state.exists():
            raise ValueError(f"{folder} holds no run to resume (no {STATE_FILE})")
        name = str(state)
        doc, tensors = read_safetensors(state, "train-state")
        cfg = config_from(name, MLPConfig, doc.get("config"), "model config")
        tcfg = config_from(name, TrainConfig, doc.get("train_config"), "training config")
        seeds = _state_value(doc, "seeds", name, check_seeds, None)
        epoch = doc.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not (
                0 <= epoch <= tcfg.epochs):
            raise CheckpointError(name, f"invalid 'epoch' {epoch!r}: it must be an integer in "
                                  f"[0, {tcfg.epochs}]")
        for key, shape in state_shapes(cfg, len(seeds), epoch).items():
            t = tensors.get(key)
            if t is None or tuple(t.shape) != shape or t.dtype != torch.float32:
                got = "missing" if t is None else f"{t.dtype} {list(t.shape)}"
                raise CheckpointError(name, f"tensor {key!r} is {got}, expected float32 "
                                      f"{list(shape)} for its config and seeds")
        dev = check_device(doc.get("device", "cpu") if device is None else device)
        n_threads = _state_value(doc, "threads", name, check_threads, 1) if threads is None \
            else threads
        every = _state_value(doc, "checkpoint_every", name, check_checkpoint_every, 0) \
            if checkpoint_every is None else checkpoint_every
        chosen = doc.get("backend", "torch") if backend is None else backend
        if chosen not in BACKENDS:
            raise CheckpointError(name, f"unknown backend {chosen!r}")
        if backend is None and chosen == "c":
            try:
                resolve_backend("c", dev, cfg)
            except ValueError:
                # the run's own backend cannot run here (CUDA, no compiler): continue on the
                # general path (the weights then match an uninterrupted run to float tolerance,
                # not bit for bit; the provenance records the backend that finished the run)
                chosen = "torch"
        wall = doc.get("wall_s", 0.0)
        wall = float(wall) if isinstance(wall, (int, float)) and not isinstance(wall, bool) \
            else 0.0
        command = doc.get("command")
        try:
            trainer = BatchedTrainer(cfg, tcfg, seeds, dev, chosen)
        except ValueError as e:  # the config or the memory it asks for: the file's doing
            raise CheckpointError(name, f"cannot resume this run: {e}") from None
        trainer.load_state(tensors, epoch)
        _resume_snapshots(folder, name, doc.get("snapshots"), trainer, epoch)
        return _run_folder(folder, trainer, threads=n_threads, progress=progress,
                           checkpoint_every=every, wall_before=wall,
                           command=command if isinstance(command, str) else None)
