"""The optional C kernel (`hooked_mlp.training.c_kernel`) against plain torch, and its refusals.

The kernel is held to a float64 autograd loop written here, from the same start and in the same
batch order, for every operation (the labels are data to it); its seeds are independent of each
other bit for bit, whichever call or thread trains them; and every bad argument is refused with
an exception that names it. Only the `supports` tests run where the extension is not built.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from hooked_mlp import MLPConfig
from hooked_mlp.data import STREAM_SHUFFLE, hash_prefix, permutations, split_mask
from hooked_mlp.training import c_kernel

needs_c = pytest.mark.skipif(not c_kernel.available(),
                             reason=f"the C kernel is not here: {c_kernel.unavailable_reason()}")

RECIPE = {"lr": 3e-3, "betas": (0.9, 0.98), "weight_decay": 0.5, "eps": 1e-8}
NAMES = ("W_in", "b_in", "W_out", "b_out")


# ------------------------------------------------------------------------------ supports


def _cfg(**fields: object) -> SimpleNamespace:
    """A configuration with the study's values and `fields` changed (a namespace, so that fields
    `MLPConfig` does not have yet, or values it does not allow yet, can be asked about)."""
    base = {"p": 113, "d_hidden": 100, "activation": "relu", "operation": "add",
            "tied_inputs": False, "bias": True, "n_layers": 1, "init_scale": 1.0,
            "input_encoding": "one_hot"}
    return SimpleNamespace(**{**base, **fields})


def test_supports_the_study_and_every_operation():
    assert c_kernel.supports(MLPConfig()) is None
    assert c_kernel.supports(_cfg()) is None
    assert c_kernel.supports(SimpleNamespace(p=7, d_hidden=3)) is None  # fields not landed yet
    for op in ("add", "sub", "mul", "div", "x2_xy_y2"):
        assert c_kernel.supports(_cfg(operation=op)) is None
    for scale in (0.1, 1.0, 30.0):
        assert c_kernel.supports(_cfg(init_scale=scale)) is None
    assert c_kernel.supports(_cfg(p=65_535, d_hidden=1_000_000)) is None


@pytest.mark.parametrize(("field", "value"), [
    ("activation", "gelu"), ("activation", "silu"), ("activation", "quad"),
    ("activation", "identity"), ("tied_inputs", True), ("bias", False), ("n_layers", 2),
    ("n_layers", 0), ("n_layers", True), ("input_encoding", "fourier"), ("p", 65_536),
    ("p", 0), ("d_hidden", 2**31),
])
def test_supports_names_what_it_declines(field, value):
    why = c_kernel.supports(_cfg(**{field: value}))
    assert why is not None and f"{field}={value!r}" in why


# ------------------------------------------------------------------------------ set-up


@dataclass
class Problem:
    """Everything a kernel call needs for S seeds of one shape, and the same data for torch."""

    p: int
    H: int
    B: int
    kernel: c_kernel.EpochKernel
    offsets: tuple[int, int, int, int]
    sizes: tuple[int, int, int, int]
    flat: Tensor
    exp_avg: Tensor
    exp_avg_sq: Tensor
    train_idx: Tensor  # [S, n]
    a_of: Tensor
    b_of: Tensor
    labels: Tensor
    seeds: list[int]

    @property
    def S(self) -> int:
        return len(self.seeds)

    def params(self, s: int, flat: Tensor | None = None) -> dict[str, Tensor]:
        """Seed s's parameters, as views of `flat`."""
        flat = self.flat if flat is None else flat
        shapes = ((2 * self.p, self.H), (self.H,), (self.H, self.p), (self.p,))
        return {name: flat[o + s * n: o + (s + 1) * n].view(shape)
                for name, o, n, shape in zip(NAMES, self.offsets, self.sizes, shapes,
                                             strict=True)}

    def prefixes(self, epoch: int) -> Tensor:
        return torch.tensor([hash_prefix(s, STREAM_SHUFFLE, epoch) for s in self.seeds],
                            dtype=torch.int64)

    def order(self, s: int, epoch: int) -> Tensor:
        """Seed s's pair indices in the batch order of `epoch`."""
        n = self.train_idx.shape[1]
        perm = permutations(torch.tensor([self.seeds[s]]), STREAM_SHUFFLE, epoch, n)[0]
        return self.train_idx[s][perm]

    def train(self, epoch: int, seeds: range | None = None, flat: Tensor | None = None,
              moments: tuple[Tensor, Tensor] | None = None, out: Tensor | None = None) -> Tensor:
        """One kernel epoch (steps before it: `epoch` whole epochs); returns `out`."""
        seeds = range(self.S) if seeds is None else seeds
        out = torch.full((self.S, 2), -1.0, dtype=torch.float64) if out is None else out
        m, v = (self.exp_avg, self.exp_avg_sq) if moments is None else moments
        steps = math.ceil(self.train_idx.shape[1] / self.B)
        self.kernel.train(self.flat if flat is None else flat, m, v, self.train_idx,
                          self.prefixes(epoch), seeds, epoch * steps, out)
        return out


