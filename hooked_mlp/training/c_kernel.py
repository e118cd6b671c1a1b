"""The optional C training step (`hooked_mlp/training/_c_kernel.c`) and its `ctypes` binding.

The C file computes one family of models: one hidden ReLU layer with biases and one-hot inputs,
trained on the CPU (forward, loss, backward, AdamW; and the loss and accuracy of a split). Which
configurations that is, `supports(cfg)` derives from the config's field roles. Everything else
is decided here, in Python: the batch order (the caller passes each epoch's order, from
`hooked_mlp.data.permutations`), the layout of the buffers (`hooked_mlp.training.state`), the
BLAS (SciPy's `sgemm`, held to one thread by `threadpoolctl` while a `Kernel` lives, because the
parallelism is across runs), and every check of the arguments: the C library trusts what
`Kernel` passes it and is called from nowhere else.

A call runs on the calling thread with the GIL released (`ctypes`) and keeps no state, so the
caller trains many runs at once by calling from several threads, each with its own runs. A run's
numbers do not depend on which runs share its call or its thread. Which path a run takes is
decided in `hooked_mlp.training.backends`; this module says whether the library is here
(`available`) and what it accepts (`supports`).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import threading
import weakref
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hooked_mlp.config import MLPConfig, role

_MAX_P = 65_535  # pair indices a * p + b and the 2p rows of W_in stay far inside int32/int64
_MAX_HIDDEN = 2**31 - 2  # H + 1 is a BLAS int
_MAX_PAIRS = 2**31 - 1 - 512  # pairs per run in one call (the C loops count them in int32)
_ERRORS = {-1: (MemoryError, "the C kernel could not allocate its working memory"),
           -2: (RuntimeError, "a pair index changed during a C kernel call (another thread "
                "wrote to it)")}


class _Model(ctypes.Structure):
    _fields_ = [("sgemm", ctypes.c_void_p), ("p", ctypes.c_int32), ("H", ctypes.c_int32),
                ("stride", ctypes.c_int64), ("off", ctypes.c_int64 * 4),
                ("pairs", ctypes.c_void_p), ("n_pairs", ctypes.c_int64)]


_P = ctypes.c_void_p
_ARGS = {
    # model, runs, params, exp_avg, exp_avg_sq, order, n, batch, recipes, step0, out
    "hm_train_epoch": [ctypes.POINTER(_Model), ctypes.c_int64, _P, _P, _P, _P, ctypes.c_int32,
                       ctypes.c_int32, _P, ctypes.c_int64, _P],
    # model, runs, params, pairs, n, out
    "hm_evaluate": [ctypes.POINTER(_Model), ctypes.c_int64, _P, _P, ctypes.c_int32, _P],
}


def _library_path() -> Path | None:
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_c_kernel{suffix}"
        if path.is_file():
            return path
    return None


def _sgemm_address() -> int:
    """The address of SciPy's BLAS `sgemm` (from `scipy.linalg.cython_blas`'s capsule)."""
    from scipy.linalg import cython_blas

    capsule = cython_blas.__pyx_capi__["sgemm"]
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype = ctypes.c_char_p
    api.PyCapsule_GetName.argtypes = [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))


@functools.cache
def _load() -> tuple[tuple[Any, int] | None, str]:
    """`((library, address of its sgemm), "")`, or `(None, why not)`."""
    path = _library_path()
    if path is None:
        return None, ("the C kernel is not built (no hooked_mlp/training/_c_kernel library); "
                      "reinstall with a C compiler present")
    try:
        lib = ctypes.CDLL(str(path))
        for name, args in _ARGS.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, ctypes.c_int
    except (OSError, AttributeError) as e:
        return None, f"the C kernel library {path.name} cannot be loaded ({e})"
    try:
        sgemm = _sgemm_address()
    except (ImportError, AttributeError, KeyError, ValueError) as e:
        return None, f"SciPy's BLAS (scipy.linalg.cython_blas.sgemm) is not reachable ({e})"
    return (lib, sgemm), ""


def available() -> bool:
    """Whether the C kernel is built and has its BLAS here."""
    return _load()[0] is not None


def unavailable_reason() -> str:
    """Why the C kernel cannot run here; `""` when it can."""
    return _load()[1]


def supports(cfg: Any) -> str | None:
    """None when the kernel can train models of configuration `cfg` (an `MLPConfig`), else a
    short reason naming the field and value it does not support. Needs no library."""
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


# ----------------------------------------------------------------------------- BLAS threads
_blas_lock = threading.Lock()
_blas_users = 0
_blas_limit: Any = None


def _hold_blas_to_one_thread() -> None:
    """While any `Kernel` lives, SciPy's BLAS runs each product on its caller's thread."""
    global _blas_users, _blas_limit
    with _blas_lock:
        if _blas_users == 0:
            from threadpoolctl import threadpool_limits

            _blas_limit = threadpool_limits(limits=1, user_api="blas")
        _blas_users += 1


def _release_blas() -> None:
    global _blas_users, _blas_limit
    with _blas_lock:
        _blas_users -= 1
        if _blas_users == 0 and _blas_limit is not None:
            _blas_limit.restore_original_limits()
            _blas_limit = None


# ----------------------------------------------------------------------------- the binding
def _check(t: Any, name: str, dtype: torch.dtype, shape: tuple[int, ...] | None = None
           ) -> Tensor:
    """`t` if it is a contiguous CPU tensor of `dtype` (and `shape`), else a clear error."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu" or t.dtype != dtype:
        raise ValueError(f"{name} must be a CPU {dtype} tensor, got {t.dtype} on {t.device}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    if shape is not None and tuple(t.shape) != shape:
        raise ValueError(f"{name} must be {list(shape)}, got {list(t.shape)}")
    return t


def _span(runs: range, n_runs: int) -> tuple[int, int]:
    if not isinstance(runs, range) or runs.step != 1:
        raise ValueError(f"runs must be a range with step 1, got {runs!r}")
    if not 0 <= runs.start <= runs.stop <= n_runs:
        raise ValueError(f"runs must lie in range(0, {n_runs}), got {runs!r}")
    return runs.start, runs.stop


def _overlaps(a: Tensor, b: Tensor) -> bool:
    a0, b0 = a.data_ptr(), b.data_ptr()
    a1, b1 = a0 + a.numel() * a.element_size(), b0 + b.numel() * b.element_size()
    return a.numel() > 0 and b.numel() > 0 and a0 < b1 and b0 < a1


class Kernel:
    """The C step set up for one layout of buffers: `n_runs` rows of `stride` float32 values,
    each holding `W_in` `[2p, H]`, `b_in` `[H]`, `W_out` `[H, p]`, `b_out` `[p]` at `offsets`
    (`hooked_mlp.training.state.FlatLayout`). `a_of`, `b_of`, `labels` int64 `[n_pairs]` map a
    pair index to its tokens and label (copied and checked here, once). `close()` (or the
    garbage collector) lets the BLAS have its threads back.
    """

    def __init__(self, *, p: int, d_hidden: int, n_runs: int, stride: int,
                 offsets: tuple[int, int, int, int], a_of: Tensor, b_of: Tensor,
                 labels: Tensor) -> None:
        loaded, why = _load()
        if loaded is None:
            raise RuntimeError(why)
        lib, sgemm = loaded
        if not (1 <= p <= _MAX_P and 1 <= d_hidden <= _MAX_HIDDEN):
            raise ValueError(f"the C kernel takes 1 <= p <= {_MAX_P} and 1 <= d_hidden <= "
                             f"{_MAX_HIDDEN}, got p={p}, d_hidden={d_hidden}")
        sizes = (2 * p * d_hidden, d_hidden, d_hidden * p, p)
        offsets = tuple(int(o) for o in offsets)
        if len(offsets) != 4 or any(not 0 <= o <= stride - n for o, n in zip(offsets, sizes,
                                                                          strict=False)):
            raise ValueError(f"offsets {offsets} do not fit W_in, b_in, W_out, b_out of sizes "
                             f"{sizes} in rows of {stride} floats")
        if n_runs < 0 or stride < 1:
            raise ValueError(f"n_runs must be >= 0 and stride >= 1, got {n_runs}, {stride}")
        tables = []
        for name, t in (("a_of", a_of), ("b_of", b_of), ("labels", labels)):
            t = _check(t, name, torch.int64)
            if t.ndim != 1 or t.numel() != a_of.numel() or t.numel() < 1:
                raise ValueError("a_of, b_of and labels must be 1-D, of one length >= 1, got "
                                 f"{name} {list(t.shape)}")
            if bool(((t < 0) | (t >= p)).any()):
                bad = int(((t < 0) | (t >= p)).nonzero()[0])
                raise ValueError(f"{name}[{bad}] = {int(t[bad])}: values must be in [0, p = {p})")
            tables.append(t)
        a, b, y = tables
        self._pairs = torch.stack([a, b + p, y], 1).to(torch.int32).contiguous()  # Pair [n, 3]
        self.p, self.d_hidden, self.n_runs, self.stride = p, d_hidden, n_runs, stride
        self.n_pairs = a.numel()
        self._lib = lib
        self._model = _Model(sgemm, p, d_hidden, stride, (ctypes.c_int64 * 4)(*offsets),
                             self._pairs.data_ptr(), self.n_pairs)
        self._total = n_runs * stride
        _hold_blas_to_one_thread()
        self._release = weakref.finalize(self, _release_blas)

    def close(self) -> None:
        """Let the BLAS have its threads back (once the last `Kernel` is closed)."""
        self._release()

    def _pairs_table(self, t: Tensor, name: str, runs: int) -> int:
        """Check pair indices `[runs, n]` (values in [0, n_pairs)); returns n."""
        if t.ndim != 2 or t.shape[0] != runs:
            raise ValueError(f"{name} must be 2-D [runs, pairs] with {runs} rows, got "
                             f"{list(t.shape)}")
        n = t.shape[1]
        if not 1 <= n <= _MAX_PAIRS:
            raise ValueError(f"{name} must hold 1 to {_MAX_PAIRS} pairs per run, got {n}")
        if runs == 0:
            return n
        least, most = (int(x) for x in torch.aminmax(t))
        if least < 0 or most >= self.n_pairs:
            bad = (t < 0) | (t >= self.n_pairs)
            r, i = (int(x) for x in bad.nonzero()[0])
            raise ValueError(f"{name}[{r}, {i}] = {int(t[r, i])}: pair indices must be in "
                             f"[0, {self.n_pairs})")
        return n

    def _buffers(self, names: tuple[str, ...], bufs: tuple[Any, ...], lo: int) -> list[int]:
        out = []
        for name, buf in zip(names, bufs, strict=True):
            _check(buf, name, torch.float32, (self._total,))
            out.append(buf.data_ptr() + 4 * lo * self.stride)
        for i, a in enumerate(bufs):
            for j in range(i + 1, len(bufs)):
                if _overlaps(a, bufs[j]):
                    raise ValueError(f"{names[i]} and {names[j]} must not share memory")
        return out

    def _call(self, rc: int) -> None:
        if rc != 0:
            kind, message = _ERRORS[rc]
            raise kind(message)

    def train_epoch(self, flat: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, runs: range,
                    order: Tensor, batch_size: int, recipes: Tensor, step0: int,
                    out: Tensor) -> None:
        """One epoch of AdamW steps for the rows `runs` of the buffers, after step `step0`.

        `order` int64 `[len(runs), n]` holds each run's train pairs in this epoch's batch order;
        each of the `ceil(n / batch_size)` steps takes the gradient of its batch's mean loss
        and one AdamW step of the run's recipe (`recipes` float64 `[len(runs), 5]`:
        `state.RECIPE_FIELDS`). Writes each run's mean train loss and accuracy over the epoch
        (each sample measured in its batch, before the batch's update) into `out` float64
        `[len(runs), 2]`.
        """
        lo, hi = _span(runs, self.n_runs)
        k = hi - lo
        order = _check(order, "order", torch.int64)
        n = self._pairs_table(order, "order", k)
        recipes = _check(recipes, "recipes", torch.float64, (k, 5))
        r = recipes
        if not bool(torch.isfinite(r).all() and (r >= 0).all() and (r[:, 1:3] < 1).all()):
            raise ValueError("recipes must hold finite lr, beta1, beta2, weight_decay, eps >= 0 "
                             "with betas < 1")
        out = _check(out, "out", torch.float64, (k, 2))
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not (
                1 <= batch_size <= _MAX_PAIRS):
            raise ValueError(f"batch_size must be an integer in [1, {_MAX_PAIRS}], got "
                             f"{batch_size!r}")
        if isinstance(step0, bool) or not isinstance(step0, int) or not 0 <= step0 < 2**62:
            raise ValueError(f"step0 must be an integer in [0, 2^62), got {step0!r}")
        w, m, v = self._buffers(("params", "exp_avg", "exp_avg_sq"), (flat, exp_avg, exp_avg_sq),
                                lo)
        if k == 0:
            return
        self._call(self._lib.hm_train_epoch(
            ctypes.byref(self._model), k, w, m, v, order.data_ptr(), n, min(batch_size, n),
            recipes.data_ptr(), step0, out.data_ptr()))

    def evaluate(self, flat: Tensor, runs: range, pairs: Tensor, out: Tensor) -> None:
        """Mean cross-entropy and accuracy of the rows `runs` of `flat`, each on its pairs
        (`pairs` int64 `[len(runs), n]`), into `out` float64 `[len(runs), 2]`.

        A sample counts as right when its label is the argmax of its logits (the first largest,
        as `torch.argmax`: a tie with an earlier class is a miss). With no pairs (`n == 0`) the
        rows become NaN, the mean of nothing.
        """
        lo, hi = _span(runs, self.n_runs)
        k = hi - lo
        out = _check(out, "out", torch.float64, (k, 2))
        pairs = _check(pairs, "pairs", torch.int64)
        if pairs.ndim == 2 and pairs.shape == (k, 0):
            out.fill_(float("nan"))
            return
        n = self._pairs_table(pairs, "pairs", k)
        _check(flat, "params", torch.float32, (self._total,))
        if _overlaps(flat, out):
            raise ValueError("params and out must not share memory")
        if k == 0:
            return
        self._call(self._lib.hm_evaluate(ctypes.byref(self._model), k,
                                         flat.data_ptr() + 4 * lo * self.stride,
                                         pairs.data_ptr(), n, out.data_ptr()))
