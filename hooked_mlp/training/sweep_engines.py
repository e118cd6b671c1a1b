"""The engines that train a sweep's groups: this machine's cores, or a Ray cluster.

A group (`GroupTask`) is runs of one stack; `train_group` trains it with the stacked trainer
(`hooked_mlp.training.train_stack`) and measures each run (the caller's `measure`), wherever it
runs, and returns plain tensors and numbers (`GroupResult`): the driver writes every file, so
Ray workers need no shared disk.

- `local` (the default): groups in worker processes (`concurrent.futures`, spawned), each with
  its share of the cores as the trainer's threads; with one worker, in this process. A worker
  that dies takes its pool with it: the unfinished groups are sent again to a new pool, up to
  `retries` times.
- `ray`: one Ray task per group (`ray.wait` collects them as they finish), each asking for
  `threads` CPUs and setting torch's threads to the CPUs Ray gave it. A task whose worker dies
  is run again by Ray (`max_retries`); a result from other code (another hooked-mlp on some
  node) is refused. Ray is an optional extra: `pip install 'hooked-mlp[ray]'`.

A run whose loss becomes NaN or infinite is recorded as diverged (no weights, no measures):
the trainer stops a stack at the first non-finite loss, so the group is split in halves and each
half trained again (a run's numbers do not depend on the runs beside it) until the diverging
runs are alone.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import Any, Protocol

from torch import Tensor

from hooked_mlp.config import MLPConfig
from hooked_mlp.text import one_line
from hooked_mlp.train_info import TrainInfo
from hooked_mlp.training.sweep import Run, code_version

ENGINES = ("local", "ray")
RAY_EXTRA = "pip install 'hooked-mlp[ray]'"
REPORT_EVERY_S = 0.5  # how often a worker reports its epochs to the progress bar


class Measure(Protocol):
    """What a sweep measures of each trained run (`analyses.experiments.sweep.SweepMeasures`):
    `columns` `[(name, type), ...]`, a row of them per run, the row of a run that diverged, and
    the version of the code that measures (part of the sweep's code version)."""

    columns: Sequence[tuple[str, str]]

    def __call__(self, cfg: MLPConfig, params: dict[str, Tensor], info: TrainInfo
                 ) -> dict[str, Any]: ...

    def diverged(self) -> dict[str, Any]: ...

    def code(self) -> dict[str, str]: ...


@dataclass
class GroupTask:
    """One group to train: its runs and how (device, threads, backend, snapshots, measure)."""

    group: int
    runs: list[Run]
    device: str
    threads: int
    backend: str
    snapshots: Any
    measure: Measure | None


@dataclass
class RunOutcome:
    """One trained run: parameters (None if it diverged), its record (without snapshots), its
    measures, and its snapshots `(epochs, {name: [n, *shape]})` when the sweep keeps them."""

    run: int
    params: dict[str, Tensor] | None
    info: TrainInfo | None
    measures: dict[str, Any]
    snapshots: tuple[list[int], dict[str, Tensor]] | None = None


@dataclass
class GroupResult:
    group: int
    runs: list[RunOutcome]
    seconds: float  # training, the whole group (diverged halves retrained included)
    backend: str
    device: str
    code: dict[str, str]
    threads: int = 1  # torch's intra-op threads while the group trained


# --------------------------------------------------------------------------- one group
def train_group(task: GroupTask, report: Callable[[int, int], None] | None = None
                ) -> GroupResult:
    """Train and measure one group (in whichever process runs it). `report(group, n)` is told
    of `n` more run-epochs of the group now and then."""
    import torch

    from hooked_mlp.training.trainer import TrainingDivergedError, torch_threads

    start = time.perf_counter()
    with torch_threads(task.threads):
        threads = torch.get_num_threads()
        tell = None if report is None else (lambda n: report(task.group, n))
        trained = _train_or_split(task, task.runs, tell, TrainingDivergedError)
        seconds = time.perf_counter() - start
        outcomes, backend = [], "none"
        for run, done in zip(task.runs, trained, strict=True):
            if done is None:
                m = task.measure.diverged() if task.measure is not None else {}
                outcomes.append(RunOutcome(run.run, None, None, m))
                continue
            params, info = done
            backend = str(info.provenance.get("backend", backend))
            series = info.snapshots
            info = replace(info, snapshots=None)
            m = task.measure(run.cfg, params, info) if task.measure is not None else {}
            snaps = None if series is None else (list(series.epochs), dict(series.params))
            outcomes.append(RunOutcome(run.run, params, info, m, snaps))
    extra = task.measure.code() if task.measure is not None else None
    return GroupResult(task.group, outcomes, seconds, backend, task.device, code_version(extra),
                       threads)


def _train_or_split(task: GroupTask, runs: Sequence[Run], report: Any, diverged: type
                    ) -> list[tuple[dict[str, Tensor], TrainInfo] | None]:
    """`train_stack` on `runs`; where the stack diverges, each half again (None: a run that
    diverges alone)."""
    from hooked_mlp.training.api import train_stack

    try:
        return train_stack([(r.cfg, r.tcfg) for r in runs], device=task.device,
                           threads=min(task.threads, len(runs)), backend=task.backend,
                           snapshots=task.snapshots, on_epoch=_reporter(report, len(runs)))
    except diverged:
        if len(runs) == 1:
            return [None]
        half = len(runs) // 2
        return (_train_or_split(task, runs[:half], report, diverged)
                + _train_or_split(task, runs[half:], report, diverged))


def _reporter(report: Callable[[int], None] | None, n_runs: int) -> Any:
    """An `on_epoch` that tells `report` the run-epochs done, at most every REPORT_EVERY_S."""
    if report is None:
        return None
    state = {"told": 0, "at": time.perf_counter()}

    def on_epoch(trainer: Any) -> None:
        now = time.perf_counter()
        if now - state["at"] >= REPORT_EVERY_S or trainer.epoch == trainer.epochs:
            report((trainer.epoch - state["told"]) * n_runs)
            state["told"], state["at"] = trainer.epoch, now

    return on_epoch


# --------------------------------------------------------------------------- local
_progress_queue: Any = None  # a worker process's queue to the driver's progress bar


def _init_worker(progress: Any) -> None:
    global _progress_queue
    _progress_queue = progress


def _pool_task(task: GroupTask) -> GroupResult:
    q = _progress_queue
    return train_group(task, None if q is None else (lambda g, n: q.put((g, n))))


def run_local(tasks: Sequence[GroupTask], workers: int, on_result: Callable[[GroupResult], None],
              report: Callable[[int, int], None] | None = None, retries: int = 2) -> None:
    """Train `tasks` on this machine: in `workers` spawned processes (this process when 1),
    calling `on_result` in this process as each group finishes."""
    if workers == 1:
        for task in tasks:
            on_result(train_group(task, report))
        return
    finished: set[int] = set()

    def collect(result: GroupResult) -> None:
        on_result(result)
        finished.add(result.group)

    for attempt in range(retries + 1):
        left = [t for t in tasks if t.group not in finished]
        try:
            _pool(left, workers, collect, report)
            return
        except BrokenProcessPool:
            if attempt == retries:
                left = [t for t in tasks if t.group not in finished]
                raise RuntimeError(f"a sweep worker process died {retries + 1} times (killed, or "
                                   f"out of memory); {len(left)} group(s) left: resume the "
                                   "sweep, with fewer workers if memory is short") from None


def _pool(tasks: Sequence[GroupTask], workers: int, on_result: Callable[[GroupResult], None],
          report: Callable[[int, int], None] | None) -> None:
    ctx = multiprocessing.get_context("spawn")  # never fork a process holding torch's threads
    progress = ctx.Queue() if report is not None else None
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(progress,)) as pool:
        pending: set[Future] = {pool.submit(_pool_task, t) for t in tasks}
        try:
            while pending:
                done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                _drain(progress, report)
                for future in done:
                    on_result(future.result())
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        finally:
            _drain(progress, report)


