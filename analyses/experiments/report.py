"""The reproduction report as an experiment: a table of sections, each computed on one context.

    from analyses.experiments.report import ReportContext, SECTIONS, load_models, run_report
    models, labels, source = load_models()                 # the shipped seeds
    result = run_report(ReportContext(models, labels, source, shipped=True))
    print(result.describe()); result.to_dict()             # what summary.json holds
    result["frequency_ablation"]                           # one section's result object

A `Section` names a part of the report (`name`: its key in `summary.json` and in
`sections_failed`), its title, and the function that computes it from a `ReportContext` (the
models, their labels, the options, and the results of the sections before it). `SECTIONS`
lists them in the order they run. A section's result has `to_dict()` (its numbers, written to
`summary.json` under its name, or at the top level for the study) and, where it draws, a
`figures()` that `run_report` turns into PNG bytes. A section that raises costs only its own
row: it is left out and named under `sections_failed` with its error (`"overflow: ..."` for
a `LogitsOverflowError`, else `"<Type>: message"`), and a section that needs its result is
skipped. Nothing here writes a file or HTML: `analyses.pages.report` shows the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from analyses.activations import activation_grids
from analyses.cosine_fit import NeuronFits
from analyses.experiments.ablation import frequency_ablation_section
from analyses.experiments.dictionaries import check_dictionary_options, dictionaries_section
from analyses.experiments.formation import how_it_formed
from analyses.experiments.forms import neuron_forms_section
from analyses.experiments.he2026 import he2026_section
from analyses.experiments.study import HARMONIC_VARIANT, MAIN_VARIANT, StudyResult, study
from analyses.probes import PROBE_TIME_LIMIT, result_text, run_probes
from hooked_mlp.text import one_line


# --------------------------------------------------------------------------- the context
@dataclass
class ReportContext:
    """What every section reads: the models (one configuration), their labels, where they came
    from (`source`, in words; `model_paths` when they are checkpoints; `shipped` when they are
    the shipped seeds), the options (`dictionary_options`: the dictionaries section's budget,
    keywords of `analyses.experiments.dictionaries.dictionaries` such as `steps` and `sizes`),
    and `results` (name -> result of each section that ran before, filled in by
    `run_report`)."""

    models: list[Any]
    labels: list[str]
    source: str = ""
    model_paths: list[Path] | None = None
    shipped: bool = False
    synthetic_seeds: Sequence[int] = range(5)
    n_orders_scale: float = 1.0
    probe_time_limit: float | None = PROBE_TIME_LIMIT
    dictionary_options: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("models must hold at least one model")
        if len(self.labels) != len(self.models):
            raise ValueError(f"labels must name each of the {len(self.models)} models, got "
                             f"{len(self.labels)}")
        check_dictionary_options(self.dictionary_options)


def load_models(model_paths: Sequence[str | Path] | None = None,
                seeds: Sequence[int] | None = None, epochs: int | None = None,
                threads: int | None = None, progress: bool = True
                ) -> tuple[list[Any], list[str], str]:
    """The report's models, their labels and their source in words: the checkpoints
    `model_paths`, or `seeds` trained with the seed recipe (`epochs` to shorten it), or the
    shipped seeds."""
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


def check_models(models: Sequence[Any]) -> None:
    """Refuse, before any section runs, what no section could compute: a dense input layer (the
    study reads weights by residue), a model whose pairs do not fit in this machine's memory."""
    from analyses._common import check_all_pairs_memory, check_one_hot

    for m in models:
        check_one_hot(m, "report")
        check_all_pairs_memory(m.cfg, 3 * max(m.cfg.d_hidden, m.cfg.p), "report")


