"""The trainer: the seed recipe, fast, for one seed or many at once, resumable.

Two backends compute the same steps (`hooked_mlp.cpu_kernel` chooses): `"c"`, a C extension
that runs whole epochs on the CPU (the default there), and `"torch"`, below, for any device.
The torch backend writes the forward and backward pass of the one-hidden-layer MLP by hand,
for `S` seeds stacked along a leading dimension (batched matmuls), on one flat parameter buffer
updated by torch's own fused AdamW kernel (`torch.optim.AdamW(fused=True)` calls the same op).
One seed is simply `S = 1`. Per step of batch `B`:

    pre    = W_in[a] + W_in[p + b] + b_in          # [S, B, H]   one embedding_bag lookup
    post   = relu(pre)
    logits = post @ W_out + b_out                  # [S, B, p]
    G      = (softmax(logits) - onehot(y)) / B     # d(mean cross-entropy)/d(logits)
    dW_out = post^T @ G;  db_out = sum G           # [S, H, p]
    dpre   = (G @ W_out^T) * (pre > 0)             # [S, B, H]
    dW_in  = index_add(dpre at rows a and p + b);  db_in = sum dpre

which is what autograd computes for `cross_entropy(model(tokens), y)` (tests check both backends
against an autograd loop). The C kernel computes the same per seed, each step as two
half-batches whose gradients AdamW adds (`hooked_mlp/_cpu_kernel.c`). The batches are the same
for a seed whether it trains alone or with others, on any device and backend: see
`hooked_mlp.data` for the counter-based shuffle. On the CPU a seed trained with others is
bit-identical to the same seed trained alone with the same backend.

Per-epoch history: `train_loss`/`train_acc` are per-sample means over that epoch, each sample
measured in its batch before the batch's update (what a standard loop reports);
`val_loss`/`val_acc` are measured on the whole validation split after the epoch. The final
`metrics` are measured on the whole of both splits.
"""

from __future__ import annotations

import contextlib
import fcntl
import operator
import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hooked_mlp import cpu_kernel
from hooked_mlp.config import MAX_SEED, MLPConfig, TrainConfig
from hooked_mlp.cpu_kernel import BACKENDS, EpochKernel, resolve_backend
from hooked_mlp.data import (
    STREAM_SHUFFLE,
    dataset,
    hash_prefix,
    n_train_pairs,
    permutations,
    split_masks,
)
from hooked_mlp.io import (
    HISTORY_KEYS,
    CheckpointError,
    _config,
    read_safetensors,
    write_model,
    write_safetensors,
)
from hooked_mlp.params import PARAM_NAMES, TrainInfo, init_params, param_shapes

if TYPE_CHECKING:
    from hooked_mlp.model import HookedMLP

