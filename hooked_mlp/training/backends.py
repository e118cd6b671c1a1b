"""How the epochs of a `TrainState` are computed: the general path, and the C accelerator.

- `"torch"`, the general path, for every member of the family on any device: the loss of every
  run of a group at once from `hooked_mlp.functional.forward` (parameters stacked along a
  leading run dimension, batched matrix products), its gradients derived by hand
  (`hooked_mlp.gradients`, tested equal to autograd through the same forward pass), and one
  step of torch's fused AdamW (the kernel of `torch.optim.AdamW(fused=True)`: `fused_adamw`)
  per AdamW recipe, on the state's flat buffers.
- `"c"`, an optional accelerator (`hooked_mlp.training.c_kernel`): the training step in C for
  the configurations it supports (the study's structure: one hidden ReLU layer, separate
  inputs, biases; any operation, modulus, width and initial scale), on the CPU, the runs spread
  over threads. Tests hold it to the general path for every configuration it accepts.

`"auto"` (the default) takes the C kernel where it is built and supports the run, and the
general path otherwise. The environment variable `HOOKED_MLP_BACKEND` (`auto`, `c` or `torch`)
sets what `"auto"` means. The two round differently (different summation orders), so their
weights agree to float tolerance, not bit for bit; each is deterministic, and the backend is
recorded in every model's provenance.

Both follow one protocol (`Backend`) over the state alone (they never see the trainer):
`prepare(epoch)` computes an epoch's inputs (its batch order; a trainer may run it on a helper
thread ahead of time), `train_epoch(epoch, prepared)` trains every run for one epoch and returns
`[S, 2]` (each run's mean train loss and accuracy over the epoch, each sample measured in its
batch before the batch's update), `evaluate(flat, split, parallel)` returns `([S], [S])` (mean
loss and accuracy on a whole split; NaN for a run without that split), `use_threads(n)` spreads
the work over `n` CPU threads (returning the torch thread count to set) and `close()` frees
what it holds. A sample counts as right when its label is the argmax of its logits (the first
largest, as `logits.argmax(-1)`: a tie with an earlier class is a miss).
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim.adamw import adamw

from hooked_mlp import functional, gradients
from hooked_mlp.checks import cores
from hooked_mlp.config import MLPConfig
from hooked_mlp.data import STREAM_SHUFFLE, permutations
from hooked_mlp.training import c_kernel
from hooked_mlp.training.state import RECIPE_FIELDS, Group, TrainState

BACKENDS = ("auto", "c", "torch")
ENV_VAR = "HOOKED_MLP_BACKEND"
EVAL_CHUNK_ELEMENTS = 1 << 22  # the widest activation held at once while evaluating: 16 MiB


class Backend(Protocol):
    """What a trainer asks of a backend (see the module's docstring)."""

    name: str

    def use_threads(self, threads: int) -> int: ...
    def prepare(self, epoch: int) -> Any: ...
    def train_epoch(self, epoch: int, prepared: Any = None) -> Tensor: ...
    def evaluate(self, flat: Tensor, split: str, parallel: bool = True
                 ) -> tuple[Tensor, Tensor]: ...
    def close(self) -> None: ...


def _check_name(backend: object, source: str) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"{source} must be one of 'auto', 'c', 'torch', got {backend!r}")
    return backend


def resolve_backend(backend: str, device: torch.device, cfg: MLPConfig | None = None) -> str:
    """`"c"` or `"torch"`: the backend a run of `cfg` on `device` uses when `backend` is asked
    for (a ValueError when `"c"` is asked for and cannot run it, saying why)."""
    _check_name(backend, "backend")
    if backend == "auto":
        backend = _check_name(os.environ.get(ENV_VAR, "auto"),
                              f"the environment variable {ENV_VAR}")
    if backend == "torch":
        return "torch"
    why = None
    if device.type != "cpu":
        why = f"it runs on the CPU only, got device={str(device)!r}"
    elif not c_kernel.available():
        why = c_kernel.unavailable_reason()
    elif cfg is not None:
        why = c_kernel.supports(cfg)
    if why is None:
        return "c"
    if backend == "c":
        raise ValueError(f"backend='c' was asked for but {why}; use backend='torch' (or "
                         "'auto')")
    return "torch"


