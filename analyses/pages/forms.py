"""The report section "What each neuron computes": competing forms, replacement by each form,
automated discovery, clock or pizza, and the exact constructions beside them.

`forms_section(models, labels)` measures (through `analyses.forms`, `analyses.discovery`,
`analyses.clock_pizza`, `analyses.synthetic`) and returns the section's HTML (figures embedded
as PNG) and a dict of every number shown, for `summary.json`. Where a part does not apply to the
models' configuration it says why instead.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from analyses._common import mean_sd, to_jsonable


def _applies(cfg: Any) -> dict[str, str | None]:
    """None where a part applies to models of `cfg`, else why it does not."""
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


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='claims'><tr>{head}</tr>{body}</table>"


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


def _construction_part(models: Sequence[Any], labels: Sequence[str], data: dict[str, Any]
                       ) -> list[str]:
    """Gromov's quad construction over N (exact phases and random ones) and, for quad
    models, how they compare with it; adds `data["construction"]`."""
    from analyses.experiments.construction import compare_quad, quad_curve

    cfg = models[0].cfg
    curve = quad_curve(ns=(5, 6, 7, 12, 24, 48, 96, 192), p=cfg.p, seeds=[0])
    data["construction"] = {"quad_curve": curve.to_dict()}
    rows = [[str(n), _pct(e[0]), _pct(r[0])] for n, e, r in
            zip(curve.ns, curve.exact, curve.random_phases, strict=True)]
    parts = [
        "<h3>Exact construction for x² activations</h3>",
        f"<p>Gromov's construction with phases on a lattice that cancels every unwanted term "
        f"(<code>analyses.synthetic.quad_construction</code>: groups of 6 neurons sharing a "
        f"frequency) is predicted to add mod {cfg.p} exactly at N = {curve.predicted} "
        "neurons, one complete group, and at every multiple of it; an incomplete last group "
        "leaves terms uncancelled that break it. With random phases (as Gromov states it) the "
        "unwanted terms only average away as N grows. Accuracy over all pairs:</p>",
        _table(["N", "exact phases", "random phases"], rows)]
    if cfg.activation == "quad":
        quads = [compare_quad(m) for m in models]
        data["construction"]["trained_quad"] = quads
        rows = [[html.escape(label), _pct(q["accuracy"]), str(q["n_frequencies"]),
                 f"{q['phase_error_abs_median']:.3f}",
                 " ".join(f"{v:.2f}" for v in q["phase_sum_mean"]),
                 f"{q['phase_sum_random_level_mean']:.2f}"]
                for label, q in zip(labels, quads, strict=True)]
        parts += ["<p>These quad models beside the construction: the construction's phase "
                  "sums are 0; random phases give about the last column.</p>",
                  _table(["model", "accuracy", "frequencies", "|φ_out − φ_a − φ_b| median",
                          "phase sums (7 terms)", "random level"], rows)]
    return parts


def forms_section(
    models: Sequence[Any],
    labels: Sequence[str],
    n_orders: int = 3,
    discover_generations: int = 8,
) -> tuple[str, dict[str, Any]]:
    """The section's HTML and its numbers (`{"applies": ..., "forms": ..., ...}`).

    `n_orders` random neuron orders per replacement curve; `discover_generations` generations
    of symbolic search (population 500, seed 0) per weight vector discovered, a budget of work,
    so that the same models give the same section on any machine (one typical neuron's `a`
    and `out` weights of the first model; library search only when gplearn is not installed).
    """
    from analyses.clock_pizza import diagnose
    from analyses.discovery import discover
    from analyses.forms import (
        FORMS,
        REPLACEMENT_FORMS,
        compare_forms,
        form_replacement,
        form_weights,
    )
    from analyses.fourier import neuron_signals
    from analyses.synthetic import (
        pizza_construction,
        quad_construction,
        quad_construction_neurons,
        random_cosine_model,
    )
    from analyses.views import figure_png, img_html, plot_replacement

    esc = html.escape
    cfg = models[0].cfg
    applies = _applies(cfg)
    data: dict[str, Any] = {"applies": applies}
    parts = ["<h2 id='neuron-forms'>What each neuron computes</h2>"]
    if applies["forms"] is not None:
        parts.append(f"<p class='note'>{esc(applies['forms'])}.</p>")
        return "\n".join(parts), to_jsonable(data)

    # ---------------------------------------------------------------- competing forms
    comparisons = [compare_forms(m) for m in models]
    summaries = [c.summary() for c in comparisons]
    signals = ("a", "b", "out")
    forms_data = {sig: {f: {"win_share": mean_sd([s[sig]["win_share"][f] for s in summaries]),
                            "r2_median": mean_sd([s[sig]["r2_median"][f] for s in summaries])}
                        for f in FORMS} for sig in signals}
    data["forms"] = {"score": "bic", "per_model": summaries, "aggregate": forms_data}
    rows = []
    for sig in signals:
        row = [f"<b>{sig}</b>"]
        for f in FORMS:
            w, r = forms_data[sig][f]["win_share"], forms_data[sig][f]["r2_median"]
            row.append(f"{_pct(w['mean'])} <span class='meta'>(R² {r['mean']:.3f})</span>")
        rows.append(row)
    parts += [
        "<p>Five descriptions compete for every neuron's input weights from <code>a</code> and "
        "<code>b</code> and its output weights: one cosine (the study), a cosine with its "
        "second and third harmonics, a square wave <code>s·sign(cos θ) + o</code>, a clipped "
        "cosine <code>s·clip(cos θ, lo, hi) + o</code> and two frequencies. Each is fitted by "
        "least squares; the winner per weight vector is the one with the lowest BIC over the "
        "p residues (it charges ln p per parameter: 5, 9, 5, 7 and 9 parameters, an integer "
        "frequency counting as two). Share of neurons each form wins (mean over models), with "
        "each form's median R²:</p>",
        _table(["weights", *FORMS], rows)]

    # ---------------------------------------------------------------- replacement
    # (replacement applies wherever the forms do). The table needs every form at 90 % and
    # 100 % only; the full curves are drawn for three descriptions. Model i's orders come from
    # seed i in both calls, so the two share their orders and agree at 90 % and 100 %.
    pairs = list(zip(models, comparisons, strict=True))
    ends = [form_replacement(m, c, fractions=[0.9, 1.0], n_orders=n_orders, seed=i)
            for i, (m, c) in enumerate(pairs)]
    rep_data = {f: {"at_0.9": mean_sd([r.curves[f].at(0.9) for r in ends]),
                    "at_1.0": mean_sd([r.curves[f].at(1.0) for r in ends])}
                for f in REPLACEMENT_FORMS}
    best_form = max(FORMS, key=lambda f: rep_data[f]["at_0.9"]["mean"])
    drawn = list(dict.fromkeys(("cosine", best_form, "best")))
    reps = [form_replacement(m, c, forms=drawn, n_orders=n_orders, seed=i)
            for i, (m, c) in enumerate(pairs)]
    curves = {f: [r.curves[f] for r in reps] for f in drawn}
    data["replacement"] = {"n_orders": n_orders, "by_form": rep_data,
                           "best_single_form_at_0.9": best_form,
                           "curves": {f: [c.to_dict() for c in cs]
                                      for f, cs in curves.items()}}
    rows = [[esc(f), _pct(rep_data[f]["at_0.9"]["mean"]), _pct(rep_data[f]["at_1.0"]["mean"])]
            for f in REPLACEMENT_FORMS]
    fig = plot_replacement({"one cosine (the study's description)": curves["cosine"],
                            f"{best_form} (the best single form)": curves[best_form],
                            "each weight vector's winning form": curves["best"]})
    fig.axes[0].set_xlabel("fraction of neurons replaced by their fits")

    parts += [
        "<h3>Replacing neurons by each form</h3>",
        f"<p>Inputs and outputs of a growing fraction of neurons replaced by the fit of one "
        f"form ({n_orders} random orders per model, the same orders for every form); "
        "<i>best</i> replaces each weight vector by its own winning form.</p>",
        _table(["form", "accuracy, 90 % replaced", "accuracy, 100 % replaced"], rows),
        img_html(figure_png(fig), "replacement by form", "forms-replacement"),
        "<p>Accuracy as neurons are replaced by one cosine (the study's experiment), by "
        "the best single form, and by each vector's winning form (band: spread over models "
        "and orders).</p>"]

    # ---------------------------------------------------------------- discovery
    c0, m0 = comparisons[0], models[0]
    i = _typical_neuron(c0)
    found = []
    sig_w = neuron_signals(m0)
    for sig in ("a", "out") if i is not None else ():
        neuron = c0.neurons[i]
        d = discover(sig_w[sig][neuron], max_generations=discover_generations)
        found.append({"model": labels[0], "neuron": neuron, "weights": sig, **d.to_dict()})
    data["discovery"] = found
    rows = []
    for d in found:
        cands = "; ".join(f"{c['method']}: {c['form']}, R² {c['r2']:.3f}, BIC {c['bic']:.0f}"
                          for c in d["candidates"])
        rows.append([esc(f"{d['model']}, neuron {d['neuron']}, {d['weights']}"),
                     f"<code>{esc(d['expression'])}</code>", esc(d["method"]), esc(d["form"]),
                     str(d["frequency"]), f"{d['r2']:.3f}", esc(cands)])
    note = found[0]["note"] if found else ("every neuron of the first model has a constant "
                                           "weight vector: nothing to discover")
    parts += [
        "<h3>Automated discovery</h3>",
        "<p>A search for a short closed form told nothing about the family "
        "(<code>analyses.discovery.discover</code>): symbolic regression over "
        "<code>+ × cos sin sign clip</code>, the residue and the angles of the two strongest "
        "frequencies, against the library of forms above, compared by BIC; <i>nearest "
        f"form</i> is the library form closest to what was found. A typical neuron (median "
        f"input R²), {discover_generations} generations of 500 programs per vector.</p>",
        _table(["weights", "expression found", "search", "nearest form", "k", "R²",
                "candidates"], rows)]
    if note:
        parts.append(f"<p class='note'>{esc(note)}.</p>")

    # ---------------------------------------------------------------- clock or pizza
    if applies["clock_pizza"] is None:
        from analyses.replacement import replace_neurons

        rows, cp = [], []
        for label, m, c in zip(labels, models, comparisons, strict=True):
            replaced = replace_neurons(m, list(range(m.cfg.d_hidden)),
                                       weights=form_weights(c, "best"))
            for kind, model in (("trained", m), ("all neurons replaced (best form)", replaced)):
                r = diagnose(model)
                cp.append({"model": label, "kind": kind, **r.to_dict()})
        if cfg.operation == "add":
            p = cfg.p
            n_exact = quad_construction_neurons(p)
            for kind, model in (
                    ("random cosine model, 512 ReLU neurons", random_cosine_model(512, p, 0)),
                    (f"quad construction, {n_exact} neurons", quad_construction(n_exact, p, 0)),
                    ("pizza construction, 30 quad neurons", pizza_construction(30, p, 0))):
                r = diagnose(model)
                cp.append({"model": "synthetic", "kind": kind, **r.to_dict()})
        for r in cp:
            rows.append([esc(r["model"]), esc(r["kind"]), f"{r['gradient_symmetricity']:.3f}",
                         f"{r['distance_irrelevance']:.3f}", f"<b>{esc(r['verdict'])}</b>"])
        verdicts = [r["verdict"] for r in cp if r["kind"] == "trained"]
        data["clock_pizza"] = {"rows": cp, "trained_verdicts": verdicts,
                               "gs_threshold": cp[0]["gs_threshold"],
                               "di_threshold": cp[0]["di_threshold"]}
        parts += [
            "<h3>Clock or pizza</h3>",
            "<p>Zhong et al.'s diagnostics adapted to one-hot inputs "
            "(<code>analyses.clock_pizza</code>): gradient symmetricity, the cosine between "
            "the logit's gradients with respect to the one-hot vectors of <code>a</code> and "
            "<code>b</code> (pizza ≥ 0.98), and distance irrelevance, how much of the correct "
            "logit's spread survives fixing <code>b − a</code> (clock ≥ 0.6).</p>",
            _table(["model", "kind", "gradient symmetricity", "distance irrelevance",
                    "verdict"], rows)]
    else:
        parts.append(f"<p class='note'>Clock or pizza: {esc(applies['clock_pizza'])}.</p>")
    if cfg.operation == "add":
        parts += _construction_part(models, labels, data)
    return "\n".join(parts), to_jsonable(data)


__all__ = ["forms_section"]