STATE_FILE = "state.safetensors"
LOCK_FILE = ".lock"
FLAT_ALIGN = 64
EVAL_CHUNK_ELEMENTS = 1 << 22  # logits held at once while evaluating: 16 MiB of float32


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint (if any) was kept."""


class RunLockedError(RuntimeError):
    """Another process is training into the same output folder."""


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hooked-mlp")
    except PackageNotFoundError:  # running from a source tree without installing
        return "unknown"


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads(n_seeds: int, device: str | torch.device = "cpu",
                    backend: str = "auto") -> int:
    """CPU threads the trainer uses unless told otherwise.

    C backend: one thread per seed up to the cores this process may use (each thread trains a
    block of seeds with no synchronisation inside an epoch); a seed alone takes two threads
    (each computes one half of every batch).
    Torch backend (torch's intra-op threads): one to three seeds, 1 thread (plus the helper);
    their steps are too small to split across cores, and with two threads the OpenMP barriers
    of every op stall whenever another process holds a core. Four seeds or more: 2 threads,
    because batched matmuls over seeds split across cores cleanly.
    """
    dev = torch.device(device)
    if dev.type != "cpu":
        return 1
    if resolve_backend(backend, dev) == "c":
        return max(1, min(max(n_seeds, 2), _cores()))
    return 1 if n_seeds < 4 else max(1, min(2, _cores()))


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Set torch's intra-op thread count inside the block and restore it afterwards."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_device(device: str | torch.device) -> torch.device:
    """A usable torch device for `device`, or a ValueError saying what is available."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available here")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s), cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return dev


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """`seeds` as a list of distinct Python ints in the allowed range."""
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise TypeError(f"seeds must be a sequence of integers, got {type(seeds).__name__}")
    out = []
    for s in seeds:
        try:
            out.append(operator.index(s) if not isinstance(s, bool) else s)
        except TypeError:
            raise TypeError(f"seeds must be integers, got {s!r}") from None
    if not out:
        raise ValueError("seeds must name at least one seed")
    for s in out:
        if isinstance(s, bool) or not 0 <= s <= MAX_SEED:
            raise ValueError(f"seeds must be integers in [0, {MAX_SEED}], got {s!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"seeds must be distinct, got {out}")
    return out


class _PerSeedThreads:
    """Chooses one or two threads per seed for the C kernel by timing its epochs.

    Two threads (one half of every batch each) are about 1.4x faster on an idle machine, but
    they meet at two barriers per step, so when another process holds a core they can be two or
    more times slower than one. Both give bit-identical numbers, so the choice is made by
    measurement: each is timed on two epochs first, then the one with the fastest of its last
    three epochs is used, and the other is tried again after `PROBE_EVERY` epochs, twice as long
    after each try that loses (up to `PROBE_MAX`). (The fastest, not the mean: a first epoch or
    a passing hiccup must not condemn an option for long; a lasting slowdown fills the window
    within three epochs.)
    """

    PROBE_EVERY = 16
    PROBE_MAX = 256

    def __init__(self) -> None:
        self.recent: dict[int, deque[float]] = {1: deque(maxlen=3), 2: deque(maxlen=3)}
        self.interval = self.PROBE_EVERY
        self.until_probe = self.PROBE_EVERY
        self.probing: int | None = None

    def best(self) -> int:
        measured = {n: min(v) for n, v in self.recent.items() if v}
        return min(measured, key=measured.__getitem__) if measured else 2

    def pick(self) -> int:
        for n in (2, 1):
            if len(self.recent[n]) < 2:
                return n
        self.until_probe -= 1
        if self.until_probe <= 0:
            self.probing = 3 - self.best()
            return self.probing
        return self.best()

    def record(self, n: int, seconds: float) -> None:
        self.recent[n].append(seconds)
        if self.probing is not None:
            won = self.best() == self.probing
            self.interval = self.PROBE_EVERY if won else min(2 * self.interval, self.PROBE_MAX)
            self.until_probe, self.probing = self.interval, None


class BatchedTrainer:
    """Trains `len(seeds)` independent copies of one recipe in lock-step.

    Holds the stacked parameters (one flat buffer, one block per parameter, seeds contiguous in
    each block), AdamW's moments and step, and the per-epoch history `[epochs, S, 4]`.
    """

    def __init__(
        self,
        cfg: MLPConfig,
        tcfg: TrainConfig,
        seeds: Sequence[int],
        device: str | torch.device = "cpu",
        backend: str = "auto",
    ) -> None:
        self.cfg, self.tcfg = cfg, tcfg
        self.seeds = check_seeds(seeds)
        self.device = check_device(device)
        self.backend = resolve_backend(backend, self.device)
        S, p, H = len(self.seeds), cfg.p, cfg.d_hidden
        self.S = S
        dev = self.device
        self.seeds_t = torch.tensor(self.seeds, dtype=torch.int64, device=dev)

        split_seeds = self.seeds if tcfg.split_seed is None else [tcfg.split_seed] * S
        self.masks = split_masks(p, tcfg.train_frac, torch.tensor(split_seeds)).to(dev)
        self.n_train = int(self.masks[0].sum())
        self.n_val = p * p - self.n_train
        self.steps_per_epoch = -(-self.n_train // tcfg.batch_size)
        # each seed's pair indices, ascending: [S, n] (contiguous: the C kernel reads them)
        self.train_idx = self.masks.nonzero()[:, 1].contiguous().view(S, self.n_train)
        self.val_idx = (~self.masks).nonzero()[:, 1].contiguous().view(S, self.n_val)
        pairs, self.labels = dataset(cfg, dev)
        self.a_of, self.b_of = pairs[:, 0].contiguous(), pairs[:, 1].contiguous()
        self.row_offset = (torch.arange(S, device=dev) * 2 * p).view(S, 1)  # seed's rows in W_in
        # rows of W_in (flattened over seeds) and labels of each seed's pairs: [S, n]
        self.train_rows_a, self.train_rows_b, self.train_labels = self._rows(self.train_idx)
        # index of sample i's target in a flattened [S*bs, p] logits block is i*p + y
        self.max_batch = min(tcfg.batch_size, self.n_train)
        self.target_base = torch.arange(S * self.max_batch, device=dev) * p

        shapes = param_shapes(cfg)
        self.block_sizes = [S * int(torch.Size(shapes[n]).numel()) for n in PARAM_NAMES]
        # Padded to a multiple of 64 floats: torch's fused AdamW handles a buffer's last
        # (length mod vector width) elements on a scalar path whose rounding differs from the
        # vector path, which would make a seed's weights depend on which seeds share its run.
        # The padding stays exactly zero (zero gradient, zero moments).
        total = -(-sum(self.block_sizes) // FLAT_ALIGN) * FLAT_ALIGN
        self.flat = torch.zeros(total, device=dev)
        self.grad = torch.zeros(total if self.backend == "torch" else 0, device=dev)
        self.exp_avg = torch.zeros(total, device=dev)
        self.exp_avg_sq = torch.zeros(total, device=dev)
        self.step_count = torch.zeros((), device=dev)
        self.epoch = 0
        self.history = torch.zeros(tcfg.epochs, S, 4, device=dev)
        for s, seed in enumerate(self.seeds):
            for name, value in init_params(cfg, seed).items():
                self.param(name)[s].copy_(value)

        self.overlap = False  # set by the driver: see run_epoch
        self.workers = 1  # threads the C backend spreads the seeds over; set by the driver
        self._eval_cache: dict[str, tuple[Tensor, Tensor]] = {}
        if self.backend == "c":
            starts = [sum(self.block_sizes[:i]) for i in range(len(PARAM_NAMES))]
            self.kernel = EpochKernel(
                offsets=tuple(starts), p=p, d_hidden=H, batch_size=tcfg.batch_size,
                a_of=self.a_of, b_of=self.b_of, labels=self.labels, lr=tcfg.lr,
                betas=(tcfg.beta1, tcfg.beta2), weight_decay=tcfg.weight_decay, eps=tcfg.eps,
            )
        else:
            self.W_in2 = self.param("W_in").view(S * 2 * p, H)
            self.b_in3 = self.param("b_in").view(S, 1, H)
            self.W_out3 = self.param("W_out")
            self.b_out3 = self.param("b_out").view(S, 1, p)
            self.gW_in2 = self._block(self.grad, "W_in").view(S * 2 * p, H)
            self.gb_in = self._block(self.grad, "b_in")
            self.gW_out = self._block(self.grad, "W_out")
            self.gb_out = self._block(self.grad, "b_out")
            self.neg_ones = torch.full((S * self.max_batch,), -1.0, device=dev)
            self.dpost_buf = torch.zeros(S * self.max_batch, H, device=dev)
            self._eval_bags("val")
        self._executor: ThreadPoolExecutor | None = None
        self._workers_pool: ThreadPoolExecutor | None = None
        self._workers_size = 0
        self._per_seed = _PerSeedThreads()
        self._pending_eval: tuple[int, Future] | None = None
        self._next_schedule: tuple[int, Future] | None = None

    def use_threads(self, threads: int) -> int:
        """Spread the work over `threads` CPU threads; returns the torch thread count to set.

        C backend: `threads` worker threads, each training a block of seeds (or two per seed).
        Torch backend: torch's intra-op threads. Either way, with one thread on a machine with
        more than one core, the validation pass runs on a helper thread (`overlap`).
        """
        on_cpu = self.device.type == "cpu"
        self.overlap = on_cpu and threads == 1 and _cores() > 1
        self.workers = threads if self.backend == "c" else 1
        # the C backend's threads are its own: torch's ops around it (the batch order) take one
        return 1 if self.backend == "c" else threads

    # ----------------------------------------------------------------------------- layout
    def _block(self, buf: Tensor, name: str) -> Tensor:
        """View of parameter `name` for all seeds inside `buf`: `[S, *shape]`."""
        i = PARAM_NAMES.index(name)
        start = sum(self.block_sizes[:i])
        shape = param_shapes(self.cfg)[name]
        return buf[start : start + self.block_sizes[i]].view(self.S, *shape)

    def param(self, name: str) -> Tensor:
        return self._block(self.flat, name)

    def params_of(self, s: int) -> dict[str, Tensor]:
        """Seed number `s`'s parameters, copied to the CPU."""
        return {n: self.param(n)[s].detach().cpu().clone() for n in PARAM_NAMES}

    # ----------------------------------------------------------------------------- training
    def _schedule(self, epoch: int) -> list[tuple[Tensor, Tensor, Tensor, Tensor, int, int]]:
        """This epoch's steps: (bag rows [S*bs, 2], rows_a, rows_b, flat targets, bs, offset).

        Step `k` holds the samples `k*B .. (k+1)*B - 1` of every seed's shuffled train split;
        `offset` is where its per-sample results go in the epoch's `[step, seed, sample]` buffers.
        """
        S, B = self.S, self.tcfg.batch_size
        n = self.n_train
        perm = permutations(self.seeds_t, STREAM_SHUFFLE, epoch, n)  # [S, n]
        rows_a = self.train_rows_a.gather(1, perm)  # [S, n]  rows of W_in (flattened over seeds)
        rows_b = self.train_rows_b.gather(1, perm)
        y = self.train_labels.gather(1, perm)
        n_full, rest = divmod(n, B)
        steps = []
        if n_full:
            def lay(t: Tensor) -> Tensor:  # [S, n] -> [n_full, S, B]
                return t[:, : n_full * B].reshape(S, n_full, B).transpose(0, 1).contiguous()

            ra, rb = lay(rows_a), lay(rows_b)
            bags = torch.stack([ra, rb], dim=-1)  # [n_full, S, B, 2]
            tgt = lay(y).add_(self.target_base[: S * B].view(S, B))
            for k in range(n_full):
                steps.append(
                    (bags[k].view(S * B, 2), ra[k].view(-1), rb[k].view(-1), tgt[k].view(-1), B,
                     k * S * B)
                )
        if rest:
            ra = rows_a[:, n_full * B :].contiguous()
            rb = rows_b[:, n_full * B :].contiguous()
            tgt = y[:, n_full * B :] + self.target_base[: S * rest].view(S, rest)
            steps.append(
                (torch.stack([ra, rb], -1).view(S * rest, 2), ra.view(-1), rb.view(-1),
                 tgt.reshape(-1), rest, n_full * S * B)
            )
        return steps

    def _step(
        self, bags: Tensor, rows_a: Tensor, rows_b: Tensor, tgt: Tensor, bs: int,
        logit_y: Tensor, logit_max: Tensor, p_max: Tensor,
    ) -> None:
        S, H = self.S, self.cfg.d_hidden
        pre = F.embedding_bag(bags, self.W_in2, mode="sum").view(S, bs, H).add_(self.b_in3)
        post = pre.relu_()  # [S, bs, H]
        logits = torch.baddbmm(self.b_out3, post, self.W_out3)  # [S, bs, p]
        torch.take(logits, tgt, out=logit_y)  # the right answer's logit, [S*bs]
        torch.amax(logits, dim=-1, out=logit_max.view(S, bs))
        g = torch.softmax(logits, dim=-1)
        torch.amax(g, dim=-1, out=p_max.view(S, bs))  # = 1 / sum_c exp(logit_c - logit_max)
        g.view(-1).index_add_(0, tgt, self.neg_ones[: S * bs])  # softmax - onehot(y)
        # G = g / bs (the batch mean) is folded into the products as alpha
        scale = 1.0 / bs
        torch.baddbmm(self.gW_out, post.transpose(1, 2), g, beta=0.0, alpha=scale, out=self.gW_out)
        torch.mean(g, dim=1, out=self.gb_out)
        dpost = torch.baddbmm(self.dpost_buf[: S * bs].view(S, bs, H), g,
                              self.W_out3.transpose(1, 2), beta=0.0, alpha=scale)  # [S, bs, H]
        dpre = torch.ops.aten.threshold_backward(dpost, post, 0.0)
        torch.sum(dpre, dim=1, out=self.gb_in)
        self.gW_in2.zero_()
        d = dpre.view(S * bs, H)
        self.gW_in2.index_add_(0, rows_a, d)
        self.gW_in2.index_add_(0, rows_b, d)
        self._adamw()

    def _adamw(self) -> None:
        """One step of torch's AdamW (the kernel `AdamW(fused=True)` runs) on the flat buffer."""
        t = self.tcfg
        self.step_count += 1
        torch._fused_adamw_(
            [self.flat], [self.grad], [self.exp_avg], [self.exp_avg_sq], [], [self.step_count],
            lr=t.lr, beta1=t.beta1, beta2=t.beta2, weight_decay=t.weight_decay, eps=t.eps,
            amsgrad=False, maximize=False,
        )

    def run_epoch(self) -> None:
        """Train one epoch for every seed and record its history row.

        With `overlap` on (a CPU run on one thread), this epoch's validation pass (and, with the
        torch backend, the next epoch's batch schedule) runs on a helper thread, on a snapshot
        of the parameters, while the next epoch trains; the numbers are the same either way.
        `sync()` waits for it.
        """
        if self.epoch >= self.tcfg.epochs:
            raise RuntimeError("all epochs are done")
        if self.backend == "c":  # the batch order is computed in C, from these prefixes
            prefixes = torch.tensor([hash_prefix(s, STREAM_SHUFFLE, self.epoch)
                                     for s in self.seeds], dtype=torch.int64)
            out = torch.empty(self.S, 2, dtype=torch.float64)
            self._over_seeds(self.kernel.train, self.flat, self.exp_avg, self.exp_avg_sq,
                             self.train_idx, prefixes, step=int(self.step_count), out=out,
                             workers=self.workers)
            self.step_count += self.steps_per_epoch
            self.history[self.epoch, :, :2] = out.to(self.history.dtype)
        else:
            if self._next_schedule is not None and self._next_schedule[0] == self.epoch:
                schedule = self._next_schedule[1].result()
            else:
                schedule = self._schedule(self.epoch)
            self._next_schedule = None
            if self.overlap and self.epoch + 1 < self.tcfg.epochs:
                self._next_schedule = (self.epoch + 1,
                                       self._pool().submit(self._schedule, self.epoch + 1))
            self._torch_epoch(schedule)
        epoch = self.epoch
        self.epoch += 1
        self._check_finite(epoch, self.history[epoch, :, 0])
        self.sync()  # the previous epoch's validation pass has had a whole epoch to finish
        if self.overlap:
            self._pending_eval = (epoch, self._pool().submit(self._validate, epoch,
                                                             self.flat.clone()))
        else:
            self._validate(epoch, self.flat)
            self._check_finite(epoch, self.history[epoch, :, 2])

    def _over_seeds(self, fn: Any, *args: Any, step: int | None = None, out: Tensor,
                    workers: int) -> None:
        """Run a C kernel call for all seeds over `workers` threads: a block of seeds per
        thread, or, with fewer seeds than threads, up to two threads per seed (the C kernel
        splits each step in two halves; the numbers are the same either way). Whether two
        threads per seed pay is measured as the run goes (`_PerSeedThreads`)."""
        S, choose = self.S, workers >= 2 * self.S
        training = step is not None
        inner = 1
        if choose:
            inner = self._per_seed.pick() if training else self._per_seed.best()
        k = max(1, min(workers // inner, S))
        blocks = [range(S * i // k, S * (i + 1) // k) for i in range(k)]
        extra = () if step is None else (step,)
        start = time.perf_counter()
        self._run_blocks(k, fn, args, blocks, extra, inner, out)
        if choose and training:
            self._per_seed.record(inner, time.perf_counter() - start)

    def _run_blocks(self, k: int, fn: Any, args: tuple, blocks: list[range], extra: tuple,
                    inner: int, out: Tensor) -> None:
        if k == 1:
            fn(*args, blocks[0], *extra, inner, out)
            return
        if self._workers_pool is None or self._workers_size != k - 1:
            if self._workers_pool is not None:
                self._workers_pool.shutdown()
            self._workers_pool = ThreadPoolExecutor(max_workers=k - 1,
                                                    thread_name_prefix="hooked-mlp-seeds")
            self._workers_size = k - 1
        futures = [self._workers_pool.submit(fn, *args, b, *extra, inner, out)
                   for b in blocks[1:]]
        fn(*args, blocks[0], *extra, inner, out)
        for f in futures:
            f.result()

    def _torch_epoch(self, schedule: list[tuple[Tensor, Tensor, Tensor, Tensor, int, int]]) -> None:
        """The torch backend's epoch: every step, then the history row's train columns."""
        S, n = self.S, self.n_train
        logit_y, logit_max, p_max = (torch.empty(S * n, device=self.device) for _ in range(3))
        for bags, ra, rb, tgt, bs, off in schedule:
            span = slice(off, off + S * bs)
            self._step(bags, ra, rb, tgt, bs, logit_y[span], logit_max[span], p_max[span])
        B = self.tcfg.batch_size
        n_full, rest = divmod(n, B)
        # Per-sample loss -log p(y) = (max logit - logit_y) - log p_max: no term can underflow
        # (p_max >= 1/p). A sample counts as right when its logit is the largest.
        # The buffers are laid out [step, seed, sample]; each seed's values are put back in batch
        # order, [S, n], before summing, so that a seed's history is bit-identical whichever
        # seeds share its run.
        def per_seed(t: Tensor) -> Tensor:
            full = t[: n_full * S * B].view(n_full, S, B).transpose(0, 1).reshape(S, -1)
            return torch.cat([full, t[n_full * S * B :].view(S, rest)], dim=1)

        loss = (logit_max - logit_y).sub_(p_max.log_())
        self.history[self.epoch, :, 0] = per_seed(loss).sum(dim=1) / n
        self.history[self.epoch, :, 1] = per_seed((logit_y >= logit_max).float()).sum(dim=1) / n

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
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hooked-mlp")
        return self._executor

    def close(self) -> None:
        """Finish pending work and stop the helper thread."""
        try:
            self.sync()
        finally:
            for pool in (self._executor, self._workers_pool):
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
            self._executor = self._workers_pool = None
            self._next_schedule = None

    def _rows(self, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For pair indices `[S, n]`: their `W_in` rows for `a` and for `b`, and their labels."""
        p = self.cfg.p
        return (self.a_of[idx] + self.row_offset, self.b_of[idx] + self.row_offset + p,
                self.labels[idx])

    def _eval_bags(self, split: str) -> tuple[Tensor, Tensor]:
        """Bag rows `[S, n, 2]` and labels `[S, n]` of a whole split (built once, then kept).

        The validation side is built in `__init__`, before any helper thread reads it.
        """
        cache = self._eval_cache
        if split not in cache:
            if split == "train":
                rows_a, rows_b, labels = self.train_rows_a, self.train_rows_b, self.train_labels
            else:
                rows_a, rows_b, labels = self._rows(self.val_idx)
            cache[split] = (torch.stack([rows_a, rows_b], -1), labels)
        return cache[split]

    @torch.no_grad()
    def evaluate(self, split: str, flat: Tensor | None = None,
                 parallel: bool = True) -> tuple[Tensor, Tensor]:
        """Mean cross-entropy and accuracy of every seed on a whole split: `[S]`, `[S]`.

        `flat` evaluates a copy of the parameter buffer instead of the live one. `parallel`
        False keeps the C backend on the calling thread (the helper thread runs beside the
        training).
        """
        flat = self.flat if flat is None else flat
        if self.backend == "c":
            out = torch.empty(self.S, 2, dtype=torch.float64)
            pairs = self.train_idx if split == "train" else self.val_idx
            self._over_seeds(self.kernel.evaluate, flat, pairs, out=out,
                             workers=self.workers if parallel else 1)
            return out[:, 0].float(), out[:, 1].float()
        bags, labels = self._eval_bags(split)
        S, p, H = self.S, self.cfg.p, self.cfg.d_hidden
        W_in2 = self._block(flat, "W_in").view(S * 2 * p, H)
        b_in3 = self._block(flat, "b_in").view(S, 1, H)
        W_out3 = self._block(flat, "W_out")
        b_out3 = self._block(flat, "b_out").view(S, 1, p)
        n = bags.shape[1]
        chunk = max(1, EVAL_CHUNK_ELEMENTS // (S * p))
        loss = torch.zeros(S, device=self.device)
        hits = torch.zeros(S, device=self.device)
        for lo in range(0, n, chunk):
            part = bags[:, lo : lo + chunk]
            m = part.shape[1]
            pre = F.embedding_bag(part.reshape(S * m, 2), W_in2, mode="sum").view(S, m, H)
            post = pre.add_(b_in3).relu_()
            logp = torch.log_softmax(torch.baddbmm(b_out3, post, W_out3), -1)
            lp_y = logp.gather(2, labels[:, lo : lo + chunk].unsqueeze(-1)).squeeze(-1)  # [S, m]
            loss -= lp_y.sum(1)
            hits += (lp_y >= logp.amax(-1)).sum(1)
        return loss / n, hits / n

    def final_metrics(self) -> list[dict[str, float]]:
        """Loss and accuracy of each seed on the whole train and validation splits."""
        self.sync()
        tl, ta = self.evaluate("train")
        vl, va = self.evaluate("val")
        return [
            {
                "train_loss": float(tl[s]), "train_acc": float(ta[s]),
                "val_loss": float(vl[s]), "val_acc": float(va[s]),
                "epochs": self.epoch, "n_train": self.n_train, "n_val": self.n_val,
            }
            for s in range(self.S)
        ]

    def history_of(self, s: int) -> dict[str, list[float]]:
        self.sync()
        h = self.history[: self.epoch, s].cpu()
        return {key: h[:, i].tolist() for i, key in enumerate(HISTORY_KEYS)}

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

    def load_state(self, tensors: dict[str, Tensor], epoch: int, path: str) -> None:
        """Restore a state written by `state_tensors` (shapes checked against this run)."""
        expect = {
            "flat": tuple(self.flat.shape), "exp_avg": tuple(self.flat.shape),
            "exp_avg_sq": tuple(self.flat.shape), "step": (1,),
            "history": (epoch, self.S, 4),
        }
        for key, shape in expect.items():
            t = tensors.get(key)
            if t is None or tuple(t.shape) != shape or t.dtype != torch.float32:
                problem = f"tensor {key!r} is missing or not float32 {list(shape)}"
                raise CheckpointError(path, problem)
        if not 0 <= epoch <= self.tcfg.epochs:
            raise CheckpointError(path, f"epoch {epoch} is outside [0, {self.tcfg.epochs}]")
        self.flat.copy_(tensors["flat"])
        self.exp_avg.copy_(tensors["exp_avg"])
        self.exp_avg_sq.copy_(tensors["exp_avg_sq"])
        self.step_count.copy_(tensors["step"][0])
        self.history[:epoch] = tensors["history"].to(self.device)
        self.epoch = epoch

    def all_finite(self) -> bool:
        return bool(torch.isfinite(self.flat).all())


# --------------------------------------------------------------------------------- driving
def _progress_bar(trainer: BatchedTrainer, enabled: bool):
    from tqdm.auto import tqdm

    label = f"seed {trainer.seeds[0]}" if trainer.S == 1 else f"{trainer.S} seeds"
    return tqdm(
        total=trainer.tcfg.epochs, initial=trainer.epoch, disable=not enabled, unit="epoch",
        desc=f"train {label}", dynamic_ncols=True, file=sys.stderr,
    )


def _drive(
    trainer: BatchedTrainer,
    *,
    threads: int,
    progress: bool,
    on_checkpoint: Any = None,
    checkpoint_every: int = 0,
) -> float:
    """Run the remaining epochs; returns the wall time spent."""
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
                val = trainer.history[max(0, trainer.epoch - 2), :, 3]
                loss, acc = float(h[:, 0].mean()), float(val.mean())
                bar.set_postfix(train_loss=f"{loss:.3g}", val_acc=f"{acc:.4f}")
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


def _results(trainer: BatchedTrainer, threads: int, wall_s: float,
             command: str | None) -> list[tuple[dict[str, Tensor], TrainInfo]]:
    """Each seed's final parameters and training record (metrics measured on whole splits)."""
    with torch_threads(threads), contextlib.closing(trainer):  # no worker threads left behind
        metrics = trainer.final_metrics()
    prov = _provenance(trainer, threads, wall_s, command)
    return [(trainer.params_of(s), trainer.info_of(s, metrics[s], prov))
            for s in range(trainer.S)]


def _provenance(trainer: BatchedTrainer, threads: int, wall_s: float, command: str | None):
    return {
        "trained_by": "hooked_mlp",
        "hooked_mlp": _package_version(),
        "torch": torch.__version__,
        "device": str(trainer.device),
        "backend": trainer.backend,
        "threads": threads,
        "batched_seeds": trainer.seeds,
        "wall_s": round(wall_s, 3),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
    }


def _resolve(
    cfg: MLPConfig | None, tcfg: TrainConfig | None, seeds: Sequence[int] | None,
    device: str | torch.device, threads: int | None, backend: str,
) -> tuple[MLPConfig, TrainConfig, list[int], int, str]:
    cfg = MLPConfig() if cfg is None else cfg
    tcfg = TrainConfig() if tcfg is None else tcfg
    if not isinstance(cfg, MLPConfig):
        raise TypeError(f"cfg must be an MLPConfig, got {type(cfg).__name__}")
    if not isinstance(tcfg, TrainConfig):
        raise TypeError(f"tcfg must be a TrainConfig, got {type(tcfg).__name__}")
    seed_list = check_seeds([tcfg.seed] if seeds is None else seeds)
    dev = check_device(device)
    n_train_pairs(cfg.p, tcfg.train_frac)  # both splits non-empty, checked before any file
    chosen = resolve_backend(backend, dev)
    n = default_threads(len(seed_list), dev, chosen) if threads is None else threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    return cfg, tcfg, seed_list, n, chosen


def train_many(
    cfg: MLPConfig | None = None,
    tcfg: TrainConfig | None = None,
    seeds: Sequence[int] = (0,),
    *,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    progress: bool = True,
    backend: str = "auto",
) -> list[tuple[HookedMLP, dict[str, list[float]]]]:
    """Train one model per seed in a single batched run: `[(model, history), ...]`.

    On the CPU each seed's model is bit-identical to the one `train` gives for that seed alone
    (same initialisation, same batches, per-seed arithmetic independent of the others).
    `tcfg.seed` is ignored; `tcfg.split_seed` (if set) gives every seed the same split,
    otherwise each seed has its own. `backend` is `"auto"`, `"c"` or `"torch"`: see
    `hooked_mlp.cpu_kernel`.
    """
    from hooked_mlp.model import HookedMLP

    cfg, tcfg, seed_list, n_threads, chosen = _resolve(cfg, tcfg, seeds, device, threads,
                                                       backend)
    trainer = BatchedTrainer(cfg, tcfg, seed_list, device, chosen)
    wall = _drive(trainer, threads=n_threads, progress=progress)
    out = []
    for params, info in _results(trainer, n_threads, wall, None):
        model = HookedMLP.from_params(cfg, params, train_info=info).to(trainer.device)
        out.append((model, info.history))
    return out


def train(
    cfg: MLPConfig | None = None,
    tcfg: TrainConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    progress: bool = True,
    backend: str = "auto",
) -> tuple[HookedMLP, dict[str, list[float]]]:
    """Train one model with the recipe `tcfg` (default: the seed recipe): `(model, history)`.

    `history` maps `train_loss`, `train_acc`, `val_loss`, `val_acc` to one value per epoch;
    `model.train_info` also holds the split, the final metrics and the provenance.
    Deterministic: the same configs, device and backend give bit-identical weights (on the
    CPU whatever the thread count).
    """
    tcfg = TrainConfig() if tcfg is None else tcfg
    if not isinstance(tcfg, TrainConfig):
        raise TypeError(f"tcfg must be a TrainConfig, got {type(tcfg).__name__}")
    return train_many(
        cfg, tcfg, [tcfg.seed], device=device, threads=threads, progress=progress,
        backend=backend,
    )[0]


# --------------------------------------------------------------------------------- run folders
class _RunLock:
    """An exclusive `flock` on `DIR/.lock`; released by the OS even if the process is killed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.fd: int | None = None

    def __enter__(self) -> _RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(
                f"another hooked-mlp train is writing to {self.folder} (it holds {path}); "
                "wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def model_path(folder: Path, seed: int) -> Path:
    return Path(folder) / f"seed-{seed}.safetensors"


def _write_state(folder: Path, trainer: BatchedTrainer, threads: int, every: int, wall_s: float,
                 command: str | None) -> None:
    meta = {
        "kind": "train-state",
        "config": trainer.cfg.to_dict(),
        "train_config": trainer.tcfg.to_dict(),
        "seeds": trainer.seeds,
        "epoch": trainer.epoch,
        "device": str(trainer.device),
        "backend": trainer.backend,
        "threads": threads,
        "checkpoint_every": every,
        "wall_s": wall_s,
        "command": command,
    }
    write_safetensors(folder / STATE_FILE, trainer.state_tensors(), meta)


def _finish(folder: Path, trainer: BatchedTrainer, threads: int, wall_s: float,
            command: str | None) -> list[Path]:
    paths = []
    results = _results(trainer, threads, wall_s, command)
    for seed, (params, info) in zip(trainer.seeds, results, strict=True):
        path = model_path(folder, seed)
        write_model(path, trainer.cfg, params, info)
        paths.append(path)
    (folder / STATE_FILE).unlink(missing_ok=True)
    return paths


def _run_folder(
    folder: Path, trainer: BatchedTrainer, *, threads: int, progress: bool, checkpoint_every: int,
    wall_before: float, command: str | None,
) -> list[Path]:
    started = time.perf_counter()

    def checkpoint(t: BatchedTrainer) -> None:
        wall = wall_before + time.perf_counter() - started
        _write_state(folder, t, threads, checkpoint_every, wall, command)

    try:
        _drive(trainer, threads=threads, progress=progress, on_checkpoint=checkpoint,
               checkpoint_every=checkpoint_every)
    except TrainingDivergedError as e:
        state = folder / STATE_FILE
        kept = (
            f"the last good checkpoint is kept in {state}" if state.exists()
            else "no checkpoint had been written (use --checkpoint-every)"
        )
        raise TrainingDivergedError(f"{e}; {kept}") from None
    wall = wall_before + time.perf_counter() - started
    return _finish(folder, trainer, threads, wall, command)


def _check_checkpoint_every(checkpoint_every: int) -> int:
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or (
        checkpoint_every < 0
    ):
        raise ValueError(
            f"checkpoint_every must be a non-negative integer (0: never), got {checkpoint_every!r}"
        )
    return checkpoint_every


def train_run(
    out_dir: str | os.PathLike[str],
    cfg: MLPConfig | None = None,
    tcfg: TrainConfig | None = None,
    seeds: Sequence[int] | None = None,
    *,
    checkpoint_every: int = 0,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    progress: bool = True,
    command: str | None = None,
    backend: str = "auto",
) -> list[Path]:
    """Train into the folder `out_dir`: one `seed-<s>.safetensors` per seed; returns their paths.

    Every `checkpoint_every` epochs the whole run state (parameters, AdamW moments and step,
    epoch, history) is written atomically to `out_dir/state.safetensors`, so an interrupted run
    continues with `resume_run(out_dir)` to bit-identical weights. The folder is locked while
    the run lasts; a second run into it is refused.
    """
    cfg, tcfg, seed_list, n_threads, chosen = _resolve(cfg, tcfg, seeds, device, threads,
                                                       backend)
    every = _check_checkpoint_every(checkpoint_every)
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"out_dir must be a folder, but {folder} is a file")
    with _RunLock(folder):
        if (folder / STATE_FILE).exists():
            raise ValueError(
                f"{folder} holds an unfinished run; continue it with "
                f"`hooked-mlp train --resume {folder}` or choose another --out"
            )
        existing = [model_path(folder, s) for s in seed_list if model_path(folder, s).exists()]
        if existing:
            raise ValueError(
                f"{existing[0]} already exists; choose another --out or remove it first"
            )
        trainer = BatchedTrainer(cfg, tcfg, seed_list, device, chosen)
        if every:
            _write_state(folder, trainer, n_threads, every, 0.0, command)
        return _run_folder(folder, trainer, threads=n_threads, progress=progress,
                           checkpoint_every=every, wall_before=0.0, command=command)


def resume_run(
    out_dir: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    threads: int | None = None,
    progress: bool = True,
    checkpoint_every: int | None = None,
    backend: str | None = None,
) -> list[Path]:
    """Continue the run in `out_dir` from its last checkpoint to the end.

    By default on the device, backend and thread count the run started with, which makes the
    final weights bit-identical to an uninterrupted run on the CPU.
    """
    folder = Path(out_dir)
    state = folder / STATE_FILE
    if not folder.is_dir():
        raise ValueError(f"resume needs a run folder, but {folder} is not a folder")
    with _RunLock(folder):
        if not state.exists():
            finished = sorted(folder.glob("seed-*.safetensors"))
            if finished:
                raise ValueError(f"the run in {folder} is already finished ({finished[0].name})")
            raise ValueError(f"{folder} holds no run to resume (no {STATE_FILE})")
        name = str(state)
        doc, tensors = read_safetensors(state, "train-state")
        cfg = _config(name, MLPConfig, doc.get("config"), "model config")
        tcfg = _config(name, TrainConfig, doc.get("train_config"), "training config")
        seeds = doc.get("seeds")
        epoch = doc.get("epoch")
        if not isinstance(seeds, list) or not isinstance(epoch, int):
            raise CheckpointError(name, "corrupt metadata: 'seeds' or 'epoch' missing")
        try:
            seeds = check_seeds(seeds)
        except (TypeError, ValueError) as e:
            raise CheckpointError(name, f"invalid seeds: {e}") from None
        dev = doc.get("device", "cpu") if device is None else device
        n_threads = int(doc.get("threads", 1)) if threads is None else threads
        every = _check_checkpoint_every(
            doc.get("checkpoint_every", 0) if checkpoint_every is None else checkpoint_every
        )
        chosen = doc.get("backend", "torch") if backend is None else backend
        if chosen not in BACKENDS:
            raise CheckpointError(name, f"unknown backend {chosen!r}")
        if backend is None and chosen == "c" and (
            check_device(dev).type != "cpu" or not cpu_kernel.available()
        ):
            # the run's own backend cannot run here: continue on torch's (the weights then
            # match an uninterrupted run to float tolerance, not bit for bit; the provenance
            # records the backend that finished the run)
            chosen = "torch"
        trainer = BatchedTrainer(cfg, tcfg, seeds, dev, chosen)
        trainer.load_state(tensors, epoch, name)
        return _run_folder(folder, trainer, threads=n_threads, progress=progress,
                           checkpoint_every=every, wall_before=float(doc.get("wall_s", 0.0)),
                           command=doc.get("command"))
