"""The reproduction report: every claim of the study beside this project's measurement.

`run_report` loads or trains a set of models of one configuration (the shipped seeds by default,
checkpoints, or seeds it trains), measures the study's claims on them
(`analyses.experiments.study`), and
writes `report.html` (figures embedded, circuitsvis views inline: it opens with no network),
`summary.json` (every number) and the figures as PNG files. The folder is replaced as a whole:
a reader sees the previous report or the new one, never a mix, and a failure (a full disk)
leaves the previous report as it was.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from analyses._common import phase_sign, to_jsonable
from analyses.activations import activation_grids
from analyses.cosine_fit import NeuronFits
from analyses.experiments.study import (
    HARMONIC_VARIANT,
    MAIN_VARIANT,
    STUDY_VARIANT,
    StudyResult,
    study,
)
from analyses.pages.dynamics import how_it_formed_html
from analyses.pages.forms import forms_section
from analyses.pages.writer import PageKind, page_folder
from analyses.probes import PROBE_TIME_LIMIT, ProbeRuns, run_probes
from analyses.views import (
    bundle_script,
    figure_png,
    img_html,
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
from hooked_mlp.config import describe
from hooked_mlp.files import layout
from hooked_mlp.text import one_line

REPORT = PageKind("report", files=("report.html", "summary.json"),
                  folders={"figures": "*.png", "models": layout.MODEL_GLOB},
                  marker=("summary.json", ("claims", "source")))


def earlier_report(folder: Path) -> str | None:
    """None when `folder` holds an earlier report and nothing else (`report.html`, a
    `summary.json` this module wrote, `figures/*.png`, `models/seed-*.safetensors`), else the
    first thing in it that is not part of one: a report replaces nothing but a report (the
    rule of `analyses.pages.writer`, kind `REPORT`)."""
    return REPORT.stranger(folder)


@dataclass
class ReportResult:
    html: Path
    summary: Path
    seconds: float
    data: dict[str, Any]


def _load_models(model_paths, seeds, epochs, threads, progress):
    from hooked_mlp import TrainConfig, load, load_pretrained, pretrained_seeds, train_many

    if model_paths:
        models = [load(p) for p in model_paths]
        labels = [Path(p).stem for p in model_paths]
        source = "checkpoints: " + ", ".join(str(p) for p in model_paths)
    elif seeds is not None:
        tcfg = TrainConfig() if epochs is None else TrainConfig(epochs=epochs)
        runs = train_many(None, tcfg, seeds, threads=threads, progress=progress)
        models = [m for m, _ in runs]
        labels = [f"seed {s}" for s in seeds]
        source = f"trained for this report: seeds {list(seeds)}, {tcfg.epochs} epochs"
    else:
        shipped = pretrained_seeds()
        models = [load_pretrained(s) for s in shipped]
        labels = [f"seed {s}" for s in shipped]
        source = f"the shipped models (seeds {shipped})"
    return models, labels, source


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
.differs{color:#cf222e;font-weight:600} .na{color:#666;font-style:italic}
.no{color:#666;font-style:italic}
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


def _replacement_note(agg: dict[str, Any], cfg: Any) -> str:
    """What the replacement variants show, in words chosen by the numbers."""
    if "replacement_at_90_by_variant" not in agg:
        return ""
    v = {label: s["mean"] for label, s in agg["replacement_at_90_by_variant"].items()}
    oh = agg["output_harmonics"]
    r2_in, r2_out = agg["fits"]["r2_a_median"]["mean"], agg["fits"]["r2_out_median"]["mean"]
    rel = ("2φ" if cfg.tied_inputs else "φ_a + φ_b") if phase_sign(cfg) == 1 else "φ_a − φ_b"

    def pct(label: str) -> str:
        return f"{100 * v[label]:.1f} %"

    def quality(r2: float) -> str:
        return ("almost pure cosines" if r2 >= 0.9 else "mostly cosines" if r2 >= 0.7
                else "far from single cosines")

    harmonic = v[HARMONIC_VARIANT] - v[MAIN_VARIANT]
    verb = "raises" if harmonic > 0.005 else "lowers" if harmonic < -0.005 else "leaves"
    prep = "at" if verb == "leaves" else "to"
    best, worst = v["cosine fits, best-fitting neurons first"], v[
        "cosine fits, worst-fitting neurons first"]
    order = ("matters little" if abs(best - worst) < 0.05 else
             "matters: replacing the best-fitting neurons first keeps more" if best > worst else
             "matters: replacing the worst-fitting neurons first keeps more")
    return (
        "<p class='note'>Where the damage comes from, measured at 90 % of neurons replaced "
        f"(mean over models): replacing only the <b>inputs</b> gives "
        f"{pct('inputs only replaced')}, only the <b>outputs</b> "
        f"{pct('outputs only replaced')}, both {pct(MAIN_VARIANT)}. The input weights are "
        f"{quality(r2_in)} (median R² {r2_in:.3f}), the output weights {quality(r2_out)} "
        f"(median R² {r2_out:.3f}); a median {100 * oh['share_2k_median']['mean']:.1f} % of the "
        f"output weights' variance sits at the second harmonic 2k, whose phase is a median "
        f"{oh['phase_2k_vs_2phi_plus_pi_abs_median']['mean']:.2f} rad from 2({rel}) + π. "
        f"Fitting the outputs with k and 2k {verb} the accuracy {prep} "
        f"{pct(HARMONIC_VARIANT)}. The study's own form (a and b sharing k, s, o; output "
        f"phase forced to {rel}) gives "
        f"{pct(STUDY_VARIANT)}; the order {order} (best-fitting first "
        f"{pct('cosine fits, best-fitting neurons first')}, worst-fitting first "
        f"{pct('cosine fits, worst-fitting neurons first')}).</p>")


CAPTIONS = {
    "training": "Training curves of every model (log-x; loss log-y).",
    "activations": "Activation of a few first-layer neurons over every (a, b).",
    "neuron_fit": "A typical neuron's weights (the median input fit quality) with their "
                  "cosine fits and formulas.",
    "fit_scatter": "Fitted parameters of every neuron: a against b (top) and the output "
                   "against the inputs (bottom); dotted: where the study predicts equality.",
    "replacement": "Accuracy as neurons are replaced by their fits (band: spread over "
                   "models and random orders).",
    "synthetic": "Random cosine models with no training.",
    "frequencies": "Which frequencies the first layer's neurons use.",
}


def _probe_sections(probes: ProbeRuns, pngs: dict[str, dict[str, bytes]]) -> list[str]:
    """One section per registered probe: each model's summary (or why it does not apply), the
    first model's numbers, and its figures."""
    esc = html.escape
    parts = ["<h2>Probes</h2>",
             "<p>Every probe installed in this environment (entry points "
             "<code>hooked_mlp.probes</code>; see <code>hooked-mlp probe --list</code>), run on "
             "each model. Their numbers are in <code>summary.json</code> under "
             "<code>probes</code>.</p>"]
    for name, probe in probes.probes.items():
        parts.append(f"<h3 class='probe' id='probe-{esc(name)}'>{esc(name)}: {esc(probe.title)}"
                     f" <span class='meta'>(from {esc(probe.source)})</span></h3>")
        rows = []
        for row in probes.per_model[name]:
            text = (f"{row['failure']}: {row['error']}" if "error" in row
                    else row["summary"] or "(no summary)")
            if "changed_model" in row:
                text += (f" [this probe changed its model ({'; '.join(row['changed_model'])}): "
                         "it ran on its own copy, so nothing else in this report saw the "
                         "change]")
            rows.append(f"<tr><td>{esc(row['model'])}</td><td>{esc(text)}</td></tr>")
        parts.append("<table class='claims'><tr><th>model</th><th>result</th></tr>"
                     + "".join(rows) + "</table>")
        first = probes.per_model[name][0]
        if "data" in first:
            dump = json.dumps(first["data"], indent=1, allow_nan=False)
            parts.append(f"<details><summary>numbers ({esc(first['model'])})</summary><pre>"
                         f"{esc(dump[:20000])}</pre></details>")
        for fig_name, png in pngs.get(name, {}).items():
            parts.append(img_html(png, f"{name}: {fig_name}", f"probe-{name}-{fig_name}"))
    return parts


