"""Issue 20, the files layer (items 4, 6 and 7's import side; issue 21 section 4's key_map): no
series, epoch, split or suggested key_map about the wrong file.

Each test here failed on the code before this layer was rebuilt (93c1965): snapshots picked by
a file's name, foreign epochs read from the last number in a name, silent gaps (legacy torch
files and pickles unnamed), a finite float64 refused as "NaN or infinite", re-signed splits
accepted, and a suggested key_map that made embedding tables layers. The messages' tests are in
test_trust_messages.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from hooked_mlp import MLPConfig, TrainConfig, load, load_snapshots, save, train, train_run
from hooked_mlp.files import layout
from hooked_mlp.files.checkpoint_folders import epoch_from_name
from hooked_mlp.files.format import (
    CheckpointError,
    read_header,
    write_safetensors,
)
from hooked_mlp.files.importers import import_mlp
from hooked_mlp.files.series import SnapshotSeries, read_series, series_matches, write_series

CFG = MLPConfig(p=7, d_hidden=8)
TCFG = TrainConfig(epochs=12, batch_size=16, lr=1e-2)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A finished run of seeds 0 and 1 with snapshots every 4 epochs."""
    folder = tmp_path_factory.mktemp("trust") / "run"
    train_run(folder, CFG, TCFG, [0, 1], snapshots="every:4", progress=False)
    return folder


def resign_tensors(path: Path, change) -> None:
    """Rewrite a hooked-mlp file with `change(tensors)` applied and a fresh checksum, as a
    writer that signs anything would."""
    doc = read_header(path).doc
    tensors = load_file(path)
    change(tensors)
    meta = {k: v for k, v in doc.items() if k not in ("format", "format_version", "checksum")}
    write_safetensors(path, tensors, meta, version=doc["format_version"])


# ------------------------------------------------------------------------------ item 4
def test_load_snapshots_trusts_the_seed_a_file_records(run_folder, tmp_path):
    folder = tmp_path / "renamed"
    folder.mkdir()
    shutil.copy(layout.series_file(run_folder, 0), folder / "snapshots-seed-00.safetensors")
    series = load_snapshots(folder, seed=0)  # before: "holds no snapshots of seed 0"
    assert series.train_info.train_config.seed == 0
    shutil.copy(layout.series_file(run_folder, 1), folder / "snapshots-seed-3.safetensors")
    with pytest.raises(CheckpointError, match=r"snapshots-seed-3.safetensors: its name says "
                       r"seed 3, but it holds the snapshots of seed 1; rename it "
                       r"snapshots-seed-1.safetensors"):
        load_snapshots(folder, seed=3)
    (folder / "snapshots-seed-3.safetensors").unlink()
    shutil.copy(layout.series_file(run_folder, 0), folder / "snapshots-seed-0.safetensors")
    with pytest.raises(ValueError, match=r"snapshots-seed-0.safetensors and "
                       r"snapshots-seed-00.safetensors both hold the snapshots of seed 0"):
        load_snapshots(folder)


def test_series_matches_its_own_model_only(run_folder):
    model = load(layout.model_file(run_folder, 0))
    series = load_snapshots(run_folder, seed=0)
    assert series_matches(series, model) is None
    assert series_matches(model.train_info.snapshots or series, model) is None
    other = load_snapshots(run_folder, seed=1)
    assert series_matches(other, model) == (
        "the snapshots were trained with another recipe (seed=1 where the model has seed=0)")
    wide, _ = train(MLPConfig(p=11, d_hidden=8), TCFG, snapshots="every:6", progress=False)
    assert series_matches(wide.train_info.snapshots, model).startswith(
        "the snapshots are of another model (p=11 where the model has p=7")
    cut = SnapshotSeries(series.cfg, series.epochs[:-1],
                         {k: v[:-1] for k, v in series.params.items()}, series.train_info)
    assert series_matches(cut, model) == ("the snapshots end at epoch 8, the model was trained "
                                          "for 12")
    changed = load(layout.model_file(run_folder, 0))
    with torch.no_grad():
        changed.W_out[0, 0] += 0.25
    why = series_matches(series, changed)
    assert why.startswith("the last snapshot (epoch 12) is not the model: their W_out differ "
                          "by up to 0.25")
    assert series_matches(series, import_mlp(model.state_dict(), activation="relu")) == (
        "the model has no training record to match the snapshots' against")


