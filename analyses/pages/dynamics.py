"""The training-dynamics page: `hooked-mlp dynamics RUN_OR_FOLDER --out DIR`.

Writes `dynamics.html` (from `templates/dynamics.html.j2`, which extends the one base layout;
self-contained: figures embedded as PNG, no network) and `dynamics.json` (every series of
`analyses.dynamics.dynamics`) into `DIR` through `analyses.pages.writer` (kind `DYNAMICS`): the
folder is replaced as a whole, and only when it holds an earlier dynamics page. The figures:
losses and accuracies against epoch (log-x) with the restricted and excluded losses and the
phase boundaries; weight norm, mean IPR, phase error, single-cosine neurons and frequencies in
use; each neuron's input spectrum over time; the lottery's hit rates against chance.
`how_it_formed_html(formation)` shows the reproduction report's short section, the result of the
`how_it_formed` experiment (`analyses.experiments.formation`, which also holds the measures
cache), from the report's own `templates/sections/how_it_formed.html.j2`. This module draws and
formats; the measures are `analyses.dynamics`'s, and every function here takes them measured.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from analyses._common import to_jsonable
from analyses.dynamics import Dynamics, dynamics
from analyses.experiments.formation import (  # noqa: F401  (moved there; kept importable here)
    CACHE_KIND,
    CACHE_VERSION,
    REPORT_SNAPSHOTS,
    SHIPPED_CACHE,
    Formation,
    _series_for,
    how_it_formed,
    read_measures_cache,
    write_measures_cache,
)
from analyses.figures import figure_pngs
from analyses.pages.render import render
from analyses.pages.writer import PageKind, page_folder
from analyses.views import new_figure

DYNAMICS = PageKind("dynamics", files=("dynamics.html", "dynamics.json"),
                    marker=("dynamics.json", ("measures", "phases")))
PAGE_FILES = DYNAMICS.files
REPORT_SECTION = {"key": "how_it_formed", "anchor": "how_it_formed", "title": "How it formed"}
PHASE_STYLE = {"memorisation_end": ("#d62728", "memorisation ends"),
               "jump": ("#2ca02c", "validation jumps"),
               "cleanup_end": ("#9467bd", "clean-up ends"),
               "restricted_half": ("#ff7f0e", "restricted loss half-way")}


# --------------------------------------------------------------------------- figures
def _mark_phases(ax: Any, d: Dynamics, legend: bool = False) -> None:
    for key, (color, label) in PHASE_STYLE.items():
        e = getattr(d.phases, key)
        if e is not None and e > 0:
            ax.axvline(e, color=color, lw=1, ls=":", label=label if legend else None)


def _x(epochs: list[int]) -> list[float]:
    """Epochs on a log axis: epoch 0 (the initialisation) drawn at 0.5."""
    return [max(e, 0.5) for e in epochs]


def plot_losses(d: Dynamics) -> Any:
    """Loss and accuracy against epoch (log-x): per-epoch curves, and at the snapshots the
    restricted (every pair) and excluded (training pairs) losses; phase boundaries dotted."""
    fig, ax = new_figure(11, 3.8, 1, 2)
    h, m, x = d.history, d.measures, _x(d.epochs)
    per_epoch = list(range(1, len(h.get("train_loss", [])) + 1))
    for key, style in (("train_loss", "-"), ("val_loss", "--"), ("all_loss", ":")):
        if key in h:
            ax[0, 0].plot(per_epoch, h[key], color="#555", ls=style, lw=1, label=key)
        elif key in m:
            ax[0, 0].plot(x, m[key], color="#555", ls=style, lw=1, label=key)
    for key, color in (("restricted_loss", "#ff7f0e"), ("excluded_loss", "#1f77b4")):
        if key in m:
            ax[0, 0].plot(x, m[key], color=color, marker=".", ms=3, lw=1.2, label=key)
    for key, style in (("train_acc", "-"), ("val_acc", "--"), ("all_acc", ":")):
        if key in h:
            ax[0, 1].plot(per_epoch, h[key], color="#555", ls=style, lw=1, label=key)
        elif key in m:
            ax[0, 1].plot(x, m[key], color="#555", ls=style, lw=1, label=key)
    if "restricted_acc" in m:
        ax[0, 1].plot(x, m["restricted_acc"], color="#ff7f0e", marker=".", ms=3, lw=1.2,
                      label="restricted_acc")
    ax[0, 0].set(xscale="log", yscale="log", xlabel="epoch", ylabel="cross-entropy",
                 title="Losses (restricted: key frequencies only)")
    ax[0, 1].set(xscale="log", xlabel="epoch", ylabel="accuracy", ylim=(-0.02, 1.02),
                 title="Accuracies")
    _mark_phases(ax[0, 0], d)
    _mark_phases(ax[0, 1], d, legend=True)
    ax[0, 0].legend(fontsize=7)
    ax[0, 1].legend(fontsize=7)
    return fig


MEASURE_PANELS = (("weight_norm", "total squared weight norm", "log"),
                  ("ipr_mean", "mean IPR of the neurons' input spectra", "linear"),
                  ("phase_error_abs_mean", "mean |phase error| (rad)", "linear"),
                  ("frac_cosine", "neurons one cosine explains (inputs, R² ≥ 0.9)", "linear"),
                  ("n_frequencies", "distinct frequencies (those neurons)", "linear"),
                  ("excluded_loss", "excluded loss (training pairs)", "linear"))


def plot_measures(d: Dynamics) -> Any:
    """The progress measures at the snapshots, against epoch (log-x)."""
    fig, ax = new_figure(11, 5.6, 2, 3)
    x = _x(d.epochs)
    for i, (key, title, yscale) in enumerate(MEASURE_PANELS):
        a = ax[i // 3, i % 3]
        if key in d.measures:
            a.plot(x, d.measures[key], color="#1f77b4", marker=".", ms=3, lw=1.2)
        else:
            a.text(0.5, 0.5, "not measured for this model", ha="center", va="center",
                   transform=a.transAxes, color="#666")
        a.set(xscale="log", yscale=yscale, xlabel="epoch", title=title)
        a.title.set_fontsize(9)
        _mark_phases(a, d)
    return fig


def _ticks(d: Dynamics) -> tuple[list[int], list[str]]:
    T = len(d.epochs)
    ticks = sorted({0, T // 3, 2 * T // 3, T - 1})
    return ticks, [str(d.epochs[t]) for t in ticks]


def plot_spectra(d: Dynamics, n_neurons: int = 12) -> Any:
    """Each chosen neuron's input power spectrum (share per frequency) over the snapshots."""
    neurons = d.clearest_neurons(n_neurons)
    cols = 4
    rows = -(-len(neurons) // cols)
    fig, ax = new_figure(11, 2.0 * rows + 0.4, rows, cols)
    T, _, K = d.power.shape
    ticks, labels = _ticks(d)
    for j, n in enumerate(neurons):
        a = ax[j // cols, j % cols]
        a.imshow(d.power[:, n, :].T.numpy(), aspect="auto", origin="lower", cmap="viridis",
                 vmin=0, vmax=1, extent=(-0.5, T - 0.5, 0.5, K + 0.5))
        a.set_title(f"neuron {n} (ends at k={int(d.dominant[-1, n])})", fontsize=8)
        a.set_xticks(ticks, labels, fontsize=7)
        a.tick_params(labelsize=7)
        if j % cols == 0:
            a.set_ylabel("frequency k", fontsize=8)
    for j in range(len(neurons), rows * cols):
        ax[j // cols, j % cols].axis("off")
    return fig


def plot_frequency_share(d: Dynamics) -> Any:
    """The share of all neurons whose input spectrum peaks at each frequency, over time."""
    T, _, K = d.power.shape
    counts = d.frequency_share()
    fig, ax = new_figure(11, 3.2)
    im = ax[0, 0].imshow(counts.T.numpy(), aspect="auto", origin="lower", cmap="magma",
                         extent=(-0.5, T - 0.5, 0.5, K + 0.5))
    ax[0, 0].set_xticks(*_ticks(d))
    ax[0, 0].set(xlabel="snapshot (epoch)", ylabel="frequency k",
                 title="share of neurons whose input spectrum peaks at k")
    fig.colorbar(im, ax=ax[0, 0], fraction=0.02)
    return fig


def plot_lottery(d: Dynamics) -> Any:
    """The lottery: hit rates against chance, and each neuron's initial first frequency against
    its final one."""
    lot = d.lottery
    fig, ax = new_figure(11, 3.4, 1, 2)
    names, hits, chance = ["magnitude"], [lot.hit_rate_magnitude], [lot.chance_magnitude]
    if lot.hit_rate_alignment is not None:
        names.append("alignment")
        hits.append(lot.hit_rate_alignment)
        chance.append(lot.chance_alignment)
    xs = range(len(names))
    ax[0, 0].bar([x - 0.2 for x in xs], hits, width=0.4, color="#1f77b4", label="hit rate")
    ax[0, 0].bar([x + 0.2 for x in xs], chance, width=0.4, color="#aaa", label="chance")
    ax[0, 0].axhline(lot.uniform, color="#d62728", lw=1, ls=":", label="1/K")
    ax[0, 0].set_xticks(list(xs), [f"first by {n}" for n in names])
    ax[0, 0].set(ylim=(0, 1), ylabel="fraction of neurons",
                 title=f"Does the initial spectrum pick the winner? ({lot.n_neurons} neurons)")
    ax[0, 0].title.set_fontsize(9)
    ax[0, 0].legend(fontsize=7)
    ax[0, 1].scatter(lot.initial_magnitude, lot.final, s=8, alpha=0.6, color="#1f77b4")
    K = lot.n_frequencies
    ax[0, 1].plot([1, K], [1, K], color="#999", lw=0.8)
    ax[0, 1].set(xlabel=f"initial first frequency (by magnitude, epoch {lot.initial_epoch})",
                 ylabel="final frequency", title="each neuron")
    ax[0, 1].title.set_fontsize(9)
    return fig


# --------------------------------------------------------------------------- page
def figures_of(d: Dynamics) -> dict[str, bytes]:
    """The page's figures as PNG bytes (those that apply to this series)."""
    figures = {"losses": plot_losses(d), "measures": plot_measures(d)}
    if d.power is not None:
        figures |= {"spectra": plot_spectra(d), "frequencies": plot_frequency_share(d)}
    if d.lottery is not None and d.lottery.n_neurons:
        figures["lottery"] = plot_lottery(d)
    return figure_pngs(figures)


# the phase table's rows: what the boundary is, and its field of `analyses.dynamics.Phases`
PHASE_ROWS = (("memorisation ends (train accuracy ≥ 99 %)", "memorisation_end"),
              ("validation accuracy jumps (steepest rise)", "jump"),
              ("validation accuracy reaches 50 %", "val_acc_50"),
              ("clean-up ends", "cleanup_end"),
              ("restricted loss half-way down", "restricted_half"),
              ("validation loss half-way down", "val_loss_half"),
              ("excluded loss lowest (end of its fall)", "excluded_low"),
              ("excluded loss highest after that", "excluded_peak"))


def render_page(d: Dynamics, figures: dict[str, bytes], seconds: float) -> str:
    """The self-contained HTML page of one series' dynamics (`templates/dynamics.html.j2`;
    `figures` as `figures_of` gives them)."""
    phases = [(what, "—" if getattr(d.phases, key) is None else getattr(d.phases, key))
              for what, key in PHASE_ROWS]
    return render("dynamics.html.j2", kind=DYNAMICS.name, d=d, phases=phases,
                  figures=figures, seconds=seconds)


def earlier_page(folder: Path) -> str | None:
    """None when `folder` holds an earlier dynamics page and nothing else, else the first thing
    in it that is not part of one (the rule of `analyses.pages.writer`, kind `DYNAMICS`)."""
    return DYNAMICS.stranger(folder)


def write_dynamics_page(source: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                        seed: int | None = None, **importer_options: Any
                        ) -> tuple[Path, Path, Dynamics]:
    """Load the snapshots at `source` (`hooked_mlp.load_snapshots(source, seed,
    **importer_options)`), measure their dynamics, and write `dynamics.html` and
    `dynamics.json` into `out_dir` (replacing an earlier page there, nothing else; never a
    folder that holds `source`)."""
    from hooked_mlp.files.series import load_snapshots

    start = time.perf_counter()
    out = Path(out_dir)
    with page_folder(out, DYNAMICS, inputs=[source]) as page:  # refuses other files first
        series = load_snapshots(source, seed, **importer_options)
        d = dynamics(series)
        figures = figures_of(d)
        seconds = time.perf_counter() - start
        page.write("dynamics.json", json.dumps(to_jsonable({"seconds": seconds} | d.to_dict()),
                                               indent=1, allow_nan=False))
        page.write("dynamics.html", render_page(d, figures, seconds))
    return out / "dynamics.html", out / "dynamics.json", d


# --------------------------------------------------------------------------- the report
def formation_figures(formation: Formation) -> dict[str, Any]:
    """The figures of the report's "How it formed" section (matplotlib figures by name): the
    losses and the progress measures of `formation.dynamics`; none when it was left out."""
    if formation.dynamics is None:
        return {}
    return {"losses": plot_losses(formation.dynamics),
            "measures": plot_measures(formation.dynamics)}


def how_it_formed_html(formation: Formation | None,
                       figures: dict[str, bytes] | None = None) -> str:
    """The report's short "How it formed" section: a view of the result of
    `analyses.experiments.formation.how_it_formed(models, model_paths, shipped)`, rendered from
    the report's own section template (`templates/sections/how_it_formed.html.j2`; `figures`:
    `formation_figures(formation)` as PNG, drawn here when not given). No result (no model
    carries snapshots): no section, the empty string."""
    if formation is None:
        return ""
    if not isinstance(formation, Formation):
        raise TypeError("how_it_formed_html shows the result of analyses.experiments.formation."
                        f"how_it_formed(models, model_paths, shipped), got "
                        f"{type(formation).__name__}")
    if figures is None:
        figures = figure_pngs(formation_figures(formation))
    return render("sections/how_it_formed.html.j2", section=REPORT_SECTION, result=formation,
                  figures=figures, error=None)
