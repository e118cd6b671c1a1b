"""The sweep page, `S/sweep.html`: phase diagrams of a sweep, drawn from its folder alone.

The page draws and formats a `SweepResult` (`analyses.experiments.sweep_folder.sweep_result`:
the folder's table, its phase diagram and a few runs' curves); given a folder, it reads one.

    from analyses.pages.sweep import write_sweep_page
    write_sweep_page("S")                       # S/sweep.html (hooked-mlp sweep --page S)

It shows the phase (Liu et al.'s rule, `analyses.experiments.sweep`) over two axes, seeds
aggregated (the majority phase, and the share that grokked written in each cell of small
grids), one panel per value of the other axes; the final validation accuracy and the grok epoch
(log colour scale) over the same axes; the training curves of a few cells (one of each phase
the sweep reached, read from the groups' weights files); and the whole results table. The page
is one self-contained file (figures as PNG data URIs), written atomically; it replaces only an
earlier sweep page. Figures are drawn with matplotlib's object API (no pyplot, no global
backend), as every page's are.

Colours follow the published phase diagrams (Liu et al. 2022): comprehension green, grokking
red, memorization blue, confusion grey; diverged runs black, cells without runs white.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from analyses.experiments.sweep import PHASES, PhaseDiagram
from analyses.experiments.sweep_folder import SweepResult, sweep_result
from analyses.figures import figure_png
from analyses.pages.render import now, render
from analyses.pages.writer import PageKind, write_page_file
from hooked_mlp.files.sweeps import PAGE_FILE

PHASE_COLOURS = {"comprehension": "#2ca02c", "grokking": "#d62728", "memorization": "#1f77b4",
                 "confusion": "#9e9e9e", "diverged": "#000000"}
MAX_ANNOTATED = 16  # cells per side up to which each cell's share that grokked is written
KIND = PageKind("sweep", files=(PAGE_FILE,))
TABLE_COLUMNS = ("run", "seed", "phase", "train_acc", "val_acc", "memorize_epoch", "grok_epoch",
                 "weight_norm", "n_frequencies", "ipr_mean", "train_seconds")


def _label(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _panels(d: PhaseDiagram, values: Sequence[np.ndarray] | None, title: str, *,
            phases: bool = False, log: bool = False, vmin: float | None = None,
            vmax: float | None = None) -> bytes:
    """One figure: a heatmap per facet of `values` (or of the majority phase)."""
    from matplotlib.colors import ListedColormap, LogNorm, Normalize

    n = len(d.facets)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    w = max(4.6, min(7.0, 0.32 * len(d.x_values) + 2.2))
    h = max(2.4, min(6.0, 0.28 * len(d.y_values) + 1.8))
    fig = Figure(figsize=(w * cols, h * rows))
    axs = fig.subplots(rows, cols, squeeze=False)
    order = [*PHASES, "diverged"]
    for k, facet in enumerate(d.facets):
        ax = axs[k // cols][k % cols]
        if phases:
            grid = np.array([[np.nan if p is None else order.index(p) for p in row]
                             for row in d.phase[k]], dtype=float)
            im = ax.imshow(grid, cmap=ListedColormap([PHASE_COLOURS[p] for p in order]),
                           norm=Normalize(-0.5, len(order) - 0.5), origin="lower",
                           aspect="auto", interpolation="nearest")
            if len(d.x_values) <= MAX_ANNOTATED and len(d.y_values) <= MAX_ANNOTATED:
                for (i, j), g in np.ndenumerate(d.grokked[k]):
                    if np.isfinite(g):
                        ax.text(j, i, f"{g:.0%}", ha="center", va="center", fontsize=7,
                                color="white")
        else:
            grid = np.asarray(values[k], dtype=float)
            finite = grid[np.isfinite(grid) & (grid > 0 if log else True)]
            if log and finite.size:
                norm = LogNorm(max(finite.min(), 1.0), max(finite.max(), finite.min() + 1.0))
            else:
                norm = Normalize(vmin, vmax)
            im = ax.imshow(np.where(np.isfinite(grid), grid, np.nan), cmap="viridis",
                           norm=norm, origin="lower", aspect="auto", interpolation="nearest")
            fig.colorbar(im, ax=ax, shrink=0.85)
        step_x = max(1, len(d.x_values) // 12)
        step_y = max(1, len(d.y_values) // 12)
        ax.set_xticks(range(0, len(d.x_values), step_x),
                      [_label(v) for v in d.x_values[::step_x]], rotation=45, fontsize=7)
        ax.set_yticks(range(0, len(d.y_values), step_y),
                      [_label(v) for v in d.y_values[::step_y]], fontsize=7)
        ax.set_xlabel(d.x)
        if d.y is not None:
            ax.set_ylabel(d.y)
        if facet:
            ax.set_title(", ".join(f"{a}={_label(v)}" for a, v in facet.items()), fontsize=9)
    for k in range(n, rows * cols):
        axs[k // cols][k % cols].axis("off")
    if phases:
        from matplotlib.patches import Patch

        fig.legend(handles=[Patch(color=PHASE_COLOURS[p], label=p) for p in order],
                   loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.14 if phases else 0, 1, 0.94))
    return figure_png(fig)


def _curves(curves: Sequence[Mapping[str, Any]]) -> tuple[bytes | None, list[str]]:
    """The train and validation accuracy curves of a few runs (`SweepResult.curves`)."""
    if not curves:
        return None, []
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.subplots()
    names = []
    for k, run in enumerate(curves):
        name = (", ".join(f"{a}={_label(v)}" for a, v in run["cell"].items())
                + f", seed {run['seed']}")
        names.append(name)
        colour = f"C{k}"
        epochs = np.arange(1, len(run["train_acc"]) + 1)
        ax.plot(epochs, run["train_acc"], color=colour, ls="--", lw=1)
        if run["val_acc"] is not None:
            ax.plot(epochs, run["val_acc"], color=colour, lw=1.5, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (dashed: train; solid: validation)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return figure_png(fig), names


def _cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    if isinstance(v, np.integer):
        return int(v)
    return v


def render_sweep_page(folder: str | Path | SweepResult, axes: Sequence[str] | None = None,
                      curves: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The page's HTML of a `SweepResult` (`analyses.experiments.sweep_folder.sweep_result`),
    or of the sweep folder `folder` read as one (`axes` and `curves` as it takes them)."""
    result = folder if isinstance(folder, SweepResult) else sweep_result(folder, axes, curves)
    diagram, table, names = result.diagram, result.table, result.axes
    figures: dict[str, bytes] = {}
    if diagram is not None:
        figures["phase"] = _panels(diagram, None, "phase", phases=True)
        figures["val_acc"] = _panels(diagram, diagram.val_acc, "final validation accuracy",
                                     vmin=0.0, vmax=1.0)
        if any(np.isfinite(g).any() for g in diagram.grok_epoch):
            figures["grok_epoch"] = _panels(diagram, diagram.grok_epoch, "grok epoch", log=True)
    curve_png, curve_names = _curves(result.curves)
    if curve_png is not None:
        figures["curves"] = curve_png
    header = ["run", *names, *TABLE_COLUMNS[1:]]
    rows = [[_cell(r.get(c)) for c in header] for r in table.to_dict("records")]
    spec = result.doc["spec"]
    return render("sweep.html.j2", kind="sweep", folder=str(result.folder), written=now(),
                  n_runs=result.n_runs, n_done=len(table), axes=names, seeds=spec["seeds"],
                  diagram=diagram, counts=result.counts, figures=figures,
                  curve_names=curve_names, header=header, rows=rows,
                  command=result.doc.get("command"),
                  fixed=[(k, v) for k, v in [*spec["model"].items(), *spec["recipe"].items()]
                         if k not in names],
                  measures=spec.get("measures"))


def write_sweep_page(folder: str | Path, axes: Sequence[str] | None = None,
                     curves: Sequence[Mapping[str, Any]] | None = None) -> Path:
    """Write `folder/sweep.html` atomically (replacing only an earlier sweep page)."""
    folder = Path(folder)
    return write_page_file(folder / PAGE_FILE, KIND, render_sweep_page(folder, axes, curves))


__all__ = ["PHASE_COLOURS", "render_sweep_page", "write_sweep_page"]
