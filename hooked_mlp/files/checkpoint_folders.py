"""A folder of another codebase's checkpoints, one file per epoch, read as one run's series.

`scan_folder(folder, options)` reads every file of the folder once (`hooked_mlp.files.foreign`,
then `hooked_mlp.files.importers.read_state` with the importer options), and returns the
checkpoints in epoch order, the one model they hold, and the files it skipped with why.

Which epoch a file is. What the checkpoint records comes first: `epoch` (a torch file's top
level, as He et al.'s and Lightning's save it; a safetensors file's metadata), else `step` or
`global_step`. Its name is read with one documented pattern, never "the last number in it":

- a version suffix is dropped first: `-v1` (Lightning), `_v2`, `.v3`;
- a marker gives the number after it: `epoch10`, `epoch_10`, `epoch=10`, `ep10` (an epoch),
  `step=500`, `iter500` (a step); with both, the epoch (`epoch=9-step=500.ckpt` is epoch 9);
- else a name that is a number (`200.pth`, `0010.pt`), or ends in one after `-`, `_` or `.`
  with no other digits (`ckpt_10.pt`, `model-500.pt`);
- any other name with digits is ambiguous (`ckpt_10_2.pt`, `resnet18_5.pt`).

A name that contradicts the record (`epoch_10.pt` recording `epoch: 999`), an ambiguous name
without a record, and a folder mixing files placed by epoch with files placed by step are
refused, naming the files. So are checkpoints of different models (different p, width, ...)
and two files of one epoch holding different weights (the same weights twice, as Lightning's
`last.ckpt` beside its epoch file, keep one and skip the other).

Skipped, and listed with why (`ImportedSeries.skipped`): hidden files (not listed), folders,
files that are neither torch nor safetensors files (text, JSON, NumPy), pickles (never
unpickled) and torch's legacy pre-1.6 format (each named for what it is), damaged files, files
that hold no model (a published codebase's train/test splits: a tuple or list of pairs),
checkpoints with no epoch in their name or record (`init.pth`, `best.pt`), and hooked-mlp files
(models of one seed, not epochs).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from hooked_mlp.config import MLPConfig
from hooked_mlp.files.foreign import (
    SKIPPED,
    NotAStateDict,
    Refusal,
    is_hooked_file,
    read_file,
    sniff,
)
from hooked_mlp.files.format import CheckpointError, read_header
from hooked_mlp.files.importers import ImportOptions, read_state
from hooked_mlp.text import safe_text

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
_VERSION = re.compile(r"[-_.]v\d+$", re.IGNORECASE)
_MARKER = re.compile(r"(?<![a-z0-9])(epoch|ep|global_step|step|iteration|iter)[=_-]?(\d+)"
                     r"(?![0-9])", re.IGNORECASE)
_ENDS_IN_NUMBER = re.compile(r"(?:(?P<head>.*[-_.]))?(?P<number>\d+)")
_EPOCH_KEYS = ("epoch",)
_STEP_KEYS = ("step", "global_step")
_SHOWN = 6


@dataclass(frozen=True)
class NameEpoch:
    """What a file's name says: `number` and its `unit` (`"epoch"`, `"step"`, or `"number"`
    for a bare number, which may be either); `numbers` when the name is ambiguous."""

    number: int | None
    unit: str | None
    numbers: tuple[int, ...] = ()


def epoch_from_name(name: str) -> NameEpoch | None:
    """The epoch (or step) a checkpoint's file name gives by the module's pattern; a
    `NameEpoch` with `number` None and the numbers it holds when the name is ambiguous; None
    when the name holds no number."""
    stem = name
    for suffix in CHECKPOINT_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    stem = _VERSION.sub("", stem)
    marks = [(m[1].lower(), int(m[2])) for m in _MARKER.finditer(stem)]
    epochs = {n for kind, n in marks if kind in ("epoch", "ep")}
    steps = {n for kind, n in marks if kind not in ("epoch", "ep")}
    if epochs or steps:
        chosen = epochs or steps
        if len(chosen) > 1:
            return NameEpoch(None, None, tuple(sorted(chosen)))
        return NameEpoch(min(chosen), "epoch" if epochs else "step")
    numbers = tuple(int(x) for x in re.findall(r"\d+", stem))
    if not numbers:
        return None
    m = _ENDS_IN_NUMBER.fullmatch(stem)
    if m is not None and not re.search(r"\d", m["head"] or ""):
        return NameEpoch(int(m["number"]), "number")
    return NameEpoch(None, None, numbers)


def _count(value: Any) -> int | None:
    """A recorded epoch or step as a non-negative int (a tensor of one, a digit string)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype.is_floating_point:
        value = value.item()
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


