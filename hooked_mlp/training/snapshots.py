"""Snapshots during training: which epochs to keep, taking them, and keeping them in a run folder.

    model, history = train(cfg, tcfg, snapshots="log:64")     # epoch 0 and 63 log-spaced epochs
    series = model.train_info.snapshots                        # a SnapshotSeries, in memory

Which epochs (`parse_snapshot_spec`): `"log:N"` (N epochs, log-spaced from 1 to the last, with
epoch 0: N + 1 in all where the epochs allow), `"every:K"` (0, K, 2K, ... and the last), or an
explicit list (`"0,10,100"` or a sequence of ints). Epoch 0 (the initialisation) and the last
epoch are always included: the first and last snapshots are the model before training and the
trained model.

The trainer captures a snapshot after the epoch that reaches a chosen epoch (`SnapshotRecorder`,
attached to `BatchedTrainer.snapshots`): a copy of the flat parameter buffer, whichever backend
computed it, read back per run through the trainer's layout (`FlatLayout.params`). In a run
folder, the snapshots taken since the last checkpoint are written beside the run state
(`snapshots-part-<epoch>.safetensors`, before the state of that epoch), so that `resume_run`
continues with the same snapshots an uninterrupted run takes; when the run finishes, each seed's
series is written as `snapshots-seed-<s>.safetensors` (`hooked_mlp.files.series`, which also
reads them back: `hooked_mlp.load_snapshots`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from hooked_mlp.files import layout
from hooked_mlp.files.format import CheckpointError, read_safetensors, write_safetensors
from hooked_mlp.files.series import MAX_SNAPSHOTS, SnapshotSeries, short_list, write_series

if TYPE_CHECKING:
    from hooked_mlp.config import MLPConfig
    from hooked_mlp.train_info import TrainInfo
    from hooked_mlp.training.trainer import BatchedTrainer

PART_KIND = "snapshot-part"


# --------------------------------------------------------------------------- which epochs
def parse_snapshot_spec(spec: Any, epochs: int, name: str = "snapshots") -> list[int]:
    """The epochs a snapshot spec chooses in a run of `epochs` epochs, ascending, with 0 and
    `epochs` always included.

    `spec`: `"log:N"` (N >= 1 log-spaced epochs from 1 to `epochs`, as many distinct ones as the
    run has, plus 0), `"every:K"` (every K >= 1 epochs), a comma-separated list `"0,10,100"`, or
    a sequence of ints; each epoch in `[0, epochs]`. `name` is the argument the messages name
    (`"--snapshots"` on the command line).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    allowed = (f"{name} must be 'log:N' (N log-spaced epochs), 'every:K' (every K epochs), "
               + ("or a list of epochs like '0,10,100'" if name.startswith("--") else
                  "a list of epochs like '0,10,100', or a sequence of integers"))
    if isinstance(spec, str):
        text = spec.strip()
        kind, colon, arg = text.partition(":")
        if colon and kind in ("log", "every"):
            if not (arg.isascii() and arg.isdigit() and len(arg) <= 9 and int(arg) >= 1):
                raise ValueError(f"{name}={spec!r}: {kind}:N needs a positive integer N; "
                                 f"{allowed}")
            n = int(arg)
            count = min(n, epochs + 1) if kind == "log" else epochs // n  # log:N takes <= all
            if count > MAX_SNAPSHOTS:
                raise ValueError(f"{name}={spec!r} chooses about {count:,} epochs; at most "
                                 f"{MAX_SNAPSHOTS:,}")
            chosen = _log_epochs(n, epochs) if kind == "log" else list(range(0, epochs + 1, n))
        else:
            parts = [s.strip() for s in text.split(",")]
            if not text or not all(s.isascii() and s.isdigit() and len(s) <= 12 for s in parts):
                raise ValueError(f"{name}={spec!r} is not understood; {allowed}")
            chosen = [int(s) for s in parts]
    elif isinstance(spec, Sequence) and not isinstance(spec, (bytes, bytearray)):
        if len(spec) > MAX_SNAPSHOTS:
            raise ValueError(f"{name} as a sequence must hold at most {MAX_SNAPSHOTS:,} "
                             f"epochs, got {len(spec):,}")
        odd = [e for e in spec if isinstance(e, bool) or not isinstance(e, int)]
        if odd:  # the first offender named, not just the container's type
            raise TypeError(f"{name} as a sequence must hold integers (epochs), got "
                            f"{odd[0]!r} ({type(odd[0]).__name__}); {allowed}")
        chosen = list(spec)
    else:
        raise TypeError(f"{name} must be a str or a sequence of ints, got "
                        f"{type(spec).__name__}; {allowed}")
    bad = [e for e in chosen if not 0 <= e <= epochs]
    if bad:
        raise ValueError(f"{name}: epoch {bad[0]} is outside [0, {epochs}] (the run has "
                         f"{epochs} epochs)")
    out = sorted(set(chosen) | {0, epochs})
    if len(out) > MAX_SNAPSHOTS:
        raise ValueError(f"{name}: {len(out):,} epochs chosen; at most {MAX_SNAPSHOTS:,}")
    return out


