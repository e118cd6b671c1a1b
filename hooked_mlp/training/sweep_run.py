"""Running a sweep into its folder, and resuming it: no row lost, none doubled, no finished
group trained again.

`run_sweep(folder, spec, measure)` checks everything first (the spec is checked when it is
made: `hooked_mlp.training.sweep.make_spec`; here the folder, the engine and the device), locks
the folder, writes `sweep.json` (the spec, the groups, the table's columns, the code version),
and has an engine (`hooked_mlp.training.sweep_engines`) train the groups that have no results
part yet. As each group arrives, its snapshots, then its weights, then its results part are
written, each atomically (`hooked_mlp.files.sweeps`): the part is the group's commit. After a
kill at any moment, `run_sweep(..., resume=True)` on the same folder trains the other groups
only, and a folder whose spec or code version differs is refused, naming the difference.

The table's columns: `run`, `cell`, every axis by its field's name, `seed`, the final
`train_acc`, `val_acc`, `train_loss`, `val_loss` (on the whole splits; null without a
validation split), the measure's columns, `diverged`, `group`, `backend`, `device`, `threads`
(torch's threads while the group trained: the local engine's share of the cores, or the CPUs
Ray assigned the task), and `train_seconds` (the run's share of its group's training time) and
`group_seconds`. `threads` and the two timings are the only columns that can differ between two
sweeps of the same spec (`RUN_COLUMNS`); the numbers do not depend on the threads.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hooked_mlp.checks import check_device, cores
from hooked_mlp.files.layout import LOCK_FILE
from hooked_mlp.files.sweeps import (
    RESULTS_DIR,
    SNAPSHOTS_DIR,
    WEIGHTS_DIR,
    finished_groups,
    is_sweep_folder,
    read_sweep_doc,
    snapshots_dir,
    write_group_weights,
    write_part,
    write_sweep_doc,
)
from hooked_mlp.text import short
from hooked_mlp.training.sweep import (
    AXIS_FIELDS,
    DEFAULT_GROUP_SIZE,
    SweepSpec,
    code_version,
    make_groups,
)
from hooked_mlp.training.sweep_engines import (
    GroupResult,
    GroupTask,
    Measure,
    check_engine,
    cpu_split,
    import_ray,
    run_local,
    run_ray,
)

_ARROW = {"float": "float64", "int": "int64", "int|None": "int64", "bool": "bool",
          "str": "string"}
METRIC_COLUMNS = ("train_acc", "val_acc", "train_loss", "val_loss")
TIMING_COLUMNS = ("train_seconds", "group_seconds")
RUN_COLUMNS = ("threads", *TIMING_COLUMNS)  # how a group ran, not what it computed


class SweepLockedError(RuntimeError):
    """Another process is running a sweep into the same folder."""


def columns(spec: SweepSpec, measure: Measure | None) -> list[list[str]]:
    """The results table's columns `[[name, type], ...]` for `spec` and `measure`."""
    axes = [[a, _ARROW[AXIS_FIELDS[a][1]]] for a in spec.axis_names]
    own = [[c, t] for c, t in (measure.columns if measure is not None else [])]
    return [["run", "int64"], ["cell", "int64"], *axes, ["seed", "int64"],
            *([m, "float64"] for m in METRIC_COLUMNS), *own, ["diverged", "bool"],
            ["group", "int64"], ["backend", "string"], ["device", "string"],
            ["threads", "int64"], *([t, "float64"] for t in TIMING_COLUMNS)]


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    """Where two JSON values differ: `recipe.lr: 0.01 here, 0.003 in the folder`."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(dict.fromkeys([*old, *new])):
            out += _differences(old.get(key), new.get(key), f"{where}.{key}" if where else key)
        return out
    if old != new:
        return [f"{where or 'the spec'}: {short(new)} here, {short(old)} in the folder"]
    return []


def _prepare(folder: Path, spec: SweepSpec, doc_new: dict[str, Any], resume: bool
             ) -> dict[str, Any]:
    """The folder's `sweep.json` document: the existing one (resume, checked equal) or the new
    one (a new or empty folder)."""
    if is_sweep_folder(folder):
        doc = read_sweep_doc(folder)
        if not resume:
            raise ValueError(f"{folder} holds a sweep already: resume it (hooked-mlp sweep "
                             "--resume, or resume=True) or choose a new folder")
        diff = _differences(doc["spec"], doc_new["spec"])
        if diff:
            raise ValueError(f"{folder} holds another sweep ({'; '.join(diff[:3])}"
                             f"{'; ...' if len(diff) > 3 else ''}): choose a new folder")
        diff = _differences(doc["code"], doc_new["code"])
        if diff:
            raise ValueError(f"{folder} was written by other code ({'; '.join(diff[:2])}); "
                             "resuming would mix the numbers of two versions: finish it with "
                             "that version or start a new folder")
        return doc
    if folder.exists() and (not folder.is_dir() or any(
            p.name != LOCK_FILE for p in folder.iterdir())):
        what = "it holds other files and no sweep.json" if folder.is_dir() else "a file"
        raise ValueError(f"{folder} is not a sweep folder ({what}); choose an empty or new "
                         "folder")
    write_sweep_doc(folder, doc_new)
    return doc_new


def _remove_stale_temporaries(folder: Path) -> None:
    """The hidden temporaries a killed sweep left (`.group-<g>.parquet.<random>.tmp`, ...)."""
    for sub in (folder / RESULTS_DIR, folder / WEIGHTS_DIR, *(folder / SNAPSHOTS_DIR).glob("*")):
        if sub.is_dir() and not sub.is_symlink():
            for tmp in sub.glob(".*.tmp"):
                if tmp.is_file() and not tmp.is_symlink():
                    with contextlib.suppress(OSError):
                        tmp.unlink()


@contextlib.contextmanager
def _locked(folder: Path) -> Any:
    from hooked_mlp.training.runs import RunLock, RunLockedError

    try:
        with RunLock(folder) as lock:
            yield lock
    except RunLockedError:
        raise SweepLockedError(f"another hooked-mlp sweep is writing to {folder}; wait for it to "
                               "finish or choose another folder") from None


def run_sweep(folder: str | Path, spec: SweepSpec, measure: Measure | None = None, *,
              engine: str = "local", workers: int | None = None, device: str = "cpu",
              ray_address: str | None = None, progress: bool = True,
              group_size: int = DEFAULT_GROUP_SIZE, resume: bool = False,
              command: str | None = None) -> Path:
    """Train every run of `spec` not yet in `folder`'s results, writing each group's files as
    it finishes; returns the folder. See the module's docstring.

    `workers`: local processes (default: one per core, at most one per group; each gives the
    trainer its share of the cores as threads) or, with Ray, ignored (the cluster decides) but
    for the CPUs each task asks for (`cores // workers`, default 1). `device="cuda"` trains
    the groups one after another on the GPU, where big stacks fill it.
    """
    folder = Path(folder)
    if not isinstance(spec, SweepSpec):
        raise TypeError(f"spec must be a SweepSpec (make_spec), got {type(spec).__name__}")
    check_engine(engine, workers, ray_address)
    if engine == "ray":
        import_ray()  # a missing extra is said before the folder is touched
    dev = check_device(device)
    cols = columns(spec, measure)
    doc_new = {"spec": spec.to_dict(), "groups": make_groups(spec, group_size),
               "columns": cols, "code": code_version(measure.code() if measure else None),
               "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "command": command}
    with _locked(folder):
        doc = _prepare(folder, spec, doc_new, resume)
        _remove_stale_temporaries(folder)
        groups = doc["groups"]
        todo = [g for g in range(len(groups)) if g not in finished_groups(folder, doc)]
        if dev.type == "cuda":
            n_workers, threads = 1, 1
        elif engine == "ray":
            n_workers, threads = 0, max(1, cores() // workers) if workers else 1
        else:
            n_workers, threads = cpu_split(len(todo), workers, cores())
        runs = spec.runs
        tasks = [GroupTask(g, [runs[r] for r in groups[g]], str(dev), threads, spec.backend,
                           spec.snapshots, measure) for g in todo]
        writer = _Writer(folder, spec, doc, cols, tasks, progress)
        with writer:
            if engine == "ray":
                run_ray(tasks, writer, ray_address, writer.add_epochs)
            else:
                run_local(tasks, n_workers, writer, writer.add_epochs)
    return folder


class _Writer:
    """Writes each finished group's files (snapshots, weights, then the results part) and keeps
    the progress bars: runs, and run-epochs, over the whole sweep."""

    def __init__(self, folder: Path, spec: SweepSpec, doc: dict[str, Any],
                 cols: Sequence[Sequence[str]], tasks: Sequence[GroupTask], progress: bool
                 ) -> None:
        self.folder, self.spec, self.doc, self.cols = folder, spec, doc, cols
        self.tasks = {t.group: t for t in tasks}
        self.progress = progress
        n_runs = spec.n_runs
        left = sum(len(t.runs) for t in tasks)
        epochs = {r.run: r.tcfg.epochs for r in spec.runs}
        self.total_epochs = sum(epochs.values())
        self.done_epochs = self.total_epochs - sum(epochs[r.run] for t in tasks for r in t.runs)
        # epochs already on the bar for each unfinished group (its worker's reports)
        self.epochs_told: dict[int, int] = {}
        self.n_runs, self.runs_done = n_runs, n_runs - left
        self.bars: list[Any] = []

    def __enter__(self) -> _Writer:
        from tqdm import tqdm

        kw = {"disable": not self.progress, "dynamic_ncols": True, "file": sys.stderr}
        self.bars = [tqdm(total=self.n_runs, initial=self.runs_done, desc="sweep runs",
                          unit="run", position=0, **kw),
                     tqdm(total=self.total_epochs, initial=self.done_epochs, desc="run-epochs",
                          unit="ep", unit_scale=True, position=1, **kw)]
        return self

    def __exit__(self, *exc: object) -> None:
        for bar in self.bars:
            bar.close()

    def add_epochs(self, group: int, n: int) -> None:
        """A worker's report: `n` more run-epochs of `group` done."""
        self.epochs_told[group] = self.epochs_told.get(group, 0) + n
        self.bars[1].update(n)

    def __call__(self, result: GroupResult) -> None:
        task = self.tasks.get(result.group)
        if task is None:
            raise RuntimeError(f"a result came back for group {result.group}, which this sweep "
                               "did not send")
        if result.code != self.doc["code"]:
            diff = _differences(self.doc["code"], result.code)
            raise RuntimeError(f"group {result.group} was trained by other code "
                               f"({'; '.join(diff[:2])}): the sources changed while the sweep "
                               "ran, or a Ray node has another hooked-mlp installed; resume the "
                               "sweep with one version everywhere")
        trained = [(run, o) for run, o in zip(task.runs, result.runs, strict=True)
                   if o.params is not None]
        for run, o in trained:
            if o.snapshots is not None:
                self._write_snapshots(run, o)
        if trained:
            write_group_weights(self.folder, result.group, [r.run for r, _ in trained],
                                [r.cfg for r, _ in trained], [o.params for _, o in trained],
                                [o.info for _, o in trained])
        rows = [self._row(run, o, result) for run, o in zip(task.runs, result.runs,
                                                             strict=True)]
        write_part(self.folder, result.group, rows, self.cols)
        self.runs_done += len(task.runs)
        epochs = sum(r.tcfg.epochs for r in task.runs)
        told = self.epochs_told.get(result.group, 0)
        self.bars[0].update(len(task.runs))
        self.bars[1].update(max(0, epochs - told))

    def _write_snapshots(self, run: Any, outcome: Any) -> None:
        from hooked_mlp.files.layout import series_file
        from hooked_mlp.files.series import SnapshotSeries, write_series

        epochs, params = outcome.snapshots
        series = SnapshotSeries(run.cfg, epochs, params, outcome.info)
        cell = self.spec.cells[run.cell]
        write_series(series_file(snapshots_dir(self.folder, cell, run.cell), run.seed), series)

    def _row(self, run: Any, outcome: Any, result: GroupResult) -> dict[str, Any]:
        row: dict[str, Any] = {"run": run.run, "cell": run.cell}
        for axis in self.spec.axis_names:
            owner = run.cfg if AXIS_FIELDS[axis][0] is type(run.cfg) else run.tcfg
            row[axis] = getattr(owner, axis)
        row["seed"] = run.seed
        metrics = outcome.info.metrics if outcome.info is not None else {}
        for m in METRIC_COLUMNS:
            row[m] = metrics.get(m)
        row.update(outcome.measures)
        n = len(result.runs)
        row.update(diverged=outcome.params is None, group=result.group, backend=result.backend,
                   device=result.device, threads=result.threads, train_seconds=result.seconds / n,
                   group_seconds=result.seconds)
        return row
