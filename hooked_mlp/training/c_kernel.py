"""The optional C training kernel (`hooked_mlp/training/_c_kernel.c`): a thin wrapper over it.

The kernel is an accelerator for one family of models: it trains whole epochs of a
one-hidden-layer ReLU MLP with biases and one-hot inputs on the CPU (batch order, forward,
backward, AdamW, and the evaluation passes), with the three matrix products in the BLAS that SciPy
ships, held to one BLAS thread per caller. `supports(cfg)` says whether it can train a model
configuration; everything else trains on the general torch path, which this kernel must match
(to float tolerance: the two round differently).

A call runs on the calling thread with the GIL released and keeps no state between calls, so the
caller trains many seeds in parallel by calling from several threads, each with its own block of
seeds (`seeds` ranges that do not overlap). A seed's numbers do not depend on which seeds share
its call or its thread. Which path a run takes is decided elsewhere; this module only says
whether the kernel is here (`available`) and what it accepts (`supports`); the choice is made in
`hooked_mlp.training.backends`.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import fields
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hooked_mlp.config import MLPConfig, role

_MAX_P = 65_535  # the kernel's own limits (the C file checks them too)
_MAX_HIDDEN = 2**31 - 2


@functools.cache
def _load() -> tuple[ModuleType | None, str]:
    """The initialised extension, or None and why not."""
    try:
        from hooked_mlp.training import _c_kernel as _cpu_kernel
    except ImportError as e:
        return None, f"the C kernel is not built ({e}); reinstall with a C compiler present"
    try:
        from scipy.linalg import cython_blas

        capsule = cython_blas.__pyx_capi__["sgemm"]
    except (ImportError, AttributeError, KeyError) as e:
        return None, f"SciPy's BLAS (scipy.linalg.cython_blas.sgemm) is not reachable ({e})"
    if _cpu_kernel.init(capsule) == "none":
        warnings.warn(
            "SciPy's BLAS is not OpenBLAS, so the C kernel cannot hold it to one thread per "
            "caller; if training is slow, set its own thread count to 1 (e.g. OMP_NUM_THREADS=1)",
            RuntimeWarning, stacklevel=3,
        )
    return _cpu_kernel, ""


def _module() -> ModuleType:
    module, why = _load()
    if module is None:
        raise RuntimeError(why)
    return module


def available() -> bool:
    """Whether the C kernel is built and has its BLAS here."""
    return _load()[0] is not None


def unavailable_reason() -> str:
    """Why the C kernel cannot run here; `""` when it can."""
    return _load()[1]


def supports(cfg: Any) -> str | None:
    """None when the kernel can train models of configuration `cfg` (an `MLPConfig`), else a
    short reason naming the field and value it does not support. Needs no extension."""
    # The kernel computes the study's structure: every field whose role is "structure" (see
    # hooked_mlp.config) at the study's value; sizes and data (p, d_hidden, the operation's
    # labels, the initial scale) may be anything within the kernel's limits.
    for f in fields(MLPConfig):
        if role(f) != "structure":
            continue
        value = getattr(cfg, f.name, f.default)
        if type(value) is not type(f.default) or value != f.default:
            return f"{f.name}={value!r} (the C kernel supports only {f.name}={f.default!r})"
    p, hidden = getattr(cfg, "p", None), getattr(cfg, "d_hidden", None)
    if not isinstance(p, int) or not 1 <= p <= _MAX_P:
        return f"p={p!r} (the C kernel supports 1 <= p <= {_MAX_P})"
    if not isinstance(hidden, int) or not 1 <= hidden <= _MAX_HIDDEN:
        return f"d_hidden={hidden!r} (the C kernel supports 1 <= d_hidden <= {_MAX_HIDDEN})"
    return None


def _array(t: Tensor, name: str, dtype: torch.dtype) -> np.ndarray:
    """`t`'s memory as a NumPy array (no copy); the kernel checks its layout and length."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu" or t.dtype != dtype:
        raise ValueError(f"{name} must be a CPU {dtype} tensor, got {t.dtype} on {t.device}")
    return t.detach().numpy()


def _span(seeds: range) -> tuple[int, int]:
    if not isinstance(seeds, range) or seeds.step != 1:
        raise ValueError(f"seeds must be a range with step 1, got {seeds!r}")
    return seeds.start, seeds.stop


