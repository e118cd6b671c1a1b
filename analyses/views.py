"""Views of the analyses: matplotlib figures (PNG) and circuitsvis views that work offline.

Figures are built with matplotlib's object API (`matplotlib.figure.Figure`, no pyplot and no
global backend), so making them never opens a window or touches global state.

circuitsvis views: `str(view)` of a circuitsvis object loads its JavaScript from a CDN and shows
nothing offline, and its `local_src` inlines the 1.3 MB bundle into every view. Here each view is
a `CircuitsVisView` (a component name and its props); `views_page` writes a page that inlines
the bundle once and renders each view with `CircuitsVis.render(id, CircuitsVis.<Component>,
props)`, so the page opens with no network.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from analyses._common import check_model, check_neurons, wrap_angle
from analyses.activations import ActivationGrids, activation_grids
from analyses.cosine_fit import NeuronFits
from analyses.fourier import FrequencyHistogram
from analyses.replacement import ReplacementCurve
from analyses.synthetic import SyntheticCurve

SEED_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf"]


# --------------------------------------------------------------------------- matplotlib
def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def plot_training_curves(histories: Sequence[dict[str, list[float]]],
                         labels: Sequence[str] | None = None) -> Any:
    """Loss (log-log) and accuracy (log-x) per epoch, train and validation, one colour per run."""
    fig, ax = _figure(10, 3.6, 1, 2)
    labels = labels or [f"run {i}" for i in range(len(histories))]
    for i, (h, label) in enumerate(zip(histories, labels, strict=True)):
        c = SEED_COLORS[i % len(SEED_COLORS)]
        epochs = range(1, len(h["train_loss"]) + 1)
        ax[0, 0].plot(epochs, h["train_loss"], color=c, lw=1, label=f"{label} train")
        ax[0, 1].plot(epochs, h["train_acc"], color=c, lw=1)
        if "val_loss" in h:  # absent when the model was trained on every pair
            ax[0, 0].plot(epochs, h["val_loss"], color=c, lw=1, ls="--", label=f"{label} val")
            ax[0, 1].plot(epochs, h["val_acc"], color=c, lw=1, ls="--")
    ax[0, 0].set(xscale="log", yscale="log", xlabel="epoch", ylabel="cross-entropy",
                 title="Loss (solid: train, dashed: validation)")
    ax[0, 1].set(xscale="log", xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02),
                 title="Accuracy")
    if not histories:
        for a in ax[0]:
            a.text(0.5, 0.5, "no training record (weights only)", ha="center", va="center",
                   transform=a.transAxes, color="#666")
    elif len(histories) <= 5:
        ax[0, 0].legend(fontsize=7, ncol=2)
    return fig


def plot_activation_grids(grids: ActivationGrids, k: Sequence[int] | None = None) -> Any:
    """One `p x p` heatmap (rows `a`, columns `b`) per neuron."""
    n = len(grids.neurons)
    if n == 0:
        raise ValueError("grids must hold at least one neuron")
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    fig, ax = _figure(2.6 * ncols, 2.6 * nrows, nrows, ncols)
    for i, neuron in enumerate(grids.neurons):
        a = ax[i // ncols, i % ncols]
        a.imshow(grids.grids[i].numpy(), cmap="viridis", origin="lower",
                 interpolation="nearest")
        title = f"neuron {neuron}" + (f" (k={k[i]})" if k is not None else "")
        a.set(title=title, xlabel="b", ylabel="a")
    for j in range(n, nrows * ncols):
        ax[j // ncols, j % ncols].axis("off")
    return fig


def plot_neuron_fit(model: Any, fits: NeuronFits, neuron: int) -> Any:
    """A neuron's weights from `a`, from `b` and to the outputs, with their fitted cosines.

    Top row: weights against `x` with the fit drawn as a continuous curve. Bottom row: the same
    weights against their phase `2 pi k x / p + phi (mod 2 pi)`, where a good fit is one clean
    cosine.
    """
    check_model(model)
    (neuron,) = check_neurons([neuron], model.cfg.d_hidden, "neuron")
    if neuron not in fits.neurons:
        raise ValueError(f"neuron {neuron} has no fit in `fits` (fitted: {fits.neurons[:10]}...)")
    i = fits.neurons.index(neuron)
    p = model.cfg.p
    x = torch.arange(p, dtype=torch.float64)
    fine = torch.linspace(0, p - 1, 40 * p, dtype=torch.float64)
    weights = {"a": model.W_a.detach()[:, neuron], "b": model.W_b.detach()[:, neuron],
               "out": model.W_out.detach()[neuron]}
    fig, ax = _figure(12, 6.2, 2, 3)
    for j, (name, var, title) in enumerate((("a", "a", "input weights from a"),
                                            ("b", "b", "input weights from b"),
                                            ("out", "c", "output weights"))):
        fit = getattr(fits, name)
        w = weights[name].cpu().double()
        top, bottom = ax[0, j], ax[1, j]
        top.plot(fine.numpy(), fit.values(fine)[i].numpy(), color="#d62728", lw=0.6,
                 label="cosine fit")
        top.scatter(x.numpy(), w.numpy(), s=8, color="#222", zorder=3, label="weights")
        top.set(title=f"neuron {neuron}: {title}", xlabel=var, xlim=(-1, p))
        theta = torch.remainder(2 * math.pi * float(fit.freq[i]) * x / p + float(fit.phase[i]),
                                2 * math.pi)
        grid = torch.linspace(0, 2 * math.pi, 200, dtype=torch.float64)
        curve = float(fit.scale[i]) * torch.cos(grid) + float(fit.offset[i])
        bottom.plot(grid.numpy(), curve.numpy(), color="#d62728", lw=1.5)
        bottom.scatter(theta.numpy(), w.numpy(), s=8, color="#222", zorder=3)
        bottom.set(xlabel=f"phase 2π·k{var}/p + φ (mod 2π)", xlim=(0, 2 * math.pi))
        bottom.text(0.02, 0.02, f"{fit.formula(i, var)}\nR² = {float(fit.r2[i]):.3f}",
                    transform=bottom.transAxes, fontsize=8, va="bottom",
                    bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"})
    ax[0, 0].legend(fontsize=7, loc="upper right")
    return fig


def plot_fit_scatter(all_fits: Sequence[NeuronFits], labels: Sequence[str] | None = None) -> Any:
    """Fitted parameters of `a` against `b`, and of the output against the inputs."""
    fig, ax = _figure(13, 6.2, 2, 4)
    labels = labels or [f"run {i}" for i in range(len(all_fits))]
    for i, (f, label) in enumerate(zip(all_fits, labels, strict=True)):
        c = SEED_COLORS[i % len(SEED_COLORS)]
        kw = {"s": 9, "color": c, "alpha": 0.7}
        ax[0, 0].scatter(f.a.k, f.b.k, label=label, **kw)
        ax[0, 1].scatter(f.a.scale, f.b.scale, **kw)
        ax[0, 2].scatter(f.a.offset, f.b.offset, **kw)
        ax[0, 3].scatter(f.a.phase, f.b.phase, **kw)
        ax[1, 0].scatter(f.a.k, f.out.k, **kw)
        ax[1, 1].scatter(f.a.scale, f.out.scale, **kw)
        ax[1, 2].scatter(f.a.offset, f.out.offset, **kw)
        phi_in = wrap_angle(f.a.phase + f.b.phase)
        ax[1, 3].scatter(phi_in, f.out.phase, **kw)
    titles = [("frequency k", "k_a", "k_b"), ("scale s", "s_a", "s_b"),
              ("offset o", "o_a", "o_b"), ("phase φ (differs)", "φ_a", "φ_b"),
              ("frequency k", "k_a", "k_out"), ("scale", "s_a", "s_out"),
              ("offset", "o_a", "o_out"), ("phase: φ_out vs φ_a + φ_b", "φ_a + φ_b (wrapped)",
                                          "φ_out")]
    for j, (t, xl, yl) in enumerate(titles):
        a = ax[j // 4, j % 4]
        a.set(title=t, xlabel=xl, ylabel=yl)
        if j in (0, 1, 4, 7):  # identity line where the study predicts equality
            lo, hi = a.get_xlim()
            a.plot([lo, hi], [lo, hi], color="#999", lw=0.8, ls=":")
    ax[0, 0].legend(fontsize=7, markerscale=1.5)
    return fig


def plot_replacement(curves: dict[str, Sequence[ReplacementCurve]]) -> Any:
    """Accuracy against the fraction of neurons replaced: one line per variant (mean over runs,
    band: spread over runs and neuron orders)."""
    fig, ax = _figure(7.5, 4.4)
    a = ax[0, 0]
    for i, (label, runs) in enumerate(curves.items()):
        c = SEED_COLORS[i % len(SEED_COLORS)]
        fr = runs[0].fractions
        per_run = torch.tensor([r.mean for r in runs])  # [runs, fractions]
        allacc = torch.tensor([row for r in runs for row in r.accuracy])
        mean = per_run.mean(0)
        a.plot(fr, mean, marker="o", ms=3, color=c, label=label)
        a.fill_between(fr, allacc.min(0).values, allacc.max(0).values, color=c, alpha=0.15)
    a.axhline(0.8, color="#999", lw=0.8, ls=":")
    a.axvline(0.9, color="#999", lw=0.8, ls=":")
    a.text(0.905, 0.81, "study: > 80 % at > 90 %", fontsize=7, color="#555")
    a.set(xlabel="fraction of neurons replaced by cosine fits", ylabel="accuracy (all pairs)",
          ylim=(0, 1.02), title="Replacing neurons by their fits")
    a.legend(fontsize=7, loc="lower left")
    return fig


def plot_synthetic(curve: SyntheticCurve) -> Any:
    """Accuracy of random cosine models against the number of neurons."""
    fig, ax = _figure(6.5, 4.0)
    a = ax[0, 0]
    acc = torch.tensor(curve.accuracy)  # [ns, seeds]
    a.plot(curve.ns, curve.mean, marker="o", color=SEED_COLORS[0], label="mean over seeds")
    a.fill_between(curve.ns, acc.min(1).values, acc.max(1).values, alpha=0.2,
                   color=SEED_COLORS[0], label="min-max over seeds")
    a.scatter([256, 512], [0.95, 1.0], marker="x", color="#d62728", zorder=3,
              label="study: > 95 % at 256, 100 % at 512")
    a.set(xscale="log", xlabel="neurons N (random k, φ_a, φ_b; no training)",
          ylabel="accuracy (all pairs)", ylim=(0, 1.02), title="Random cosine models")
    a.set_xticks(curve.ns, [str(n) for n in curve.ns])
    a.legend(fontsize=7, loc="lower right")
    return fig


def plot_frequency_histogram(hists: Sequence[FrequencyHistogram],
                             labels: Sequence[str] | None = None) -> Any:
    """Neurons per frequency, stacked over runs."""
    fig, ax = _figure(9, 3.4)
    a = ax[0, 0]
    labels = labels or [f"run {i}" for i in range(len(hists))]
    K = len(hists[0].counts)
    bottom = torch.zeros(K)
    for i, (h, label) in enumerate(zip(hists, labels, strict=True)):
        counts = torch.tensor(h.counts, dtype=torch.float32)
        a.bar(range(1, K + 1), counts, bottom=bottom, color=SEED_COLORS[i % len(SEED_COLORS)],
              label=label, width=0.85)
        bottom += counts
    a.set(xlabel="frequency k", ylabel="neurons", xlim=(0.3, K + 0.7),
          title="Dominant input frequency of each neuron (stacked over runs)")
    a.legend(fontsize=7, ncol=min(5, len(hists)))
    return fig


# --------------------------------------------------------------------------- circuitsvis
@dataclass
class CircuitsVisView:
    """A circuitsvis React component and its props, rendered by `views_page` or `fragment`."""

    component: str
    props: dict[str, Any]
    title: str = ""

    def fragment(self, div_id: str) -> str:
        """HTML for this view, for a page that has loaded the bundle (`bundle_script`)."""
        props = json.dumps(self.props, separators=(",", ":"), allow_nan=False)
        props = props.replace("</", "<\\/")
        return (f'<div class="cv-view" id="{div_id}"></div>\n'
                f'<script>CircuitsVis.render("{div_id}", CircuitsVis.{self.component}, '
                f"{props});</script>")


def bundle_script() -> str:
    """The circuitsvis JavaScript bundle as one inline `<script>` (defines `CircuitsVis`)."""
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    js = path.read_text(encoding="utf-8").replace("</script", "<\\/script")
    return f"<script>{js}</script>"


def _labels(p: int) -> list[str]:
    return [str(i) for i in range(p)]


def neuron_grid_view(model: Any, neuron: int, grids: ActivationGrids | None = None,
                     decimals: int = 3) -> CircuitsVisView:
    """A neuron's activation over the `(a, b)` grid (rows: `a`, columns: `b`), scaled to 0..1.

    Rendered with circuitsvis's `AttentionPattern` (hover a cell to read its value).
    """
    check_model(model)
    (neuron,) = check_neurons([neuron], model.cfg.d_hidden, "neuron")
    if grids is None or neuron not in grids.neurons:
        grids = activation_grids(model, [neuron])
    g = grids.grids[grids.neurons.index(neuron)]
    top = float(g.max())
    scaled = (g / top if top > 0 else g).round(decimals=decimals)
    p = model.cfg.p
    return CircuitsVisView(
        "AttentionPattern",
        {"tokens": _labels(p), "attention": scaled.tolist(), "minValue": 0.0, "maxValue": 1.0,
         "maskUpperTri": False, "showAxisLabels": True},
        title=f"neuron {neuron}: activation over (a = row, b = column), max {top:.3g}",
    )


def top_inputs_view(model: Any, neurons: Sequence[int] | None = None, k: int = 10,
                    grids: ActivationGrids | None = None) -> CircuitsVisView:
    """The `k` pairs that excite each neuron most (and least), with circuitsvis's `TopkTokens`.

    Activations are scaled to 0..1 per neuron; each token is a pair, written `a+b` for addition
    (`a-b`, `a*b`, `a/b` for the other operations, `a,b` for `a^2 + ab + b^2`).
    """
    check_model(model)
    chosen = check_neurons(neurons, model.cfg.d_hidden)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if grids is None or any(n not in grids.neurons for n in chosen):
        grids = activation_grids(model, chosen)
    p = model.cfg.p
    acts = torch.stack([grids.grids[grids.neurons.index(n)].reshape(-1) for n in chosen], 1)
    top = acts.amax(dim=0).clamp_min(1e-12)
    acts = acts / top  # [p^2, n] in 0..1
    k = min(k, p * p)
    tv, ti = acts.topk(k, dim=0)  # [k, n]
    bv, bi = acts.topk(k, dim=0, largest=False)
    bv, bi = bv.flip(0), bi.flip(0)
    sep = {"add": "+", "sub": "-", "mul": "*", "div": "/"}.get(model.cfg.operation, ",")
    tokens = [f"{a}{sep}{b}" for a in range(p) for b in range(p)]
    rnd = lambda t: t.round(decimals=3).tolist()  # noqa: E731
    return CircuitsVisView(
        "TopkTokens",
        {"tokens": [tokens], "topkVals": [[rnd(tv)]], "topkIdxs": [[ti.tolist()]],
         "bottomkVals": [[rnd(bv)]], "bottomkIdxs": [[bi.tolist()]],
         "firstDimensionName": "Layer", "thirdDimensionName": "Neuron",
         "sampleLabels": [f"all pairs (a{sep}b)"], "firstDimensionLabels": ["hidden"]},
        title="Top and bottom inputs per neuron (columns: neurons "
              f"{', '.join(str(n) for n in chosen[:8])}{'…' if len(chosen) > 8 else ''})",
    )


def views_page(views: Sequence[CircuitsVisView], title: str = "hooked-mlp views") -> str:
    """A self-contained HTML page showing `views` (the circuitsvis bundle inlined once)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             "</title></head><body style='font-family:sans-serif'>",
             f"<h1>{html.escape(title)}</h1>", bundle_script()]
    for i, v in enumerate(views):
        parts.append(f"<h3>{html.escape(v.title)}</h3>")
        parts.append(v.fragment(f"cv-{i}"))
    parts.append("</body></html>")
    return "\n".join(parts)


def save_views_page(views: Sequence[CircuitsVisView], path: str | Path,
                    title: str = "hooked-mlp views") -> Path:
    """Write `views_page(views)` to `path` atomically."""
    from hooked_mlp.io import atomic_write_text

    atomic_write_text(path, views_page(views, title))
    return Path(path)
