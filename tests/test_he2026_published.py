"""Issue 21 section 5: He et al.'s analyses on the shipped checkpoint in their published layout
(`analyses.experiments.published`), imported through `hooked_mlp.import_mlp`."""

import json

import pytest
import torch

from analyses.experiments.published import (
    PUBLISHED_CHECKPOINT,
    imported_published,
    published_logits,
)
from hooked_mlp import HookedMLP
from hooked_mlp.data import all_pairs
from hooked_mlp.files.foreign import read_file


@pytest.fixture(scope="module")
def published():
    return imported_published()


def test_the_shipped_file_is_in_the_published_layout():
    content, _ = read_file(PUBLISHED_CHECKPOINT)
    assert PUBLISHED_CHECKPOINT.stat().st_size < 300_000
    assert {"model", "train_loss", "test_loss", "train_losses", "test_losses", "grad_norms",
            "param_norms", "epoch", "optimizer", "scheduler"} <= set(content)
    shapes = {k: tuple(v.shape) for k, v in content["model"].items()}
    assert shapes == {"mlp.W_in": (128, 23), "mlp.W_out": (23, 128), "mlp.basis": (23, 23)}
    assert content["epoch"] == len(content["train_losses"]) == len(content["test_losses"]) == 2500


def test_the_import_computes_the_published_forward(published):
    assert (published.model.cfg.p, published.model.cfg.d_hidden) == (23, 128)
    assert published.max_abs_diff < 1e-4 and published.max_abs_logit > 10
    content, _ = read_file(PUBLISHED_CHECKPOINT)
    pairs = all_pairs(23)
    with torch.no_grad():
        torch.testing.assert_close(published.model(pairs).double(),
                                   published_logits(content["model"], pairs), atol=1e-4,
                                   rtol=1e-5)
    assert published.history["val_loss"] == pytest.approx(content["test_losses"][1:])
    assert published.epoch == 2500


def test_bad_arguments_are_refused():
    content, _ = read_file(PUBLISHED_CHECKPOINT)
    with pytest.raises(ValueError, match="activation must be one of"):
        imported_published(activation="relu")  # their names: ReLU, GeLU, Quad, Id
    with pytest.raises(ValueError, match="act_type must be one of"):
        published_logits(content["model"], all_pairs(23), "relu")


def test_an_import_that_differs_from_the_published_forward_is_refused(monkeypatch):
    import analyses.experiments.published as published

    real = published.published_logits
    monkeypatch.setattr(published, "published_logits",
                        lambda state, pairs, act: real(state, pairs, act) + 0.01)
    with pytest.raises(ValueError, match="differ from the published forward by 0.01"):
        published.imported_published()