def pair_tables(p: int, operation: str) -> tuple[Tensor, Tensor, Tensor]:
    """a, b and label of every pair of the dataset, row-major (no b = 0 for div)."""
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    if operation == "div":
        a, b = a[b != 0], b[b != 0]
    label = {
        "add": lambda: a + b,
        "sub": lambda: a - b,
        "mul": lambda: a * b,
        "div": lambda: a * torch.tensor([pow(int(x), p - 2, p) for x in b]),
        "x2_xy_y2": lambda: a * a + a * b + b * b,
    }[operation]() % p
    return a, b, label


def make_problem(p: int, H: int, B: int, seeds: list[int], operation: str = "add",
                 train_frac: float = 0.8) -> Problem:
    """Random starts like `nn.Linear`'s, zero moments, a different split per seed."""
    a_of, b_of, labels = pair_tables(p, operation)
    sizes = (2 * p * H, H, H * p, p)
    S = len(seeds)
    offsets = tuple(sum(S * n for n in sizes[:i]) for i in range(4))
    flat = torch.empty(S * sum(sizes))
    gen = torch.Generator().manual_seed(1234 + p)
    for o, n, fan_in in zip(offsets, sizes, (2 * p, 2 * p, H, H), strict=True):
        flat[o: o + S * n].uniform_(-fan_in**-0.5, fan_in**-0.5, generator=gen)
    n_pairs = a_of.numel()
    n_train = int(train_frac * n_pairs)
    if operation == "add":  # the package's own split
        cfg = MLPConfig(p=p, d_hidden=H)
        masks = [split_mask(cfg, train_frac, seed) for seed in seeds]
        train_idx = torch.stack([mask.nonzero().flatten() for mask in masks])
    else:
        train_idx = torch.stack([torch.randperm(n_pairs, generator=gen)[:n_train].sort().values
                                 for _ in seeds])
    kernel = c_kernel.EpochKernel(offsets=offsets, p=p, d_hidden=H, batch_size=B, a_of=a_of,
                                    b_of=b_of, labels=labels, **RECIPE)
    return Problem(p, H, B, kernel, offsets, sizes, flat, torch.zeros_like(flat),
                   torch.zeros_like(flat), train_idx.contiguous(), a_of, b_of, labels, seeds)


def logits_of(params: dict[str, Tensor], a: Tensor, b: Tensor, p: int) -> Tensor:
    W_in, b_in, W_out, b_out = (params[k] for k in NAMES)
    return torch.relu(W_in[a] + W_in[p + b] + b_in) @ W_out + b_out


