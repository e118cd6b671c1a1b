"""The trainer: the runs of one stack trained in lock-step, and the loop that drives them.

`BatchedTrainer` owns a `TrainState` (`hooked_mlp.training.state`: the flat buffers, splits, pair
tables and history of every run) and a backend (`hooked_mlp.training.backends`: the general
path or the C accelerator) that computes each epoch on that state. The trainer keeps the
epoch's bookkeeping: the history rows, the checks for divergence, the snapshots, and (on a CPU
run on one thread) the validation pass and the next epoch's batch order on a helper thread.

The batches are the same for a run whether it trains alone or with others, on any device and
backend (see `hooked_mlp.data` for the counter-based shuffle), and on the CPU a run trained in
a stack is bit-identical to the same run trained alone with the same backend.

Per-epoch history: `train_loss`/`train_acc` are per-sample means over that epoch, each sample
measured in its batch before the batch's update (what a standard loop reports; a sample counts
as right when its label is the argmax of its logits, as `logits.argmax(-1)` says);
`val_loss`/`val_acc` are measured on the whole validation split after the epoch (absent when
the recipe trains on every pair). The final `metrics` are measured on the whole of both
splits.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from hooked_mlp.checks import check_device, check_seeds, check_threads, cores
from hooked_mlp.config import MLPConfig, TrainConfig
from hooked_mlp.data import n_train_pairs, valid_mask
from hooked_mlp.train_info import TrainInfo
from hooked_mlp.training.backends import default_threads, make_backend, resolve_backend
from hooked_mlp.training.state import (
    FLAT_ALIGN,
    HISTORY_KEYS,
    TrainState,
    check_runs,
    flat_layout,
    state_shapes,
)

if TYPE_CHECKING:
    from hooked_mlp.model import HookedMLP

# names other modules import from here (their homes: hooked_mlp.training.state, .backends)
__all__ = ["FLAT_ALIGN", "HISTORY_KEYS", "BatchedTrainer", "TrainingDivergedError",
           "build_models", "default_threads", "drive", "flat_layout", "resolve_run",
           "resolve_runs", "state_shapes", "torch_threads"]

Run = tuple[MLPConfig, TrainConfig]
# the shapes of the trainer's tensors (S runs trained at once; `stride` floats per run)
FlatParams = Float[Tensor, "flat"]  # [S * stride], each run's parameters at its offset
RunHistory = Float[Tensor, "epochs runs 4"]  # each epoch's HISTORY_KEYS per run
RunParam = Float[Tensor, "runs *shape"]  # one parameter of every run
PerRun = Float[Tensor, "runs"]


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint (if any) was kept."""


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Set torch's intra-op thread count inside the block and restore it afterwards."""
    check_threads(n)
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class BatchedTrainer:
    """Trains the runs of one stack in lock-step.

    `BatchedTrainer(cfg, tcfg, seeds)` trains one recipe for each of `seeds` (`tcfg.seed` is
    replaced by each seed; `tcfg.split_seed`, if set, gives every seed the same split);
    `BatchedTrainer.for_runs(runs)` trains any `(MLPConfig, TrainConfig)` runs whose
    `stack_key`s agree. Rows of the state (and of `history`, `results`) follow the state's order
    (`state.order[i]` is row `i`'s position in `runs`; for seeds, the order given).
    `dtype=torch.float64` runs the same steps in double precision on the general path (from the
    same float32 initialisation): the tests' yardstick for the trainer's gradients.
    """

    def __init__(self, cfg: MLPConfig, tcfg: TrainConfig, seeds: Sequence[int],
                 device: str | torch.device = "cpu", backend: str = "auto",
                 dtype: torch.dtype = torch.float32) -> None:
        runs = [(cfg, replace(tcfg, seed=s)) for s in check_seeds(seeds)]
        self._start(runs, device, backend, dtype, "seed(s)")
        self.tcfg = tcfg

    @classmethod
    def for_runs(cls, runs: Sequence[Run], device: str | torch.device = "cpu",
                 backend: str = "auto", dtype: torch.dtype = torch.float32) -> BatchedTrainer:
        """A trainer of `runs` (`(MLPConfig, TrainConfig)` pairs of one stack)."""
        trainer = cls.__new__(cls)
        trainer._start(check_runs(runs), device, backend, dtype, "run(s)")
        return trainer

    def _start(self, runs: list[Run], device: str | torch.device, backend: str,
               dtype: torch.dtype, what: str) -> None:
        dev = check_device(device)
        if dtype != torch.float32 and backend == "auto":
            backend = "torch"  # the C kernel is float32 only
        cfg0 = runs[0][0]
        self.backend = resolve_backend(backend, dev, cfg0)
        if dtype != torch.float32 and self.backend == "c":
            raise ValueError("backend='c' trains in float32 only; use backend='torch' for "
                             f"dtype={dtype}")
        self.what = what
        self.state = TrainState(runs, dev, dtype, with_grad=self.backend != "c", what=what)
        self.cfg, self.tcfg = self.state.runs[0]
        self.impl = make_backend(self.backend, self.state)
        self.overlap = False  # set by use_threads: see run_epoch
        # takes the parameters at chosen epochs (`hooked_mlp.training.snapshots.SnapshotRecorder`)
        self.snapshots: Any = None
        self._helper: ThreadPoolExecutor | None = None
        self._pending_eval: tuple[int, Future] | None = None
        self._next: tuple[int, Future] | None = None

    # ----------------------------------------------------------------------------- the state
    @property
    def runs(self) -> list[Run]:
        return self.state.runs

    @property
    def seeds(self) -> list[int]:
        return self.state.seeds

    @property
    def S(self) -> int:
        return self.state.S

    @property
    def device(self) -> torch.device:
        return self.state.device

    @property
    def epoch(self) -> int:
        return self.state.epoch

    @property
    def epochs(self) -> int:
        return self.state.epochs

    @property
    def flat(self) -> FlatParams:
        """The parameters of every run: `[S * stride]` (`layout` says where each lives)."""
        return self.state.flat

    @property
    def history(self) -> RunHistory:
        """`[epochs, S, 4]`: each epoch's `HISTORY_KEYS` per row (rows past `epoch`: 0)."""
        return self.state.history

    @property
    def layout(self) -> Any:
        return self.state.layout

    @property
    def names(self) -> list[str]:
        return self.state.names

    def param(self, name: str) -> RunParam:
        """Parameter `name` of every run: a view `[S, *shape]` of the flat buffer."""
        return self.state.param(name)

    def params_of(self, s: int) -> dict[str, Tensor]:
        """Row `s`'s parameters, copied to the CPU."""
        return self.state.params_of(s)

    def use_threads(self, threads: int) -> int:
        """Spread the work over `threads` CPU threads; returns the torch thread count to set.

        With one thread on a CPU with more than one core, the validation pass and the next
        epoch's batch order run on a helper thread (`overlap`).
        """
        check_threads(threads)
        self.overlap = self.device.type == "cpu" and threads == 1 and cores() > 1
        return self.impl.use_threads(threads)

    # ----------------------------------------------------------------------------- training
    def run_epoch(self) -> None:
        """Train one epoch for every run and record its history row.

        With `overlap` on, this epoch's validation pass runs on the helper thread, on a copy of
        the parameters, while the next epoch trains, and so does the next epoch's batch order;
        the numbers are the same either way. `sync()` waits for the validation.
        """
        s = self.state
        epoch = s.epoch
        if epoch >= s.epochs:
            raise RuntimeError("all epochs are done")
        prepared = None
        if self._next is not None and self._next[0] == epoch:
            prepared = self._next[1].result()
        self._next = None
        if self.overlap and epoch + 1 < s.epochs:
            self._next = (epoch + 1, self._pool().submit(self.impl.prepare, epoch + 1))
        train = self.impl.train_epoch(epoch, prepared)  # [S, 2]
        s.history[epoch, :, :2] = train.to(s.history.device)
        s.step += s.steps_per_epoch
        s.epoch += 1
        self._check_finite(epoch, s.history[epoch, :, 0], val=False)
        if self.snapshots is not None:
            self.snapshots.capture(self)
        self.sync()  # the previous epoch's validation pass has had a whole epoch to finish
        if not s.any_val:
            return
        if self.overlap:
            self._pending_eval = (epoch, self._pool().submit(self._validate, epoch,
                                                             s.flat.clone()))
        else:
            self._validate(epoch, s.flat)
            self._check_finite(epoch, s.history[epoch, :, 2], val=True)

    def _validate(self, epoch: int, flat: Tensor) -> None:
        loss, acc = self.impl.evaluate(flat, "val", not self.overlap)
        self.state.history[epoch, :, 2] = loss.to(self.state.history.device)
        self.state.history[epoch, :, 3] = acc.to(self.state.history.device)

    def sync(self) -> None:
        """Wait for the validation pass running on the helper thread, if any, and check it."""
        if self._pending_eval is not None:
            epoch, future = self._pending_eval
            self._pending_eval = None
            future.result()
            self._check_finite(epoch, self.state.history[epoch, :, 2], val=True)

    def _check_finite(self, epoch: int, values: Tensor, val: bool) -> None:
        bad = ~torch.isfinite(values.cpu())
        if val:  # a run without a validation split has no validation loss
            bad &= self.state.has_val()
        if bool(bad.any()):
            rows = bad.nonzero().flatten().tolist()
            which = [self.seeds[i] for i in rows] if self.what == "seed(s)" else [
                self.state.order[i] for i in rows]
            raise TrainingDivergedError(
                f"training diverged at epoch {epoch + 1}: the loss of {self.what} {which} is "
                "not finite")

    def _pool(self) -> ThreadPoolExecutor:
        if self._helper is None:
            self._helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hooked-mlp")
        return self._helper

    def close(self) -> None:
        """Finish pending work and stop the helper threads."""
        try:
            self.sync()
        finally:
            if self._helper is not None:
                self._helper.shutdown(wait=True, cancel_futures=True)
            self._helper = None
            self._next = None
            self.impl.close()

    # ----------------------------------------------------------------------------- measuring
    @torch.no_grad()
    def evaluate(self, split: str, flat: FlatParams | None = None,
                 parallel: bool = True) -> tuple[PerRun, PerRun]:
        """Mean cross-entropy and accuracy of every run on a whole split: `[S]`, `[S]` (NaN
        for a run without that split; a ValueError when no run has it).

        `flat` evaluates a copy of the parameter buffer instead of the live one. `parallel`
        False keeps the C backend on the calling thread.
        """
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if split == "val" and not self.state.any_val:
            raise ValueError("this run has no validation split (train_frac=1.0)")
        return self.impl.evaluate(self.state.flat if flat is None else flat, split, parallel)

    def final_metrics(self) -> list[dict[str, Any]]:
        """Loss and accuracy of each run on the whole train and validation splits."""
        self.sync()
        s = self.state
        tl, ta = self.evaluate("train")
        val = self.evaluate("val") if s.any_val else None
        out = []
        for i, g in s.row_groups():
            m: dict[str, Any] = {"train_loss": float(tl[i]), "train_acc": float(ta[i])}
            if val is not None and g.n_val:
                m.update(val_loss=float(val[0][i]), val_acc=float(val[1][i]))
            m.update(epochs=s.epoch, n_train=g.n_train, n_val=g.n_val)
            out.append(m)
        return out

    def history_of(self, s: int) -> dict[str, list[float]]:
        self.sync()
        return self.state.history_of(s)

    def info_of(self, s: int, metrics: dict[str, Any], provenance: dict[str, Any]) -> TrainInfo:
        self.sync()
        return self.state.info_of(s, metrics, provenance)

    # ----------------------------------------------------------------------------- state
    def state_tensors(self) -> dict[str, Tensor]:
        """The run state to write (`state_shapes` gives the shapes)."""
        self.sync()
        return self.state.tensors()

    def load_state(self, tensors: dict[str, Tensor], epoch: int) -> None:
        """Restore a state written by `state_tensors` (checked by the caller against
        `state_shapes`)."""
        self.state.load(tensors, epoch)

    def all_finite(self) -> bool:
        return bool(torch.isfinite(self.state.flat).all())

    # ----------------------------------------------------------------------------- results
    def results(self, threads: int, wall_s: float, command: str | None
                ) -> list[tuple[dict[str, Tensor], TrainInfo]]:
        """Each row's final parameters and training record (metrics on whole splits)."""
        with torch_threads(threads), contextlib.closing(self):  # no worker threads left behind
            metrics = self.final_metrics()
        prov = {
            "trained_by": "hooked_mlp",
            "hooked_mlp": _package_version(),
            "torch": torch.__version__,
            "device": str(self.device),
            "backend": self.backend,
            "threads": threads,
            "batched_seeds": self.seeds,
            "wall_s": round(wall_s, 3),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command,
        }
        if self.what != "seed(s)":
            prov["stacked_runs"] = self.S
        return [(self.params_of(i), self.info_of(i, metrics[i], prov)) for i in range(self.S)]


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hooked-mlp")
    except PackageNotFoundError:  # running from a source tree without installing
        return "unknown"


