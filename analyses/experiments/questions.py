"""The study's open questions 1 and 3, as experiments with measured answers.

1. *Continuous inputs.* Train the family with each input encoding (`one_hot`, `scalar`,
   `circle`, `binary`) at the study's size and recipe; where an encoding does not learn, try
   the plan's other recipes (wider, lighter weight decay, longer) and keep the record of each
   try. Then read the hidden layer through its activations (`analyses.activation_fits`): 2-D
   spectra, single-frequency fits, the replacement experiment on activations, and whether the
   output layer reads each neuron at the frequency and phase of its `a + b` term
   (`analyses.predict_out`).
2. *Deeper MLPs / predicting output weights.* Train 1-, 2- and 3-layer one-hot MLPs over
   several seeds; probe every layer the same way, and predict the last layer's output weights
   from what its neurons compute; the accuracy that survives with predicted, fitted and original
   output weights answers the question.

Training goes through `hooked_mlp.training.runs` into a cache folder (one resumable run folder per
configuration and recipe), so a second call reuses every finished run and resumes an
interrupted one. A probe never trains: `run_questions` trains, then measures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from analyses._common import check_fractions, headline, mean_sd, to_jsonable
from analyses.activation_fits import (
    activation_replacement_curve,
    fit_grids,
    grid_spectra,
    layer_activations,
)
from analyses.predict_out import output_replacement_curve
from hooked_mlp.config import INPUT_ENCODINGS, MLPConfig, TrainConfig
from hooked_mlp.helpers import accuracy

SINGLE_FREQUENCY = 0.5  # a neuron whose low harmonics of one frequency hold > half its power


@dataclass(frozen=True)
class QuestionsPlan:
    """What `run_questions` trains and measures.

    The recipe is the study's (`TrainConfig()`) with `epochs` epochs; models are `MLPConfig()`
    (p = 113, 100 ReLU neurons) with `p`, `d_hidden` and the encoding or depth changed. An
    encoding whose mean validation accuracy stays under `learned` is retrained with each of
    `retries` in turn (changes to the model and recipe, on `retry_seeds`) until one learns.
    """

    name: str = "default"
    p: int = 113
    d_hidden: int = 100
    epochs: int = 200
    seeds: tuple[int, ...] = (0, 1, 2)
    encodings: tuple[str, ...] = INPUT_ENCODINGS
    depths: tuple[int, ...] = (1, 2, 3)
    learned: float = 0.9
    retries: tuple[tuple[tuple[str, Any], ...], ...] = ((("weight_decay", 0.05),),)
    retry_seeds: tuple[int, ...] = (0,)
    fractions: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
    n_orders: int = 2
    small_p: bool = True  # also train every encoding on the small problem (`SMALL_P_MODEL`)

    def __post_init__(self) -> None:
        for name in ("seeds", "encodings", "depths", "retry_seeds", "fractions"):
            if not getattr(self, name):
                raise ValueError(f"QuestionsPlan.{name} must not be empty")
        if isinstance(self.encodings, str):  # not read letter by letter
            raise TypeError(f"QuestionsPlan.encodings must be a tuple of names in "
                            f"{list(INPUT_ENCODINGS)}, got the str {self.encodings!r}")
        unknown = [e for e in self.encodings if e not in INPUT_ENCODINGS]
        if unknown:
            raise ValueError(f"QuestionsPlan.encodings must be names in {list(INPUT_ENCODINGS)}, "
                             f"got {unknown}")
        MLPConfig(p=self.p, d_hidden=self.d_hidden)
        TrainConfig(epochs=self.epochs)
        for depth in self.depths:
            MLPConfig(p=self.p, d_hidden=self.d_hidden, n_layers=depth)
        for seed in (*self.seeds, *self.retry_seeds):
            TrainConfig(seed=seed)
        if len(set(self.seeds)) != len(self.seeds) or \
                len(set(self.retry_seeds)) != len(self.retry_seeds):
            raise ValueError(f"QuestionsPlan.seeds and retry_seeds must not repeat a seed, got "
                             f"{list(self.seeds)} and {list(self.retry_seeds)}")
        try:
            check_fractions(self.fractions)
        except (TypeError, ValueError) as e:
            raise ValueError(f"QuestionsPlan.{e}") from None
        if isinstance(self.n_orders, bool) or not isinstance(self.n_orders, int) or \
                self.n_orders < 1:
            raise ValueError(f"QuestionsPlan.n_orders must be a positive integer, got "
                             f"{self.n_orders!r}")
        if isinstance(self.learned, bool) or not isinstance(self.learned, (int, float)) or \
                not 0 <= self.learned <= 1:
            raise ValueError(f"QuestionsPlan.learned must be an accuracy in [0, 1], got "
                             f"{self.learned!r}")
        for changes in self.retries:
            recipe(self, dict(changes))  # known fields, valid values
        if not isinstance(self.small_p, bool):
            raise TypeError(f"QuestionsPlan.small_p must be True or False, got {self.small_p!r}")

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))


def _split_changes(changes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    model_names = {f.name for f in dataclasses.fields(MLPConfig)}
    train_names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(changes) - model_names - train_names)
    if unknown:
        raise ValueError(f"QuestionsPlan.retries change unknown fields {unknown}")
    return ({k: v for k, v in changes.items() if k in model_names},
            {k: v for k, v in changes.items() if k in train_names})


def recipe(plan: QuestionsPlan, changes: dict[str, Any] | None = None
           ) -> tuple[MLPConfig, TrainConfig]:
    """The model and recipe of `plan` with `changes` (field name -> value) applied."""
    model, train = _split_changes(dict(changes or {}))
    return (MLPConfig(**{"p": plan.p, "d_hidden": plan.d_hidden, **model}),
            TrainConfig(**{"epochs": plan.epochs, **train}))


DEFAULT_PLAN = QuestionsPlan()
FULL_PLAN = QuestionsPlan(
    name="full", epochs=TrainConfig().epochs, seeds=(0, 1, 2, 3, 4),
    retries=((("weight_decay", 0.05),), (("weight_decay", 0.05), ("d_hidden", 512)),
             (("weight_decay", 0.05), ("d_hidden", 512), ("n_layers", 2))),
    retry_seeds=(0, 1, 2), fractions=tuple(i / 10 for i in range(11)), n_orders=5)


# ------------------------------------------------------------------------------ the cache
def run_key(cfg: MLPConfig, tcfg: TrainConfig, seeds: Sequence[int]) -> str:
    """The cache folder name of a run: readable, and unique to its configuration, recipe and
    seeds."""
    doc = json.dumps({"cfg": cfg.to_dict(), "tcfg": tcfg.to_dict(), "seeds": list(seeds)},
                     sort_keys=True)
    digest = hashlib.sha256(doc.encode()).hexdigest()[:10]
    return (f"{cfg.input_encoding}-L{cfg.n_layers}-h{cfg.d_hidden}-p{cfg.p}-e{tcfg.epochs}-"
            f"wd{tcfg.weight_decay:g}-{digest}")


def cached_models(cache: Path, cfg: MLPConfig, tcfg: TrainConfig, seeds: Sequence[int],
                  log: Callable[[str], None] = print) -> tuple[list[Any], float]:
    """The trained models of `seeds` (`tcfg.seed` ignored) and the seconds spent training now:
    loaded from `cache/<run_key>` when finished there, resumed when interrupted, trained
    otherwise (`hooked_mlp.training.runs`, a checkpoint every tenth of the run)."""
    from hooked_mlp.files.checkpoints import load
    from hooked_mlp.files.layout import model_file, state_file
    from hooked_mlp.training.runs import resume_run, train_run

    folder = Path(cache) / run_key(cfg, tcfg, seeds)
    paths = [model_file(folder, s) for s in seeds]
    start = time.perf_counter()
    if not all(path.exists() for path in paths):
        if state_file(folder).exists():
            log(f"resuming {folder.name}")
            resume_run(folder, progress=False)
        else:
            log(f"training {folder.name} (seeds {list(seeds)})")
            train_run(folder, cfg, tcfg, list(seeds), progress=False,
                      checkpoint_every=max(1, tcfg.epochs // 10))
    spent = time.perf_counter() - start
    models = [load(path) for path in paths]
    for path, seed, model in zip(paths, seeds, models, strict=True):
        _check_cached(path, model, cfg, tcfg, seed)
    return models, spent


def _check_cached(path: Path, model: Any, cfg: MLPConfig, tcfg: TrainConfig, seed: int) -> None:
    """A cached model is reused only if it is the run its key names: its config, its recipe
    (with its own seed) and its seed; otherwise a ValueError names the first difference (the
    folder is never trained over: it may hold someone's work)."""
    from dataclasses import replace

    info = model.train_info
    want = replace(tcfg, seed=seed)
    got = info.train_config if info is not None else None
    diff = [f"{k}: cached {v!r}, asked {cfg.to_dict()[k]!r}" for k, v in
            model.cfg.to_dict().items() if cfg.to_dict().get(k) != v and k != "device"]
    if got is None:
        diff.append("it records no training recipe")
    else:
        diff += [f"{k}: cached {v!r}, asked {want.to_dict()[k]!r}" for k, v in
                 got.to_dict().items() if want.to_dict().get(k) != v and k != "device"]
    if diff:
        raise ValueError(f"{path} is not the run its cache key names ({'; '.join(diff[:3])}); "
                         f"remove {path.parent} to train it again")


# ------------------------------------------------------------------------------ measurements
def _layer_probe(model: Any, layer: int) -> dict[str, Any]:
    grids = {hook: layer_activations(model, layer, hook) for hook in ("pre", "post")}
    spectra = grid_spectra(grids["post"])
    alive = spectra.alive
    single = (spectra.single_frequency > SINGLE_FREQUENCY) & alive
    fits = {f"{hook}_{form}": fit_grids(grids[hook], form, layer=layer, hook=hook)
            for hook, form in (("pre", "additive"), ("post", "full"), ("post", "sum"))}
    r2 = {name: float(f.r2[alive].nanmedian()) if bool(alive.any()) else None
          for name, f in fits.items()}
    n_alive = max(1, int(alive.sum()))
    return {"layer": layer, "spectra": spectra.summary(),
            "single_frequency_fraction": float(single.sum()) / n_alive,
            "single_frequency_k1_fraction": float((single & (spectra.k == 1)).sum()) / n_alive,
            "dead_fraction": 1 - float(alive.double().mean()),
            "k_single": spectra.k[single].tolist(),
            "fit_r2_median": r2}


def measure_model(model: Any, plan: QuestionsPlan, label: str) -> dict[str, Any]:
    """Every number the page reports about one trained model (see the module docstring)."""
    cfg, info = model.cfg, model.train_info
    out: dict[str, Any] = {
        "label": label, "config": cfg.to_dict(),
        "recipe": None if info is None else info.train_config.to_dict(),
        "seed": None if info is None else info.train_config.seed,
        "train_acc": accuracy(model, "train") if info is not None else None,
        "val_acc": accuracy(model, "val") if info is not None else None,
        "accuracy_all": accuracy(model),
        "layers": [_layer_probe(model, layer) for layer in range(cfg.n_layers)],
    }
    sources = ["weights" if cfg.input_encoding == "one_hot" and cfg.n_layers == 1 else "pre",
               "post", "diagonal"]
    out["outputs"] = {src: output_replacement_curve(
        model, src, "input", plan.fractions, plan.n_orders, seed=0).to_dict()
        for src in sources}
    out["activation_replacement"] = {
        "first_pre_additive": activation_replacement_curve(
            model, 0, "pre", "additive", plan.fractions, plan.n_orders).to_dict(),
        "last_post_full": activation_replacement_curve(
            model, cfg.n_layers - 1, "post", "full", plan.fractions, plan.n_orders).to_dict(),
    }
    return out


# ------------------------------------------------------------------------------ the answers
def _at(curve: dict[str, Any], frac: float, kind: str | None = None) -> float | None:
    fr = curve["fractions"]
    if frac not in fr:
        return None
    means = curve["mean"][kind] if kind is not None else curve["mean"]
    return means[fr.index(frac)]


def summarise(models: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline numbers of a group of models (one configuration, several seeds): each as
    mean, sd, min, max, n over the seeds (`analyses._common.mean_sd`)."""
    if not models:
        return {}
    L = len(models[0]["layers"])
    out: dict[str, Any] = {
        "n_models": len(models),
        "val_acc": mean_sd([m["val_acc"] for m in models]),
        "train_acc": mean_sd([m["train_acc"] for m in models]),
        "accuracy_all": mean_sd([m["accuracy_all"] for m in models]),
        "layers": [],
    }
    for layer in range(L):
        rows = [m["layers"][layer] for m in models]
        ks = sorted({k for r in rows for k in r["k_single"]})
        out["layers"].append({
            "single_frequency_fraction": mean_sd([r["single_frequency_fraction"] for r in rows]),
            "single_frequency_k1_fraction": mean_sd([r["single_frequency_k1_fraction"]
                                                   for r in rows]),
            "dead_fraction": mean_sd([r["dead_fraction"] for r in rows]),
            "median_share": {name: mean_sd([r["spectra"]["median_share"][name] for r in rows])
                             for name in rows[0]["spectra"]["median_share"]},
            "fit_r2_median": {name: mean_sd([r["fit_r2_median"][name] for r in rows])
                              for name in rows[0]["fit_r2_median"]},
            "n_distinct_k_single": mean_sd([len(set(r["k_single"])) for r in rows]),
            "k_single_union": ks,
        })
    frac = 1.0
    out["outputs"] = {}
    for src in models[0]["outputs"]:
        curves = [m["outputs"][src] for m in models]
        out["outputs"][src] = {
            "original": mean_sd([c["original"] for c in curves]),
            "predicted_at_1": mean_sd([_at(c, frac, "predicted") for c in curves]),
            "fitted_at_1": mean_sd([_at(c, frac, "fitted") for c in curves]),
            "predicted_at_0.9": mean_sd([_at(c, 0.9, "predicted") for c in curves]),
            "fitted_at_0.9": mean_sd([_at(c, 0.9, "fitted") for c in curves]),
            "r2": mean_sd([c["prediction"]["r2"] for c in curves]),
            "k_agree": mean_sd([c["prediction"]["k_agree"] for c in curves]),
            "median_abs_phase_error": mean_sd([c["prediction"]["median_abs_phase_error"]
                                             for c in curves]),
            "fractions": curves[0]["fractions"],
            "mean_curve": {kind: [mean_sd([c["mean"][kind][i] for c in curves])["mean"]
                                  for i in range(len(curves[0]["fractions"]))]
                           for kind in ("predicted", "fitted")},
        }
    out["activation_replacement"] = {
        name: {"at_1": mean_sd([_at(m["activation_replacement"][name], frac) for m in models]),
               "at_0.9": mean_sd([_at(m["activation_replacement"][name], 0.9) for m in models]),
               "fractions": models[0]["activation_replacement"][name]["fractions"],
               "mean_curve": [mean_sd([m["activation_replacement"][name]["mean"][i]
                                     for m in models])["mean"]
                              for i in range(len(models[0]["activation_replacement"][name][
                                  "fractions"]))]}
        for name in models[0]["activation_replacement"]}
    return out


@dataclass
class QuestionsResult:
    """Everything `run_questions` measured: per model and summarised per group, with the plan
    and the time each part took."""

    plan: QuestionsPlan
    small_p: dict[str, dict[str, float]] = field(default_factory=dict)
    encodings: dict[str, dict[str, Any]] = field(default_factory=dict)
    depths: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The plan's name, the small problem's accuracies, and per encoding (which recipe it
        learned with, the study recipe's mean validation accuracy) and per depth (mean
        validation accuracy and accuracy on every pair)."""
        def accs(group: dict[str, Any]) -> dict[str, Any]:
            s = group["summary"]
            return {"val_acc": s["val_acc"]["mean"], "accuracy_all": s["accuracy_all"]["mean"]}

        return headline({
            "plan": self.plan.name, "small_p": self.small_p,
            "encodings": {enc: {"learned_with": e["learned_with"], **accs(e["study_recipe"])}
                          for enc, e in self.encodings.items()},
            "depths": {d: accs(g) for d, g in self.depths.items()}})

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"plan": self.plan.to_dict(), "small_p": self.small_p,
                            "encodings": self.encodings,
                            "depths": self.depths, "timings": self.timings,
                            "environment": self.environment})


