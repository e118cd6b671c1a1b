"""What a sweep measures of each run: when it memorised and when it generalised, its phase by
Liu et al.'s rule, its weight norm, and the Fourier structure of its neurons.

- `memorize_epoch`, `grok_epoch`: the first epoch (1-based) at which the per-epoch train, then
  validation, accuracy reaches `threshold` (0.9); null if it never does.
- `phase` (Liu et al. 2022, "Towards understanding grokking"): `comprehension` when both reach
  the threshold within the run's epochs less than `gap` (10^3) epochs apart, `grokking` when
  further apart, `memorization` when only train accuracy does, `confusion` when train accuracy
  never does (whatever validation accuracy did); `diverged` for a run whose loss became NaN or
  infinite (no numbers to classify), null for a run without a validation split.
- `weight_norm`: the total squared L2 norm of the final parameters
  (`analyses.dynamics.weight_norms`, as the dynamics page's `weight_norm`).
- `n_frequencies`, `ipr_mean`: the number of distinct dominant frequencies among the neurons one
  cosine explains, and the mean inverse participation ratio of the neurons' input spectra
  (`analyses.dynamics.neuron_measures`), where the member has residue Fourier structure (one
  hidden layer, one-hot inputs, an operation with a single-frequency relation, p with at least
  three frequencies; `analyses._common.fourier_structure`); null elsewhere.

`SweepMeasures(threshold, gap)` is what the sweep engine calls on each trained run, in the
process that trained it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from analyses._common import fourier_structure, headline, to_jsonable
from hooked_mlp.config import MLPConfig
from hooked_mlp.train_info import TrainInfo

PHASES = ("comprehension", "grokking", "memorization", "confusion")
DIVERGED = "diverged"
THRESHOLD = 0.9
GAP = 1000


def first_epoch(values: Sequence[float], threshold: float) -> int | None:
    """The first epoch (1-based: `values[i]` is epoch `i + 1`) with a value at or above
    `threshold`, or None."""
    for i, v in enumerate(values):
        if v >= threshold:
            return i + 1
    return None


def classify_phase(memorize_epoch: int | None, grok_epoch: int | None, gap: float = GAP) -> str:
    """Liu et al.'s phase from the epochs at which train and validation accuracy first reach
    the threshold (None: never): see the module's docstring."""
    if memorize_epoch is None:
        return "confusion"
    if grok_epoch is None:
        return "memorization"
    return "comprehension" if grok_epoch - memorize_epoch < gap else "grokking"


def check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (
            0 < threshold <= 1):
        raise ValueError(f"threshold must be an accuracy in (0, 1], got {threshold!r}")
    return float(threshold)


def check_gap(gap: Any) -> int:
    if isinstance(gap, bool) or not isinstance(gap, int) or gap < 1:
        raise ValueError(f"gap must be a positive number of epochs, got {gap!r}")
    return gap


def history_phase(history: dict[str, list[float]], threshold: float = THRESHOLD,
                  gap: int = GAP) -> tuple[int | None, int | None, str | None]:
    """`(memorize_epoch, grok_epoch, phase)` of a run's per-epoch `history` (`train_acc`,
    `val_acc`); without a validation split the last two are None."""
    mem = first_epoch(history.get("train_acc", []), threshold)
    if "val_acc" not in history:
        return mem, None, None
    grok = first_epoch(history["val_acc"], threshold)
    return mem, grok, classify_phase(mem, grok, gap)


@dataclass(frozen=True)
class SweepMeasures:
    """The measure columns of a sweep's table, computed from each run's final parameters and
    record (`threshold` and `gap`: Liu et al.'s rule, above)."""

    threshold: float = THRESHOLD
    gap: int = GAP

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold", check_threshold(self.threshold))
        object.__setattr__(self, "gap", check_gap(self.gap))

    columns = (("memorize_epoch", "int64"), ("grok_epoch", "int64"), ("phase", "string"),
               ("weight_norm", "float64"), ("n_frequencies", "int64"), ("ipr_mean", "float64"))

    def params(self) -> dict[str, Any]:
        """The arguments, as a sweep's spec records them."""
        return {"threshold": self.threshold, "gap": self.gap}

    def __call__(self, cfg: MLPConfig, params: dict[str, Tensor], info: TrainInfo
                 ) -> dict[str, Any]:
        from analyses.dynamics import neuron_measures, weight_norms
        from hooked_mlp.model import HookedMLP

        mem, grok, phase = history_phase(info.history, self.threshold, self.gap)
        model = HookedMLP.from_params(cfg, params)
        row: dict[str, Any] = {"memorize_epoch": mem, "grok_epoch": grok, "phase": phase,
                               "weight_norm": weight_norms(model)["total"],
                               "n_frequencies": None, "ipr_mean": None}
        if has_fourier_structure(cfg):
            summary = neuron_measures(model).summary()
            row["n_frequencies"] = int(summary["n_frequencies"])
            ipr = float(summary["ipr_mean"])
            row["ipr_mean"] = ipr if math.isfinite(ipr) else None  # every neuron constant
        return row

    def diverged(self) -> dict[str, Any]:
        """The row of a run that diverged: its phase says so; it has no other numbers."""
        return {name: None for name, _ in self.columns} | {"phase": DIVERGED}

    def code(self) -> dict[str, str]:
        """The version of the code behind these columns (part of a sweep's code version)."""
        from hooked_mlp.training.sweep import source_hash

        here = Path(__file__).resolve().parent.parent
        files = [Path(__file__), here / "dynamics.py", here / "fourier.py", here / "_common.py"]
        return {"measures": source_hash(files)}


