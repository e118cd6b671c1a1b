import torch

from hooked_mlp import load_pretrained, pretrained_seeds
from hooked_mlp.data import dataset
from hooked_mlp.files.checkpoints import pretrained_path


def _accuracy(model, mask):
    pairs, labels = dataset(model.cfg)
    with torch.no_grad():
        pred = model(pairs[mask]).argmax(-1)
    return float((pred == labels[mask]).float().mean())


def test_shipped_model_generalises_from_its_own_weights(shipped):
    info = shipped.train_info
    assert info is not None and int(info.train_mask.sum()) == 10215
    val_acc = _accuracy(shipped, ~info.train_mask)
    train_acc = _accuracy(shipped, info.train_mask)
    assert val_acc >= 0.99 and train_acc >= 0.99
    # the recorded metrics are the ones the weights give
    assert abs(val_acc - info.metrics["val_acc"]) < 1e-6
    assert abs(train_acc - info.metrics["train_acc"]) < 1e-6


def test_every_shipped_seed_is_the_seed_recipe():
    seeds = pretrained_seeds()
    assert len(seeds) >= 5 and seeds[0] == 0
    for seed in seeds:
        model = load_pretrained(seed)
        info = model.train_info
        t = info.train_config
        assert (t.epochs, t.batch_size, t.lr, t.weight_decay, t.seed, t.train_frac) == (
            2000, 128, 3e-3, 0.5, seed, 0.8)
        assert len(info.history["val_acc"]) == 2000
        assert info.provenance["trained_by"] == "hooked_mlp"
        assert "hooked-mlp train" in info.provenance["command"]
        assert _accuracy(model, ~info.train_mask) >= 0.99
    assert pretrained_path(0).stat().st_size < 400_000
