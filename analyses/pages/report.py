"""The reproduction report page: a view of `analyses.experiments.report`'s result.

`run_report` loads or trains a set of models of one configuration (the shipped seeds by default,
checkpoints, or seeds it trains), runs the report's sections on them
(`analyses.experiments.report.run_report`: the study's claims, its figures and views, what each
neuron computes, frequency ablation, He et al. 2026, how it formed, the probes) and writes
`report.html` (from `templates/report.html.j2` and one template per section under
`templates/sections/`; figures embedded, circuitsvis views inline: it opens with no network),
`summary.json` (every number) and the study's figures as PNG files. The folder is replaced as a
whole through `analyses.pages.writer` (kind `REPORT`): a reader sees the previous report or the
new one, never a mix, and a failure (a full disk) leaves the previous report as it was. This
module formats; it computes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analyses._common import phase_sign
from analyses.experiments.dictionaries import check_dictionary_options
from analyses.experiments.report import (
    SECTIONS,
    ReportContext,
    Section,
    check_models,
    load_models,
)
from analyses.experiments.report import run_report as run_sections
from analyses.experiments.study import HARMONIC_VARIANT, MAIN_VARIANT, STUDY_VARIANT
from analyses.figures import figure_pngs
from analyses.pages.render import markup, now, render
from analyses.pages.writer import PageKind, page_folder
from analyses.probes import PROBE_TIME_LIMIT, check_time_limit
from hooked_mlp.config import describe
from hooked_mlp.files import layout

REPORT = PageKind("report", files=("report.html", "summary.json", "explorer.html"),
                  folders={"figures": "*.png", "models": layout.MODEL_GLOB},
                  marker=("summary.json", ("claims", "source")))


def earlier_report(folder: Path) -> str | None:
    """None when `folder` holds an earlier report and nothing else (`report.html`, a
    `summary.json` this module wrote, `figures/*.png`, `models/seed-*.safetensors`), else the
    first thing in it that is not part of one: a report replaces nothing but a report (the
    rule of `analyses.pages.writer`, kind `REPORT`)."""
    return REPORT.stranger(folder)


@dataclass
class ReportPage:
    """The report's files (`html`, `summary`), its `seconds`, the numbers of `summary.json`
    (`data`) and the sections' results (`result`, an `analyses.experiments.report.ReportResult`)."""

    html: Path
    summary: Path
    seconds: float
    data: dict[str, Any]
    result: Any = None


ReportResult = ReportPage  # the name this class had before the report became an experiment


# --------------------------------------------------------------------------- the sections' views
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


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def replacement_note(agg: dict[str, Any], cfg: Any) -> dict[str, Any] | None:
    """The words and numbers of the note under the replacement figure (what the replacement
    variants show), chosen by the numbers; None when the variants were not measured."""
    if "replacement_at_90_by_variant" not in agg:
        return None
    v = {label: s["mean"] for label, s in agg["replacement_at_90_by_variant"].items()}
    oh = agg["output_harmonics"]
    r2_in, r2_out = agg["fits"]["r2_a_median"]["mean"], agg["fits"]["r2_out_median"]["mean"]

    def quality(r2: float) -> str:
        return ("almost pure cosines" if r2 >= 0.9 else "mostly cosines" if r2 >= 0.7
                else "far from single cosines")

    harmonic = v[HARMONIC_VARIANT] - v[MAIN_VARIANT]
    verb = "raises" if harmonic > 0.005 else "lowers" if harmonic < -0.005 else "leaves"
    best, worst = v["cosine fits, best-fitting neurons first"], v[
        "cosine fits, worst-fitting neurons first"]
    order = ("matters little" if abs(best - worst) < 0.05 else
             "matters: replacing the best-fitting neurons first keeps more" if best > worst else
             "matters: replacing the worst-fitting neurons first keeps more")
    return {
        "inputs": v["inputs only replaced"], "outputs": v["outputs only replaced"],
        "both": v[MAIN_VARIANT], "quality_in": quality(r2_in), "r2_in": r2_in,
        "quality_out": quality(r2_out), "r2_out": r2_out,
        "share_2k": oh["share_2k_median"]["mean"],
        "phase_2k": oh["phase_2k_vs_2phi_plus_pi_abs_median"]["mean"],
        "rel": ("2φ" if cfg.tied_inputs else "φ_a + φ_b") if phase_sign(cfg) == 1
        else "φ_a − φ_b",
        "verb": verb, "prep": "at" if verb == "leaves" else "to",
        "harmonic": v[HARMONIC_VARIANT], "study": v[STUDY_VARIANT], "order": order,
        "best": best, "worst": worst}


