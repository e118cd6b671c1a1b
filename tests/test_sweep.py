"""Sweeps (issue 19): a run inside a sweep is the run trained alone; the folder is one table."""

import pandas as pd
import torch
from safetensors.torch import load_file

from hooked_mlp import MLPConfig, TrainConfig
from hooked_mlp.jobs import sweep
from hooked_mlp.training.api import train_stack


def test_a_sweep_cell_equals_its_run_alone(tmp_path):
    cfg = MLPConfig(p=11, d_hidden=16)
    tcfg = TrainConfig(epochs=40, batch_size=4096, lr=0.01)
    out = tmp_path / "S"
    table = sweep({"weight_decay": [0.1, 1.0], "train_frac": [0.3, 0.6]}, seeds=range(2),
                  model=cfg, recipe=tcfg, out=out, progress=False)
    assert len(table) == 8
    for col in ("weight_decay", "train_frac", "seed", "train_acc", "val_acc", "train_loss",
                "val_loss", "memorize_epoch", "grok_epoch", "phase", "weight_norm",
                "train_seconds"):
        assert col in table.columns
    assert set(table["phase"]) <= {"comprehension", "grokking", "memorization", "confusion"}
    assert pd.read_parquet(out / "results").shape[0] == 8
    row = table[(table.weight_decay == 1.0) & (table.train_frac == 0.6) & (table.seed == 1)]
    assert len(row) == 1
    alone_tcfg = TrainConfig(epochs=40, batch_size=4096, lr=0.01, weight_decay=1.0,
                             train_frac=0.6, seed=1)
    [(params, info)] = train_stack([(cfg, alone_tcfg)])
    assert abs(info.metrics["val_acc"] - float(row.val_acc.iloc[0])) < 1e-6
    assert abs(info.metrics["train_loss"] - float(row.train_loss.iloc[0])) < 1e-5
    weights = load_file(next((out / "weights").glob("*.safetensors")))
    assert any(torch.equal(t[i], params[k]) for k in params for name, t in weights.items()
               if name.endswith(k) and t.ndim == params[k].ndim + 1
               for i in range(t.shape[0]))
