"""Views of the analyses: matplotlib figures and circuitsvis views, in a page or in Jupyter.

Figures are built with matplotlib's object API (no pyplot and no global backend), so making them
never opens a window or touches global state. Each `plot_*` function returns a
`NotebookFigure`: a real `matplotlib.figure.Figure` that also has `_repr_png_`, because Jupyter
shows a pyplot-free figure only as `<Figure size ...>` text unless `%matplotlib inline` has been
run (IPython registers its figure formatter only then). Leaving a figure as a cell's last
expression, or `display(fig)`, shows the PNG; `figure_png(fig)` gives the bytes.

circuitsvis views: `str(view)` of a circuitsvis object loads its JavaScript from a CDN and shows
nothing offline, and its `local_src` inlines the 1.3 MB bundle into every view. Here each view is
a `CircuitsVisView` (a component name and its props); `analyses.pages.views.views_page` writes
a page that inlines the bundle once (`bundle_script`) and renders each view with
`CircuitsVis.render(id, CircuitsVis.<Component>, props)`, so the page opens with no network
(`fragment` is one view of such a page; the report's views section is built the same way).

In Jupyter (classic notebook, JupyterLab, VS Code) a view displays itself (`_repr_html_`), and
the bundle goes to the notebook once, not with every view:

* the first view displayed in a Python process carries the bundle, wrapped in
  `if (!window.CircuitsVis)` so that a re-run cell (or a restarted kernel's first view) does not
  define it again; later views carry only their props, each under a fresh element id;
* each view's script waits for `window.CircuitsVis`: it polls for two seconds, then listens for
  the event (`READY_EVENT`) that every notebook bundle fires once it has run. So a view shown
  above its bundle (cells run out of order, a saved notebook reopened: outputs run in page
  order) renders when the bundle arrives;
* a view that finds no bundle (the output that carried it was cleared and the page reloaded, or
  the first `_repr_html_` of the process was never displayed) says so in place of the view,
  naming `notebook_setup()`. That function returns an object whose display always carries the
  bundle; running it in any cell makes every waiting view render, with no cell re-run;
* a notebook that is not trusted runs no script: each view then shows its one static line, which
  says so;
* frontends that put each output in its own frame (e.g. Colab) share nothing between outputs:
  there, `notebook_setup(every_view=True)` makes every view carry the bundle.

The activation grid (`neuron_grid_view`) uses circuitsvis's `AttentionPattern`, whose axis titles
are fixed to "Source Token" / "Destination Token" (no prop renames them). Its own axes are turned
off (`showAxisLabels: false`, which also turns off its tooltip) and the view is framed in HTML
that labels the rows `a` (0 at the top, where circuitsvis draws row 0; the matplotlib heatmap of
`plot_activation_grids` has it at the bottom) and the columns `b`, with a line under the grid
that reads out `a`, `b` and the value of the cell under the pointer. The frame is part of the
view's HTML, so it is the same in the report (`fragment`) and in Jupyter (`_repr_html_`).
The HTML and scripts of the views (and `img_html`) are Jinja2 snippets in
`analyses/templates/views/`, autoescaped, with values in scripts written as escaped JSON (the
`js` filter). They have an environment of their own, not the pages' (`analyses.pages.render`):
this module is a computation, below the pages layer.
"""

from __future__ import annotations

import base64
import json
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from matplotlib.figure import Figure

from analyses._common import check_model, check_neurons, wrap_angle
from analyses.activations import ActivationGrids, activation_grids
from analyses.cosine_fit import NeuronFits
from analyses.figures import figure_png  # the one PNG helper (also importable from here)
from analyses.fourier import FrequencyHistogram
from analyses.replacement import ReplacementCurve
from analyses.synthetic import SyntheticCurve
from hooked_mlp._moved import renamed

__getattr__ = renamed(__name__)  # views_page, save_views_page: the rows of analyses/__init__.py

SEED_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf"]