def reference_epochs(prob: Problem, s: int, epochs: int, dtype: torch.dtype = torch.float64
                     ) -> tuple[dict[str, Tensor], list[tuple[float, float]]]:
    """Plain autograd and torch.optim.AdamW from seed s's parameters now (call it before the
    kernel trains them), in the kernel's batch order: the parameters after `epochs` epochs, and
    each epoch's mean loss and accuracy (each sample measured in its batch, before the batch's
    update)."""
    params = {k: v.detach().to(dtype).clone().requires_grad_() for k, v in prob.params(s).items()}
    opt = torch.optim.AdamW(params.values(), **RECIPE)
    history = []
    for epoch in range(epochs):
        order, loss_sum, hits = prob.order(s, epoch), 0.0, 0.0
        for lo in range(0, order.numel(), prob.B):
            idx = order[lo: lo + prob.B]
            y = prob.labels[idx]
            logits = logits_of(params, prob.a_of[idx], prob.b_of[idx], prob.p)
            each = F.cross_entropy(logits, y, reduction="none")
            opt.zero_grad()
            each.mean().backward()
            opt.step()
            loss_sum += float(each.detach().sum())
            hits += float((logits.gather(1, y[:, None])[:, 0] >= logits.amax(1)).sum())
        history.append((loss_sum / order.numel(), hits / order.numel()))
    return {k: v.detach() for k, v in params.items()}, history


def rms_error(got: dict[str, Tensor], exact: dict[str, Tensor]) -> float:
    d = torch.cat([(got[k].double() - exact[k]).flatten() for k in NAMES])
    return float(d.pow(2).mean().sqrt())


# ------------------------------------------------------------------------------ training


@needs_c
@pytest.mark.parametrize(("operation", "batch_size"), [
    ("add", 64), ("add", 1), ("add", 1000), ("sub", 64), ("mul", 64), ("div", 64),
    ("x2_xy_y2", 64),
])
def test_two_epochs_match_float64_autograd(operation, batch_size):
    """p = 23, 32 neurons: the second epoch starts at step0 > 0, with the moments of the first."""
    prob = make_problem(23, 32, batch_size, [3], operation)
    start = {k: v.clone() for k, v in prob.params(0).items()}
    exact, history = reference_epochs(prob, 0, 2)
    outs = [prob.train(epoch).clone() for epoch in range(2)]
    got = prob.params(0)
    for name in NAMES:
        assert float((exact[name] - start[name].double()).abs().max()) > 1e-3  # it trained
        torch.testing.assert_close(got[name].double(), exact[name], rtol=0, atol=2e-5)
    assert rms_error(got, exact) < 1e-6
    for out, (loss, acc) in zip(outs, history, strict=True):
        assert float(out[0, 0]) == pytest.approx(loss, rel=1e-5)
        assert float(out[0, 1]) == pytest.approx(acc, abs=1.5 / prob.train_idx.shape[1])


@needs_c
def test_study_shape_matches_float64_autograd_after_one_epoch():
    """p = 113, 100 neurons, batch 128: 80 steps. Adam magnifies last-bit differences in
    gradients near zero, so what is checked is that the float32 kernel drifts from float64 no
    more than torch's own float32 autograd loop does."""
    prob = make_problem(113, 100, 128, [1])
    exact, history = reference_epochs(prob, 0, 1)
    float32, _ = reference_epochs(prob, 0, 1, torch.float32)
    out = prob.train(0)
    got = prob.params(0)
    assert rms_error(float32, exact) < 6e-8
    assert rms_error(got, exact) < 1.5 * rms_error(float32, exact)
    for name in NAMES:
        torch.testing.assert_close(got[name].double(), exact[name], rtol=0, atol=3e-6)
    assert float(out[0, 0]) == pytest.approx(history[0][0], rel=1e-6)
    assert float(out[0, 1]) == pytest.approx(history[0][1], abs=1.5 / prob.train_idx.shape[1])


def _state(prob: Problem) -> list[Tensor]:
    return [prob.flat.clone(), prob.exp_avg.clone(), prob.exp_avg_sq.clone()]


