"""The trainer: one definition's gradients, batched seeds, both backends, every member."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from _backends import BACKENDS, needs_c

from hooked_mlp import HookedMLP, MLPConfig, TrainConfig, train, train_many
from hooked_mlp.data import all_pairs, dataset, labels_of, split_mask
from hooked_mlp.family import ACTIVATIONS, OPERATIONS
from hooked_mlp.functional import init_params
from hooked_mlp.reference import one_hot_input, params_from_linear, reference_train, sequential
from hooked_mlp.training.trainer import BatchedTrainer, default_threads

BOTH = pytest.mark.parametrize("backend", BACKENDS)

# every member of the family that is not one value of each table: the activations and
# operations crossed at the default structure, and the structural fields
MEMBERS = (
    [MLPConfig(p=7, d_hidden=6, activation=a, operation=o)
     for a in ACTIVATIONS for o in OPERATIONS]
    + [MLPConfig(p=7, d_hidden=6, tied_inputs=True), MLPConfig(p=7, d_hidden=6, bias=False),
       MLPConfig(p=7, d_hidden=6, n_layers=3, activation="gelu"),
       MLPConfig(p=7, d_hidden=6, tied_inputs=True, bias=False, activation="quad",
                 init_scale=0.3),
       MLPConfig(p=7, d_hidden=6, n_layers=2, bias=False, operation="div")]
)


def _name(cfg: MLPConfig) -> str:
    return (f"{cfg.activation}-{cfg.operation}{'-tied' if cfg.tied_inputs else ''}"
            f"{'-nobias' if not cfg.bias else ''}-L{cfg.n_layers}")


@pytest.mark.parametrize("cfg", MEMBERS, ids=[_name(c) for c in MEMBERS])
def test_gradients_equal_autograd_on_the_one_hot_sequential(cfg):
    """In float64, one full-batch step of the trainer: its gradient (in the flat buffer) equals
    autograd's on the plain one-hot `nn.Sequential` with the same weights and pairs."""
    tcfg = TrainConfig(epochs=1, batch_size=10_000, seed=4, train_frac=0.75)
    trainer = BatchedTrainer(cfg, tcfg, [4], backend="torch", dtype=torch.float64)
    start = {k: v.double() for k, v in init_params(cfg, 4).items()}
    trainer.run_epoch()  # one step: the whole train split
    seq = sequential(cfg, start)
    tokens = all_pairs(cfg.p)[split_mask(cfg, 0.75, 4)]
    loss = F.cross_entropy(seq(one_hot_input(tokens, cfg, torch.float64)),
                           labels_of(tokens, cfg))
    loss.backward()
    want = params_from_linear(cfg, {k: v.grad for k, v in seq.named_parameters()})
    assert set(want) == set(trainer.names)
    for name in want:
        got = trainer.state.view(trainer.state.grad, name)[0]
        assert float(want[name].abs().max()) > 0, name  # a gradient that can be wrong
        torch.testing.assert_close(got, want[name], rtol=1e-10, atol=1e-13, msg=name)
    # and the logged train loss is that of the start, measured before the step
    assert float(trainer.history[0, 0, 0]) == pytest.approx(float(loss.detach()), rel=1e-6)


# a recipe under which small members generalise within seconds (measured over 4 seeds each:
# validation accuracy >= 99.4 % for every one below)
SMALL = TrainConfig(epochs=400, batch_size=128, lr=1e-2, weight_decay=0.5, seed=0)
LEARNERS = [MLPConfig(p=41, d_hidden=128, activation=a, operation=o)
            for a in ("relu", "gelu", "quad") for o in ("add", "sub", "mul")]
LEARNERS.append(MLPConfig(p=41, d_hidden=128, n_layers=2))


@pytest.mark.parametrize("cfg", LEARNERS, ids=[_name(c) for c in LEARNERS])
def test_small_members_learn(cfg):
    model, history = train(cfg, SMALL, progress=False)
    assert model.train_info.metrics["val_acc"] >= 0.99
    assert history["val_acc"][0] < 0.2  # it learned: it did not start there
    assert model.cfg == cfg and model.train_info.provenance["backend"] in ("c", "torch")


