"""Sweeps (issue 19): a sweep killed with SIGKILL in the middle, then resumed, gives the table of
an uninterrupted sweep: no row lost, none doubled, no finished group trained again."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from hooked_mlp import MLPConfig, TrainConfig
from hooked_mlp.files.sweeps import read_results
from hooked_mlp.jobs import resume_sweep, sweep
from hooked_mlp.training import sweep_engines

GRID = {"weight_decay": [0.1, 0.5, 1.0, 2.0], "train_frac": [0.3, 0.6]}
MODEL = dict(p=11, d_hidden=8)
RECIPE = dict(epochs=300, batch_size=4096, lr=0.01)
SCRIPT = f"""
import sys
from hooked_mlp import MLPConfig, TrainConfig
from hooked_mlp.jobs import sweep
sweep({GRID!r}, seeds=[0], model=MLPConfig(**{MODEL!r}), recipe=TrainConfig(**{RECIPE!r}),
      out=sys.argv[1], workers=1, group_size=1, progress=False, page=False)
"""
TIMING = ["threads", "train_seconds", "group_seconds"]  # how each group ran


def _parts(folder):
    results = folder / "results"
    return sorted(p.name for p in results.glob("*.parquet")) if results.is_dir() else []


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for sub in ("results", "weights")
            for p in (folder / sub).glob("*") if not p.name.startswith(".")}


def test_a_sweep_killed_mid_way_resumes_to_the_uninterrupted_table(tmp_path, monkeypatch):
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out)], env={
        **os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(_parts(out)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)  # mid-sweep: between or inside a group's writes
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    done = _parts(out)
    assert 2 <= len(done) < 8
    before = _files(out)

    trained = []
    real = sweep_engines.train_group
    monkeypatch.setattr(sweep_engines, "train_group",
                        lambda task, report=None: trained.append(task.group) or real(task, report))
    resumed = resume_sweep(out, workers=1, progress=False, page=False)
    finished_before = {int(name.split("-")[1].split(".")[0]) for name in done}
    assert trained and not finished_before & set(trained)  # no finished group trained again
    assert sorted(trained + sorted(finished_before)) == list(range(8))
    after = _files(out)
    for name, data in before.items():  # the finished groups' files are untouched
        if name.parent.name == "results":
            assert after[name] == data

    whole = sweep(GRID, seeds=[0], model=MLPConfig(**MODEL), recipe=TrainConfig(**RECIPE),
                  out=tmp_path / "whole", workers=1, group_size=1, progress=False, page=False)
    assert len(resumed) == 8 and sorted(resumed["run"]) == list(range(8))  # none lost, none twice
    pd.testing.assert_frame_equal(
        resumed.drop(columns=TIMING).sort_values("run").reset_index(drop=True),
        whole.drop(columns=TIMING).sort_values("run").reset_index(drop=True))
    pd.testing.assert_frame_equal(read_results(out), resumed)


def test_a_resume_with_nothing_left_trains_nothing(tmp_path, monkeypatch):
    out = tmp_path / "S"
    sweep({"weight_decay": [0.1, 1.0]}, model=MLPConfig(**MODEL),
          recipe=TrainConfig(epochs=10, batch_size=4096), out=out, workers=1, group_size=1,
          progress=False, page=False)
    monkeypatch.setattr(sweep_engines, "train_group",
                        lambda *a, **k: pytest.fail("a finished group was trained again"))
    assert len(resume_sweep(out, workers=1, progress=False, page=False)) == 2