# --------------------------------------------------------------------------- matplotlib
class NotebookFigure(Figure):
    """A `matplotlib.figure.Figure` that Jupyter shows as a PNG (`_repr_png_`) with no pyplot.

    Where `%matplotlib inline` is active, IPython's own figure formatter (registered for every
    `Figure`) takes precedence, so the figure is still shown once.
    """

    repr_dpi: int = 100

    def _repr_png_(self) -> bytes:
        """The PNG that Jupyter displays (`repr_dpi` dots per inch)."""
        return figure_png(self, dpi=self.repr_dpi)


def new_figure(width: float, height: float, nrows: int = 1, ncols: int = 1
            ) -> tuple[NotebookFigure, Any]:
    fig = NotebookFigure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def img_html(png: bytes, alt: str, name: str | None = None, caption: bool = False) -> str:
    """An `<img>` element embedding `png` as base64 (id `fig-{name}` when named; inside a
    `<figure>` with `alt` as its caption when `caption`), for self-contained pages."""
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return _snippet("img.html.j2", uri=uri, alt=alt, name=name, caption=caption)


def plot_training_curves(histories: Sequence[dict[str, list[float]]],
                         labels: Sequence[str] | None = None) -> Figure:
    """Loss (log-log) and accuracy (log-x) per epoch, train and validation, one colour per run."""
    fig, ax = new_figure(10, 3.6, 1, 2)
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


