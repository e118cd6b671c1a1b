"""Sweeps (issue 19): a resume refuses a folder whose spec or code version disagrees, and a
damaged sweep.json, each in one line with a non-zero exit, before anything is trained."""

import json

import pytest

from hooked_mlp import MLPConfig, TrainConfig
from hooked_mlp.cli import main
from hooked_mlp.jobs import sweep

MODEL, RECIPE = MLPConfig(p=11, d_hidden=8), TrainConfig(epochs=8, batch_size=4096)


@pytest.fixture
def folder(tmp_path):
    out = tmp_path / "S"
    sweep({"weight_decay": [0.1, 1.0]}, model=MODEL, recipe=RECIPE, out=out, workers=1,
          group_size=1, progress=False, page=False)
    (out / "results" / "group-00001.parquet").unlink()  # one group left to train
    return out


def _resume(capsys, folder):
    rc = main(["sweep", "--resume", str(folder), "--no-progress"])
    return rc, capsys.readouterr().err.strip()


def _edit(folder, change):
    path = folder / "sweep.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def test_a_resume_with_another_spec_is_refused_naming_the_difference(folder):
    with pytest.raises(ValueError, match=r"holds another sweep \(.*weight_decay") as e:
        sweep({"weight_decay": [0.1, 2.0]}, model=MODEL, recipe=RECIPE, out=folder,
              resume=True, progress=False, page=False)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="holds another sweep"):
        sweep({"weight_decay": [0.1, 1.0]}, model=MODEL, recipe=TrainConfig(epochs=9),
              out=folder, resume=True, progress=False, page=False)
    assert not (folder / "results" / "group-00001.parquet").exists()  # nothing trained


def test_a_resume_of_a_folder_written_by_other_code_is_one_line(folder, capsys):
    def other_code(doc):
        key = sorted(doc["code"])[0]
        doc["code"][key] = "0" * 12

    _edit(folder, other_code)
    rc, err = _resume(capsys, folder)
    assert rc == 1 and "was written by other code" in err and len(err.splitlines()) == 1
    assert not (folder / "results" / "group-00001.parquet").exists()


@pytest.mark.parametrize("damage, words", [
    (lambda d: d.pop("code"), "corrupt sweep spec (no code version)"),
    (lambda d: d.update(groups=[[0]]), "do not hold each of its 2 runs exactly once"),
    (lambda d: d.update(format="something else"), "not a sweep spec"),
    (lambda d: d.update(format_version=99), "written by a newer hooked-mlp"),
])
def test_a_damaged_sweep_json_is_refused_in_one_line(folder, capsys, damage, words):
    _edit(folder, damage)
    rc, err = _resume(capsys, folder)
    assert rc == 1 and words in err and len(err.splitlines()) == 1, err


def test_a_resume_of_a_run_folder_is_not_a_sweep(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.safetensors").write_bytes(b"x")
    rc, err = _resume(capsys, tmp_path / "run")
    assert rc == 1 and "is not a sweep folder (it has no sweep.json)" in err
    assert len(err.splitlines()) == 1
