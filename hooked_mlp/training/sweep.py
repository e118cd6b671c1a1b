"""A sweep's spec: a grid over any config fields (or a list of explicit cells) times seeds,
checked whole before any training, and its runs grouped into stacks that train together.

    spec = make_spec({"weight_decay": [0.1, 1.0, 2.0], "train_frac": [0.3, 0.6]}, seeds=range(2),
                     model=MLPConfig(p=23, d_hidden=48), recipe=TrainConfig(epochs=600))
    spec.runs[0]          # Run(run=0, cell=0, seed=0, cfg=MLPConfig(...), tcfg=TrainConfig(...))
    make_groups(spec)     # [[0, 1], [2, 3], ...]: runs that share a stack, in chunks

An axis is any field of `MLPConfig` or `TrainConfig` (but `seed`, which `seeds` gives, and the
runtime `device`); its values are checked by kind (a number, an integer, true or false, a name)
and then by the configs themselves, and a bad one is refused naming the axis. Cells are the
grid's product in axis order, the last axis fastest; runs are numbered cell by cell, seeds
innermost (`hooked_mlp.files.sweeps.run_of`).

Which runs share a stack is the trainer's `stack_key` (`hooked_mlp.training.state`): runs whose
parameters have the same shapes, with the same epochs and steps per epoch; their recipes (lr,
weight decay, betas, eps, initial scale, seed, split seed, train fraction) are held per run.
The engines that train the groups are `hooked_mlp.training.sweep_engines`; the run of a whole
sweep into its folder, and its resume, `hooked_mlp.training.sweep_run`.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

from hooked_mlp.checks import check_seeds
from hooked_mlp.config import MLPConfig, TrainConfig, role
from hooked_mlp.text import short

MAX_RUNS = 1_000_000  # runs in one sweep: each is a row, and a few KiB of weights at least
DEFAULT_GROUP_SIZE = 64  # runs in one group at most: what one task trains, and one results part
MAX_GROUP_SIZE = 100_000
NOT_AXES = {"seed": "seeds are given by seeds= (--seeds), not as an axis",
            "device": "the device is a runtime choice (device=, --device), not an axis"}


def _axis_fields() -> dict[str, tuple[type, str]]:
    """Every field that may be an axis: name -> (its config class, its kind)."""
    out = {}
    for cls in (MLPConfig, TrainConfig):
        for f in fields(cls):
            if f.name not in NOT_AXES and role(f) != "runtime":
                out[f.name] = (cls, str(f.type).replace(" ", ""))
    return out


AXIS_FIELDS = _axis_fields()
_KIND_WORDS = {"float": "a number", "int": "an integer", "bool": "true or false",
               "str": "a name", "int|None": "an integer or None"}


class Run(NamedTuple):
    """One run of a sweep: its number, its cell, its seed and its two configs."""

    run: int
    cell: int
    seed: int
    cfg: MLPConfig
    tcfg: TrainConfig


# --------------------------------------------------------------------------- values
def _axis_value(axis: str, value: Any) -> Any:
    """`value` as the plain Python value of `axis`'s kind (numpy scalars too), or a ValueError
    naming the axis."""
    kind = AXIS_FIELDS[axis][1]
    is_bool = isinstance(value, bool) or type(value).__name__ == "bool_"
    if kind == "float" and isinstance(value, numbers.Real) and not is_bool:
        return float(value)
    if kind in ("int", "int|None") and isinstance(value, numbers.Integral) and not is_bool:
        return int(value)
    if kind == "int|None" and value is None:
        return None
    if kind == "bool" and is_bool:
        return bool(value)
    if kind == "str" and isinstance(value, str):
        return value
    raise ValueError(f"grid axis {axis!r}: {short(value)} is not {_KIND_WORDS.get(kind, kind)}")


def _same(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _check_axis_name(name: Any) -> str:
    if not isinstance(name, str):
        raise ValueError(f"grid axis names must be config field names (strings), got "
                         f"{short(name)}")
    if name in NOT_AXES:
        raise ValueError(f"grid axis {name!r}: {NOT_AXES[name]}")
    if name not in AXIS_FIELDS:
        raise ValueError(f"grid axis {name!r} is not a field of MLPConfig or TrainConfig; "
                         f"the fields are {sorted(AXIS_FIELDS)}")
    return name


def _value_list(axis: str, values: Any) -> list[Any]:
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise ValueError(f"grid axis {axis!r} must be a list of values, got {short(values)}")
    out: list[Any] = []
    for v in values:
        v = _axis_value(axis, v)
        if any(_same(v, w) for w in out):
            raise ValueError(f"grid axis {axis!r} lists the value {v!r} twice")
        out.append(v)
        if len(out) > MAX_RUNS:
            raise ValueError(f"grid axis {axis!r} has more than {MAX_RUNS:,} values")
    if not out:
        raise ValueError(f"grid axis {axis!r} has no values")
    return out


def parse_grid(grid: Any) -> tuple[dict[str, list[Any]] | None, list[dict[str, Any]]]:
    """`(axes, cells)` of a grid `{field: [values]}` (axes in order, cells their product) or of
    a list of explicit cells `[{field: value, ...}, ...]` (axes None)."""
    if isinstance(grid, Mapping):
        axes = {_check_axis_name(k): _value_list(k, v) for k, v in grid.items()}
        n = math.prod(len(v) for v in axes.values())
        if n > MAX_RUNS:
            raise ValueError(f"the grid has {n:,} cells; a sweep takes at most {MAX_RUNS:,} runs")
        cells = [dict(zip(axes, values, strict=True))
                 for values in itertools.product(*axes.values())]
        return axes, cells
    if isinstance(grid, (str, bytes)) or not isinstance(grid, Sequence):
        raise ValueError("grid must be a dict of axes {field: [values, ...]} or a list of cells "
                         f"[{{field: value, ...}}, ...], got {short(grid)}")
    if not grid:
        raise ValueError("grid lists no cells")
    if len(grid) > MAX_RUNS:
        raise ValueError(f"grid lists {len(grid):,} cells; a sweep takes at most {MAX_RUNS:,}")
    cells = []
    for i, cell in enumerate(grid):
        if not isinstance(cell, Mapping):
            raise ValueError(f"grid cell {i} must be a dict {{field: value, ...}}, got "
                             f"{short(cell)}")
        c = {_check_axis_name(k): _axis_value(k, v) for k, v in cell.items()}
        for j, other in enumerate(cells):
            if c.keys() == other.keys() and all(_same(c[k], other[k]) for k in c):
                raise ValueError(f"grid cells {j} and {i} are the same cell {short(c)}")
        cells.append(c)
    return None, cells


def grid_from_text(items: Sequence[str], name: str = "grid") -> dict[str, list[Any]]:
    """`["weight_decay=0.1,1", "train_frac=0.3,0.6"]` (the command line's `--grid` flags) as
    `{field: [values]}`, each value read as its field's kind (a number, an integer, true or
    false, a name, `none`); a bad item is refused naming the axis. `parse_grid` checks the rest
    (repeated values, the configs)."""
    readers: dict[str, Any] = {"float": float, "int": int, "str": str,
                               "int|None": lambda t: None if t.lower() == "none" else int(t),
                               "bool": lambda t: {"true": True, "false": False}[t.lower()]}
    grid: dict[str, list[Any]] = {}
    for item in items:
        axis, eq, text = item.partition("=")
        axis = axis.strip().replace("-", "_")
        if not eq or not axis or not text.strip():
            raise ValueError(f"{name} {short(item)}: expected FIELD=V1,V2,... (e.g. {name} "
                             "weight_decay=0.1,1,2)")
        if axis in grid:
            raise ValueError(f"{name} names the axis {axis!r} twice")
        if axis in ("seed", "seeds"):
            raise ValueError("seeds are given by --seeds, not as a grid axis")
        _check_axis_name(axis)
        kind = AXIS_FIELDS[axis][1]
        values = []
        for part in text.split(","):
            part = part.strip()
            try:
                values.append(readers[kind](part))
            except (ValueError, KeyError):
                raise ValueError(f"{name} {axis}: {short(part)} is not "
                                 f"{_KIND_WORDS.get(kind, kind)}") from None
        grid[axis] = values
    return grid


def cell_configs(model: MLPConfig, recipe: TrainConfig, cell: Mapping[str, Any],
                 seed: int) -> tuple[MLPConfig, TrainConfig]:
    """The model and recipe of one cell and seed (a bad combination raises naming the cell)."""
    m = {k: v for k, v in cell.items() if AXIS_FIELDS[k][0] is MLPConfig}
    t = {k: v for k, v in cell.items() if AXIS_FIELDS[k][0] is TrainConfig}
    try:
        return replace(model, **m), replace(recipe, **t, seed=seed)
    except ValueError as e:
        named = [k for k in cell if f".{k} " in str(e) or f".{k}=" in str(e)]
        where = f"grid axis {named[0]!r}" if len(named) == 1 and len(cell) > 0 else \
            f"grid cell {short(dict(cell))}"
        raise ValueError(f"{where}: {e}") from None


# --------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class SweepSpec:
    """What a sweep trains and measures: every field of it is part of the folder's identity
    (`sweep.json`): a resume with any other value is refused.

    `measures` holds the measurement's own arguments (Liu's threshold and gap, ...), opaque
    here: the caller's measure reads them.
    """

    model: MLPConfig
    recipe: TrainConfig
    axes: dict[str, list[Any]] | None
    cells: list[dict[str, Any]]
    seeds: list[int]
    snapshots: str | list[int] | None = None
    backend: str = "auto"
    measures: dict[str, Any] | None = None

    @property
    def n_runs(self) -> int:
        return len(self.cells) * len(self.seeds)

    @property
    def axis_names(self) -> list[str]:
        """The axes in order: the grid's, or every field the explicit cells name."""
        if self.axes is not None:
            return list(self.axes)
        return list(dict.fromkeys(k for c in self.cells for k in c))

    @property
    def runs(self) -> list[Run]:
        out = []
        for c, cell in enumerate(self.cells):
            for k, seed in enumerate(self.seeds):
                cfg, tcfg = cell_configs(self.model, self.recipe, cell, seed)
                out.append(Run(c * len(self.seeds) + k, c, seed, cfg, tcfg))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON for `sweep.json` (the recipe's own seed is left out: `seeds` gives them)."""
        recipe = self.recipe.to_dict()
        del recipe["seed"]
        return {"model": self.model.to_dict(), "recipe": recipe, "axes": self.axes,
                "cells": self.cells, "seeds": self.seeds, "snapshots": self.snapshots,
                "backend": self.backend, "measures": self.measures}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepSpec:
        """The spec of a `sweep.json` (`to_dict`), checked again as a new one is."""
        grid = data.get("axes") if data.get("axes") is not None else data.get("cells")
        return make_spec(grid, data.get("seeds"), MLPConfig.from_dict(data.get("model")),
                         TrainConfig.from_dict(data.get("recipe")), data.get("snapshots"),
                         data.get("backend", "auto"), data.get("measures"))


def make_spec(grid: Any, seeds: Iterable[int] | None = None, model: MLPConfig | None = None,
              recipe: TrainConfig | None = None, snapshots: str | Sequence[int] | None = None,
              backend: str = "auto", measures: Mapping[str, Any] | None = None) -> SweepSpec:
    """Check a sweep whole before any training: the grid (`parse_grid`), the seeds, every
    cell's configs, the snapshot spec against each cell's epochs, and the backend's name."""
    from hooked_mlp.data import n_train_pairs, valid_mask
    from hooked_mlp.training.backends import BACKENDS
    from hooked_mlp.training.snapshots import parse_snapshot_spec
    from hooked_mlp.training.trainer import check_configs

    model, recipe = check_configs(model, recipe, ("model", "recipe"))
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {short(backend)}")
    axes, cells = parse_grid(grid)
    seed_list = check_seeds([recipe.seed] if seeds is None else list(seeds))
    if len(cells) * len(seed_list) > MAX_RUNS:
        raise ValueError(f"{len(cells):,} cells x {len(seed_list):,} seeds is "
                         f"{len(cells) * len(seed_list):,} runs; a sweep takes at most "
                         f"{MAX_RUNS:,}")
    if isinstance(snapshots, Sequence) and not isinstance(snapshots, str):
        snapshots = list(snapshots)
    checked: set[Any] = set()
    for cell in cells:
        cfg, tcfg = cell_configs(model, recipe, cell, seed_list[0])
        key = (cfg, tcfg.epochs, tcfg.train_frac)
        if key in checked:
            continue
        checked.add(key)
        try:
            n_train_pairs(int(valid_mask(cfg).sum()), tcfg.train_frac)
            if snapshots is not None:
                parse_snapshot_spec(snapshots, tcfg.epochs)
        except (TypeError, ValueError) as e:
            raise ValueError(f"grid cell {short(cell)}: {e}") from None
    recipe = replace(recipe, seed=0)
    return SweepSpec(model, recipe, axes, cells, seed_list, snapshots, backend,
                     dict(measures) if measures is not None else None)


# --------------------------------------------------------------------------- stacks
def make_groups(spec: SweepSpec, group_size: int = DEFAULT_GROUP_SIZE) -> list[list[int]]:
    """The runs of each group: runs of one stack (the trainer's `stack_key`: same parameter
    shapes, epochs and steps per epoch), in run order, in chunks of at most `group_size`; stacks
    in the order of their first run."""
    from hooked_mlp.training.state import stack_key

    if isinstance(group_size, bool) or not isinstance(group_size, int) or not (
            1 <= group_size <= MAX_GROUP_SIZE):
        raise ValueError(f"group_size must be an integer in [1, {MAX_GROUP_SIZE:,}], got "
                         f"{short(group_size)}")
    stacks: dict[Any, list[int]] = {}
    for run in spec.runs:
        stacks.setdefault(stack_key(run.cfg, run.tcfg), []).append(run.run)
    return [runs[i : i + group_size] for runs in stacks.values()
            for i in range(0, len(runs), group_size)]


# --------------------------------------------------------------------------- code version
# the sources whose code decides a run's numbers: the family's mathematics, the data and the
# whole training layer (the C kernel's source stands for the extension built from it)
_CORE_SOURCES = ("config.py", "family.py", "functional.py", "gradients.py", "data.py")


def code_version(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a sweep's numbers depend on besides its spec: hooked-mlp's and torch's versions and
    a hash of the sources that compute them (`extra`: the measurement's own, from the caller).
    A sweep folder is resumed only by the same code, and a Ray worker's results are taken only
    from it."""
    import torch

    from hooked_mlp import __version__

    root = Path(__file__).resolve().parent.parent
    files = [root / name for name in _CORE_SOURCES]
    files += sorted(p for p in (root / "training").iterdir() if p.suffix in (".py", ".c"))
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return {"hooked_mlp": __version__, "torch": torch.__version__,
            "training_code": "sha256:" + h.hexdigest()[:16], **dict(extra or {})}


def source_hash(paths: Iterable[Path]) -> str:
    """A short hash of some source files (for a caller's `code_version(extra=...)`)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(Path(path).name.encode())
        h.update(Path(path).read_bytes())
    return "sha256:" + h.hexdigest()[:16]