def has_fourier_structure(cfg: MLPConfig) -> bool:
    """Whether a member's neurons have residue Fourier structure to count (see the module)."""
    return (cfg.n_layers == 1 and cfg.input_encoding == "one_hot"
            and fourier_structure(cfg) is None)


# --------------------------------------------------------------------------- the diagram
@dataclass(frozen=True)
class PhaseDiagram:
    """A sweep's results over two axes, seeds aggregated, one panel per value of the other
    axes (`facets`). Each panel's arrays are `[len(y_values), len(x_values)]`, NaN (or None)
    where the sweep has no run: `phase` the majority phase of the cell's seeds (ties go to
    the phase listed first in `PHASES`, then `diverged`), `grokked` the share of its seeds that
    grokked, `val_acc` their mean final validation accuracy, `grok_epoch` their median grok
    epoch (over the seeds that reached it), `n` the seeds counted."""

    x: str
    y: str | None
    x_values: list[Any]
    y_values: list[Any]
    facets: list[dict[str, Any]]
    phase: list[list[list[str | None]]]
    grokked: list[np.ndarray]
    val_acc: list[np.ndarray]
    grok_epoch: list[np.ndarray]
    n: list[np.ndarray]

    def summary(self) -> dict[str, Any]:
        """The axes, how many values each has, the panels, the runs counted and the cells of
        each majority phase."""
        return headline({"x": self.x, "y": self.y, "n_x": len(self.x_values),
                         "n_y": len(self.y_values), "n_panels": len(self.facets),
                         "n_runs": int(sum(np.nansum(n) for n in self.n)),
                         "phase_cells": self.counts()})

    def to_dict(self) -> dict[str, Any]:
        """Every panel's arrays (NaN as None), its facet, and the axes' values."""
        return to_jsonable({k: getattr(self, k) for k in (
            "x", "y", "x_values", "y_values", "facets", "phase", "grokked", "val_acc",
            "grok_epoch", "n")})

    def counts(self) -> dict[str, int]:
        """Cells (not runs) of each majority phase, over every panel."""
        out: dict[str, int] = {}
        for panel in self.phase:
            for row in panel:
                for p in row:
                    if p is not None:
                        out[p] = out.get(p, 0) + 1
        return out


def _ordered(values: Sequence[Any]) -> list[Any]:
    uniq = list(dict.fromkeys(values))
    try:
        return sorted(uniq)
    except TypeError:  # mixed kinds (None among numbers): the order they came in
        return uniq


def majority_phase(phases: Sequence[str | None]) -> str | None:
    """The most common phase of some runs (ties: the first in `PHASES`, then diverged)."""
    order = [*PHASES, DIVERGED]
    counted = [p for p in phases if p is not None]
    if not counted:
        return None
    return max(order, key=lambda p: (counted.count(p), -order.index(p))) if any(
        p in order for p in counted) else counted[0]


def phase_diagram(table: Any, axes: Sequence[str], x: str | None = None,
                  y: str | None = None) -> PhaseDiagram:
    """The phase diagram of a results `table` (a pandas DataFrame, `read_results`) whose
    axes are `axes` (in order), over `x` and `y` (default: the first two axes; one axis gives
    one row), with the remaining axes as facets."""
    axes = list(axes)
    if not axes:
        raise ValueError("a phase diagram needs at least one axis; this sweep has none")
    x = axes[0] if x is None else x
    y = (axes[1] if len(axes) > 1 else None) if y is None else y
    for name, value in (("x", x), ("y", y)):
        if value is not None and value not in axes:
            raise ValueError(f"phase diagram axis {name}={value!r} is not an axis of this "
                             f"sweep; its axes are {axes}")
    if x == y:
        raise ValueError(f"the phase diagram's two axes must differ, got {x!r} twice")
    rows = table.to_dict("records")
    xs = _ordered([r[x] for r in rows])
    ys = _ordered([r[y] for r in rows]) if y is not None else [None]
    others = [a for a in axes if a not in (x, y)]
    facets = [dict(zip(others, key, strict=True)) for key in
              dict.fromkeys(tuple(r[a] for a in others) for r in rows)]
    out: dict[str, list[Any]] = {k: [] for k in ("phase", "grokked", "val_acc", "grok", "n")}
    for facet in facets:
        shape = (len(ys), len(xs))
        phase = [[None] * len(xs) for _ in ys]
        grokked, val, grok, n = (np.full(shape, np.nan) for _ in range(4))
        cells: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for r in rows:
            if all(r[a] == v for a, v in facet.items()):
                cells.setdefault((ys.index(r[y]) if y is not None else 0, xs.index(r[x])),
                                 []).append(r)
        for (i, j), runs in cells.items():
            phase[i][j] = majority_phase([r["phase"] for r in runs])
            n[i, j] = len(runs)
            grokked[i, j] = sum(r["phase"] == "grokking" for r in runs) / len(runs)
            accs = [r["val_acc"] for r in runs if _finite(r["val_acc"])]
            val[i, j] = float(np.mean(accs)) if accs else np.nan
            epochs = [r["grok_epoch"] for r in runs if _finite(r["grok_epoch"])]
            grok[i, j] = float(np.median(epochs)) if epochs else np.nan
        for k, v in (("phase", phase), ("grokked", grokked), ("val_acc", val),
                     ("grok", grok), ("n", n)):
            out[k].append(v)
    return PhaseDiagram(x, y, xs, ys, facets, out["phase"], out["grokked"], out["val_acc"],
                        out["grok"], out["n"])


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float, np.number)) and math.isfinite(v)
