"""Shared helpers for the benchmark scripts: timing with medians, the machine's description."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(
    candidates: dict[str, Callable[[], object]], repeats: int, block: int = 3
) -> dict[str, list[float]]:
    """Time each candidate `repeats` times, alternating between them in blocks, so that a change
    in the machine's load hits all of them alike. Each block starts with one untimed call, so
    that one candidate's leftovers (caches, spinning OpenMP threads) do not bill the next.
    Returns the list of times per candidate."""
    out: dict[str, list[float]] = {k: [] for k in candidates}
    while min(len(v) for v in out.values()) < repeats:
        for name, fn in candidates.items():
            fn()
            for _ in range(block):
                out[name].append(timed(fn))
    return {k: v[:repeats] for k, v in out.items()}


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def epoch_runner(seeds: list[int], epochs: int, threads: int | None = None,
                 backend: str = "auto", cfg=None):
    """A trainer for `seeds` (the seed recipe, `epochs` long, of the study's model or `cfg`)
    set up as `hooked-mlp train` would run it: returns (trainer, a function that trains one
    epoch, the thread count). As in a run, an epoch's validation pass runs on the helper thread
    beside the next epoch (one thread per seed) and is waited for at the end of that next
    epoch: the time of an epoch is the steady state of the pipeline."""
    from hooked_mlp import MLPConfig, TrainConfig
    from hooked_mlp.training.trainer import BatchedTrainer, default_threads, torch_threads

    trainer = BatchedTrainer(MLPConfig() if cfg is None else cfg, TrainConfig(epochs=epochs),
                             seeds, backend=backend)
    if threads is None:
        threads = default_threads(len(seeds), backend=trainer.backend)
    torch_n = trainer.use_threads(threads)

    def epoch() -> None:
        with torch_threads(torch_n):
            trainer.run_epoch()

    return trainer, epoch, threads
