"""Nothing is lost: resumable runs (through a real SIGKILL), divergence, locking, atomic state."""

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _backends import BACKENDS, needs_c

from hooked_mlp import MLPConfig, TrainConfig, load, resume_run, train_run
from hooked_mlp.files.format import read_safetensors
from hooked_mlp.files.layout import STATE_FILE
from hooked_mlp.training.runs import RunLock, RunLockedError, _write_state
from hooked_mlp.training.trainer import BatchedTrainer, TrainingDivergedError

CLI = [sys.executable, "-m", "hooked_mlp.cli"]
SMALL = ["--p", "61", "--d-hidden", "64", "--epochs", "600", "--batch-size", "16"]


def _state_epoch(path: Path) -> int:
    """Epoch recorded in a state file, read from its JSON header alone (no torch)."""
    try:
        data = path.read_bytes()
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8 : 8 + n])
        return json.loads(header["__metadata__"]["hooked_mlp"])["epoch"]
    except (OSError, ValueError, KeyError, struct.error):
        return -1


def _params(path):
    m = load(path)
    return {n: getattr(m, n).detach() for n in ("W_in", "b_in", "W_out", "b_out")}, m


def test_sigkill_then_resume_gives_identical_weights(tmp_path):
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [*CLI, "train", *SMALL, "--seed", "5", "--checkpoint-every", "10", "--out", str(run),
         "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    state = run / STATE_FILE
    deadline = time.time() + 120
    while _state_epoch(state) < 40:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    # stopped mid-run (it still holds the folder's lock), a second training into the same
    # folder is refused; then the stopped run is killed
    proc.send_signal(signal.SIGSTOP)
    second = subprocess.run([*CLI, "train", *SMALL, "--out", str(run), "--no-progress"],
                            capture_output=True, text=True)
    assert second.returncode == 1
    assert "another hooked-mlp train is writing to" in second.stderr
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _state_epoch(state)
    assert 40 <= killed_at < 600 and not (run / "seed-5.safetensors").exists()
    info = subprocess.run([*CLI, "info", str(run)], capture_output=True, text=True)
    assert f"unfinished run: epoch {killed_at} of 600" in info.stdout

    resumed = subprocess.run([*CLI, "train", "--resume", str(run), "--no-progress"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert not state.exists()

    straight = tmp_path / "straight"
    whole = subprocess.run([*CLI, "train", *SMALL, "--seed", "5", "--checkpoint-every", "0",
                            "--out", str(straight), "--no-progress"],
                           capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    a, ma = _params(run / "seed-5.safetensors")
    b, mb = _params(straight / "seed-5.safetensors")
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert ma.train_info.history == mb.train_info.history
    assert ma.train_info.metrics == mb.train_info.metrics


def test_resume_in_process_matches_and_keeps_history(tmp_path):
    cfg, tcfg = MLPConfig(p=23, d_hidden=16), TrainConfig(epochs=12, batch_size=32)
    full = train_run(tmp_path / "full", cfg, tcfg, [0, 1], progress=False)
    # simulate an interruption: run 5 epochs, write the state, stop
    part = tmp_path / "part"
    trainer = BatchedTrainer(cfg, tcfg, [0, 1])
    for _ in range(5):
        trainer.run_epoch()
    part.mkdir()
    _write_state(part, trainer, threads=1, every=4, wall_s=0.0, command="test")
    paths = resume_run(part, progress=False)
    for p_full, p_part in zip(full, paths, strict=True):
        a, ma = _params(p_full)
        b, mb = _params(p_part)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert ma.train_info.history == mb.train_info.history
        assert len(mb.train_info.history["val_acc"]) == 12


def _poison(monkeypatch, epochs, index: int, value: float):
    """Put `value` into the parameters just before each epoch (numbered from 0) in `epochs`."""
    real = BatchedTrainer.run_epoch

    def poisoned(self):
        if self.epoch in epochs:
            self.flat[index] = value
        real(self)

    monkeypatch.setattr(BatchedTrainer, "run_epoch", poisoned)
    return real


@pytest.mark.parametrize("backend", BACKENDS)
def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, backend):
    real = _poison(monkeypatch, {7}, 0, float("nan"))  # W_in[0, 0], as epoch 8 starts
    run = tmp_path / "nan"
    cfg, tcfg = MLPConfig(p=23, d_hidden=16), TrainConfig(epochs=20, batch_size=32)
    with pytest.raises(TrainingDivergedError) as e:
        train_run(run, cfg, tcfg, [0], checkpoint_every=3, progress=False, backend=backend)
    msg = str(e.value)
    assert "diverged at epoch 8" in msg and f"kept in {run / STATE_FILE}" in msg
    doc, tensors = read_safetensors(run / STATE_FILE, "train-state")
    assert doc["epoch"] == 6  # the last checkpoint before the fault
    assert bool(torch.isfinite(tensors["flat"]).all())
    assert not list(run.glob("seed-*.safetensors"))
    # the kept checkpoint resumes (the fault was injected, so the run now finishes)
    monkeypatch.setattr(BatchedTrainer, "run_epoch", real)
    (path,) = resume_run(run, progress=False)
    assert path.exists()
    assert load(path).train_info.provenance["backend"] == backend  # resume keeps the backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_divergence_without_checkpoints_says_so(tmp_path, monkeypatch, backend):
    _poison(monkeypatch, range(3), 3, float("inf"))
    with pytest.raises(TrainingDivergedError, match="no checkpoint had been written"):
        train_run(tmp_path / "r", MLPConfig(p=11, d_hidden=4), TrainConfig(epochs=3), [0],
                  progress=False, backend=backend)


def test_second_run_into_locked_folder_is_refused(tmp_path):
    folder = tmp_path / "busy"
    with RunLock(folder):
        with pytest.raises(RunLockedError, match="another hooked-mlp train is writing"):
            train_run(folder, MLPConfig(p=5, d_hidden=2), TrainConfig(epochs=1), progress=False)
        assert not list(folder.glob("*.safetensors"))
    # released: the run goes ahead
    train_run(folder, MLPConfig(p=5, d_hidden=2), TrainConfig(epochs=1), progress=False)
    assert (folder / "seed-0.safetensors").exists()


def test_refuses_to_overwrite_or_resume_nothing(tmp_path):
    folder = tmp_path / "done"
    train_run(folder, MLPConfig(p=5, d_hidden=2), TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match="already exists"):
        train_run(folder, MLPConfig(p=5, d_hidden=2), TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match="already finished"):
        resume_run(folder, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no run to resume"):
        resume_run(tmp_path / "empty", progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        train_run(tmp_path / "file", MLPConfig(p=5, d_hidden=2), TrainConfig(epochs=1))


def test_no_temporary_files_left_behind(tmp_path):
    folder = tmp_path / "clean"
    train_run(folder, MLPConfig(p=7, d_hidden=3), TrainConfig(epochs=4), [0, 1],
              checkpoint_every=1, progress=False)
    assert sorted(os.listdir(folder)) == [".lock", "seed-0.safetensors", "seed-1.safetensors"]


@needs_c
def test_resume_where_the_run_backend_cannot_run_continues_on_torch(tmp_path, monkeypatch):
    from hooked_mlp.training import c_kernel

    run = tmp_path / "c-run"
    cfg, tcfg = MLPConfig(p=11, d_hidden=8), TrainConfig(epochs=6)

    def stop_after_three(self):
        if self.epoch == 3:
            raise KeyboardInterrupt
        real(self)

    real = BatchedTrainer.run_epoch
    monkeypatch.setattr(BatchedTrainer, "run_epoch", stop_after_three)
    with pytest.raises(KeyboardInterrupt):
        train_run(run, cfg, tcfg, [0], checkpoint_every=1, progress=False, backend="c")
    monkeypatch.setattr(BatchedTrainer, "run_epoch", real)
    # here the C kernel is missing (no compiler at install time)
    monkeypatch.setattr(c_kernel, "_load", lambda: (None, "the C kernel is not built"))
    with pytest.raises(ValueError, match="backend='c' was asked for but the C kernel is not"):
        resume_run(run, progress=False, backend="c")
    (path,) = resume_run(run, progress=False)  # by default it continues on torch's
    assert load(path).train_info.provenance["backend"] == "torch"
