"""Figures to PNG: the one helper that turns matplotlib figures into the bytes a page embeds.

    from analyses.figures import figure_png, figure_pngs
    png = figure_png(fig)                       # one figure
    pngs = figure_pngs(result.figures())        # a result's figures, by name

Results draw themselves (`figures()` returns matplotlib `Figure`s by name); pages and the
report's section runner embed them as PNG through this module, so every page draws at the same
resolution and one change here changes them all. It is a computation-side leaf (it imports
matplotlib only), so experiments and pages may both use it; `analyses.views.figure_png` is this
function.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

from matplotlib.figure import Figure

DPI = 110  # the pages' resolution (dots per inch)


def figure_png(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes."""
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def figure_pngs(figures: Mapping[str, Figure], dpi: int = DPI) -> dict[str, bytes]:
    """Each figure of `figures` (name -> Figure, as a result's `figures()` gives them) as PNG
    bytes under the same name, in the same order."""
    return {name: figure_png(fig, dpi) for name, fig in figures.items()}


__all__ = ["DPI", "figure_png", "figure_pngs"]