@needs_c
def test_seeds_do_not_depend_on_their_call_or_thread():
    """Three seeds in one call, each alone, and split over two Python threads: the same bits."""
    def fresh() -> Problem:
        return make_problem(23, 32, 64, [4, 1, 9])

    together = fresh()
    outs = [together.train(epoch).clone() for epoch in range(2)]

    alone = fresh()
    for epoch in range(2):
        out = torch.full((3, 2), -1.0, dtype=torch.float64)
        for s in range(3):
            alone.train(epoch, range(s, s + 1), out=out)
        assert torch.equal(out, outs[epoch])
    for a, b in zip(_state(alone), _state(together), strict=True):
        assert torch.equal(a, b)

    threaded = fresh()
    with ThreadPoolExecutor(2) as pool:
        for epoch in range(2):
            out = torch.full((3, 2), -1.0, dtype=torch.float64)
            jobs = [pool.submit(threaded.train, epoch, seeds, out=out)
                    for seeds in (range(0, 1), range(1, 3))]
            for job in jobs:
                job.result()
            assert torch.equal(out, outs[epoch])
    for a, b in zip(_state(threaded), _state(together), strict=True):
        assert torch.equal(a, b)

    # and an empty range changes nothing
    before = _state(together)
    together.train(2, range(1, 1))
    for a, b in zip(before, _state(together), strict=True):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------ evaluation


@needs_c
def test_evaluate_matches_torch():
    """Every pair of two seeds (529: two chunks of the kernel's 512), once with logits so large
    that a float32 probability would underflow: the loss stays finite, from the logits."""
    prob = make_problem(23, 32, 64, [0, 1])
    prob.train(0)
    n = prob.a_of.numel()
    pairs = torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(s))
                         for s in range(2)])
    for scale in (1.0, 400.0):
        flat = prob.flat.clone()
        for s in range(2):
            prob.params(s, flat)["W_out"].mul_(scale)
        out = torch.full((2, 2), -1.0, dtype=torch.float64)
        prob.kernel.evaluate(flat, pairs, range(2), out)
        for s in range(2):
            params = {k: v.double() for k, v in prob.params(s, flat).items()}
            logits = logits_of(params, prob.a_of[pairs[s]], prob.b_of[pairs[s]], prob.p)
            y = prob.labels[pairs[s]]
            loss = float(F.cross_entropy(logits, y))
            acc = float((logits.gather(1, y[:, None])[:, 0] >= logits.amax(1)).double().mean())
            assert math.isfinite(float(out[s, 0]))
            assert float(out[s, 0]) == pytest.approx(loss, rel=1e-5)
            assert float(out[s, 1]) == pytest.approx(acc, abs=1.5 / n)
        if scale > 1:
            assert float(out[:, 0].min()) > 10

    # one seed of the two, in a thread of its own while the other runs here: the same numbers
    both = torch.empty(2, 2, dtype=torch.float64)
    prob.kernel.evaluate(prob.flat, pairs, range(2), both)
    split = torch.empty(2, 2, dtype=torch.float64)
    worker = threading.Thread(target=prob.kernel.evaluate,
                              args=(prob.flat, pairs, range(1, 2), split))
    worker.start()
    prob.kernel.evaluate(prob.flat, pairs, range(0, 1), split)
    worker.join()
    assert torch.equal(split, both)


@needs_c
def test_evaluate_of_no_pairs_is_nan_without_calling_c():
    prob = make_problem(23, 32, 64, [0, 1])
    out = torch.zeros(2, 2, dtype=torch.float64)
    prob.kernel.evaluate(prob.flat, torch.empty(2, 0, dtype=torch.int64), range(1, 2), out)
    assert torch.equal(out[0], torch.zeros(2, dtype=torch.float64))
    assert torch.isnan(out[1]).all()
    with pytest.raises(ValueError, match="evaluate got pairs"):
        prob.kernel.evaluate(prob.flat, torch.empty(2, 0, dtype=torch.int64), range(3), out)
    with pytest.raises(ValueError, match="pairs must hold 1 to"):  # the C kernel refuses it
        prob.kernel._kernel.evaluate(prob.flat.numpy(), np.empty((2, 0), np.int64), 0, 2,
                                     out.numpy())