@BOTH
def test_matches_the_plain_autograd_loop(tiny_cfg, tiny_tcfg, backend):
    ref = reference_train(tiny_cfg, tiny_tcfg)
    trainer = BatchedTrainer(tiny_cfg, tiny_tcfg, [tiny_tcfg.seed], backend=backend)
    for _ in range(tiny_tcfg.epochs):
        trainer.run_epoch()
    got = trainer.params_of(0)
    start = init_params(tiny_cfg, tiny_tcfg.seed)
    for name in ref:
        assert float((ref[name] - start[name]).abs().max()) > 1e-3  # training moved them
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=2e-6)


# the configurations the C kernel accepts: the study's structure, any operation, any
# initialisation scale, full-data training
C_MEMBERS = ([MLPConfig(p=23, d_hidden=32, operation=o) for o in OPERATIONS]
             + [MLPConfig(p=23, d_hidden=32, init_scale=0.2)])


@needs_c
@pytest.mark.parametrize("cfg", C_MEMBERS, ids=[f"{c.operation}-{c.init_scale}"
                                                 for c in C_MEMBERS])
@pytest.mark.parametrize("train_frac", [0.8, 1.0])
def test_the_c_kernel_equals_the_general_path_where_it_accepts(cfg, train_frac):
    tcfg = TrainConfig(epochs=6, batch_size=64, seed=3, train_frac=train_frac)
    runs = {b: train(cfg, tcfg, progress=False, backend=b) for b in ("c", "torch")}
    (mc, hc), (mt, ht) = runs["c"], runs["torch"]
    assert mc.train_info.provenance["backend"] == "c"
    for name in mc.state_tensors():
        torch.testing.assert_close(getattr(mc, name), getattr(mt, name), rtol=1e-5, atol=2e-6)
    assert set(hc) == set(ht)
    for key in hc:
        torch.testing.assert_close(torch.tensor(hc[key]), torch.tensor(ht[key]), atol=1e-5,
                                   rtol=1e-5)


def test_the_c_kernel_declines_what_it_does_not_support(tiny_cfg):
    from hooked_mlp.training import c_kernel
    from hooked_mlp.training.backends import resolve_backend

    cpu = torch.device("cpu")
    for change in ({"activation": "gelu"}, {"tied_inputs": True}, {"bias": False},
                   {"n_layers": 2}):
        cfg = dataclasses.replace(tiny_cfg, **change)
        (field,) = change
        assert field in c_kernel.supports(cfg)
        assert resolve_backend("auto", cpu, cfg) == "torch"
        with pytest.raises(ValueError, match=f"backend='c' was asked for but {field}"):
            resolve_backend("c", cpu, cfg)
        model, _ = train(cfg, TrainConfig(epochs=1), progress=False)  # auto: the general path
        assert model.train_info.provenance["backend"] == "torch"
    with pytest.raises(ValueError, match="it runs on the CPU only"):
        resolve_backend("c", torch.device("cuda"), tiny_cfg)


@BOTH
def test_batched_seeds_match_single_runs(tiny_cfg, tiny_tcfg, backend):
    many = train_many(tiny_cfg, tiny_tcfg, seeds=[4, 1, 9], progress=False, backend=backend)
    for seed, (model, history) in zip([4, 1, 9], many, strict=True):
        alone, h_alone = train(tiny_cfg, dataclasses.replace(tiny_tcfg, seed=seed),
                               progress=False, backend=backend)
        assert model.train_info.provenance["backend"] == backend
        assert model.train_info.train_config.seed == seed
        assert torch.equal(model.train_info.train_mask, alone.train_info.train_mask)
        # bit for bit, not just to float tolerance: a seed's numbers do not depend on the
        # seeds it shares a run with (or on the thread count the run picked)
        for name in ("W_in", "b_in", "W_out", "b_out"):
            assert torch.equal(getattr(model, name), getattr(alone, name)), (seed, name)
        assert history == h_alone


