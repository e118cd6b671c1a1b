"""Sweeps (issue 19): the results folder reads as one table in pandas and DuckDB alike, and any
cell loads as a model whose numbers are its row's; a cell the sweep does not have is refused in
one line naming the axis and its values."""

import pandas as pd
import pytest

from hooked_mlp import MLPConfig, TrainConfig, load_sweep_model, sweep


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweeps") / "S"
    sweep({"weight_decay": [0.1, 1.0], "lr": [0.003, 0.01]}, seeds=[0, 3],
          model=MLPConfig(p=11, d_hidden=8), recipe=TrainConfig(epochs=15, batch_size=4096),
          out=out, workers=1, group_size=3, progress=False, page=False)
    return out


def test_duckdb_and_pandas_read_the_same_table(folder):
    duckdb = pytest.importorskip("duckdb")
    parts = sorted((folder / "results").glob("*.parquet"))
    assert len(parts) == 3  # 8 runs in groups of at most 3
    got = duckdb.sql(f"select * from read_parquet('{folder}/results/*.parquet') order by run").df()
    want = pd.read_parquet(folder / "results").sort_values("run").reset_index(drop=True)
    assert list(got["run"]) == list(range(8))
    for col in ("weight_decay", "lr", "seed", "val_acc", "train_loss", "phase"):
        assert list(got[col]) == list(want[col]), col


def test_every_cell_loads_with_its_rows_numbers(folder):
    table = pd.read_parquet(folder / "results")
    for r in table.itertuples():
        model = load_sweep_model(folder, weight_decay=r.weight_decay, lr=r.lr, seed=r.seed)
        tcfg = model.train_info.train_config
        assert (tcfg.weight_decay, tcfg.lr, tcfg.seed) == (r.weight_decay, r.lr, r.seed)
        assert model.train_info.metrics["val_acc"] == r.val_acc
        assert model.train_info.metrics["train_loss"] == pytest.approx(r.train_loss, abs=0)


@pytest.mark.parametrize("cell, words", [
    ({"weight_decay": 0.5, "lr": 0.01, "seed": 0}, "no cell of this sweep has weight_decay=0.5"),
    ({"weight_decay": 0.1, "seed": 0}, "name the cell: give lr (values lr: [0.003, 0.01])"),
    ({"weight_decay": 0.1, "lr": 0.01}, "name the seed: this sweep has seeds [0, 3]"),
    ({"weight_decay": 0.1, "lr": 0.01, "seed": 1}, "no seed 1; its seeds are [0, 3]"),
    ({"width": 8, "seed": 0}, "no axis 'width'; its axes are ['weight_decay', 'lr']"),
])
def test_a_cell_the_sweep_lacks_is_refused_naming_the_axis(folder, cell, words):
    with pytest.raises(ValueError) as e:
        load_sweep_model(folder, **cell)
    assert words in str(e.value) and "\n" not in str(e.value)