# ------------------------------------------------------------------------------ batch order


@needs_c
def test_batch_order_is_the_documented_one():
    for seed, epoch, n in [(0, 0, 10_215), (7, 1999, 423), (2**32 - 1, 5, 1), (3, 2**33, 300)]:
        want = permutations(torch.tensor([seed]), STREAM_SHUFFLE, epoch, n)[0]
        assert torch.equal(c_kernel.shuffle(hash_prefix(seed, STREAM_SHUFFLE, epoch), n), want)
    assert c_kernel.shuffle(5, 0).shape == (0,)
    for prefix in (-1, 2**32):
        with pytest.raises(ValueError, match=r"prefix must be an integer in \[0, 4294967295\]"):
            c_kernel.shuffle(prefix, 3)
    with pytest.raises(ValueError, match="n must be an integer >= 0"):
        c_kernel.shuffle(0, -1)


# ------------------------------------------------------------------------------ refusals


@needs_c
def test_calls_refuse_bad_buffers():
    prob = make_problem(23, 32, 64, [0, 1])
    k, flat, m, v, idx = prob.kernel, prob.flat, prob.exp_avg, prob.exp_avg_sq, prob.train_idx
    pre, out = prob.prefixes(0), torch.empty(2, 2, dtype=torch.float64)
    before = _state(prob)

    def train(**change: object) -> None:
        args = {"flat": flat, "exp_avg": m, "exp_avg_sq": v, "train_idx": idx, "prefixes": pre,
                "seeds": range(2), "step0": 0, "out": out, **change}
        k.train(**args)

    refusals: list[tuple[Callable[[], None], type[Exception], str]] = [
        # the wrong kind of tensor
        (lambda: train(flat=flat.double()), ValueError, "flat must be a CPU torch.float32"),
        (lambda: train(train_idx=idx.int()), ValueError, "train_idx must be a CPU torch.int64"),
        (lambda: train(out=out.float()), ValueError, "out must be a CPU torch.float64"),
        (lambda: train(flat=flat.numpy()), TypeError, "flat must be a torch.Tensor"),
        (lambda: train(train_idx=torch.cat([idx, idx], 1)[:, ::2]), ValueError,
         "train_idx must be a C-contiguous buffer of int64"),
        (lambda: train(out=torch.empty(2, 4, dtype=torch.float64)[:, :2]), ValueError,
         "out must be a C-contiguous, writable buffer of float64"),
        # too small, the wrong shape
        (lambda: train(flat=flat[:100]), ValueError,
         "params must hold the parameters of 2 seeds"),
        (lambda: train(exp_avg_sq=v[:-1]), ValueError,
         "exp_avg_sq must hold the parameters of 2 seeds"),
        (lambda: train(train_idx=idx[0]), ValueError, "train_idx must be 2-D"),
        (lambda: train(prefixes=pre[:1]), ValueError, r"prefixes must be \[2\]"),
        (lambda: train(out=out[:1]), ValueError, r"out must be \[2, 2\]"),
        # out-of-range values
        (lambda: train(train_idx=idx + 529), ValueError,
         r"train_idx\[0, 0\] = \d+: pair indices must be in \[0, 529\)"),
        (lambda: train(train_idx=torch.cat([idx[:1], idx[1:] - 600])), ValueError,
         r"train_idx\[1, \d+\] = -\d+: pair indices must be in \[0, 529\)"),
        (lambda: train(prefixes=torch.tensor([0, 2**32])), ValueError,
         r"prefixes\[1\] = 4294967296: must be in \[0, 2\^32\)"),
        (lambda: train(seeds=range(3)), ValueError, r"s_hi must be an integer in \[0, 2\], got 3"),
        (lambda: train(seeds=range(2, 1)), ValueError, r"s_lo must be an integer in \[0, 1\]"),
        (lambda: train(seeds=range(0, 2, 2)), ValueError, "seeds must be a range with step 1"),
        (lambda: train(seeds=[0, 1]), ValueError, "seeds must be a range with step 1"),
        (lambda: train(step0=-1), ValueError, "step0 must be an integer in"),
        (lambda: train(step0=2**70), ValueError, "step0 must be an integer in"),
        (lambda: train(step0=1.5), TypeError, "step0 must be an integer"),
        # buffers that share memory
        (lambda: train(exp_avg=flat), ValueError, "params and exp_avg must not share memory"),
        (lambda: train(flat=m.view(-1)), ValueError, "params and exp_avg must not share memory"),
    ]
    for call, kind, message in refusals:
        with pytest.raises(kind, match=message):
            call()
    for a, b in zip(before, _state(prob), strict=True):  # nothing was written
        assert torch.equal(a, b)

    vals = torch.stack([torch.arange(100), torch.arange(100)])
    for call, kind, message in [
        (lambda: k.evaluate(flat[:100], vals, range(2), out), ValueError,
         "params must hold the parameters of 2 seeds"),
        (lambda: k.evaluate(flat, vals + 500, range(2), out), ValueError,
         r"pairs\[0, 29\] = 529: pair indices must be in \[0, 529\)"),
        (lambda: k.evaluate(flat, vals, range(3), out), ValueError, "s_hi must be an integer"),
        (lambda: k.evaluate(flat, vals.t(), range(2), out), ValueError,
         "pairs must be a C-contiguous"),
        (lambda: k.evaluate(flat, vals, range(2), torch.empty(3, 2, dtype=torch.float64)),
         ValueError, r"out must be \[2, 2\]"),
    ]:
        with pytest.raises(kind, match=message):
            call()
    k.evaluate(flat, vals, range(2), out)  # and the real thing works
    assert torch.isfinite(out).all()