class EpochKernel:
    """The C kernel set up for one trainer's buffers.

    Every parameter buffer (`flat`, `exp_avg`, `exp_avg_sq`) is one float32 tensor holding four
    blocks, `W_in` `[2p, H]`, `b_in` `[H]`, `W_out` `[H, p]` and `b_out` `[p]`, which start at
    `offsets`; each block holds all `S` seeds one after another. `a_of`, `b_of` and `labels` map
    a pair index to its tokens and label (copied and checked here, once). Tensors passed to the
    methods are used in place: CPU, contiguous, of the dtype each names.
    """

    def __init__(self, *, offsets: tuple[int, int, int, int], p: int, d_hidden: int,
                 batch_size: int, a_of: Tensor, b_of: Tensor, labels: Tensor, lr: float,
                 betas: tuple[float, float], weight_decay: float, eps: float) -> None:
        self.offsets = tuple(offsets)
        self.p, self.d_hidden, self.batch_size = p, d_hidden, batch_size
        self._kernel = _module().Kernel(
            p=p, d_hidden=d_hidden, batch_size=batch_size, offsets=self.offsets, lr=lr,
            beta1=betas[0], beta2=betas[1], weight_decay=weight_decay, eps=eps,
            **{name: np.ascontiguousarray(_array(t, name, torch.int64))  # copied in C anyway
               for name, t in (("a_of", a_of), ("b_of", b_of), ("labels", labels))},
        )

    def train(self, flat: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, train_idx: Tensor,
              prefixes: Tensor, seeds: range, step0: int, out: Tensor) -> None:
        """One epoch for the seeds (rows) `seeds` after AdamW step `step0`.

        `train_idx` int64 `[S, n]` holds each seed's train pairs in ascending order and
        `prefixes` int64 `[S]` the hash prefix of each seed's batch order this epoch
        (`hooked_mlp.data.hash_prefix(seed, STREAM_SHUFFLE, epoch)`). Each of the
        `ceil(n / batch_size)` steps takes the whole batch's gradient and one AdamW step. Writes
        each seed's mean train loss and accuracy (each sample measured in its batch, before the
        batch's update) into its row of `out` float64 `[S, 2]`.
        """
        s_lo, s_hi = _span(seeds)
        self._kernel.train_epoch(
            _array(flat, "flat", torch.float32), _array(exp_avg, "exp_avg", torch.float32),
            _array(exp_avg_sq, "exp_avg_sq", torch.float32),
            _array(train_idx, "train_idx", torch.int64), _array(prefixes, "prefixes", torch.int64),
            s_lo, s_hi, step0, _array(out, "out", torch.float64),
        )

    def evaluate(self, flat: Tensor, pairs: Tensor, seeds: range, out: Tensor) -> None:
        """Mean cross-entropy and accuracy of the seeds `seeds` on `pairs` int64 `[S, n]` (each
        seed's pair indices), into their rows of `out` float64 `[S, 2]`.

        A sample counts as right when its label is the argmax of its logits (the first largest, as
        `torch.argmax`: a tie with an earlier class is a miss). With no
        pairs (`n == 0`) the rows become NaN, the mean of nothing, without calling the kernel.
        """
        s_lo, s_hi = _span(seeds)
        pairs_a, out_a = _array(pairs, "pairs", torch.int64), _array(out, "out", torch.float64)
        if pairs_a.ndim == 2 and pairs_a.shape[1] == 0:
            S = pairs_a.shape[0]
            if out_a.shape != (S, 2) or not 0 <= s_lo <= s_hi <= S:
                raise ValueError(f"evaluate got pairs {tuple(pairs.shape)}, out "
                                 f"{tuple(out.shape)} and seeds {seeds}")
            out_a[s_lo:s_hi] = np.nan
            return
        self._kernel.evaluate(_array(flat, "flat", torch.float32), pairs_a, s_lo, s_hi, out_a)


def shuffle(prefix: int, n: int) -> Tensor:
    """The C kernel's batch order for a draw with hash prefix `prefix`: int64 `[n]` (equal to
    `hooked_mlp.data.permutations` for that draw)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    out = torch.empty(n, dtype=torch.int64)
    _module().shuffle(prefix, out.numpy())
    return out
