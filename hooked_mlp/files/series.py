"""Snapshot series: the weights of one run at chosen epochs, as a lazy sequence of models.

    series = load_snapshots("runs/grok")                       # a run folder (or its file)
    series = load_snapshots("their_ckpts/", activation="relu") # a folder of foreign checkpoints
    for epoch, m in zip(series.epochs, series): ...            # every m is a HookedMLP
    series_matches(series, model)                              # None, or why it is not `model`'s

A run folder keeps one `snapshots-seed-<s>.safetensors` per seed (`hooked_mlp.files.layout`),
holding each parameter stacked over the snapshots (`param.W_in` `[n, d_input, d_hidden]`, ...),
the epochs (int64 `[n]`), the split and the per-epoch curves, and a document with the config,
recipe, metrics and provenance (`write_series`, `read_series`; the format is
`hooked_mlp.files.format`'s). The seed a file holds is the one it records: a file named for
another seed is refused, naming both. On reading, the split is checked against the one its
config and recipe imply, so a re-signed file cannot carry another split.

A folder of another codebase's checkpoints, one file per epoch, is an `ImportedSeries`
(`hooked_mlp.files.checkpoint_folders` reads the folder); how the snapshots are taken during
training is `hooked_mlp.training.snapshots`'.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from hooked_mlp.config import MLPConfig, TrainConfig
from hooked_mlp.files import layout
from hooked_mlp.files.checkpoints import check_split
from hooked_mlp.files.format import (
    CheckpointError,
    config_from,
    read_header,
    read_safetensors,
    write_safetensors,
)
from hooked_mlp.text import safe_text, short
from hooked_mlp.train_info import HISTORY_KEYS

if TYPE_CHECKING:
    from hooked_mlp.model import HookedMLP
    from hooked_mlp.train_info import TrainInfo

KIND = "snapshots"
MAX_SNAPSHOTS = 100_000
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_ST_DTYPE = {torch.float32: "F32", torch.float16: "F16"}


def short_list(xs: Sequence[int]) -> str:
    """A list of epochs as a message shows it (the ends of a long one)."""
    return str(list(xs)) if len(xs) <= 8 else f"{len(xs)} epochs from {xs[0]} to {xs[-1]}"


# --------------------------------------------------------------------------- the series
class _Series(Sequence["HookedMLP"]):
    """A sequence of models with their epochs (`self.epochs`), each built by `_model(i)` when
    it is asked for."""

    epochs: list[int]
    cfg: MLPConfig

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

    def params_at(self, i: int) -> dict[str, Tensor]:
        """Snapshot `i`'s parameters, float32."""
        return self._model(i).state_tensors()

    def index_of(self, epoch: int) -> int:
        """The position of the snapshot taken at `epoch`."""
        try:
            return self.epochs.index(epoch)
        except ValueError:
            raise ValueError(f"no snapshot at epoch {short(epoch)}; the series has "
                             f"{short_list(self.epochs)}") from None


