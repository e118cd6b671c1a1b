"""Snapshots: the weights at chosen epochs of a run, stored compactly, read back as models.

    model, history = train(cfg, tcfg, snapshots="log:64")     # epoch 0 and 63 log-spaced epochs
    series = model.train_info.snapshots                        # a SnapshotSeries, in memory
    series = load_snapshots("runs/grok")                       # from a run folder (or its file)
    series = load_snapshots("their_ckpts/", activation="relu") # a folder of foreign checkpoints
    for epoch, m in zip(series.epochs, series): ...            # every m is a HookedMLP

Which epochs (`parse_snapshot_spec`): `"log:N"` (N epochs, log-spaced from 1 to the last, with
epoch 0: N + 1 in all where the epochs allow), `"every:K"` (0, K, 2K, ... and the last), or an
explicit list (`"0,10,100"` or a sequence of ints). Epoch 0 (the initialisation) and the last
epoch are always included: the first and last snapshots are the model before training and the
trained model.

Storage: a run folder gets one `snapshots-seed-<s>.safetensors` per seed, holding each parameter
stacked over the snapshots (`W_in` `[n, d_input, d_hidden]`, ...), the epochs (int64 `[n]`),
the split and the per-epoch curves, written atomically when the run finishes. While the run
lasts, the snapshots taken since the last checkpoint are written beside the run state
(`snapshots-part-<epoch>.safetensors`, before the state of that epoch), so that `resume_run`
continues with the same snapshots an uninterrupted run takes.

The trainer captures a snapshot after the epoch that reaches a chosen epoch (`SnapshotRecorder`,
attached to `BatchedTrainer.snapshots`): a copy of the flat parameter buffer, whichever backend
computed it.
"""

from __future__ import annotations

import math
import operator
import os
import re
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from hooked_mlp.config import MLPConfig, TrainConfig
from hooked_mlp.files.format import (
    HISTORY_KEYS,
    CheckpointError,
    config_from,
    read_header,
    read_safetensors,
    write_safetensors,
)

if TYPE_CHECKING:
    from hooked_mlp.model import HookedMLP
    from hooked_mlp.train_info import TrainInfo
    from hooked_mlp.training.trainer import BatchedTrainer

KIND = "snapshots"
PART_KIND = "snapshot-part"
MAX_SNAPSHOTS = 100_000
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_ST_DTYPE = {torch.float32: "F32", torch.float16: "F16"}
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
# shipped in hooked_mlp/pretrained/: seed 0 of the study's recipe, retrained with snapshots
SHIPPED_SERIES = "snapshots-study-seed-0.safetensors"


def snapshot_path(folder: str | os.PathLike[str], seed: int) -> Path:
    """Where a run folder keeps seed `seed`'s snapshots."""
    return Path(folder) / f"snapshots-seed-{seed}.safetensors"


def part_path(folder: str | os.PathLike[str], epoch: int) -> Path:
    """The snapshots taken up to the checkpoint of `epoch` (an unfinished run's)."""
    return Path(folder) / f"snapshots-part-{epoch}.safetensors"


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
        write_safetensors(part_path(folder, epoch),
                          {"flat": flat, "epochs": torch.tensor(new, dtype=torch.int64)},
                          {"kind": PART_KIND, "epoch": epoch})
        self.flushed = len(epochs)

    def restore(self, folder: Path, epoch: int, total: int) -> None:
        """Read back the part files of a run resumed at `epoch`; parts written for a later
        checkpoint whose state was never written are removed (their snapshots are taken
        again, bit for bit, as the run continues)."""
        for path, part_epoch in sorted(parts_of(folder), key=lambda x: x[1]):
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
            raise CheckpointError(str(folder), f"the snapshots of epochs {_short_list(missing)} "
                                  "are missing from the run folder (snapshots-part-*."
                                  "safetensors); the run cannot continue them")
        self.flushed = len(self.taken)


def attach(trainer: BatchedTrainer, spec: Any) -> SnapshotRecorder:
    """Make `trainer` take snapshots at the epochs `spec` chooses (`parse_snapshot_spec`),
    starting with the current epoch if it is chosen; the memory they will take is checked
    first."""
    from hooked_mlp.checks import check_memory
    from hooked_mlp.training.trainer import flat_layout

    epochs = parse_snapshot_spec(spec, trainer.tcfg.epochs)
    total = flat_layout(trainer.cfg, trainer.S)[1]
    check_memory(4 * total * len(epochs), f"{len(epochs)} snapshots of {trainer.S} seed(s)")
    recorder = SnapshotRecorder(epochs)
    trainer.snapshots = recorder
    recorder.capture(trainer)
    return recorder


