"""What the explorer shows, gathered once in Python as compact JSON-ready data.

A *state* is one model at one moment (the model itself, one snapshot of a series, one cell of a
sweep). Its data are the compact factors from which the front end draws every view:

- `W_a`, `W_b`, `W_out` (`[d_hidden, p]`, each neuron's weight vectors over residues, as
  `analyses.fourier.neuron_signals` reads them), `b_in` `[d_hidden]`, `b_out` `[p]`: little-endian
  float32 (float16 for the many states of a series or a sweep), base64. The front end forms a
  neuron's activation grid over `(a, b)` and a pair's logits and per-neuron contributions from
  them (`act(W_a[n, a] + W_b[n, b] + b_in[n])`, `sum_n post_n W_out[n, c] + b_out[c]`): `p` by
  `d_hidden` numbers per signal instead of `p^2` per neuron. `checks` holds the model's own
  `hook_post` and logits (through `run_with_cache`) at a few pairs, so the page can verify
  its drawing against the model (the browser test asserts the agreement).
- The cosine fit of every weight vector (`analyses.cosine_fit.fit_neurons`), the winning form
  and the curves of every form (`analyses.forms.compare_forms`: the final state only, to bound
  the size of a series), the normalised power spectra (`analyses.fourier.neuron_spectra`),
  dead neurons, and the zero-ablation of each frequency's neurons (`analyses.groups.
  by_frequency`, `analyses.patching.ablate`): loss and accuracy over every pair.

The states of a series are computed together (`states_data`): the fits and spectra over every
snapshot's neurons stacked as rows, the losses, dead neurons and checks from one forward of the
snapshots' parameters stacked as the functional's seed dimension; each is tested equal to the
plain analysis of each snapshot alone.

A series adds its progress measures (`analyses.dynamics.dynamics`); a sweep adds its phase
diagram (`hooked_mlp.files.sweeps.read_results`) and the states of at most `max_cells` cells,
loaded from their saved weights (`load_sweep_model`).

The explorer draws one-hidden-layer models with one-hot inputs (the layout every per-neuron
analysis here needs); any other model is refused with a clear error.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from analyses._common import check_no_hooks
from analyses.cosine_fit import constant_units, fit_cosines
from analyses.forms import FORMS, compare_forms
from analyses.fourier import NeuronSpectra, neuron_signals, power_spectrum
from analyses.groups import by_frequency
from hooked_mlp.data import all_pairs, labels_of, valid_mask

# activations the front end evaluates (explorer.js `ACT`); the checks confirm each one
FRONT_END_ACTIVATIONS = ("relu", "gelu", "silu", "quad", "identity")
# the pairs whose hook_post and logits the page checks its own drawing against
N_CHECKS = 6
MAX_CELLS = 16


def encode(x: Tensor | np.ndarray, dtype: str = "f32") -> str:
    """A tensor as base64 of its little-endian float32 (`"f32"`) or float16 (`"f16"`) bytes,
    flattened in C order."""
    arr = (x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x))
    if dtype not in ("f32", "f16"):
        raise ValueError(f"dtype must be 'f32' or 'f16', got {dtype!r}")
    arr = arr.astype("<f4" if dtype == "f32" else "<f2")
    return base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode("ascii")


def decode(text: str, shape: Sequence[int], dtype: str = "f32") -> np.ndarray:
    """The inverse of `encode` (as float32)."""
    raw = base64.b64decode(text)
    return np.frombuffer(raw, dtype="<f4" if dtype == "f32" else "<f2").astype(
        np.float32).reshape(shape)


def _round(values: Tensor, digits: int = 4) -> list[float | None]:
    return [None if not math.isfinite(v) else round(v, digits) for v in values.double().tolist()]


def check_explorable(model: Any) -> None:
    """Refuse a model the explorer cannot draw, naming what it needs."""
    from hooked_mlp.model import HookedMLP

    if not isinstance(model, HookedMLP):
        raise TypeError(f"model must be a HookedMLP, got {type(model).__name__}")
    cfg = model.cfg
    if cfg.n_layers != 1 or cfg.input_encoding != "one_hot":
        raise ValueError(f"the explorer draws one-hidden-layer models with one-hot inputs, got "
                         f"n_layers={cfg.n_layers}, input_encoding={cfg.input_encoding!r}")
    if cfg.activation not in FRONT_END_ACTIVATIONS:
        raise ValueError(f"the explorer draws activations {list(FRONT_END_ACTIVATIONS)}, got "
                         f"{cfg.activation!r}")
    if cfg.p < 5:
        raise ValueError(f"the explorer needs p >= 5 (the forms it compares), got p={cfg.p}")
    # the page draws the model's weights (`hooked_mlp.functional`): a hook that edits what the
    # model computes (an ablation, a patch, a spliced dictionary) would not be drawn
    check_no_hooks(model, "the explorer")


# most logits one chunk of the batched ablation holds at once (about 64 MB of float32)
ABLATION_CHUNK = 16_000_000


def ablations(model: Any, pairs: Tensor, labels: Tensor, valid: Tensor) -> list[dict[str, Any]]:
    """Loss and accuracy over every pair with each frequency's (alive) neurons zero-ablated,
    one entry per frequency (`analyses.groups.by_frequency`), sorted by frequency: the numbers
    of `analyses.patching.ablate(model, neurons, how="zero")` group by group (tested equal),
    computed in one batched pass of the model's own `hooked_mlp.functional.forward`: the hidden
    layer once (its parameters as they are), then a hook at `blocks.0.mlp.hook_post` gives
    group `g`'s keep-mask times it as copy `g` of a leading seed dimension, which the readout
    (`W_out`, `b_out` repeated without a copy) maps to each group's logits. Chunks of groups
    bound the memory to `ABLATION_CHUNK` logits."""
    from hooked_mlp import functional

    groups = by_frequency(model, alive_only=True)
    if not groups:
        return []
    cfg = model.cfg
    name = "blocks.0.mlp.hook_post"
    params = model.param_dict()
    keep = torch.ones(len(groups), cfg.d_hidden, device=model.device)
    for g, neurons in enumerate(groups.values()):
        keep[g, neurons] = 0.0
    lb, every = labels[valid], bool(valid.all())
    chunk = max(1, ABLATION_CHUNK // max(1, pairs.shape[0] * max(cfg.p, cfg.d_hidden)))
    losses, accs = [], []
    with torch.no_grad():
        for start in range(0, len(groups), chunk):
            mask = keep[start:start + chunk].unsqueeze(1)  # [G, 1, H]
            G = mask.shape[0]
            stacked = dict(params) | {k: params[k].expand(G, *params[k].shape)
                                      for k in ("W_out", "b_out") if k in params}

            def hook(hook_name: str, value: Tensor, mask: Tensor = mask) -> Tensor:
                return value * mask if hook_name == name else value  # [B, H] -> [G, B, H]

            logits = functional.forward(cfg, stacked, pairs, hook)
            lg = logits if every else logits[:, valid]  # [G, n_valid, p]
            finite_logits(lg, "the ablated loss and accuracy")
            ce = torch.nn.functional.cross_entropy(lg.flatten(0, 1).float(), lb.repeat(G),
                                                   reduction="none").view(G, -1).mean(1)
            losses += ce.tolist()
            accs += (lg.argmax(-1) == lb).double().mean(1).tolist()
    return [{"k": k, "neurons": neurons, "loss": round(loss, 5), "acc": round(acc, 5)}
            for (k, neurons), loss, acc in zip(groups.items(), losses, accs, strict=True)]


def finite_logits(logits: Tensor, what: str) -> None:
    """`hooked_mlp.checks.check_finite_logits`, with a quick pass first: a sum of finite
    numbers that comes out finite has no infinity or NaN among them (one is enough to make the
    sum infinite or NaN), so only a sum that is not finite (an overflow, or a bad value) needs
    the element-wise check, which then raises or passes as it decides."""
    from hooked_mlp.checks import check_finite_logits

    if not bool(torch.isfinite(logits.sum())):
        check_finite_logits(logits, what)


def state_data(model: Any, epoch: int | None = None, *, dtype: str = "f32",
               forms: bool = True, detail: bool = True) -> dict[str, Any]:
    """One state's data (see the module's docstring). `detail`: include the form comparison's
    winners and the per-frequency ablations (about a second each at p = 113); `forms` (with
    `detail`): every form's fitted curves too. The cosine fits, spectra and factors are always
    there."""
    return states_data([model], [epoch], dtype=dtype, forms=forms, detail=[detail])[0]


def states_data(models: Sequence[Any], epochs: Sequence[int | None], *, dtype: str = "f32",
                forms: bool = True, detail: Sequence[bool] | None = None
                ) -> list[dict[str, Any]]:
    """The states of `models` of one configuration (a series' snapshots; see `state_data`),
    `detail[i]` for model `i` (default: all). What every state holds is computed for all the
    models at once, as accelerators of the same definitions (each tested equal to the plain
    path): `analyses.cosine_fit.fit_cosines` (what `fit_neurons` fits) and `analyses.fourier.
    power_spectrum` (what `neuron_spectra` measures) over every model's neurons stacked as rows;
    the loss, accuracy, dead neurons (`analyses.cosine_fit.dead_neurons`: the same
    `hook_post` on every pair) and checks from one `hooked_mlp.functional.forward` of the
    models' parameters stacked as its seed dimension (`measured`)."""
    models = list(models)
    detail = [True] * len(models) if detail is None else list(detail)
    if not models or len(epochs) != len(models) or len(detail) != len(models):
        raise ValueError(f"states_data needs as many epochs and detail flags as models (at "
                         f"least one), got {len(models)}, {len(epochs)}, {len(detail)}")
    for m in models:
        check_explorable(m)
    cfg = models[0].cfg
    if any(m.cfg != cfg for m in models):
        raise ValueError("states_data takes models of one configuration (a series' snapshots)")
    H = cfg.d_hidden
    pairs = all_pairs(cfg.p, models[0].device)
    labels, valid = labels_of(pairs, cfg), valid_mask(cfg, models[0].device)
    signals = [neuron_signals(m) for m in models]  # per model {'a','b','out'} -> [H, p]
    rows = {s: torch.cat([sig[s] for sig in signals]) for s in ("a", "b", "out")}  # [S*H, p]
    fits = {s: fit_cosines(w) for s, w in rows.items()}
    power = {s: power_spectrum(w) for s, w in rows.items()}  # [S*H, K]
    frequency = NeuronSpectra(cfg.p, power, {}, {}).input_frequency
    runs = measured(models, pairs, labels, valid)
    states = []
    for i, (model, epoch, run) in enumerate(zip(models, epochs, runs, strict=True)):
        own = slice(i * H, (i + 1) * H)
        params = dict(model.named_parameters())
        zeros_h, zeros_p = torch.zeros(H), torch.zeros(cfg.p)
        state: dict[str, Any] = {
            "epoch": epoch, "dtype": dtype, "loss": round(run["loss"], 5),
            "acc": round(run["acc"], 5),
            "W": {"a": encode(signals[i]["a"], dtype), "b": encode(signals[i]["b"], dtype),
                  "out": encode(signals[i]["out"], dtype),
                  "b_in": encode(params.get("b_in", zeros_h).detach(), dtype),
                  "b_out": encode(params.get("b_out", zeros_p).detach(), dtype)},
            "dead": run["dead"],
            "frequency": frequency[own].tolist(),
            "cosine": {s: {"k": f.k[own].tolist(), "scale": _round(f.scale[own]),
                           "phase": _round(f.phase[own]), "offset": _round(f.offset[own]),
                           "r2": _round(f.r2[own])} for s, f in fits.items()},
            "spectrum": {s: encode(pw[own] / pw[own].sum(dim=1, keepdim=True).clamp_min(1e-300),
                                   "f16") for s, pw in power.items()},
            "ablations": ablations(model, pairs, labels, valid) if detail[i] else None,
            "winner": None, "form_r2": None, "forms": None, "checks": run["checks"],
        }
        if detail[i]:
            comparison = compare_forms(model)
            state["winner"] = comparison.winners
            state["form_r2"] = {s: {f: _round(comparison.fits[s][f].r2, 3) for f in FORMS}
                                for s in comparison.fits}
            if forms:
                state["forms"] = {s: {f: encode(comparison.fits[s][f].values, "f16")
                                      for f in FORMS} for s in comparison.fits}
        states.append(state)
    return states


def check_pairs(n: int) -> Tensor:
    """The indices of the `N_CHECKS` pairs (of `n`, spread over the grid) the page checks."""
    return torch.linspace(0, n - 1, N_CHECKS).round().long()


def measured(models: Sequence[Any], pairs: Tensor, labels: Tensor, valid: Tensor
             ) -> list[dict[str, Any]]:
    """For each of `models` (one configuration): the loss and accuracy over the valid pairs,
    its dead neurons (`hook_post` the same on every pair, as `analyses.cosine_fit.
    dead_neurons`), and its checks (its `hook_post` and logits at `check_pairs`), from
    `hooked_mlp.functional.forward` with the models' parameters stacked as the seed dimension
    and a hook reading `blocks.0.mlp.hook_post`: one pass for all of them, chunked to
    `ABLATION_CHUNK` logits (tested equal to each model's own forward and `run_with_cache`)."""
    from hooked_mlp import functional

    cfg = models[0].cfg
    name = "blocks.0.mlp.hook_post"
    idx = check_pairs(pairs.shape[0])
    lb, every = labels[valid], bool(valid.all())
    chunk = max(1, ABLATION_CHUNK // max(1, pairs.shape[0] * max(cfg.p, cfg.d_hidden)))
    out = []
    with torch.no_grad():
        for start in range(0, len(models), chunk):
            part = [m.param_dict() for m in models[start:start + chunk]]
            S = len(part)
            params = {k: torch.stack([p[k] for p in part]) for k in part[0]}
            seen: dict[str, Tensor] = {}

            def hook(hook_name: str, value: Tensor, seen: dict[str, Tensor] = seen) -> Tensor:
                if hook_name == name:
                    seen["post"] = value
                return value

            logits = functional.forward(cfg, params, pairs.expand(S, *pairs.shape), hook)
            post = seen["post"]  # [S, n_pairs, H]
            dead = constant_units(post).cpu()
            lg = logits if every else logits[:, valid]  # [S, n_valid, p]
            ce = torch.nn.functional.cross_entropy(lg.flatten(0, 1).float(), lb.repeat(S),
                                                   reduction="none").view(S, -1).mean(1)
            acc = (lg.argmax(-1) == lb).double().mean(1)
            for j in range(S):
                out.append({"loss": float(ce[j]), "acc": float(acc[j]),
                            "dead": [bool(d) for d in dead[j].tolist()],
                            "checks": [{"a": int(pairs[i, 0]), "b": int(pairs[i, 1]),
                                        "post": _round(post[j, i], 6),
                                        "logits": _round(logits[j, i], 6)}
                                       for i in idx.tolist()]})
    return out


def pair_labels(cfg: Any) -> list[int]:
    """The answer of every pair `(a, b)` (row-major, `a` first) under `cfg`'s operation, -1
    where the operation is undefined."""
    pairs = all_pairs(cfg.p)
    return labels_of(pairs, cfg).masked_fill(~valid_mask(cfg), -1).tolist()


def header(model: Any, kind: str, title: str) -> dict[str, Any]:
    cfg = model.cfg
    return {"kind": kind, "title": title, "p": cfg.p, "d_hidden": cfg.d_hidden,
            "activation": cfg.activation, "operation": cfg.operation,
            "forms": list(FORMS), "labels": pair_labels(cfg), "states": [], "curves": None,
            "sweep": None}


def own_settings(state: dict[str, Any], cfg: Any, head: dict[str, Any]) -> None:
    """Give `state` (of a model with configuration `cfg`) the `p` and `labels`, and the
    `activation`, that differ from the header `head`'s (a sweep over p, the operation or the
    activation), so that the front end scores and draws it as its own model."""
    if cfg.p != head["p"] or cfg.operation != head["operation"]:
        state["p"], state["labels"] = cfg.p, pair_labels(cfg)
    if cfg.activation != head["activation"]:
        state["activation"] = cfg.activation


def model_data(model: Any, title: str = "model") -> dict[str, Any]:
    """The explorer's data for one model."""
    check_explorable(model)
    data = header(model, "model", title)
    data["states"] = [state_data(model)]
    return data


CURVES = ("train_acc", "val_acc", "train_loss", "val_loss", "restricted_loss", "excluded_loss",
          "weight_norm", "ipr_mean", "frac_cosine", "n_frequencies")


def series_data(series: Any, title: str = "snapshot series",
                measures: Any | None = None) -> dict[str, Any]:
    """The explorer's data for a snapshot series (`hooked_mlp.load_snapshots`): one state per
    snapshot (float16 factors; the form comparison and the ablations on the last one only) and
    the progress measures of `analyses.dynamics.dynamics`, or `measures`: that `Dynamics` of
    this very series computed before (e.g. `analyses.experiments.formation.
    read_measures_cache` for the shipped series, which saves about half the build), refused
    when its epochs are not the series'."""
    from analyses.dynamics import Dynamics, dynamics

    epochs = list(getattr(series, "epochs", []) or [])
    if not epochs or len(epochs) != len(series):
        raise TypeError(f"series must be a snapshot series with .epochs (hooked_mlp."
                        f"load_snapshots), got {type(series).__name__}")
    final = series[-1]
    check_explorable(final)
    data = header(final, "series", title)
    last = len(series) - 1
    data["states"] = states_data(list(series), epochs, dtype="f16",
                                 detail=[i == last for i in range(len(series))])
    if measures is not None:
        if not isinstance(measures, Dynamics):
            raise TypeError(f"measures must be an analyses.dynamics.Dynamics, got "
                            f"{type(measures).__name__}")
        if list(measures.epochs) != epochs:
            raise ValueError(f"measures are of epochs {list(measures.epochs)[:6]}..., not the "
                             f"series' {epochs[:6]}...: pass the dynamics of this series")
    d = measures if measures is not None else dynamics(series)
    data["curves"] = {"epochs": d.epochs,
                      "measures": {k: _round(torch.tensor(v, dtype=torch.float64), 5)
                                   for k, v in d.measures.items() if k in CURVES}}
    return data


def _cell_label(cell: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in cell.items())


def sweep_data(folder: str | Path, max_cells: int = MAX_CELLS,
               title: str | None = None) -> dict[str, Any]:
    """The explorer's data for a sweep folder: its phase diagram over its first two axes with
    more than one value (phase: the most common over seeds; validation accuracy: the mean), and
    the states of at most `max_cells` cells (first seed), spread evenly over the grid, loaded
    from their saved weights; the first of them is the state the other views open on."""
    from hooked_mlp.files.sweeps import load_sweep_model, read_results, read_sweep_doc

    if isinstance(max_cells, bool) or not isinstance(max_cells, int) or max_cells < 1:
        raise ValueError(f"max_cells must be a positive integer, got {max_cells!r}")
    folder = Path(folder)
    doc = read_sweep_doc(folder)
    table = read_results(folder)
    spec = doc["spec"]
    cells, seeds = spec["cells"], spec["seeds"]
    axes: dict[str, list[Any]] = {}
    for c in cells:
        for k, v in c.items():
            if v not in axes.setdefault(k, []):
                axes[k].append(v)
    varied = [k for k, v in axes.items() if len(v) > 1] or list(axes)[:1]
    x_axis, y_axis = varied[0], (varied[1] if len(varied) > 1 else None)
    chosen = sorted({round(i * (len(cells) - 1) / max(1, min(max_cells, len(cells)) - 1))
                     for i in range(min(max_cells, len(cells)))})
    rows, states, configs = [], [], []
    first_model = None
    for ci, cell in enumerate(cells):
        sel = np.ones(len(table), dtype=bool)
        for k, v in cell.items():
            sel &= (table[k] == v).to_numpy()
        part = table[sel]
        phases = part["phase"].value_counts()
        row = {"x": axes[x_axis].index(cell[x_axis]),
               "y": 0 if y_axis is None else axes[y_axis].index(cell[y_axis]),
               "label": _cell_label(cell), "n_runs": len(part),
               "phase": str(phases.index[0]) if len(phases) else None,
               "val_acc": round(float(part["val_acc"].mean()), 4) if len(part) else None,
               "state": None}
        if ci in chosen and len(part):
            model = load_sweep_model(folder, seed=seeds[0], **cell)
            check_explorable(model)
            first_model = first_model or model
            row["state"] = len(states)
            st = state_data(model, dtype="f16", forms=False)
            st["cell"] = row["label"] + f", seed={seeds[0]}"
            states.append(st)
            configs.append(model.cfg)
        rows.append(row)
    if first_model is None:
        raise ValueError(f"{folder}: no finished cell to explore (resume the sweep first)")
    data = header(first_model, "sweep", title or f"sweep {folder.name}")
    for st, cfg in zip(states, configs, strict=True):
        own_settings(st, cfg, data)
    data["states"] = states
    data["sweep"] = {"x_axis": x_axis, "y_axis": y_axis,
                     "xs": [str(v) for v in axes[x_axis]],
                     "ys": [str(v) for v in axes[y_axis]] if y_axis else [""],
                     "cells": rows, "seeds": list(seeds), "embedded": len(states),
                     "n_cells": len(cells), "max_cells": max_cells}
    return data


def gather(obj: Any, title: str | None = None, max_cells: int = MAX_CELLS,
           measures: Any | None = None) -> dict[str, Any]:
    """The explorer's data for a `HookedMLP`, a snapshot series, or a sweep folder (a path).
    `measures`: a series' `analyses.dynamics.Dynamics` computed before (see `series_data`)."""
    if measures is not None and not (hasattr(obj, "epochs") and hasattr(obj, "__len__")):
        raise ValueError("measures are a snapshot series' progress measures: give them with a "
                         "series only")
    from hooked_mlp.model import HookedMLP

    if isinstance(obj, HookedMLP):
        return model_data(obj, title or "model")
    if isinstance(obj, (str, Path)):
        from hooked_mlp.files.sweeps import is_sweep_folder

        if not is_sweep_folder(obj):
            raise ValueError(f"{obj}: not a sweep folder (no sweep.json); pass a model or a "
                             "series for anything else")
        return sweep_data(obj, max_cells, title)
    if hasattr(obj, "epochs") and hasattr(obj, "__len__"):
        return series_data(obj, title or "snapshot series", measures)
    raise TypeError(f"explore takes a HookedMLP, a snapshot series (hooked_mlp.load_snapshots) "
                    f"or a sweep folder, got {type(obj).__name__}")