def render_html(result: StudyResult | None, figures: dict[str, bytes | None], views: list[Any],
                source: str, seconds: float, probe_parts: list[str] | None = None,
                labels: list[str] | None = None, config: str = "") -> str:
    """The report page (figures as data URIs, the circuitsvis bundle inlined once). A figure
    that is None is replaced by the reason its claim does not apply; without a study result
    (it could not be computed) the page holds the other sections."""
    if result is None:
        return _page_without_study(source, seconds, probe_parts or [], labels or [], config)
    esc = html.escape
    agg, labels = result.aggregate, result.labels
    rows = "\n".join(
        f"<tr><td>{esc(c['claim'])}</td><td>{esc(c['study'])}</td><td>{esc(c['measured'])}</td>"
        f"<td class='{c['verdict'].replace('/', '')}'>{c['verdict']}</td></tr>"
        for c in result.claims)
    why = {"neuron_fit": result.applies["outputs"] or result.applies["inputs"],
           "fit_scatter": result.applies["outputs"] or result.applies["inputs"],
           "replacement": result.applies["replacement"],
           "synthetic": result.applies["synthetic"],
           "frequencies": result.applies["frequencies"]}

    def figure(name: str) -> str:
        png = figures.get(name)
        if png is None:
            reason = why.get(name) or "no figure for these models"
            return f"<p class='note'>{esc(reason[:1].upper() + reason[1:])}.</p>"
        return f"{img_html(png, CAPTIONS[name], name)}\n<p>{CAPTIONS[name]}</p>"

    parts = [
        *_head(source, len(labels), describe(result.cfg), seconds),
        "<h2>Claims and measurements</h2>",
        "<table class='claims'><tr><th>claim of the study</th><th>study</th>"
        "<th>this project (mean ± sd over models)</th><th>verdict</th></tr>",
        rows, "</table>",
        "<h2>1. Training</h2>", figure("training"),
        "<h2>Activations</h2>", figure("activations"),
        "<h2>2–3. Cosine fits of the weights</h2>", figure("neuron_fit"),
        figure("fit_scatter") if figures.get("neuron_fit") is not None else "",
        "<h2>4. Replacing neurons by their cosine fits</h2>", figure("replacement"),
        _replacement_note(agg, result.cfg),
        "<h2>5. Random cosine models</h2>", figure("synthetic"),
        "<h2>6. Frequencies</h2>", figure("frequencies"),
        "<h2>Interactive views (circuitsvis)</h2>",
        f"<p>First model ({esc(labels[0])}). Hover the cells for values.</p>",
        bundle_script(),
    ]
    for i, v in enumerate(views):
        parts.append(f"<h3>{esc(v.title)}</h3>")
        parts.append(v.fragment(f"cv-{i}"))
    parts += probe_parts or []
    parts += _tail()
    return "\n".join(parts)


