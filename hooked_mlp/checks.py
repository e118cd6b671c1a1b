"""Checks of run-time arguments shared by the trainer, the run folders and the loaders.

Each returns the value in a normal form or raises a `ValueError` / `TypeError` naming the
argument and what is allowed, before any work starts.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hooked_mlp.config import MAX_SEED

MAX_SEEDS = 100_000  # seeds in one run: each holds its own parameters and split
MAX_THREADS = 256


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_device(device: Any) -> Any:
    """A usable `torch.device` for `device`, or a ValueError saying what is available."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available here")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s), cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return dev


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """`seeds` as a list of at most `MAX_SEEDS` distinct Python ints in `[0, MAX_SEED]`."""
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise TypeError(f"seeds must be a sequence of integers, got {type(seeds).__name__}")
    if hasattr(seeds, "__len__") and len(seeds) > MAX_SEEDS:
        raise ValueError(f"seeds must name at most {MAX_SEEDS:,} seeds in one run, got "
                         f"{len(seeds):,}")
    out = []
    for s in seeds:
        try:
            if isinstance(s, bool):
                raise TypeError
            out.append(operator.index(s))
        except TypeError:
            raise TypeError(f"seeds must be integers, got {s!r}") from None
        if len(out) > MAX_SEEDS:
            raise ValueError(f"seeds must name at most {MAX_SEEDS:,} seeds in one run")
    if not out:
        raise ValueError("seeds must name at least one seed")
    for s in out:
        if not 0 <= s <= MAX_SEED:
            raise ValueError(f"seeds must be integers in [0, {MAX_SEED}], got {s!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"seeds must be distinct, got {out if len(out) <= 10 else out[:10]}")
    return out


def check_threads(threads: Any, name: str = "threads") -> int:
    """A thread count in `[1, MAX_THREADS]` (more than that is a typo, and can crash OpenMP)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or not (
            1 <= threads <= MAX_THREADS):
        raise ValueError(f"{name} must be an integer in [1, {MAX_THREADS}], got {threads!r}")
    return threads


def check_out_folder(path: Any, name: str = "out") -> Path:
    """`path` as a folder that output can be written into: it must be a folder or not exist
    yet, and the nearest of its parents that exists must be a folder (else a ValueError naming
    `name`, before any work starts)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path, got {type(path).__name__}")
    path = Path(path)
    for above in (path, *path.parents):
        if above.exists():
            if above == path and not above.is_dir():
                raise ValueError(f"{name} {path} is a file, not a folder")
            if not above.is_dir():
                raise ValueError(f"{name} {path} must be a folder, but it cannot be one ({above} "
                                 "is a file)")
            break
    return path


class LogitsOverflowError(ValueError):
    """Logits that are not finite (the weights are too large for float32 arithmetic, or a hook
    made them so): a loss or an accuracy computed from them would be NaN, or decided by ties
    between infinities, so none is given."""


def check_finite_logits(logits: Any, what: str) -> None:
    """Raise `LogitsOverflowError` when `logits` hold an infinite or NaN value, saying how many
    and what could not be computed (`what`, e.g. "the loss")."""
    import torch

    finite = torch.isfinite(logits)
    if bool(finite.all()):
        return
    bad = int((~finite).sum())
    kept = logits.detach()[finite].abs()
    largest = f"{float(kept.max()):.3g}" if kept.numel() else "none"
    raise LogitsOverflowError(
        f"the logits overflowed: {bad:,} of {logits.numel():,} are infinite or NaN (largest "
        f"finite magnitude {largest}; float32 ends near 3.4e38), so {what} would be NaN or "
        "decided by ties between infinities and is not given; scale the weights down, or "
        "check the hooks")


def available_memory() -> int | None:
    """Bytes this process can still allocate, as far as the OS says (None: unknown): the
    smaller of the machine's available memory and the room left under RLIMIT_AS."""
    import resource

    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        try:
            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * resource.getpagesize()
        except (OSError, ValueError, IndexError):
            used = 0
        room = max(0, soft - used)
        avail = room if avail is None else min(avail, room)
    return avail


def check_memory(need: int, what: str) -> None:
    """Refuse work whose tensors would take more than this process can allocate (a clear
    ValueError with the figures instead of a failure deep inside torch)."""
    avail = available_memory()
    if avail is not None and need > avail:
        raise ValueError(f"{what} needs about {need / 2**30:.1f} GiB, more than the "
                         f"{avail / 2**30:.1f} GiB this process can still allocate")