def _drain(progress: Any, report: Callable[[int, int], None] | None) -> None:
    if progress is None or report is None:
        return
    with contextlib.suppress(queue.Empty, OSError, ValueError):
        while True:
            report(*progress.get_nowait())


# --------------------------------------------------------------------------- Ray
def import_ray() -> Any:
    """Ray, or a RuntimeError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise RuntimeError(f"engine 'ray' needs Ray, an optional extra: {RAY_EXTRA}") from None
    return ray


def _ray_task(task: GroupTask, progress: Any) -> GroupResult:
    """A Ray task: torch's threads set to the CPUs Ray assigned it, then `train_group`."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", task.threads)
    task = replace(task, threads=max(1, int(cpus)))
    os.environ["OMP_NUM_THREADS"] = str(task.threads)
    report = None
    if progress is not None:
        def report(group: int, n: int) -> None:
            with contextlib.suppress(Exception):  # the bar is a nicety, never a failure
                progress.put_nowait((group, n))
    return train_group(task, report)


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Ray, connected to the cluster at `address` (None: a local instance on this machine's
    cores); disconnected afterwards if this call connected it."""
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level="WARNING", configure_logging=True)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise RuntimeError(f"cannot connect to {where}: {one_line(e)}") from None
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def run_ray(tasks: Sequence[GroupTask], on_result: Callable[[GroupResult], None],
            address: str | None = None, report: Callable[[int, int], None] | None = None,
            retries: int = 3) -> None:
    """Train `tasks` as Ray tasks of `task.threads` CPUs each, collecting results with
    `ray.wait` as they finish; a task whose worker died is retried `retries` times by Ray."""
    with ray_session(address) as ray:
        from ray.util.queue import Queue

        progress = Queue(actor_options={"num_cpus": 0}) if report is not None else None
        remote = ray.remote(_ray_task)
        pending = {remote.options(num_cpus=t.threads, max_retries=retries,
                                  name=f"hooked-mlp sweep group {t.group}").remote(t, progress):
                   t.group for t in tasks}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.25)
                _drain_ray(progress, report)
                for ref in done:
                    group = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        raise RuntimeError(f"group {group} failed on the Ray cluster: "
                                           f"{one_line(e)}") from None
                    on_result(result)
            _drain_ray(progress, report)
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            if progress is not None:
                with contextlib.suppress(Exception):
                    progress.shutdown()


def _drain_ray(progress: Any, report: Callable[[int, int], None] | None) -> None:
    if progress is None or report is None:
        return
    with contextlib.suppress(Exception):
        for group, n in progress.get_nowait_batch(progress.qsize()):
            report(group, n)


def check_engine(engine: Any, workers: Any, ray_address: Any) -> None:
    """The engine's arguments, checked before any work."""
    from hooked_mlp.checks import check_threads

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    if workers is not None:
        check_threads(workers, "workers")
    if ray_address is not None and engine != "ray":
        raise ValueError("ray_address applies to engine='ray' only")
    if ray_address is not None and (not isinstance(ray_address, str) or not ray_address):
        raise ValueError(f"ray_address must be an address such as '10.0.0.5:6379' or 'auto', "
                         f"got {ray_address!r}")


def cpu_split(n_groups: int, workers: int | None, cores: int) -> tuple[int, int]:
    """`(processes, threads each)` for the local engine: `workers` processes (default: one per
    core, no more than there are groups), sharing the cores as the trainer's threads."""
    n = min(workers or cores, max(1, n_groups)) if workers is None else workers
    return n, max(1, cores // n)