def test_series_matches_a_float16_series_at_its_precision(run_folder, tmp_path):
    model = load(layout.model_file(run_folder, 0))
    write_series(tmp_path / "half.safetensors", load_snapshots(run_folder, seed=0), "float16")
    half = read_series(tmp_path / "half.safetensors")
    assert half.stored_dtype == "float16" and not torch.equal(half[-1].W_in, model.W_in)
    assert series_matches(half, model) is None


def test_the_shipped_twin_is_named_for_what_it_is(shipped):
    twin = load_snapshots(layout.PRETRAINED_DIR / layout.SHIPPED_SERIES)
    why = series_matches(twin, shipped)
    assert why is not None and why.startswith("the last snapshot (epoch 2000) is not the model")


# ------------------------------------------------------------------------------ item 6
def _sequential(p: int = 7, h: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2 * p, h), nn.ReLU(), nn.Linear(h, p)).state_dict()


@pytest.mark.parametrize(("name", "number", "unit"), [
    ("ckpt_epoch10_v2.pt", 10, "epoch"), ("epoch=9-step=100-v1.ckpt", 9, "epoch"),
    ("epoch_10.pt", 10, "epoch"), ("step=500.ckpt", 500, "step"), ("200.pth", 200, "number"),
    ("ckpt_10.pt", 10, "number"), ("model-0040.pt", 40, "number"),
])
def test_names_are_read_with_the_documented_pattern(name, number, unit):
    read = epoch_from_name(name)
    assert (read.number, read.unit) == (number, unit)


@pytest.mark.parametrize("name", ["ckpt_10_2.pt", "resnet18_5.pt", "epoch1_epoch2.pt"])
def test_ambiguous_names_have_no_epoch(name):
    assert epoch_from_name(name).number is None
    assert epoch_from_name("final.pth") is None and epoch_from_name("last-v1.ckpt") is None


def test_version_suffixes_are_not_epochs(tmp_path):
    for epoch in (10, 20, 30):
        torch.save(_sequential(seed=epoch), tmp_path / f"ckpt_epoch{epoch}_v2.pt")
    assert load_snapshots(tmp_path, activation="relu").epochs == [10, 20, 30]  # was refused


def test_lightning_names_and_duplicates_of_the_same_weights(tmp_path):
    for epoch in (0, 1, 2):
        torch.save({"state_dict": _sequential(seed=epoch), "epoch": epoch,
                    "global_step": 10 * epoch}, tmp_path / f"epoch={epoch}-step={10 * epoch}.ckpt")
    shutil.copy(tmp_path / "epoch=2-step=20.ckpt", tmp_path / "last.ckpt")
    shutil.copy(tmp_path / "epoch=2-step=20.ckpt", tmp_path / "epoch=2-step=20-v1.ckpt")
    series = load_snapshots(tmp_path, activation="relu")
    assert series.epochs == [0, 1, 2]
    assert series.files[-1].name == "epoch=2-step=20.ckpt"
    assert sorted(series.skipped) == [
        ("epoch=2-step=20-v1.ckpt", "the same weights as epoch=2-step=20.ckpt (epoch 2)"),
        ("last.ckpt", "the same weights as epoch=2-step=20.ckpt (epoch 2)")]
    torch.save({"state_dict": _sequential(seed=99), "epoch": 2}, tmp_path / "last.ckpt")
    with pytest.raises(ValueError, match=r"epoch=2-step=20.ckpt and last.ckpt are both epoch 2 "
                       r"but hold different weights"):
        load_snapshots(tmp_path, activation="relu")


def test_the_recorded_epoch_is_preferred_and_contradictions_refused(tmp_path):
    torch.save({"model": _sequential(seed=1), "epoch": 999}, tmp_path / "epoch_10.pt")
    torch.save({"model": _sequential(seed=2), "epoch": 20}, tmp_path / "epoch_20.pt")
    with pytest.raises(ValueError, match=r"cannot place these checkpoints in the series: "
                       r"epoch_10.pt \(its name gives epoch 10, but it records epoch 999\)"):
        load_snapshots(tmp_path, activation="relu")
    torch.save({"model": _sequential(seed=1), "epoch": 10}, tmp_path / "epoch_10.pt")
    torch.save({"model": _sequential(seed=3)}, tmp_path / "run_3_30.pt")
    with pytest.raises(ValueError, match=r"run_3_30.pt \(its name holds several numbers, 3, "
                       r"30, and it records no epoch or step\)"):
        load_snapshots(tmp_path, activation="relu")
    torch.save({"model": _sequential(seed=3), "epoch": 30}, tmp_path / "run_3_30.pt")
    torch.save({"model": _sequential(seed=4), "epoch": 40}, tmp_path / "final.pt")
    assert load_snapshots(tmp_path, activation="relu").epochs == [10, 20, 30, 40]