# The small problem every encoding is also trained on (seconds each): the page reports what each
# reaches, and tests/test_encodings.py trains the same runs and holds them to those numbers.
SMALL_P_MODEL: dict[str, Any] = {"p": 17, "d_hidden": 64}
SMALL_P_RECIPE = TrainConfig(epochs=150, batch_size=32, weight_decay=0.05)


def small_p_run(encoding: str) -> dict[str, float]:
    """Train `encoding` on the small problem (`SMALL_P_MODEL`, `SMALL_P_RECIPE`, seed 0) and
    return its final train and validation accuracy (deterministic on the CPU)."""
    from hooked_mlp.training import train

    _, history = train(MLPConfig(input_encoding=encoding, **SMALL_P_MODEL), SMALL_P_RECIPE,
                       progress=False)
    return {"train_acc": history["train_acc"][-1], "val_acc": history["val_acc"][-1]}


def examples(model: Any, n: int = 3) -> dict[str, Any]:
    """The `n` most active neurons of each hidden layer of `model` (largest activation
    variance over the pairs), with their post-activation grids `[n, p, p]` rounded to 3
    significant digits and the log power spectra of those grids (`example_spectrum`, to 4):
    the page draws both."""
    out = []
    for layer in range(model.cfg.n_layers):
        grids = layer_activations(model, layer, "post")
        top = grids.flatten(1).var(dim=1).argsort(descending=True)[:n]
        chosen = grids[top].float()
        rounded = [[[float(f"{v:.3g}") for v in row] for row in g] for g in chosen.tolist()]
        out.append({"layer": layer, "neurons": top.tolist(), "grids": rounded,
                    "spectra": [[[float(f"{v:.4g}") for v in row]
                                 for row in example_spectrum(g).tolist()] for g in rounded]})
    seed = None if model.train_info is None else model.train_info.train_config.seed
    return {"seed": seed, "layers": out}


