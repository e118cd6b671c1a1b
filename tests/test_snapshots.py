"""Snapshots: which epochs, capture on both backends, storage in a run, resume, loading (also a
folder of another codebase's checkpoints)."""

import itertools

import pytest
import torch

from hooked_mlp import MLPConfig, TrainConfig, load_snapshots, resume_run, train, train_run
from hooked_mlp.cli import main
from hooked_mlp.files.format import CheckpointError, read_header
from hooked_mlp.files.layout import series_file
from hooked_mlp.files.series import read_series, write_series
from hooked_mlp.functional import init_params
from hooked_mlp.training import runs as runs_module
from hooked_mlp.training.snapshots import parse_snapshot_spec
from hooked_mlp.training.trainer import BatchedTrainer

CFG = MLPConfig(p=11, d_hidden=12)
TCFG = TrainConfig(epochs=20, batch_size=32, lr=1e-2)


def test_spec_log_every_and_lists():
    log = parse_snapshot_spec("log:8", 1000)
    assert log[0] == 0 and log[-1] == 1000 and len(log) == 9
    assert all(b / a > 1.5 for a, b in itertools.pairwise(log[2:]))  # log-spaced
    assert parse_snapshot_spec("log:64", 20) == list(range(21))  # more than there are epochs
    assert parse_snapshot_spec("log:99999999", 20) == list(range(21))  # not refused as 1e8
    assert parse_snapshot_spec("every:300", 1000) == [0, 300, 600, 900, 1000]
    assert parse_snapshot_spec("5, 10", 20) == [0, 5, 10, 20]
    assert parse_snapshot_spec([3, 3, 7], 10) == [0, 3, 7, 10]


@pytest.mark.parametrize("spec, error", [
    ("log:0", ValueError), ("every:x", ValueError), ("fast", ValueError), ("1,,2", ValueError),
    ("30", ValueError), ([1.5], TypeError), (7, TypeError), ([True], TypeError),
])
def test_spec_refused(spec, error):
    with pytest.raises(error, match="snapshots"):
        parse_snapshot_spec(spec, 20)


def test_spec_refusal_names_the_offending_epoch():
    with pytest.raises(TypeError, match=r"must hold integers \(epochs\), got nan \(float\)"):
        parse_snapshot_spec([0, float("nan")], 20)
    with pytest.raises(ValueError, match="at most 100,000 epochs, got 100,001"):
        parse_snapshot_spec(range(100_001), 200_000)


@pytest.mark.parametrize("backend", ["c", "torch"])
def test_in_memory_snapshots_are_the_weights_at_those_epochs(backend):
    _skip_unless(backend)
    model, _ = train(CFG, TCFG, snapshots="every:7", progress=False, backend=backend)
    series = model.train_info.snapshots
    assert series.epochs == [0, 7, 14, 20] and len(series) == 4
    start = init_params(CFG, 0)
    assert torch.equal(series[0].W_in, start["W_in"])  # epoch 0: the initialisation
    assert torch.equal(series[-1].W_out, model.W_out)  # the last: the trained model
    # a snapshot is the model trained for that many epochs
    shorter, _ = train(CFG, TrainConfig(**{**TCFG.to_dict(), "epochs": 7}), progress=False,
                       backend=backend)
    assert torch.equal(series[1].W_in, shorter.W_in)
    assert len(series[1].train_info.history["train_loss"]) == 7
    assert not torch.equal(series[1].W_in, series[2].W_in)


def _interrupt_at(monkeypatch, epoch):
    real = BatchedTrainer.run_epoch

    def stop(self):
        if self.epoch == epoch:
            raise KeyboardInterrupt
        real(self)

    monkeypatch.setattr(BatchedTrainer, "run_epoch", stop)
    return real


def _skip_unless(backend):
    from hooked_mlp.training.backends import resolve_backend

    try:
        resolve_backend(backend, torch.device("cpu"), CFG)
    except ValueError:
        pytest.skip(f"backend {backend} not available here")