@needs_c
def test_the_extension_checks_what_the_wrapper_passes_through():
    """The extension's own checks, for callers other than `EpochKernel`: items, writability,
    objects without a buffer, and the construction of a `Kernel`."""
    module = c_kernel._load()[0]
    prob = make_problem(5, 3, 4, [0])
    flat, idx = prob.flat.numpy(), prob.train_idx.numpy()
    out = np.zeros((1, 2))
    k = prob.kernel._kernel
    read_only = np.zeros((1, 2))
    read_only.flags.writeable = False
    for args, kind, message in [
        ((flat, [[0, 1]], 0, 1, out), TypeError, "pairs must export a buffer of int64"),
        ((flat, idx.astype(np.int32), 0, 1, out), ValueError,
         r"pairs must hold int64 \('q' or 'l'\) items, got format 'i' of itemsize 4"),
        ((flat, idx.astype(">i8"), 0, 1, out), ValueError, "pairs must hold int64"),
        ((flat.astype(np.float16), idx, 0, 1, out), ValueError,
         r"params must hold float32 \('f'\) items, got format 'e'"),
        ((flat, idx, 0, 1, read_only), ValueError, "out must be a C-contiguous, writable"),
        ((flat, idx, 0, 2**64, out), ValueError, "s_hi must be an integer in"),
        ((flat, idx, 0, 1, flat[:4].view(np.float64).reshape(1, 2)), ValueError,
         "params and out must not share memory"),
    ]:
        with pytest.raises(kind, match=message):
            k.evaluate(*args)

    a, b, y = (t.numpy() for t in pair_tables(5, "add"))
    good = {"p": 5, "d_hidden": 3, "batch_size": 4, "offsets": prob.offsets, "lr": 1e-3,
            "beta1": 0.9, "beta2": 0.98, "weight_decay": 0.5, "eps": 1e-8, "a_of": a, "b_of": b,
            "labels": y}
    module.Kernel(**good)
    for change, kind, message in [
        ({"p": 0}, ValueError, r"p must be an integer in \[1, 65535\], got 0"),
        ({"p": 65_536}, ValueError, r"p must be an integer in \[1, 65535\]"),
        ({"p": 2**64}, ValueError, r"p must be an integer in \[1, 65535\]"),
        ({"p": "5"}, TypeError, "p must be an integer"),
        ({"d_hidden": 2**31}, ValueError, r"d_hidden must be an integer in \[1, 2147483646\]"),
        ({"batch_size": 0}, ValueError, "batch_size must be an integer in"),
        ({"batch_size": 2**40}, ValueError, "batch_size must be an integer in"),
        ({"offsets": (0, 1, 2)}, ValueError, "offsets must be a sequence of 4 integers"),
        ({"offsets": (0, 1, 2, -3)}, ValueError, r"offsets\[3\] must be an integer in \[0, "),
        ({"lr": -1.0}, ValueError, "lr must be a finite number >= 0"),
        ({"eps": math.nan}, ValueError, "eps must be a finite number >= 0"),
        ({"beta2": 1.0}, ValueError, r"beta2 must be a finite number in \[0, 1\)"),
        ({"labels": y + 1}, ValueError, r"labels\[\d+\] = 5: values must be in \[0, p = 5\)"),
        ({"a_of": a - 1}, ValueError, r"a_of\[0\] = -1: values must be in \[0, p = 5\)"),
        ({"b_of": b[:-1]}, ValueError, "of one length"),
        ({"a_of": a.astype(np.float64)}, ValueError, "a_of must hold int64"),
        ({"b_of": b.reshape(5, 5)}, ValueError, "must be 1-D"),
    ]:
        with pytest.raises(kind, match=message):
            module.Kernel(**{**good, **change})

    # the largest model it takes: built without allocating it, refused at the first call
    big = module.Kernel(**{**good, "p": 65_535, "d_hidden": 2**31 - 2,
                           "offsets": (0, 2**62, 2**62, 2**62)})
    with pytest.raises(ValueError, match="params must hold the parameters of 1 seeds"):
        big.evaluate(flat, idx, 0, 1, out)
    with pytest.raises(ValueError, match="params must hold the parameters of 1 seeds"):
        big.train_epoch(flat, flat.copy(), flat.copy(), idx, np.zeros(1, np.int64), 0, 1, 0, out)


