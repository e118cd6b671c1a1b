"""The open-questions page: `questions.html` and `questions.json` from a `QuestionsResult`.

    from analyses.pages.questions import write_questions_page
    write_questions_page(result, "questions")   # questions/questions.html, questions.json

The page renders `templates/questions.html.j2` (the one base layout, stylesheet and
autoescaping of `analyses.pages.render`); this module formats the result's numbers as text and
draws its figures (embedded as PNG) from numbers the experiment computed
(`analyses.experiments.questions`: the analysed group, the example spectra, the frequency
counts). It computes nothing about the models. The HTML goes through the one page writer
(`analyses.pages.writer.write_page_file`: atomic, replacing only an earlier questions page), the
JSON is written atomically beside it; the folder itself is not replaced, since it holds the
default training cache (`OUT/cache`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from analyses.experiments.questions import (
    SMALL_P_MODEL,
    SMALL_P_RECIPE,
    QuestionsResult,
    analysed_group,
    finite,
)
from analyses.figures import figure_png
from analyses.pages.render import render
from analyses.pages.writer import PageKind, is_page_file, write_page_file
from analyses.views import SEED_COLORS, new_figure
from hooked_mlp.config import MLPConfig, TrainConfig
from hooked_mlp.files.format import atomic_write_text
from hooked_mlp.text import safe_text

KIND = PageKind("questions", files=("questions.html",))
TEMPLATE = "questions.html.j2"
JSON_KEYS = ("plan", "small_p", "encodings", "depths", "timings", "environment", "command")


# ------------------------------------------------------------------------------ formatting
def _pm(s: dict[str, Any] | None, pct: bool = True, digits: int = 1) -> str:
    """`mean ± sd (min–max, n)` of a `mean_sd` dict."""
    if not s or not s.get("n"):
        return "n/a"
    f = (lambda v: f"{100 * v:.{digits}f}") if pct else (lambda v: f"{v:.{digits + 1}f}")
    unit = " %" if pct else ""
    if s["n"] == 1:
        return f(s["mean"]) + unit
    return (f"{f(s['mean'])} ± {f(s['sd'])}{unit} ({f(s['min'])}–{f(s['max'])}, "
            f"n={s['n']})")


def _m(s: dict[str, Any] | None, pct: bool = True, digits: int = 1) -> str:
    """The mean of a `mean_sd` dict (a percentage, or `digits + 1` decimals)."""
    if not s or not s.get("n") or not finite(s.get("mean")):
        return "n/a"
    return f"{100 * s['mean']:.{digits}f} %" if pct else f"{s['mean']:.{digits + 1}f}"


def _k_text(ks: list[int]) -> str:
    if not ks:
        return "none"
    if len(ks) <= 8:
        return ", ".join(map(str, ks))
    return f"{len(ks)} distinct ({ks[0]}–{ks[-1]})"


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
            p = len(grid)
            a = ax[r, 2 * j]
            a.imshow(np.asarray(grid, dtype=np.float64), cmap="viridis", origin="lower")
            a.set_title(f"{g['label']} L{ex['layer']} n{neuron}", fontsize=7)
            a.set_axis_on()
            a.set_xticks([])
            a.set_yticks([])
            a.set_ylabel("a", fontsize=7)
            a.set_xlabel("b", fontsize=7)
            s = ax[r, 2 * j + 1]
            half = p // 2
            s.imshow(np.asarray(ex["spectra"][j], dtype=np.float64), cmap="magma",
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
        counts = g["frequency_counts"][layer]
        if counts is None:
            continue
        x = np.arange(1, len(counts) + 1) + (i - (len(groups) - 1) / 2) * width
        a.bar(x, np.asarray(counts, dtype=np.float64), width=width,
              color=SEED_COLORS[i % len(SEED_COLORS)],
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
    x = np.arange(len(labels), dtype=np.float64)
    w = 0.2
    for j, (vals, name) in enumerate(((sf, "single-frequency neurons"),
                                      (axis, "median share: a or b alone"),
                                      (sums, "median share: a + b"),
                                      (diff, "median share: a − b"))):
        v = [float("nan") if not finite(t) else t for t in vals]
        a.bar(x + (j - 1.5) * w, v, width=w, color=SEED_COLORS[j], label=name)
    a.set_xticks(x, labels, fontsize=6)
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
            rows.append([
                g["label"], _recipe_text(g), _pm(s["train_acc"]), _pm(s["val_acc"]),
                _pm(layer["single_frequency_fraction"]), _k_text(layer["k_single_union"]),
                _m(layer["median_share"]["sum"]),
                f"{_m(post['k_agree'], digits=0)} / {_m(post['median_abs_phase_error'], False)}",
                _pm(out["original"]), _pm(out["predicted_at_1"]), _pm(post["predicted_at_1"]),
                _pm(s["outputs"]["diagonal"]["predicted_at_1"]), _pm(out["fitted_at_1"]),
                _pm(s["activation_replacement"]["first_pre_additive"]["at_1"]),
            ])
    return rows


def _answers_q1(result: QuestionsResult) -> list[dict[str, Any]]:
    """Per encoding, the numbers its answer states (on its analysed group's first layer)."""
    items = []
    for enc, entry in result.encodings.items():
        g = analysed_group(entry)
        s = g["summary"]
        layer = s["layers"][0]
        post = s["outputs"]["post"]
        items.append({
            "encoding": enc, "learned": entry["learned_with"] is not None,
            "val_acc": _m(s["val_acc"]), "label": g["label"],
            "single": _m(layer["single_frequency_fraction"], digits=0),
            "k1": _m(layer["single_frequency_k1_fraction"], digits=0),
            "ks": _k_text(layer["k_single_union"]), "k_agree": _m(post["k_agree"], digits=0),
            "phase_error": _m(post["median_abs_phase_error"], False),
            "predicted": _m(post["predicted_at_1"]), "original": _m(post["original"]),
            "fitted": _m(post["fitted_at_1"]),
            "diagonal": _m(s["outputs"]["diagonal"]["predicted_at_1"])})
    return items


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
                         _k_text(layer["k_single_union"])])
    return rows


