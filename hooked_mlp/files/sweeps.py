"""The sweep folder: its spec, the results table, each group's weights, and a cell as a model.

    S/sweep.json                                  the spec, its groups, the table's columns and
                                                  the code version (written before any training)
    S/results/group-<g>.parquet                   one row per run of group g, written when g ends
    S/weights/group-<g>.safetensors               group g's final weights, splits and curves,
                                                  stacked over its runs
    S/snapshots/<cell>/snapshots-seed-<s>.safetensors   with snapshots: one file per run, a run
                                                  folder per cell (`hooked-mlp dynamics` reads it)
    S/sweep.html                                  the phase diagrams (`hooked-mlp sweep --page S`)

A group is finished when its results part exists. Its weights (and snapshots) are written
before the part, each file atomically, so a part never outlives the weights it describes and a
killed sweep leaves only whole files. Every part has the schema `sweep.json` names, so the folder
reads as one table: `pandas.read_parquet(S / "results")`, DuckDB's
`read_parquet('S/results/*.parquet')`, or `read_results(S)` (checked against the spec, sorted by
run). `load_sweep_model(S, weight_decay=1.0, train_frac=0.6, seed=1)` gives any cell's trained
model as a `HookedMLP`, with its split and curves in `train_info`.

Runs are numbered cell by cell, seeds innermost: run `r` is cell `r // n_seeds` with seed
`seeds[r % n_seeds]`.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hooked_mlp.config import MLPConfig, TrainConfig
from hooked_mlp.files.format import (
    CheckpointError,
    _json,
    atomic_write_bytes,
    atomic_write_text,
    config_from,
    read_safetensors,
    write_safetensors,
)
from hooked_mlp.text import short

if TYPE_CHECKING:
    import pandas as pd
    from torch import Tensor

    from hooked_mlp.model import HookedMLP
    from hooked_mlp.train_info import TrainInfo

SWEEP_FILE = "sweep.json"
RESULTS_DIR = "results"
WEIGHTS_DIR = "weights"
SNAPSHOTS_DIR = "snapshots"
PAGE_FILE = "sweep.html"
SWEEP_FORMAT = "hooked-mlp-sweep"
SWEEP_VERSION = 1
GROUP_KIND = "sweep-group"
# the table's column types (names of pyarrow types)
COLUMN_TYPES = ("int64", "float64", "bool", "string")
_PART = re.compile(r"group-(\d{5,})\.parquet")
_CELL_NAME = re.compile(r"[A-Za-z0-9_.=,+-]{1,200}")


class SweepFolderError(ValueError):
    """A folder that is not a sweep, or whose files disagree with its spec."""


# --------------------------------------------------------------------------- names
def sweep_file(folder: str | Path) -> Path:
    return Path(folder) / SWEEP_FILE


def part_path(folder: str | Path, group: int) -> Path:
    """`S/results/group-<g>.parquet` (five digits at least, so parts list in order)."""
    return Path(folder) / RESULTS_DIR / f"group-{group:05d}.parquet"


def weights_path(folder: str | Path, group: int) -> Path:
    return Path(folder) / WEIGHTS_DIR / f"group-{group:05d}.safetensors"


def cell_name(cell: Mapping[str, Any], index: int) -> str:
    """The folder name of a cell's snapshots: `weight_decay=1.0,train_frac=0.6` (its axis values
    in axis order), or `cell-<index>` when it has none or the name would be long or odd."""
    name = ",".join(f"{k}={v}" for k, v in cell.items())
    return name if _CELL_NAME.fullmatch(name) else f"cell-{index}"


def snapshots_dir(folder: str | Path, cell: Mapping[str, Any], index: int) -> Path:
    """The run folder holding one cell's snapshots (`snapshots-seed-<s>.safetensors` each)."""
    return Path(folder) / SNAPSHOTS_DIR / cell_name(cell, index)


def run_of(doc: Mapping[str, Any], cell: int, seed_index: int) -> int:
    """The run number of a cell's `seed_index`-th seed."""
    return cell * len(doc["spec"]["seeds"]) + seed_index


# --------------------------------------------------------------------------- sweep.json
def write_sweep_doc(folder: str | Path, doc: Mapping[str, Any]) -> None:
    """Write `sweep.json` atomically (the spec, the groups, the columns, the code version)."""
    atomic_write_text(sweep_file(folder), json.dumps(
        {"format": SWEEP_FORMAT, "format_version": SWEEP_VERSION, **doc}, indent=1,
        allow_nan=False) + "\n")


def is_sweep_folder(folder: str | Path) -> bool:
    return sweep_file(folder).is_file()


