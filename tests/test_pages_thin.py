"""Pages compute nothing (issue 18): each section view takes the experiment's result, refuses
anything else by name, and draws its figures through the one PNG helper; what a page used to
choose by computing (the dynamics page's neurons) is the result's own method."""

from __future__ import annotations

import pytest
import torch

from analyses.dynamics import Dynamics, Phases
from analyses.figures import figure_png, figure_pngs


def _dynamics(power: torch.Tensor) -> Dynamics:
    T = power.shape[0]
    return Dynamics(epochs=list(range(T)), key_frequencies=[], measures={}, history={},
                    dominant=power.argmax(dim=2) + 1, power=power, lottery=None,
                    phases=Phases(**{f: None for f in Phases.__dataclass_fields__}))


def test_clearest_neurons_one_per_frequency_first():
    # 5 neurons, 3 frequencies: neurons 0 and 3 peak at k=1 (0 clearer), 1 at k=2, 2 and 4 at
    # k=3 (4 clearer); the clearest first per frequency, then the rest by clarity
    final = torch.tensor([[0.9, 0.05, 0.05], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6],
                          [0.5, 0.3, 0.2], [0.0, 0.2, 0.8]])
    d = _dynamics(torch.stack([torch.full((5, 3), 1 / 3), final]))
    assert d.clearest_neurons(3) == [0, 1, 4]  # one each of k = 1, 2, 3
    assert d.clearest_neurons(4) == [0, 1, 2, 4]  # then neuron 2 (0.6) before 3 (0.5)
    assert d.clearest_neurons(99) == [0, 1, 2, 3, 4]
    assert d.clearest_neurons(0) == []
    assert _dynamics(final[None]).clearest_neurons(1) == [0]
    d.power = None
    assert d.clearest_neurons(3) == []


def test_the_views_take_results_and_refuse_anything_else():
    from analyses.pages.dynamics import how_it_formed_html
    from analyses.pages.forms import forms_html

    with pytest.raises(TypeError, match="compare_neuron_forms"):
        forms_html([1, 2])
    with pytest.raises(TypeError, match=r"how_it_formed\(models, model_paths, shipped\)"):
        how_it_formed_html(["a model"])
    assert how_it_formed_html(None) == ""


def test_one_png_helper():
    import analyses.views

    assert analyses.views.figure_png is figure_png
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))  # no constrained layout: every save draws the same
    fig.subplots().plot([0, 1], [1, 0])
    pngs = figure_pngs({"b": fig, "a": fig}, dpi=30)
    assert list(pngs) == ["b", "a"] and pngs["a"] == pngs["b"] == figure_png(fig, dpi=30)
    assert pngs["a"].startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(TypeError, match="fig must be a matplotlib Figure, got str"):
        figure_png("figure")
