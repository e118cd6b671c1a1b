"""The reproduction report: every claim of the study beside this project's measurement.

`run_report` analyses a set of models (the shipped seeds by default, checkpoints, or seeds it
trains), aggregates every headline number over them (mean, standard deviation, min, max), and
writes `report.html` (figures embedded, circuitsvis views inline: it opens with no network),
`summary.json` (every number) and the figures as PNG files.
"""

from __future__ import annotations

import base64
import html
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from analyses._common import accuracy, to_jsonable, wrap_angle
from analyses.activations import activation_grids
from analyses.cosine_fit import NeuronFits, fit_harmonics, fit_neurons
from analyses.fourier import frequency_histogram, neuron_signals
from analyses.replacement import ReplacementCurve, replacement_curve
from analyses.synthetic import SyntheticCurve, synthetic_curve
from analyses.views import (
    bundle_script,
    figure_png,
    neuron_grid_view,
    plot_activation_grids,
    plot_fit_scatter,
    plot_frequency_histogram,
    plot_neuron_fit,
    plot_replacement,
    plot_synthetic,
    plot_training_curves,
    top_inputs_view,
)
from hooked_mlp.io import atomic_write_bytes, atomic_write_text

# replacement variants: label -> (form, parts, order, n_orders)
REPLACEMENT_VARIANTS = {
    "cosine fits, random order (the study's experiment)": ("separate", "both", "random", 10),
    "cosine fits, best-fitting neurons first": ("separate", "both", "best_first", 1),
    "cosine fits, worst-fitting neurons first": ("separate", "both", "worst_first", 1),
    "the study's form (shared k, s, o; φ_out = φ_a + φ_b)": ("study", "both", "random", 5),
    "inputs only replaced": ("separate", "inputs", "random", 5),
    "outputs only replaced": ("separate", "outputs", "random", 5),
    "outputs fitted with 2 harmonics (k and 2k)": ("harmonic", "both", "random", 10),
}
MAIN_VARIANT = "cosine fits, random order (the study's experiment)"
HARMONIC_VARIANT = "outputs fitted with 2 harmonics (k and 2k)"


@dataclass
class ReportResult:
    html: Path
    summary: Path
    seconds: float
    data: dict[str, Any]


def _stats(values: Sequence[float]) -> dict[str, float]:
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    if not v:
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"),
                "max": float("nan"), "n": 0}
    return {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0,
            "min": min(v), "max": max(v), "n": len(v)}


def _output_harmonic_stats(model: Any, fits: NeuronFits) -> dict[str, float]:
    """Share of the output weights' variance at `k` and `2k`, and the phase of the `2k` term."""
    w_out = neuron_signals(model)["out"]
    h = fit_harmonics(w_out, fits.out.k, 2)
    var = (w_out.double() - w_out.double().mean(1, keepdim=True)).square().sum(1)
    share = (h.scale.double().square() * model.cfg.p / 2) / var[:, None]
    # how far the 2k term's phase is from 2(phi_a + phi_b) + pi (0: exactly opposite sign)
    off_pi = wrap_angle(h.phase[:, 1] - 2 * (fits.a.phase + fits.b.phase) - math.pi).abs()
    return {
        "share_k_median": float(share[:, 0].median()),
        "share_2k_median": float(share[:, 1].median()),
        "r2_two_harmonics_median": float(h.r2.median()),
        "phase_2k_vs_2phi_plus_pi_abs_median": float(off_pi.median()),
    }