def _frame(name: str, title: str) -> dict[str, str]:
    return {"key": name, "anchor": name, "title": title}


def _study_part(report: Any) -> str:
    study, figs = report["study"], report["figures"]
    error = report.failed.get("study")
    if study is None and error is None:
        return ""
    pngs = figs.pngs if figs is not None else {}
    missing = {k: _sentence(why) for k, why in figs.why_missing.items()} if figs else {}
    note = replacement_note(study.aggregate, study.cfg) if study is not None else None
    return render("sections/study.html.j2", result=study, error=error, figures=pngs,
                  missing=missing, captions=CAPTIONS, note=note)


def _views_part(report: Any) -> str:
    from analyses.views import bundle_script

    views = report["views"]
    if views is None:
        return ""
    return render("sections/views.html.j2", label=views.label, bundle=markup(bundle_script()),
                  views=[(v.title, markup(v.fragment(f"cv-{i}")))
                         for i, v in enumerate(views.views)])


def _probe_context(probes: Any, figures: dict[str, bytes]) -> dict[str, Any]:
    rows, first, figs = {}, {}, {}
    for name in probes.probes:
        out = []
        for row in probes.per_model[name]:
            text = (f"{row['failure']}: {row['error']}" if "error" in row
                    else row["summary"] or "(no summary)")
            if "changed_model" in row:
                text += (f" [this probe changed its model ({'; '.join(row['changed_model'])}): "
                         "it ran on its own copy, so nothing else in this report saw the "
                         "change]")
            out.append((row["model"], text))
        rows[name] = out
        top = probes.per_model[name][0]
        if "data" in top:
            first[name] = (top["model"], json.dumps(top["data"], indent=1,
                                                    allow_nan=False)[:20000])
    for key, png in figures.items():
        probe, _, fig_name = key.partition("/")
        figs.setdefault(probe, []).append((fig_name, png))
    return {"rows": rows, "first": first, "figures": figs}


def _formation_figures(formation: Any) -> dict[str, bytes]:
    """The two figures of "How it formed", drawn from its measures
    (`analyses.pages.dynamics.formation_figures`)."""
    from analyses.pages.dynamics import formation_figures

    return figure_pngs(formation_figures(formation))


# what a section's template needs beyond its result and figures
EXTRA_CONTEXT = {
    "probes": lambda run: _probe_context(run.result, run.figures),
    "how_it_formed": lambda run: {"figures": _formation_figures(run.result)},
}

def _section_part(report: Any, s: Section) -> str:
    """A section with a template of its own under `templates/sections/` (framed by
    `section.html.j2`): its result and figures, the error that left it out, or why it does not
    apply to these models."""
    run, error = report.runs.get(s.name), report.failed.get(s.name)
    if s.name in report.not_applicable:
        return render("sections/not_applicable.html.j2", section=_frame(s.name, s.title),
                      why=report.not_applicable[s.name])
    if run is None and error is None:
        return ""
    context: dict[str, Any] = {"section": _frame(s.name, s.title), "error": error,
                               "result": None if run is None else run.result,
                               "figures": {} if run is None else run.figures}
    if run is not None and s.name in EXTRA_CONTEXT:
        context |= EXTRA_CONTEXT[s.name](run)
    return render(f"sections/{s.name}.html.j2", **context)



