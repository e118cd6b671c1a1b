"""Issue 21 section 5: He et al.'s analyses on the shipped checkpoint in their published layout
(`analyses.experiments.published`), imported through `hooked_mlp.import_mlp`."""

import pytest
import torch

from analyses.experiments.published import (
    PUBLISHED_CHECKPOINT,
    imported_published,
    published_logits,
)
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
    assert published.history["val_loss"] == pytest.approx(content["test_losses"])
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
