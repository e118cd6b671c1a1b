"""The open-questions page: a self-contained HTML page and a JSON file from a `QuestionsResult`.

Figures are made here from the result's numbers (and the example grids it carries), embedded
as base64 PNG; nothing is computed about the models here. `write_questions_page(result, out)`
writes `questions.html` and `questions.json` atomically.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import torch

from analyses.experiments.questions import SMALL_P_MODEL, SMALL_P_RECIPE, QuestionsResult, finite
from analyses.views import SEED_COLORS, figure_png, img_html, new_figure
from hooked_mlp.config import MLPConfig, TrainConfig


# ------------------------------------------------------------------------------ formatting
def _pm(s: dict[str, Any] | None, pct: bool = True, digits: int = 1) -> str:
    """`mean ± std (min–max, n)` of a `stats` dict."""
    if not s or not s.get("n"):
        return "n/a"
    f = (lambda v: f"{100 * v:.{digits}f}") if pct else (lambda v: f"{v:.{digits + 1}f}")
    unit = " %" if pct else ""
    if s["n"] == 1:
        return f(s["mean"]) + unit
    return (f"{f(s['mean'])} ± {f(s['sd'])}{unit} ({f(s['min'])}–{f(s['max'])}, "
            f"n={s['n']})")


def _m(s: dict[str, Any] | None, pct: bool = True, digits: int = 1) -> str:
    if not s or not s.get("n") or not finite(s.get("mean")):
        return "n/a"
    return f"{100 * s['mean']:.{digits}f} %" if pct else f"{s['mean']:.{digits + 1}f}"


def _fig(png: bytes, alt: str) -> str:
    return img_html(png, alt, caption=True)


def _small_p(result: Any) -> str:
    """The small problem every encoding also trains on (the tests' check of these numbers)."""
    if not result.small_p:
        return ""
    r = SMALL_P_RECIPE
    rows = [[html.escape(enc), f"{100 * v['train_acc']:.1f} %", f"{100 * v['val_acc']:.1f} %"]
            for enc, v in result.small_p.items()]
    return (f"<h4>At a small p</h4><p>Every encoding also trained on p = {SMALL_P_MODEL['p']}, "
            f"{SMALL_P_MODEL['d_hidden']} ReLU neurons, {r.epochs} epochs, batch {r.batch_size}, "
            f"weight decay {r.weight_decay} (seed 0; seconds each; tests/test_encodings.py trains "
            "the same runs and holds them to these numbers).</p>"
            + _table(["encoding", "train acc", "val acc"], rows))


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _recipe_text(group: dict[str, Any]) -> str:
    """What differs from the study's model and recipe (p, epochs and seeds always shown)."""
    c, r = group["config"], group["recipe"]
    study_c, study_r = MLPConfig().to_dict(), TrainConfig().to_dict()
    changed = [f"{k}={v}" for k, v in c.items() if k not in ("p", "input_encoding")
               and v != study_c[k]]
    changed += [f"{k}={v}" for k, v in r.items() if k not in ("epochs", "seed")
                and v != study_r[k]]
    return (f"p={c['p']}, {r['epochs']} epochs, seeds {group['seeds']}"
            + (": " + ", ".join(changed) if changed else ": the study's recipe"))


def _best(entry: dict[str, Any]) -> dict[str, Any]:
    """The group an encoding is analysed on: the first recipe that learned, else the one that
    reached the highest validation accuracy."""
    groups = [entry["study_recipe"], *entry["tries"]]
    learned = entry.get("learned_with")
    if learned == "study_recipe":
        return groups[0]
    if learned is not None:
        return groups[1 + int(learned.split()[-1])]
    return max(groups, key=lambda g: g["summary"]["val_acc"]["mean"])


# ------------------------------------------------------------------------------ figures
def fig_histories(groups: list[dict[str, Any]]) -> bytes:
    fig, ax = new_figure(7.5, 3.8)
    a = ax[0, 0]
    for i, g in enumerate(groups):
        h, c = g["history"], SEED_COLORS[i % len(SEED_COLORS)]
        if "val_acc" in h:
            a.plot(h["epoch"], h["val_acc"], color=c, lw=1.2, label=f"{g['label']} (val)")
        a.plot(h["epoch"], h["train_acc"], color=c, lw=0.8, ls=":")
    a.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), xscale="log",
          title="Training (first seed; solid: validation, dotted: train)")
    a.legend(fontsize=7, loc="upper left")
    return figure_png(fig)


