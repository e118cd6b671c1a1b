"""Sweeps from the command line and their page (issue 19): one line per refusal, the page lists
every run, the phase diagram aggregates seeds."""

import json
import math
import re

import pandas as pd
import pytest

from analyses.experiments.sweep import majority_phase, phase_diagram
from hooked_mlp.cli import main

TINY = ["--p", "11", "--d-hidden", "16", "--epochs", "30", "--lr", "0.01", "--no-progress"]


def _run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("argv, words", [
    (["--grid", "foo=1,2"], "grid axis 'foo' is not a field of MLPConfig or TrainConfig"),
    (["--grid", "weight_decay=a,1"], "weight_decay: 'a' is not a number"),
    (["--grid", "epochs=1.5"], "epochs: '1.5' is not an integer"),
    (["--grid", "weight_decay"], "expected FIELD=V1,V2"),
    (["--grid", "seed=1,2"], "seeds are given by --seeds"),
    (["--grid", "weight_decay=1,1"], "lists the value 1.0 twice"),
    (["--grid", "weight_decay=1", "--grid", "weight_decay=2"],
     "names the axis 'weight_decay' twice"),
    ([], "give at least one axis"),
])
def test_bad_grids_are_refused_in_one_line_before_any_training(tmp_path, capsys, argv, words):
    rc, _, err = _run(capsys, "sweep", *argv, *TINY, "--out", str(tmp_path / "S"))
    assert rc != 0 and words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "S" / "results").exists()


def test_a_resume_of_a_non_sweep_and_of_another_spec_are_refused(tmp_path, capsys):
    rc, _, err = _run(capsys, "sweep", "--resume", str(tmp_path))
    assert rc == 1 and "is not a sweep folder" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _run(capsys, "sweep", "--resume", str(tmp_path), "--grid", "lr=1")
    assert rc == 2 and "drop --grid" in err
    rc, _, err = _run(capsys, "sweep", "--out", str(tmp_path / "a"), "--page", str(tmp_path))
    assert rc == 2 and "give one of --out DIR" in err


def test_a_cli_sweep_writes_the_table_and_a_page_listing_every_run(tmp_path, capsys):
    out = tmp_path / "S"
    rc, text, err = _run(capsys, "sweep", "--grid", "weight_decay=0.1,1",
                         "--grid", "train_frac=0.3,0.6", "--seeds", "0-1", *TINY,
                         "--out", str(out))
    assert rc == 0, err
    assert text.startswith(f"{out}: 8 runs")
    table = pd.read_parquet(out / "results")
    assert sorted(table["run"]) == list(range(8))
    html = (out / "sweep.html").read_text()
    assert html.count("<tr data-run=") == 8
    for run in range(8):
        assert f'<tr data-run="{run}">' in html
    assert 'id="fig-phase"' in html and 'id="fig-val-acc"' in html and 'id="fig-curves"' in html
    # the page again from the results alone, over other axes
    (out / "sweep.html").unlink()
    rc, text, err = _run(capsys, "sweep", "--page", str(out), "--axes",
                         "train_frac,weight_decay")
    assert rc == 0 and (out / "sweep.html").is_file()
    # the same spec again is refused: the folder holds a sweep already
    rc, _, err = _run(capsys, "sweep", "--grid", "weight_decay=0.1", *TINY, "--out", str(out))
    assert rc == 1 and len(err.strip().splitlines()) == 1
    # and a resume of the finished sweep trains nothing and keeps the table
    rc, text, err = _run(capsys, "sweep", "--resume", str(out), "--no-progress")
    assert rc == 0, err
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results").drop(
        columns=["train_seconds", "group_seconds"]), table.drop(
        columns=["train_seconds", "group_seconds"]))


def test_a_page_never_replaces_a_file_that_is_not_a_sweep_page(tmp_path, capsys):
    from analyses.pages.sweep import write_sweep_page
    from hooked_mlp import MLPConfig, TrainConfig
    from hooked_mlp.jobs import sweep

    out = tmp_path / "S"
    sweep({"weight_decay": [0.1]}, model=MLPConfig(p=11, d_hidden=8),
          recipe=TrainConfig(epochs=5, batch_size=4096), out=out, progress=False)
    (out / "sweep.html").write_text("my notes")
    with pytest.raises(ValueError, match="exists and is not a hooked-mlp sweep page"):
        write_sweep_page(out)
    assert (out / "sweep.html").read_text() == "my notes"