def read_sweep_doc(folder: str | Path) -> dict[str, Any]:
    """Read and check `S/sweep.json`; a `SweepFolderError` names what is wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SweepFolderError(f"{folder} is not a sweep folder: "
                               f"{'no such folder' if not folder.exists() else 'not a folder'}")
    path = sweep_file(folder)
    if not path.is_file():
        raise SweepFolderError(f"{folder} is not a sweep folder (it has no {SWEEP_FILE})")
    try:
        doc = _json(path.read_bytes())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SweepFolderError(f"{path}: not a sweep spec ({short(str(e))})") from None
    if not isinstance(doc, dict) or doc.get("format") != SWEEP_FORMAT:
        raise SweepFolderError(f"{path}: not a sweep spec (format is not {SWEEP_FORMAT!r})")
    version = doc.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SweepFolderError(f"{path}: corrupt sweep spec (format_version {short(version)})")
    if version > SWEEP_VERSION:
        raise SweepFolderError(f"{path}: written by a newer hooked-mlp (sweep format {version}; "
                               f"this version reads up to {SWEEP_VERSION}): upgrade hooked-mlp")
    _check_doc(path, doc)
    return doc


def _check_doc(path: Path, doc: dict[str, Any]) -> None:
    """The parts of `sweep.json` that the files layer relies on: cells, seeds, groups that
    cover every run once, columns of known types."""
    spec = doc.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("cells"), list) or not all(
            isinstance(c, dict) for c in spec["cells"]):
        raise SweepFolderError(f"{path}: corrupt sweep spec (no list of cells)")
    seeds = spec.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise SweepFolderError(f"{path}: corrupt sweep spec (no list of seeds)")
    n_runs = len(spec["cells"]) * len(seeds)
    groups = doc.get("groups")
    if not isinstance(groups, list) or not all(
            isinstance(g, list) and g and all(isinstance(r, int) and not isinstance(r, bool)
                                              for r in g) for g in groups):
        raise SweepFolderError(f"{path}: corrupt sweep spec (no list of groups of runs)")
    if sorted(r for g in groups for r in g) != list(range(n_runs)):
        raise SweepFolderError(f"{path}: corrupt sweep spec (its groups do not hold each of its "
                               f"{n_runs} runs exactly once)")
    columns = doc.get("columns")
    if not isinstance(columns, list) or not columns or not all(
            isinstance(c, list) and len(c) == 2 and isinstance(c[0], str)
            and c[1] in COLUMN_TYPES for c in columns):
        raise SweepFolderError(f"{path}: corrupt sweep spec (no list of typed columns)")
    if not isinstance(doc.get("code"), dict):
        raise SweepFolderError(f"{path}: corrupt sweep spec (no code version)")


# --------------------------------------------------------------------------- results
def arrow_schema(columns: Sequence[Sequence[str]]) -> Any:
    """The pyarrow schema of the results table: `[(name, type name), ...]`, every column
    nullable."""
    import pyarrow as pa

    kinds = {"int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(),
             "string": pa.string()}
    return pa.schema([pa.field(name, kinds[kind]) for name, kind in columns])


def write_part(folder: str | Path, group: int, rows: Sequence[Mapping[str, Any]],
               columns: Sequence[Sequence[str]]) -> Path:
    """Write one group's rows as `results/group-<g>.parquet`, atomically, in the schema of
    `columns` (a row must hold exactly those columns)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = [c[0] for c in columns]
    for row in rows:
        if list(row) != names:
            raise ValueError(f"a results row must hold the columns {names} in that order, got "
                             f"{list(row)}")
    table = pa.Table.from_pylist([dict(r) for r in rows], schema=arrow_schema(columns))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    path = part_path(folder, group)
    atomic_write_bytes(path, buf.getvalue())
    return path


def finished_groups(folder: str | Path, doc: Mapping[str, Any]) -> set[int]:
    """The groups whose results part exists, each checked to hold exactly that group's runs."""
    done = set()
    results = Path(folder) / RESULTS_DIR
    if not results.is_dir():
        return done
    n_groups = len(doc["groups"])
    for path in results.iterdir():
        m = _PART.fullmatch(path.name)
        if m is None:
            continue
        g = int(m.group(1))
        if g >= n_groups or path.name != part_path(folder, g).name:
            raise SweepFolderError(f"{path}: no group {g} in this sweep's spec ({n_groups} "
                                   "groups)")
        _read_part(path, doc, g)
        done.add(g)
    return done