def _log_epochs(n: int, epochs: int) -> list[int]:
    """`n` distinct epochs (fewer when `epochs < n`) spaced evenly in log from 1 to `epochs`,
    plus 0: rounding merges the first ones, so the grid is made finer until `n` stay apart."""
    if n >= epochs:
        return list(range(epochs + 1))
    m = n
    while True:
        grid = {round(math.exp(math.log(epochs) * i / max(m - 1, 1))) for i in range(m)}
        if len(grid) >= n or m > 4 * epochs:
            break
        m += max(1, (n - len(grid)) // 2)
    return [0, *sorted(grid)]


# --------------------------------------------------------------------------- capturing
class SnapshotRecorder:
    """Takes the trainer's parameters at the chosen epochs (`BatchedTrainer.snapshots`).

    `capture(trainer)` is called with the epoch count after each epoch (and once at epoch 0);
    it keeps a copy of the flat parameter buffer, `[total]` float32 on the CPU, when the epoch
    is chosen. `flushed` counts the snapshots already written to a part file of a run folder.
    """

    def __init__(self, epochs: Sequence[int]) -> None:
        self.epochs = list(epochs)
        self._wanted = set(self.epochs)
        self.taken: dict[int, Tensor] = {}
        self.flushed = 0

    def capture(self, trainer: BatchedTrainer) -> None:
        e = trainer.epoch
        if e in self._wanted and e not in self.taken:
            self.taken[e] = trainer.flat.detach().to("cpu", torch.float32, copy=True)

    def stacked(self) -> tuple[list[int], Tensor]:
        """The epochs taken so far and their flat buffers `[n, total]`."""
        epochs = sorted(self.taken)
        return epochs, torch.stack([self.taken[e] for e in epochs])

    # ----------------------------------------------------------------- inside a run folder
    def flush(self, folder: Path, epoch: int) -> None:
        """Write the snapshots taken since the last flush to `snapshots-part-<epoch>` (before
        the run state of `epoch` is written, so a state never outlives its snapshots)."""
        epochs = sorted(self.taken)
        new = [e for e in epochs if e > (epochs[self.flushed - 1] if self.flushed else -1)]
        if not new:
            return
        flat = torch.stack([self.taken[e] for e in new])
        write_safetensors(layout.part_file(folder, epoch),
                          {"flat": flat, "epochs": torch.tensor(new, dtype=torch.int64)},
                          {"kind": PART_KIND, "epoch": epoch})
        self.flushed = len(epochs)

    def restore(self, folder: Path, epoch: int, total: int) -> None:
        """Read back the part files of a run resumed at `epoch`; parts written for a later
        checkpoint whose state was never written are removed (their snapshots are taken
        again, bit for bit, as the run continues)."""
        for part_epoch, path in layout.part_files(folder):
            if part_epoch > epoch:
                path.unlink(missing_ok=True)
                continue
            def expected(doc: dict[str, Any], table: dict[str, Any],
                         where: str = str(path)) -> dict[str, tuple[str, tuple]]:
                shape = table.get("epochs", {}).get("shape") if isinstance(
                    table.get("epochs"), dict) else None
                if not (isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int)
                        and 1 <= shape[0] <= len(self.epochs)):
                    raise CheckpointError(where, "not the snapshots of this run (their 'epochs' "
                                          f"must be int64 [n], 1 <= n <= {len(self.epochs)})")
                return {"flat": ("F32", (shape[0], total)), "epochs": ("I64", (shape[0],))}

            _, tensors = read_safetensors(path, PART_KIND, expected)
            flat, got = tensors["flat"], tensors["epochs"]
            for e, row in zip(got.tolist(), flat, strict=True):
                if e not in self._wanted or e > epoch:
                    raise CheckpointError(str(path), f"holds a snapshot of epoch {e}, which "
                                          "this run does not take before its state's epoch")
                self.taken[e] = row.clone()
        missing = [e for e in self.epochs if e <= epoch and e not in self.taken]
        if missing:
            raise CheckpointError(str(folder), f"the snapshots of epochs {short_list(missing)} "
                                  f"are missing from the run folder ({layout.PART_PREFIX}*"
                                  f"{layout.SUFFIX}); the run cannot continue them")
        self.flushed = len(self.taken)