def default_threads(n_runs: int, device: str | torch.device = "cpu",
                    backend: str = "torch") -> int:
    """CPU threads a run of `n_runs` runs uses unless told otherwise (`backend`: `"c"` or
    `"torch"`).

    C backend: one thread per run up to the cores this process may use, each training a block
    of runs with no synchronisation inside an epoch; one run on one thread, with its validation
    pass on a helper thread. General path (torch's intra-op threads): one to three runs, 1
    thread (plus the helper): their steps are too small to split across cores, and with two
    threads the OpenMP barriers of every op stall whenever another process holds a core. Four
    runs or more: 2 threads, because batched matmuls over runs split across cores.
    """
    if torch.device(device).type != "cpu":
        return 1
    if backend == "c":
        return max(1, min(n_runs, cores()))
    return 1 if n_runs < 4 else max(1, min(2, cores()))


def fused_adamw(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
                exp_avg_sqs: list[Tensor], steps: list[Tensor], *, lr: float, beta1: float,
                beta2: float, weight_decay: float, eps: float) -> None:
    """One step of `torch.optim.AdamW(fused=True)` on these tensors (each with its own step
    count, incremented first, as the optimizer does).

    It calls the kernel the optimizer calls (`torch._fused_adamw_`), as the optimizer does: the
    public doors to it cost more than the step at this model's size (`bench/adamw.py`: on the
    study's buffer the optimizer class takes 62 us a step, the functional form 30-42 us, the
    kernel alone 21-28 us; through the functional form the general path's epoch is 9-11 %
    slower, its Python contending with the helper thread's). Tests hold the result bit-identical to
    `torch.optim.AdamW(fused=True)`; where a torch lacks the kernel, the functional form runs.
    """
    if _FUSED_ADAMW is None:
        adamw(params, grads, exp_avgs, exp_avg_sqs, [], steps, fused=True, amsgrad=False,
              maximize=False, lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay,
              eps=eps)
        return
    torch._foreach_add_(steps, 1)
    _FUSED_ADAMW(params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=lr, beta1=beta1,
                 beta2=beta2, weight_decay=weight_decay, eps=eps, amsgrad=False,
                 maximize=False)


_FUSED_ADAMW = getattr(torch, "_fused_adamw_", None)


def make_backend(name: str, state: TrainState) -> Backend:
    """The backend `name` (`"c"` or `"torch"`, as `resolve_backend` says) over `state`."""
    return CBackend(state) if name == "c" else TorchBackend(state)


def batch_orders(state: TrainState, epoch: int) -> list[Tensor]:
    """Each group's train pairs in the batch order of `epoch`: int64 `[k, n_train]` per group
    (`hooked_mlp.data.permutations` of each run's seed: the same whichever runs share it)."""
    return [g.train_idx.gather(1, permutations(g.seeds, STREAM_SHUFFLE, epoch, g.n_train))
            for g in state.groups]


def _split_pairs(g: Group, split: str) -> Tensor:
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return g.train_idx if split == "train" else g.val_idx