def analyse_model(model: Any, n_orders_scale: float = 1.0) -> dict[str, Any]:
    """Every per-model measurement the report uses (JSON-ready except `fits`/`curves`)."""
    fits = fit_neurons(model)  # closed form: integer k, comparable phases
    refined = fit_neurons(model, refine=True).summary()  # the study's free-frequency fit
    curves = {}
    for label, (form, parts, order, n_orders) in REPLACEMENT_VARIANTS.items():
        n = max(1, round(n_orders * n_orders_scale)) if order == "random" else 1
        curves[label] = replacement_curve(model, order=order, n_orders=n, form=form, parts=parts,
                                          fits=fits, seed=0)
    hist = frequency_histogram(model)
    info = model.train_info
    out = {
        "epochs": info.metrics.get("epochs", info.train_config.epochs) if info else None,
        "d_hidden": model.cfg.d_hidden,
        "accuracy_all": accuracy(model),
        "train_acc": accuracy(model, "train") if info else None,
        "val_acc": accuracy(model, "val") if info else None,
        "fits": fits, "curves": curves, "hist": hist,
        "fit_summary": fits.summary() | {k: v for k, v in refined.items()
                                          if k.startswith(("free_freq", "frac_free_freq"))},
        "harmonics": _output_harmonic_stats(model, fits),
    }
    return out


def _load_models(model_paths, seeds, epochs, threads, progress, out_dir):
    from hooked_mlp import TrainConfig, load, load_pretrained, pretrained_seeds, train_many
    from hooked_mlp.io import save

    if model_paths:
        models = [load(p) for p in model_paths]
        labels = [Path(p).stem for p in model_paths]
        source = "checkpoints: " + ", ".join(str(p) for p in model_paths)
    elif seeds is not None:
        tcfg = TrainConfig() if epochs is None else TrainConfig(epochs=epochs)
        runs = train_many(None, tcfg, seeds, threads=threads, progress=progress)
        models = [m for m, _ in runs]
        for s, m in zip(seeds, models, strict=True):
            save(m, Path(out_dir) / "models" / f"seed-{s}.safetensors")
        labels = [f"seed {s}" for s in seeds]
        source = f"trained for this report: seeds {list(seeds)}, {tcfg.epochs} epochs"
    else:
        shipped = pretrained_seeds()
        models = [load_pretrained(s) for s in shipped]
        labels = [f"seed {s}" for s in shipped]
        source = f"the shipped models (seeds {shipped})"
    return models, labels, source


def _fmt_pct(s: dict[str, float], digits: int = 2) -> str:
    if s["n"] == 0:
        return "n/a"
    if s["n"] == 1:
        return f"{100 * s['mean']:.{digits}f} %"
    return (f"{100 * s['mean']:.{digits}f} % ± {100 * s['std']:.{digits}f} "
            f"(min {100 * s['min']:.{digits}f}, n={s['n']})")


def _fmt_num(s: dict[str, float], digits: int = 3, unit: str = "") -> str:
    if s["n"] == 0:
        return "n/a"
    if s["n"] == 1:
        return f"{s['mean']:.{digits}g}{unit}"
    return f"{s['mean']:.{digits}g}{unit} ± {s['std']:.2g} (n={s['n']})"