def parts_of(folder: Path) -> list[tuple[Path, int]]:
    """The part files of an unfinished run and the checkpoint epoch each was written for."""
    out = []
    for path in Path(folder).glob("snapshots-part-*.safetensors"):
        stem = path.name[len("snapshots-part-") : -len(".safetensors")]
        if stem.isascii() and stem.isdigit():
            out.append((path, int(stem)))
    return out


def seed_params(trainer: BatchedTrainer, flat: Tensor, s: int) -> dict[str, Tensor]:
    """Seed number `s`'s parameters in stacked flat buffers `[n, total]`: name -> `[n, *shape]`."""
    out = {}
    for name in trainer.names:
        start, shape = trainer.offsets[name], trainer.shapes[name]
        size = math.prod(shape)
        block = flat[:, start : start + trainer.S * size].reshape(len(flat), trainer.S, *shape)
        out[name] = block[:, s].clone()
    return out


def series_of(trainer: BatchedTrainer, recorder: SnapshotRecorder,
              infos: Sequence[TrainInfo]) -> list[SnapshotSeries]:
    """Each seed's snapshots as a `SnapshotSeries` (in memory)."""
    epochs, flat = recorder.stacked()
    return [SnapshotSeries(trainer.cfg, epochs, seed_params(trainer, flat, s), info,
                           source=f"seed {trainer.seeds[s]} (in memory)")
            for s, info in enumerate(infos)]


def write_run_snapshots(folder: Path, trainer: BatchedTrainer,
                        infos: Sequence[TrainInfo]) -> list[Path]:
    """Write each seed's snapshots to `snapshots-seed-<s>.safetensors` in a run folder."""
    paths = []
    for seed, series in zip(trainer.seeds, series_of(trainer, trainer.snapshots, infos),
                            strict=True):
        path = snapshot_path(folder, seed)
        write_series(path, series)
        paths.append(path)
    return paths


def write_series(path: str | os.PathLike[str], series: SnapshotSeries,
                 dtype: str = "float32") -> None:
    """Write a series as one safetensors file of stacked tensors, atomically.

    `dtype` `"float16"` halves the file (for shipping); the models read back are float32 either
    way, rounded to float16 precision.
    """
    if dtype not in STORE_DTYPES:
        raise ValueError(f"dtype must be one of {list(STORE_DTYPES)}, got {dtype!r}")
    info = series.train_info
    if info is None:
        raise ValueError("write_series needs a series with a training record (train_info)")
    if dtype == "float16":
        big = max(float(t.abs().max()) for t in series.params.values())
        if big > 6.0e4:
            raise ValueError(f"a weight of {big:.3g} does not fit float16; store float32")
    tensors: dict[str, Tensor] = {f"param.{k}": v.to(STORE_DTYPES[dtype])
                                  for k, v in series.params.items()}
    tensors["epochs"] = torch.tensor(series.epochs, dtype=torch.int64)
    tensors["train_mask"] = info.train_mask.detach().to(torch.bool).cpu()
    for key, values in info.history.items():
        tensors[f"history.{key}"] = torch.tensor(values, dtype=torch.float32)
    meta = {"kind": KIND, "config": series.cfg.to_dict(),
            "train_config": info.train_config.to_dict(), "history_keys": list(info.history),
            "metrics": info.metrics, "provenance": info.provenance, "dtype": dtype}
    write_safetensors(path, tensors, meta)


# --------------------------------------------------------------------------- the series
class _Series(Sequence["HookedMLP"]):
    """A sequence of models with their epochs (`self.epochs`), each built by `_model(i)` when
    it is asked for."""

    epochs: list[int]

    def __len__(self) -> int:
        return len(self.epochs)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._model(j) for j in range(*i.indices(len(self)))]
        try:
            if isinstance(i, bool):
                raise TypeError
            i = operator.index(i)
        except TypeError:
            raise TypeError(f"snapshot index must be an int or a slice, got "
                            f"{type(i).__name__}") from None
        if not -len(self) <= i < len(self):
            raise IndexError(f"snapshot index {i} out of range for {len(self)} snapshots")
        return self._model(i % len(self))

    def __iter__(self) -> Iterator[HookedMLP]:
        for i in range(len(self)):
            yield self._model(i)

    def _model(self, i: int) -> HookedMLP:
        raise NotImplementedError

    def index_of(self, epoch: int) -> int:
        """The position of the snapshot taken at `epoch`."""
        try:
            return self.epochs.index(epoch)
        except ValueError:
            raise ValueError(f"no snapshot at epoch {epoch!r}; the series has "
                             f"{_short_list(self.epochs)}") from None