def test_batched_seeds_of_other_members_match_single_runs():
    cfg = MLPConfig(p=13, d_hidden=16, activation="gelu", tied_inputs=True, bias=False,
                    n_layers=2, operation="sub")
    tcfg = TrainConfig(epochs=3, batch_size=32)
    many = train_many(cfg, tcfg, seeds=[2, 7], progress=False)
    alone, h = train(cfg, dataclasses.replace(tcfg, seed=7), progress=False)
    assert torch.equal(many[1][0].W_hidden, alone.W_hidden) and many[1][1] == h
    assert many[1][0].b_in is None and many[1][0].W_in.shape == (13, 16)


@BOTH
def test_same_seed_gives_identical_weights(tiny_cfg, tiny_tcfg, backend):
    m1, h1 = train(tiny_cfg, tiny_tcfg, progress=False, backend=backend)
    m2, h2 = train(tiny_cfg, tiny_tcfg, progress=False, backend=backend)
    for name in ("W_in", "b_in", "W_out", "b_out"):
        assert torch.equal(getattr(m1, name), getattr(m2, name))
    assert h1 == h2
    m3, _ = train(tiny_cfg, dataclasses.replace(tiny_tcfg, seed=4), progress=False)
    assert not torch.equal(m1.W_in, m3.W_in)


@BOTH
def test_history_and_final_metrics_are_measured(tiny_cfg, backend):
    tcfg = TrainConfig(epochs=40, batch_size=32, lr=1e-2, weight_decay=0.1, seed=0)
    model, history = train(tiny_cfg, tcfg, progress=False, backend=backend)
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


@BOTH
def test_full_data_training_has_no_validation(tiny_cfg, backend):
    model, history = train(tiny_cfg, TrainConfig(epochs=3, train_frac=1.0), progress=False,
                           backend=backend)
    assert set(history) == {"train_loss", "train_acc"}
    m = model.train_info.metrics
    assert "val_acc" not in m and "val_loss" not in m and m["n_val"] == 0
    assert m["n_train"] == 23 * 23 and bool(model.train_info.train_mask.all())
    assert all(math.isfinite(v) for v in history["train_loss"])


def test_division_trains_on_the_pairs_it_can_label():
    cfg = MLPConfig(p=13, d_hidden=16, operation="div")
    model, _ = train(cfg, TrainConfig(epochs=2), progress=False)
    info = model.train_info
    assert info.metrics["n_train"] + info.metrics["n_val"] == 13 * 12
    assert not bool(info.train_mask[::13].any())


def test_split_seed_shared_across_seeds(tiny_cfg):
    tcfg = TrainConfig(epochs=1, split_seed=7)
    (m0, _), (m1, _) = train_many(tiny_cfg, tcfg, seeds=[0, 1], progress=False)
    assert torch.equal(m0.train_info.train_mask, m1.train_info.train_mask)
    assert torch.equal(m0.train_info.train_mask, split_mask(tiny_cfg, 0.8, 7))