def _claims(agg: dict[str, Any]) -> list[dict[str, str]]:
    """The study's claims, this project's measurement, and a verdict from fixed thresholds."""
    a = agg
    rep, harm = a["replacement_at_90"], a["replacement_harmonic_at_90"]
    syn256, syn512 = a["synthetic"]["256"], a["synthetic"]["512"]
    rows = []

    def row(claim, study, measured, ok, partly=False):
        rows.append({"claim": claim, "study": study, "measured": measured,
                     "verdict": "holds" if ok else ("partly" if partly else "differs")})

    tr = a["train_acc"]
    va = a["val_acc"]
    if tr["n"]:
        epochs = ", ".join(str(e) for e in a["epochs"]) or "?"
        row("1. Training reaches near-perfect accuracy",
            "near-perfect train and validation accuracy after 2000 epochs",
            f"after {epochs} epochs: train {_fmt_pct(tr)}; validation {_fmt_pct(va)}",
            tr["min"] >= 0.99 and va["min"] >= 0.99, partly=va["mean"] >= 0.95)
    f = a["fits"]
    row("2. Inputs from a and b share frequency, scale and offset; phases differ",
        "same k, s, o; different φ",
        f"same k: {_fmt_pct(f['frac_k_a_eq_b'], 1)} of neurons; |s_a − s_b| / s: median "
        f"{_fmt_num(f['scale_rel_diff_median'], 2)}, within 10 %: "
        f"{_fmt_pct(f['frac_scale_within_10pct'], 1)}; |o_a − o_b| / s: median "
        f"{_fmt_num(f['offset_diff_over_scale_median'], 2)}; |φ_a − φ_b|: median "
        f"{_fmt_num(f['phase_a_minus_b_abs_median'], 2, ' rad')}",
        f["frac_k_a_eq_b"]["mean"] >= 0.9 and f["scale_rel_diff_median"]["mean"] < 0.1
        and f["phase_a_minus_b_abs_median"]["mean"] > 0.3)
    row("3. Output weights: same frequency, φ_out ≈ φ_a + φ_b",
        "same k; φ_out = φ_a + φ_b",
        f"same k (a, b, out): {_fmt_pct(f['frac_k_all_equal'], 1)}; "
        f"|φ_out − (φ_a + φ_b)|: median {_fmt_num(f['phase_error_abs_median'], 2, ' rad')}, "
        f"< π/8 for {_fmt_pct(f['frac_phase_error_below_pi_8'], 1)}",
        f["frac_k_all_equal"]["mean"] >= 0.9 and f["phase_error_abs_median"]["mean"] < 0.3)
    row("4. Replacing > 90 % of neurons by cosine fits keeps > 80 % accuracy",
        "> 80 % with > 90 % replaced",
        f"90 % replaced: {_fmt_pct(rep, 1)} (single-cosine fits, random orders); "
        f"with a second output harmonic: {_fmt_pct(harm, 1)}",
        rep["mean"] > 0.8 and rep["min"] > 0.8, partly=rep["mean"] > 0.8)
    row("5. Random cosine neurons add modulo p",
        "> 95 % at N = 256, 100 % at N = 512",
        f"N = 256: {_fmt_pct(syn256)}; N = 512: {_fmt_pct(syn512, 3)}",
        syn256["mean"] > 0.95 and syn512["min"] >= 0.999, partly=syn256["mean"] > 0.9)
    h = a["frequencies"]
    row("6. The MLP uses a broad range of frequencies",
        "broad range (unlike the transformer's few key frequencies)",
        f"{_fmt_num(h['n_distinct'], 3)} distinct input frequencies of {h['n_available']} per "
        f"model (effective number {_fmt_num(h['effective_number'], 3)}); at most "
        f"{_fmt_num(h['most_common_count'], 2)} of {a['d_hidden']} neurons share one",
        h["n_distinct"]["mean"] >= 20)
    if "frac_free_freq_within_0_05" in f:
        row("Fits with a free frequency land on integers",
            "(the study fitted a continuous frequency)",
            f"|f − k| < 0.05 for {_fmt_pct(f['frac_free_freq_within_0_05'], 1)} of fits; "
            f"median |f − k| {_fmt_num(f['free_freq_abs_dev_median'], 2)}",
            f["frac_free_freq_within_0_05"]["mean"] >= 0.9)
    return rows


def _aggregate(per: list[dict[str, Any]], synth: SyntheticCurve) -> dict[str, Any]:
    keys = per[0]["fit_summary"].keys()
    fits = {k: _stats([m["fit_summary"][k] for m in per]) for k in keys}
    hist_keys = ("n_distinct", "effective_number", "most_common_count", "top_fraction_median")
    freq = {k: _stats([getattr(m["hist"], k) for m in per]) for k in hist_keys}
    freq["n_available"] = per[0]["hist"].n_available
    rep = {label: {"mean": [_stats([m["curves"][label].mean[i] for m in per])["mean"]
                            for i in range(len(per[0]["curves"][label].fractions))],
                   "fractions": per[0]["curves"][label].fractions}
           for label in REPLACEMENT_VARIANTS}
    harm_keys = per[0]["harmonics"].keys()
    return {
        "epochs": sorted({m["epochs"] for m in per if m["epochs"] is not None}),
        "d_hidden": "/".join(str(d) for d in sorted({m["d_hidden"] for m in per})),
        "train_acc": _stats([m["train_acc"] for m in per if m["train_acc"] is not None]),
        "val_acc": _stats([m["val_acc"] for m in per if m["val_acc"] is not None]),
        "accuracy_all": _stats([m["accuracy_all"] for m in per]),
        "fits": fits,
        "frequencies": freq,
        "replacement": rep,
        "replacement_at_90": _stats([m["curves"][MAIN_VARIANT].at(0.9) for m in per]),
        "replacement_harmonic_at_90": _stats([m["curves"][HARMONIC_VARIANT].at(0.9)
                                              for m in per]),
        "replacement_at_90_by_variant": {
            label: _stats([m["curves"][label].at(0.9) for m in per])
            for label in REPLACEMENT_VARIANTS},
        "output_harmonics": {k: _stats([m["harmonics"][k] for m in per]) for k in harm_keys},
        "synthetic": {str(n): synth.at(n) | {"n": len(synth.seeds)} for n in synth.ns},
    }