def fig_examples(groups: list[dict[str, Any]], layer: int | None = None) -> bytes:
    """Per group, the example neurons' activation grids and their 2-D power spectra."""
    rows = []
    for g in groups:
        layers = g["examples"]["layers"]
        chosen = layers if layer is None else [layers[layer if layer >= 0 else len(layers) - 1]]
        for ex in chosen:
            rows.append((g, ex))
    n = max(len(ex["neurons"]) for _, ex in rows)
    fig, ax = new_figure(2.0 * 2 * n, 2.0 * len(rows) + 0.3, len(rows), 2 * n)
    for r, (g, ex) in enumerate(rows):
        for j in range(2 * n):
            ax[r, j].set_axis_off()
        for j, (neuron, grid) in enumerate(zip(ex["neurons"], ex["grids"], strict=True)):
            gt = torch.tensor(grid, dtype=torch.float64)
            p = gt.shape[0]
            a = ax[r, 2 * j]
            a.imshow(gt.numpy(), cmap="viridis", origin="lower")
            a.set_title(f"{g['label']} L{ex['layer']} n{neuron}", fontsize=7)
            a.set_axis_on()
            a.set_xticks([])
            a.set_yticks([])
            a.set_ylabel("a", fontsize=7)
            a.set_xlabel("b", fontsize=7)
            power = torch.fft.fft2(gt - gt.mean()).abs().square()
            power = torch.fft.fftshift(power)
            s = ax[r, 2 * j + 1]
            half = p // 2
            s.imshow(torch.log10(power + power.max() * 1e-6).numpy(), cmap="magma",
                     origin="lower", extent=(-half - 0.5, half + 0.5, -half - 0.5, half + 0.5))
            s.set_title("log power (k_a, k_b)", fontsize=7)
            s.set_axis_on()
            s.tick_params(labelsize=6)
    return figure_png(fig, dpi=90)


def fig_frequencies(groups: list[dict[str, Any]], layer: int = -1) -> bytes:
    """Histogram of the frequencies of single-frequency neurons (all seeds of each group)."""
    fig, ax = new_figure(8, 3.4)
    a = ax[0, 0]
    width = 0.8 / max(1, len(groups))
    for i, g in enumerate(groups):
        ks = [k for m in g["models"] for k in m["layers"][layer]["k_single"]]
        if not ks:
            continue
        K = (g["config"]["p"] - 1) // 2
        counts = torch.bincount(torch.tensor(ks), minlength=K + 1)[1:].double()
        x = torch.arange(1, K + 1) + (i - (len(groups) - 1) / 2) * width
        a.bar(x.numpy(), counts.numpy(), width=width, color=SEED_COLORS[i % len(SEED_COLORS)],
              label=g["label"])
    a.set(xlabel="frequency k of single-frequency neurons", ylabel="neurons (all seeds)",
          title="Which frequencies the single-frequency neurons use")
    a.legend(fontsize=7)
    return figure_png(fig)


def fig_output_curves(groups: list[dict[str, Any]], title: str) -> bytes:
    """Accuracy as output weight rows are replaced by single-cosine predictions (solid), by
    the matched filter of each neuron's function of a + b (dash-dot) or by each row's own
    cosine fit (dashed), one colour per group (mean over seeds)."""
    fig, ax = new_figure(8, 4.6)
    a = ax[0, 0]
    for i, g in enumerate(groups):
        c = SEED_COLORS[i % len(SEED_COLORS)]
        outs = g["summary"]["outputs"]
        src = "weights" if "weights" in outs else "post"
        lines = [(outs[src], "predicted", "-", f"predicted ({src})"),
                 (outs[src], "fitted", "--", "fitted cosines")]
        if "diagonal" in outs:
            lines.append((outs["diagonal"], "predicted", "-.", "predicted (diagonal)"))
        for o, kind, ls, name in lines:
            a.plot(o["fractions"], o["mean_curve"][kind], ls=ls, marker="o", ms=3, color=c,
                   label=f"{g['label']}: {name}")
    a.set(xlabel="fraction of output weight rows replaced", ylabel="accuracy (all pairs)",
          ylim=(0, 1.02), title=title)
    a.legend(fontsize=6, ncol=2, loc="lower left")
    return figure_png(fig)