def _output_rows(result: QuestionsResult) -> list[list[str]]:
    rows = []
    groups = [(f"{d} layer(s)", g) for d, g in result.depths.items()]
    groups += [(f"{enc}: {analysed_group(e)['label']}", analysed_group(e))
               for enc, e in result.encodings.items() if enc != "one_hot"]
    for label, g in groups:
        for src, o in g["summary"]["outputs"].items():
            rows.append([label, src, _pm(o["original"]),
                         _pm(o["predicted_at_0.9"]), _pm(o["predicted_at_1"]),
                         _pm(o["fitted_at_0.9"]), _pm(o["fitted_at_1"]),
                         _m(o["r2"], False), _m(o["k_agree"], digits=0),
                         _m(o["median_abs_phase_error"], False)])
    return rows


def _answers_q3(result: QuestionsResult) -> list[dict[str, Any]]:
    """Per depth, the numbers its answer states."""
    items = []
    for depth, g in result.depths.items():
        s = g["summary"]
        src = "weights" if "weights" in s["outputs"] else "post"
        o, post, diag = s["outputs"][src], s["outputs"]["post"], s["outputs"]["diagonal"]
        layers = s["layers"]
        items.append({
            "depth": depth, "val_acc": _m(s["val_acc"]),
            "single": ", ".join(f"L{i} {_m(la['single_frequency_fraction'], digits=0)}"
                                for i, la in enumerate(layers)),
            "sums": ", ".join(f"L{i} {_m(la['median_share']['sum'])}"
                              for i, la in enumerate(layers)),
            "mixed": ", ".join(f"L{i} {_m(la['median_share']['other'])}"
                               for i, la in enumerate(layers)),
            "source": ("the input weights" if src == "weights"
                       else "the a + b term of each last-layer neuron"),
            "predicted": _pm(o["predicted_at_1"]),
            "from_post": _pm(post["predicted_at_1"]) if src != "post" else None,
            "fitted": _pm(o["fitted_at_1"]), "original": _pm(o["original"]),
            "diagonal": _pm(diag["predicted_at_1"])})
    return items