def _read_part(path: Path, doc: Mapping[str, Any], group: int) -> Any:
    """One part as a pyarrow table, checked: the spec's columns and the group's runs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise SweepFolderError(f"{path}: not a results part ({short(str(e))})") from None
    want = arrow_schema(doc["columns"])
    if not table.schema.equals(want, check_metadata=False):
        raise SweepFolderError(f"{path}: its columns are not the ones {SWEEP_FILE} names")
    runs = table.column("run").to_pylist()
    if sorted(runs) != sorted(doc["groups"][group]):
        raise SweepFolderError(f"{path}: holds runs {short(runs)}, not group {group}'s runs")
    return table


def read_results(folder: str | Path) -> pd.DataFrame:
    """The results table of a sweep folder, one row per finished run, sorted by run (every
    part checked against `sweep.json`; an unfinished sweep gives the rows it has so far)."""
    import pyarrow as pa

    doc = read_sweep_doc(folder)
    tables = [_read_part(part_path(folder, g), doc, g)
              for g in sorted(finished_groups(folder, doc))]
    schema = arrow_schema(doc["columns"])
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return table.sort_by("run").to_pandas()


# --------------------------------------------------------------------------- weights
def write_group_weights(folder: str | Path, group: int, runs: Sequence[int],
                        cfgs: Sequence[MLPConfig], params: Sequence[Mapping[str, Tensor]],
                        infos: Sequence[TrainInfo]) -> Path:
    """Write one group's final weights, splits and curves as one stacked safetensors file:
    `param.<name>` `[R, *shape]`, `train_mask` bool `[R, p*p]`, `history.<key>` `[R, epochs]`
    (runs of a group share their parameter shapes and their epochs)."""
    import torch

    if not (len(runs) == len(cfgs) == len(params) == len(infos)) or not runs:
        raise ValueError("write_group_weights needs one config, parameter set and training "
                         "record per run")
    keys = list(infos[0].history)
    tensors = {f"param.{name}": torch.stack([p[name] for p in params]) for name in params[0]}
    tensors["train_mask"] = torch.stack([i.train_mask.to(torch.bool) for i in infos])
    for key in keys:
        tensors[f"history.{key}"] = torch.tensor([i.history[key] for i in infos],
                                                 dtype=torch.float32)
    meta = {"kind": GROUP_KIND, "group": group, "runs": list(runs),
            "configs": [c.to_dict() for c in cfgs],
            "train_configs": [i.train_config.to_dict() for i in infos],
            "history_keys": keys, "metrics": [i.metrics for i in infos],
            "provenance": [i.provenance for i in infos]}
    path = weights_path(folder, group)
    write_safetensors(path, tensors, meta)
    return path


def _group_tensors(name: str) -> Any:
    """The tensors a group file's document implies (checked before its body is read)."""
    from hooked_mlp.functional import param_shapes

    def expected(doc: dict[str, Any], table: dict[str, Any]) -> dict[str, Any]:
        configs, tcfgs, keys = doc.get("configs"), doc.get("train_configs"), doc.get(
            "history_keys")
        runs = doc.get("runs")
        if not (isinstance(configs, list) and isinstance(tcfgs, list) and isinstance(runs, list)
                and isinstance(keys, list) and configs and len(configs) == len(tcfgs)
                == len(runs)):
            raise CheckpointError(name, "corrupt metadata: a sweep group needs one config and "
                                  "recipe per run")
        cfgs = [config_from(name, MLPConfig, c, "model config") for c in configs]
        recipes = [config_from(name, TrainConfig, t, "train config") for t in tcfgs]
        if len({tuple(param_shapes(c).items()) for c in cfgs}) != 1 or len(
                {t.epochs for t in recipes}) != 1:
            raise CheckpointError(name, "corrupt metadata: the runs of a group must share "
                                  "their parameter shapes and epochs")
        R, cfg = len(cfgs), cfgs[0]
        want = {f"param.{k}": ("F32", (R, *s)) for k, s in param_shapes(cfg).items()}
        want["train_mask"] = ("BOOL", (R, cfg.p * cfg.p))
        for key in keys:
            want[f"history.{key}"] = ("F32", (R, recipes[0].epochs))
        return want

    return expected


def read_group(path: str | Path) -> tuple[dict[str, Any], list[tuple[MLPConfig, dict[str, Tensor],
                                                                   TrainInfo]]]:
    """A group file's document and, per run, `(config, parameters, training record)`."""
    from hooked_mlp.train_info import TrainInfo

    name = str(path)
    doc, tensors = read_safetensors(path, GROUP_KIND, _group_tensors(name))
    out = []
    for i in range(len(doc["runs"])):
        cfg = config_from(name, MLPConfig, doc["configs"][i], "model config")
        tcfg = config_from(name, TrainConfig, doc["train_configs"][i], "train config")
        params = {k[len("param."):]: v[i].clone() for k, v in tensors.items()
                  if k.startswith("param.")}
        history = {k: tensors[f"history.{k}"][i].tolist() for k in doc["history_keys"]}
        metrics = doc["metrics"][i] if isinstance(doc.get("metrics"), list) else {}
        prov = doc["provenance"][i] if isinstance(doc.get("provenance"), list) else {}
        out.append((cfg, params, TrainInfo(tcfg, tensors["train_mask"][i].clone(), history,
                                           dict(metrics), dict(prov))))
    return doc, out