@BOTH
def test_partial_last_batch_and_batch_larger_than_data(tiny_cfg, backend):
    tcfg = TrainConfig(epochs=2, batch_size=1000, seed=0)  # one partial batch per epoch
    trainer = BatchedTrainer(tiny_cfg, tcfg, [0], backend="torch")
    (steps,) = trainer.impl.prepare(0)  # one group
    n_train = trainer.state.groups[0].n_train
    assert len(steps) == 1 and steps[0][3] == n_train
    _, history = train(tiny_cfg, tcfg, progress=False, backend=backend)
    assert len(history["train_loss"]) == 2
    # a batch that does not divide the split: 423 = 6 * 64 + 39, against the reference
    tcfg = TrainConfig(epochs=3, batch_size=64, seed=1)
    assert n_train % 64 == 39
    model, _ = train(tiny_cfg, tcfg, progress=False, backend=backend)
    ref = reference_train(tiny_cfg, tcfg)
    for name in ref:
        torch.testing.assert_close(getattr(model, name), ref[name], rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"device": "tpu"}, ValueError, "device must be 'cpu', 'cuda' or 'cuda:N'"),
        ({"threads": 0}, ValueError, "threads must be an integer in [1, 256]"),
        ({"threads": 5000}, ValueError, "threads must be an integer in [1, 256], got 5000"),
        ({"threads": 2**31}, ValueError, "threads must be an integer in [1, 256]"),
        ({"backend": "fast"}, ValueError, "backend must be one of 'auto', 'c', 'torch'"),
        ({"cfg": "big"}, TypeError, "cfg must be an MLPConfig"),
        ({"tcfg": {"epochs": 1}}, TypeError, "tcfg must be a TrainConfig"),
    ],
)
def test_bad_arguments(kwargs, exc, message):
    with pytest.raises(exc) as e:
        train(**{"cfg": MLPConfig(p=5, d_hidden=2), "tcfg": TrainConfig(epochs=1), **kwargs},
              progress=False)
    assert message in str(e.value)


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
    with pytest.raises(ValueError, match="at most 100,000 seeds"):
        train_many(MLPConfig(p=5, d_hidden=2), TrainConfig(epochs=1), seeds=range(10**9))
    # numpy and torch integers are integers
    runs = train_many(MLPConfig(p=5, d_hidden=2), TrainConfig(epochs=1),
                      seeds=torch.tensor([2, 3]), progress=False)
    assert [m.train_info.train_config.seed for m, _ in runs] == [2, 3]


@pytest.mark.parametrize(("backend", "threads"), [pytest.param("c", 2, marks=needs_c),
                                                  pytest.param("c", 3, marks=needs_c),
                                                  ("torch", 2)])
def test_seeds_on_several_threads_match_each_seed_alone(tiny_cfg, tiny_tcfg, backend, threads):
    many = train_many(tiny_cfg, tiny_tcfg, seeds=[0, 1, 2, 3], progress=False, threads=threads,
                      backend=backend)
    for s in (0, 2, 3):  # seeds from each thread's block
        alone, h = train(tiny_cfg, dataclasses.replace(tiny_tcfg, seed=s), threads=1,
                         progress=False, backend=backend)
        assert torch.equal(many[s][0].W_in, alone.W_in)
        assert torch.equal(many[s][0].W_out, alone.W_out)
        assert many[s][1] == h


def test_default_threads():
    from hooked_mlp.checks import cores

    n = cores()
    assert default_threads(1, backend="c") == 1  # one seed, one thread (validation beside it)
    assert default_threads(16, backend="c") == min(16, n)
    assert default_threads(3, backend="torch") == 1
    assert default_threads(4, backend="torch") == min(2, n)
    assert default_threads(16, device="cpu", backend="torch") == min(2, n)


def test_backend_from_the_environment(monkeypatch, tiny_cfg):
    monkeypatch.setenv("HOOKED_MLP_BACKEND", "torch")
    assert BatchedTrainer(tiny_cfg, TrainConfig(), [0]).backend == "torch"
    monkeypatch.setenv("HOOKED_MLP_BACKEND", "fastest")
    with pytest.raises(ValueError, match="the environment variable HOOKED_MLP_BACKEND must be "
                       "one of 'auto', 'c', 'torch', got 'fastest'"):
        BatchedTrainer(tiny_cfg, TrainConfig(), [0])


@BOTH
def test_huge_logits_are_not_mistaken_for_divergence(tiny_cfg, backend):
    """Per-sample losses come from logits, so a confident wrong answer (logit gap > 100, where a
    float32 probability underflows to 0) gives a large finite loss, not a false divergence."""
    tcfg = TrainConfig(epochs=1, batch_size=32, lr=1e-6)
    trainer = BatchedTrainer(tiny_cfg, tcfg, [0], backend=backend)
    with torch.no_grad():
        trainer.param("W_out").mul_(400.0)
        trainer.param("W_in").mul_(40.0)
    trainer.run_epoch()
    loss = float(trainer.history[0, 0, 0])
    assert math.isfinite(loss) and loss > 50
    exact, _ = trainer.evaluate("train")
    assert loss == pytest.approx(float(exact[0]), rel=0.05)