def _head(source: str, n_models: int, config: str, seconds: float) -> list[str]:
    from hooked_mlp import __version__

    esc = html.escape
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        '<meta name="generator" content="hooked-mlp report page">',
        "<title>hooked-mlp: Interpreting Modular Addition in MLPs, reproduced</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Interpreting Modular Addition in MLPs — reproduced</h1>",
        f"<p class='meta'>hooked-mlp {esc(__version__)} · {esc(now)} · models: {esc(source)} "
        f"({n_models}) · {esc(config)} · computed in {seconds:.1f} s · every "
        "number below is in <code>summary.json</code></p>"]


def _page_without_study(source: str, seconds: float, parts: list[str], labels: list[str],
                        config: str) -> str:
    return "\n".join([*_head(source, len(labels), config, seconds), *parts, *_tail()])


def _tail() -> list[str]:
    return [
        "<h2>Reproduce</h2>",
        "<p><code>hooked-mlp report</code> (shipped models) · <code>hooked-mlp report --seeds "
        "0-4</code> (train first) · <code>hooked-mlp report --model PATH</code> (your own).</p>",
        STATUS_SCRIPT, "</body></html>"]


def _figures(models: list[Any], result: StudyResult, show: list[int], ks: list[int] | None
             ) -> dict[str, bytes | None]:
    """The report's figures (None where the claim does not apply)."""
    per, labels = result.per_model, result.labels
    m0, f0 = models[0], per[0].fits
    trained = [(m.train_info.history, lab) for m, lab in zip(models, labels, strict=True)
               if m.train_info is not None]
    grids = activation_grids(m0, show)
    figures: dict[str, bytes | None] = {
        "training": figure_png(plot_training_curves([h for h, _ in trained],
                                                    [lab for _, lab in trained])),
        "activations": figure_png(plot_activation_grids(grids, ks)),
        "neuron_fit": None, "fit_scatter": None, "replacement": None, "synthetic": None,
        "frequencies": None,
    }
    if f0 is not None and result.applies["inputs" if result.cfg.tied_inputs else "outputs"] \
            is None:
        figures["neuron_fit"] = figure_png(plot_neuron_fit(m0, f0, _representative_neuron(f0)))
        figures["fit_scatter"] = figure_png(plot_fit_scatter([m.fits for m in per], labels))
    if per[0].curves:
        figures["replacement"] = figure_png(plot_replacement(
            {label: [m.curves[label] for m in per] for label in
             (MAIN_VARIANT, HARMONIC_VARIANT, "inputs only replaced", "outputs only replaced")}))
    if result.synthetic is not None:
        figures["synthetic"] = figure_png(plot_synthetic(result.synthetic))
    if result.applies["frequencies"] is None:
        figures["frequencies"] = figure_png(plot_frequency_histogram([m.hist for m in per],
                                                                     labels))
    return figures


