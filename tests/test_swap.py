"""Issue 21, He et al. 2026's analyses: the activation swap, phase moments, frequency subsets,
their stage detector."""

import dataclasses
import math

import pytest
import torch

from analyses.swap import (
    activation_swap,
    compare_stages,
    detect_stages,
    frequency_subsets,
    phase_moments,
    swapped,
)
from hooked_mlp import HookedMLP, import_mlp
from hooked_mlp.data import all_pairs
from hooked_mlp.helpers import accuracy

EVEN, ODD = ("abs", "quad", "quartic"), ("identity", "cubic")


def _no_hooks(model):
    return not any(h.fwd_hooks for h in model.hook_dict.values())


def test_the_swap_reproduces_the_even_odd_split(shipped):
    acc = activation_swap(shipped)
    assert list(acc) == ["relu", "abs", "quad", "quartic", "softplus", "exp", "identity",
                         "cubic"]
    assert acc["relu"] == pytest.approx(accuracy(shipped))
    assert all(acc[name] > 0.97 for name in EVEN), acc
    assert all(acc[name] < 0.05 for name in ODD), acc
    assert _no_hooks(shipped)


def test_the_swap_on_a_checkpoint_in_the_published_layout(tmp_path):
    from _published import write_run

    run = write_run(tmp_path / "run", p=23, d_mlp=64, act="ReLU", num_epochs=1000)
    model = import_mlp(run.final, activation="relu")
    acc = activation_swap(model, ("relu", *EVEN, *ODD))
    assert acc["relu"] > 0.85
    assert all(acc[name] > 0.95 for name in EVEN) and all(acc[name] < 0.1 for name in ODD), acc
    moments = phase_moments(model)
    assert moments.n_groups >= 5 and max(moments.cos[:4]) < moments.null  # spread phases


def test_a_swapped_model_computes_as_one_built_with_that_activation(shipped):
    tokens = all_pairs(113)[::11]
    quad = HookedMLP.from_params(dataclasses.replace(shipped.cfg, activation="quad"),
                                 shipped.state_tensors())
    with swapped(shipped, "quad"):
        torch.testing.assert_close(shipped(tokens), quad(tokens))
        _, cache = shipped.run_with_cache(tokens)  # every analysis sees it
        torch.testing.assert_close(cache["post", 0], cache["pre", 0].square())
    with pytest.raises(ValueError, match="activation must be one of"), swapped(shipped, "sin"):
        pass
    with pytest.raises(ValueError, match="activations must be a non-empty list"):
        activation_swap(shipped, "abs")
    assert _no_hooks(shipped)


def test_phase_moments_of_evenly_spread_phases():
    """Four neurons at frequency 3 with phases 0.3 + 2 pi j / 4: the moments vanish for m =
    1..3 and m = 5..7, and are |cos 4 (0.3)|, |sin 4 (0.3)| at m = 4 and 8 (aliasing)."""
    p, k, n = 23, 3, 4
    model = HookedMLP(dataclasses.replace(HookedMLP().cfg, p=p, d_hidden=n))
    x = torch.arange(p, dtype=torch.float64)
    phases = 0.3 + 2 * math.pi * torch.arange(n) / n
    w = torch.cos(2 * math.pi * k * x[:, None] / p + phases[None]).float()  # [p, n]
    with torch.no_grad():
        model.W_in.copy_(torch.cat([w, w]))
        model.b_in.zero_()
    moments = phase_moments(model)
    assert moments.n_groups == 1 and moments.n_neurons == 4
    for m in (1, 2, 3, 5, 6, 7):
        assert moments.cos[m - 1] < 1e-5 and moments.sin[m - 1] < 1e-5
    assert moments.cos[3] == pytest.approx(abs(math.cos(4 * 0.3)), abs=1e-5)
    assert moments.sin[7] == pytest.approx(abs(math.sin(8 * 0.3)), abs=1e-5)
    assert moments.null == pytest.approx(1 / math.sqrt(math.pi * 4))


def test_frequency_subsets_grow_towards_the_model(shipped):
    from analyses.dynamics import frequency_losses, logit_frequency_power

    subsets = frequency_subsets(shipped, ks=[1, 10, 30, 56])
    assert subsets["loss"] == sorted(subsets["loss"], reverse=True)
    assert subsets["acc"][0] < 0.1 and subsets["acc"][-1] == 1.0
    top = [int(i) + 1 for i in logit_frequency_power(shipped).argsort(descending=True)[:10]]
    assert subsets["loss"][1] == pytest.approx(
        frequency_losses(shipped, top)["restricted_loss"])
    with pytest.raises(ValueError, match="ks must be a non-empty list of integers in \\[1, 56\\]"):
        frequency_subsets(shipped, ks=[0])


def test_their_stage_detector_beside_the_phase_finder(shipped):
    history = {"train_acc": [0.1, 0.5, 0.96, 1.0, 1.0, 1.0], "val_acc": [0, 0, 0.1, 0.5, 0.97, 1]}
    assert detect_stages(history).to_dict() == {"stage1_end": 2, "stage2_end": 4,
                                                "how": "accuracy >= 0.95"}
    # their fallback when stage 1 does not come first: a third of stage 2
    late = {"train_acc": [0.1, 0.2, 0.3, 0.96], "val_acc": [0.1, 0.2, 0.3, 0.96]}
    assert (detect_stages(late).stage1_end, detect_stages(late).stage2_end) == (1, 3)
    assert detect_stages({"train_loss": [1, 0.05], "val_loss": [2, 1]}).to_dict() == {
        "stage1_end": 1, "stage2_end": None, "how": "loss < 0.1"}
    with pytest.raises(ValueError, match="history must hold train_acc and val_acc"):
        detect_stages({"train_acc": [1.0]})
    from analyses.dynamics import find_phases

    h = shipped.train_info.history
    both = compare_stages(h, find_phases(h, [], {}))
    assert both["he_memorisation_end"] <= both["memorisation_end"]  # 95 % comes before 99 %
    assert both["he_generalisation"] is not None


def test_the_he2026_experiment_and_its_section(shipped):
    from types import SimpleNamespace

    from analyses.experiments.he2026 import he2026_section
    from analyses.pages.render import render
    from analyses.views import figure_png

    result = he2026_section(SimpleNamespace(models=[shipped], labels=["seed 0"]))
    assert result.swap[0]["quad"] > 0.97 and result.stages[0]["he_generalisation"] is not None
    assert "even activations keep" in result.describe()
    html = render("sections/he2026.html.j2", section=SimpleNamespace(
        key="he2026", anchor="he2026", title="He et al."), result=result, error=None,
        figures={k: figure_png(v) for k, v in result.figures().items()})
    assert html.count("<img") == 2 and "even activations keep" in html
