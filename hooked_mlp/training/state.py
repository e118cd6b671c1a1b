"""The state of a training run: what the trainer and every backend share, and nothing else.

A run is a model configuration and a recipe (`MLPConfig`, `TrainConfig`). Runs whose parameters
have the same shapes and that take the same number of steps per epoch form a *stack*
(`stack_key`), trained in lock-step: seeds of one recipe, or a grid of recipes (learning rate,
weight decay, betas, eps, initial scale, seed, split seed, train fraction).

`TrainState` holds, for every run of a stack:
- the parameters, their gradient and AdamW's two moments, each in one flat float buffer laid out
  by `FlatLayout`: one row of `stride` floats per run (run-major), the parameters one after
  another in `param_shapes` order, the row padded with zeros to a multiple of `FLAT_ALIGN`
  floats; and AdamW's step count (one for the stack);
- its split (`masks`), and its train and validation pairs, by *group*: runs with the same number
  of training pairs and the same batch size, whose steps have the same shapes (`Group`);
- the pair tables (pair index `a * p + b` -> `a`, `b`, label) and the per-epoch history.

Rows are ordered by group (and by AdamW recipe inside a group, so that runs sharing a recipe are
neighbours); `order[i]` is the position of row `i`'s run in the list the state was built from.

Why the padding: torch's fused AdamW kernel computes the last `length mod 16` values of a buffer
on a scalar path that rounds differently from its vector path. With every row a multiple of 64
floats, any set of consecutive rows is a buffer whose every value takes the vector path, so a
run's weights do not depend on which runs share its stack (the padding stays exactly zero: zero
gradient, zero moments).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from hooked_mlp.checks import check_device, check_memory
from hooked_mlp.config import MLPConfig, TrainConfig
from hooked_mlp.data import all_pairs, apply_operation, n_train_pairs, split_masks, valid_mask
from hooked_mlp.functional import init_params, param_shapes
from hooked_mlp.train_info import HISTORY_KEYS, TrainInfo

FLAT_ALIGN = 64
RECIPE_FIELDS = ("lr", "beta1", "beta2", "weight_decay", "eps")  # AdamW's, per run


# ----------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class FlatLayout:
    """Where each parameter of each run lives in a flat buffer of `total` floats.

    Run `s` owns floats `s * stride .. (s + 1) * stride - 1`; parameter `name` of shape
    `shapes[name]` starts `offsets[name]` floats into that row. `view` and `params` read any
    buffer laid out this way (parameters, gradient, moments, snapshots stacked over epochs).
    """

    shapes: dict[str, tuple[int, ...]]
    offsets: dict[str, int]
    n_runs: int
    stride: int

    @property
    def total(self) -> int:
        """Floats in a buffer of every run."""
        return self.n_runs * self.stride

    @property
    def names(self) -> list[str]:
        return list(self.shapes)

    def rows(self, buf: Tensor) -> Tensor:
        """`buf` `[..., total]` (or already `[..., n_runs, stride]`) as `[..., n_runs, stride]`."""
        if buf.shape[-1] == self.stride and buf.ndim >= 2 and buf.shape[-2] == self.n_runs:
            return buf
        if buf.shape[-1] != self.total:
            raise ValueError(f"a buffer of this layout holds {self.total} floats in its last "
                             f"dimension, got shape {list(buf.shape)}")
        return buf.unflatten(-1, (self.n_runs, self.stride))

    def view(self, buf: Tensor, name: str) -> Tensor:
        """Parameter `name` of every run inside `buf`: a view `[..., n_runs, *shape]`."""
        start, shape = self.offsets[name], self.shapes[name]
        block = self.rows(buf)[..., start : start + math.prod(shape)]
        return block.unflatten(-1, shape) if shape else block

    def params(self, buf: Tensor, s: int) -> dict[str, Tensor]:
        """Run `s`'s parameters inside `buf` `[..., total]`: views `[..., *shape]`."""
        return {name: self.view(buf, name).select(-1 - len(shape), s)
                for name, shape in self.shapes.items()}


