"""Whole jobs, callable from Python: each trains or measures, and writes its files and page.
The command line (`hooked_mlp.cli`) calls them too.

    from hooked_mlp import sweep, MLPConfig, TrainConfig
    table = sweep({"weight_decay": [0.1, 1.0, 2.0], "train_frac": [0.3, 0.6]}, seeds=range(2),
                  model=MLPConfig(p=23, d_hidden=48),
                  recipe=TrainConfig(epochs=600, batch_size=4096, lr=0.01),
                  out="S", engine="local", progress=True)   # pandas.DataFrame, one row per run
    table = resume_sweep("S")                                 # after an interruption
    sweep_page("S", axes=("train_frac", "weight_decay"))      # S/sweep.html again
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hooked_mlp.config import MLPConfig, TrainConfig

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["explore", "resume_sweep", "sweep", "sweep_page"]


def sweep(grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
          seeds: Iterable[int] | None = None, *, model: MLPConfig | None = None,
          recipe: TrainConfig | None = None, out: str | Path, engine: str = "local",
          workers: int | None = None, device: str = "cpu", ray_address: str | None = None,
          snapshots: str | Sequence[int] | None = None, backend: str = "auto",
          threshold: float = 0.9, gap: int = 1000, group_size: int | None = None,
          resume: bool = False, progress: bool = True, page: bool = True,
          page_axes: Sequence[str] | None = None, command: str | None = None) -> pd.DataFrame:
    """Train every cell of `grid` (a dict `{field: [values]}` over any `MLPConfig` or
    `TrainConfig` field, or a list of explicit cells `[{field: value}, ...]`) for each seed,
    with `model` and `recipe` giving every other field; write the sweep folder `out`
    (`hooked_mlp.files.sweeps`) and its page `out/sweep.html`; return the results table, one row
    per run (`hooked_mlp.training.sweep_run` lists the columns).

    Everything is checked before any training; a bad axis or value is refused naming it.
    `engine`: `"local"` (this machine's cores: `workers` processes) or `"ray"` (the cluster at
    `ray_address`, or a local Ray instance). `snapshots` (`"log:32"`, ...) keeps each run's
    weights at those epochs, a run folder per cell for `hooked-mlp dynamics`. `threshold` and
    `gap` are Liu et al.'s rule for the phase (`analyses.experiments.sweep`). `resume=True`
    continues an interrupted sweep of the same spec in `out` (a different spec or code version
    is refused). `group_size`: runs per group (a task, a results part); default 64.
    With `page` (the default) the phase diagrams are written to `out/sweep.html`
    (`analyses.pages.sweep`); `page_axes` names its two axes (default the first two).
    """
    from analyses.experiments.sweep import SweepMeasures
    from hooked_mlp.training.sweep import DEFAULT_GROUP_SIZE, make_spec
    from hooked_mlp.training.sweep_run import run_sweep

    measure = SweepMeasures(threshold, gap)
    spec = make_spec(grid, seeds, model, recipe, snapshots, backend, measure.params())
    run_sweep(out, spec, measure, engine=engine, workers=workers, device=device,
              ray_address=ray_address, progress=progress,
              group_size=DEFAULT_GROUP_SIZE if group_size is None else group_size,
              resume=resume, command=command)
    return _finish(out, page, page_axes)


def resume_sweep(folder: str | Path, *, engine: str = "local", workers: int | None = None,
                 device: str = "cpu", ray_address: str | None = None, progress: bool = True,
                 page: bool = True, page_axes: Sequence[str] | None = None) -> pd.DataFrame:
    """Continue the sweep in `folder` with its own spec (`sweep.json`): only the groups without
    results are trained; then the page is written and the whole table returned. Refuses a folder
    that holds no sweep, and one written by other code."""
    from analyses.experiments.sweep import SweepMeasures
    from hooked_mlp.files.sweeps import read_sweep_doc
    from hooked_mlp.training.sweep import SweepSpec
    from hooked_mlp.training.sweep_run import run_sweep

    doc = read_sweep_doc(folder)
    try:
        spec = SweepSpec.from_dict(doc["spec"])
        measure = SweepMeasures(**(spec.measures or {}))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{Path(folder) / 'sweep.json'}: corrupt sweep spec ({e})") from None
    run_sweep(folder, spec, measure, engine=engine, workers=workers, device=device,
              ray_address=ray_address, progress=progress, resume=True,
              command=doc.get("command"))
    return _finish(folder, page, page_axes)


def sweep_page(folder: str | Path, axes: Sequence[str] | None = None,
               curves: Sequence[Mapping[str, Any]] | None = None) -> Path:
    """(Re)write `folder/sweep.html` from the folder's results alone: the phase diagram over
    `axes` (two axis names; default the first two), the validation accuracy and grok epoch
    heatmaps, the curves of a few cells (`curves`: cells as `{axis: value, "seed": s}`; default
    a few chosen from the results), and the whole table."""
    from analyses.pages.sweep import write_sweep_page

    return write_sweep_page(folder, axes=axes, curves=curves)


def _finish(folder: str | Path, page: bool, page_axes: Sequence[str] | None) -> pd.DataFrame:
    from hooked_mlp.files.sweeps import read_results

    if page:
        sweep_page(folder, page_axes)
    return read_results(folder)


def explore(source: str | Path | None = None, out: str | Path = "explore", *,
            seed: int | None = None, title: str | None = None, max_cells: int = 16,
            command: str | None = None) -> Path:
    """Write the explorer's offline page `out/explorer.html` (`analyses.pages.explorer`) for
    `source`: a checkpoint file (one model), a snapshots file or a run folder holding snapshots
    (the series; `seed` picks one of several), a run folder of finished models (its model of
    `seed`), or a sweep folder (its phase diagram and up to `max_cells` cells' runs). Default:
    the shipped seed-0 model. The page's path."""
    from analyses.pages.explorer import write_explorer_page
    from hooked_mlp.files.layout import model_files, series_files

    if source is None:
        from hooked_mlp.files.checkpoints import load_pretrained

        return write_explorer_page(load_pretrained(seed or 0), out, command=command,
                                   title=title or f"shipped seed {seed or 0}")
    path = Path(source)
    name = title or path.name
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder (give a checkpoint, a run folder or a "
                         "sweep folder)")
    if path.is_dir():
        from hooked_mlp.files.sweeps import is_sweep_folder

        if is_sweep_folder(path):
            if seed is not None:
                raise ValueError(f"{path} is a sweep folder: its cells show the sweep's first "
                                 "seed; seed= applies to run folders")
            return write_explorer_page(path, out, title=title or f"sweep {path.name}",
                                       max_cells=max_cells, command=command)
        if series_files(path):
            return _explore_series(path, out, seed, name, command)
        models = dict(model_files(path))
        if not models:
            raise ValueError(f"{path} holds no hooked-mlp model (seed-<s>.safetensors), "
                             "snapshots or sweep")
        if seed is None and len(models) > 1:
            raise ValueError(f"{path} holds seeds {sorted(models)}: choose one with seed=")
        chosen = next(iter(models)) if seed is None else seed
        if chosen not in models:
            raise ValueError(f"{path} holds no model of seed {chosen} (seeds {sorted(models)})")
        return _explore_model(models[chosen], out, f"{name} seed {chosen}", command)
    if path.name.startswith("snapshots-"):
        return _explore_series(path, out, seed, name, command)
    if seed is not None:
        raise ValueError(f"{path} is one checkpoint; seed= chooses among a run folder's seeds")
    return _explore_model(path, out, name, command)


def _explore_model(path: Path, out: str | Path, title: str, command: str | None) -> Path:
    from analyses.pages.explorer import write_explorer_page
    from hooked_mlp.files.checkpoints import load

    return write_explorer_page(load(path), out, title=title, command=command, inputs=[path])


def _explore_series(path: Path, out: str | Path, seed: int | None, title: str,
                    command: str | None) -> Path:
    from analyses.pages.explorer import write_explorer_page
    from hooked_mlp.files.series import load_snapshots

    return write_explorer_page(load_snapshots(path, seed), out, title=title, command=command,
                               inputs=[path])
