"""The optional C training step (`hooked_mlp.training.c_kernel`) against torch, and its refusals.

The kernel is held to a float64 autograd loop written here, from the same start and in the batch
order it is given, for every operation (the labels are data to it) and for runs of different
AdamW recipes in one call; its runs are independent of each other bit for bit, whichever call
or thread trains them; and every bad argument is refused by the binding with an exception that
names it, before the C library is called. Only the `supports` tests run where it is not built.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from hooked_mlp import MLPConfig
from hooked_mlp.data import STREAM_SHUFFLE, permutations, split_mask
from hooked_mlp.training import c_kernel
from hooked_mlp.training.state import FLAT_ALIGN

needs_c = pytest.mark.skipif(not c_kernel.available(),
                             reason=f"the C kernel is not here: {c_kernel.unavailable_reason()}")

RECIPE = {"lr": 3e-3, "betas": (0.9, 0.98), "weight_decay": 0.5, "eps": 1e-8}
# other recipes, for runs of one call that each have their own
RECIPES = [RECIPE, {"lr": 1e-2, "betas": (0.8, 0.999), "weight_decay": 2.0, "eps": 1e-6},
           {"lr": 5e-4, "betas": (0.95, 0.9), "weight_decay": 0.0, "eps": 1e-8}]
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


def recipe_row(r: dict) -> list[float]:
    """A recipe as the kernel takes it (`state.RECIPE_FIELDS`: lr, beta1, beta2, wd, eps)."""
    return [r["lr"], r["betas"][0], r["betas"][1], r["weight_decay"], r["eps"]]


@dataclass
class Problem:
    """Everything a kernel call needs for S runs of one shape, and the same data for torch:
    run-major rows of `stride` floats, as `hooked_mlp.training.state` lays them out."""

    p: int
    H: int
    B: int
    kernel: c_kernel.Kernel
    offsets: tuple[int, int, int, int]
    stride: int
    flat: Tensor
    exp_avg: Tensor
    exp_avg_sq: Tensor
    train_idx: Tensor  # [S, n]
    a_of: Tensor
    b_of: Tensor
    labels: Tensor
    seeds: list[int]
    recipes: list[dict]

    @property
    def S(self) -> int:
        return len(self.seeds)

    def params(self, s: int, flat: Tensor | None = None) -> dict[str, Tensor]:
        """Run s's parameters, as views of `flat`."""
        flat = self.flat if flat is None else flat
        shapes = ((2 * self.p, self.H), (self.H,), (self.H, self.p), (self.p,))
        row = flat[s * self.stride : (s + 1) * self.stride]
        return {name: row[o : o + math.prod(shape)].view(shape)
                for name, o, shape in zip(NAMES, self.offsets, shapes, strict=True)}

    def order(self, s: int, epoch: int) -> Tensor:
        """Run s's pair indices in the batch order of `epoch`."""
        n = self.train_idx.shape[1]
        perm = permutations(torch.tensor([self.seeds[s]]), STREAM_SHUFFLE, epoch, n)[0]
        return self.train_idx[s][perm]

    def orders(self, epoch: int, runs: range) -> Tensor:
        if not runs:
            return torch.empty(0, self.train_idx.shape[1], dtype=torch.int64)
        return torch.stack([self.order(s, epoch) for s in runs])

    def recipe_table(self, runs: range) -> Tensor:
        return torch.tensor([recipe_row(self.recipes[s]) for s in runs],
                            dtype=torch.float64).view(len(runs), 5)

    def train(self, epoch: int, runs: range | None = None, flat: Tensor | None = None,
              out: Tensor | None = None) -> Tensor:
        """One kernel epoch (steps before it: `epoch` whole epochs); returns `out`."""
        runs = range(self.S) if runs is None else runs
        out = torch.full((len(runs), 2), -1.0, dtype=torch.float64) if out is None else out
        steps = math.ceil(self.train_idx.shape[1] / self.B)
        self.kernel.train_epoch(self.flat if flat is None else flat, self.exp_avg,
                                self.exp_avg_sq, runs, self.orders(epoch, runs), self.B,
                                self.recipe_table(runs), epoch * steps, out)
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
                 train_frac: float = 0.8, recipes: list[dict] | None = None) -> Problem:
    """Random starts like `nn.Linear`'s, zero moments, a different split per run."""
    a_of, b_of, labels = pair_tables(p, operation)
    sizes = (2 * p * H, H, H * p, p)
    offsets = tuple(sum(sizes[:i]) for i in range(4))
    stride = -(-sum(sizes) // FLAT_ALIGN) * FLAT_ALIGN
    S = len(seeds)
    flat = torch.zeros(S * stride)
    gen = torch.Generator().manual_seed(1234 + p)
    for s in range(S):
        for o, n, fan_in in zip(offsets, sizes, (2 * p, 2 * p, H, H), strict=True):
            start = s * stride + o
            flat[start : start + n].uniform_(-fan_in**-0.5, fan_in**-0.5, generator=gen)
    n_pairs = a_of.numel()
    n_train = int(train_frac * n_pairs)
    if operation == "add":  # the package's own split
        cfg = MLPConfig(p=p, d_hidden=H)
        masks = [split_mask(cfg, train_frac, seed) for seed in seeds]
        train_idx = torch.stack([mask.nonzero().flatten() for mask in masks])
    else:
        train_idx = torch.stack([torch.randperm(n_pairs, generator=gen)[:n_train].sort().values
                                 for _ in seeds])
    kernel = c_kernel.Kernel(p=p, d_hidden=H, n_runs=S, stride=stride, offsets=offsets,
                             a_of=a_of, b_of=b_of, labels=labels)
    return Problem(p, H, B, kernel, offsets, stride, flat, torch.zeros_like(flat),
                   torch.zeros_like(flat), train_idx.contiguous(), a_of, b_of, labels, seeds,
                   [RECIPE] * S if recipes is None else recipes)


def logits_of(params: dict[str, Tensor], a: Tensor, b: Tensor, p: int) -> Tensor:
    W_in, b_in, W_out, b_out = (params[k] for k in NAMES)
    return torch.relu(W_in[a] + W_in[p + b] + b_in) @ W_out + b_out


def reference_epochs(prob: Problem, s: int, epochs: int, dtype: torch.dtype = torch.float64
                     ) -> tuple[dict[str, Tensor], list[tuple[float, float]]]:
    """Plain autograd and torch.optim.AdamW (run s's recipe) from run s's parameters now (call
    it before the kernel trains them), in the batch order the kernel is given: the parameters
    after `epochs` epochs, and each epoch's mean loss and accuracy (each sample measured in its
    batch, before the batch's update)."""
    params = {k: v.detach().to(dtype).clone().requires_grad_() for k, v in prob.params(s).items()}
    opt = torch.optim.AdamW(params.values(), **prob.recipes[s])
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
    # the padding after each run's parameters stays exactly zero
    assert not bool(prob.flat[sum((2 * 23 * 32, 32, 32 * 23, 23)):].any())


@needs_c
def test_runs_of_one_call_each_take_their_own_recipe():
    """Three runs, three AdamW recipes (lr, betas, weight decay, eps), one call: each matches
    float64 autograd with its own recipe, and differs from the others."""
    prob = make_problem(23, 32, 64, [3, 3, 3], recipes=RECIPES)
    with torch.no_grad():
        for s in (1, 2):
            for name in NAMES:
                prob.params(s)[name].copy_(prob.params(0)[name])  # the same start
    refs = [reference_epochs(prob, s, 2)[0] for s in range(3)]
    for epoch in range(2):
        prob.train(epoch)
    for s in range(3):
        got = prob.params(s)
        assert rms_error(got, refs[s]) < 1e-6, s
    assert rms_error(prob.params(0), refs[1]) > 1e-4  # the recipes mattered


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
def test_runs_do_not_depend_on_their_call_or_thread():
    """Three runs in one call, each alone, and split over two Python threads: the same bits."""
    def fresh() -> Problem:
        return make_problem(23, 32, 64, [4, 1, 9], recipes=RECIPES)

    together = fresh()
    outs = [together.train(epoch).clone() for epoch in range(2)]

    alone = fresh()
    for epoch in range(2):
        out = torch.full((3, 2), -1.0, dtype=torch.float64)
        for s in range(3):
            alone.train(epoch, range(s, s + 1), out=out[s : s + 1])
        assert torch.equal(out, outs[epoch])
    for a, b in zip(_state(alone), _state(together), strict=True):
        assert torch.equal(a, b)

    threaded = fresh()
    with ThreadPoolExecutor(2) as pool:
        for epoch in range(2):
            out = torch.full((3, 2), -1.0, dtype=torch.float64)
            jobs = [pool.submit(threaded.train, epoch, runs, out=out[runs.start : runs.stop])
                    for runs in (range(0, 1), range(1, 3))]
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


@needs_c
def test_the_batch_order_is_the_one_given():
    """The kernel has no order of its own: the same run in two orders ends in two places, each
    the reference's for that order."""
    prob = make_problem(23, 32, 64, [5])
    start = _state(prob)
    prob.train(0)
    forward_order = prob.flat.clone()
    for t, value in zip(_state(prob), start, strict=True):
        t.copy_(value)
    order = prob.orders(0, range(1)).flip(1).contiguous()
    out = torch.empty(1, 2, dtype=torch.float64)
    prob.kernel.train_epoch(prob.flat, prob.exp_avg, prob.exp_avg_sq, range(1), order, 64,
                            prob.recipe_table(range(1)), 0, out)
    assert float((prob.flat - forward_order).abs().max()) > 1e-6


# ------------------------------------------------------------------------------ evaluation


@needs_c
def test_evaluate_matches_torch():
    """Every pair of two runs (529: two chunks of the kernel's 512), once with logits so large
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
        prob.kernel.evaluate(flat, range(2), pairs, out)
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

    # one run of the two, in a thread of its own while the other runs here: the same numbers
    both = torch.empty(2, 2, dtype=torch.float64)
    prob.kernel.evaluate(prob.flat, range(2), pairs, both)
    split = torch.empty(2, 2, dtype=torch.float64)
    worker = threading.Thread(target=prob.kernel.evaluate,
                              args=(prob.flat, range(1, 2), pairs[1:], split[1:]))
    worker.start()
    prob.kernel.evaluate(prob.flat, range(0, 1), pairs[:1], split[:1])
    worker.join()
    assert torch.equal(split, both)


@needs_c
def test_evaluate_of_no_pairs_is_nan():
    prob = make_problem(23, 32, 64, [0, 1])
    out = torch.zeros(1, 2, dtype=torch.float64)
    prob.kernel.evaluate(prob.flat, range(1, 2), torch.empty(1, 0, dtype=torch.int64), out)
    assert torch.isnan(out).all()


# ------------------------------------------------------------------------------ refusals


@needs_c
def test_calls_refuse_bad_arguments_before_calling_c():
    prob = make_problem(23, 32, 64, [0, 1])
    k, flat, m, v = prob.kernel, prob.flat, prob.exp_avg, prob.exp_avg_sq
    order, recipes = prob.orders(0, range(2)), prob.recipe_table(range(2))
    out = torch.empty(2, 2, dtype=torch.float64)
    before = _state(prob)

    def train(**change: object) -> None:
        args = {"flat": flat, "exp_avg": m, "exp_avg_sq": v, "runs": range(2), "order": order,
                "batch_size": 64, "recipes": recipes, "step0": 0, "out": out, **change}
        k.train_epoch(**args)

    bad_recipe = recipes.clone()
    bad_recipe[1, 2] = 1.0
    refusals: list[tuple[Callable[[], None], type[Exception], str]] = [
        # the wrong kind of tensor
        (lambda: train(flat=flat.double()), ValueError, "params must be a CPU torch.float32"),
        (lambda: train(order=order.int()), ValueError, "order must be a CPU torch.int64"),
        (lambda: train(out=out.float()), ValueError, "out must be a CPU torch.float64"),
        (lambda: train(flat=flat.numpy()), TypeError, "params must be a torch.Tensor"),
        (lambda: train(order=torch.cat([order, order], 1)[:, ::2]), ValueError,
         "order must be contiguous"),
        (lambda: train(out=torch.empty(2, 4, dtype=torch.float64)[:, :2]), ValueError,
         "out must be contiguous"),
        # too small, the wrong shape
        (lambda: train(flat=flat[:100]), ValueError, r"params must be \[\d+\], got \[100\]"),
        (lambda: train(exp_avg_sq=v[:-1]), ValueError, r"exp_avg_sq must be \[\d+\]"),
        (lambda: train(order=order[0]), ValueError, r"order must be 2-D \[runs, pairs\]"),
        (lambda: train(order=order[:1]), ValueError, "order must be 2-D .* with 2 rows"),
        (lambda: train(order=order[:, :0]), ValueError, "order must hold 1 to"),
        (lambda: train(recipes=recipes[:1]), ValueError, r"recipes must be \[2, 5\]"),
        (lambda: train(out=out[:1]), ValueError, r"out must be \[2, 2\]"),
        # out-of-range values
        (lambda: train(order=order + 529), ValueError,
         r"order\[0, 0\] = \d+: pair indices must be in \[0, 529\)"),
        (lambda: train(order=torch.cat([order[:1], order[1:] - 600])), ValueError,
         r"order\[1, \d+\] = -\d+: pair indices must be in \[0, 529\)"),
        (lambda: train(recipes=bad_recipe), ValueError, "betas < 1"),
        (lambda: train(recipes=recipes * float("nan")), ValueError, "finite lr"),
        (lambda: train(runs=range(3)), ValueError, r"runs must lie in range\(0, 2\)"),
        (lambda: train(runs=range(2, 1)), ValueError, "runs must lie in"),
        (lambda: train(runs=range(0, 2, 2)), ValueError, "runs must be a range with step 1"),
        (lambda: train(runs=[0, 1]), ValueError, "runs must be a range with step 1"),
        (lambda: train(step0=-1), ValueError, "step0 must be an integer in"),
        (lambda: train(step0=2**70), ValueError, "step0 must be an integer in"),
        (lambda: train(step0=1.5), ValueError, "step0 must be an integer"),
        (lambda: train(batch_size=0), ValueError, "batch_size must be an integer in"),
        # buffers that share memory
        (lambda: train(exp_avg=flat), ValueError, "params and exp_avg must not share memory"),
        (lambda: train(exp_avg_sq=m), ValueError, "exp_avg and exp_avg_sq must not share"),
    ]
    for call, kind, message in refusals:
        with pytest.raises(kind, match=message):
            call()
    for a, b in zip(before, _state(prob), strict=True):  # nothing was written
        assert torch.equal(a, b)

    vals = torch.stack([torch.arange(100), torch.arange(100)])
    for call, kind, message in [
        (lambda: k.evaluate(flat[:100], range(2), vals, out), ValueError,
         r"params must be \[\d+\]"),
        (lambda: k.evaluate(flat, range(2), vals + 500, out), ValueError,
         r"pairs\[0, 29\] = 529: pair indices must be in \[0, 529\)"),
        (lambda: k.evaluate(flat, range(3), vals, out), ValueError, "runs must lie in"),
        (lambda: k.evaluate(flat, range(2), vals.t(), out), ValueError,
         "pairs must be contiguous"),
        (lambda: k.evaluate(flat, range(2), vals, torch.empty(3, 2, dtype=torch.float64)),
         ValueError, r"out must be \[2, 2\]"),
        (lambda: k.evaluate(flat, range(2), vals, flat[:8].view(torch.float64).view(2, 2)),
         ValueError, "params and out must not share memory"),
    ]:
        with pytest.raises(kind, match=message):
            call()
    k.evaluate(flat, range(2), vals, out)  # and the real thing works
    assert torch.isfinite(out).all()


@needs_c
def test_a_kernel_refuses_what_it_cannot_hold():
    a, b, y = pair_tables(5, "add")
    good = {"p": 5, "d_hidden": 3, "n_runs": 2, "stride": 64, "offsets": (0, 30, 33, 48),
            "a_of": a, "b_of": b, "labels": y}
    c_kernel.Kernel(**good).close()
    for change, kind, message in [
        ({"p": 0}, ValueError, r"1 <= p <= 65535 and 1 <= d_hidden"),
        ({"p": 65_536}, ValueError, r"1 <= p <= 65535"),
        ({"d_hidden": 2**31}, ValueError, r"d_hidden <= 2147483646"),
        ({"offsets": (0, 30, 33)}, ValueError, "do not fit W_in, b_in, W_out, b_out"),
        ({"offsets": (0, 30, 33, 62)}, ValueError, "do not fit"),
        ({"offsets": (0, 30, 33, -3)}, ValueError, "do not fit"),
        ({"stride": 0}, ValueError, "do not fit"),
        ({"labels": y + 1}, ValueError, r"labels\[\d+\] = 5: values must be in \[0, p = 5\)"),
        ({"a_of": a - 1}, ValueError, r"a_of\[0\] = -1: values must be in \[0, p = 5\)"),
        ({"b_of": b[:-1]}, ValueError, "of one length"),
        ({"a_of": a.double()}, ValueError, "a_of must be a CPU torch.int64"),
        ({"b_of": b.reshape(5, 5)}, ValueError, "must be 1-D"),
    ]:
        with pytest.raises(kind, match=message):
            c_kernel.Kernel(**{**good, **change})


@needs_c
def test_the_blas_gets_its_threads_back():
    """While a Kernel lives SciPy's BLAS takes one thread per call (the parallelism is across
    runs); when the last one closes, its own thread count is back."""
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    a = make_problem(5, 3, 4, [0]).kernel
    b = make_problem(5, 3, 4, [0]).kernel
    assert set(blas_threads()) == {1}
    a.close()
    assert set(blas_threads()) == {1}  # b still holds it
    b.close()
    b.close()  # closing twice is harmless
    assert blas_threads() == before


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
def test_memory_follows_the_data_not_the_runs_or_the_batch_size():
    """p = 5 (25 pairs), 64 neurons: a batch size of 2 million must not size the buffers (2
    million rows of 64 neurons would be 500 MB), nor 4,000 runs (a run's scratch, ~10 KB
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
        order, recipes = prob.orders(0, range(S)), prob.recipe_table(range(S))
        peaks[S] = max(
            _peak_kib_of(lambda prob=prob, out=out, order=order, recipes=recipes:
                         prob.kernel.train_epoch(prob.flat, prob.exp_avg, prob.exp_avg_sq,
                                                 range(prob.S), order, prob.B, recipes, 0,
                                                 out)),
            _peak_kib_of(lambda prob=prob, out=out: prob.kernel.evaluate(
                prob.flat, range(prob.S), prob.train_idx, out)),
        )
        assert torch.isfinite(out).all()
    assert peaks[1] < 20_000
    assert peaks[4000] < peaks[1] + 4_000, peaks
