import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from hooked_mlp import MLPConfig, TrainConfig, train, train_many
from hooked_mlp.data import dataset, split_mask
from hooked_mlp.params import init_params
from hooked_mlp.reference import reference_train
from hooked_mlp.training import BatchedTrainer


def test_fast_path_matches_autograd_reference(tiny_cfg, tiny_tcfg):
    ref = reference_train(tiny_cfg, tiny_tcfg)
    trainer = BatchedTrainer(tiny_cfg, tiny_tcfg, [tiny_tcfg.seed])
    for _ in range(tiny_tcfg.epochs):
        trainer.run_epoch()
    got = trainer.params_of(0)
    start = init_params(tiny_cfg, tiny_tcfg.seed)
    for name in ref:
        assert float((ref[name] - start[name]).abs().max()) > 1e-3  # training moved them
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=2e-6)


def test_batched_seeds_match_single_runs(tiny_cfg, tiny_tcfg):
    many = train_many(tiny_cfg, tiny_tcfg, seeds=[4, 1, 9], progress=False)
    for seed, (model, history) in zip([4, 1, 9], many, strict=True):
        alone, h_alone = train(tiny_cfg, dataclasses.replace(tiny_tcfg, seed=seed), progress=False)
        assert model.train_info.train_config.seed == seed
        assert torch.equal(model.train_info.train_mask, alone.train_info.train_mask)
        # bit for bit, not just to float tolerance: a seed's numbers do not depend on the
        # seeds it shares a run with (or on the thread count the run picked)
        for name in ("W_in", "b_in", "W_out", "b_out"):
            assert torch.equal(getattr(model, name), getattr(alone, name)), (seed, name)
        assert history == h_alone


def test_same_seed_gives_identical_weights(tiny_cfg, tiny_tcfg):
    m1, h1 = train(tiny_cfg, tiny_tcfg, progress=False)
    m2, h2 = train(tiny_cfg, tiny_tcfg, progress=False)
    for name in ("W_in", "b_in", "W_out", "b_out"):
        assert torch.equal(getattr(m1, name), getattr(m2, name))
    assert h1 == h2
    m3, _ = train(tiny_cfg, dataclasses.replace(tiny_tcfg, seed=4), progress=False)
    assert not torch.equal(m1.W_in, m3.W_in)


def test_history_and_final_metrics_are_measured(tiny_cfg):
    tcfg = TrainConfig(epochs=40, batch_size=32, lr=1e-2, weight_decay=0.1, seed=0)
    model, history = train(tiny_cfg, tcfg, progress=False)
    assert set(history) == {"train_loss", "train_acc", "val_loss", "val_acc"}
    assert all(len(v) == 40 for v in history.values())
    assert history["train_loss"][-1] < 0.5 * history["train_loss"][0]
    assert history["train_acc"][-1] > history["train_acc"][0]
    # final metrics agree with the model's own forward on its split
    info = model.train_info
    pairs, labels = dataset(tiny_cfg)
    with torch.no_grad():
        logits = model(pairs)
    for split, mask in (("train", info.train_mask), ("val", ~info.train_mask)):
        acc = (logits[mask].argmax(-1) == labels[mask]).float().mean()
        loss = F.cross_entropy(logits[mask], labels[mask])
        assert info.metrics[f"{split}_acc"] == pytest.approx(float(acc), abs=1e-6)
        assert info.metrics[f"{split}_loss"] == pytest.approx(float(loss), rel=1e-4)
    # the last epoch's validation entry is the final validation measurement
    assert history["val_acc"][-1] == pytest.approx(info.metrics["val_acc"], abs=1e-6)
    assert info.metrics["n_train"] == int(info.train_mask.sum()) == int(0.8 * 23 * 23)


def test_split_seed_shared_across_seeds(tiny_cfg):
    tcfg = TrainConfig(epochs=1, split_seed=7)
    (m0, _), (m1, _) = train_many(tiny_cfg, tcfg, seeds=[0, 1], progress=False)
    assert torch.equal(m0.train_info.train_mask, m1.train_info.train_mask)
    assert torch.equal(m0.train_info.train_mask, split_mask(23, 0.8, 7))


