"""A finished (or partly finished) sweep folder read as one result: what its page shows.

    from analyses.experiments.sweep_folder import sweep_result
    result = sweep_result("S")                  # the folder's sweep.json, results and weights
    result.diagram.phase; result.curves[0]["val_acc"]; result.summary()

`sweep_result(folder, axes=None, curves=None)` reads the folder (`hooked_mlp.files.sweeps`),
computes the phase diagram over `axes` (one or two of the sweep's axes; default the first two,
`analyses.experiments.sweep.phase_diagram`), and reads the training curves of a few runs from
the groups' weights files: `curves` names them (`{axis: value, ..., "seed": s}` each), by default
the first run of each phase the sweep reached. The sweep page (`analyses.pages.sweep`) only
draws and formats this result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyses._common import to_jsonable
from analyses.experiments.sweep import PHASES, PhaseDiagram, phase_diagram

MAX_CURVES = 4  # runs whose curves are read by default (one per phase reached)


@dataclass
class SweepResult:
    """A sweep folder's results table, its phase diagram and a few runs' training curves."""

    folder: Path
    doc: dict[str, Any]  # the folder's sweep.json
    table: Any  # pandas DataFrame, one row per finished run
    axes: list[str]  # the sweep's axes
    diagram: PhaseDiagram | None  # None when no run has finished (or there are no axes)
    curves: list[dict[str, Any]] = field(default_factory=list)  # cell, seed, train/val_acc

    @property
    def n_runs(self) -> int:
        spec = self.doc["spec"]
        return len(spec["cells"]) * len(spec["seeds"])

    @property
    def counts(self) -> dict[str, int]:
        """How many finished runs reached each phase."""
        return {str(k): int(v) for k, v in self.table["phase"].value_counts().items()} \
            if len(self.table) else {}

    def summary(self) -> dict[str, Any]:
        return {"n_runs": self.n_runs, "n_done": len(self.table), "axes": list(self.axes),
                "phases": self.counts,
                "diagram": None if self.diagram is None else self.diagram.summary()}

    def describe(self) -> str:
        phases = ", ".join(f"{k} {v}" for k, v in self.counts.items()) or "none yet"
        return (f"sweep {self.folder}: {len(self.table)} of {self.n_runs} runs done over "
                f"{', '.join(self.axes) or 'no axes'}; phases: {phases}")

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({**self.summary(), "folder": str(self.folder),
                            "rows": self.table.to_dict("records"), "curves": self.curves})


def chosen_runs(table: Any, axes: Sequence[str]) -> list[dict[str, Any]]:
    """The first run of each phase the sweep reached (diverged runs left out), at most
    `MAX_CURVES`, as `{axis: value, ..., "seed": s}`."""
    out = []
    for phase in PHASES:
        rows = table[table["phase"] == phase]
        if len(rows):
            r = rows.iloc[0]
            out.append({**{a: r[a] for a in axes}, "seed": int(r["seed"])})
    return out[:MAX_CURVES]


def run_curves(folder: Path, doc: Mapping[str, Any],
               cells: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The train and validation accuracy curves of the runs `cells` name, from the groups'
    weights files: `{"cell": {axis: value}, "seed", "train_acc", "val_acc"}` each."""
    from hooked_mlp.files.sweeps import find_run, group_of, read_group, weights_path

    out = []
    for cell in cells:
        seed = cell.get("seed")
        values = {a: v.item() if hasattr(v, "item") else v for a, v in cell.items()
                  if a != "seed"}
        run = find_run(doc, seed, **values)
        gdoc, members = read_group(weights_path(folder, group_of(doc, run)))
        history = members[gdoc["runs"].index(run)][2].history
        out.append({"cell": values, "seed": seed,
                    "train_acc": list(history.get("train_acc", [])),
                    "val_acc": list(history["val_acc"]) if "val_acc" in history else None})
    return out


def sweep_result(folder: str | Path, axes: Sequence[str] | None = None,
                 curves: Sequence[Mapping[str, Any]] | None = None) -> SweepResult:
    """The sweep folder `folder` as a `SweepResult` (see the module's text)."""
    from hooked_mlp.files.sweeps import read_results, read_sweep_doc

    folder = Path(folder)
    doc = read_sweep_doc(folder)
    table = read_results(folder)
    spec = doc["spec"]
    names = list(spec["axes"]) if spec.get("axes") else list(
        dict.fromkeys(k for c in spec["cells"] for k in c))
    if axes is not None and len(axes) not in (1, 2):
        raise ValueError(f"axes must name one or two of the sweep's axes {names}, got "
                         f"{list(axes)}")
    x = axes[0] if axes else None
    y = axes[1] if axes and len(axes) > 1 else None
    diagram = phase_diagram(table, names, x, y) if len(table) and names else None
    chosen = list(curves) if curves is not None else (
        chosen_runs(table, names) if len(table) else [])
    return SweepResult(folder, doc, table, names, diagram, run_curves(folder, doc, chosen))


__all__ = ["MAX_CURVES", "SweepResult", "chosen_runs", "run_curves", "sweep_result"]