def _progress_bar(trainer: BatchedTrainer, enabled: bool) -> Any:
    from tqdm import tqdm  # text to stderr (tqdm.auto wants ipywidgets in notebooks)

    S = trainer.S
    label = f"seed {trainer.seeds[0]}" if S == 1 else f"{S} {trainer.what[:-3]}s"
    return tqdm(
        total=trainer.epochs, initial=trainer.epoch, disable=not enabled, unit="epoch",
        desc=f"train {label}", dynamic_ncols=True, file=sys.stderr,
    )


def drive(
    trainer: BatchedTrainer,
    *,
    threads: int,
    progress: bool,
    on_checkpoint: Callable[[BatchedTrainer], None] | None = None,
    checkpoint_every: int = 0,
    on_epoch: Callable[[BatchedTrainer], None] | None = None,
) -> float:
    """Run the remaining epochs (checkpointing every `checkpoint_every`, calling `on_epoch`
    after each); returns the wall time.

    Raises `TrainingDivergedError` when a loss or a parameter is not finite.
    """
    start = time.perf_counter()
    last_post = 0.0
    with torch_threads(trainer.use_threads(threads)), _progress_bar(trainer, progress) as bar, \
            contextlib.closing(trainer):
        while trainer.epoch < trainer.epochs:
            trainer.run_epoch()
            bar.update(1)
            now = time.perf_counter()
            if progress and now - last_post > 0.5:
                h = trainer.history[trainer.epoch - 1]
                post = {"train_loss": f"{float(h[:, 0].mean()):.3g}"}
                if trainer.state.any_val:
                    val = trainer.history[max(0, trainer.epoch - 2), :, 3]
                    post["val_acc"] = f"{float(val[trainer.state.has_val()].mean()):.4f}"
                bar.set_postfix(**post)
                last_post = now
            if on_epoch is not None:
                on_epoch(trainer)
            done = trainer.epoch
            if (
                on_checkpoint is not None
                and checkpoint_every
                and done % checkpoint_every == 0
                and done < trainer.epochs
            ):
                trainer.sync()
                if not trainer.all_finite():
                    raise TrainingDivergedError(
                        f"training diverged at epoch {done}: the parameters are not finite"
                    )
                on_checkpoint(trainer)
    if not trainer.all_finite():
        raise TrainingDivergedError(
            f"training diverged by epoch {trainer.epoch}: the parameters are not finite"
        )
    return time.perf_counter() - start