def test_the_diagram_takes_the_majority_phase_and_the_share_that_grokked():
    assert majority_phase(["grokking", "memorization", "grokking"]) == "grokking"
    assert majority_phase(["grokking", "comprehension"]) == "comprehension"  # ties: PHASES order
    assert majority_phase([None]) is None
    rows = []
    for wd in (0.1, 1.0):
        for frac in (0.3, 0.6):
            for seed, phase in enumerate(["grokking", "grokking", "memorization"]):
                grok = 100 * (seed + 1) if wd == 1.0 and phase == "grokking" else None
                rows.append({"weight_decay": wd, "train_frac": frac, "d_hidden": 16,
                             "seed": seed, "phase": phase if wd == 1.0 else "confusion",
                             "val_acc": 0.5 + seed / 10,
                             "grok_epoch": grok})
    rows = rows[:-1]  # one cell with two seeds only
    d = phase_diagram(pd.DataFrame(rows), ["weight_decay", "train_frac", "d_hidden"])
    assert d.x == "weight_decay" and d.y == "train_frac" and d.facets == [{"d_hidden": 16}]
    assert d.x_values == [0.1, 1.0] and d.y_values == [0.3, 0.6]
    assert d.phase[0] == [["confusion", "grokking"], ["confusion", "grokking"]]
    assert d.grokked[0][0, 1] == pytest.approx(2 / 3) and d.grokked[0][1, 1] == 1.0
    assert d.n[0][1, 1] == 2 and d.grok_epoch[0][0, 1] == 150.0
    assert math.isnan(d.grok_epoch[0][0, 0]) and d.val_acc[0][0, 0] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="not an axis"):
        phase_diagram(pd.DataFrame(rows), ["weight_decay"], x="lr")


def test_with_snapshots_dynamics_works_on_any_cell(tmp_path, capsys):
    out = tmp_path / "S"
    rc, _, err = _run(capsys, "sweep", "--grid", "weight_decay=0.1,1", "--seeds", "0-1",
                      "--snapshots", "log:6", *TINY, "--out", str(out))
    assert rc == 0, err
    for wd, seed in (("0.1", "1"), ("1.0", "0")):  # any cell, any seed
        cell = out / "snapshots" / f"weight_decay={wd}"
        rc, _, err = _run(capsys, "dynamics", str(cell), "--seed", seed,
                          "--out", str(tmp_path / f"D{wd}-{seed}"))
        assert rc == 0, err
        data = json.loads((tmp_path / f"D{wd}-{seed}" / "dynamics.json").read_text())
        assert data["source"].endswith(f"weight_decay={wd}/snapshots-seed-{seed}.safetensors")
        assert data["epochs"][0] == 0 and data["epochs"][-1] == 30


def _history(epochs, memorize, grok):
    """Accuracy curves that cross 0.9 at the given epochs (1-based; None: never)."""
    def curve(at):
        return [0.95 if at is not None and e >= at else 0.5 for e in range(1, epochs + 1)]
    return {"train_acc": curve(memorize), "val_acc": curve(grok)}


@pytest.mark.parametrize("memorize, grok, phase", [
    (40, 300, "comprehension"),       # both within the budget, 260 epochs apart
    (40, 1039, "comprehension"),      # 999 apart: still less than 10^3
    (40, 1040, "grokking"),           # 1000 apart
    (40, None, "memorization"),       # only train accuracy
    (None, None, "confusion"),        # neither
    (None, 500, "confusion"),         # validation without train accuracy: no memorisation
])
def test_phases_follow_liu_et_als_rule_on_synthetic_histories(memorize, grok, phase):
    from analyses.experiments.sweep import history_phase

    mem, grk, got = history_phase(_history(3000, memorize, grok))
    assert (mem, grk, got) == (memorize, grok, phase)


def test_the_threshold_and_gap_are_arguments():
    from analyses.experiments.sweep import history_phase

    h = _history(3000, 40, 400)
    assert history_phase(h, gap=300)[2] == "grokking"
    assert history_phase(h, threshold=0.99)[2] == "confusion"
    assert history_phase({"train_acc": [1.0]})[2] is None  # no validation split: no phase


def test_the_sweep_page_is_a_view_of_the_folders_result(tmp_path):
    """analyses.experiments.sweep_folder.sweep_result reads the folder (table, diagram, curves
    from the weights files); the page drawn from that result is the page drawn from the folder,
    and the curves are the runs' own histories."""
    from analyses.experiments.sweep_folder import sweep_result
    from analyses.pages.sweep import render_sweep_page
    from hooked_mlp import MLPConfig, TrainConfig, load_sweep_model
    from hooked_mlp.jobs import sweep

    out = tmp_path / "S"
    table = sweep({"weight_decay": [0.1, 1.0]}, seeds=[0, 1], model=MLPConfig(p=11, d_hidden=8),
                  recipe=TrainConfig(epochs=6, batch_size=4096), out=out, progress=False)
    result = sweep_result(out)
    assert result.n_runs == 4 and len(result.table) == 4 and result.axes == ["weight_decay"]
    assert result.counts == table["phase"].value_counts().to_dict()
    assert result.summary()["n_done"] == 4 and result.diagram is not None
    assert result.curves  # one run of each phase reached
    for run in result.curves:
        model = load_sweep_model(out, seed=run["seed"], **run["cell"])
        assert run["val_acc"] == list(model.train_info.history["val_acc"])

    def stamp_free(html: str) -> str:
        return re.sub(r'content="[^"]*Z"|written [^<]*', "", html)

    assert stamp_free(render_sweep_page(result)) == stamp_free(render_sweep_page(out))
