"""The forms comparison: what each neuron computes, measured four ways on a set of models.

    from analyses.experiments.forms import compare_neuron_forms
    result = compare_neuron_forms(models, labels)    # n_orders=3, discover_generations=8
    print(result.describe()); result.summary(); result.to_dict(); result.figures()["replacement"]

It composes four analyses, each on the same models:

- **competing forms** (`analyses.forms.compare_forms`): five descriptions of every neuron's input
  and output weights, the winner per weight vector by BIC; shares and median R² aggregated over
  models with `analyses._common.mean_sd`;
- **replacement by each form** (`analyses.forms.form_replacement`): accuracy as a growing share
  of neurons is replaced by the fit of one form (model i's random orders come from seed i, the
  same orders for every form);
- **automated discovery** (`analyses.discovery.discover`) of one typical neuron's `a` and `out`
  weights (the median input R² of the first model), budgeted by work: `discover_generations`
  generations of symbolic search, never seconds, so that the same models give the same result
  on any machine;
- **clock or pizza** (`analyses.clock_pizza.diagnose`) on each trained model, on the model with
  every neuron replaced by its winning form, and (for `add`) on three synthetic models; and for
  `add` Gromov's exact quad construction beside the trained models
  (`analyses.experiments.construction`).

A part that does not apply to the models' configuration is left out and `applies` says why.
The report's section "What each neuron computes" (`analyses.pages.forms`) is a view of the
result; `neuron_forms_section(ctx)` is its entry for the report's table of sections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from analyses._common import check_count, headline, mean_sd, to_jsonable

SIGNALS = ("a", "b", "out")
CONSTRUCTION_NS = (5, 6, 7, 12, 24, 48, 96, 192)
SYNTHETIC_NEURONS = {"random cosine": 512, "pizza": 30}


def applies(cfg: Any) -> dict[str, str | None]:
    """None where a part applies to models of `cfg`, else why it does not (`forms` covers the
    competing forms, replacement and discovery; `clock_pizza` the diagnostics)."""
    forms = None
    if cfg.n_layers != 1:
        forms = (f"not applicable to a {cfg.n_layers}-layer model: a neuron's output weights "
                 "belong to the last layer")
    elif getattr(cfg, "input_encoding", "one_hot") != "one_hot":
        forms = "not applicable: the input weights are not indexed by residue (not one-hot)"
    elif cfg.p < 5:
        forms = f"not applicable with p = {cfg.p}: two frequencies need p >= 5"
    clock = forms or (None if cfg.operation in ("add", "sub") else
                      f"not applicable to {cfg.operation}: clock and pizza are algorithms for "
                      "a + b (and a - b)")
    return {"forms": forms, "clock_pizza": clock}


@dataclass
class FormsComparison:
    """The forms comparison on `labels`' models (see the module's docstring).

    Every part is a dict of numbers as `to_dict()` gives it, or None where it does not apply
    (`applies` says why): `forms` (`per_model` summaries and their `aggregate`, signal -> form
    -> `win_share` / `r2_median` as mean_sd), `replacement` (`by_form` accuracy at 90 % and
    100 % replaced, `best_single_form_at_0.9`, the drawn `curves`), `discovery` (one dict per
    weight vector searched), `clock_pizza` (`rows`, `trained_verdicts`, thresholds) and
    `construction` (`quad_curve`, and `trained_quad` for quad models). `curves` holds the
    drawn `ReplacementCurve`s and `quad` the construction's `QuadCurve` (for the figures and the
    page; their numbers are in the dicts too).
    """

    labels: list[str]
    cfg: Any
    applies: dict[str, str | None]
    n_orders: int
    discover_generations: int
    forms: dict[str, Any] | None = None
    replacement: dict[str, Any] | None = None
    discovery: list[dict[str, Any]] = field(default_factory=list)
    discovery_note: str = ""
    clock_pizza: dict[str, Any] | None = None
    construction: dict[str, Any] | None = None
    curves: dict[str, list[Any]] = field(default_factory=dict)
    quad: Any = None

    @property
    def best_form(self) -> str | None:
        """The single form whose replacement keeps the most accuracy at 90 % replaced."""
        return None if self.replacement is None else self.replacement["best_single_form_at_0.9"]

    def _winners(self) -> dict[str, str]:
        """signal -> the form that wins the most neurons (mean over the models)."""
        agg = self.forms["aggregate"]
        return {sig: max(agg[sig], key=lambda f: agg[sig][f]["win_share"]["mean"])
                for sig in SIGNALS}

    def summary(self) -> dict[str, Any]:
        """Per signal the winning form, its mean share of neurons and median R²; the mean
        accuracy with 90 % of neurons replaced by each form, the best single form; the forms
        discovery found nearest; the trained models' clock-or-pizza verdicts (None where a
        part does not apply: `applies` says why)."""
        out: dict[str, Any] = {"applies": dict(self.applies)}
        if self.forms is None:
            return out
        agg = self.forms["aggregate"]
        out["winners"] = {sig: {"form": win, "win_share": agg[sig][win]["win_share"]["mean"],
                                "r2_median": agg[sig][win]["r2_median"]["mean"]}
                          for sig, win in self._winners().items()}
        out["acc_at_0.9"] = {f: v["at_0.9"]["mean"]
                             for f, v in self.replacement["by_form"].items()}
        out["best_form"] = self.best_form
        out["discovery_forms"] = [d["form"] for d in self.discovery]
        out["clock_pizza"] = (None if self.clock_pizza is None
                              else list(self.clock_pizza["trained_verdicts"]))
        return headline(out)

    def describe(self) -> str:
        """A few lines: the winning form per signal, replacement at 90 %, what discovery found,
        the clock-or-pizza verdicts."""
        if self.forms is None:
            return f"What each neuron computes: {self.applies['forms']}."
        agg = self.forms["aggregate"]
        lines = []
        for sig, win in self._winners().items():
            lines.append(f"{sig} weights: {win} wins {agg[sig][win]['win_share']['mean']:.1%} "
                         f"of neurons (median R² {agg[sig][win]['r2_median']['mean']:.3f})")
        rep = self.replacement["by_form"]
        lines.append("90 % of neurons replaced: " + ", ".join(
            f"{f} {rep[f]['at_0.9']['mean']:.1%}" for f in rep))
        for d in self.discovery:
            lines.append(f"discovery ({d['model']}, neuron {d['neuron']}, {d['weights']}): "
                         f"{d['expression']} ({d['method']}, nearest form {d['form']}, "
                         f"R² {d['r2']:.3f})")
        if self.clock_pizza is not None:
            lines.append("clock or pizza (trained): " + ", ".join(
                self.clock_pizza["trained_verdicts"]))
        else:
            lines.append(f"clock or pizza: {self.applies['clock_pizza']}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Every number, as `summary.json` holds it under `neuron_forms`."""
        data: dict[str, Any] = {"applies": self.applies}
        if self.forms is not None:
            data |= {"forms": self.forms, "replacement": self.replacement,
                     "discovery": self.discovery}
            if self.clock_pizza is not None:
                data["clock_pizza"] = self.clock_pizza
        if self.construction is not None:
            data["construction"] = self.construction
        return to_jsonable(data)

    def figures(self) -> dict[str, Any]:
        """`{"replacement": Figure}`: accuracy as neurons are replaced by one cosine, by the
        best single form and by each vector's winning form (nothing where forms do not
        apply)."""
        if not self.curves:
            return {}
        from analyses.views import plot_replacement

        best = self.best_form
        fig = plot_replacement({"one cosine (the study's description)": self.curves["cosine"],
                                f"{best} (the best single form)": self.curves[best],
                                "each weight vector's winning form": self.curves["best"]})
        fig.axes[0].set_xlabel("fraction of neurons replaced by their fits")
        return {"replacement": fig}