# ------------------------------------------------------------------------------ memory


def _kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith(key + ":"))


def _peak_kib_of(call: Callable[[], None]) -> int:
    """How far the resident size rose above its start while `call` ran (Linux resets the peak
    on request)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _kib("VmRSS")
    call()
    return _kib("VmHWM") - before


@needs_c
def test_memory_follows_the_data_not_the_seeds_or_the_batch_size():
    """p = 5 (25 pairs), 64 neurons: a batch size of 2 million must not size the buffers (2
    million rows of 64 neurons would be 500 MB), nor 4,000 seeds (a seed's scratch, ~10 KB
    here, would be 40 MB)."""
    try:
        _peak_kib_of(lambda: None)
    except OSError:
        pytest.skip("cannot reset the peak resident size here")
    peaks = {}
    for S in (1, 4000):
        prob = make_problem(5, 64, 2_000_000, list(range(S)), "sub")
        for t in (prob.exp_avg, prob.exp_avg_sq):
            t.fill_(0.0)  # touched now, so that the call's own memory is what is measured
        out = torch.zeros(S, 2, dtype=torch.float64)
        pre = prob.prefixes(0)
        peaks[S] = max(
            _peak_kib_of(lambda prob=prob, out=out, pre=pre: prob.kernel.train(
                prob.flat, prob.exp_avg, prob.exp_avg_sq, prob.train_idx, pre, range(prob.S),
                0, out)),
            _peak_kib_of(lambda prob=prob, out=out: prob.kernel.evaluate(
                prob.flat, prob.train_idx, range(prob.S), out)),
        )
        assert torch.isfinite(out).all()
    assert peaks[1] < 20_000
    assert peaks[4000] < peaks[1] + 4_000, peaks