def _parts(report: Any) -> list[Any]:
    parts: list[str] = []
    for s in report.sections:
        if s.name == "study":
            parts.append(_study_part(report))
        elif s.name == "views":
            parts.append(_views_part(report))
        elif s.name != "figures":
            parts.append(_section_part(report, s))
    return [markup(p) for p in parts if p]


SECTION_TITLES = {"study": "the study's claims", "figures": "the study's figures",
                  "views": "the interactive views"}


def render_report(report: Any, seconds: float, config: str) -> str:
    """The report page of `report` (an `analyses.experiments.report.ReportResult`)."""
    titles = {s.name: s.title for s in report.sections} | SECTION_TITLES
    ctx = report.context
    return render("report.html.j2", kind="report", written=now(), source=ctx.source,
                  n_models=len(ctx.models), config=config, seconds=seconds,
                  failed=[(titles.get(k, k), why) for k, why in report.failed.items()],
                  parts=_parts(report))


def _explorer_page(report: Any) -> str | None:
    """The explorer page (`analyses.pages.explorer`) of the "explorer" section's data, or None
    (the section is then left out, and if the page cannot be made, named under
    `sections_failed` like any section)."""
    from analyses.experiments.report import failure_text
    from analyses.pages.explorer import explorer_html

    run = report.runs.get("explorer")
    if run is None:
        return None
    try:
        return explorer_html(run.result.data, command="hooked-mlp report")
    except Exception as e:
        report.failed["explorer"] = failure_text(e)
        del report.runs["explorer"]
        return None


# --------------------------------------------------------------------------- the job
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
    dictionary_options: dict[str, Any] | None = None,
) -> ReportPage:
    """Analyse the models, write `report.html`, `summary.json` and `figures/*.png` to `out_dir`
    (and `models/` when it trains them), replacing an earlier report there as a whole
    (`analyses.pages.writer`, kind `REPORT`). A section that raises (an overflow, a probe) is
    left out, named with its error on the page and under `sections_failed`; the report is
    still written. `probe_time_limit`: seconds each probe may take on one model
    (`analyses.probes`). `dictionary_options`: the dictionaries section's budget
    (`ReportContext.dictionary_options`; its settings are in the section and in summary.json)."""
    from hooked_mlp.files.checkpoints import save

    start = time.perf_counter()
    probe_time_limit = check_time_limit(probe_time_limit, "probe_time_limit")
    dictionary_options = {} if dictionary_options is None else dictionary_options
    check_dictionary_options(dictionary_options)  # before any model is trained or loaded
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir must be a folder, but {out} is a file")
    with page_folder(out, REPORT, inputs=model_paths or ()) as page:
        models, labels, source = load_models(model_paths, seeds, epochs, threads, progress)
        check_models(models)  # what no section could compute is refused whole, before any runs
        if seeds is not None:
            for s, m in zip(seeds, models, strict=True):
                save(m, page.path(f"models/{layout.model_file(Path(), s).name}"))
        ctx = ReportContext(models, labels, source,
                            [Path(p) for p in model_paths] if model_paths else None,
                            shipped=not model_paths and seeds is None,
                            synthetic_seeds=synthetic_seeds, n_orders_scale=n_orders_scale,
                            probe_time_limit=probe_time_limit,
                            dictionary_options=dictionary_options)
        report = run_sections(ctx, SECTIONS, threads=threads)
        seconds = time.perf_counter() - start
        summary = report.to_dict(seconds=seconds)
        explorer = _explorer_page(report)
        html_page = render_report(report, seconds, describe(models[0].cfg))
        figures = report.runs["figures"].result.pngs if "figures" in report.runs else {}
        for name, png in figures.items():
            if png is not None:
                page.write(f"figures/{name}.png", png)
        if explorer is not None:
            page.write("explorer.html", explorer)
        page.write("summary.json", json.dumps(summary, indent=2, allow_nan=False))
        page.write("report.html", html_page)
    return ReportPage(out / "report.html", out / "summary.json", seconds, summary, report)


__all__ = ["REPORT", "ReportPage", "ReportResult", "earlier_report", "render_report",
           "replacement_note", "run_report"]