def test_threads_are_restored(tiny_cfg):
    before = torch.get_num_threads()
    train(tiny_cfg, TrainConfig(epochs=1), threads=2, progress=False)
    assert torch.get_num_threads() == before


@BOTH
def test_seed_shape_matches_reference_after_one_epoch(backend):
    """p = 113, 100 neurons, batch 128: 80 steps, against the same steps run in float64. Adam
    magnifies last-bit differences in gradients near zero (its update is g / (|g| + eps)), so
    no float32 implementation stays within an ulp; what is checked is that this one drifts no
    more than the float32 autograd loop does. (This caught 1 - beta2 computed in float, which
    is 1e-5 off and made the C backend drift 4x more.)"""
    cfg, tcfg = MLPConfig(), TrainConfig(epochs=1, seed=0)
    exact = reference_train(cfg, tcfg, dtype=torch.float64)
    ref = reference_train(cfg, tcfg)
    trainer = BatchedTrainer(cfg, tcfg, [0], backend=backend)
    trainer.run_epoch()
    got = trainer.params_of(0)

    def rms(params):
        d = torch.cat([(params[k].double() - exact[k]).flatten() for k in exact])
        return float(d.pow(2).mean().sqrt())

    assert rms(ref) < 6e-8
    assert rms(got) < 1.5 * rms(ref)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=0, atol=3e-6)


@needs_c
def test_c_and_torch_gradients_agree_on_one_step():
    """One step at the seed shape from the same start: the first AdamW moment is 0.1 x the
    gradient, so the two backends' gradients can be compared directly."""
    cfg, tcfg = MLPConfig(), TrainConfig(epochs=1, seed=5, batch_size=10_215)  # one step
    moments = []
    for backend in ("c", "torch"):
        trainer = BatchedTrainer(cfg, tcfg, [5], backend=backend)
        trainer.run_epoch()
        moments.append(trainer.state.exp_avg / (1 - tcfg.beta1))
    scale = float(moments[1].abs().max())
    assert scale > 1e-3
    torch.testing.assert_close(moments[0], moments[1], rtol=0, atol=1e-5 * scale)


def test_the_c_kernel_is_built():
    """CI builds the extension; a checkout without a C compiler runs on the general path."""
    import os

    from hooked_mlp.training import c_kernel
    from hooked_mlp.training.backends import resolve_backend

    if os.environ.get("HOOKED_MLP_BACKEND") == "torch":
        pytest.skip("HOOKED_MLP_BACKEND=torch")
    assert c_kernel.available(), c_kernel.unavailable_reason()
    assert resolve_backend("auto", torch.device("cpu"), MLPConfig()) == "c"
    assert resolve_backend("auto", torch.device("cuda"), MLPConfig()) == "torch"


@BOTH
def test_a_tie_is_a_miss_as_argmax_says(backend):
    """All-equal logits (zero weights, as in a dead bias-free model) are counted right only
    where the answer is class 0, the argmax, in the history, the metrics and helpers.accuracy
    alike."""
    from hooked_mlp import helpers

    cfg = MLPConfig(p=11, d_hidden=4)
    trainer = BatchedTrainer(cfg, TrainConfig(epochs=1, lr=1e-6), [0], backend=backend)
    with torch.no_grad():
        trainer.flat.zero_()
    loss, acc = trainer.evaluate("val")
    assert float(loss[0]) == pytest.approx(math.log(11), rel=1e-5)  # uniform over 11 classes
    val, labels = trainer.state.groups[0].val_idx[0], trainer.state.labels
    want = float((labels[val] == 0).float().mean())
    assert float(acc[0]) == pytest.approx(want, abs=1e-6) and want < 0.2
    trainer.run_epoch()  # the history's train accuracy: measured before the (tiny) update
    train = trainer.state.groups[0].train_idx[0]
    assert float(trainer.history[0, 0, 1]) == pytest.approx(
        float((labels[train] == 0).float().mean()), abs=1e-6)
    model = HookedMLP.from_params(cfg, {k: torch.zeros_like(v)
                                        for k, v in trainer.params_of(0).items()})
    assert helpers.accuracy(model) == pytest.approx(1 / 11, abs=1e-6)