def check_snapshot_memory(cfg: MLPConfig, n_runs: int, spec: Any, epochs: int) -> list[int]:
    """The epochs `spec` chooses, after checking that their snapshots of `n_runs` runs fit in
    memory (a `ValueError` saying how much they need): what `attach` takes, checked before a
    run folder is touched."""
    from hooked_mlp.checks import check_memory
    from hooked_mlp.training.state import flat_layout

    chosen = parse_snapshot_spec(spec, epochs)
    total = flat_layout(cfg, n_runs).total
    check_memory(4 * total * len(chosen), f"{len(chosen)} snapshots of {n_runs} seed(s)")
    return chosen


def attach(trainer: BatchedTrainer, spec: Any) -> SnapshotRecorder:
    """Make `trainer` take snapshots at the epochs `spec` chooses (`parse_snapshot_spec`),
    starting with the current epoch if it is chosen; the memory they will take is checked
    first."""
    from hooked_mlp.checks import check_memory

    epochs = parse_snapshot_spec(spec, trainer.tcfg.epochs)
    total = trainer.layout.total
    check_memory(4 * total * len(epochs), f"{len(epochs)} snapshots of {trainer.S} seed(s)")
    recorder = SnapshotRecorder(epochs)
    trainer.snapshots = recorder
    recorder.capture(trainer)
    return recorder


def seed_params(trainer: BatchedTrainer, flat: Tensor, s: int) -> dict[str, Tensor]:
    """Seed number `s`'s parameters in stacked flat buffers `[n, total]`: name -> `[n, *shape]`."""
    return {name: t.clone() for name, t in trainer.layout.params(flat, s).items()}


def series_of(trainer: BatchedTrainer, recorder: SnapshotRecorder,
              infos: Sequence[TrainInfo]) -> list[SnapshotSeries]:
    """Each seed's snapshots as a `SnapshotSeries` (in memory)."""
    epochs, flat = recorder.stacked()
    return [SnapshotSeries(trainer.runs[s][0], epochs, seed_params(trainer, flat, s), info,
                           source=f"seed {trainer.seeds[s]} (in memory)")
            for s, info in enumerate(infos)]


def write_run_snapshots(folder: Path, trainer: BatchedTrainer,
                        infos: Sequence[TrainInfo]) -> list[Path]:
    """Write each seed's snapshots to `snapshots-seed-<s>.safetensors` in a run folder."""
    paths = []
    for seed, series in zip(trainer.seeds, series_of(trainer, trainer.snapshots, infos),
                            strict=True):
        path = layout.series_file(folder, seed)
        write_series(path, series)
        paths.append(path)
    return paths