def flat_layout(cfg: MLPConfig, n_runs: int) -> FlatLayout:
    """The layout of the flat buffers of `n_runs` runs of configuration `cfg` (its shapes)."""
    shapes = param_shapes(cfg)
    offsets, row = {}, 0
    for name, shape in shapes.items():
        offsets[name] = row
        row += math.prod(shape)
    return FlatLayout(shapes, offsets, n_runs, -(-row // FLAT_ALIGN) * FLAT_ALIGN)


def state_shapes(cfg: MLPConfig, n_runs: int, epoch: int) -> dict[str, tuple[int, ...]]:
    """The shape of each tensor of a run state (`TrainState.tensors`, all float32), computed
    without allocating anything (a resumed state is checked against it first). The buffers are
    written `[n_runs, stride]`, one row per run."""
    layout = flat_layout(cfg, n_runs)
    rows = (n_runs, layout.stride)
    return {"flat": rows, "exp_avg": rows, "exp_avg_sq": rows, "step": (1,),
            "history": (epoch, n_runs, len(HISTORY_KEYS))}


def state_bytes(cfg: MLPConfig, epochs: int, n_runs: int) -> int:
    """About how many bytes a `TrainState` of `n_runs` runs holds: four flat buffers
    (parameters, gradient, AdamW's two moments), the per-epoch history, and per run its split
    and its pairs (indices, rows, labels, per-sample buffers: about 64 bytes per pair)."""
    return (4 * 8 * flat_layout(cfg, n_runs).total + 16 * epochs * n_runs
            + 64 * n_runs * cfg.p * cfg.p + 40 * cfg.p * cfg.p)


# ----------------------------------------------------------------------------- stacks
def steps_per_epoch(cfg: MLPConfig, tcfg: TrainConfig) -> int:
    """AdamW steps in one epoch of `tcfg` on `cfg`'s dataset (a ValueError for a fraction that
    leaves a split empty)."""
    n_train = n_train_pairs(int(valid_mask(cfg).sum()), tcfg.train_frac)
    return -(-n_train // tcfg.batch_size)


def stack_key(cfg: MLPConfig, tcfg: TrainConfig) -> tuple[Any, ...]:
    """Which runs can train together in one stack: those with equal keys.

    Runs of one stack have parameters of the same shapes (the same model but for
    `init_scale`), the same number of epochs and the same number of steps per epoch (full batch:
    one). Learning rate, weight decay, betas, eps, initial scale, seed, split seed and train
    fraction may differ (and the batch size, where the steps per epoch agree).
    """
    if not isinstance(cfg, MLPConfig) or not isinstance(tcfg, TrainConfig):
        raise TypeError(f"stack_key takes an MLPConfig and a TrainConfig, got "
                        f"{type(cfg).__name__} and {type(tcfg).__name__}")
    model = replace(cfg, init_scale=1.0).to_dict()
    return (*sorted(model.items()), ("epochs", tcfg.epochs),
            ("steps_per_epoch", steps_per_epoch(cfg, tcfg)))


def recipe_of(tcfg: TrainConfig) -> tuple[float, ...]:
    """The AdamW numbers of a recipe, in `RECIPE_FIELDS` order."""
    return tuple(float(getattr(tcfg, name)) for name in RECIPE_FIELDS)


@dataclass
class Group:
    """Consecutive rows `rows` of a state whose runs have the same number of training pairs and
    the same batch size: each of their steps has the same shape, so a backend computes them in
    one batched pass."""

    rows: range
    n_train: int
    n_val: int
    batch_size: int
    seeds: Tensor  # int64 [k]: each run's seed (its batch order)
    train_idx: Tensor  # int64 [k, n_train]: each run's train pair indices, ascending
    val_idx: Tensor  # int64 [k, n_val]

    @property
    def k(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class Segment:
    """Consecutive rows `rows` whose runs share one AdamW recipe (`RECIPE_FIELDS` values)."""

    rows: range
    recipe: tuple[float, ...]


# ----------------------------------------------------------------------------- the state
class TrainState:
    """Every run of a stack: parameters, gradient, AdamW's moments and step, splits, pair
    tables, history (see the module's docstring). Backends read and write it; the trainer
    drives it.

    `runs` is a sequence of `(MLPConfig, TrainConfig)` with equal `stack_key`s. `with_grad`
    allocates the gradient buffer (the C accelerator keeps its gradient to itself). `dtype`
    float64 runs the same steps in double precision on the general path, from the same float32
    initialisation (the tests' yardstick).
    """

    def __init__(self, runs: Sequence[tuple[MLPConfig, TrainConfig]],
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 with_grad: bool = True, what: str = "run(s)") -> None:
        runs = check_runs(runs)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        self.device = dev = check_device(device)
        self.dtype = dtype
        cfg0, tcfg0 = runs[0]
        self.cfg = replace(cfg0, init_scale=1.0)  # the structure every run shares
        self.epochs = tcfg0.epochs
        self.steps_per_epoch = steps_per_epoch(cfg0, tcfg0)
        S, p = len(runs), cfg0.p
        check_memory(state_bytes(cfg0, self.epochs, S),
                     f"training {S} {what} of p={p}, d_hidden={cfg0.d_hidden}, n_layers="
                     f"{cfg0.n_layers} for {self.epochs} epochs")

        # rows ordered by group, then by recipe: `order[i]` is row i's place in `runs`
        n_valid = int(valid_mask(cfg0).sum())

        def group_of(i: int) -> tuple[int, int]:
            n = n_train_pairs(n_valid, runs[i][1].train_frac)
            return n, min(runs[i][1].batch_size, n)

        self.order = sorted(range(S), key=lambda i: (group_of(i), recipe_of(runs[i][1])))
        self.runs = [runs[i] for i in self.order]
        self.S = S
        self.seeds = [tcfg.seed for _, tcfg in self.runs]
        recipes = [recipe_of(tcfg) for _, tcfg in self.runs]
        self.recipes = torch.tensor(recipes, dtype=torch.float64)  # [S, 5], RECIPE_FIELDS
        self.segments = [Segment(range(lo, hi), recipes[lo])
                         for lo, hi in _runs_of_equal(recipes, [group_of(i) for i in self.order])]

        # pair tables over every pair index (a label of 0 for pairs outside the dataset, which
        # no split holds)
        pairs = all_pairs(p, dev)
        self.a_of, self.b_of = pairs[:, 0].contiguous(), pairs[:, 1].contiguous()
        self.labels = apply_operation(pairs, p, cfg0.operation)

        # splits and groups
        split_seeds = torch.tensor([tcfg.effective_split_seed for _, tcfg in self.runs])
        self.masks = torch.zeros(S, p * p, dtype=torch.bool, device=dev)
        valid = valid_mask(cfg0, dev)
        self.groups: list[Group] = []
        for lo, hi in _runs_of_equal([group_of(i) for i in self.order]):
            n_train, batch = group_of(self.order[lo])
            frac = self.runs[lo][1].train_frac
            self.masks[lo:hi] = split_masks(cfg0, frac, split_seeds[lo:hi]).to(dev)
            k, n_val = hi - lo, n_valid - n_train
            self.groups.append(Group(
                range(lo, hi), n_train, n_val, batch,
                torch.tensor(self.seeds[lo:hi], dtype=torch.int64, device=dev),
                self.masks[lo:hi].nonzero()[:, 1].contiguous().view(k, n_train),
                (valid & ~self.masks[lo:hi]).nonzero()[:, 1].contiguous().view(k, n_val),
            ))

        # parameters and AdamW's moments: one row per run (see FlatLayout)
        self.layout = flat_layout(self.cfg, S)
        total = self.layout.total
        self.flat = torch.zeros(total, device=dev, dtype=dtype)
        self.grad = torch.zeros(total if with_grad else 0, device=dev, dtype=dtype)
        self.exp_avg = torch.zeros(total, device=dev, dtype=dtype)
        self.exp_avg_sq = torch.zeros(total, device=dev, dtype=dtype)
        self.step = 0  # AdamW steps taken (every run of a stack takes the same steps)
        with torch.no_grad():
            for s, (cfg, tcfg) in enumerate(self.runs):
                for name, value in init_params(cfg, tcfg.seed).items():
                    self.param(name)[s].copy_(value)

        self.epoch = 0
        self.history = torch.zeros(self.epochs, S, len(HISTORY_KEYS), device=dev)

    # ----------------------------------------------------------------------------- views
    @property
    def names(self) -> list[str]:
        return self.layout.names

    def view(self, buf: Tensor, name: str) -> Tensor:
        """Parameter `name` of every run inside `buf`: `[S, *shape]`."""
        return self.layout.view(buf, name)

    def param(self, name: str) -> Tensor:
        return self.view(self.flat, name)

    def params_of(self, s: int) -> dict[str, Tensor]:
        """Row `s`'s parameters, copied to the CPU."""
        return {n: t.detach().cpu().clone() for n, t in self.layout.params(self.flat, s).items()}

    def tokens_of(self, idx: Tensor) -> Tensor:
        """The tokens `(a, b)` of pair indices `[k, n]`: int64 `[k, n, 2]`."""
        return torch.stack([self.a_of[idx], self.b_of[idx]], dim=-1)

    def has_val(self) -> Tensor:
        """bool `[S]`: which runs have a validation split."""
        out = torch.zeros(self.S, dtype=torch.bool)
        for g in self.groups:
            out[g.rows.start : g.rows.stop] = g.n_val > 0
        return out

    @property
    def any_val(self) -> bool:
        """Whether any run has a validation split."""
        return any(g.n_val for g in self.groups)

    def row_groups(self) -> Iterator[tuple[int, Group]]:
        """Each row and its group, in row order."""
        for g in self.groups:
            for i in g.rows:
                yield i, g

    # ----------------------------------------------------------------------------- records
    def history_of(self, s: int) -> dict[str, list[float]]:
        """Row `s`'s history: each of `HISTORY_KEYS` (no validation keys without a validation
        split) to one value per epoch done."""
        h = self.history[: self.epoch, s].cpu()
        keys = HISTORY_KEYS if bool(self.has_val()[s]) else HISTORY_KEYS[:2]
        return {key: h[:, i].tolist() for i, key in enumerate(keys)}

    def info_of(self, s: int, metrics: dict[str, Any], provenance: dict[str, Any]) -> TrainInfo:
        return TrainInfo(train_config=self.runs[s][1], train_mask=self.masks[s].cpu().clone(),
                         history=self.history_of(s), metrics=metrics, provenance=provenance)

    def tensors(self) -> dict[str, Tensor]:
        """The state to write (`state_shapes`): the buffers as `[S, stride]`, the step, and the
        history so far."""
        rows = self.layout.rows
        return {"flat": rows(self.flat), "exp_avg": rows(self.exp_avg),
                "exp_avg_sq": rows(self.exp_avg_sq),
                "step": torch.tensor([float(self.step)], dtype=torch.float32),
                "history": self.history[: self.epoch]}

    def load(self, tensors: dict[str, Tensor], epoch: int) -> None:
        """Restore what `tensors` wrote (checked by the caller against `state_shapes`)."""
        if not 0 <= epoch <= self.epochs:
            raise ValueError(f"epoch {epoch} is outside [0, {self.epochs}]")
        rows = self.layout.rows
        with torch.no_grad():
            for name in ("flat", "exp_avg", "exp_avg_sq"):
                rows(getattr(self, name)).copy_(tensors[name])
            self.history[:epoch] = tensors["history"].to(self.device)
        self.step = int(float(tensors["step"].reshape(-1)[0]))
        self.epoch = epoch


def check_runs(runs: Any) -> list[tuple[MLPConfig, TrainConfig]]:
    """`runs` as a list of `(MLPConfig, TrainConfig)` pairs of one stack (a TypeError or a
    ValueError naming what is wrong)."""
    if isinstance(runs, (str, bytes)) or not hasattr(runs, "__iter__"):
        raise TypeError(f"runs must be a sequence of (MLPConfig, TrainConfig) pairs, got "
                        f"{type(runs).__name__}")
    out = []
    for i, run in enumerate(runs):
        if not (isinstance(run, tuple) and len(run) == 2 and isinstance(run[0], MLPConfig)
                and isinstance(run[1], TrainConfig)):
            raise TypeError(f"runs[{i}] must be a pair (MLPConfig, TrainConfig), got "
                            f"{type(run).__name__}")
        out.append(run)
    if not out:
        raise ValueError("runs must hold at least one run")
    key = stack_key(*out[0])
    for i, run in enumerate(out[1:], 1):
        if stack_key(*run) != key:
            other = dict(stack_key(*run))
            diff = [f"{k}={v!r} (runs[0]: {other_v!r})" for k, other_v in key
                    if (v := other.get(k)) != other_v]
            raise ValueError(f"runs[{i}] cannot share a stack with runs[0]: {', '.join(diff)}; "
                             "group runs by hooked_mlp.training.stack_key first")
    return out


def _runs_of_equal(*keys: Sequence[Any]) -> list[tuple[int, int]]:
    """`(lo, hi)` of each maximal range of consecutive positions where every list of `keys`
    holds equal values."""
    n = len(keys[0])
    out, lo = [], 0
    for i in range(1, n + 1):
        if i == n or any(k[i] != k[lo] for k in keys):
            out.append((lo, i))
            lo = i
    return out
