"""The trainer: `S` seeds of one recipe trained in lock-step, and the loop that drives it.

`BatchedTrainer` holds everything a run is made of: the stacked parameters of every seed in one
flat buffer (one block per parameter, seeds contiguous in each block), AdamW's moments and step,
each seed's split, and the per-epoch history. A backend (`hooked_mlp.training.backends`: the general
autograd path, or the C accelerator) computes each epoch on that state. The batches are the same
for a seed whether it trains alone or with others, on any device and backend (see
`hooked_mlp.data` for the counter-based shuffle), and on the CPU a seed trained with others is
bit-identical to the same seed trained alone with the same backend.

Per-epoch history: `train_loss`/`train_acc` are per-sample means over that epoch, each sample
measured in its batch before the batch's update (what a standard loop reports; a sample counts
as right when its label is the argmax of its logits, as `logits.argmax(-1)` says);
`val_loss`/`val_acc` are measured on the whole validation split after the epoch (absent when
the recipe trains on every pair). The final `metrics` are measured on the whole of both
splits.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from hooked_mlp.checks import check_device, check_memory, check_seeds, check_threads, cores
from hooked_mlp.config import MLPConfig, TrainConfig
from hooked_mlp.data import all_pairs, apply_operation, n_train_pairs, split_masks, valid_mask
from hooked_mlp.functional import init_params, param_shapes
from hooked_mlp.train_info import TrainInfo
from hooked_mlp.training.backends import make_backend, resolve_backend

if TYPE_CHECKING:
    from hooked_mlp.model import HookedMLP

FLAT_ALIGN = 64
HISTORY_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc")


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint (if any) was kept."""


def default_threads(n_seeds: int, device: str | torch.device = "cpu",
                    backend: str = "torch") -> int:
    """CPU threads the trainer uses unless told otherwise (`backend`: `"c"` or `"torch"`).

    C backend: one thread per seed up to the cores this process may use, each training a
    block of seeds with no synchronisation inside an epoch; one seed on one thread, with its
    validation pass on a helper thread. General path (torch's intra-op threads): one to three
    seeds, 1 thread (plus the helper): their steps are too small to split across cores, and with
    two threads the OpenMP barriers of every op stall whenever another process holds a core.
    Four seeds or more: 2 threads, because batched matmuls over seeds split across cores.
    """
    if torch.device(device).type != "cpu":
        return 1
    if backend == "c":
        return max(1, min(n_seeds, cores()))
    return 1 if n_seeds < 4 else max(1, min(2, cores()))


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


