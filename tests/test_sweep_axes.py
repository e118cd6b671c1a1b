"""A run inside a sweep is the run trained alone, bit for bit, for each kind of axis (issue 19,
section 2); the progress bars count runs and run-epochs over the whole sweep."""

import re
from dataclasses import replace

import pytest
import torch

from hooked_mlp import MLPConfig, TrainConfig, load_sweep_model, sweep, train
from hooked_mlp.training.sweep import make_groups, make_spec

MODEL = MLPConfig(p=11, d_hidden=12)
RECIPE = TrainConfig(epochs=15, batch_size=4096, lr=0.01, weight_decay=1.0, train_frac=0.4)

# one cell per kind of axis: optimiser numbers, the initial scale, the split (fraction and
# seed), the width (another stack), the batch size (mini-batches: another stack), the
# activation and the epochs (another stack)
CELLS = [{"weight_decay": 0.3}, {"lr": 0.003}, {"beta1": 0.8, "beta2": 0.99}, {"eps": 1e-6},
         {"init_scale": 0.5}, {"train_frac": 0.7}, {"split_seed": 7}, {"d_hidden": 20},
         {"batch_size": 16}, {"activation": "gelu"}, {"epochs": 7}]
SEEDS = [0, 3]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("axes") / "S"
    table = sweep(CELLS, SEEDS, model=MODEL, recipe=RECIPE, out=out, progress=False,
                  page=False)
    return out, table


def test_the_cells_share_stacks_where_their_shapes_and_steps_agree():
    spec = make_spec(CELLS, SEEDS, MODEL, RECIPE)
    groups = make_groups(spec)
    # width, batch size, activation and epochs make stacks of their own; the rest stack
    assert len(groups) == 5
    assert groups[0] == list(range(2 * (len(CELLS) - 4)))
    assert all(len(g) == len(SEEDS) for g in groups[1:])


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: ",".join(c))
def test_a_sweep_run_equals_the_same_run_trained_alone(swept, cell):
    out, _ = swept
    m = {k: v for k, v in cell.items() if k in MLPConfig.__dataclass_fields__}
    t = {k: v for k, v in cell.items() if k in TrainConfig.__dataclass_fields__}
    for seed in SEEDS:
        got = load_sweep_model(out, seed=seed, **cell)
        alone, history = train(replace(MODEL, **m), replace(RECIPE, **t, seed=seed),
                               progress=False)
        for name, value in alone.state_dict().items():
            assert torch.equal(got.state_dict()[name], value), (cell, seed, name)
        assert torch.equal(got.train_info.train_mask, alone.train_info.train_mask)
        assert got.train_info.history["val_acc"] == history["val_acc"]


def test_the_table_rows_are_the_runs_metrics(swept):
    out, table = swept
    assert len(table) == len(CELLS) * len(SEEDS)
    for r in table.itertuples():
        cell = CELLS[r.cell]
        model = load_sweep_model(out, seed=r.seed, **cell)
        assert r.val_acc == pytest.approx(model.train_info.metrics["val_acc"], abs=0)
        assert r.train_loss == pytest.approx(model.train_info.metrics["train_loss"], abs=0)


def test_the_progress_bars_count_runs_and_run_epochs(tmp_path, capsys):
    sweep({"weight_decay": [0.1, 1.0]}, [0, 1], model=MODEL, recipe=RECIPE,
          out=tmp_path / "S", progress=True, page=False)
    err = capsys.readouterr().err
    assert "sweep runs" in err and "4/4" in err
    n = 4 * RECIPE.epochs
    assert re.search(rf"run-epochs: 100%.* {n}(\.0)?/{n}(\.0)? ", err), err
