"""The report section "What each neuron computes": a view of the forms comparison.

    from analyses.experiments.forms import compare_neuron_forms
    from analyses.pages.forms import forms_html
    html = forms_html(compare_neuron_forms(models, labels))   # the section from a result

The numbers come from `analyses.experiments.forms.compare_neuron_forms` (competing forms,
replacement by each form, automated discovery, clock or pizza, the exact construction); this
module renders `templates/sections/neuron_forms.html.j2` from the result and its figure. It
computes nothing: the caller runs the experiment and passes its result (the report does so
through its `neuron_forms` section).
"""

from __future__ import annotations

from analyses.experiments.forms import FormsComparison
from analyses.figures import figure_pngs
from analyses.pages.render import render

SECTION = {"key": "neuron_forms", "anchor": "neuron_forms", "title": "What each neuron computes"}
TEMPLATE = "sections/neuron_forms.html.j2"


def forms_html(result: FormsComparison, figures: dict[str, bytes] | None = None) -> str:
    """The section's HTML (figures embedded as PNG; `figures` are `result.figures()` as PNG
    bytes, drawn here when not given)."""
    if not isinstance(result, FormsComparison):
        raise TypeError("forms_html shows a result of analyses.experiments.forms."
                        f"compare_neuron_forms, got {type(result).__name__}")
    if figures is None:
        figures = figure_pngs(result.figures())
    return render(TEMPLATE, section=SECTION, result=result, figures=figures, error=None)


__all__ = ["SECTION", "TEMPLATE", "forms_html"]