def test_files_that_are_not_checkpoints_are_skipped_and_listed(tmp_path):
    torch.save(_sequential(seed=0), tmp_path / "epoch_0.pt")
    torch.save(_sequential(seed=5), tmp_path / "epoch_5.pt")
    (tmp_path / "epoch_10.pt").write_text("not weights\n")  # a text file named like an epoch
    (tmp_path / "epoch_15.pt").write_bytes(b"\x80\x02}q\x00.")  # a bare pickle
    torch.save(_sequential(seed=7), tmp_path / "epoch_20.pt",  # torch's pre-1.6 format
               _use_new_zipfile_serialization=False)
    torch.save((torch.zeros(5, 2, dtype=torch.long), torch.zeros(5, dtype=torch.long)),
               tmp_path / "train_data.pth")
    torch.save({"model": _sequential(seed=6)}, tmp_path / "best.pt")
    (tmp_path / "logs").mkdir()
    (tmp_path / ".hidden").write_text("x")
    series = load_snapshots(tmp_path, activation="relu")
    assert series.epochs == [0, 5]
    assert dict(series.skipped) == {
        "best.pt": "no epoch: its name holds no number and it records no 'epoch' or 'step'",
        "epoch_10.pt": "not a torch or safetensors file",
        "epoch_15.pt": "a pickle, never unpickled (unpickling can run code)",
        "epoch_20.pt": "torch's legacy (pre-1.6) format, never read (torch allocates its "
                       "storage sizes before they can be checked); to include it, re-save it: "
                       "torch.save(torch.load(path, weights_only=True), new_path)",
        "logs": "a folder: not read",
        "train_data.pth": "this file holds a tuple, not a state dict (a mapping of names to "
                          "tensors)"}
    line = series.skipped_line()
    assert line.startswith("skipped 6 file(s) of ") and "\n" not in line
    assert "epoch_15.pt (a pickle, never unpickled" in line
    assert "epoch_20.pt (torch's legacy (pre-1.6) format" in line


def test_a_legacy_torch_file_is_named_for_what_it_is(tmp_path):
    torch.save(_sequential(seed=0), tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=r"old.pt: is a torch file in torch's legacy "
                       r"\(pre-1.6\) format.*re-save it with a current torch"):
        import_mlp(tmp_path / "old.pt", activation="relu")


@pytest.mark.parametrize("embed", ["one_hot", "learned"])
def test_a_published_run_folder_with_its_splits_loads(tmp_path, embed):
    from _published import write_run

    run = write_run(tmp_path / "run", p=7, d_mlp=8, embed=embed, d_model=5, num_epochs=30,
                    save_every=10)
    series = load_snapshots(run.folder, activation="relu")
    assert series.epochs == [0, 10, 20, 30]  # final.pth records epoch 30
    assert series.files[-1].name == "final.pth"
    split = ("this file holds a tuple, not a state dict (a mapping of names to tensors)")
    assert sorted(series.skipped) == [("test_data.pth", split), ("train_data.pth", split)]
    pairs = torch.cartesian_prod(torch.arange(7), torch.arange(7))
    torch.testing.assert_close(series[-1](pairs), run.model(pairs), rtol=1e-5, atol=1e-5)


def test_a_folder_of_two_models_is_one_clear_error(tmp_path):
    torch.save(_sequential(p=7, seed=0), tmp_path / "epoch_0.pt")
    torch.save(_sequential(p=7, seed=1), tmp_path / "epoch_1.pt")
    torch.save(_sequential(p=11, seed=2), tmp_path / "epoch_2.pt")
    with pytest.raises(ValueError, match=r"holds checkpoints of 2 different models: p=7, "
                       r"d_hidden=8, .*\(epoch_0.pt, epoch_1.pt\); p=11, d_hidden=8, .*"
                       r"\(epoch_2.pt\)\. A series is one model's training"):
        load_snapshots(tmp_path, activation="relu")


def test_mixed_units_are_refused(tmp_path):
    torch.save({"model": _sequential(seed=0), "epoch": 0}, tmp_path / "a.pt")
    torch.save({"model": _sequential(seed=1), "step": 100}, tmp_path / "b.pt")
    with pytest.raises(ValueError, match=r"placed by epoch \(a.pt\) and others by step \(b.pt\)"):
        load_snapshots(tmp_path, activation="relu")


