import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from _backends import BACKENDS, needs_c

from hooked_mlp import HookedMLP, MLPConfig, TrainConfig, train, train_many
from hooked_mlp.data import dataset, split_mask
from hooked_mlp.params import init_params
from hooked_mlp.reference import reference_train
from hooked_mlp.training import BatchedTrainer

BOTH = pytest.mark.parametrize("backend", BACKENDS)


@BOTH
def test_fast_path_matches_autograd_reference(tiny_cfg, tiny_tcfg, backend):
    ref = reference_train(tiny_cfg, tiny_tcfg)
    trainer = BatchedTrainer(tiny_cfg, tiny_tcfg, [tiny_tcfg.seed], backend=backend)
    for _ in range(tiny_tcfg.epochs):
        trainer.run_epoch()
    got = trainer.params_of(0)
    start = init_params(tiny_cfg, tiny_tcfg.seed)
    for name in ref:
        assert float((ref[name] - start[name]).abs().max()) > 1e-3  # training moved them
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=2e-6)


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


def test_split_seed_shared_across_seeds(tiny_cfg):
    tcfg = TrainConfig(epochs=1, split_seed=7)
    (m0, _), (m1, _) = train_many(tiny_cfg, tcfg, seeds=[0, 1], progress=False)
    assert torch.equal(m0.train_info.train_mask, m1.train_info.train_mask)
    assert torch.equal(m0.train_info.train_mask, split_mask(23, 0.8, 7))


@BOTH
def test_partial_last_batch_and_batch_larger_than_data(tiny_cfg, backend):
    tcfg = TrainConfig(epochs=2, batch_size=1000, seed=0)  # one partial batch per epoch
    trainer = BatchedTrainer(tiny_cfg, tcfg, [0], backend="torch")
    steps = trainer._schedule(0)
    assert len(steps) == 1 and steps[0][4] == trainer.n_train
    _, history = train(tiny_cfg, tcfg, progress=False, backend=backend)
    assert len(history["train_loss"]) == 2
    # a batch that does not divide the split: 423 = 6 * 64 + 39, against the reference
    tcfg = TrainConfig(epochs=3, batch_size=64, seed=1)
    assert trainer.n_train % 64 == 39
    model, _ = train(tiny_cfg, tcfg, progress=False, backend=backend)
    ref = reference_train(tiny_cfg, tcfg)
    for name in ref:
        torch.testing.assert_close(getattr(model, name), ref[name], rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"device": "tpu"}, ValueError, "device must be 'cpu', 'cuda' or 'cuda:N'"),
        ({"threads": 0}, ValueError, "threads must be a positive integer"),
        ({"backend": "fast"}, ValueError, "backend must be one of 'auto', 'c', 'torch'"),
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


@needs_c
def test_default_threads():
    from hooked_mlp.training import _cores, default_threads

    cores = _cores()
    assert default_threads(1, backend="c") == min(2, cores)  # two halves of each batch
    assert default_threads(16, backend="c") == min(16, cores)
    assert default_threads(3, backend="torch") == 1
    assert default_threads(4, backend="torch") == min(2, cores)
    assert default_threads(16, device="cpu", backend="torch") == min(2, cores)


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
        moments.append(trainer.exp_avg / (1 - tcfg.beta1))
    scale = float(moments[1].abs().max())
    assert scale > 1e-3
    torch.testing.assert_close(moments[0], moments[1], rtol=0, atol=1e-5 * scale)


@needs_c
@pytest.mark.parametrize("batch_size", [64, 1, 1000])
def test_one_seed_on_two_threads_is_bit_identical_to_one_thread(tiny_cfg, batch_size):
    """The C kernel computes every batch as two halves; two threads take one half each."""
    tcfg = TrainConfig(epochs=3, batch_size=batch_size, seed=2)
    runs = [train(tiny_cfg, tcfg, threads=t, progress=False, backend="c") for t in (1, 2)]
    for name in ("W_in", "b_in", "W_out", "b_out"):
        assert torch.equal(getattr(runs[0][0], name), getattr(runs[1][0], name)), name
    assert runs[0][1] == runs[1][1]
    assert runs[0][0].train_info.metrics == runs[1][0].train_info.metrics


@needs_c
def test_c_batch_order_is_the_documented_one():
    from hooked_mlp.cpu_kernel import shuffle
    from hooked_mlp.data import STREAM_SHUFFLE, hash_prefix, permutations

    for seed, epoch, n in [(0, 0, 10_215), (7, 1999, 423), (2**32 - 1, 5, 1), (3, 2**33, 300)]:
        want = permutations(torch.tensor([seed]), STREAM_SHUFFLE, epoch, n)[0]
        assert torch.equal(shuffle(hash_prefix(seed, STREAM_SHUFFLE, epoch), n), want)


def test_the_c_kernel_is_built():
    """CI builds the extension; a checkout without a C compiler runs on the torch backend."""
    import os

    from hooked_mlp import cpu_kernel

    if os.environ.get("HOOKED_MLP_BACKEND") == "torch":
        pytest.skip("HOOKED_MLP_BACKEND=torch")
    assert cpu_kernel.available(), cpu_kernel._load()[1]
    assert cpu_kernel.resolve_backend("auto", torch.device("cpu")) == "c"
    assert cpu_kernel.resolve_backend("auto", torch.device("cuda")) == "torch"
    with pytest.raises(ValueError, match="backend='c' runs on the CPU only"):
        cpu_kernel.resolve_backend("c", torch.device("cuda"))


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
    trainer.param("W_out").mul_(400.0)
    trainer.param("W_in").mul_(40.0)
    trainer.run_epoch()
    loss = float(trainer.history[0, 0, 0])
    assert math.isfinite(loss) and loss > 50
    exact, _ = trainer.evaluate("train")
    assert loss == pytest.approx(float(exact[0]), rel=0.05)