class SnapshotSeries(_Series):
    """Models at increasing epochs of one run: `series[i]` is a `HookedMLP`, built when asked
    for; `series.epochs[i]` its epoch.

    `params` maps each parameter name to the stacked values `[n, *shape]`. `train_info` is the
    run's record (split, recipe, per-epoch curves); each snapshot model carries a copy with the
    curves cut at its epoch and `metrics["epochs"]` set to it, so `helpers.loss(m, "val")`
    works on every snapshot. `stored_dtype` is the precision the series was kept in
    (`"float16"` for a file written so; the models are float32 either way).
    """

    def __init__(self, cfg: MLPConfig, epochs: Sequence[int], params: Mapping[str, Tensor],
                 train_info: TrainInfo | None = None, source: str = "",
                 stored_dtype: str = "float32") -> None:
        from hooked_mlp.functional import param_shapes

        n = len(epochs)
        if n < 1:
            raise ValueError("a snapshot series needs at least one snapshot")
        if list(epochs) != sorted(set(epochs)):
            raise ValueError("a snapshot series' epochs must increase")
        if stored_dtype not in STORE_DTYPES:
            raise ValueError(f"stored_dtype must be one of {list(STORE_DTYPES)}, got "
                             f"{short(stored_dtype)}")
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
        self.stored_dtype = stored_dtype

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
    (`hooked_mlp.import_mlp(file, **options)`). `cfg` is the model every file holds (the
    folder was checked to hold one model's checkpoints); `skipped` lists the files of the
    folder that are not part of the series, `(name, why)`, and `skipped_line()` says so in
    one line."""

    def __init__(self, files: Sequence[Path], epochs: Sequence[int], options: dict[str, Any],
                 source: str, cfg: MLPConfig,
                 skipped: Sequence[tuple[str, str]] = ()) -> None:
        self.files = list(files)
        self.epochs = [int(e) for e in epochs]
        self.options = dict(options)
        self.source = source
        self.cfg = cfg
        self.skipped = list(skipped)
        self.train_info = None

    def __repr__(self) -> str:
        skipped = f"; {self.skipped_line()}" if self.skipped else ""
        return (f"ImportedSeries({len(self)} checkpoints, epochs {self.epochs[0]}..."
                f"{self.epochs[-1]}, from {self.source}{skipped})")

    def skipped_line(self) -> str:
        """The files skipped, and why, in one line safe for a terminal ("" when none were)."""
        if not self.skipped:
            return ""
        shown = "; ".join(f"{safe_text(name, 80)} ({safe_text(why, 160)})"
                          for name, why in self.skipped[:10])
        more = f"; and {len(self.skipped) - 10} more" if len(self.skipped) > 10 else ""
        return f"skipped {len(self.skipped)} file(s) of {safe_text(self.source, 300)}: " \
               f"{shown}{more}"

    def _model(self, i: int) -> HookedMLP:
        from hooked_mlp.files.importers import import_mlp

        return import_mlp(self.files[i], **self.options)


def series_matches(series: _Series, model: HookedMLP) -> str | None:
    """None when `series` is the history of `model`; else why not, in one sentence.

    It is when: the configs are equal (device aside); the training records agree (the same
    recipe and split, or neither has one); the series ends at the epoch the model was trained
    to; and its last snapshot equals the model's weights exactly, at the precision the series
    stores (a float16 series is compared with the model's weights rounded to float16).
    """
    cfg = replace(model.cfg, device="cpu")
    if replace(series.cfg, device="cpu") != cfg:
        return f"the snapshots are of another model ({_differences(series.cfg, cfg)})"
    ours, theirs = getattr(series, "train_info", None), model.train_info
    if (ours is None) != (theirs is None):
        return ("the model has no training record to match the snapshots' against" if
                theirs is None else "the snapshots have no training record, the model has one")
    if ours is not None and theirs is not None:
        if ours.train_config != theirs.train_config:
            return (f"the snapshots were trained with another recipe "
                    f"({_differences(ours.train_config, theirs.train_config)})")
        if not torch.equal(ours.train_mask.cpu().bool(), theirs.train_mask.cpu().bool()):
            return "the snapshots were trained on another split"
        final = theirs.metrics.get("epochs", theirs.train_config.epochs)
        if series.epochs[-1] != final:
            return (f"the snapshots end at epoch {series.epochs[-1]}, the model was trained "
                    f"for {final}")
    last = series.params_at(len(series) - 1)
    dtype = STORE_DTYPES[getattr(series, "stored_dtype", "float32")]
    for name, value in model.state_tensors().items():
        mine = value.detach().cpu().to(dtype).to(torch.float32)
        theirs_ = last[name].detach().cpu().to(torch.float32)
        if not torch.equal(mine, theirs_):
            diff = float((mine - theirs_).abs().max())
            return (f"the last snapshot (epoch {series.epochs[-1]}) is not the model: their "
                    f"{name} differ by up to {diff:.3g}")
    return None


def _differences(theirs: Any, ours: Any) -> str:
    """`field=theirs where the model has ours` for the first fields two configs differ in."""
    differ = [f.name for f in fields(ours) if f.name != "device"
              and getattr(theirs, f.name) != getattr(ours, f.name)]
    return ", ".join(f"{f}={getattr(theirs, f)!r} where the model has {f}="
                     f"{getattr(ours, f)!r}" for f in differ[:4])


# --------------------------------------------------------------------------- files
def write_series(path: str | os.PathLike[str], series: SnapshotSeries,
                 dtype: str = "float32") -> None:
    """Write a series as one safetensors file of stacked tensors, atomically.

    `dtype` `"float16"` halves the file (for shipping); the models read back are float32 either
    way, rounded to float16 precision.
    """
    if dtype not in STORE_DTYPES:
        raise ValueError(f"dtype must be one of {list(STORE_DTYPES)}, got {short(dtype)}")
    info = series.train_info
    if info is None:
        raise ValueError("write_series needs a series with a training record (train_info)")
    if dtype == "float16":
        big = max(float(t.abs().max()) for t in series.params.values())
        if big > 6.0e4:
            raise ValueError(f"a weight of {big:.3g} does not fit float16; store float32")
    check_split(str(path), series.cfg, info.train_config, info.train_mask, writing=True)
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


def _series_tensors(name: str) -> Any:
    """The tensors a snapshots document implies (checked before the body is read)."""
    from hooked_mlp.checks import check_memory
    from hooked_mlp.functional import param_shapes

    def expected(doc: dict[str, Any], table: dict[str, Any]) -> dict[str, tuple[str, tuple]]:
        cfg = config_from(name, MLPConfig, doc.get("config"), "model config")
        tcfg = config_from(name, TrainConfig, doc.get("train_config"), "training config")
        dtype = doc.get("dtype", "float32")
        if dtype not in STORE_DTYPES:
            raise CheckpointError(name, f"unknown snapshot dtype {short(dtype)}")
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
        if not isinstance(keys, list) or not set(keys) <= set(HISTORY_KEYS) or \
                len(set(keys)) != len(keys):
            raise CheckpointError(name, "corrupt metadata: 'history_keys' must be distinct "
                                  f"names among {list(HISTORY_KEYS)}")
        for key in keys:
            want[f"history.{key}"] = ("F32", (tcfg.epochs,))
        return want

    return expected


def read_series(path: str | os.PathLike[str]) -> SnapshotSeries:
    """Read and check a snapshots file written by a run (`snapshots-seed-<s>.safetensors`).

    The stacked parameters are read at once (their memory is checked first: `n` snapshots of
    the model, float32); the `HookedMLP` of each snapshot is built only when it is asked for.
    The split must be the one the config and recipe imply.
    """
    from hooked_mlp.functional import param_shapes
    from hooked_mlp.train_info import TrainInfo

    name = str(path)
    doc, tensors = read_safetensors(path, KIND, _series_tensors(name))
    cfg = config_from(name, MLPConfig, doc.get("config"), "model config")
    tcfg = config_from(name, TrainConfig, doc.get("train_config"), "training config")
    epochs = tensors["epochs"].tolist()
    if epochs != sorted(set(epochs)) or epochs[0] < 0 or epochs[-1] > tcfg.epochs:
        raise CheckpointError(name, f"corrupt snapshots: epochs must increase within [0, "
                              f"{tcfg.epochs}]")
    metrics, provenance = doc.get("metrics", {}), doc.get("provenance", {})
    if not isinstance(metrics, dict) or not isinstance(provenance, dict):
        raise CheckpointError(name, "corrupt metadata: metrics or provenance is not an object")
    check_split(name, cfg, tcfg, tensors["train_mask"])
    history = {k: tensors[f"history.{k}"].tolist() for k in doc.get("history_keys", [])}
    info = TrainInfo(tcfg, tensors["train_mask"], history, metrics, provenance)
    params = {k: tensors[f"param.{k}"].float() for k in param_shapes(cfg)}  # float16: widened
    return SnapshotSeries(cfg, epochs, params, info, source=name,
                          stored_dtype=doc.get("dtype", "float32"))


def recorded_seed(path: Path) -> int:
    """The seed a snapshots file records (from its header alone)."""
    name = str(path)
    doc = read_header(path).doc
    if doc.get("kind") != KIND:
        raise CheckpointError(name, f"is a hooked-mlp {short(doc.get('kind'))} file, but a "
                              f"{KIND!r} file is needed")
    return config_from(name, TrainConfig, doc.get("train_config"), "training config").seed


def run_series(folder: str | os.PathLike[str]) -> dict[int, Path]:
    """The snapshots files of a run folder by the seed each records. A file whose name gives
    another seed, or two files of one seed, are refused, naming them."""
    out: dict[int, Path] = {}
    for named, path in layout.series_files(folder):
        seed = recorded_seed(path)
        if seed != named:
            raise CheckpointError(str(path), f"its name says seed {named}, but it holds the "
                                  f"snapshots of seed {seed}; rename it "
                                  f"{layout.series_file('', seed).name} (or remove it)")
        if seed in out:
            raise ValueError(f"{folder}: {out[seed].name} and {path.name} both hold the "
                             f"snapshots of seed {seed}; keep one")
        out[seed] = path
    return dict(sorted(out.items()))


def find_series(folder: str | os.PathLike[str], seed: int) -> Path | None:
    """The snapshots file of `seed` in a run folder (by the seed files record), or None."""
    return run_series(folder).get(seed)


# --------------------------------------------------------------------------- loading
def load_snapshots(path: str | os.PathLike[str], seed: int | None = None,
                   **importer_options: Any) -> SnapshotSeries | ImportedSeries:
    """The snapshots of a run as a lazy sequence of `HookedMLP` with `.epochs`.

    `path` is a snapshots file (`snapshots-seed-<s>.safetensors`), a run folder holding such
    files (`seed` chooses one, by the seed the files record, when it holds several), or a
    folder of checkpoint files from another codebase, one per epoch, each imported by
    `hooked_mlp.import_mlp(file, **importer_options)` (e.g. `activation="relu"`) when it is
    asked for. How such a folder is read (which epoch each file is, which files are skipped and
    why: `series.skipped`) is `hooked_mlp.files.checkpoint_folders`'. An unfinished run's folder
    is refused, saying so.
    """
    from hooked_mlp.files.checkpoint_folders import scan_folder

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
        recorded = series.train_info.train_config.seed if series.train_info else None
        if seed is not None and seed != recorded:  # never silently ignored
            raise ValueError(f"{p} holds the snapshots of seed {recorded}, not seed {seed}; "
                             "seed= chooses among a run folder's snapshots files")
        return series
    own = run_series(p)
    if own:
        if importer_options:
            raise ValueError(f"{p} holds hooked-mlp snapshots; importer options "
                             f"{sorted(importer_options)} apply to other checkpoints only")
        if seed is None:
            if len(own) > 1:
                raise ValueError(f"{p} holds the snapshots of seeds {list(own)}; choose one "
                                 "with seed=")
            return read_series(next(iter(own.values())))
        if seed not in own:
            raise ValueError(f"{p} holds no snapshots of seed {seed}; it has seeds {list(own)}")
        return read_series(own[seed])
    _refuse_unfinished_run(p)
    if seed is not None:
        raise ValueError(f"seed= chooses among a run folder's snapshots; {p} holds none")
    scan = scan_folder(p, importer_options)
    return ImportedSeries(scan.files, scan.epochs, importer_options, str(p), scan.cfg,
                          scan.skipped)


def _refuse_unfinished_run(folder: Path) -> None:
    """A run folder whose run has not finished has no snapshots files yet: say so."""
    state = layout.state_file(folder)
    if not state.is_file() and not layout.part_files(folder):
        return
    where = ""
    try:
        doc = read_header(state).doc
        epochs = doc.get("train_config", {}).get("epochs")
        where = f" (its state is at epoch {short(doc.get('epoch'))} of {short(epochs)})"
    except (CheckpointError, AttributeError):
        pass
    raise ValueError(f"{folder} is a run that has not finished{where}: its snapshots are "
                     f"written to {layout.SERIES_PREFIX}<seed>{layout.SUFFIX} when it does; if "
                     f"it is not training now, continue it with `hooked-mlp train --resume "
                     f"{folder}`")