class SnapshotSeries(_Series):
    """Models at increasing epochs of one run: `series[i]` is a `HookedMLP`, built when asked
    for; `series.epochs[i]` its epoch.

    `params` maps each parameter name to the stacked values `[n, *shape]`. `train_info` is the
    run's record (split, recipe, per-epoch curves); each snapshot model carries a copy with the
    curves cut at its epoch and `metrics["epochs"]` set to it, so `helpers.loss(m, "val")`
    works on every snapshot.
    """

    def __init__(self, cfg: MLPConfig, epochs: Sequence[int], params: Mapping[str, Tensor],
                 train_info: TrainInfo | None = None, source: str = "") -> None:
        from hooked_mlp.functional import param_shapes

        n = len(epochs)
        if n < 1:
            raise ValueError("a snapshot series needs at least one snapshot")
        if list(epochs) != sorted(set(epochs)):
            raise ValueError("a snapshot series' epochs must increase")
        for name, shape in param_shapes(cfg).items():
            t = params.get(name)
            if t is None or tuple(t.shape) != (n, *shape):
                raise ValueError(f"params[{name!r}] must be [{n}, {', '.join(map(str, shape))}]"
                                 f", got {None if t is None else list(t.shape)}")
        self.cfg = cfg
        self.epochs = [int(e) for e in epochs]
        self.params = dict(params)
        self.train_info = train_info
        self.source = source

    def __repr__(self) -> str:
        return (f"SnapshotSeries({len(self)} snapshots, epochs {self.epochs[0]}..."
                f"{self.epochs[-1]}, p={self.cfg.p}, d_hidden={self.cfg.d_hidden}"
                f"{', ' + self.source if self.source else ''})")

    def params_at(self, i: int) -> dict[str, Tensor]:
        """Snapshot `i`'s parameters, float32."""
        return {k: v[i].to(torch.float32) for k, v in self.params.items()}

    def _model(self, i: int) -> HookedMLP:
        from hooked_mlp.model import HookedMLP

        return HookedMLP.from_params(self.cfg, self.params_at(i),
                                     train_info=self._info_at(self.epochs[i]))

    def _info_at(self, epoch: int) -> TrainInfo | None:
        info = self.train_info
        if info is None:
            return None
        history = {k: v[:epoch] for k, v in info.history.items()}
        return replace(info, history=history, metrics={"epochs": epoch},
                       provenance={**info.provenance, "snapshot_epoch": epoch}, snapshots=None)


class ImportedSeries(_Series):
    """Checkpoints of another codebase, one file per epoch, imported when asked for
    (`hooked_mlp.files.importers.import_mlp` with the options given)."""

    def __init__(self, files: Sequence[Path], epochs: Sequence[int], options: dict[str, Any],
                 source: str) -> None:
        self.files = list(files)
        self.epochs = [int(e) for e in epochs]
        self.options = options
        self.source = source
        self.train_info = None
        self.cfg = self._model(0).cfg  # imports the first one: bad options fail here, at once

    def __repr__(self) -> str:
        return (f"ImportedSeries({len(self)} checkpoints, epochs {self.epochs[0]}..."
                f"{self.epochs[-1]}, from {self.source})")

    def _model(self, i: int) -> HookedMLP:
        from hooked_mlp.files.importers import import_mlp

        return import_mlp(self.files[i], **self.options)


def _short_list(xs: Sequence[int]) -> str:
    return str(list(xs)) if len(xs) <= 8 else f"{len(xs)} epochs from {xs[0]} to {xs[-1]}"


