"""Many recipes in one stacked run (`train_stack`): each run equals the same run trained alone.

For each kind of axis a sweep varies (learning rate, weight decay, betas and eps, initial scale,
seed, split seed, train fraction; width, which needs separate stacks), on both backends, a run
trained in a stack has bit for bit the weights, history and metrics `train` gives it alone.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _backends import BACKENDS, needs_c

from hooked_mlp import MLPConfig, TrainConfig, train
from hooked_mlp.training import stack_key, train_stack
from hooked_mlp.training.state import TrainState
from hooked_mlp.training.trainer import BatchedTrainer

CFG = MLPConfig(p=17, d_hidden=16)
FULL = TrainConfig(epochs=4, batch_size=4096, lr=1e-2, weight_decay=0.5, train_frac=0.5)

# each axis of a sweep: three values of it, the rest of the recipe fixed
AXES = {
    "lr": [{"lr": v} for v in (1e-3, 1e-2, 3e-2)],
    "weight_decay": [{"weight_decay": v} for v in (0.0, 0.5, 2.0)],
    "betas_eps": [{"beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
                  {"beta1": 0.8, "beta2": 0.98, "eps": 1e-6},
                  {"beta1": 0.95, "beta2": 0.9, "eps": 1e-4}],
    "init_scale": [{"init_scale": v} for v in (0.5, 1.0, 2.0)],
    "seed": [{"seed": v} for v in (0, 1, 7)],
    "split_seed": [{"split_seed": v} for v in (None, 3, 4)],
    "train_frac": [{"train_frac": v} for v in (0.3, 0.5, 1.0)],
}


def _runs(cfg: MLPConfig, tcfg: TrainConfig, changes: list[dict]) -> list[tuple]:
    out = []
    for change in changes:
        model = {k: v for k, v in change.items() if k in ("init_scale",)}
        recipe = {k: v for k, v in change.items() if k not in model}
        out.append((dataclasses.replace(cfg, **model), dataclasses.replace(tcfg, **recipe)))
    return out


def assert_equal_alone(runs: list[tuple], results: list[tuple], backend: str) -> None:
    """Each result bit-identical to `train` of its run alone."""
    for (cfg, tcfg), (params, info) in zip(runs, results, strict=True):
        model, history = train(cfg, tcfg, backend=backend, progress=False)
        assert info.train_config == tcfg
        for name, value in params.items():
            assert torch.equal(value, getattr(model, name)), (tcfg, name)
        assert info.history == history
        assert torch.equal(info.train_mask, model.train_info.train_mask)
        alone = model.train_info.metrics
        assert {k: info.metrics[k] for k in alone} == alone


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("axis", list(AXES))
def test_a_run_in_a_stack_equals_the_run_alone(axis, backend):
    runs = _runs(CFG, FULL, AXES[axis])
    results = train_stack(runs, backend=backend, threads=2)
    assert_equal_alone(runs, results, backend)
    weights = [r[0]["W_out"] for r in results]
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    assert results[0][1].provenance["backend"] == backend


def test_every_axis_at_once_on_another_member():
    """A member the C kernel does not take (two gelu layers, tied inputs), every axis varied
    together in one stack, in an order the state sorts differently; mini-batches."""
    cfg = MLPConfig(p=13, d_hidden=12, activation="gelu", n_layers=2, tied_inputs=True)
    base = TrainConfig(epochs=3, batch_size=40, lr=5e-3)
    changes = [{"lr": 1e-2, "seed": 2, "train_frac": 0.6, "init_scale": 0.7},
               {"weight_decay": 1.0, "seed": 0, "train_frac": 0.5, "split_seed": 9},
               {"beta2": 0.95, "eps": 1e-5, "seed": 2, "train_frac": 0.6},
               {"lr": 1e-2, "seed": 5, "train_frac": 0.5}]
    runs = _runs(cfg, base, changes)  # 0.5 and 0.6 of 169: 84 and 101 pairs, 3 steps each
    assert len({stack_key(*r) for r in runs}) == 1
    trainer = BatchedTrainer.for_runs(runs)
    assert trainer.backend == "torch" and len(trainer.state.groups) == 2
    assert trainer.state.order != list(range(4))  # rows sorted by group, then recipe
    trainer.close()
    results = train_stack(runs)
    assert_equal_alone(runs, results, "torch")


@pytest.mark.parametrize("backend", BACKENDS)
def test_widths_train_in_separate_stacks(backend):
    """Runs whose shapes differ have different keys; grouped by key, each stack's runs equal
    the runs alone."""
    runs = _runs(CFG, FULL, [{"seed": 0}, {"seed": 1}])
    runs += _runs(dataclasses.replace(CFG, d_hidden=24), FULL, [{"seed": 0}])
    keys = [stack_key(*r) for r in runs]
    assert keys[0] == keys[1] != keys[2]
    with pytest.raises(ValueError, match=r"runs\[2\] cannot share a stack with runs\[0\]: "
                       r"d_hidden=24 \(runs\[0\]: 16\); group runs by .*stack_key"):
        train_stack(runs, backend=backend)
    for key in dict.fromkeys(keys):
        group = [r for r, k in zip(runs, keys, strict=True) if k == key]
        assert_equal_alone(group, train_stack(group, backend=backend), backend)


def test_stack_keys_follow_the_steps_per_epoch():
    """Full batch: every fraction shares a stack; mini-batches: only fractions with the same
    number of steps per epoch (and batch sizes that give it)."""
    mini = dataclasses.replace(FULL, batch_size=40)  # 289 pairs: 0.3 -> 86, 0.5 -> 144
    assert stack_key(CFG, FULL) == stack_key(CFG, dataclasses.replace(FULL, train_frac=0.9))
    assert stack_key(CFG, dataclasses.replace(FULL, batch_size=10_000)) == stack_key(CFG, FULL)
    a, b = (stack_key(CFG, dataclasses.replace(mini, train_frac=f)) for f in (0.3, 0.5))
    assert dict(a)["steps_per_epoch"] == 3 and dict(b)["steps_per_epoch"] == 4
    assert a != b
    assert stack_key(CFG, dataclasses.replace(mini, train_frac=0.5, batch_size=48)) == \
        stack_key(CFG, dataclasses.replace(mini, train_frac=0.3))  # 144 / 48 = 3 steps
    assert stack_key(CFG, FULL) != stack_key(CFG, dataclasses.replace(FULL, epochs=5))
    assert stack_key(CFG, FULL) == stack_key(dataclasses.replace(CFG, init_scale=3.0), FULL)
    assert stack_key(CFG, FULL) != stack_key(dataclasses.replace(CFG, operation="sub"), FULL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mini_batches_of_different_sizes_with_the_same_steps(backend):
    mini = dataclasses.replace(FULL, batch_size=40)
    runs = _runs(CFG, mini, [{"train_frac": 0.3}, {"train_frac": 0.5, "batch_size": 48},
                             {"train_frac": 0.3, "seed": 4, "weight_decay": 1.0}])
    assert_equal_alone(runs, train_stack(runs, backend=backend, threads=2), backend)


def test_adamw_of_a_stack_is_torchs_adamw_of_each_run():
    """One AdamW step of a stack of three recipes on random gradients: each run's row is what
    `torch.optim.AdamW(fused=True)` makes of that row alone, bit for bit."""
    runs = _runs(CFG, FULL, AXES["betas_eps"] + AXES["lr"][:1])
    trainer = BatchedTrainer.for_runs(runs, backend="torch")
    s = trainer.state
    gen = torch.Generator().manual_seed(0)
    rows = s.layout.rows
    before = rows(s.flat).clone()
    grads = torch.randn(s.layout.total, generator=gen) * 1e-2
    rows(grads)[:, CFG.n_params :] = 0  # the padding has no gradient
    want = []
    for i, (_, tcfg) in enumerate(s.runs):
        p = before[i].clone()
        p.grad = rows(grads)[i].clone()
        opt = torch.optim.AdamW([p], lr=tcfg.lr, betas=(tcfg.beta1, tcfg.beta2), eps=tcfg.eps,
                                weight_decay=tcfg.weight_decay, fused=True)
        opt.step()
        want.append(p.detach())
    s.grad.copy_(grads)
    with torch.no_grad():
        trainer.impl.adamw()
    for i in range(s.S):
        assert torch.equal(rows(s.flat)[i], want[i]), i
    assert len(trainer.impl._adamw) == 4  # one fused call per recipe
    trainer.close()


@needs_c
def test_a_stack_on_the_c_kernel_equals_the_general_path():
    runs = _runs(CFG, FULL, AXES["weight_decay"] + AXES["train_frac"])
    got = {b: train_stack(runs, backend=b) for b in ("c", "torch")}
    for (pc, ic), (pt, it) in zip(got["c"], got["torch"], strict=True):
        for name in pc:
            torch.testing.assert_close(pc[name], pt[name], rtol=1e-5, atol=2e-6)
        for key in ic.history:
            torch.testing.assert_close(torch.tensor(ic.history[key]),
                                       torch.tensor(it.history[key]), rtol=1e-5, atol=1e-5)


def test_results_come_back_in_the_order_given_with_their_own_records():
    runs = _runs(CFG, FULL, [{"train_frac": 1.0, "seed": 3}, {"train_frac": 0.3},
                             {"train_frac": 1.0, "seed": 1}])
    calls = []
    results = train_stack(runs, on_epoch=lambda t: calls.append((t.epoch, t.epochs, t.S)))
    assert calls == [(e, 4, 3) for e in range(1, 5)]
    for (_, tcfg), (_, info) in zip(runs, results, strict=True):
        assert info.train_config == tcfg
        has_val = tcfg.train_frac < 1
        assert ("val_acc" in info.history) == has_val == ("val_acc" in info.metrics)
        assert info.metrics["n_train"] == int(tcfg.train_frac * 289 + 1e-9)
        assert len(info.history["train_acc"]) == 4
        assert info.provenance["stacked_runs"] == 3


def test_snapshots_per_run_of_a_stack():
    runs = _runs(CFG, FULL, AXES["init_scale"][:2])
    results = train_stack(runs, snapshots=[0, 2, 4])
    for (cfg, tcfg), (params, info) in zip(runs, results, strict=True):
        series = info.snapshots
        assert series.epochs == [0, 2, 4] and series.cfg == cfg
        assert torch.equal(series.params["W_in"][-1], params["W_in"])
        start, _ = train(cfg, dataclasses.replace(tcfg, epochs=2), progress=False)
        assert torch.equal(series.params["W_in"][1], start.W_in)


def test_refusals_name_the_argument():
    for runs, kind, message in [
        ([], ValueError, "runs must hold at least one run"),
        ("runs", TypeError, "runs must be a sequence of"),
        ([(CFG,)], TypeError, r"runs\[0\] must be a pair \(MLPConfig, TrainConfig\)"),
        ([(CFG, FULL), (FULL, CFG)], TypeError, r"runs\[1\] must be a pair"),
        ([(CFG, FULL), (CFG, dataclasses.replace(FULL, epochs=9))], ValueError,
         r"runs\[1\] cannot share a stack with runs\[0\]: epochs=9 \(runs\[0\]: 4\)"),
    ]:
        with pytest.raises(kind, match=message):
            train_stack(runs)
    with pytest.raises(ValueError, match="threads must be an integer in"):
        train_stack([(CFG, FULL)], threads=0)
    with pytest.raises(TypeError, match="stack_key takes an MLPConfig and a TrainConfig"):
        stack_key(FULL, CFG)


def test_the_state_lays_out_one_row_per_run():
    runs = _runs(CFG, FULL, AXES["seed"])
    state = TrainState(runs)
    L = state.layout
    assert L.stride % 64 == 0 and L.total == 3 * L.stride
    for s, (cfg, tcfg) in enumerate(state.runs):
        from hooked_mlp.functional import init_params

        row = L.rows(state.flat)[s]
        for name, value in init_params(cfg, tcfg.seed).items():
            assert torch.equal(L.params(state.flat, s)[name], value)
            start = L.offsets[name]
            assert torch.equal(row[start : start + value.numel()], value.flatten())
        assert not row[sum(v.numel() for v in init_params(cfg, 0).values()):].any()
    stacked = torch.stack([state.flat, 2 * state.flat])  # e.g. snapshots over epochs
    assert torch.equal(L.view(stacked, "b_out")[1, 2], 2 * L.params(state.flat, 2)["b_out"])