def flat_layout(cfg: MLPConfig, n_seeds: int) -> tuple[dict[str, int], int]:
    """Where each parameter's block starts in the flat buffer of `n_seeds` seeds, and the
    buffer's length: blocks in `param_shapes` order, padded to a multiple of `FLAT_ALIGN`."""
    offsets, total = {}, 0
    for name, shape in param_shapes(cfg).items():
        offsets[name] = total
        total += n_seeds * math.prod(shape)
    return offsets, -(-total // FLAT_ALIGN) * FLAT_ALIGN


def state_shapes(cfg: MLPConfig, n_seeds: int, epoch: int) -> dict[str, tuple[int, ...]]:
    """The shape of each tensor of a run state (`BatchedTrainer.state_tensors`, all float32),
    computed without allocating anything (a resumed state is checked against it first)."""
    flat = (flat_layout(cfg, n_seeds)[1],)
    return {"flat": flat, "exp_avg": flat, "exp_avg_sq": flat, "step": (1,),
            "history": (epoch, n_seeds, len(HISTORY_KEYS))}


def trainer_bytes(cfg: MLPConfig, tcfg: TrainConfig, n_seeds: int) -> int:
    """About how many bytes a `BatchedTrainer` of `n_seeds` seeds holds: four flat buffers
    (parameters, gradient, AdamW's two moments), the per-epoch history, and per seed its split
    and its pairs (indices, rows, labels, per-sample buffers: about 64 bytes per pair)."""
    return (4 * 8 * flat_layout(cfg, n_seeds)[1] + 16 * tcfg.epochs * n_seeds
            + 64 * n_seeds * cfg.p * cfg.p + 40 * cfg.p * cfg.p)


class BatchedTrainer:
    """Trains `len(seeds)` independent copies of one recipe in lock-step.

    `dtype=torch.float64` runs the same steps in double precision on the general path (from the
    same float32 initialisation): the tests' yardstick for the trainer's gradients.
    """

    def __init__(
        self,
        cfg: MLPConfig,
        tcfg: TrainConfig,
        seeds: Sequence[int],
        device: str | torch.device = "cpu",
        backend: str = "auto",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.cfg, self.tcfg = cfg, tcfg
        self.seeds = check_seeds(seeds)
        self.device = dev = check_device(device)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        if dtype != torch.float32 and backend == "auto":
            backend = "torch"  # the C kernel is float32 only
        self.backend = resolve_backend(backend, dev, cfg)
        if dtype != torch.float32 and self.backend == "c":
            raise ValueError("backend='c' trains in float32 only; use backend='torch' for "
                             f"dtype={dtype}")
        check_memory(trainer_bytes(cfg, tcfg, len(self.seeds)),
                     f"training {len(self.seeds)} seed(s) of p={cfg.p}, d_hidden="
                     f"{cfg.d_hidden}, n_layers={cfg.n_layers} for {tcfg.epochs} epochs")
        self.dtype = dtype
        S, p = len(self.seeds), cfg.p
        self.S = S
        self.seeds_t = torch.tensor(self.seeds, dtype=torch.int64, device=dev)

        # splits: each seed's pair indices (a * p + b), ascending, [S, n]
        split_seeds = self.seeds if tcfg.split_seed is None else [tcfg.split_seed] * S
        self.masks = split_masks(cfg, tcfg.train_frac, torch.tensor(split_seeds)).to(dev)
        n_valid = int(valid_mask(cfg).sum())
        self.n_train = n_train_pairs(n_valid, tcfg.train_frac)
        self.n_val = n_valid - self.n_train
        val = valid_mask(cfg, dev) & ~self.masks
        self.train_idx = self.masks.nonzero()[:, 1].contiguous().view(S, self.n_train)
        self.val_idx = val.nonzero()[:, 1].contiguous().view(S, self.n_val)
        self.steps_per_epoch = -(-self.n_train // tcfg.batch_size)
        # pair tables over every pair index (a label of 0 for pairs outside the dataset, which
        # no split holds)
        pairs = all_pairs(p, dev)
        self.a_of, self.b_of = pairs[:, 0].contiguous(), pairs[:, 1].contiguous()
        self.labels = apply_operation(pairs, p, cfg.operation)

        # parameters: one flat buffer, a block per parameter holding every seed; padded to a
        # multiple of 64 floats: torch's fused AdamW handles a buffer's last (length mod vector
        # width) elements on a scalar path whose rounding differs from the vector path, which
        # would make a seed's weights depend on which seeds share its run. The padding stays
        # exactly zero (zero gradient, zero moments).
        self.shapes = param_shapes(cfg)
        self.names = list(self.shapes)
        self.offsets, total = flat_layout(cfg, S)
        self.flat = torch.zeros(total, device=dev, dtype=dtype)
        self.grad = torch.zeros(total if self.backend == "torch" else 0, device=dev, dtype=dtype)
        self.exp_avg = torch.zeros(total, device=dev, dtype=dtype)
        self.exp_avg_sq = torch.zeros(total, device=dev, dtype=dtype)
        self.step_count = torch.zeros((), device=dev, dtype=dtype)
        self.epoch = 0
        self.history = torch.zeros(tcfg.epochs, S, len(HISTORY_KEYS), device=dev)
        with torch.no_grad():
            for s, seed in enumerate(self.seeds):
                for name, value in init_params(cfg, seed).items():
                    self.param(name)[s].copy_(value)

        self._adamw_buffers = ([self.flat], [self.grad], [self.exp_avg], [self.exp_avg_sq], [],
                               [self.step_count])
        self._adamw_recipe = {"lr": tcfg.lr, "beta1": tcfg.beta1, "beta2": tcfg.beta2,
                              "weight_decay": tcfg.weight_decay, "eps": tcfg.eps,
                              "amsgrad": False, "maximize": False}
        self.overlap = False  # set by the driver: see run_epoch
        self.workers = 1  # threads the C backend spreads the seeds over; set by the driver
        self.impl = make_backend(self)
        # takes the parameters at chosen epochs (`hooked_mlp.training.snapshots.SnapshotRecorder`)
        self.snapshots: Any = None
        self._helper: ThreadPoolExecutor | None = None
        self._pending_eval: tuple[int, Future] | None = None
        self._next_schedule: tuple[int, Future] | None = None

    def use_threads(self, threads: int) -> int:
        """Spread the work over `threads` CPU threads; returns the torch thread count to set.

        C backend: `threads` worker threads, each training a block of seeds. General path:
        torch's intra-op threads. Either way, with one thread on a machine with more than one
        core, the validation pass runs on a helper thread (`overlap`).
        """
        check_threads(threads)
        self.overlap = self.device.type == "cpu" and threads == 1 and cores() > 1
        self.workers = threads if self.backend == "c" else 1
        # the C backend's threads are its own: torch's ops around it take one
        return 1 if self.backend == "c" else threads

    # ----------------------------------------------------------------------------- layout
    def block(self, buf: Tensor, name: str) -> Tensor:
        """View of parameter `name` for all seeds inside `buf`: `[S, *shape]`."""
        start, shape = self.offsets[name], self.shapes[name]
        return buf[start : start + self.S * int(torch.Size(shape).numel())].view(self.S, *shape)

    def param(self, name: str) -> Tensor:
        return self.block(self.flat, name)

    def params_of(self, s: int) -> dict[str, Tensor]:
        """Seed number `s`'s parameters, copied to the CPU."""
        return {n: self.param(n)[s].detach().cpu().clone() for n in self.names}

    def tokens_of(self, idx: Tensor) -> Tensor:
        """The tokens `(a, b)` of pair indices `[S, n]`: int64 `[S, n, 2]`."""
        return torch.stack([self.a_of[idx], self.b_of[idx]], dim=-1)

    # ----------------------------------------------------------------------------- training
    def adamw(self) -> None:
        """One step of torch's AdamW (the kernel `AdamW(fused=True)` runs) on the flat buffer,
        with the gradient in `self.grad`."""
        self.step_count += 1
        torch._fused_adamw_(*self._adamw_buffers, **self._adamw_recipe)

    def run_epoch(self) -> None:
        """Train one epoch for every seed and record its history row.

        With `overlap` on (a CPU run on one thread), this epoch's validation pass (and, on the
        general path, the next epoch's batch schedule) runs on a helper thread, on a snapshot of
        the parameters, while the next epoch trains; the numbers are the same either way.
        `sync()` waits for it.
        """
        if self.epoch >= self.tcfg.epochs:
            raise RuntimeError("all epochs are done")
        schedule = None
        if self.backend == "torch":
            if self._next_schedule is not None and self._next_schedule[0] == self.epoch:
                schedule = self._next_schedule[1].result()
            self._next_schedule = None
            if self.overlap and self.epoch + 1 < self.tcfg.epochs:
                self._next_schedule = (self.epoch + 1,
                                       self._pool().submit(self.impl.schedule, self.epoch + 1))
        train = self.impl.train_epoch(self.epoch, schedule)
        epoch = self.epoch
        self.history[epoch, :, :2] = train.to(self.history.device)
        self.epoch += 1
        self._check_finite(epoch, self.history[epoch, :, 0])
        if self.snapshots is not None:
            self.snapshots.capture(self)
        self.sync()  # the previous epoch's validation pass has had a whole epoch to finish
        if not self.n_val:
            return
        if self.overlap:
            self._pending_eval = (epoch, self._pool().submit(self._validate, epoch,
                                                             self.flat.clone()))
        else:
            self._validate(epoch, self.flat)
            self._check_finite(epoch, self.history[epoch, :, 2])

    def _validate(self, epoch: int, flat: Tensor) -> None:
        loss, acc = self.evaluate("val", flat, parallel=not self.overlap)
        self.history[epoch, :, 2] = loss
        self.history[epoch, :, 3] = acc

    def sync(self) -> None:
        """Wait for the validation pass running on the helper thread, if any, and check it."""
        if self._pending_eval is not None:
            epoch, future = self._pending_eval
            self._pending_eval = None
            future.result()
            self._check_finite(epoch, self.history[epoch, :, 2])

    def _check_finite(self, epoch: int, values: Tensor) -> None:
        if not bool(torch.isfinite(values).all()):
            bad = [self.seeds[i] for i in range(self.S) if not bool(torch.isfinite(values[i]))]
            raise TrainingDivergedError(
                f"training diverged at epoch {epoch + 1}: the loss of seed(s) {bad} is not finite"
            )

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
            self._next_schedule = None
            self.impl.close()

    # ----------------------------------------------------------------------------- measuring
    @torch.no_grad()
    def evaluate(self, split: str, flat: Tensor | None = None,
                 parallel: bool = True) -> tuple[Tensor, Tensor]:
        """Mean cross-entropy and accuracy of every seed on a whole split: `[S]`, `[S]`.

        `flat` evaluates a copy of the parameter buffer instead of the live one. `parallel`
        False keeps the C backend on the calling thread (the helper thread runs beside the
        training).
        """
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if split == "val" and not self.n_val:
            raise ValueError("this run has no validation split (train_frac=1.0)")
        return self.impl.evaluate(self.flat if flat is None else flat, split, parallel)

    def final_metrics(self) -> list[dict[str, float]]:
        """Loss and accuracy of each seed on the whole train and validation splits."""
        self.sync()
        tl, ta = self.evaluate("train")
        val = self.evaluate("val") if self.n_val else None
        out = []
        for s in range(self.S):
            m: dict[str, Any] = {"train_loss": float(tl[s]), "train_acc": float(ta[s])}
            if val is not None:
                m.update(val_loss=float(val[0][s]), val_acc=float(val[1][s]))
            m.update(epochs=self.epoch, n_train=self.n_train, n_val=self.n_val)
            out.append(m)
        return out

    def history_keys(self) -> tuple[str, ...]:
        return HISTORY_KEYS if self.n_val else HISTORY_KEYS[:2]

    def history_of(self, s: int) -> dict[str, list[float]]:
        self.sync()
        h = self.history[: self.epoch, s].cpu()
        return {key: h[:, i].tolist() for i, key in enumerate(self.history_keys())}

    def info_of(self, s: int, metrics: dict[str, float], provenance: dict[str, Any]) -> TrainInfo:
        return TrainInfo(
            train_config=replace(self.tcfg, seed=self.seeds[s]),
            train_mask=self.masks[s].cpu().clone(),
            history=self.history_of(s),
            metrics=metrics,
            provenance=provenance,
        )

    # ----------------------------------------------------------------------------- state
    def state_tensors(self) -> dict[str, Tensor]:
        self.sync()
        return {
            "flat": self.flat, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq,
            "step": self.step_count.reshape(1), "history": self.history[: self.epoch],
        }

    def load_state(self, tensors: dict[str, Tensor], epoch: int) -> None:
        """Restore a state written by `state_tensors` (checked by the caller against
        `state_shapes`)."""
        if not 0 <= epoch <= self.tcfg.epochs:
            raise ValueError(f"epoch {epoch} is outside [0, {self.tcfg.epochs}]")
        with torch.no_grad():
            self.flat.copy_(tensors["flat"])
            self.exp_avg.copy_(tensors["exp_avg"])
            self.exp_avg_sq.copy_(tensors["exp_avg_sq"])
            self.step_count.copy_(tensors["step"][0])
            self.history[:epoch] = tensors["history"].to(self.device)
        self.epoch = epoch

    def all_finite(self) -> bool:
        return bool(torch.isfinite(self.flat).all())

    # ----------------------------------------------------------------------------- results
    def results(self, threads: int, wall_s: float, command: str | None
                ) -> list[tuple[dict[str, Tensor], TrainInfo]]:
        """Each seed's final parameters and training record (metrics on whole splits)."""
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
        return [(self.params_of(s), self.info_of(s, metrics[s], prov)) for s in range(self.S)]


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hooked-mlp")
    except PackageNotFoundError:  # running from a source tree without installing
        return "unknown"


def _progress_bar(trainer: BatchedTrainer, enabled: bool) -> Any:
    from tqdm import tqdm  # text to stderr (tqdm.auto wants ipywidgets in notebooks)

    label = f"seed {trainer.seeds[0]}" if trainer.S == 1 else f"{trainer.S} seeds"
    return tqdm(
        total=trainer.tcfg.epochs, initial=trainer.epoch, disable=not enabled, unit="epoch",
        desc=f"train {label}", dynamic_ncols=True, file=sys.stderr,
    )


def drive(
    trainer: BatchedTrainer,
    *,
    threads: int,
    progress: bool,
    on_checkpoint: Any = None,
    checkpoint_every: int = 0,
) -> float:
    """Run the remaining epochs (checkpointing every `checkpoint_every`); returns the wall time.

    Raises `TrainingDivergedError` when a loss or a parameter is not finite.
    """
    start = time.perf_counter()
    last_post = 0.0
    with torch_threads(trainer.use_threads(threads)), _progress_bar(trainer, progress) as bar, \
            contextlib.closing(trainer):
        while trainer.epoch < trainer.tcfg.epochs:
            trainer.run_epoch()
            bar.update(1)
            now = time.perf_counter()
            if progress and now - last_post > 0.5:
                h = trainer.history[trainer.epoch - 1]
                post = {"train_loss": f"{float(h[:, 0].mean()):.3g}"}
                if trainer.n_val:
                    val = trainer.history[max(0, trainer.epoch - 2), :, 3]
                    post["val_acc"] = f"{float(val.mean()):.4f}"
                bar.set_postfix(**post)
                last_post = now
            done = trainer.epoch
            if (
                on_checkpoint is not None
                and checkpoint_every
                and done % checkpoint_every == 0
                and done < trainer.tcfg.epochs
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


def resolve_run(
    cfg: MLPConfig | None, tcfg: TrainConfig | None, seeds: Sequence[int] | None,
    device: str | torch.device, threads: int | None, backend: str,
) -> tuple[MLPConfig, TrainConfig, list[int], int, str]:
    """Every argument of a run checked before any work: `(cfg, tcfg, seeds, threads,
    backend)` with defaults filled in."""
    cfg = MLPConfig() if cfg is None else cfg
    tcfg = TrainConfig() if tcfg is None else tcfg
    if not isinstance(cfg, MLPConfig):
        raise TypeError(f"cfg must be an MLPConfig, got {type(cfg).__name__}")
    if not isinstance(tcfg, TrainConfig):
        raise TypeError(f"tcfg must be a TrainConfig, got {type(tcfg).__name__}")
    seed_list = check_seeds([tcfg.seed] if seeds is None else seeds)
    dev = check_device(device)
    n_train_pairs(int(valid_mask(cfg).sum()), tcfg.train_frac)  # both splits non-empty
    chosen = resolve_backend(backend, dev, cfg)
    n = default_threads(len(seed_list), dev, chosen) if threads is None else threads
    return cfg, tcfg, seed_list, check_threads(n), chosen


def build_models(trainer: BatchedTrainer, results: list[tuple[dict[str, Tensor], TrainInfo]]
                 ) -> list[HookedMLP]:
    """`HookedMLP`s holding each seed's final parameters and training record."""
    from hooked_mlp.model import HookedMLP

    return [HookedMLP.from_params(trainer.cfg, params, train_info=info).to(trainer.device)
            for params, info in results]