def _show_neurons(model: Any, fits: NeuronFits | None, n: int = 8
                  ) -> tuple[list[int], list[int] | None]:
    """Neurons to draw (live, distinct low frequencies) and their input frequencies."""
    from analyses.cosine_fit import fit_cosines

    if model.cfg.p < 3:  # no frequency to fit: the first neurons
        return list(range(min(n, model.cfg.d_hidden))), None
    if fits is None:  # a deeper model: the first layer's input fits
        fa = fit_cosines(model.W_a.detach().t().cpu())
        fits_k, neurons = fa.k, list(range(model.cfg.d_hidden))
        alive = fa.r2.isfinite()
    else:
        fits_k, neurons = fits.a.k, fits.neurons
        alive = ~fits.dead if fits.dead.numel() else torch.ones(len(neurons), dtype=torch.bool)
    chosen, seen = [], set()
    for i in torch.argsort(fits_k, stable=True).tolist():
        k = int(fits_k[i])
        if alive[i] and k not in seen:
            chosen.append((neurons[i], k))
            seen.add(k)
        if len(chosen) == n:
            break
    if not chosen:
        chosen = [(neurons[i], int(fits_k[i])) for i in range(min(n, len(neurons)))]
    chosen.sort()
    return [c[0] for c in chosen], [c[1] for c in chosen]


def run_report(
    out_dir: str | Path = "report",
    model_paths: Sequence[str | Path] | None = None,
    seeds: Sequence[int] | None = None,
    epochs: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    synthetic_seeds: Sequence[int] = range(5),
    n_orders_scale: float = 1.0,
    probe_time_limit: float | None = PROBE_TIME_LIMIT,
) -> ReportResult:
    """Analyse the models, write `report.html`, `summary.json` and `figures/*.png` to `out_dir`
    (and `models/` when it trains them), replacing an earlier report there as a whole
    (`analyses.pages.writer`, kind `REPORT`). A section that raises (an overflow, a probe) is
    left out, named with its error on the page and under `sections_failed`; the report is
    still written. `probe_time_limit`: seconds each probe may take on one model
    (`analyses.probes`)."""
    from hooked_mlp.files.checkpoints import save
    from hooked_mlp.training.trainer import torch_threads

    start = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir must be a folder, but {out} is a file")
    with page_folder(out, REPORT, inputs=model_paths or ()) as page:
        models, labels, source = _load_models(model_paths, seeds, epochs, threads, progress)
        from analyses._common import check_all_pairs_memory, check_one_hot

        for m in models:  # what no section could compute is refused whole, before any runs:
            # a dense input layer (the study reads weights by residue), a model whose pairs
            # do not fit in this machine's memory
            check_one_hot(m, "report")
            check_all_pairs_memory(m.cfg, 3 * max(m.cfg.d_hidden, m.cfg.p), "report")
        if seeds is not None:
            for s, m in zip(seeds, models, strict=True):
                save(m, page.path(f"models/{layout.model_file(Path(), s).name}"))
        failed: dict[str, str] = {}  # section -> why it could not be computed
        with torch_threads(threads or 2):
            result = _section("study", failed, study, models, labels, synthetic_seeds,
                              n_orders_scale)
            figures: dict[str, bytes | None] = {}
            views: list[Any] = []
            if result is not None:
                figures = _section("figures", failed, _study_figures, models, result) or {}
                views = _section("views", failed, _views, models[0], result) or []
            probes = run_probes(models, labels, probe_time_limit)
            probe_pngs = {name: _section(f"probe {name}: figures", failed, _pngs, figs) or {}
                          for name, figs in probes.figures.items()}
            forms = _section("neuron_forms", failed, forms_section,  # "What each neuron computes"
                             models, labels, n_orders=max(1, round(3 * n_orders_scale)))
            formed = _section("how_it_formed", failed, _how_it_formed, models, model_paths,
                              shipped=not model_paths and seeds is None)
        forms_html, forms_data = forms if forms is not None else ("", None)
        seconds = time.perf_counter() - start
        study_dict = result.to_dict() if result is not None else {"claims": []}
        summary = to_jsonable({"source": source, "seconds": seconds} | study_dict
                              | {"probes": probes.to_dict(), "neuron_forms": forms_data,
                                 "sections_failed": failed})
        html_page = render_html(result, figures, views, source, seconds,
                                [*_failed_notes(failed), forms_html,
                                 *_probe_sections(probes, probe_pngs), *(formed or [])],
                                labels=labels, config=describe(models[0].cfg))
        for name, png in figures.items():
            if png is not None:
                page.write(f"figures/{name}.png", png)
        page.write("summary.json", json.dumps(summary, indent=2, allow_nan=False))
        page.write("report.html", html_page)
    return ReportResult(out / "report.html", out / "summary.json", seconds, summary)