class TorchBackend:
    """The general path: `functional.forward` and its gradients, every run of a group at once."""

    name = "torch"

    def __init__(self, state: TrainState) -> None:
        self.s = s = state
        if not s.grad.numel():
            raise ValueError("the general path needs a state with a gradient buffer")
        cfg, names = s.cfg, s.names
        # each group's parameters and gradients: views `[k, *shape]` of the flat buffers
        self.params = [{n: s.view(s.flat, n)[g.rows.start : g.rows.stop] for n in names}
                       for g in s.groups]
        self.grads = [{n: s.view(s.grad, n)[g.rows.start : g.rows.stop] for n in names}
                      for g in s.groups]
        # the gradients derived by hand (`hooked_mlp.gradients`; fewer operations, no graph:
        # see bench/members.py); `by_hand = False` takes them from autograd through the same
        # forward pass instead (the reference that tests and bench/members.py compare with),
        # the parameters then being leaves whose gradients land in the gradient buffer
        self.by_hand = True
        self.leaves = [{n: s.view(s.flat, n)[g.rows.start : g.rows.stop].requires_grad_()
                        for n in names} for g in s.groups]
        for leaves, grads in zip(self.leaves, self.grads, strict=True):
            for n, leaf in leaves.items():
                leaf.grad = grads[n]  # backward adds into it, in place
        self.train_rows = [functional.input_rows(cfg, s.tokens_of(g.train_idx))
                           for g in s.groups]  # [k, n, 2]
        self.train_labels = [s.labels[g.train_idx] for g in s.groups]  # [k, n]
        self.loss_buf = [torch.empty(g.k, g.n_train, device=s.device, dtype=s.dtype)
                         for g in s.groups]
        self.hit_buf = [torch.empty(g.k, g.n_train, dtype=torch.bool, device=s.device)
                        for g in s.groups]
        self._eval: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}
        self._adamw = self._adamw_calls()

    def _adamw_calls(self) -> list[tuple[list[Tensor], ...]]:
        """One fused AdamW call per recipe, over the rows of every segment that has it: each a
        run-aligned slice of the flat buffers (so every value takes the kernel's vector path,
        whichever runs share the call), with a step count of its own."""
        s, R = self.s, self.s.layout.stride
        by_recipe: dict[tuple[float, ...], tuple[list[Tensor], ...]] = {}
        for seg in s.segments:
            lo, hi = seg.rows.start * R, seg.rows.stop * R
            lists = by_recipe.setdefault(seg.recipe, ([], [], [], [], []))
            for i, buf in enumerate((s.flat, s.grad, s.exp_avg, s.exp_avg_sq)):
                lists[i].append(buf[lo:hi])
            lists[4].append(torch.zeros((), device=s.device, dtype=s.dtype))
        return [(*lists, dict(zip(RECIPE_FIELDS, recipe, strict=True)))
                for recipe, lists in by_recipe.items()]

    def use_threads(self, threads: int) -> int:
        return threads  # torch's intra-op threads

    def adamw(self) -> None:
        """One step of torch's AdamW (`AdamW(fused=True)`'s kernel) on every run, each with its
        own recipe, the gradients being in the state's gradient buffer."""
        for params, grads, exp_avgs, exp_avg_sqs, steps, recipe in self._adamw:
            fused_adamw(params, grads, exp_avgs, exp_avg_sqs, steps, **recipe)

    def prepare(self, epoch: int) -> list[list[tuple[Tensor, Tensor, int, int]]]:
        """This epoch's steps, per group: `(rows [k, bs, 2], labels [k, bs], start, bs)`; step
        `j` holds samples `j*B .. j*B + bs - 1` of every run's shuffled train split, as the rows
        of `W_in` they select (`functional.input_rows`)."""
        out = []
        for g, rows_all, labels_all in zip(self.s.groups, self.train_rows, self.train_labels,
                                           strict=True):
            perm = permutations(g.seeds, STREAM_SHUFFLE, epoch, g.n_train)  # [k, n]
            rows = rows_all.gather(1, perm.unsqueeze(-1).expand(-1, -1, 2))
            labels = labels_all.gather(1, perm)
            B = g.batch_size
            # each step's rows laid out operand-major (`rows[..., 0]`, `rows[..., 1]`
            # contiguous), so that the lookups and the gradient's `index_add_` take them as
            # they are
            out.append([(rows[:, lo : lo + B].permute(2, 0, 1).contiguous().permute(1, 2, 0),
                         labels[:, lo : lo + B].contiguous(), lo, min(B, g.n_train - lo))
                        for lo in range(0, g.n_train, B)])
        return out

    def train_epoch(self, epoch: int, prepared: Any = None) -> Tensor:
        s = self.s
        schedule = self.prepare(epoch) if prepared is None else prepared
        for _, _, _, _, steps, _ in self._adamw:
            for t in steps:
                t.fill_(s.step)
        by_hand = self.by_hand
        # one no-grad scope for the epoch on the hand-derived path (a scope per step is Python
        # the helper thread's validation pass contends with); autograd's path needs its graph
        # and takes the scope for AdamW alone
        with torch.no_grad() if by_hand else contextlib.nullcontext():
            for j in range(s.steps_per_epoch):
                if not by_hand:
                    s.grad.zero_()
                for i in range(len(s.groups)):
                    rows, labels, lo, bs = schedule[i][j]
                    per_sample, logits = self._loss_and_grads(i, rows, labels)  # detached
                    self.loss_buf[i][:, lo : lo + bs] = per_sample.view(-1, bs)
                    torch.eq(logits.argmax(-1), labels, out=self.hit_buf[i][:, lo : lo + bs])
                if by_hand:
                    self.adamw()
                else:
                    with torch.no_grad():
                        self.adamw()
        # per run, in batch order: a run's history does not depend on the runs beside it
        out = torch.empty(s.S, 2, device=s.device, dtype=s.dtype)
        for g, loss, hit in zip(s.groups, self.loss_buf, self.hit_buf, strict=True):
            out[g.rows.start : g.rows.stop, 0] = loss.sum(1) / g.n_train
            out[g.rows.start : g.rows.stop, 1] = hit.sum(1, dtype=s.dtype) / g.n_train
        return out

    def _loss_and_grads(self, i: int, rows: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        cfg = self.s.cfg
        if self.by_hand:
            return gradients.loss_and_grads(cfg, self.params[i], rows, labels, self.grads[i])
        logits = functional.forward_rows(cfg, self.leaves[i], rows)  # [k, bs, p]
        per_sample = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
        # the sum over runs of each run's batch mean: each run's gradient is that of its own
        # mean loss; it accumulates into the flat gradient buffer (see __init__)
        k, bs = labels.shape
        with warnings.catch_warnings():  # rows of the flat buffer are strided, and so are their
            # gradients (the same strides): autograd adds into them in place all the same
            warnings.filterwarnings("ignore", message="grad and param do not obey")
            (per_sample.mean() if k == 1 else per_sample.sum().div(bs)).backward()
        return per_sample.detach(), logits.detach()

    @torch.no_grad()
    def evaluate(self, flat: Tensor, split: str, parallel: bool = True) -> tuple[Tensor, Tensor]:
        s = self.s
        loss = torch.full((s.S,), float("nan"), dtype=torch.float64, device=s.device)
        hits = torch.full((s.S,), float("nan"), dtype=torch.float64, device=s.device)
        for i, g in enumerate(s.groups):
            idx = _split_pairs(g, split)
            n = idx.shape[1]
            if not n:
                continue
            if (i, split) not in self._eval:
                self._eval[i, split] = (s.tokens_of(idx), s.labels[idx])
            tokens, labels = self._eval[i, split]
            params = {name: s.view(flat, name)[g.rows.start : g.rows.stop] for name in s.names}
            chunk = max(1, EVAL_CHUNK_ELEMENTS // (g.k * max(s.cfg.p, s.cfg.d_hidden)))
            total = torch.zeros(g.k, dtype=torch.float64, device=s.device)
            right = torch.zeros(g.k, dtype=torch.float64, device=s.device)
            for lo in range(0, n, chunk):
                logits = functional.forward(s.cfg, params, tokens[:, lo : lo + chunk])
                y = labels[:, lo : lo + chunk]
                logp_y = logits.log_softmax(-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
                total -= logp_y.sum(1, dtype=torch.float64)
                right += (logits.argmax(-1) == y).sum(1)
            loss[g.rows.start : g.rows.stop] = total / n
            hits[g.rows.start : g.rows.stop] = right / n
        return loss.float(), hits.float()

    def close(self) -> None:
        pass


class CBackend:
    """The C accelerator: the training step in C, blocks of runs on worker threads."""

    name = "c"

    def __init__(self, state: TrainState) -> None:
        self.s = s = state
        L = s.layout
        self.kernel = c_kernel.Kernel(
            p=s.cfg.p, d_hidden=s.cfg.d_hidden, n_runs=s.S, stride=L.stride,
            offsets=tuple(L.offsets[n] for n in ("W_in", "b_in", "W_out", "b_out")),
            a_of=s.a_of, b_of=s.b_of, labels=s.labels)
        self.recipes = s.recipes.contiguous()  # float64 [S, 5]
        self.workers = 1
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0

    def use_threads(self, threads: int) -> int:
        self.workers = threads
        return 1  # the kernel's threads are its own: torch's ops around it take one

    def prepare(self, epoch: int) -> list[Tensor]:
        return batch_orders(self.s, epoch)

    def _blocks(self, workers: int, split: str) -> list[list[tuple[int, int, int]]]:
        """The rows cut into `workers` consecutive blocks of about equal work (each run's pairs
        of `split`), each as `(group, lo, hi)` pieces within one group."""
        s = self.s
        cost, cum = [], 0
        for g in s.groups:
            for _ in g.rows:
                cum += max(1, _split_pairs(g, split).shape[1])
                cost.append(cum)
        k = max(1, min(workers, s.S))
        cuts = [0] + [bisect.bisect_left(cost, cum * j / k) + 1 for j in range(1, k)] + [s.S]
        blocks = []
        for lo, hi in itertools.pairwise(cuts):
            pieces = [(i, max(lo, g.rows.start), min(hi, g.rows.stop))
                      for i, g in enumerate(s.groups)
                      if max(lo, g.rows.start) < min(hi, g.rows.stop)]
            if pieces:
                blocks.append(pieces)
        return blocks

    def _spread(self, fn: Any, workers: int, split: str) -> None:
        """`fn(pieces)` for each block of rows, on `workers` threads (this one among them)."""
        blocks = self._blocks(workers, split)
        if len(blocks) == 1:
            fn(blocks[0])
            return
        if self._pool is None or self._pool_size != len(blocks) - 1:
            if self._pool is not None:
                self._pool.shutdown()
            self._pool_size = len(blocks) - 1
            self._pool = ThreadPoolExecutor(max_workers=self._pool_size,
                                            thread_name_prefix="hooked-mlp-runs")
        futures = [self._pool.submit(fn, b) for b in blocks[1:]]
        fn(blocks[0])
        for f in futures:
            f.result()

    def train_epoch(self, epoch: int, prepared: Any = None) -> Tensor:
        s = self.s
        orders = self.prepare(epoch) if prepared is None else prepared
        out = torch.empty(s.S, 2, dtype=torch.float64)

        def train(pieces: list[tuple[int, int, int]]) -> None:
            for i, lo, hi in pieces:
                g = s.groups[i]
                a, b = lo - g.rows.start, hi - g.rows.start
                self.kernel.train_epoch(s.flat, s.exp_avg, s.exp_avg_sq, range(lo, hi),
                                        orders[i][a:b], g.batch_size, self.recipes[lo:hi],
                                        s.step, out[lo:hi])

        self._spread(train, self.workers, "train")
        return out.float()

    def evaluate(self, flat: Tensor, split: str, parallel: bool = True) -> tuple[Tensor, Tensor]:
        s = self.s
        out = torch.full((s.S, 2), float("nan"), dtype=torch.float64)

        def measure(pieces: list[tuple[int, int, int]]) -> None:
            for i, lo, hi in pieces:
                g = s.groups[i]
                pairs = _split_pairs(g, split)[lo - g.rows.start : hi - g.rows.start]
                self.kernel.evaluate(flat, range(lo, hi), pairs, out[lo:hi])

        self._spread(measure, self.workers if parallel else 1, split)
        return out[:, 0].float(), out[:, 1].float()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool, self._pool_size = None, 0
        self.kernel.close()