@needs_c
def test_buffers_follow_the_data_not_the_batch_size():
    trainer = BatchedTrainer(MLPConfig(p=5, d_hidden=3), TrainConfig(batch_size=2_000_000), [0],
                             backend="torch")
    assert trainer.max_batch == trainer.n_train == 20
    assert trainer.dpost_buf.numel() == 20 * 3
    # the C kernel sizes its buffers the same way: by the data (20 pairs), not by the batch
    # size (2 million rows of 64 neurons would be 500 MB of touched memory); measured by the
    # peak resident size, which Linux resets on request
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pytest.skip("cannot reset the peak resident size here")

    def kib(key: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith(key + ":"))

    before = kib("VmRSS")
    _, history = train(MLPConfig(p=5, d_hidden=64), TrainConfig(epochs=2, batch_size=2_000_000),
                       progress=False, backend="c", threads=2)
    assert len(history["train_loss"]) == 2
    assert kib("VmHWM") - before < 100_000


def test_threads_are_restored(tiny_cfg):
    before = torch.get_num_threads()
    train(tiny_cfg, TrainConfig(epochs=1), threads=2, progress=False)
    assert torch.get_num_threads() == before


@needs_c
def test_c_kernel_refuses_buffers_it_would_overrun(tiny_cfg):
    trainer = BatchedTrainer(tiny_cfg, TrainConfig(epochs=1), [0, 1], backend="c")
    k, out = trainer.kernel, torch.empty(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="parameter buffers of at least"):
        k.evaluate(trainer.flat[:100], trainer.val_idx, range(2), 1, out)
    with pytest.raises(ValueError, match=r"pair indices must be in \[0, 529\)"):
        k.evaluate(trainer.flat, trainer.val_idx + 529, range(2), 1, out)
    with pytest.raises(ValueError, match="the C kernel got pairs"):
        k.evaluate(trainer.flat, trainer.val_idx, range(3), 1, out)
    with pytest.raises(ValueError, match="contiguous CPU torch.int64"):
        k.evaluate(trainer.flat, trainer.val_idx.int(), range(2), 1, out)
    k.evaluate(trainer.flat, trainer.val_idx, range(2), 1, out)  # and the real thing works
    assert torch.isfinite(out).all()


def test_per_seed_thread_choice_follows_the_measurements():
    from hooked_mlp.training import _PerSeedThreads

    choice = _PerSeedThreads()
    seen = []
    for epoch in range(200):
        n = choice.pick()
        seen.append(n)
        slow_two = 20 <= epoch < 60  # another process holds a core: two threads are slower
        choice.record(n, {1: 10.0, 2: 20.0 if slow_two else 7.0}[n] + (50.0 if epoch == 0 else 0))
    assert seen[:4] == [2, 2, 1, 1]  # each measured twice (the first epoch is slow: warm-up)
    assert seen[4:20].count(2) >= 15  # then two threads, the faster, with one probe of one
    assert seen[23:60].count(1) >= 35  # within three slow epochs, back to one
    # a probe that loses makes the next one wait twice as long (16, 32, 64 epochs), so the
    # return to two threads after the slowdown takes at most one such wait
    back = next(i for i in range(60, 200) if seen[i] == seen[i + 1] == 2)
    assert back <= 60 + 64 + 2
    ones = [i for i in range(back, 200) if seen[i] == 1]  # from then on only single probes
    assert len(ones) <= 3 and all(seen[i - 1] == seen[i + 1] == 2 for i in ones)
    assert choice.best() == 2 and choice.interval > _PerSeedThreads.PROBE_EVERY


@needs_c
def test_c_evaluation_on_two_threads_matches_one():
    """Evaluation sums chunks of 512 pairs in chunk order, whichever thread computed them."""
    cfg = MLPConfig(p=61, d_hidden=16)
    trainer = BatchedTrainer(cfg, TrainConfig(epochs=1), [0, 1, 2], backend="c")
    assert trainer.train_idx.shape[1] > 5 * 512
    results = []
    for threads in (1, 2):
        out = torch.empty(3, 2, dtype=torch.float64)
        trainer.kernel.evaluate(trainer.flat, trainer.train_idx, range(3), threads, out)
        results.append(out)
    assert torch.equal(results[0], results[1])
    loss, acc = trainer.evaluate("train")  # and the trainer's own evaluation agrees with torch's
    model = HookedMLP.from_params(cfg, trainer.params_of(1))
    pairs, labels = dataset(cfg)
    with torch.no_grad():
        logits = model(pairs[trainer.train_idx[1]])
    y = labels[trainer.train_idx[1]]
    assert float(loss[1]) == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
    assert float(acc[1]) == pytest.approx(float((logits.argmax(-1) == y).float().mean()), abs=1e-6)


@needs_c
def test_several_seeds_with_two_threads_each_match_each_seed_alone(tiny_cfg, tiny_tcfg):
    many = train_many(tiny_cfg, tiny_tcfg, seeds=[5, 6], threads=4, progress=False, backend="c")
    for s, (model, history) in zip((5, 6), many, strict=True):
        alone, h = train(tiny_cfg, dataclasses.replace(tiny_tcfg, seed=s), threads=1,
                         progress=False, backend="c")
        assert torch.equal(model.W_in, alone.W_in) and torch.equal(model.W_out, alone.W_out)
        assert history == h