def recorded(obj: Any, metadata: Mapping[str, Any] | None) -> tuple[int | None, int | None]:
    """`(epoch, step)` a checkpoint records: a torch file's top-level entries, or a
    safetensors file's metadata."""
    place = metadata if metadata is not None else obj
    if not isinstance(place, Mapping):
        return None, None
    epoch = next((c for k in _EPOCH_KEYS if (c := _count(place.get(k))) is not None), None)
    step = next((c for k in _STEP_KEYS if (c := _count(place.get(k))) is not None), None)
    return epoch, step


@dataclass
class _Found:
    path: Path
    epoch: int
    unit: str  # "epoch", "step" or "number"
    cfg: MLPConfig
    by_name: bool  # the name gives the epoch (kept over a duplicate that does not)


@dataclass
class FolderScan:
    """The checkpoints of a folder in epoch order, the model they hold, and what was skipped."""

    files: list[Path]
    epochs: list[int]
    cfg: MLPConfig
    skipped: list[tuple[str, str]]


def check_options(options: Mapping[str, Any]) -> ImportOptions:
    """`import_mlp`'s keyword arguments, checked as it checks them."""
    known = [f.name for f in fields(ImportOptions)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"unknown importer options {unknown}; import_mlp takes {known}")
    return ImportOptions.checked(**{k: options.get(k) for k in known})


def scan_folder(folder: Path, options: Mapping[str, Any]) -> FolderScan:
    """Read a folder of checkpoints (see the module's docstring)."""
    args = check_options(options)
    skipped: list[tuple[str, str]] = []
    found: list[_Found] = []
    problems: list[str] = []
    hooked: dict[str, list[str]] = {}
    for f in sorted(folder.iterdir()):
        if f.name.startswith("."):
            continue
        if f.is_dir():
            skipped.append((f.name, "a folder: not read"))
            continue
        if not f.is_file():
            skipped.append((f.name, "not a regular file"))
            continue
        entry = _read_one(f, args, skipped, problems, hooked)
        if entry is not None:
            found.append(entry)
    if problems:
        shown = "; ".join(problems[:_SHOWN]) + (f"; and {len(problems) - _SHOWN} more"
                                                 if len(problems) > _SHOWN else "")
        raise ValueError(f"{safe_text(str(folder))}: cannot place these checkpoints in the "
                         f"series: {shown}. Name each file for its epoch (epoch<N>.pt or "
                         f"<N>.pt), or record its 'epoch' in it")
    if not found:
        raise ValueError(_nothing_found(folder, hooked, skipped))
    _check_units(folder, found)
    _check_one_model(folder, found)
    kept = _one_per_epoch(folder, found, args, skipped)
    return FolderScan([e.path for e in kept], [e.epoch for e in kept], kept[0].cfg, skipped)


def _read_one(f: Path, args: ImportOptions, skipped: list[tuple[str, str]],
              problems: list[str], hooked: dict[str, list[str]]) -> _Found | None:
    """One file of the folder: its place in the series, or None (skipped, or a problem)."""
    name = safe_text(f.name, 120)
    try:
        kind = sniff(f)
        if kind == "safetensors" and is_hooked_file(f):
            what = _hooked_kind(f)
            hooked.setdefault(what, []).append(f.name)
            skipped.append((f.name, f"a hooked-mlp {what} file, not a checkpoint of an epoch"))
            return None
        if kind not in ("torch", "safetensors"):
            skipped.append((f.name, SKIPPED[kind]))
            return None
        obj, metadata = read_file(f)
    except Refusal as refusal:
        skipped.append((f.name, refusal.problem))
        return None
    extra = [("__metadata__.", metadata)] if metadata is not None else None
    try:
        imported = read_state(obj, args, "this file", extra)
    except NotAStateDict as refusal:
        skipped.append((f.name, refusal.problem))
        return None
    except Refusal as refusal:
        raise CheckpointError(str(f), refusal.problem) from None
    epoch, step = recorded(obj, metadata)
    named = epoch_from_name(f.name)
    cfg = replace(imported.cfg, device="cpu")
    if named is not None and named.number is not None:
        clash = (named.unit == "epoch" and epoch is not None and named.number != epoch) or \
            (named.unit == "step" and step is not None and named.number != step) or \
            (named.unit == "number" and (epoch, step) != (None, None)
             and named.number not in (epoch, step))
        if clash:
            records = ", ".join(f"{k} {v}" for k, v in (("epoch", epoch), ("step", step))
                                if v is not None)
            problems.append(f"{name} (its name gives {named.unit} {named.number}, but it "
                            f"records {records})")
            return None
    if epoch is not None:
        return _Found(f, epoch, "epoch", cfg, named is not None and named.number == epoch)
    if named is not None and named.number is not None and named.unit == "epoch":
        return _Found(f, named.number, "epoch", cfg, True)
    if step is not None:
        return _Found(f, step, "step", cfg, named is not None and named.number == step)
    if named is not None and named.number is not None:
        return _Found(f, named.number, named.unit or "number", cfg, True)
    if named is not None:
        problems.append(f"{name} (its name holds several numbers, "
                        f"{', '.join(map(str, named.numbers[:4]))}, and it records no epoch or "
                        f"step)")
        return None
    skipped.append((f.name, "no epoch: its name holds no number and it records no 'epoch' or "
                    "'step'"))
    return None