def fig_layer_shares(groups: list[dict[str, Any]]) -> bytes:
    """Per group and layer: the share of single-frequency neurons and the median shares of the
    activation power on functions of a + b, of a or b alone, and of a - b."""
    labels, sf, sums, axis, diff = [], [], [], [], []
    for g in groups:
        for li, layer in enumerate(g["summary"]["layers"]):
            labels.append(f"{g['label']}\nL{li}")
            sf.append(layer["single_frequency_fraction"]["mean"])
            ms = layer["median_share"]
            sums.append(ms["sum"]["mean"])
            axis.append(ms["axis"]["mean"])
            diff.append(ms["diff"]["mean"])
    fig, ax = new_figure(max(6.0, 0.9 * len(labels) + 2), 3.8)
    a = ax[0, 0]
    x = torch.arange(len(labels)).double()
    w = 0.2
    for j, (vals, name) in enumerate(((sf, "single-frequency neurons"),
                                      (axis, "median share: a or b alone"),
                                      (sums, "median share: a + b"),
                                      (diff, "median share: a − b"))):
        v = [float("nan") if not finite(t) else t for t in vals]
        a.bar((x + (j - 1.5) * w).numpy(), v, width=w, color=SEED_COLORS[j], label=name)
    a.set_xticks(x.numpy(), labels, fontsize=6)
    a.set(ylim=(0, 1.02), ylabel="fraction", title="Where each layer's activation power lies")
    a.legend(fontsize=7)
    return figure_png(fig)


# ------------------------------------------------------------------------------ sections
def _encoding_rows(result: QuestionsResult) -> list[list[str]]:
    rows = []
    for entry in result.encodings.values():
        for g in [entry["study_recipe"], *entry["tries"]]:
            s = g["summary"]
            layer = s["layers"][-1]
            out = s["outputs"].get("weights") or s["outputs"]["pre"]
            post = s["outputs"]["post"]
            ks = layer["k_single_union"]
            rows.append([
                html.escape(g["label"]), html.escape(_recipe_text(g)),
                _pm(s["train_acc"]), _pm(s["val_acc"]),
                _pm(layer["single_frequency_fraction"]),
                html.escape(_k_text(ks)),
                _m(layer["median_share"]["sum"]),
                f"{_m(post['k_agree'], digits=0)} / {_m(post['median_abs_phase_error'], False)}",
                _pm(out["original"]), _pm(out["predicted_at_1"]), _pm(post["predicted_at_1"]),
                _pm(s["outputs"]["diagonal"]["predicted_at_1"]), _pm(out["fitted_at_1"]),
                _pm(s["activation_replacement"]["first_pre_additive"]["at_1"]),
            ])
    return rows


def _k_text(ks: list[int]) -> str:
    if not ks:
        return "none"
    if len(ks) <= 8:
        return ", ".join(map(str, ks))
    return f"{len(ks)} distinct ({ks[0]}–{ks[-1]})"


def _answer_q1(result: QuestionsResult) -> str:
    parts = []
    for enc, entry in result.encodings.items():
        g = _best(entry)
        s = g["summary"]
        layer = s["layers"][0]
        ks = layer["k_single_union"]
        post = s["outputs"]["post"]
        learned = entry["learned_with"] is not None
        parts.append(
            f"<li><b>{html.escape(enc)}</b> ({'learned' if learned else 'did not learn'}: "
            f"validation {_m(s['val_acc'])} with {html.escape(g['label'])}): "
            f"{_m(layer['single_frequency_fraction'], digits=0)} of the live first-layer "
            f"neurons are single-frequency (their low harmonics of one k hold more than half "
            f"their power), {_m(layer['single_frequency_k1_fraction'], digits=0)} of the live "
            f"neurons with k = 1"
            + (" (with these inputs any smooth function of a and b counts as k = 1: its "
               "power sits at the lowest frequencies)" if enc != "one_hot" else "")
            + f"; frequencies: {html.escape(_k_text(ks))}. The output "
            f"layer reads {_m(post['k_agree'], digits=0)} of the live neurons at the frequency "
            f"of their a + b term (median phase error "
            f"{_m(post['median_abs_phase_error'], False)} rad); with every output row replaced "
            f"by its prediction the accuracy is "
            f"{_m(post['predicted_at_1'])} (original {_m(post['original'])}, own cosine fits "
            f"{_m(post['fitted_at_1'])}, the matched filter of each neuron's whole function "
            f"of a + b {_m(s['outputs']['diagonal']['predicted_at_1'])})."
            + (" With these inputs every first-layer pre-activation is exactly a k = 1 "
               "cosine of a and of b, so single-frequency (k = 1) neurons are guaranteed at "
               "the first layer; the question is what the layer builds from them."
               if enc == "circle" else "") + "</li>")
    return "<ul>" + "".join(parts) + "</ul>"


