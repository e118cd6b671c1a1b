"""The questions cache serves a run only under its own key (issue 20, item 5): a valid
checkpoint of another config, recipe or seed under a run key is refused, naming the
difference, and never trained over."""

import pytest

from analyses.experiments.questions import cached_models, run_key
from hooked_mlp import MLPConfig, TrainConfig
from hooked_mlp.training.runs import train_run

CFG = MLPConfig(p=11, d_hidden=8)
TCFG = TrainConfig(epochs=6, batch_size=4096)


def test_the_right_run_is_reused_without_training(tmp_path):
    lines = []
    cached_models(tmp_path, CFG, TCFG, [0, 1], lines.append)
    again, _ = cached_models(tmp_path, CFG, TCFG, [0, 1], lines.append)
    assert len(lines) == 1 and lines[0].startswith("training")
    assert [m.train_info.train_config.seed for m in again] == [0, 1]


@pytest.mark.parametrize("other, words", [
    ({"cfg": MLPConfig(p=11, d_hidden=8, input_encoding="binary")}, "input_encoding"),
    ({"tcfg": TrainConfig(epochs=3, batch_size=4096)}, "epochs: cached 3, asked 6"),
    ({"seeds": [1]}, "seed: cached 1, asked 0"),
])
def test_another_run_under_a_key_is_refused(tmp_path, other, words):
    folder = tmp_path / run_key(CFG, TCFG, [0])
    # what an earlier version, or a hand copy, left under this key: a valid run of another spec
    seeds = other.get("seeds", [0])
    paths = train_run(folder, other.get("cfg", CFG), other.get("tcfg", TCFG), seeds,
                      progress=False)
    if seeds != [0]:  # the file of seed 1 put where seed 0's belongs
        paths[0].rename(folder / "seed-0.safetensors")
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    with pytest.raises(ValueError, match=words):
        cached_models(tmp_path, CFG, TCFG, [0], lambda line: None)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
