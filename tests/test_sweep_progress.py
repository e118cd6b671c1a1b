"""Sweeps (issue 19): the progress bar counts runs and run-epochs over the whole sweep, also when
a sweep resumes (the finished groups start the bars where they were)."""

from typing import ClassVar

import tqdm as tqdm_module

from hooked_mlp import MLPConfig, TrainConfig
from hooked_mlp.files.sweeps import part_path
from hooked_mlp.jobs import resume_sweep, sweep
from hooked_mlp.training import sweep_engines

EPOCHS = 12


class _Recording(tqdm_module.tqdm):
    """A tqdm that remembers itself and every update it was given."""

    made: ClassVar[list["_Recording"]] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial_n = self.n
        self.updates: list[int] = []
        _Recording.made.append(self)

    def update(self, n=1):
        self.updates.append(n)
        return super().update(n)


def _bars(monkeypatch):
    _Recording.made = []
    monkeypatch.setattr(tqdm_module, "tqdm", _Recording)
    monkeypatch.setattr(sweep_engines, "REPORT_EVERY_S", 0.0)  # report every epoch
    return _Recording.made


def _the_two(bars):
    by_desc = {getattr(b, "desc", None): b for b in bars}  # disabled bars have no desc
    return by_desc["sweep runs"], by_desc["run-epochs"]


def test_the_bars_count_every_run_and_every_epoch(tmp_path, monkeypatch):
    bars = _bars(monkeypatch)
    grid = {"weight_decay": [0.1, 1.0], "train_frac": [0.3, 0.6]}
    sweep(grid, seeds=range(2), model=MLPConfig(p=11, d_hidden=8),
          recipe=TrainConfig(epochs=EPOCHS, batch_size=4096, lr=0.01), out=tmp_path / "S",
          workers=1, group_size=3, progress=True, page=False)
    runs, epochs = _the_two(bars)
    assert runs.desc == "sweep runs" and runs.total == 8 and runs.n == 8
    assert runs.updates == [3, 3, 2]  # one update per finished group, its runs
    assert epochs.total == 8 * EPOCHS and epochs.n == 8 * EPOCHS
    # the epochs come in as the groups train (every epoch here), not only when a group ends
    assert epochs.updates[:EPOCHS] == [3] * EPOCHS
    assert sum(epochs.updates) == 8 * EPOCHS


def test_a_resumed_sweep_starts_its_bars_at_the_finished_groups(tmp_path, monkeypatch):
    bars = _bars(monkeypatch)
    out = tmp_path / "S"
    sweep({"weight_decay": [0.1, 1.0, 2.0]}, seeds=range(2), model=MLPConfig(p=11, d_hidden=8),
          recipe=TrainConfig(epochs=EPOCHS, batch_size=4096, lr=0.01), out=out, workers=1,
          group_size=2, progress=False, page=False)
    part_path(out, 1).unlink()  # as if the sweep had been killed before group 1 was written
    bars.clear()
    resume_sweep(out, workers=1, progress=True, page=False)
    runs, epochs = _the_two(bars)
    assert (runs.initial_n, runs.n, runs.total) == (4, 6, 6)
    assert (epochs.initial_n, epochs.n, epochs.total) == (4 * EPOCHS, 6 * EPOCHS, 6 * EPOCHS)
    assert runs.updates == [2]