def _section(key: str, failed: dict[str, str], compute: Any, *args: Any, **kwargs: Any) -> Any:
    """`compute(*args, **kwargs)`, or None with why in `failed[key]` when it raises: a report
    is never lost to one section (an overflow, a model a section cannot read)."""
    try:
        return compute(*args, **kwargs)
    except Exception as e:
        from hooked_mlp.checks import LogitsOverflowError

        what = "overflow" if isinstance(e, LogitsOverflowError) else type(e).__name__
        failed[key] = f"{what}: {one_line(str(e))}"
        return None


def _study_figures(models: list[Any], result: StudyResult) -> dict[str, bytes | None]:
    show, ks = _show_neurons(models[0], result.per_model[0].fits)
    return _figures(models, result, show, ks)


def _views(model: Any, result: StudyResult) -> list[Any]:
    show, _ = _show_neurons(model, result.per_model[0].fits)
    grids = activation_grids(model, show)
    views = [neuron_grid_view(model, n, grids) for n in show[:3]]
    views.append(top_inputs_view(model, show, k=10, grids=grids))
    return views


def _pngs(figs: dict[str, Any]) -> dict[str, bytes]:
    return {k: figure_png(fig) for k, fig in figs.items()}


def _how_it_formed(models: list[Any], model_paths: Sequence[Any] | None, shipped: bool
                   ) -> list[str]:
    """"How it formed" for the first model that has snapshots, only when they are its own
    (`hooked_mlp.files.series.series_matches`: the same config and recipe, the series ending at
    the model's weights); else a note saying which snapshots were left out and why."""
    from analyses.pages.dynamics import _series_for
    from hooked_mlp.files.series import series_matches

    paths = list(model_paths) if model_paths else [None] * len(models)
    for model, path in zip(models, paths, strict=True):
        found = _series_for(model, path, shipped)
        if found is None:
            continue
        series, what = found
        why = series_matches(series, model)
        if why is not None:
            return ["<h2>How it formed</h2>",
                    f"<p class='note'>Left out: {html.escape(what)} were found, but "
                    f"{html.escape(why)}, so they are not this model's history.</p>"]
        return how_it_formed_html([model], [path] if path is not None else None,
                                  shipped=shipped)
    return []


SECTION_TITLES = {"study": "the study's claims", "figures": "the study's figures",
                  "views": "the interactive views", "neuron_forms": "What each neuron computes",
                  "how_it_formed": "How it formed"}


def _failed_notes(failed: dict[str, str]) -> list[str]:
    """One note per section that could not be computed, naming it and the error."""
    if not failed:
        return []
    esc = html.escape
    items = "".join(f"<li><b>{esc(SECTION_TITLES.get(k, k))}</b>: {esc(why)}</li>"
                    for k, why in failed.items())
    return ["<h2>Sections left out</h2>",
            "<p class='note'>These parts could not be computed on these models; the rest of "
            f"the report is unaffected (also in <code>summary.json</code> under "
            f"<code>sections_failed</code>):</p><ul>{items}</ul>"]


__all__ = ["ReportResult", "render_html", "run_report"]