# ------------------------------------------------------------------------------ item 7
def test_finite_float64_beyond_float32_is_named_not_called_nan():
    state = {k: v.double() for k, v in _sequential().items()}
    state["2.weight"][0, 0] = 1e300
    with pytest.raises(ValueError, match=r"state_dict: '2.weight' \[7, 8\] holds finite values "
                       r"too large for float32 \(1 of 56, up to 1e\+300; float32 ends at "
                       r"3.4e\+38\)"):
        import_mlp(state, activation="relu")


# ------------------------------------------------------------------------------ re-signed splits
def _other_split(tensors: dict[str, torch.Tensor]) -> None:
    mask = tensors["train_mask"]
    tensors["train_mask"] = mask[torch.randperm(len(mask), generator=torch.Generator()
                                                .manual_seed(0))].clone()


def test_resigned_files_with_another_split_are_refused(run_folder, tmp_path):
    series = tmp_path / "snapshots-seed-0.safetensors"
    shutil.copy(layout.series_file(run_folder, 0), series)
    resign_tensors(series, _other_split)
    with pytest.raises(CheckpointError, match=r"its train_mask is not the split its config and "
                       r"recipe imply \(train_frac=0.8, split seed 0: 39 training pairs, the "
                       r"mask has 39, others\): it was edited after training"):
        read_series(series)
    model = tmp_path / "seed-0.safetensors"
    shutil.copy(layout.model_file(run_folder, 0), model)
    resign_tensors(model, _other_split)
    with pytest.raises(CheckpointError, match="its train_mask is not the split"):
        load(model)
    trained = load(layout.model_file(run_folder, 0))
    trained.train_info.train_mask = ~trained.train_info.train_mask
    with pytest.raises(ValueError, match="not written: its train_mask is not the split"):
        save(trained, tmp_path / "again.safetensors")


# ------------------------------------------------------------------------------ key_map
class _Unnamed(nn.Module):
    """An embedding MLP under names no layout knows: `emb` (shared) or `tok_a`/`tok_b`."""

    def __init__(self, d: int, shared: bool, p: int = 7, h: int = 12) -> None:
        super().__init__()
        self.shared = shared
        if shared:
            self.emb = nn.Embedding(p, d)
        else:
            self.tok_a, self.tok_b = nn.Embedding(p, d), nn.Embedding(p, d)
        self.fc1, self.fc2 = nn.Linear(d, h), nn.Linear(h, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ea = (self.emb if self.shared else self.tok_a)(x[:, 0])
        eb = (self.emb if self.shared else self.tok_b)(x[:, 1])
        return self.fc2(torch.relu(self.fc1(ea + eb)))


def _suggested_key_map(message: str) -> dict:
    import ast

    return ast.literal_eval(message.split("e.g. key_map=")[1].split(", with None")[0])


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-operand"])
@pytest.mark.parametrize("d", [8, 7, 14], ids=["d8", "d=p", "d=2p"])
def test_the_suggested_key_map_keeps_every_matrix_and_gives_the_same_model(d, shared):
    """Before: the tables were suggested as layers 0 and 2: at d = p a silently wrong model."""
    torch.manual_seed(0)
    source = _Unnamed(d, shared)
    with pytest.raises(ValueError, match="e.g. key_map=") as refused:
        import_mlp(source.state_dict(), activation="relu")
    key_map = _suggested_key_map(str(refused.value))
    matrices = [k for k, t in source.state_dict().items() if t.ndim == 2]
    assert all(key_map[k] is not None for k in matrices)
    model = import_mlp(source.state_dict(), activation="relu", key_map=key_map)
    pairs = torch.cartesian_prod(torch.arange(7), torch.arange(7))
    assert model.cfg.p == 7 and model.cfg.tied_inputs == shared  # one table: e_a + e_b
    with torch.no_grad():
        assert torch.allclose(model(pairs), source(pairs), atol=1e-5)


def test_no_key_map_is_suggested_when_names_and_shapes_cannot_tell():
    square = {f"{k}.weight": torch.randn(7, 7) for k in ("a", "b", "fc1", "fc2")}
    with pytest.raises(ValueError, match=r"none is suggested: the names and shapes do not tell "
                       r"whether 'a.weight' and 'b.weight' are embedding tables") as refused:
        import_mlp(square, activation="relu")
    assert "e.g. key_map" not in str(refused.value)
    with pytest.raises(ValueError, match=r"none is suggested: no renaming of its matrices into "
                       r"layers gives a model that fits together"):
        import_mlp({"x.weight": torch.randn(3, 5), "y.weight": torch.randn(4, 9)},
                   activation="relu")