@pytest.mark.parametrize("backend", ["c", "torch"])
def test_resumed_snapshots_equal_an_uninterrupted_run(tmp_path, monkeypatch, backend):
    _skip_unless(backend)
    full = tmp_path / "full"
    train_run(full, CFG, TCFG, [0, 1], snapshots="every:3", checkpoint_every=5, progress=False,
              backend=backend)
    part = tmp_path / "part"
    real = _interrupt_at(monkeypatch, 13)  # after the checkpoint of epoch 10, snapshot 12 lost
    with pytest.raises(KeyboardInterrupt):
        train_run(part, CFG, TCFG, [0, 1], snapshots="every:3", checkpoint_every=5,
                  progress=False, backend=backend)
    monkeypatch.setattr(BatchedTrainer, "run_epoch", real)
    assert (part / "snapshots-part-10.safetensors").exists()
    # a part written for a checkpoint whose state never was: interrupted between the two
    write_state = runs_module._write_state

    def die_at_15(folder, trainer, *args):
        if trainer.epoch == 15:
            raise KeyboardInterrupt
        write_state(folder, trainer, *args)

    monkeypatch.setattr(runs_module, "_write_state", die_at_15)
    with pytest.raises(KeyboardInterrupt):
        resume_run(part, progress=False)
    monkeypatch.setattr(runs_module, "_write_state", write_state)
    assert (part / "snapshots-part-15.safetensors").exists()
    resume_run(part, progress=False)
    assert not list(part.glob("snapshots-part-*")) and not (part / "state.safetensors").exists()
    for seed in (0, 1):
        a, b = load_snapshots(full, seed=seed), load_snapshots(part, seed=seed)
        assert b.train_info.provenance["backend"] == backend
        assert a.epochs == b.epochs == [0, 3, 6, 9, 12, 15, 18, 20]
        for name in a.params:
            assert torch.equal(a.params[name], b.params[name]), name
        assert a.train_info.history == b.train_info.history


def test_run_folder_file_and_cli(tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", "--p", "11", "--d-hidden", "12", "--epochs", "20", "--batch-size", "32",
               "--seeds", "0,3", "--snapshots", "log:4", "--out", str(run), "--no-progress"])
    assert rc == 0
    with pytest.raises(ValueError, match=r"seeds \[0, 3\]; choose one with seed="):
        load_snapshots(run)
    series = load_snapshots(run, seed=3)
    assert series.epochs == parse_snapshot_spec("log:4", 20)
    assert series.train_info.train_config.seed == 3
    same = load_snapshots(series_file(run, 3))
    assert torch.equal(same.params["W_in"], series.params["W_in"])
    # hooked-mlp info lists the models, each with the snapshots kept beside it
    capsys.readouterr()
    assert main(["info", str(run)]) == 0
    shown = capsys.readouterr().out
    n = len(series.epochs)
    for s in (0, 3):
        assert f"snapshots {n} in {series_file(run, s)}" in shown
    assert "snapshots-seed" not in shown.split("\n")[0]  # not listed as a model of its own
    # float16 storage: the same weights to float16 precision
    small = tmp_path / "small.safetensors"
    write_series(small, series, dtype="float16")
    back = read_series(small)
    assert read_header(small).table["param.W_in"]["dtype"] == "F16"
    assert torch.allclose(back.params["W_in"], series.params["W_in"], atol=1e-3)