def test_the_section_runs_on_the_report_models_and_the_imported_checkpoint(shipped):
    from types import SimpleNamespace

    from analyses.experiments.he2026 import HOLDS, NO_HISTORY, he2026_section
    from analyses.experiments.published import LABEL
    from analyses.pages.render import render
    from analyses.swap import SWAPS
    from analyses.views import figure_png

    bare = HookedMLP.from_params(shipped.cfg, shipped.state_tensors())  # no training record
    result = he2026_section(SimpleNamespace(models=[shipped, bare], labels=["seed 0", "bare"]))
    assert result.labels == ["seed 0", "bare"] and result.imported.labels == [LABEL]
    imp = result.imported
    # the even/odd split on the imported checkpoint (529 pairs)
    assert imp.trained[0] == pytest.approx(526 / 529)
    assert [imp.swap[0][a] for a in ("abs", "quad", "quartic")] == [1.0, 1.0, 1.0]
    assert imp.swap[0]["identity"] == pytest.approx(22 / 529)
    assert imp.swap[0]["cubic"] == pytest.approx(26 / 529)
    # spread phases: m = 1..4 moments well below the random level, over all 11 frequencies
    m = imp.moments[0]
    assert m["n_groups"] == 11 and m["null"] == pytest.approx(0.1644, abs=1e-3)
    assert max(m["cos"][:4] + m["sin"][:4]) == pytest.approx(0.0886, abs=1e-3)
    # two frequencies carry every pair; the loss falls with k
    s = imp.subsets[0]
    assert s["k"] == [1, 2, 3, 5, 8, 11] and s["acc"][:2] == [pytest.approx(13 / 23), 1.0]
    assert s["loss"][0] == pytest.approx(2.078, abs=1e-3) and s["loss"][-1] < 1e-5
    # their stage detector on the file's losses (no accuracies there), in epochs
    st = imp.stages[0]
    assert (st["he_memorisation_end"], st["he_generalisation"], st["he_how"]) == (
        129, 2158, "loss < 0.1")
    assert st["memorisation_end"] is None and st["val_loss_half"] == 99
    assert result.stages[1] is None  # the bare model has no history
    header, rows = result.claims()
    assert header == ["He et al.'s claim", "seed 0", "bare", LABEL]
    assert all(row[3].endswith(f": {HOLDS}") for row in rows)  # every claim holds on it
    assert rows[4][2] == f"no training history: {NO_HISTORY}"
    assert rows[2][1].endswith("does not hold")  # the shipped seed's phases: not spread
    doc = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert doc["labels"] == ["seed 0", "bare"] and doc["imported"]["labels"] == [LABEL]
    assert doc["checkpoint"]["max_abs_diff"] < 1e-4 and doc["checkpoint"]["epoch"] == 2500
    assert "published layout (imported): even activations keep >= 100.0%" in result.describe()
    s = result.summary()
    assert list(s["models"]) == ["seed 0", "bare", LABEL]
    assert s["models"][LABEL]["even_worst"] == min(
        v for a, v in result.imported.swap[0].items() if SWAPS[a][1] == "even")
    assert s["models"]["bare"]["stages"] is None and s["checkpoint"]["epoch"] == 2500
    assert s["models"]["seed 0"]["verdicts"]["phases"] == rows[2][1].split(": ")[-1]
    html = render("sections/he2026.html.j2", section=SimpleNamespace(
        key="he2026", anchor="he2026", title="He et al."), result=result, error=None,
        figures={k: figure_png(v) for k, v in result.figures().items()})
    assert html.count("<img") == 2 and html.count("<tr>") == 1 + len(rows)
    assert "published-p23-relu.pth" in html and f"<th>{LABEL}</th>" in html


def test_a_checkpoint_that_cannot_be_read_costs_only_its_column(shipped, monkeypatch):
    from types import SimpleNamespace

    import analyses.experiments.published as published
    from analyses.experiments.he2026 import he2026_section

    monkeypatch.setattr(published.imported_published, "__defaults__",
                        (published.PRETRAINED_DIR / "missing.pth", "ReLU"))
    result = he2026_section(SimpleNamespace(models=[shipped], labels=["seed 0"]))
    assert result.imported is None and "missing.pth" in result.imported_error
    assert result.claims()[0] == ["He et al.'s claim", "seed 0"]
    assert "could not be read" in result.describe()
    assert "missing.pth" in result.summary()["imported_error"]


def test_the_experiment_refuses_lists_of_another_length(shipped):
    from analyses.experiments.he2026 import he2026

    with pytest.raises(ValueError, match="labels must hold one entry for each of the 1 models"):
        he2026([shipped], ["a", "b"])
    with pytest.raises(ValueError, match="histories must hold one entry for each of the 1"):
        he2026([shipped], histories=[])
    with pytest.raises(ValueError, match="models must hold at least one model"):
        he2026([])


def test_the_script_makes_the_shipped_file(tmp_path):
    """Its provenance: scripts/make_published_checkpoint.py trains it again (about 7 s)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "make_published_checkpoint.py"
    out = tmp_path / "final.pth"
    done = subprocess.run([sys.executable, str(script), "--out", str(out)], capture_output=True,
                          text=True, timeout=600, check=True)
    assert "test acc 0.977" in done.stdout
    made, _ = read_file(out)
    shipped, _ = read_file(PUBLISHED_CHECKPOINT)
    for key in ("mlp.W_in", "mlp.W_out", "mlp.basis"):
        torch.testing.assert_close(made["model"][key], shipped["model"][key], atol=1e-5,
                                   rtol=1e-4)
    assert made["test_losses"] == pytest.approx(shipped["test_losses"], rel=1e-4, abs=1e-6)