def plot_activation_grids(grids: ActivationGrids, k: Sequence[int] | None = None) -> Figure:
    """One `p x p` heatmap (rows `a`, columns `b`) per neuron."""
    n = len(grids.neurons)
    if n == 0:
        raise ValueError("grids must hold at least one neuron")
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    fig, ax = new_figure(2.6 * ncols, 2.6 * nrows, nrows, ncols)
    for i, neuron in enumerate(grids.neurons):
        a = ax[i // ncols, i % ncols]
        a.imshow(grids.grids[i].numpy(), cmap="viridis", origin="lower",
                 interpolation="nearest")
        title = f"neuron {neuron}" + (f" (k={k[i]})" if k is not None else "")
        a.set(title=title, xlabel="b", ylabel="a")
    for j in range(n, nrows * ncols):
        ax[j // ncols, j % ncols].axis("off")
    return fig


def plot_neuron_fit(model: Any, fits: NeuronFits, neuron: int) -> Figure:
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
    fig, ax = new_figure(12, 6.2, 2, 3)
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


def plot_fit_scatter(all_fits: Sequence[NeuronFits], labels: Sequence[str] | None = None) -> Figure:
    """Fitted parameters of `a` against `b`, and of the output against the inputs."""
    fig, ax = new_figure(13, 6.2, 2, 4)
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


def plot_replacement(curves: dict[str, Sequence[ReplacementCurve]]) -> Figure:
    """Accuracy against the fraction of neurons replaced: one line per variant (mean over runs,
    band: spread over runs and neuron orders)."""
    fig, ax = new_figure(7.5, 4.4)
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


def plot_synthetic(curve: SyntheticCurve) -> Figure:
    """Accuracy of random cosine models against the number of neurons."""
    fig, ax = new_figure(6.5, 4.0)
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
                             labels: Sequence[str] | None = None) -> Figure:
    """Neurons per frequency, stacked over runs."""
    fig, ax = new_figure(9, 3.4)
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
READY_EVENT = "hooked-mlp:circuitsvis-ready"
"""The window event fired after a notebook bundle has run (views waiting for it then render)."""

_WAIT_MS = 2000  # how long a notebook view polls for the bundle before it shows its hint
_POLL_MS = 50
_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


@dataclass
class _NotebookState:
    """What this Python process has sent to the notebook (a kernel restart starts it afresh)."""

    bundle_sent: bool = False
    every_view: bool = False


_NOTEBOOK = _NotebookState()

_HINT = ("circuitsvis is not loaded on this page: run `from analyses.views import "
         "notebook_setup; notebook_setup()` in a cell and this view appears. (Where each output "
         "is its own frame, e.g. Colab: `notebook_setup(every_view=True)`, then re-run this cell.)")
_NO_SCRIPT = ("Loading the circuitsvis view… If this line stays, this page ran no script: trust "
              "the notebook, or re-run this cell.")


def _js(value: Any) -> str:
    """`value` as JSON that is safe inside an HTML `<script>` (no raw `<`, `>` or `&`)."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@lru_cache(maxsize=1)
def _snippets() -> Environment:
    """The Jinja2 environment of the snippets in `analyses/templates/views/` (autoescaped, strict
    about names; `js` writes a value as `_js` does). It is not `analyses.pages.render`'s: a
    computation module may not import the pages layer."""
    env = Environment(loader=PackageLoader("analyses", "templates"),
                      autoescape=select_autoescape(("html", "html.j2", "js.j2")),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=False)
    env.filters["js"] = lambda value: Markup(_js(value))
    return env


def _snippet(template: str, **context: Any) -> str:
    """The snippet `views/{template}` rendered with `context`."""
    return _snippets().get_template(f"views/{template}").render(**context)


@lru_cache(maxsize=1)
def _bundle_js() -> str:
    """circuitsvis's browser bundle (`dist/cdn/iife.js`), safe to inline in a `<script>`."""
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    return re.sub(r"</(script)", r"<\\/\1", path.read_text(encoding="utf-8"), flags=re.I)


def bundle_script() -> str:
    """The circuitsvis JavaScript bundle as one inline `<script>` (defines `CircuitsVis`)."""
    return f"<script>{_bundle_js()}</script>"


def _notebook_bundle_script(after_id: str = "", after: str = "") -> str:
    """The bundle for a notebook: run only where `window.CircuitsVis` is not defined yet, then
    `READY_EVENT` is fired (so views shown earlier render), then `after` is written into the
    element `after_id` (if given)."""
    return _snippet("bundle.html.j2", bundle=Markup(_bundle_js()), ready=READY_EVENT,
                    after_id=after_id, after=after)


@dataclass(repr=False)
class CircuitsVisView:
    """A circuitsvis React component and its props.

    Shown in a page that holds the bundle (`analyses.pages.views`, `fragment`) or in Jupyter
    (`_repr_html_`, see the module docstring). `axis_labels` (rows, columns) frames an
    `AttentionPattern` in HTML axes with those names, the first and last token at their ends, and
    a readout of the cell under the pointer (`neuron_grid_view` sets it and turns off circuitsvis's
    own axes with `showAxisLabels: false`).
    """

    component: str
    props: dict[str, Any]
    title: str = ""
    axis_labels: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if not self.component.isidentifier():
            raise ValueError(f"component must be a circuitsvis component name, got "
                             f"{self.component!r}")

    def __repr__(self) -> str:
        return (f"CircuitsVisView({self.component!r}, title={self.title!r}, props: "
                f"{', '.join(self.props)})")

    def fragment(self, div_id: str) -> str:
        """HTML for this view, for a page that has loaded the bundle (`bundle_script`) before it.

        The circuitsvis component renders into `<div class="cv-view" id="{div_id}">`.
        """
        self._check_id(div_id)
        return _snippet("fragment.html.j2", **self._context(div_id))

    def notebook_html(self, include_bundle: bool | None = None) -> str:
        """HTML that renders this view in Jupyter, under a fresh element id.

        `include_bundle`: by default the circuitsvis bundle goes with the first view this process
        displays (with every view after `notebook_setup(every_view=True)`); True or False force
        it. The view's script waits for `window.CircuitsVis` (see the module docstring).
        """
        if include_bundle is None:
            include_bundle = _NOTEBOOK.every_view or not _NOTEBOOK.bundle_sent
        if include_bundle:
            _NOTEBOOK.bundle_sent = True
        div_id = f"hm-cv-{uuid.uuid4().hex}"
        bundle = Markup(_notebook_bundle_script()) if include_bundle else None
        return _snippet("notebook.html.j2", **self._context(div_id), bundle=bundle,
                        ready=READY_EVENT, polls=_WAIT_MS // _POLL_MS, poll_ms=_POLL_MS,
                        hint=_HINT, no_script=_NO_SCRIPT)

    def _repr_html_(self) -> str:
        """Jupyter's HTML for this view (`notebook_html()`)."""
        return self.notebook_html()

    @staticmethod
    def _check_id(div_id: str) -> None:
        if not isinstance(div_id, str) or not _ID.fullmatch(div_id):
            raise ValueError(f"div_id must be a letter then letters, digits, '-' or '_', got "
                             f"{div_id!r}")

    def _context(self, div_id: str) -> dict[str, Any]:
        """What the snippets need: the view, its element id, and the axes (rows, columns) with
        the tokens at their ends, or `axes=None` (see `templates/views/markup.html.j2`)."""
        tokens = self.props.get("tokens") or [""]
        axes = None if self.axis_labels is None else tuple(str(x) for x in self.axis_labels)
        return {"view": self, "div_id": div_id, "axes": axes, "first": str(tokens[0]),
                "last": str(tokens[-1])}


@dataclass(frozen=True)
class NotebookSetup:
    """Displayed in Jupyter, loads the circuitsvis bundle for the views (see `notebook_setup`)."""

    def __repr__(self) -> str:
        return "NotebookSetup() (display it in a notebook to load circuitsvis for the views)"

    def _repr_html_(self) -> str:
        """The guarded bundle and a line that says whether it ran."""
        _NOTEBOOK.bundle_sent = True
        div_id = f"hm-cv-setup-{uuid.uuid4().hex}"
        bundle = _notebook_bundle_script(div_id, "circuitsvis is loaded for hooked-mlp views "
                                                 "(offline).")
        return _snippet("setup.html.j2", div_id=div_id, bundle=Markup(bundle),
                        no_script=_NO_SCRIPT.replace("view", "bundle"))


def notebook_setup(every_view: bool = False) -> NotebookSetup:
    """An object that, displayed in Jupyter, loads the circuitsvis bundle for the views.

    Not needed in the usual case (the first view displayed carries the bundle); run it to load
    the bundle again where a view says it is missing (its cell's output was cleared, the
    notebook was reopened): views waiting on the page then render. `every_view=True` makes every
    later view carry the bundle, for frontends that give each output its own frame (Colab);
    `every_view=False` goes back to once per process.
    """
    _NOTEBOOK.every_view = every_view
    return NotebookSetup()


def _labels(p: int) -> list[str]:
    return [str(i) for i in range(p)]


def neuron_grid_view(model: Any, neuron: int, grids: ActivationGrids | None = None,
                     decimals: int = 3) -> CircuitsVisView:
    """A neuron's activation over the `(a, b)` grid (rows: `a`, columns: `b`), scaled to 0..1.

    Rendered with circuitsvis's `AttentionPattern` inside HTML axes: `a` down the side (0 at the
    top), `b` along the bottom; the line under the grid reads out the cell under the pointer.
    """
    check_model(model)
    (neuron,) = check_neurons([neuron], model.cfg.d_hidden, "neuron")
    if grids is None or neuron not in grids.neurons:
        grids = activation_grids(model, [neuron])
    g = grids.grids[grids.neurons.index(neuron)].double()  # rounds to short decimals in JSON
    top = float(g.max())
    scaled = (g / top if top > 0 else g).round(decimals=decimals)
    p = model.cfg.p
    return CircuitsVisView(
        "AttentionPattern",
        {"tokens": _labels(p), "attention": scaled.tolist(), "minValue": 0.0, "maxValue": 1.0,
         "maskUpperTri": False, "showAxisLabels": False},
        title=f"neuron {neuron}: activation over (a = row, b = column), max {top:.3g}",
        axis_labels=("a", "b"),
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
    rnd = lambda t: t.double().round(decimals=3).tolist()  # noqa: E731
    return CircuitsVisView(
        "TopkTokens",
        {"tokens": [tokens], "topkVals": [[rnd(tv)]], "topkIdxs": [[ti.tolist()]],
         "bottomkVals": [[rnd(bv)]], "bottomkIdxs": [[bi.tolist()]],
         "firstDimensionName": "Layer", "thirdDimensionName": "Neuron",
         "sampleLabels": [f"all pairs (a{sep}b)"], "firstDimensionLabels": ["hidden"]},
        title="Top and bottom inputs per neuron (columns: neurons "
              f"{', '.join(str(n) for n in chosen[:8])}{'…' if len(chosen) > 8 else ''})",
    )