def test_bad_snapshot_arguments(tmp_path, capsys):
    assert main(["train", "--p", "11", "--epochs", "5", "--snapshots", "log:zero", "--out",
                 str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--snapshots='log:zero'" in err and "'every:K'" in err and err.count("\n") == 1
    assert "sequence" not in err  # the Python API's form, not the command line's
    assert main(["train", "--p", "11", "--epochs", "5", "--snapshots", "0,9", "--out",
                 str(tmp_path / "x")]) == 2
    assert "--snapshots: epoch 9 is outside [0, 5]" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before anything was written
    with pytest.raises(ValueError, match="no such file or folder"):
        load_snapshots(tmp_path / "missing")
    for bad in (None, 3, b"runs"):
        with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
            load_snapshots(bad)
    from hooked_mlp.files.checkpoints import PRETRAINED_DIR
    from hooked_mlp.files.layout import SHIPPED_SERIES

    shipped_series = PRETRAINED_DIR / SHIPPED_SERIES  # seed 0: seed=1 is refused, not ignored
    assert load_snapshots(shipped_series, seed=0).epochs[-1] == 2000
    with pytest.raises(ValueError, match="holds the snapshots of seed 0, not seed 1"):
        load_snapshots(shipped_series, seed=1)
    with pytest.raises(ValueError, match="holds no snapshots"):
        load_snapshots(tmp_path)
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 not a zip archive")
    with pytest.raises(ValueError, match="holds no snapshots"):
        load_snapshots(tmp_path)
    # a folder of hooked-mlp models (seeds, not epochs) is not read as a series
    from hooked_mlp.files.checkpoints import pretrained_path

    models = tmp_path / "models"
    models.mkdir()
    for s in (0, 1):
        (models / f"seed-{s}.safetensors").write_bytes(pretrained_path(s).read_bytes())
    with pytest.raises(ValueError, match=r"seed-0.safetensors', 'seed-1.safetensors'\] are "
                                         "models .* train with --snapshots"):
        load_snapshots(models, activation="relu")
    with pytest.raises(CheckpointError, match="'model' file, but a 'snapshots' file"):
        load_snapshots(models / "seed-0.safetensors")


def test_reading_snapshots_checks_their_memory_first(monkeypatch):
    from hooked_mlp import checks
    from hooked_mlp.files.checkpoints import PRETRAINED_DIR
    from hooked_mlp.files.layout import SHIPPED_SERIES

    monkeypatch.setattr(checks, "available_memory", lambda: 2**20)
    with pytest.raises(ValueError, match="reading 33 snapshots needs about 0.0 GiB, more than"):
        load_snapshots(PRETRAINED_DIR / SHIPPED_SERIES)


def test_folder_of_foreign_checkpoints(tmp_path):
    """Another codebase's nn.Sequential checkpoints, one per epoch, some named by epoch, one
    recording it inside, plus files that are not checkpoints."""
    folder = tmp_path / "theirs"
    folder.mkdir()
    model, _ = train(CFG, TCFG, snapshots="every:10", progress=False)
    series = model.train_info.snapshots
    for i, (epoch, m) in enumerate(zip(series.epochs, series, strict=True)):
        state = m.to_linear_state_dict()
        if i == 1:
            torch.save({"model_state_dict": state, "epoch": epoch}, folder / "latest.pt")
        else:
            torch.save(state, folder / f"ckpt_epoch{epoch:04d}.pt")
    (folder / "config.json").write_text("{}")
    (folder / "README.md").write_text("# runs")
    with pytest.raises(ValueError, match="activation"):
        load_snapshots(folder)  # the importer's own refusal: the activation is not recorded
    imported = load_snapshots(folder, activation="relu")
    assert imported.epochs == [0, 10, 20] and len(imported) == 3
    for a, b in zip(imported, series, strict=True):
        assert torch.allclose(a.W_in, b.W_in) and torch.allclose(a.W_out, b.W_out)
    with pytest.raises(IndexError):
        imported[3]
    from analyses.dynamics import dynamics
    from hooked_mlp.helpers import loss

    d = dynamics(imported)  # no training record: measured on every pair
    assert d.epochs == [0, 10, 20] and len(d.measures["all_loss"]) == 3
    assert d.measures["all_loss"][-1] == pytest.approx(loss(series[-1], "all"), abs=1e-5)


def test_grokking_recipe_from_the_command_line(tmp_path, capsys):
    assert TrainConfig.grokking().weight_decay == 2.0 and TrainConfig.grokking(lr=1e-2).lr == 1e-2
    run = tmp_path / "grok"
    assert main(["train", "--recipe", "grokking", "--epochs", "3", "--seed", "2", "--out",
                 str(run), "--no-progress"]) == 0
    from hooked_mlp import load

    model = load(run / "seed-2.safetensors")
    t = model.train_info.train_config
    assert (model.cfg.p, model.cfg.d_hidden) == (47, 256)
    assert (t.epochs, t.weight_decay, t.lr, t.train_frac, t.seed) == (3, 2.0, 3e-3, 0.5, 2)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--snapshots", "log:4"]) == 2
    assert "drop --snapshots" in capsys.readouterr().err
