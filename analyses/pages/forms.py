"""The report section "What each neuron computes": a view of the forms comparison.

    from analyses.pages.forms import forms_html, forms_section
    html = forms_html(compare_neuron_forms(models, labels))   # the section from a result
    html, numbers = forms_section(models, labels)            # measure and render in one call

The numbers come from `analyses.experiments.forms.compare_neuron_forms` (competing forms,
replacement by each form, automated discovery, clock or pizza, the exact construction); this
module renders `templates/sections/neuron_forms.html.j2` from the result and its figure. It
computes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from analyses.experiments.forms import FormsComparison, compare_neuron_forms
from analyses.pages.render import render

SECTION = {"key": "neuron_forms", "anchor": "neuron_forms", "title": "What each neuron computes"}
TEMPLATE = "sections/neuron_forms.html.j2"


def forms_html(result: FormsComparison, figures: dict[str, bytes] | None = None) -> str:
    """The section's HTML (figures embedded as PNG; `figures` are `result.figures()` as PNG
    bytes, drawn here when not given)."""
    if figures is None:
        from analyses.views import figure_png

        figures = {name: figure_png(fig) for name, fig in result.figures().items()}
    return render(TEMPLATE, section=SECTION, result=result, figures=figures, error=None)


def forms_section(
    models: Sequence[Any],
    labels: Sequence[str],
    n_orders: int = 3,
    discover_generations: int = 8,
) -> tuple[str, dict[str, Any]]:
    """The section's HTML and its numbers (`{"applies": ..., "forms": ..., ...}`, as
    `FormsComparison.to_dict()`): `compare_neuron_forms(models, labels, n_orders,
    discover_generations)` rendered by `forms_html`."""
    result = compare_neuron_forms(models, labels, n_orders=n_orders,
                                  discover_generations=discover_generations)
    return forms_html(result), result.to_dict()


__all__ = ["SECTION", "TEMPLATE", "forms_html", "forms_section"]