def _small_p(result: QuestionsResult) -> dict[str, Any] | None:
    """The small problem every encoding also trains on (the tests' check of these numbers)."""
    if not result.small_p:
        return None
    r = SMALL_P_RECIPE
    return {"p": SMALL_P_MODEL["p"], "d_hidden": SMALL_P_MODEL["d_hidden"], "epochs": r.epochs,
            "batch_size": r.batch_size, "weight_decay": str(r.weight_decay),
            "rows": [[enc, f"{100 * v['train_acc']:.1f} %", f"{100 * v['val_acc']:.1f} %"]
                     for enc, v in result.small_p.items()]}


def _figures(result: QuestionsResult) -> dict[str, bytes]:
    enc_groups = [analysed_group(e) for e in result.encodings.values()]
    study_groups = [e["study_recipe"] for e in result.encodings.values()]
    tries = [tr for e in result.encodings.values() for tr in e["tries"]]
    depth_groups = list(result.depths.values())
    return {
        "histories": fig_histories(study_groups + tries),
        "examples": fig_examples(enc_groups, layer=0),
        "frequencies": fig_frequencies(enc_groups, layer=0),
        "outputs": fig_output_curves(enc_groups, "Output rows replaced: predicted (solid), "
                                     "matched filter (dash-dot), fitted (dashed), per encoding"),
        "depth_outputs": fig_output_curves(depth_groups, "Output rows replaced: predicted "
                                           "(solid), matched filter (dash-dot), fitted "
                                           "(dashed), per depth"),
        "depth_shares": fig_layer_shares(depth_groups),
        "depth_examples": fig_examples(depth_groups[-1:]),
    }


def render_questions_html(result: QuestionsResult, command: str | None = None) -> str:
    """The page as one HTML string (figures inline)."""
    plan, t, env, study = result.plan, result.timings, result.environment, TrainConfig()
    return render(
        TEMPLATE, kind=KIND.name, plan=plan, command=command,
        study={"lr": f"{study.lr:g}", "weight_decay": f"{study.weight_decay:g}",
               "batch_size": study.batch_size, "train_pct": f"{100 * study.train_frac:g}",
               "epochs": study.epochs},
        seeds=str(list(plan.seeds)), fractions=str(list(plan.fractions)),
        learned_pct=f"{100 * plan.learned:.0f}",
        minutes=f"{t.get('total_s', float('nan')) / 60:.1f}",
        train_s=f"{t.get('train_s', 0):.0f}", cpus=str(env.get("cpus")),
        torch=str(env.get("torch")),
        answers_q1=_answers_q1(result), encoding_rows=_encoding_rows(result),
        small_p=_small_p(result), answers_q3=_answers_q3(result),
        depth_rows=_depth_rows(result), output_rows=_output_rows(result),
        figures=_figures(result))


def _check_json_target(path: Path) -> None:
    """Refuse to replace a `questions.json` that is not one this page wrote."""
    if not (path.exists() or path.is_symlink()):
        return
    try:
        doc = None if path.is_symlink() or not path.is_file() else json.loads(
            path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict) or not set(JSON_KEYS) <= set(doc):
        raise ValueError(f"{safe_text(str(path))} exists and is not a hooked-mlp questions "
                         "page's JSON: choose another folder or remove it")


def write_questions_page(result: QuestionsResult, out: str | Path,
                         command: str | None = None) -> tuple[Path, Path]:
    """Write `questions.html` and `questions.json` into `out` (each atomically, replacing only
    an earlier questions page's files); their paths."""
    out = Path(out)
    json_path, html_path = out / "questions.json", out / KIND.files[0]
    if (html_path.exists() or html_path.is_symlink()) and not is_page_file(html_path, KIND):
        raise ValueError(f"{safe_text(str(html_path))} exists and is not a hooked-mlp "
                         "questions page: choose another folder or remove it")
    _check_json_target(json_path)
    page = render_questions_html(result, command)  # before anything is written
    doc = result.to_dict()
    doc["command"] = command
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json_path, json.dumps(doc, separators=(",", ":"), allow_nan=False))
    write_page_file(html_path, KIND, page)
    return html_path, json_path


__all__ = ["KIND", "render_questions_html", "write_questions_page"]
