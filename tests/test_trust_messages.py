"""Issue 20, unclear or spoofable messages: every message says what is wrong, about the right
thing, and cannot be rewritten by a crafted name.

Each test failed on the code before issue 20 (93c1965): crafted file names printed raw (they
rewrote the terminal line), `dynamics` on an unfinished run blamed "models of different seeds",
a TransformerLens tied layout with h = 2p read silently as p = 2p, output folders made 0700
whatever the umask, and a refused `train` left a folder holding only `.lock`. (p = 2 against
p = 3 is in test_trust_report.py; re-signed splits in test_trust_files.py.)"""

from __future__ import annotations

import os
import stat

import pytest
import torch
from torch import nn

from hooked_mlp import MLPConfig, TrainConfig, load_snapshots, train_run
from hooked_mlp.cli import main
from hooked_mlp.files.format import CheckpointError, atomic_directory, atomic_write_text
from hooked_mlp.files.importers import import_mlp

CFG = MLPConfig(p=7, d_hidden=8)
TCFG = TrainConfig(epochs=12, batch_size=16, lr=1e-2)


def _sequential(p: int = 7, h: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2 * p, h), nn.ReLU(), nn.Linear(h, p)).state_dict()


def test_crafted_names_are_shown_escaped(tmp_path):
    torch.save(_sequential(seed=0), tmp_path / "epoch_0.pt")
    (tmp_path / "epoch_1\x1b[2K\r.pt").write_text("x")
    series = load_snapshots(tmp_path, activation="relu")
    assert "\x1b" not in series.skipped_line() and "\\x1b[2K\\r" in series.skipped_line()
    with pytest.raises(CheckpointError) as e:
        import_mlp(tmp_path / "epoch_1\x1b[2K\r.pt", activation="relu")
    assert "\x1b" not in str(e.value) and e.value.path.endswith("\x1b[2K\r.pt")


def test_dynamics_on_an_unfinished_run_says_so(tmp_path, capsys):
    from hooked_mlp.training.runs import _write_state
    from hooked_mlp.training.trainer import BatchedTrainer

    folder = tmp_path / "run"
    folder.mkdir()
    trainer = BatchedTrainer(CFG, TCFG, [0, 1])
    _write_state(folder, trainer, threads=1, every=4, wall_s=0.0, command=None)
    with pytest.raises(ValueError, match=r"is a run that has not finished \(its state is at "
                       r"epoch 0 of 12\): its snapshots are written to "
                       r"snapshots-seed-<seed>.safetensors when it does"):
        load_snapshots(folder)
    code = main(["dynamics", str(folder), "--out", str(tmp_path / "page")])
    err = capsys.readouterr().err
    assert code == 1 and "has not finished" in err and "different seeds" not in err


def test_transformer_lens_tied_layout_with_h_2p_is_not_read_as_p_2p():
    p, h = 7, 14
    torch.manual_seed(0)
    state = {"mlp.W_in": torch.randn(p, h), "mlp.W_out": torch.randn(h, p)}  # x @ W, tied
    with pytest.raises(ValueError, match=r"read two ways, as two different models: as \[out, "
                       r"in\] .* give p = 14, d_hidden = 7; as \[in, out\] .* p = 7, "
                       r"d_hidden = 14.*pass p= or orientation="):
        import_mlp(state, activation="relu")
    model = import_mlp(state, activation="relu", p=7)
    assert (model.cfg.p, model.cfg.d_hidden, model.cfg.tied_inputs) == (7, 14, True)
    assert torch.equal(model.W_in, state["mlp.W_in"])


def test_output_folders_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "page", lambda f: None) as tmp:
            atomic_write_text(tmp / "index.html", "<p>x</p>")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "page").stat().st_mode) == 0o755  # was 0o700
    assert stat.S_IMODE((tmp_path / "page" / "index.html").stat().st_mode) == 0o644


def test_a_train_refused_for_its_snapshots_memory_leaves_nothing(tmp_path, monkeypatch, capsys):
    from hooked_mlp import checks

    monkeypatch.setattr(checks, "available_memory", lambda: 200_000)  # the run fits, not 2001
    out = tmp_path / "run"                                             # snapshots of 0.8 KB
    long = TrainConfig(epochs=2000, batch_size=16)
    with pytest.raises(ValueError, match="2001 snapshots of 1 seed"):
        train_run(out, CFG, long, snapshots="every:1", progress=False)
    assert not out.exists()  # was: a folder holding only .lock
    code = main(["train", "--p", "7", "--d-hidden", "8", "--epochs", "2000", "--snapshots",
                 "every:1", "--out", str(out), "--no-progress"])
    assert code != 0 and not out.exists()
    capsys.readouterr()


def test_a_refused_trainer_removes_its_lock_but_keeps_a_folder_it_did_not_make(tmp_path,
                                                                                monkeypatch):
    from hooked_mlp.training import runs

    class Refused(runs.BatchedTrainer):
        def __init__(self, *args, **kwargs):
            raise ValueError("refused for the test")

    monkeypatch.setattr(runs, "BatchedTrainer", Refused)
    with pytest.raises(ValueError, match="refused for the test"):
        train_run(tmp_path / "new", CFG, TCFG, progress=False)
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="refused for the test"):
        train_run(tmp_path / "mine", CFG, TCFG, progress=False)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]