def test_partial_last_batch_and_batch_larger_than_data(tiny_cfg):
    tcfg = TrainConfig(epochs=2, batch_size=1000, seed=0)  # one partial batch per epoch
    trainer = BatchedTrainer(tiny_cfg, tcfg, [0])
    steps = trainer._schedule(0)
    assert len(steps) == 1 and steps[0][4] == trainer.n_train
    _, history = train(tiny_cfg, tcfg, progress=False)
    assert len(history["train_loss"]) == 2


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"device": "tpu"}, ValueError, "device must be 'cpu', 'cuda' or 'cuda:N'"),
        ({"threads": 0}, ValueError, "threads must be a positive integer"),
        ({"cfg": "big"}, TypeError, "cfg must be an MLPConfig"),
        ({"tcfg": {"epochs": 1}}, TypeError, "tcfg must be a TrainConfig"),
    ],
)
def test_bad_arguments(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        train(**{"cfg": MLPConfig(p=5, d_hidden=2), "tcfg": TrainConfig(epochs=1), **kwargs},
              progress=False)


def test_bad_seed_lists():
    with pytest.raises(ValueError, match="seeds must be distinct"):
        train_many(MLPConfig(p=5, d_hidden=2), TrainConfig(epochs=1), seeds=[1, 1])
    with pytest.raises(ValueError, match="at least one seed"):
        train_many(MLPConfig(p=5, d_hidden=2), TrainConfig(epochs=1), seeds=[])
    with pytest.raises(ValueError, match="seeds must be integers in \\[0, 4294967295\\]"):
        train_many(MLPConfig(p=5, d_hidden=2), TrainConfig(epochs=1), seeds=[-1])
    with pytest.raises(TypeError, match="seeds must be a sequence of integers, got int"):
        train_many(MLPConfig(p=5, d_hidden=2), TrainConfig(epochs=1), seeds=3)
    with pytest.raises(TypeError, match="seeds must be integers, got 1.5"):
        train_many(MLPConfig(p=5, d_hidden=2), TrainConfig(epochs=1), seeds=[1.5])
    # numpy and torch integers are integers
    runs = train_many(MLPConfig(p=5, d_hidden=2), TrainConfig(epochs=1),
                      seeds=torch.tensor([2, 3]), progress=False)
    assert [m.train_info.train_config.seed for m, _ in runs] == [2, 3]


def test_four_seeds_on_two_threads_match_each_seed_alone(tiny_cfg, tiny_tcfg):
    from hooked_mlp.training import default_threads

    assert default_threads(4) == 2  # the batched run takes the two-thread path
    many = train_many(tiny_cfg, tiny_tcfg, seeds=[0, 1, 2, 3], progress=False)
    alone, h = train(tiny_cfg, dataclasses.replace(tiny_tcfg, seed=2), threads=1, progress=False)
    assert torch.equal(many[2][0].W_in, alone.W_in) and torch.equal(many[2][0].W_out, alone.W_out)
    assert many[2][1] == h


def test_huge_logits_are_not_mistaken_for_divergence(tiny_cfg):
    """Per-sample losses come from logits, so a confident wrong answer (logit gap > 100, where a
    float32 probability underflows to 0) gives a large finite loss, not a false divergence."""
    tcfg = TrainConfig(epochs=1, batch_size=32, lr=1e-6)
    trainer = BatchedTrainer(tiny_cfg, tcfg, [0])
    trainer.param("W_out").mul_(400.0)
    trainer.param("W_in").mul_(40.0)
    trainer.run_epoch()
    loss = float(trainer.history[0, 0, 0])
    assert math.isfinite(loss) and loss > 50
    exact, _ = trainer.evaluate("train")
    assert loss == pytest.approx(float(exact[0]), rel=0.05)


def test_buffers_follow_the_data_not_the_batch_size():
    trainer = BatchedTrainer(MLPConfig(p=5, d_hidden=3), TrainConfig(batch_size=2_000_000), [0])
    assert trainer.max_batch == trainer.n_train == 20
    assert trainer.dpost_buf.numel() == 20 * 3


def test_threads_are_restored(tiny_cfg):
    before = torch.get_num_threads()
    train(tiny_cfg, TrainConfig(epochs=1), threads=2, progress=False)
    assert torch.get_num_threads() == before