# --------------------------------------------------------------------------- reading
def read_series(path: str | os.PathLike[str]) -> SnapshotSeries:
    """Read and check a snapshots file written by a run (`snapshots-seed-<s>.safetensors`).

    The stacked parameters are read at once (their memory is checked first: `n` snapshots of
    the model, float32); the `HookedMLP` of each snapshot is built only when it is asked for.
    """
    from hooked_mlp.checks import check_memory
    from hooked_mlp.functional import param_shapes
    from hooked_mlp.train_info import TrainInfo

    name = str(path)

    def expected(doc: dict[str, Any], table: dict[str, Any]) -> dict[str, tuple[str, tuple]]:
        cfg = config_from(name, MLPConfig, doc.get("config"), "model config")
        tcfg = config_from(name, TrainConfig, doc.get("train_config"), "training config")
        dtype = doc.get("dtype", "float32")
        if dtype not in STORE_DTYPES:
            raise CheckpointError(name, f"unknown snapshot dtype {dtype!r}")
        ep = table.get("epochs", {}).get("shape") if isinstance(table.get("epochs"), dict) \
            else None
        if not (isinstance(ep, list) and len(ep) == 1 and isinstance(ep[0], int) and
                1 <= ep[0] <= min(MAX_SNAPSHOTS, tcfg.epochs + 1)):
            raise CheckpointError(name, "corrupt snapshots: 'epochs' must be int64 [n] with "
                                  f"1 <= n <= {tcfg.epochs + 1}")
        n = ep[0]
        st = _ST_DTYPE[STORE_DTYPES[dtype]]
        shapes = param_shapes(cfg)
        # the whole file is read, then held as float32 (the models are built one at a time)
        size = n * sum(math.prod(s) for s in shapes.values())
        check_memory(size * (4 + 2 * STORE_DTYPES[dtype].itemsize), f"reading {n} snapshots")
        want = {f"param.{k}": (st, (n, *s)) for k, s in shapes.items()}
        want["epochs"] = ("I64", (n,))
        want["train_mask"] = ("BOOL", (cfg.p * cfg.p,))
        keys = doc.get("history_keys", [])
        if not isinstance(keys, list) or not set(keys) <= set(HISTORY_KEYS):
            raise CheckpointError(name, "corrupt metadata: 'history_keys'")
        for key in keys:
            want[f"history.{key}"] = ("F32", (tcfg.epochs,))
        return want

    doc, tensors = read_safetensors(path, KIND, expected)
    cfg = config_from(name, MLPConfig, doc.get("config"), "model config")
    tcfg = config_from(name, TrainConfig, doc.get("train_config"), "training config")
    epochs = tensors["epochs"].tolist()
    if epochs != sorted(set(epochs)) or epochs[0] < 0 or epochs[-1] > tcfg.epochs:
        raise CheckpointError(name, f"corrupt snapshots: epochs must increase within [0, "
                              f"{tcfg.epochs}]")
    metrics, provenance = doc.get("metrics", {}), doc.get("provenance", {})
    if not isinstance(metrics, dict) or not isinstance(provenance, dict):
        raise CheckpointError(name, "corrupt metadata: metrics or provenance is not an object")
    history = {k: tensors[f"history.{k}"].tolist() for k in doc.get("history_keys", [])}
    info = TrainInfo(tcfg, tensors["train_mask"], history, metrics, provenance)
    params = {k: tensors[f"param.{k}"].float() for k in param_shapes(cfg)}  # float16: widened
    return SnapshotSeries(cfg, epochs, params, info, source=name)


def _hooked_kind(path: Path) -> str | None:
    """The `kind` of a hooked-mlp safetensors file (`"model"`, `"snapshots"`, ...), None for
    any other file."""
    try:
        kind = read_header(path).doc.get("kind")
    except CheckpointError:
        return None
    return kind if isinstance(kind, str) else None


