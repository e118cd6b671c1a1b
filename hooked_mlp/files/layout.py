"""Every file name of a run folder, and of the files shipped with the package, in one place.

    DIR/seed-<s>.safetensors             a finished seed's model (`hooked_mlp.files.checkpoints`)
    DIR/snapshots-seed-<s>.safetensors   its snapshots, with --snapshots (`hooked_mlp.files.series`)
    DIR/state.safetensors                while the run lasts: the whole run state, written every
                                         `--checkpoint-every` epochs (`hooked_mlp.training.runs`)
    DIR/snapshots-part-<e>.safetensors   while the run lasts: the snapshots taken up to the
                                         checkpoint of epoch e (`hooked_mlp.training.snapshots`)
    DIR/.lock                            locked while a process trains into DIR
    DIR/.<name>.<random>.tmp             a write in progress (`hooked_mlp.files.format`); one left
                                         by a killed run is removed by the next run in DIR

    hooked_mlp/pretrained/seed-<s>.safetensors                 the shipped models
    hooked_mlp/pretrained/snapshots-study-seed-0.safetensors   the shipped snapshot series
    hooked_mlp/pretrained/snapshots-study-seed-0.dynamics.json its progress measures, cached

A name says what a file is meant to be; what it holds is what its header records (a
`snapshots-seed-<s>` file's seed is the one it records: `hooked_mlp.files.series`). Names are
parsed strictly (`seed-<digits>.safetensors`), so no other file is taken for one of these.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hooked_mlp.files.format import temporary_glob

SUFFIX = ".safetensors"
MODEL_PREFIX = "seed-"
SERIES_PREFIX = "snapshots-seed-"
PART_PREFIX = "snapshots-part-"
MODEL_GLOB = f"{MODEL_PREFIX}*{SUFFIX}"  # what a folder of models (a report's models/) holds
STATE_FILE = "state.safetensors"
LOCK_FILE = ".lock"

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
SHIPPED_SERIES = "snapshots-study-seed-0.safetensors"  # seed 0 of the study's recipe, retrained
SHIPPED_MEASURES = "snapshots-study-seed-0.dynamics.json"  # its progress measures

Folder = str | os.PathLike[str]


def _numbered(prefix: str) -> re.Pattern[str]:
    return re.compile(re.escape(prefix) + r"(\d{1,12})" + re.escape(SUFFIX))


_MODEL = _numbered(MODEL_PREFIX)
_SERIES = _numbered(SERIES_PREFIX)
_PART = _numbered(PART_PREFIX)


# --------------------------------------------------------------------------- run folders
def model_file(folder: Folder, seed: int) -> Path:
    """`DIR/seed-<seed>.safetensors`: a finished seed's model."""
    return Path(folder) / f"{MODEL_PREFIX}{seed}{SUFFIX}"


def series_file(folder: Folder, seed: int) -> Path:
    """`DIR/snapshots-seed-<seed>.safetensors`: the snapshots a run kept of a seed."""
    return Path(folder) / f"{SERIES_PREFIX}{seed}{SUFFIX}"


def part_file(folder: Folder, epoch: int) -> Path:
    """`DIR/snapshots-part-<epoch>.safetensors`: an unfinished run's snapshots up to the
    checkpoint of `epoch`."""
    return Path(folder) / f"{PART_PREFIX}{epoch}{SUFFIX}"


def state_file(folder: Folder) -> Path:
    """`DIR/state.safetensors`: an unfinished run's state."""
    return Path(folder) / STATE_FILE


def lock_file(folder: Folder) -> Path:
    """`DIR/.lock`: locked while a process trains into DIR."""
    return Path(folder) / LOCK_FILE


def _listed(folder: Folder, pattern: re.Pattern[str], glob: str) -> list[tuple[int, Path]]:
    out = []
    for path in Path(folder).glob(glob):
        m = pattern.fullmatch(path.name)
        if m is not None:
            out.append((int(m[1]), path))
    return sorted(out, key=lambda x: (x[0], x[1].name))


def model_files(folder: Folder) -> list[tuple[int, Path]]:
    """`(seed in the name, path)` of each `seed-<s>.safetensors` in `folder`, by seed."""
    return _listed(folder, _MODEL, f"{MODEL_PREFIX}*{SUFFIX}")


def series_files(folder: Folder) -> list[tuple[int, Path]]:
    """`(seed in the name, path)` of each `snapshots-seed-<s>.safetensors` in `folder`."""
    return _listed(folder, _SERIES, f"{SERIES_PREFIX}*{SUFFIX}")


def part_files(folder: Folder) -> list[tuple[int, Path]]:
    """`(checkpoint epoch, path)` of each `snapshots-part-<e>.safetensors` in `folder`."""
    return _listed(folder, _PART, f"{PART_PREFIX}*{SUFFIX}")


def model_seed(path: Folder) -> int | None:
    """The seed a `seed-<s>.safetensors` name gives; None for any other name."""
    m = _MODEL.fullmatch(Path(path).name)
    return None if m is None else int(m[1])


def stale_temporaries(folder: Folder) -> list[Path]:
    """The temporary files of a run folder's own files (`.state.safetensors.<random>.tmp`,
    `.seed-<s>.safetensors.<random>.tmp`, `.snapshots-...`) that are plain files: what a killed
    run leaves behind, for the next run in the folder (holding the lock) to remove."""
    out = []
    for name in (STATE_FILE, f"{MODEL_PREFIX}*{SUFFIX}", f"snapshots-*{SUFFIX}"):
        for path in Path(folder).glob(temporary_glob(name)):
            if path.is_file() and not path.is_symlink():
                out.append(path)
    return sorted(set(out))


# --------------------------------------------------------------------------- sweep folders
# The names of a sweep folder (`sweep.json`, `results/group-<g>.parquet`,
# `weights/group-<g>.safetensors`, `snapshots/<cell>/`) belong here, beside the run folder's:
# `hooked_mlp.files.sweeps` (helper G) names them today and moves them into this section.