def _history(model: Any, points: int = 200) -> dict[str, list[float]]:
    h = model.train_info.history
    step = max(1, len(h["train_acc"]) // points)
    return {"epoch": list(range(1, len(h["train_acc"]) + 1, step)),
            **{k: h[k][::step] for k in ("train_acc", "val_acc") if k in h}}


def _group(models: list[Any], plan: QuestionsPlan, label: str, cfg: MLPConfig,
           tcfg: TrainConfig, train_s: float) -> dict[str, Any]:
    per = [measure_model(m, plan, f"{label} seed {m.train_info.train_config.seed}")
           for m in models]
    best = max(range(len(models)), key=lambda i: per[i]["accuracy_all"])
    group = {"label": label, "config": cfg.to_dict(), "recipe": tcfg.to_dict(),
             "seeds": [m.train_info.train_config.seed for m in models], "train_s": train_s,
             "models": per, "summary": summarise(per), "examples": examples(models[best]),
             "history": _history(models[0])}
    # per hidden layer, how many single-frequency neurons use each frequency (None: none)
    group["frequency_counts"] = [single_frequency_counts(group, layer)
                                 for layer in range(cfg.n_layers)]
    return group


def run_questions(cache: str | Path, plan: QuestionsPlan = DEFAULT_PLAN,
                  log: Callable[[str], None] = print) -> QuestionsResult:
    """Train what `plan` needs (reusing `cache`), measure it, and return the result."""
    import os
    import platform

    if not isinstance(plan, QuestionsPlan):
        raise TypeError(f"plan must be a QuestionsPlan, got {type(plan).__name__}")
    if not isinstance(cache, (str, os.PathLike)):
        raise TypeError(f"cache must be a folder path (str or os.PathLike), got "
                        f"{type(cache).__name__}")
    cache = Path(cache)
    for above in (cache, *cache.parents):  # refused before any training, not after a first run
        if above.exists():
            if not above.is_dir():
                raise ValueError(f"cache must be a folder, but {above} is a file")
            break
    start = time.perf_counter()
    result = QuestionsResult(plan)
    train_s = 0.0
    measured: dict[str, dict[str, Any]] = {}  # run key -> its group (one-hot at depth 1 twice)
    for enc in plan.encodings if plan.small_p else ():
        result.small_p[enc] = small_p_run(enc)
    small_p_s = time.perf_counter() - start
    for enc in plan.encodings:
        cfg, tcfg = recipe(plan, {"input_encoding": enc})
        models, spent = cached_models(cache, cfg, tcfg, plan.seeds, log)
        train_s += spent
        group = _group(models, plan, enc, cfg, tcfg, spent)
        measured[run_key(cfg, tcfg, plan.seeds)] = group
        entry: dict[str, Any] = {"study_recipe": group, "tries": [], "learned_with": None}
        learned = entry["study_recipe"]["summary"]["val_acc"]["mean"] >= plan.learned
        entry["learned_with"] = "study_recipe" if learned else None
        for i, changes in enumerate(plan.retries):
            if learned:
                break
            rcfg, rtcfg = recipe(plan, {"input_encoding": enc, **dict(changes)})
            rmodels, spent = cached_models(cache, rcfg, rtcfg, plan.retry_seeds, log)
            train_s += spent
            label = enc + " (" + ", ".join(f"{k}={v}" for k, v in changes) + ")"
            entry["tries"].append({"changes": dict(changes),
                                   **_group(rmodels, plan, label, rcfg, rtcfg, spent)})
            if entry["tries"][-1]["summary"]["val_acc"]["mean"] >= plan.learned:
                learned = True
                entry["learned_with"] = f"try {i}"
        entry["analysed"] = _analysed_index(entry)
        result.encodings[enc] = entry
        log(f"{enc}: measured ({time.perf_counter() - start:.0f} s)")
    for depth in plan.depths:
        cfg, tcfg = recipe(plan, {"n_layers": depth})
        key = run_key(cfg, tcfg, plan.seeds)
        if key in measured:  # the same models, already measured: the same numbers
            result.depths[str(depth)] = {**measured[key], "label": f"{depth} layer(s)"}
        else:
            models, spent = cached_models(cache, cfg, tcfg, plan.seeds, log)
            train_s += spent
            result.depths[str(depth)] = _group(models, plan, f"{depth} layer(s)", cfg, tcfg,
                                               spent)
        log(f"{depth} layer(s): measured ({time.perf_counter() - start:.0f} s)")
    total = time.perf_counter() - start
    result.timings = {"small_p_s": small_p_s, "train_s": train_s,
                      "measure_s": total - train_s - small_p_s, "total_s": total}
    result.environment = {"torch": torch.__version__, "python": platform.python_version(),
                          "cpus": len(os.sched_getaffinity(0)) if hasattr(
                              os, "sched_getaffinity") else os.cpu_count(),
                          "torch_threads": torch.get_num_threads()}
    return result


# ------------------------------------------------------------------ what the page shows of it
def _analysed_index(entry: dict[str, Any]) -> int:
    """Which group an encoding is analysed on (0: the study's recipe, 1 + i: try i): the first
    recipe that learned, else the one that reached the highest mean validation accuracy."""
    groups = [entry["study_recipe"], *entry["tries"]]
    learned = entry.get("learned_with")
    if learned == "study_recipe":
        return 0
    if learned is not None:
        return 1 + int(learned.split()[-1])
    return max(range(len(groups)), key=lambda i: groups[i]["summary"]["val_acc"]["mean"])


def analysed_group(entry: dict[str, Any]) -> dict[str, Any]:
    """The group an encoding (an entry of `QuestionsResult.encodings`) is analysed on, as
    `run_questions` chose it (`entry["analysed"]`)."""
    return [entry["study_recipe"], *entry["tries"]][entry["analysed"]]


def example_spectrum(grid: Sequence[Sequence[float]]) -> torch.Tensor:
    """The 2-D power spectrum of one example neuron's activation grid `[p, p]` (its mean taken
    out) as log10 power `[p, p]`, shifted so that frequency 0 is at the centre (rows k_a,
    columns k_b, each from -(p // 2)); a floor of 1e-6 of the peak keeps zeros finite."""
    gt = torch.tensor(grid, dtype=torch.float64)
    power = torch.fft.fftshift(torch.fft.fft2(gt - gt.mean()).abs().square())
    return torch.log10(power + power.max() * 1e-6)


def single_frequency_counts(group: dict[str, Any], layer: int = -1) -> list[int] | None:
    """How many single-frequency neurons of hidden layer `layer` use each frequency k = 1..K
    (K = (p - 1) // 2), over all seeds of `group`; None when the layer has none."""
    ks = [k for m in group["models"] for k in m["layers"][layer]["k_single"]]
    if not ks:
        return None
    K = (group["config"]["p"] - 1) // 2
    return torch.bincount(torch.tensor(ks), minlength=K + 1)[1:].tolist()


def finite(x: Any) -> bool:
    """`x` is a real number (not None, not NaN)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


__all__ = [
    "DEFAULT_PLAN",
    "FULL_PLAN",
    "SMALL_P_MODEL",
    "SMALL_P_RECIPE",
    "QuestionsPlan",
    "QuestionsResult",
    "analysed_group",
    "cached_models",
    "example_spectrum",
    "measure_model",
    "recipe",
    "run_key",
    "run_questions",
    "single_frequency_counts",
    "small_p_run",
    "summarise",
]