# --------------------------------------------------------------------------- the study's parts
def _representative_neuron(fits: NeuronFits) -> int:
    """The neuron whose input fit quality is the median one (a typical neuron, not the best)."""
    q = (fits.a.r2 + fits.b.r2) / 2
    order = torch.argsort(q)
    return fits.neurons[int(order[len(order) // 2])]


def show_neurons(model: Any, fits: NeuronFits | None, n: int = 8
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


STUDY_FIGURES = ("training", "activations", "neuron_fit", "fit_scatter", "replacement",
                 "synthetic", "frequencies")


@dataclass
class StudyFigures:
    """The study's figures as PNG bytes (`STUDY_FIGURES`; None where the claim does not apply,
    `why_missing` then says why)."""

    pngs: dict[str, bytes | None]
    why_missing: dict[str, str]

    def summary(self) -> dict[str, Any]:
        """Which figures were drawn, and why each other one is missing."""
        return self.to_dict()

    def describe(self) -> str:
        drawn = self.to_dict()["drawn"]
        return f"{len(drawn)} of the study's figures drawn: {', '.join(drawn)}"

    def to_dict(self) -> dict[str, Any]:
        return {"drawn": [k for k, v in self.pngs.items() if v is not None],
                "why_missing": self.why_missing}


def study_figures(models: list[Any], result: StudyResult) -> StudyFigures:
    """The study's figures of `result` (measured on `models`)."""
    from analyses.views import (
        figure_png,
        plot_activation_grids,
        plot_fit_scatter,
        plot_frequency_histogram,
        plot_neuron_fit,
        plot_replacement,
        plot_synthetic,
        plot_training_curves,
    )

    per, labels = result.per_model, result.labels
    m0, f0 = models[0], per[0].fits
    show, ks = show_neurons(m0, f0)
    trained = [(m.train_info.history, lab) for m, lab in zip(models, labels, strict=True)
               if m.train_info is not None]
    pngs: dict[str, bytes | None] = dict.fromkeys(STUDY_FIGURES)
    pngs["training"] = figure_png(plot_training_curves([h for h, _ in trained],
                                                       [lab for _, lab in trained]))
    pngs["activations"] = figure_png(plot_activation_grids(activation_grids(m0, show), ks))
    if f0 is not None and result.applies["inputs" if result.cfg.tied_inputs else "outputs"] \
            is None:
        pngs["neuron_fit"] = figure_png(plot_neuron_fit(m0, f0, _representative_neuron(f0)))
        pngs["fit_scatter"] = figure_png(plot_fit_scatter([m.fits for m in per], labels))
    if per[0].curves:
        pngs["replacement"] = figure_png(plot_replacement(
            {label: [m.curves[label] for m in per] for label in
             (MAIN_VARIANT, HARMONIC_VARIANT, "inputs only replaced", "outputs only replaced")}))
    if result.synthetic is not None:
        pngs["synthetic"] = figure_png(plot_synthetic(result.synthetic))
    if result.applies["frequencies"] is None:
        pngs["frequencies"] = figure_png(plot_frequency_histogram([m.hist for m in per], labels))
    fits_why = result.applies["outputs"] or result.applies["inputs"]
    why = {"neuron_fit": fits_why, "fit_scatter": fits_why,
           "replacement": result.applies["replacement"], "synthetic": result.applies["synthetic"],
           "frequencies": result.applies["frequencies"]}
    missing = {k: why.get(k) or "no figure for these models" for k, v in pngs.items() if v is None}
    return StudyFigures(pngs, missing)


@dataclass
class Views:
    """The circuitsvis views of the first model (`analyses.views.CircuitsVisView`)."""

    label: str
    views: list[Any]

    def summary(self) -> dict[str, Any]:
        """The model and the views' titles."""
        return self.to_dict()

    def describe(self) -> str:
        return f"{len(self.views)} interactive views of {self.label}"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.label, "views": [v.title for v in self.views]}


def study_views(model: Any, label: str, result: StudyResult) -> Views:
    """Three neurons' activation grids and the top inputs of the neurons the figures show."""
    from analyses.views import neuron_grid_view, top_inputs_view

    show, _ = show_neurons(model, result.per_model[0].fits)
    grids = activation_grids(model, show)
    views = [neuron_grid_view(model, n, grids) for n in show[:3]]
    views.append(top_inputs_view(model, show, k=10, grids=grids))
    return Views(label, views)


# --------------------------------------------------------------------------- the sections
@dataclass(frozen=True)
class Section:
    """A part of the report: `name` (its key in `summary.json` and `sections_failed`),
    `title` (in words), `compute(ctx) -> result` (None: the section has nothing to show for
    these models), `needs` (sections whose results it reads: it is skipped when one of them is
    missing), `placement` of its `to_dict()` in `summary.json` ("key": under `name`, "top":
    merged at the top level, None: not written), `if_failed` (what `summary.json` holds in
    its place when it could not be computed) and `refusals` (the exceptions by which its
    analyses refuse models they do not apply to, e.g. `ValueError` for p = 2: the section then
    says "does not apply" and why, under `not_applicable`, rather than failing; an overflow is
    always a failure)."""

    name: str
    title: str
    compute: Callable[[ReportContext], Any]
    needs: tuple[str, ...] = ()
    placement: str | None = "key"
    if_failed: Any = None
    refusals: tuple[type[Exception], ...] = ()


def _study(ctx: ReportContext) -> StudyResult:
    return study(ctx.models, ctx.labels, ctx.synthetic_seeds, ctx.n_orders_scale)


def _figures(ctx: ReportContext) -> StudyFigures:
    return study_figures(ctx.models, ctx.results["study"])


def _views(ctx: ReportContext) -> Views:
    return study_views(ctx.models[0], ctx.labels[0], ctx.results["study"])


def _probes(ctx: ReportContext) -> Any:
    return run_probes(ctx.models, ctx.labels, ctx.probe_time_limit)


def _how_it_formed(ctx: ReportContext) -> Any:
    return how_it_formed(ctx.models, ctx.model_paths, shipped=ctx.shipped)


@dataclass
class ExplorerData:
    """The explorer's data for the first model (`analyses.explorer.gather`), for the page
    `explorer.html` that the report writes beside itself."""

    label: str
    data: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """The model, the data's plain entries (kind, p, ...) and the length of each list in
        it (`n_<name>`: the data itself is large)."""
        plain = {k: v for k, v in self.data.items()
                 if v is None or isinstance(v, (bool, int, float, str))}
        sizes = {f"n_{k}": len(v) for k, v in self.data.items() if isinstance(v, (list, dict))}
        return {"model": self.label, **plain, **sizes}

    def describe(self) -> str:
        return f"the explorer's data for {self.label}"

    def to_dict(self) -> dict[str, Any]:
        return self.data


def _explorer(ctx: ReportContext) -> ExplorerData:
    from analyses.explorer import gather

    return ExplorerData(ctx.labels[0], gather(ctx.models[0], ctx.labels[0]))


SECTIONS: tuple[Section, ...] = (
    Section("study", "the study's claims", _study, placement="top", if_failed={"claims": []}),
    Section("figures", "the study's figures", _figures, needs=("study",), placement=None),
    Section("views", "the interactive views", _views, needs=("study",), placement=None),
    Section("neuron_forms", "What each neuron computes", neuron_forms_section),
    Section("frequency_ablation", "Frequency ablation", frequency_ablation_section,
            refusals=(ValueError, TypeError)),
    Section("he2026", "He et al. 2026: activation swap, phase symmetry, frequency subsets, "
            "stages", he2026_section, refusals=(ValueError, TypeError)),
    Section("dictionaries", "Sparse dictionaries on the hidden layer", dictionaries_section,
            refusals=(ValueError, TypeError)),
    Section("how_it_formed", "How it formed", _how_it_formed, placement=None),
    Section("probes", "Probes", _probes, if_failed={}),
    Section("explorer", "Explore the first model", _explorer, placement=None,
            refusals=(ValueError, TypeError)),
)


# --------------------------------------------------------------------------- running them
@dataclass
class SectionRun:
    """One section that ran: its result, its figures as PNG bytes, its seconds."""

    section: Section
    result: Any
    figures: dict[str, bytes] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class ReportResult:
    """Every section of a report: `runs` (name -> `SectionRun`, in the order they ran; a
    section that returned None is absent), `failed` (name -> why it could not be computed),
    `not_applicable` (name -> why it does not apply to these models), `skipped` (sections
    left out because a section they need is missing), `seconds` in all."""

    context: ReportContext
    sections: tuple[Section, ...]
    runs: dict[str, SectionRun]
    failed: dict[str, str]
    not_applicable: dict[str, str]
    skipped: list[str]
    seconds: float

    def __getitem__(self, name: str) -> Any:
        """The result of section `name`, or None when it did not run or failed."""
        run = self.runs.get(name)
        return None if run is None else run.result

    def to_dict(self, seconds: float | None = None) -> dict[str, Any]:
        """What `summary.json` holds: the source and seconds (`seconds`, default the sections'
        own), the study's numbers at the top level, each other section's numbers under its
        name, and `sections_failed`."""
        from analyses._common import to_jsonable

        doc: dict[str, Any] = {"source": self.context.source,
                               "seconds": self.seconds if seconds is None else seconds}
        for s in self.sections:
            if s.placement is None:
                continue
            run = self.runs.get(s.name)
            value = (run.result.to_dict() if run is not None else
                     {"not_applicable": self.not_applicable[s.name]}
                     if s.name in self.not_applicable else s.if_failed)
            if s.placement == "top":
                doc |= value
            else:
                doc[s.name] = value
        doc["sections_failed"] = dict(self.failed)
        return to_jsonable(doc)

    def summary(self) -> dict[str, Any]:
        """Which sections ran, which do not apply, failed or were skipped, and the seconds."""
        return {"sections_ran": list(self.runs), "not_applicable": dict(self.not_applicable),
                "sections_failed": dict(self.failed), "skipped": list(self.skipped),
                "seconds": self.seconds}

    def describe(self) -> str:
        """One paragraph per section that ran, and one line per section left out."""
        parts = []
        for run in self.runs.values():
            text = result_text(run.result)
            parts.append(f"{run.section.title}:\n{text}" if text else run.section.title)
        parts += [f"does not apply: {name}: {why}" for name, why in self.not_applicable.items()]
        parts += [f"left out: {name}: {why}" for name, why in self.failed.items()]
        return "\n\n".join(parts)


def failure_text(e: BaseException) -> str:
    """Why a section could not be computed, in one line."""
    from hooked_mlp.checks import LogitsOverflowError

    what = "overflow" if isinstance(e, LogitsOverflowError) else type(e).__name__
    return f"{what}: {one_line(str(e))}"


def run_report(ctx: ReportContext, sections: Sequence[Section] = SECTIONS,
               threads: int | None = None) -> ReportResult:
    """Run `sections` in order on `ctx` (torch limited to `threads`, default 2). A section that
    raises, or whose figures fail to draw, is recorded in `failed` and costs nothing else;
    probes' figures are drawn per probe (`"probe NAME: figures"`)."""
    from analyses.figures import figure_pngs
    from hooked_mlp.training.trainer import torch_threads

    start = time.perf_counter()
    names = [s.name for s in sections]
    if len(set(names)) != len(names):
        raise ValueError(f"sections must have distinct names, got {names}")
    runs: dict[str, SectionRun] = {}
    failed: dict[str, str] = {}
    refused: dict[str, str] = {}
    skipped: list[str] = []
    with torch_threads(threads or 2):
        for s in sections:
            if any(n not in ctx.results for n in s.needs):
                skipped.append(s.name)
                continue
            t = time.perf_counter()
            try:
                result = s.compute(ctx)
            except Exception as e:
                from hooked_mlp.checks import LogitsOverflowError

                if isinstance(e, s.refusals) and not isinstance(e, LogitsOverflowError):
                    refused[s.name] = one_line(str(e))
                else:
                    failed[s.name] = failure_text(e)
                continue
            if result is None:
                continue
            ctx.results[s.name] = result
            run = SectionRun(s, result)
            if s.name == "probes":
                for probe, figs in result.figures.items():
                    try:
                        run.figures |= {f"{probe}/{k}": v for k, v in figure_pngs(figs).items()}
                    except Exception as e:
                        failed[f"probe {probe}: figures"] = failure_text(e)
            elif callable(getattr(result, "figures", None)):
                try:
                    run.figures = figure_pngs(dict(result.figures()))
                except Exception as e:
                    failed[f"{s.name}: figures"] = failure_text(e)
            run.seconds = time.perf_counter() - t
            runs[s.name] = run
    return ReportResult(ctx, tuple(sections), runs, failed, refused, skipped,
                        time.perf_counter() - start)


__all__ = [
    "SECTIONS",
    "STUDY_FIGURES",
    "ExplorerData",
    "ReportContext",
    "ReportResult",
    "Section",
    "SectionRun",
    "StudyFigures",
    "Views",
    "check_models",
    "failure_text",
    "load_models",
    "run_report",
    "show_neurons",
    "study_figures",
    "study_views",
]
