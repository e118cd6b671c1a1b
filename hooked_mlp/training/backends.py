"""How a `BatchedTrainer`'s epochs are computed: the general path, and the C accelerator.

- `"torch"`, the general path, for every member of the family on any device: the loss of `S`
  seeds at once from `hooked_mlp.functional.forward` (parameters stacked along a leading seed
  dimension, batched matrix products), its gradients derived by hand (`hooked_mlp.gradients`,
  tested equal to autograd through the same forward pass), and one step of torch's fused AdamW
  kernel on the trainer's flat parameter buffer.
- `"c"`, an optional accelerator (`hooked_mlp.training.c_kernel`, a C extension built at install
  time): whole epochs in C for the configurations it supports (the study's: one hidden ReLU
  layer, separate inputs, biases; any operation and modulus), on the CPU. Tests hold it to the
  general path for every configuration it accepts.

`"auto"` (the default) takes the C kernel where it is built and supports the run, and the
general path otherwise. The environment variable `HOOKED_MLP_BACKEND` (`auto`, `c` or `torch`)
sets what `"auto"` means. The two round differently (different summation orders), so their
weights agree to float tolerance, not bit for bit; each is deterministic, and the backend is
recorded in every model's provenance.

Both backends work on the trainer's state (`BatchedTrainer`: the flat buffers, the splits, the
pair tables) and offer `train_epoch(epoch) -> [S, 2]` (each seed's mean train loss and
accuracy over the epoch, each sample measured in its batch before the batch's update) and
`evaluate(flat, split, parallel) -> ([S], [S])` (mean loss and accuracy on a whole split). A
sample counts as right when its label is the argmax of its logits (the first largest, as
`logits.argmax(-1)`: a tie with an earlier class is a miss).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hooked_mlp import functional, gradients
from hooked_mlp.config import MLPConfig
from hooked_mlp.data import STREAM_SHUFFLE, hash_prefix, permutations
from hooked_mlp.training import c_kernel

if TYPE_CHECKING:
    from hooked_mlp.training.trainer import BatchedTrainer

BACKENDS = ("auto", "c", "torch")
ENV_VAR = "HOOKED_MLP_BACKEND"
EVAL_CHUNK_ELEMENTS = 1 << 22  # the widest activation held at once while evaluating: 16 MiB


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


def make_backend(trainer: BatchedTrainer) -> TorchBackend | CBackend:
    return CBackend(trainer) if trainer.backend == "c" else TorchBackend(trainer)


class TorchBackend:
    """The general path: `functional.forward` and its gradients, for `S` seeds at once."""

    name = "torch"

    def __init__(self, t: BatchedTrainer) -> None:
        self.t = t
        dev = t.device
        # Each parameter is a view of the flat buffer, `[S, *shape]`, made a leaf of autograd:
        # its gradient lands in the same place of the flat gradient buffer, so that AdamW
        # updates every parameter of every seed in one fused call.
        self.leaves = {name: t.param(name).requires_grad_() for name in t.names}
        for name, leaf in self.leaves.items():
            leaf.grad = t.block(t.grad, name)  # backward adds into it, in place
        # the gradients derived by hand (`hooked_mlp.gradients`; fewer operations, no graph:
        # see bench/members.py); `by_hand = False` takes them from autograd through the same
        # forward pass instead (the reference that tests and bench/members.py compare with)
        self.by_hand = True
        self.params = {name: t.param(name) for name in t.names}
        self.grads = {name: t.block(t.grad, name) for name in t.names}
        self.train_rows = functional.input_rows(t.cfg, t.tokens_of(t.train_idx))  # [S, n, 2]
        self.train_labels = t.labels[t.train_idx]  # [S, n]
        self.loss_buf = torch.empty(t.S, t.n_train, device=dev, dtype=t.dtype)
        self.hit_buf = torch.empty(t.S, t.n_train, dtype=torch.bool, device=dev)
        self._eval: dict[str, tuple[Tensor, Tensor]] = {}
        if t.n_val:
            self._eval["val"] = (t.tokens_of(t.val_idx), t.labels[t.val_idx])

    def schedule(self, epoch: int) -> list[tuple[Tensor, Tensor, int, int]]:
        """This epoch's steps: `(rows [S, bs, 2], labels [S, bs], start, bs)`; step `k` holds
        samples `k*B .. k*B + bs - 1` of every seed's shuffled train split, as the rows of
        `W_in` they select (`functional.input_rows`)."""
        t, B = self.t, self.t.tcfg.batch_size
        perm = permutations(t.seeds_t, STREAM_SHUFFLE, epoch, t.n_train)  # [S, n]
        rows = self.train_rows.gather(1, perm.unsqueeze(-1).expand(-1, -1, 2))
        labels = self.train_labels.gather(1, perm)
        # each step's rows laid out operand-major (`rows[..., 0]` and `rows[..., 1]` contiguous),
        # so that the lookups and the gradient's `index_add_` take them without a copy
        return [(rows[:, lo : lo + B].permute(2, 0, 1).contiguous().permute(1, 2, 0),
                 labels[:, lo : lo + B].contiguous(), lo, min(B, t.n_train - lo))
                for lo in range(0, t.n_train, B)]

    def train_epoch(self, epoch: int, schedule: Any = None) -> Tensor:
        t = self.t
        cfg, leaves, S, p = t.cfg, self.leaves, t.S, t.cfg.p
        grad, adamw = t.grad, t.adamw
        for rows, labels, lo, bs in (self.schedule(epoch) if schedule is None else schedule):
            if self.by_hand:
                per_sample, logits = gradients.loss_and_grads(cfg, self.params, rows, labels,
                                                              self.grads)
            else:
                grad.zero_()
                logits = functional.forward_rows(cfg, leaves, rows)  # [S, bs, p]
                per_sample = F.cross_entropy(logits.view(-1, p), labels.view(-1),
                                             reduction="none")
                # the sum over seeds of each seed's batch mean: each seed's gradient is that of
                # its own mean loss; it accumulates into the flat gradient buffer (see __init__)
                (per_sample.mean() if S == 1 else per_sample.sum().div(bs)).backward()
            with torch.no_grad():
                adamw()
                self.loss_buf[:, lo : lo + bs] = per_sample.view(S, bs)
                torch.eq(logits.argmax(-1), labels, out=self.hit_buf[:, lo : lo + bs])
        # per seed, in batch order: a seed's history does not depend on the seeds beside it
        n = t.n_train
        return torch.stack([self.loss_buf.sum(1) / n, self.hit_buf.sum(1, dtype=t.dtype) / n],
                           dim=1)

    @torch.no_grad()
    def evaluate(self, flat: Tensor, split: str, parallel: bool = True) -> tuple[Tensor, Tensor]:
        t = self.t
        if split not in self._eval:
            idx = t.train_idx if split == "train" else t.val_idx
            self._eval[split] = (t.tokens_of(idx), t.labels[idx])
        tokens, labels = self._eval[split]
        params = {name: t.block(flat, name) for name in t.names}
        n = tokens.shape[1]
        chunk = max(1, EVAL_CHUNK_ELEMENTS // (t.S * max(t.cfg.p, t.cfg.d_hidden)))
        loss = torch.zeros(t.S, dtype=torch.float64, device=t.device)
        hits = torch.zeros(t.S, dtype=torch.float64, device=t.device)
        for lo in range(0, n, chunk):
            logits = functional.forward(t.cfg, params, tokens[:, lo : lo + chunk])
            y = labels[:, lo : lo + chunk]
            logp_y = logits.log_softmax(-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
            loss -= logp_y.sum(1, dtype=torch.float64)
            hits += (logits.argmax(-1) == y).sum(1)
        return (loss / n).float(), (hits / n).float()

    def close(self) -> None:
        pass


class CBackend:
    """The C accelerator: whole epochs in C, a block of seeds per worker thread."""

    name = "c"

    def __init__(self, t: BatchedTrainer) -> None:
        self.t = t
        starts = [t.offsets[name] for name in ("W_in", "b_in", "W_out", "b_out")]
        self.kernel = c_kernel.EpochKernel(
            offsets=tuple(starts), p=t.cfg.p, d_hidden=t.cfg.d_hidden,
            batch_size=t.tcfg.batch_size, a_of=t.a_of, b_of=t.b_of, labels=t.labels,
            lr=t.tcfg.lr, betas=(t.tcfg.beta1, t.tcfg.beta2),
            weight_decay=t.tcfg.weight_decay, eps=t.tcfg.eps,
        )
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0

    def _over_seeds(self, fn: Any, *args: Any, out: Tensor, workers: int) -> None:
        """Run a kernel call for all seeds over `workers` threads, a block of seeds each."""
        S = self.t.S
        k = max(1, min(workers, S))
        blocks = [range(S * i // k, S * (i + 1) // k) for i in range(k)]
        if k == 1:
            fn(*args, blocks[0], out=out)
            return
        if self._pool is None or self._pool_size != k - 1:
            if self._pool is not None:
                self._pool.shutdown()
            self._pool = ThreadPoolExecutor(max_workers=k - 1,
                                            thread_name_prefix="hooked-mlp-seeds")
            self._pool_size = k - 1
        futures = [self._pool.submit(fn, *args, b, out=out) for b in blocks[1:]]
        fn(*args, blocks[0], out=out)
        for f in futures:
            f.result()

    def _train(self, prefixes: Tensor, step0: int, seeds: range, out: Tensor) -> None:
        t = self.t
        self.kernel.train(t.flat, t.exp_avg, t.exp_avg_sq, t.train_idx, prefixes, seeds, step0,
                          out)

    def train_epoch(self, epoch: int, schedule: Any = None) -> Tensor:
        t = self.t
        prefixes = torch.tensor([hash_prefix(s, STREAM_SHUFFLE, epoch) for s in t.seeds],
                                dtype=torch.int64)
        out = torch.empty(t.S, 2, dtype=torch.float64)
        self._over_seeds(self._train, prefixes, int(t.step_count), out=out, workers=t.workers)
        t.step_count += t.steps_per_epoch
        return out.float()

    def _evaluate(self, flat: Tensor, pairs: Tensor, seeds: range, out: Tensor) -> None:
        self.kernel.evaluate(flat, pairs, seeds, out)

    def evaluate(self, flat: Tensor, split: str, parallel: bool = True) -> tuple[Tensor, Tensor]:
        t = self.t
        out = torch.empty(t.S, 2, dtype=torch.float64)
        pairs = t.train_idx if split == "train" else t.val_idx
        self._over_seeds(self._evaluate, flat, pairs, out=out,
                         workers=t.workers if parallel else 1)
        return out[:, 0].float(), out[:, 1].float()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool, self._pool_size = None, 0

