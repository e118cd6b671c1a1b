"""Issue 20, silent wrong numbers and verdicts (items 2, 3, 5 and 7's computations; items 1, 4
and the report's side of 2 run a report and are in test_trust_report.py, item 6 and the import
side of 7 in test_trust_files.py).

- item 2: a model that computes nothing (all zeros, dead ReLUs, weights x 1e-30 whose float32
  logits underflow to zero, random weights, a 1-neuron model) or whose logits overflow (x 1e30)
  gets `no verdict` from `analyses.clock_pizza.diagnose`, with the reason as a field; the
  shipped models keep theirs;
- item 3: relative numbers do not depend on the weights' scale;
- item 5: the questions cache serves a run only under its own key (a valid checkpoint of
  another config, recipe or seed is refused, naming the difference, never trained over);
- item 7: logits that overflow give an error that says so, never a number.
"""

from __future__ import annotations

import math

import pytest
import torch

from analyses.clock_pizza import NO_VERDICT, diagnose, gradient_symmetricity
from analyses.cosine_fit import fit_neurons
from analyses.experiments.questions import cached_models, run_key
from hooked_mlp import MLPConfig, TrainConfig, helpers, load_pretrained
from hooked_mlp.checks import LogitsOverflowError
from hooked_mlp.model import HookedMLP
from hooked_mlp.training.runs import train_run


def _scaled(factor: float) -> HookedMLP:
    model = load_pretrained(0)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(factor)
    return model


# ------------------------------------------------------------------------------ items 3 and 7
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


# ------------------------------------------------------------------------------ item 2
def _dead() -> HookedMLP:
    model = load_pretrained(0)
    with torch.no_grad():
        model.b_in.fill_(-1e4)  # every ReLU off on every pair: the logits are b_out alone
    return model


def _random(d_hidden: int) -> HookedMLP:
    torch.manual_seed(0)
    return HookedMLP(MLPConfig(p=113, d_hidden=d_hidden))


CASES = {
    "all zero": lambda: _scaled(0.0),
    "dead network": _dead,
    "study model x 1e-30": lambda: _scaled(1e-30),
    "random weights": lambda: _random(512),
    "one neuron": lambda: _random(1),
    "study model x 1e30": lambda: _scaled(1e30),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_model_that_computes_nothing_gets_no_verdict(name: str) -> None:
    result = diagnose(CASES[name](), n_triples=512)
    assert result.verdict == NO_VERDICT, (name, result)
    assert result.no_verdict_reason
    assert result.to_dict()["no_verdict_reason"] == result.no_verdict_reason
    if name == "study model x 1e30":
        assert "not finite" in result.no_verdict_reason
    else:
        assert result.accuracy < 0.5
        assert "pairs right" in result.no_verdict_reason


def test_zero_gradients_have_no_cosine() -> None:
    # the old code floored the cosine's norms (eps=1e-30) and read 0.0 here: a "clock" number
    assert math.isnan(gradient_symmetricity(_scaled(0.0), n_triples=64))


def test_the_shipped_models_keep_their_verdicts() -> None:
    for seed in (0, 1):
        result = diagnose(load_pretrained(seed), n_triples=1024)
        assert result.verdict == "clock"
        assert result.no_verdict_reason is None
        assert result.accuracy > 0.99
        assert result.n_triples_defined == 1024


def test_the_diagnostics_do_not_depend_on_the_output_scale() -> None:
    # the unembedding (and its bias) scaled by 1e-20: every logit shrinks by the same factor,
    # the answers are the same, and so are both diagnostics
    model, small = load_pretrained(0), load_pretrained(0)
    with torch.no_grad():
        small.W_out.mul_(1e-20)
        small.b_out.mul_(1e-20)
    a, b = diagnose(model, n_triples=256), diagnose(small, n_triples=256)
    assert b.verdict == a.verdict == "clock"
    assert b.gradient_symmetricity == pytest.approx(a.gradient_symmetricity, rel=1e-4)
    assert b.distance_irrelevance == pytest.approx(a.distance_irrelevance, rel=1e-4)


# ------------------------------------------------------------------------------ item 5
CFG = MLPConfig(p=11, d_hidden=8)
TCFG = TrainConfig(epochs=6, batch_size=4096)


def test_the_right_run_is_reused_without_training(tmp_path):
    lines = []
    cached_models(tmp_path, CFG, TCFG, [0, 1], lines.append)
    again, _ = cached_models(tmp_path, CFG, TCFG, [0, 1], lines.append)
    assert len(lines) == 1 and lines[0].startswith("training")
    assert [m.train_info.train_config.seed for m in again] == [0, 1]


@pytest.mark.parametrize("other, words", [
    ({"cfg": MLPConfig(p=11, d_hidden=8, input_encoding="binary")}, "input_encoding"),
    ({"tcfg": TrainConfig(epochs=3, batch_size=4096)}, "epochs: cached 3, asked 6"),
    ({"seeds": [1]}, "seed: cached 1, asked 0"),
])
def test_another_run_under_a_key_is_refused(tmp_path, other, words):
    folder = tmp_path / run_key(CFG, TCFG, [0])
    # what an earlier version, or a hand copy, left under this key: a valid run of another spec
    seeds = other.get("seeds", [0])
    paths = train_run(folder, other.get("cfg", CFG), other.get("tcfg", TCFG), seeds,
                      progress=False)
    if seeds != [0]:  # the file of seed 1 put where seed 0's belongs
        paths[0].rename(folder / "seed-0.safetensors")
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    with pytest.raises(ValueError, match=words):
        cached_models(tmp_path, CFG, TCFG, [0], lambda line: None)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
