"""Issue 20, items 3 and 7 (the computations): relative numbers do not depend on the weights'
scale, and logits that overflow give an error that says so, never a number."""

from __future__ import annotations

import pytest
import torch

from analyses.cosine_fit import fit_neurons
from hooked_mlp import helpers, load_pretrained
from hooked_mlp.checks import LogitsOverflowError


def _scaled(factor: float):
    model = load_pretrained(0)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(factor)
    return model


RELATIVE = ("scale_rel_diff_median", "offset_diff_over_scale_median", "offset_over_scale_median",
            "frac_scale_within_10pct", "frac_k_a_eq_b", "r2_a_median")


def test_relative_fit_numbers_do_not_depend_on_the_scale() -> None:
    # the old code divided by mean_scale.clamp_min(1e-12): 2.7e-21 instead of 0.0057 at 1e-30
    ref = fit_neurons(load_pretrained(0)).summary()
    assert 0.001 < ref["scale_rel_diff_median"] < 0.05
    for factor in (1e-30, 1e20):
        s = fit_neurons(_scaled(factor)).summary()
        for key in RELATIVE:
            assert s[key] == pytest.approx(ref[key], rel=1e-3, abs=1e-6), (factor, key)


def test_a_zero_scale_gives_nan_not_a_number() -> None:
    from analyses.cosine_fit import _ratio

    r = _ratio(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 4.0]))
    assert torch.isnan(r[:2]).all() and float(r[2]) == 0.5


@pytest.mark.parametrize("what", ["accuracy", "loss"])
def test_overflowed_logits_are_refused(what: str) -> None:
    # the study model x 1e30: every logit is inf; the old helpers answered loss NaN and
    # accuracy 1.1 % (ties)
    with pytest.raises(LogitsOverflowError, match="overflowed"):
        getattr(helpers, what)(_scaled(1e30))


def test_the_computations_refuse_overflowed_logits() -> None:
    # each computation that reads an accuracy or a loss off logits says they overflowed,
    # rather than answer from ties between infinities (the old code gave 1.1 % and NaN)
    from analyses.dynamics import frequency_losses, split_measures
    from analyses.replacement import replacement_curve

    big = _scaled(1e30)
    with pytest.raises(LogitsOverflowError, match="overflowed"):
        split_measures(big)
    with pytest.raises(LogitsOverflowError, match="overflowed"):
        frequency_losses(big, [1, 2])
    with pytest.raises(LogitsOverflowError, match="overflowed"):
        replacement_curve(big, fractions=[0.5], n_orders=1)