def _depth_rows(result: QuestionsResult) -> list[list[str]]:
    rows = []
    for depth, g in result.depths.items():
        s = g["summary"]
        for li, layer in enumerate(s["layers"]):
            ms, r2 = layer["median_share"], layer["fit_r2_median"]
            rows.append([f"{depth}", f"{li}", _pm(s["val_acc"]) if li == 0 else "",
                         _pm(layer["single_frequency_fraction"]),
                         _m(layer["dead_fraction"], digits=0),
                         _m(ms["axis"]), _m(ms["sum"]), _m(ms["diff"]), _m(ms["other"]),
                         _m(ms["n_effective"], False),
                         _m(r2["pre_additive"]), _m(r2["post_full"]), _m(r2["post_sum"]),
                         html.escape(_k_text(layer["k_single_union"]))])
    return rows


def _output_rows(result: QuestionsResult) -> list[list[str]]:
    rows = []
    groups = [(f"{d} layer(s)", g) for d, g in result.depths.items()]
    groups += [(f"{enc}: {_best(e)['label']}", _best(e)) for enc, e in result.encodings.items()
               if enc != "one_hot"]
    for label, g in groups:
        for src, o in g["summary"]["outputs"].items():
            rows.append([html.escape(label), src, _pm(o["original"]),
                         _pm(o["predicted_at_0.9"]), _pm(o["predicted_at_1"]),
                         _pm(o["fitted_at_0.9"]), _pm(o["fitted_at_1"]),
                         _m(o["r2"], False), _m(o["k_agree"], digits=0),
                         _m(o["median_abs_phase_error"], False)])
    return rows


def _answer_q3(result: QuestionsResult) -> str:
    items = []
    for depth, g in result.depths.items():
        s = g["summary"]
        src = "weights" if "weights" in s["outputs"] else "post"
        o, post, diag = s["outputs"][src], s["outputs"]["post"], s["outputs"]["diagonal"]
        layers = s["layers"]
        sf = ", ".join(f"L{i} {_m(layer['single_frequency_fraction'], digits=0)}"
                       for i, layer in enumerate(layers))
        sums = ", ".join(f"L{i} {_m(layer['median_share']['sum'])}"
                         for i, layer in enumerate(layers))
        mixed = ", ".join(f"L{i} {_m(layer['median_share']['other'])}"
                          for i, layer in enumerate(layers))
        source = ("the input weights" if src == "weights"
                  else "the a + b term of each last-layer neuron")
        items.append(
            f"<li><b>{depth} hidden layer(s)</b> (validation {_m(s['val_acc'])}): "
            f"single-frequency neurons per layer: {sf}; median share of activation power on "
            f"functions of a + b: {sums}; on mixed pairs k_a ≠ ±k_b (products of different "
            f"frequencies): {mixed}. Output weights predicted from "
            f"{source} keep {_pm(o['predicted_at_1'])} accuracy with every row replaced"
            + (f" (from the activations: {_pm(post['predicted_at_1'])})" if src != "post"
               else "")
            + f", against {_pm(o['fitted_at_1'])} with each row's own cosine fit and "
            f"{_pm(o['original'])} for the original; predicted as the matched filter of each "
            f"last-layer neuron's whole function of a + b (no single frequency): "
            f"{_pm(diag['predicted_at_1'])}.</li>")
    return "<ul>" + "".join(items) + "</ul>"


CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
table{border-collapse:collapse;font-size:12px;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
th{background:#f3f3f3}
figure{margin:1em 0}
img{max-width:100%}
figcaption{font-size:12px;color:#555}
.note{background:#f7f7f0;border-left:4px solid #cc9;padding:.5em 1em}
code{background:#f3f3f3;padding:0 3px}
"""


def render_questions_html(result: QuestionsResult, command: str | None = None) -> str:
    """The page as one HTML string (figures inline)."""
    plan, t = result.plan, result.timings
    enc_groups = [_best(e) for e in result.encodings.values()]
    study_groups = [e["study_recipe"] for e in result.encodings.values()]
    tries = [tr for e in result.encodings.values() for tr in e["tries"]]
    depth_groups = list(result.depths.values())
    env = result.environment
    minutes = t.get("total_s", float("nan")) / 60
    study = TrainConfig()
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>hooked-mlp: the study's open "
        f"questions</title><style>{CSS}</style></head><body>",
        "<h1>The study's open questions 1 and 3, answered with numbers</h1>",
        f"<p class='note'>Plan <b>{html.escape(plan.name)}</b>: p = {plan.p}, the study's "
        f"recipe (AdamW lr {study.lr:g}, weight decay {study.weight_decay:g}, batch "
        f"{study.batch_size}, {100 * study.train_frac:g} % train) for "
        f"<b>{plan.epochs} epochs</b>"
        + (f" (the study: {study.epochs})" if plan.epochs != study.epochs else "")
        + f", seeds {list(plan.seeds)}; replacement fractions {list(plan.fractions)}, "
        f"{plan.n_orders} random neuron orders each. Run time: <b>{minutes:.1f} min</b> "
        f"(training {t.get('train_s', 0):.0f} s of it; runs found in the cache cost nothing) "
        f"on {env.get('cpus')} CPU core(s), torch {html.escape(str(env.get('torch')))}."
        + (f" Command: <code>{html.escape(command)}</code>." if command else "")
        + " Every number on this page is also in <code>questions.json</code>. Spread: mean ± "
        "standard deviation (min–max, n seeds).</p>",
        "<h2>Open question 1: similar structure with continuous inputs?</h2>",
        "<h3>Experiment</h3><p>Each input encoding feeds the same one-hidden-layer model: "
        "<code>one_hot</code> (the study: e<sub>a</sub>, e<sub>b</sub>), <code>scalar</code> "
        "(a/p, b/p), <code>circle</code> (cos and sin of 2πa/p and of 2πb/p) and "
        "<code>binary</code> (the ⌈log₂ p⌉ bits of a and of b). With any encoding but one-hot "
        "the first layer is dense and its weights index no residue, so each neuron is read "
        "as a function of (a, b) over all p² pairs: its 2-D Fourier spectrum, the fit of its "
        "pre-activation by s<sub>a</sub>cos(2πka/p+φ<sub>a</sub>) + s<sub>b</sub>cos(2πkb/p+"
        "φ<sub>b</sub>) + o (<i>additive</i>), of its post-activation by the four first-order "
        "terms of one frequency (<i>full</i>: a, b, a+b, a−b) or by s·cos(2πk(a+b)/p+φ) + o "
        "(<i>sum</i>), and the replacement experiment done on activations (a hook swaps each "
        "replaced neuron's pre-activation for its additive fit). A neuron is "
        "<i>single-frequency</i> when the low harmonics (mk, nk), |m|, |n| ≤ 2, of one "
        "frequency k hold more than half its activation power. Whether the output layer "
        "combines the neurons as in the one-hot case is measured by predicting each output "
        "row as λ·amp·cos(2πkc/p + φ) from the neuron's own a + b term (k shared, one global "
        f"least-squares λ) and replacing rows. An encoding that stays under "
        f"{100 * plan.learned:.0f} % validation accuracy is retrained with the plan's other "
        "recipes; every try is listed.</p>",
        "<h3>Measured answer</h3>", _answer_q1(result),
        _table(["run", "recipe", "train acc", "val acc", "single-freq. neurons (last layer)",
                "their k", "median a+b share", "k agree (live neurons) / phase err (rad)",
                "original acc", "predicted outputs (from inputs), 100 %",
                "predicted (from a+b term), 100 %",
                "predicted (matched filter of f(a+b)), 100 %", "fitted outputs, 100 %",
                "activation replacement, 100 %"], _encoding_rows(result)),
        _fig(fig_histories(study_groups + tries), "Training curves of every encoding and "
             "try (first seed)"),
        _small_p(result),
        _fig(fig_examples(enc_groups, layer=0), "The most active first-layer neurons of each "
             "encoding (the recipe analysed: the one that learned, else the best try) and "
             "their 2-D power spectra (left: the activation, a vertical, b horizontal; right: log "
             "power, k_a vertical, k_b horizontal, 0 at the centre)"),
        _fig(fig_frequencies(enc_groups, layer=0), "Frequencies of the single-frequency "
             "first-layer neurons"),
        _fig(fig_output_curves(enc_groups, "Output rows replaced: predicted (solid), matched "
             "filter (dash-dot), fitted (dashed), per encoding"),
             "Accuracy as output weight rows are replaced"),
        "<h3>What would change the answer</h3><ul>"
        "<li>Recipes: the continuous encodings were tried with the plan's recipes only (listed "
        "above); a learning-rate schedule, far longer training, or more width could let them "
        "learn where they did not, and a network that learns may organise differently.</li>"
        "<li>The threshold of 'single-frequency' (half the power in the low harmonics of one "
        "k) is a choice; the shares themselves are in the JSON.</li>"
        "<li>With circle inputs the first-layer frequencies are fixed to k = 1 by the "
        "encoding, so the interesting structure is whether later terms (the a + b term of "
        "the ReLU's even part) are read out; an encoding with several frequencies "
        "(cos, sin of 2πka/p for several k) would test the question more sharply.</li></ul>",
        "<h2>Open question 3: can output weights be predicted from input weights? (deeper "
        "MLPs)</h2>",
        "<h3>Experiment</h3><p>One-hot MLPs with 1, 2 and 3 hidden layers of 100 ReLU "
        "neurons, same recipe and seeds. Every layer is probed as above through the cache "
        "(<code>blocks.{l}.mlp.hook_pre/hook_post</code>). For the one-layer model each "
        "neuron's output row is predicted from its input-weight cosine fits: the shared "
        "frequency k, φ<sub>out</sub> = φ<sub>a</sub> + φ<sub>b</sub>, amplitude proportional "
        "to the input amplitude with one global least-squares factor. For the last layer of "
        "the deeper models the same prediction is made from what those neurons are found to "
        "compute: the frequency and phase of the a + b term of their activation; and, without "
        "assuming one frequency, as the <i>matched filter</i> of each neuron's whole function "
        "of a + b (its mean f<sub>n</sub>(s) over the pairs with a + b = s; predicted row "
        "λ·f<sub>n</sub>(c)). Rows are replaced in random order; <i>fitted</i> replaces each "
        "row with its own best cosine fit, the upper bound for any single-cosine "
        "prediction.</p>",
        "<h3>Measured answer</h3>", _answer_q3(result),
        _table(["layers", "layer", "val acc", "single-freq. neurons", "dead",
                "median share a or b alone", "median share a+b", "median share a−b",
                "median share mixed (k_a ≠ ±k_b): products of different frequencies",
                "effective no. of frequency pairs", "R² pre additive", "R² post full",
                "R² post sum", "k of single-freq. neurons"], _depth_rows(result)),
        _table(["model", "prediction from", "original", "predicted, 90 %", "predicted, 100 %",
                "fitted, 90 %", "fitted, 100 %", "R² of predicted rows", "k agree (live neurons)",
                "median |phase error| (rad)"], _output_rows(result)),
        _fig(fig_output_curves(depth_groups, "Output rows replaced: predicted (solid), matched "
             "filter (dash-dot), fitted (dashed), per depth"),
             "Accuracy curves: predicted against fitted against original (fraction 0) output "
             "weights"),
        _fig(fig_layer_shares(depth_groups), "Per depth and layer: single-frequency neurons "
             "and where the activation power lies"),
        _fig(fig_examples(depth_groups[-1:]), "The most active neurons of every layer of the "
             "deepest model (its most accurate seed) and their spectra"),
        "<h3>What would change the answer</h3><ul>"
        "<li>The prediction uses one amplitude per neuron and one global factor; a per-neuron "
        "amplitude (the fitted curve) isolates frequency and phase, which is what "
        "<i>fitted</i> bounds.</li>"
        "<li>The matched-filter prediction assumes the output reads each last-layer neuron's "
        "function of a + b as it is; where a deeper model's last layer is mostly dead or "
        "its accuracy is low (the 3-layer seeds that did not learn), the prediction has "
        "little to read, and a recipe under which every seed learns would change those "
        "numbers.</li>"
        f"<li>{len(plan.seeds)} seeds and {plan.epochs} epochs; run with <code>--full</code> "
        f"for the study's {TrainConfig().epochs} epochs and more seeds.</li></ul>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_questions_page(result: QuestionsResult, out: str | Path,
                         command: str | None = None) -> tuple[Path, Path]:
    """Write `questions.html` and `questions.json` into `out` (atomically); their paths."""
    from hooked_mlp.files.format import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = result.to_dict()
    doc["command"] = command
    json_path, html_path = out / "questions.json", out / "questions.html"
    atomic_write_text(json_path, json.dumps(doc, separators=(",", ":"), allow_nan=False))
    atomic_write_text(html_path, render_questions_html(result, command))
    return html_path, json_path


__all__ = ["render_questions_html", "write_questions_page"]