def load_snapshots(path: str | os.PathLike[str], seed: int | None = None,
                   **importer_options: Any) -> SnapshotSeries | ImportedSeries:
    """The snapshots of a run as a lazy sequence of `HookedMLP` with `.epochs`.

    `path` is a snapshots file (`snapshots-seed-<s>.safetensors`), a run folder holding such
    files (`seed` chooses one when it holds several), or a folder of checkpoint files from
    another codebase, one per epoch: each is imported by `hooked_mlp.import_mlp(file,
    **importer_options)` (e.g. `activation="relu"`) when it is asked for; its epoch is the
    number in the file's name, or else the `epoch` (or `step`) a torch checkpoint dict records.
    Files that are not checkpoints (no torch archive or safetensors content) are skipped, and
    so are hooked-mlp files (a run folder's `seed-<s>.safetensors` are seeds, not epochs): a
    folder with nothing else is refused, saying so.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike (a run folder, a snapshots file or a "
                        f"folder of checkpoint files), got {type(path).__name__}")
    p = Path(path)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    if not p.exists():
        raise ValueError(f"{p}: no such file or folder")
    if p.is_file():
        if importer_options:
            raise ValueError(f"{p} is a hooked-mlp snapshots file; importer options "
                             f"{sorted(importer_options)} apply to a folder of other "
                             "checkpoints only")
        series = read_series(p)
        tcfg = getattr(series.train_info, "train_config", None)
        if seed is not None and seed != getattr(tcfg, "seed", None):  # never silently ignored
            raise ValueError(f"{p} holds the snapshots of seed "
                             f"{getattr(tcfg, 'seed', 'unknown')}, not seed {seed}; seed= "
                             "chooses among a run folder's snapshots files")
        return series
    own = sorted(p.glob("snapshots-seed-*.safetensors"), key=lambda f: (len(f.name), f.name))
    own = [f for f in own if f.name[len("snapshots-seed-"):-len(".safetensors")].isdigit()]
    if own:
        if importer_options:
            raise ValueError(f"{p} holds hooked-mlp snapshots; importer options "
                             f"{sorted(importer_options)} apply to other checkpoints only")
        seeds = [int(f.name[len("snapshots-seed-"):-len(".safetensors")]) for f in own]
        if seed is None:
            if len(own) > 1:
                raise ValueError(f"{p} holds the snapshots of seeds {seeds}; choose one with "
                                 "seed=")
            return read_series(own[0])
        if seed not in seeds:
            raise ValueError(f"{p} holds no snapshots of seed {seed}; it has seeds {seeds}")
        return read_series(snapshot_path(p, seed))
    if seed is not None:
        raise ValueError(f"seed= chooses among a run folder's snapshots; {p} holds none")
    return _foreign_series(p, importer_options)


_NUMBER = re.compile(r"(\d+)")


def _foreign_series(folder: Path, options: dict[str, Any]) -> ImportedSeries:
    found: list[tuple[int, Path]] = []
    unnumbered: list[str] = []
    hooked: dict[str, list[str]] = {}  # hooked-mlp files: models of seeds, not epochs
    for f in sorted(folder.iterdir()):
        if not f.is_file() or f.name.startswith(".") or not _looks_like_checkpoint(f):
            continue
        kind = _hooked_kind(f)
        if kind is not None:
            hooked.setdefault(kind, []).append(f.name)
            continue
        numbers = _NUMBER.findall(f.stem)
        epoch = int(numbers[-1]) if numbers else _recorded_epoch(f)
        if epoch is None:
            unnumbered.append(f.name)
            continue
        found.append((epoch, f))
    if unnumbered:
        raise ValueError(f"{folder}: cannot tell the epoch of {unnumbered[:3]} (no number in "
                         "the file name, no 'epoch' or 'step' in the checkpoint)")
    if not found:
        also = ""
        if hooked.get(KIND):
            also = (f"; it holds the hooked-mlp snapshots file(s) {hooked[KIND][:3]}: pass "
                    "the file itself")
        elif hooked:
            names = [n for names in hooked.values() for n in names]
            also = (f"; its hooked-mlp files {names[:3]} are models (of different seeds, not "
                    "epochs): train with --snapshots to keep the weights over training")
        raise ValueError(f"{folder} holds no snapshots: no snapshots-seed-*.safetensors and no "
                         f"checkpoint files of another codebase ({', '.join(CHECKPOINT_SUFFIXES)}"
                         f" content){also}")
    found.sort(key=lambda x: x[0])
    epochs = [e for e, _ in found]
    dup = sorted({e for e in epochs if epochs.count(e) > 1})
    if dup:
        names = [f.name for e, f in found if e == dup[0]]
        raise ValueError(f"{folder}: several checkpoints for epoch {dup[0]}: {names}")
    return ImportedSeries([f for _, f in found], epochs, options, source=str(folder))


def _looks_like_checkpoint(f: Path) -> bool:
    """A torch zip archive or a safetensors file, by content (whatever the suffix)."""
    try:
        with open(f, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    if head[:4] == b"PK\x03\x04":  # a torch archive is a zip: one that is not, is no checkpoint
        return zipfile.is_zipfile(f)
    if len(head) >= 9:
        n = int.from_bytes(head[:8], "little")
        return 2 <= n <= 16 * 1024 * 1024 and head[8:9] == b"{"
    return False


def _recorded_epoch(f: Path) -> int | None:
    """The `epoch` (or `step`) a torch checkpoint dict records, or a safetensors file's
    metadata."""
    value: Any = None
    try:
        with open(f, "rb") as fh:
            zipped = fh.read(4) == b"PK\x03\x04"
        if zipped:  # the importer's own checks of the archive, then its restricted load
            from hooked_mlp.files.importers import _check_zip, _torch_load

            _check_zip(f, f.stat().st_size)
            obj = _torch_load(f)
            if isinstance(obj, Mapping):
                value = obj.get("epoch", obj.get("step"))
        else:
            from safetensors import safe_open

            with safe_open(str(f), "pt") as fh:
                meta = fh.metadata() or {}
            value = meta.get("epoch", meta.get("step"))
    except Exception:  # an unreadable file: its epoch is unknown (the import says why later)
        return None
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None