def _check_common(device: str | torch.device, threads: int | None, backend: str,
                  cfg: MLPConfig, n_runs: int) -> tuple[int, str]:
    dev = check_device(device)
    chosen = resolve_backend(backend, dev, cfg)
    n = default_threads(n_runs, dev, chosen) if threads is None else threads
    return check_threads(n), chosen


def check_configs(cfg: MLPConfig | None, tcfg: TrainConfig | None,
                  names: tuple[str, str] = ("cfg", "tcfg")) -> tuple[MLPConfig, TrainConfig]:
    """`(cfg, tcfg)` with the study's defaults for None, each refused unless an `MLPConfig`
    and a `TrainConfig` (`names`: the arguments' names in the error)."""
    cfg = MLPConfig() if cfg is None else cfg
    tcfg = TrainConfig() if tcfg is None else tcfg
    if not isinstance(cfg, MLPConfig):
        raise TypeError(f"{names[0]} must be an MLPConfig, got {type(cfg).__name__}")
    if not isinstance(tcfg, TrainConfig):
        raise TypeError(f"{names[1]} must be a TrainConfig, got {type(tcfg).__name__}")
    return cfg, tcfg


def resolve_run(
    cfg: MLPConfig | None, tcfg: TrainConfig | None, seeds: Sequence[int] | None,
    device: str | torch.device, threads: int | None, backend: str,
) -> tuple[MLPConfig, TrainConfig, list[int], int, str]:
    """Every argument of a run of seeds checked before any work: `(cfg, tcfg, seeds, threads,
    backend)` with defaults filled in."""
    cfg, tcfg = check_configs(cfg, tcfg)
    seed_list = check_seeds([tcfg.seed] if seeds is None else seeds)
    n_train_pairs(int(valid_mask(cfg).sum()), tcfg.train_frac)  # both splits non-empty
    n_threads, chosen = _check_common(device, threads, backend, cfg, len(seed_list))
    return cfg, tcfg, seed_list, n_threads, chosen


def resolve_runs(runs: Sequence[Run], device: str | torch.device, threads: int | None,
                 backend: str) -> tuple[list[Run], int, str]:
    """Every argument of a stack checked before any work: `(runs, threads, backend)`."""
    runs = check_runs(runs)
    n_threads, chosen = _check_common(device, threads, backend, runs[0][0], len(runs))
    return runs, n_threads, chosen


def build_models(trainer: BatchedTrainer, results: list[tuple[dict[str, Tensor], TrainInfo]]
                 ) -> list[HookedMLP]:
    """`HookedMLP`s holding each row's final parameters and training record."""
    from hooked_mlp.model import HookedMLP

    return [HookedMLP.from_params(cfg, params, train_info=info).to(trainer.device)
            for (cfg, _), (params, info) in zip(trainer.runs, results, strict=True)]