# --------------------------------------------------------------------------- one cell
def find_run(doc: Mapping[str, Any], seed: int | None = None, **cell: Any) -> int:
    """The run of the cell whose axis values are `cell` (axes with one value may be left out)
    and of `seed` (may be left out when the sweep has one seed); a clear error otherwise."""
    spec = doc["spec"]
    cells, seeds = spec["cells"], spec["seeds"]
    axes = _axis_values(cells)
    unknown = sorted(set(cell) - set(axes))
    if unknown:
        raise ValueError(f"this sweep has no axis {', '.join(map(repr, unknown))}; its axes are "
                         f"{list(axes) or 'none (one cell)'}")
    missing = [a for a, values in axes.items() if a not in cell and len(values) > 1]
    if missing:
        raise ValueError(f"name the cell: give {', '.join(missing)} (values "
                         f"{'; '.join(f'{a}: {_values(axes[a])}' for a in missing)})")
    match = [i for i, c in enumerate(cells) if all(
        _same(c.get(a), cell.get(a, c.get(a))) for a in axes)]
    if not match:
        raise ValueError("no cell of this sweep has " + ", ".join(
            f"{a}={cell[a]!r}" for a in cell) + "; its values are " + "; ".join(
            f"{a}: {_values(v)}" for a, v in axes.items()))
    if len(match) > 1:  # only where explicit cells leave an axis out
        raise ValueError(f"{len(match)} cells match; give every axis of the cell")
    if seed is None:
        if len(seeds) > 1:
            raise ValueError(f"name the seed: this sweep has seeds {_values(seeds)}")
        seed = seeds[0]
    if seed not in seeds:
        raise ValueError(f"this sweep has no seed {seed!r}; its seeds are {_values(seeds)}")
    return run_of(doc, match[0], seeds.index(seed))


def _same(a: Any, b: Any) -> bool:
    """Axis values compare as numbers (1 == 1.0) but a bool is not a number."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _axis_values(cells: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    axes: dict[str, list[Any]] = {}
    for c in cells:
        for k, v in c.items():
            values = axes.setdefault(k, [])
            if not any(_same(v, w) for w in values):
                values.append(v)
    return axes


def _values(values: Sequence[Any]) -> str:
    return short(list(values)) if len(values) <= 12 else (
        f"{len(values)} values from {values[0]!r} to {values[-1]!r}")


def group_of(doc: Mapping[str, Any], run: int) -> int:
    for g, runs in enumerate(doc["groups"]):
        if run in runs:
            return g
    raise ValueError(f"run {run} is in no group of this sweep")


def load_sweep_model(folder: str | Path, seed: int | None = None, **cell: Any) -> HookedMLP:
    """One cell's trained model: `load_sweep_model(S, weight_decay=1.0, train_frac=0.6,
    seed=1)`. Its `train_info` holds the run's recipe, split, curves and final metrics, so every
    analysis works on it. Refuses a cell whose group has not finished, a run that diverged, and a
    weights file that is not the one the spec describes."""
    from hooked_mlp.model import HookedMLP

    folder = Path(folder)
    doc = read_sweep_doc(folder)
    run = find_run(doc, seed, **cell)
    g = group_of(doc, run)
    if g not in finished_groups(folder, doc):
        raise ValueError(f"{folder}: the group of run {run} (group {g}) has not finished; "
                         "resume the sweep (hooked-mlp sweep --resume) first")
    row = _read_part(part_path(folder, g), doc, g).to_pylist()
    if next(r for r in row if r["run"] == run).get("diverged"):
        raise ValueError(f"run {run} diverged (its loss became NaN or infinite): it has no "
                         "weights")
    path = weights_path(folder, g)
    gdoc, members = read_group(path)
    if run not in gdoc["runs"]:
        raise CheckpointError(str(path), f"holds runs {short(gdoc['runs'])}, not run {run}")
    cfg, params, info = members[gdoc["runs"].index(run)]
    spec = doc["spec"]
    want_seed = spec["seeds"][run % len(spec["seeds"])]
    want_cell = spec["cells"][run // len(spec["seeds"])]
    recorded = {**cfg.to_dict(), **info.train_config.to_dict()}
    if info.train_config.seed != want_seed or any(
            not _same(recorded.get(k), v) for k, v in want_cell.items()):
        raise CheckpointError(str(path), f"run {run}'s recorded recipe is not cell {want_cell} "
                              f"with seed {want_seed}")
    return HookedMLP.from_params(cfg, params, train_info=info)