def _hooked_kind(f: Path) -> str:
    try:
        kind = read_header(f).doc.get("kind")
    except CheckpointError:
        return "damaged"
    return kind if isinstance(kind, str) else "unknown"


def _nothing_found(folder: Path, hooked: dict[str, list[str]],
                   skipped: list[tuple[str, str]]) -> str:
    also = ""
    if hooked.get("snapshots"):
        also = (f"; it holds the hooked-mlp snapshots file(s) {hooked['snapshots'][:3]}: pass "
                "the file itself")
    elif hooked.get("model"):
        also = (f"; its hooked-mlp files {hooked['model'][:3]} are models (of different seeds, "
                "not epochs): train with --snapshots to keep the weights over training")
    elif skipped:
        also = "; " + "; ".join(f"{safe_text(n, 80)}: {safe_text(why, 160)}"
                                for n, why in skipped[:3])
    return (f"{safe_text(str(folder))} holds no snapshots: no snapshots-seed-*.safetensors and "
            f"no checkpoint files of another codebase ({', '.join(CHECKPOINT_SUFFIXES)} "
            f"content){also}")


def _names(entries: list[_Found]) -> str:
    listed = ", ".join(safe_text(e.path.name, 80) for e in entries[:3])
    return listed + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")


def _check_units(folder: Path, found: list[_Found]) -> None:
    by = {u: [e for e in found if e.unit == u] for u in ("epoch", "step")}
    if by["epoch"] and by["step"]:
        raise ValueError(f"{safe_text(str(folder))}: some checkpoints are placed by epoch "
                         f"({_names(by['epoch'])}) and others by step ({_names(by['step'])}); a "
                         "series counts one of them: record the same one in every file")


def _check_one_model(folder: Path, found: list[_Found]) -> None:
    groups: dict[MLPConfig, list[_Found]] = {}
    for e in found:
        groups.setdefault(e.cfg, []).append(e)
    if len(groups) == 1:
        return
    shown = "; ".join(f"p={cfg.p}, d_hidden={cfg.d_hidden}, n_layers={cfg.n_layers}, "
                      f"tied_inputs={cfg.tied_inputs}, bias={cfg.bias} ({_names(entries)})"
                      for cfg, entries in groups.items())
    raise ValueError(f"{safe_text(str(folder))} holds checkpoints of {len(groups)} different "
                     f"models: {shown}. A series is one model's training: give each run's "
                     f"checkpoints a folder of their own")


def _one_per_epoch(folder: Path, found: list[_Found], args: ImportOptions,
                   skipped: list[tuple[str, str]]) -> list[_Found]:
    """One checkpoint per epoch: duplicates with the same weights keep one (the one named for
    its epoch); duplicates with different weights are refused."""
    by_epoch: dict[int, list[_Found]] = {}
    for e in found:
        by_epoch.setdefault(e.epoch, []).append(e)
    kept = []
    for epoch in sorted(by_epoch):
        entries = sorted(by_epoch[epoch], key=lambda e: (
            not e.by_name, _VERSION.search(e.path.stem) is not None, e.path.name))
        first = entries[0]
        for other in entries[1:]:
            if not _same_weights(first.path, other.path, args):
                raise ValueError(f"{safe_text(str(folder))}: {safe_text(first.path.name, 80)} "
                                 f"and {safe_text(other.path.name, 80)} are both epoch {epoch} "
                                 "but hold different weights; keep the one that belongs to "
                                 "this run")
            skipped.append((other.path.name, f"the same weights as {first.path.name} "
                            f"(epoch {epoch})"))
        kept.append(first)
    return kept


def _same_weights(a: Path, b: Path, args: ImportOptions) -> bool:
    params = []
    for f in (a, b):
        obj, metadata = read_file(f)
        extra = [("__metadata__.", metadata)] if metadata is not None else None
        params.append(read_state(obj, args, "this file", extra).params)
    return all(torch.equal(params[0][k], params[1][k]) for k in params[0])