def _typical_neuron(comparison: Any) -> int | None:
    """Index (in the comparison) of the neuron with the median cosine R² of its inputs, among
    those whose `a` and `out` weights vary (None if none does)."""
    import torch

    ok = comparison.defined["a"] & comparison.defined["out"]
    live = torch.nonzero(ok).flatten()
    if not len(live):
        return None
    r2 = comparison.fits["a"]["cosine"].r2[live]
    return int(live[torch.argsort(r2)[len(r2) // 2]])


def _competing_forms(result: FormsComparison, comparisons: list[Any]) -> None:
    from analyses.forms import FORMS

    summaries = [c.summary() for c in comparisons]
    aggregate = {sig: {f: {"win_share": mean_sd([s[sig]["win_share"][f] for s in summaries]),
                           "r2_median": mean_sd([s[sig]["r2_median"][f] for s in summaries])}
                       for f in FORMS} for sig in SIGNALS}
    result.forms = {"score": "bic", "per_model": summaries, "aggregate": aggregate}


def _replacement(result: FormsComparison, models: list[Any], comparisons: list[Any]) -> None:
    """Every form at 90 % and 100 % replaced, then the full curves of three descriptions.
    Model i's orders come from seed i in both calls, so they agree at 90 % and 100 %."""
    from analyses.forms import FORMS, REPLACEMENT_FORMS, form_replacement

    n = result.n_orders
    pairs = list(zip(models, comparisons, strict=True))
    ends = [form_replacement(m, c, fractions=[0.9, 1.0], n_orders=n, seed=i)
            for i, (m, c) in enumerate(pairs)]
    by_form = {f: {"at_0.9": mean_sd([r.curves[f].at(0.9) for r in ends]),
                   "at_1.0": mean_sd([r.curves[f].at(1.0) for r in ends])}
               for f in REPLACEMENT_FORMS}
    best = max(FORMS, key=lambda f: by_form[f]["at_0.9"]["mean"])
    drawn = list(dict.fromkeys(("cosine", best, "best")))
    reps = [form_replacement(m, c, forms=drawn, n_orders=n, seed=i)
            for i, (m, c) in enumerate(pairs)]
    result.curves = {f: [r.curves[f] for r in reps] for f in drawn}
    result.replacement = {"n_orders": n, "by_form": by_form, "best_single_form_at_0.9": best,
                          "curves": {f: [c.to_dict() for c in cs]
                                     for f, cs in result.curves.items()}}


def _discovery(result: FormsComparison, model: Any, comparison: Any) -> None:
    """Discovery of the typical neuron's `a` and `out` weights of the first model."""
    from analyses.discovery import discover
    from analyses.fourier import neuron_signals

    i = _typical_neuron(comparison)
    weights = neuron_signals(model)
    for sig in ("a", "out") if i is not None else ():
        neuron = comparison.neurons[i]
        d = discover(weights[sig][neuron], max_generations=result.discover_generations)
        result.discovery.append({"model": result.labels[0], "neuron": neuron, "weights": sig,
                                 **d.to_dict()})
    result.discovery_note = (result.discovery[0]["note"] if result.discovery else
                             "every neuron of the first model has a constant weight vector: "
                             "nothing to discover")


def _clock_pizza(result: FormsComparison, models: list[Any], comparisons: list[Any]) -> None:
    """Each trained model and its all-replaced twin; for `add`, three synthetic models."""
    from analyses.clock_pizza import diagnose
    from analyses.forms import form_weights
    from analyses.replacement import replace_neurons
    from analyses.synthetic import (
        pizza_construction,
        quad_construction,
        quad_construction_neurons,
        random_cosine_model,
    )

    rows = []
    for label, m, c in zip(result.labels, models, comparisons, strict=True):
        replaced = replace_neurons(m, list(range(m.cfg.d_hidden)),
                                   weights=form_weights(c, "best"))
        for kind, model in (("trained", m), ("all neurons replaced (best form)", replaced)):
            rows.append({"model": label, "kind": kind, **diagnose(model).to_dict()})
    if result.cfg.operation == "add":
        p = result.cfg.p
        n_exact = quad_construction_neurons(p)
        n_random, n_pizza = SYNTHETIC_NEURONS["random cosine"], SYNTHETIC_NEURONS["pizza"]
        for kind, model in (
                (f"random cosine model, {n_random} ReLU neurons",
                 random_cosine_model(n_random, p, 0)),
                (f"quad construction, {n_exact} neurons", quad_construction(n_exact, p, 0)),
                (f"pizza construction, {n_pizza} quad neurons",
                 pizza_construction(n_pizza, p, 0))):
            rows.append({"model": "synthetic", "kind": kind, **diagnose(model).to_dict()})
    result.clock_pizza = {"rows": rows,
                          "trained_verdicts": [r["verdict"] for r in rows
                                               if r["kind"] == "trained"],
                          "gs_threshold": rows[0]["gs_threshold"],
                          "di_threshold": rows[0]["di_threshold"]}


def _construction(result: FormsComparison, models: list[Any]) -> None:
    """Gromov's quad construction over N (exact and random phases) and, for quad models, how
    they compare with it."""
    from analyses.experiments.construction import compare_quad, quad_curve

    result.quad = quad_curve(ns=CONSTRUCTION_NS, p=result.cfg.p, seeds=[0])
    result.construction = {"quad_curve": result.quad.to_dict()}
    if result.cfg.activation == "quad":
        result.construction["trained_quad"] = [compare_quad(m) for m in models]


def compare_neuron_forms(models: Sequence[Any], labels: Sequence[str] | None = None,
                         n_orders: int = 3, discover_generations: int = 8) -> FormsComparison:
    """The forms comparison on `models` (one configuration; `labels` name them, default
    `model i`): `n_orders` random neuron orders per replacement curve, `discover_generations`
    generations of symbolic search (population 500, seed 0) per weight vector discovered.
    Parts that do not apply to the configuration are left out with the reason in `applies`."""
    from analyses.forms import compare_forms

    models = list(models)
    if not models:
        raise ValueError("models must hold at least one model")
    labels = list(labels) if labels is not None else [f"model {i}" for i in range(len(models))]
    if len(labels) != len(models):
        raise ValueError(f"labels must name each of the {len(models)} models, got {len(labels)}")
    check_count("n_orders", n_orders)
    check_count("discover_generations", discover_generations)
    cfg = models[0].cfg
    result = FormsComparison(labels, cfg, applies(cfg), n_orders, discover_generations)
    if result.applies["forms"] is not None:
        return result
    comparisons = [compare_forms(m) for m in models]
    _competing_forms(result, comparisons)
    _replacement(result, models, comparisons)
    _discovery(result, models[0], comparisons[0])
    if result.applies["clock_pizza"] is None:
        _clock_pizza(result, models, comparisons)
    if cfg.operation == "add":
        _construction(result, models)
    return result


def neuron_forms_section(ctx: Any) -> FormsComparison:
    """The report's section "What each neuron computes": `compare_neuron_forms` on
    `ctx.models` (labelled by `ctx.labels`), `3 * ctx.n_orders_scale` orders (at least 1)."""
    scale = getattr(ctx, "n_orders_scale", 1.0)
    return compare_neuron_forms(ctx.models, getattr(ctx, "labels", None) or None,
                                n_orders=max(1, round(3 * scale)))


__all__ = ["FormsComparison", "applies", "compare_neuron_forms", "neuron_forms_section"]
