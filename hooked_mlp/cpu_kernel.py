"""The compiled CPU kernel (`hooked_mlp/_cpu_kernel.c`) and which backend a run uses.

The trainer has two backends that compute the same steps (see `hooked_mlp.training`):

- `"c"`: whole epochs in C (batch order, forward, backward, AdamW, validation), one seed after
  another, with the three matrix products in the BLAS that SciPy ships (called through
  `scipy.linalg.cython_blas`, one BLAS thread per caller). Several seeds run on several
  threads, a block of seeds per thread, with no synchronisation inside an epoch; a seed alone
  can use two threads, one half of every batch each, with the same numbers as one thread.
  CPU only; the extension is built when the package is installed.
- `"torch"`: the same steps as batched torch ops; any device. The CPU falls back to it when the
  extension is missing (installed without a C compiler).

`"auto"` (the default) picks `"c"` on the CPU when it is available. The environment variable
`HOOKED_MLP_BACKEND` (`auto`, `c` or `torch`) sets what `"auto"` means, for example to run the
test suite on the torch path. The two backends round differently (different summation orders),
so their weights agree to float tolerance, not bit for bit; each is deterministic, and the
backend is recorded in every model's provenance.
"""

from __future__ import annotations

import functools
import os
import warnings
from types import ModuleType

import torch
from torch import Tensor

BACKENDS = ("auto", "c", "torch")
ENV_VAR = "HOOKED_MLP_BACKEND"


@functools.cache
def _load() -> tuple[ModuleType | None, str]:
    """The initialised extension, or None and why not."""
    try:
        from hooked_mlp import _cpu_kernel
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


def available() -> bool:
    """Whether the C backend can run here."""
    return _load()[0] is not None


def _check_name(backend: object, source: str) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"{source} must be one of 'auto', 'c', 'torch', got {backend!r}")
    return backend


def resolve_backend(backend: str, device: torch.device) -> str:
    """`"c"` or `"torch"`: the backend a run on `device` uses when `backend` is asked for."""
    _check_name(backend, "backend")
    if backend == "auto":
        backend = _check_name(os.environ.get(ENV_VAR, "auto"),
                              f"the environment variable {ENV_VAR}")
    if backend == "torch":
        return "torch"
    if device.type != "cpu":
        if backend == "c":
            raise ValueError(f"backend='c' runs on the CPU only, got device={str(device)!r}")
        return "torch"
    module, why = _load()
    if module is None:
        if backend == "c":
            raise ValueError(f"backend='c' was asked for but {why}")
        return "torch"
    return "c"


def _ptr(t: Tensor, dtype: torch.dtype) -> int:
    if t.dtype != dtype or not t.is_contiguous() or t.device.type != "cpu":
        raise ValueError(f"the C kernel needs a contiguous CPU {dtype} tensor, got "
                         f"{t.dtype} on {t.device} (contiguous: {t.is_contiguous()})")
    return t.data_ptr()


class EpochKernel:
    """Calls into the C kernel for a trainer's buffers (see `BatchedTrainer`).

    `offsets` are where `W_in`, `b_in`, `W_out` and `b_out` start in the flat buffers; each
    block holds all seeds, one after another. `a_of`, `b_of` and `labels` map a pair index to
    its tokens and label; `pairs` tensors hold pair indices `[S, n]` in the order to use.
    """

    def __init__(self, *, offsets: tuple[int, int, int, int], p: int, d_hidden: int,
                 batch_size: int, a_of: Tensor, b_of: Tensor, labels: Tensor, lr: float,
                 betas: tuple[float, float], weight_decay: float, eps: float) -> None:
        module, why = _load()
        if module is None:
            raise RuntimeError(why)
        self._k = module
        self.offsets = tuple(int(o) for o in offsets)
        self.p, self.H, self.B = p, d_hidden, batch_size
        self.a_of, self.b_of, self.labels = (t.contiguous() for t in (a_of, b_of, labels))
        self.recipe = (float(lr), float(betas[0]), float(betas[1]), float(weight_decay),
                       float(eps))

    def _check(self, pairs: Tensor, seeds: range, out: Tensor, *flats: Tensor) -> int:
        """Shapes the C code relies on: it reads and writes through raw pointers."""
        S = pairs.shape[0]
        if pairs.ndim != 2 or not 0 <= seeds.start <= seeds.stop <= S or out.shape != (S, 2):
            raise ValueError(f"the C kernel got pairs {tuple(pairs.shape)}, seeds {seeds} and "
                             f"out {tuple(out.shape)}")
        end = self.offsets[3] + S * self.p  # b_out, the last block, holds S * p values
        for flat in flats:
            if flat.numel() < end:
                raise ValueError(f"the C kernel needs parameter buffers of at least {end} "
                                 f"values for {S} seeds, got {flat.numel()}")
        if pairs.numel():
            lo, hi = torch.aminmax(pairs)
            if int(lo) < 0 or int(hi) >= self.a_of.numel():
                raise ValueError(f"pair indices must be in [0, {self.a_of.numel()})")
        return pairs.shape[1]

    def train(self, flat: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, train_idx: Tensor,
              prefixes: Tensor, seeds: range, step0: int, threads: int, out: Tensor) -> None:
        """One epoch for seeds `seeds` (a range of rows) after AdamW step `step0`.

        `train_idx` `[S, n]` holds each seed's train pairs in ascending order and `prefixes`
        `[S]` the hash prefix of this epoch's batch order (`hooked_mlp.data.hash_prefix`).
        Each seed runs on `threads` threads (1 or 2; the same numbers either way). Writes each
        seed's mean train loss and accuracy (each sample measured in its batch, before the
        batch's update) into `out` float64 `[S, 2]`.
        """
        n = self._check(train_idx, seeds, out, flat, exp_avg, exp_avg_sq)
        if prefixes.shape != (train_idx.shape[0],):
            raise ValueError(f"prefixes must be [{train_idx.shape[0]}], got "
                             f"{tuple(prefixes.shape)}")
        self._k.train_epoch(
            _ptr(flat, torch.float32), _ptr(exp_avg, torch.float32),
            _ptr(exp_avg_sq, torch.float32), self.offsets, seeds.start, seeds.stop,
            self.p, self.H, self.p, self.B, n, _ptr(train_idx, torch.int64),
            _ptr(prefixes, torch.int64), _ptr(self.a_of, torch.int64),
            _ptr(self.b_of, torch.int64), _ptr(self.labels, torch.int64), int(step0),
            *self.recipe, int(threads), _ptr(out, torch.float64),
        )

    def evaluate(self, flat: Tensor, pairs: Tensor, seeds: range, threads: int,
                 out: Tensor) -> None:
        """Mean cross-entropy and accuracy on `pairs` for seeds `seeds`, into `out` `[S, 2]`
        (`threads` 1 or 2: the same numbers either way)."""
        n = self._check(pairs, seeds, out, flat)
        self._k.evaluate(
            _ptr(flat, torch.float32), self.offsets, seeds.start, seeds.stop, self.p, self.H,
            self.p, n, _ptr(pairs, torch.int64), _ptr(self.a_of, torch.int64),
            _ptr(self.b_of, torch.int64), _ptr(self.labels, torch.int64), int(threads),
            _ptr(out, torch.float64),
        )


def shuffle(prefix: int, n: int) -> Tensor:
    """The C kernel's batch order for a draw with hash prefix `prefix`: int64 `[n]`."""
    module, why = _load()
    if module is None:
        raise RuntimeError(why)
    out = torch.empty(n, dtype=torch.int64)
    module.shuffle(prefix, n, out.data_ptr())
    return out