def _display_neurons(fits: NeuronFits, n: int = 8) -> list[int]:
    """Up to `n` live neurons of distinct, low frequencies (their grids read well at any size)."""
    chosen, seen = [], set()
    alive = ~fits.dead if fits.dead.numel() else torch.ones(len(fits.neurons), dtype=torch.bool)
    for i in torch.argsort(fits.a.k, stable=True).tolist():
        k = int(fits.a.k[i])
        if alive[i] and k not in seen:
            chosen.append(fits.neurons[i])
            seen.add(k)
        if len(chosen) == n:
            break
    return sorted(chosen)


def _representative_neuron(fits: NeuronFits) -> int:
    """The neuron whose input fit quality is the median one (a typical neuron, not the best)."""
    q = (fits.a.r2 + fits.b.r2) / 2
    order = torch.argsort(q)
    return fits.neurons[int(order[len(order) // 2])]


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1180px;margin:24px
auto;padding:0 16px;color:#222;line-height:1.45}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:36px}
table.claims{border-collapse:collapse;width:100%;font-size:14px}
table.claims td,table.claims th{border:1px solid #ddd;padding:6px 8px;vertical-align:top}
table.claims th{background:#f4f4f4;text-align:left}
.holds{color:#1a7f37;font-weight:600} .partly{color:#9a6700;font-weight:600}
.differs{color:#cf222e;font-weight:600}
img.fig{max-width:100%;border:1px solid #eee;margin:8px 0}
.note{background:#f6f8fa;border-left:4px solid #999;padding:8px 12px;font-size:14px}
.meta{color:#666;font-size:13px} code{background:#f4f4f4;padding:1px 4px}
.cv-view{min-height:40px}
"""

STATUS_SCRIPT = """<script>
window.addEventListener('load', function () {
  setTimeout(function () {
    var imgs = Array.prototype.slice.call(document.querySelectorAll('img.fig'));
    var views = Array.prototype.slice.call(document.querySelectorAll('.cv-view'));
    document.body.setAttribute('data-figures-loaded',
      String(imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length));
    document.body.setAttribute('data-figures-total', String(imgs.length));
    document.body.setAttribute('data-views-rendered',
      String(views.filter(function (v) { return v.children.length > 0; }).length));
    document.body.setAttribute('data-views-total', String(views.length));
  }, 500);
});
</script>"""


def _img(name: str, png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="fig" id="fig-{name}" alt="{html.escape(alt)}" ' \
           f'src="data:image/png;base64,{data}">'


def _replacement_note(agg: dict[str, Any]) -> str:
    v = agg["replacement_at_90_by_variant"]
    oh = agg["output_harmonics"]

    def pct(label):
        return f"{100 * v[label]['mean']:.1f} %"

    return (
        "<p class='note'>Where the damage comes from, measured at 90 % of neurons replaced "
        "(mean over models): replacing only the <b>inputs</b> gives "
        f"{pct('inputs only replaced')}, only the <b>outputs</b> "
        f"{pct('outputs only replaced')}, both "
        f"{pct(MAIN_VARIANT)}. The inputs are almost pure cosines (median R² "
        f"{agg['fits']['r2_a_median']['mean']:.3f}); the output weights are not (median R² "
        f"{agg['fits']['r2_out_median']['mean']:.3f}): a median "
        f"{100 * oh['share_2k_median']['mean']:.1f} % of their variance sits at the second "
        f"harmonic 2k, with phase ≈ 2(φ_a + φ_b) + π (median distance "
        f"{oh['phase_2k_vs_2phi_plus_pi_abs_median']['mean']:.2f} rad). Fitting the outputs "
        f"with k and 2k raises the accuracy to {pct(HARMONIC_VARIANT)}. The study's own form "
        "(a and b sharing k, s, o; output phase forced to φ_a + φ_b) gives "
        f"{pct('the study' + chr(39) + 's form (shared k, s, o; φ_out = φ_a + φ_b)')}; "
        "the order matters little (best-fitting first "
        f"{pct('cosine fits, best-fitting neurons first')}, worst-fitting first "
        f"{pct('cosine fits, worst-fitting neurons first')}).</p>")


def render_html(agg: dict[str, Any], claims: list[dict[str, str]], figures: dict[str, bytes],
                views: list[Any], source: str, labels: list[str], seconds: float) -> str:
    """The report page (figures as data URIs, the circuitsvis bundle inlined once)."""
    from hooked_mlp import __version__

    esc = html.escape
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = "\n".join(
        f"<tr><td>{esc(c['claim'])}</td><td>{esc(c['study'])}</td><td>{esc(c['measured'])}</td>"
        f"<td class='{c['verdict']}'>{c['verdict']}</td></tr>" for c in claims)
    cap = {
        "training": "Training curves of every model (log-x; loss log-y).",
        "activations": "Activation of a few neurons over every (a, b): periodic patterns.",
        "neuron_fit": "A typical neuron's weights (the median input fit quality) with their "
                      "cosine fits and formulas.",
        "fit_scatter": "Fitted parameters of every neuron: a against b (top) and the output "
                       "against the inputs (bottom); dotted: where the study predicts equality.",
        "replacement": "Accuracy as neurons are replaced by their fits (band: spread over "
                       "models and random orders).",
        "synthetic": "Random cosine models with no training.",
        "frequencies": "Which frequencies the neurons use.",
    }
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>hooked-mlp: Interpreting Modular Addition in MLPs, reproduced</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Interpreting Modular Addition in MLPs — reproduced</h1>",
        f"<p class='meta'>hooked-mlp {esc(__version__)} · {esc(now)} · models: {esc(source)} "
        f"({len(labels)}) · computed in {seconds:.1f} s · every number below is in "
        "<code>summary.json</code></p>",
        "<h2>Claims and measurements</h2>",
        "<table class='claims'><tr><th>claim of the study</th><th>study</th>"
        "<th>this project (mean ± sd over models)</th><th>verdict</th></tr>",
        rows, "</table>",
        "<h2>1. Training</h2>", _img("training", figures["training"], cap["training"]),
        f"<p>{cap['training']}</p>",
        "<h2>Activations</h2>", _img("activations", figures["activations"], cap["activations"]),
        f"<p>{cap['activations']}</p>",
        "<h2>2–3. Cosine fits of the weights</h2>",
        _img("neuron_fit", figures["neuron_fit"], cap["neuron_fit"]),
        f"<p>{cap['neuron_fit']}</p>",
        _img("fit_scatter", figures["fit_scatter"], cap["fit_scatter"]),
        f"<p>{cap['fit_scatter']}</p>",
        "<h2>4. Replacing neurons by their cosine fits</h2>",
        _img("replacement", figures["replacement"], cap["replacement"]),
        _replacement_note(agg),
        "<h2>5. Random cosine models</h2>",
        _img("synthetic", figures["synthetic"], cap["synthetic"]),
        "<h2>6. Frequencies</h2>",
        _img("frequencies", figures["frequencies"], cap["frequencies"]),
        "<h2>Interactive views (circuitsvis)</h2>",
        f"<p>First model ({esc(labels[0])}). Hover the cells for values.</p>",
        bundle_script(),
    ]
    for i, v in enumerate(views):
        parts.append(f"<h3>{esc(v.title)}</h3>")
        parts.append(v.fragment(f"cv-{i}"))
    parts += [
        "<h2>Reproduce</h2>",
        "<p><code>hooked-mlp report</code> (shipped models) · <code>hooked-mlp report --seeds "
        "0-4</code> (train first) · <code>hooked-mlp report --model PATH</code> (your own).</p>",
        STATUS_SCRIPT, "</body></html>",
    ]
    return "\n".join(parts)


def run_report(
    out_dir: str | Path = "report",
    model_paths: Sequence[str | Path] | None = None,
    seeds: Sequence[int] | None = None,
    epochs: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    synthetic_seeds: Sequence[int] = range(5),
    n_orders_scale: float = 1.0,
) -> ReportResult:
    """Analyse the models, write `report.html`, `summary.json` and `figures/*.png` to `out_dir`."""
    from hooked_mlp.training import torch_threads

    start = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir must be a folder, but {out} is a file")
    models, labels, source = _load_models(model_paths, seeds, epochs, threads, progress, out)
    moduli = sorted({m.cfg.p for m in models})
    if len(moduli) > 1:
        raise ValueError(f"the models of one report must share p; got p = {moduli}")
    with torch_threads(threads or 2):
        per = [analyse_model(m, n_orders_scale) for m in models]
        synth = synthetic_curve(seeds=synthetic_seeds)
        agg = _aggregate(per, synth)
        claims = _claims(agg)
        m0, f0 = models[0], per[0]["fits"]
        show = _display_neurons(f0)
        grids = activation_grids(m0, show)
        figures = {
            "training": figure_png(plot_training_curves(
                [m.train_info.history for m in models if m.train_info is not None],
                [lab for m, lab in zip(models, labels, strict=True) if m.train_info is not None],
            )) if any(m.train_info is not None for m in models) else None,
            "activations": figure_png(plot_activation_grids(
                grids, [int(f0.a.k[f0.neurons.index(n)]) for n in show])),
            "neuron_fit": figure_png(plot_neuron_fit(m0, f0, _representative_neuron(f0))),
            "fit_scatter": figure_png(plot_fit_scatter([m["fits"] for m in per], labels)),
            "replacement": figure_png(plot_replacement(
                {label: [m["curves"][label] for m in per] for label in
                 (MAIN_VARIANT, HARMONIC_VARIANT, "inputs only replaced",
                  "outputs only replaced")})),
            "synthetic": figure_png(plot_synthetic(synth)),
            "frequencies": figure_png(plot_frequency_histogram([m["hist"] for m in per],
                                                               labels)),
        }
        if figures["training"] is None:
            figures["training"] = figure_png(plot_training_curves([], []))
        views = [neuron_grid_view(m0, n, grids) for n in show[:3]]
        views.append(top_inputs_view(m0, show, k=10, grids=grids))
    seconds = time.perf_counter() - start
    summary = to_jsonable({
        "source": source, "models": labels, "seconds": seconds,
        "claims": claims, "aggregate": agg,
        "per_model": [{
            "label": lab, "accuracy_all": m["accuracy_all"], "train_acc": m["train_acc"],
            "val_acc": m["val_acc"], "fits": m["fit_summary"], "frequencies": m["hist"].to_dict(),
            "output_harmonics": m["harmonics"],
            "replacement": {k: c.to_dict() for k, c in m["curves"].items()},
        } for lab, m in zip(labels, per, strict=True)],
        "synthetic": synth.to_dict(),
    })
    import json

    page = render_html(agg, claims, figures, views, source, labels, seconds)
    for name, png in figures.items():
        atomic_write_bytes(out / "figures" / f"{name}.png", png)
    summary_path, html_path = out / "summary.json", out / "report.html"
    atomic_write_text(summary_path, json.dumps(summary, indent=2, allow_nan=False))
    atomic_write_text(html_path, page)
    return ReportResult(html_path, summary_path, seconds, summary)


__all__ = ["ReplacementCurve", "ReportResult", "analyse_model", "render_html", "run_report"]
