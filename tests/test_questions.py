"""Activation-level fits and replacement, output-weight prediction, and the open-questions run
(cache, page, CLI)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from analyses.activation_fits import (
    accuracy_with_replaced,
    activation_replacement_curve,
    fit_activations,
    fit_grids,
    grid_spectra,
)
from analyses.predict_out import SOURCES, output_replacement_curve, predict_output_weights
from analyses.synthetic import random_cosine_model
from hooked_mlp import HookedMLP, MLPConfig
from hooked_mlp.data import all_pairs
from hooked_mlp.helpers import accuracy


@pytest.fixture(scope="module")
def synthetic():
    """A random cosine model (p = 31, 128 neurons): its pre-activations are exactly additive
    single-frequency cosines and its output rows exactly the predicted ones."""
    return random_cosine_model(128, p=31, seed=4)


def _planted(p: int = 19) -> tuple[torch.Tensor, dict]:
    x = torch.arange(p, dtype=torch.float64)
    a, b = x[:, None], x[None, :]
    w = 2 * math.pi * 3 / p
    grid = 0.5 + 1.5 * torch.cos(w * a + 0.3) + 0.7 * torch.cos(w * b - 1.1) \
        + 0.9 * torch.cos(w * (a + b) + 2.0) + 0.2 * torch.cos(w * (a - b) - 0.4)
    return grid[None], {"a": (1.5, 0.3), "b": (0.7, -1.1), "sum": (0.9, 2.0),
                        "diff": (0.2, -0.4)}


def test_closed_form_fit_recovers_a_planted_neuron():
    grid, planted = _planted()
    fit = fit_grids(grid, "full")
    assert int(fit.k[0]) == 3
    for term, (scale, phase) in planted.items():
        assert float(fit.scale[term][0]) == pytest.approx(scale, abs=1e-9)
        assert float(fit.phase[term][0]) == pytest.approx(phase, abs=1e-9)
    assert float(fit.offset[0]) == pytest.approx(0.5)
    assert float(fit.r2[0]) == pytest.approx(1.0, abs=1e-12)
    partial = fit_grids(grid, "additive")
    assert 0.5 < float(partial.r2[0]) < 0.95  # the a + b and a - b terms are left out


def test_spectra_place_functions_of_a_plus_b_on_the_diagonal():
    p = 17
    x = torch.arange(p, dtype=torch.float64)
    s = (x[:, None] + x[None, :]) % p
    grids = torch.stack([torch.cos(2 * math.pi * 5 * s / p),  # a function of a + b
                         torch.cos(2 * math.pi * 4 * x[:, None] / p).expand(p, p),  # of a alone
                         torch.zeros(p, p)])  # dead
    sp = grid_spectra(grids)
    assert float(sp.sum[0]) == pytest.approx(1.0) and float(sp.axis[0]) == pytest.approx(0.0)
    assert int(sp.sum_k[0]) == 5 and int(sp.k[0]) == 5
    assert float(sp.single_frequency[0]) == pytest.approx(1.0)
    assert float(sp.n_effective[0]) == pytest.approx(1.0)
    assert float(sp.axis[1]) == pytest.approx(1.0) and int(sp.k[1]) == 4
    assert sp.alive.tolist() == [True, True, False] and math.isnan(float(sp.sum[2]))


def test_activation_replacement_with_exact_fits_changes_nothing(synthetic):
    fits = fit_activations(synthetic, 0, "pre", "additive")
    assert float(fits.r2.min()) > 1 - 1e-9
    # the fitted grids, put in place of every pre-activation, give the model's own logits
    tokens = all_pairs(31)
    flat = fits.values().reshape(128, 31 * 31)[:, tokens[:, 0] * 31 + tokens[:, 1]].t()
    logits = synthetic.run_with_hooks(tokens, fwd_hooks=[(
        "blocks.0.mlp.hook_pre", lambda act, hook: flat.to(act.dtype))])
    torch.testing.assert_close(logits, synthetic(tokens), rtol=1e-4, atol=1e-4)
    before = accuracy(synthetic)
    assert before > 0.9
    # (one pair in 961 is 1e-3: equal up to float32 rounding of the fraction means equal)
    assert accuracy_with_replaced(synthetic, fits, range(128)) == pytest.approx(before, abs=1e-6)
    # the hook is live: zero grids in place of the fits leave every logit 0 (no biases), the
    # answer 0 everywhere, right on 1 pair in 31
    zeros = torch.zeros(128, 31, 31, dtype=torch.float64)
    assert accuracy_with_replaced(synthetic, fits, range(128), zeros) == pytest.approx(1 / 31)
    curve = activation_replacement_curve(synthetic, 0, "pre", "additive", (0.0, 0.5, 1.0),
                                         n_orders=2, fits=fits)
    assert curve.mean == pytest.approx([before] * 3, abs=1e-6)


def test_circle_inputs_make_every_first_layer_neuron_a_k1_cosine():
    model = HookedMLP(MLPConfig(p=13, d_hidden=16, input_encoding="circle"), seed=2)
    fits = fit_activations(model, 0, "pre", "additive")
    assert fits.k.tolist() == [1] * 16 and float(fits.r2.min()) > 1 - 1e-6
    assert accuracy_with_replaced(model, fits, range(16)) == pytest.approx(accuracy(model),
                                                                          abs=1e-6)


def test_which_part_of_a_neuron_the_output_reads(shipped):
    """On the study's model: every post-activation replaced by its a + b term alone (R^2 about
    0.1) keeps the accuracy, by its a and b terms alone destroys it; the additive
    pre-activation fits keep it too."""
    pre = activation_replacement_curve(shipped, 0, "pre", "additive", (1.0,), n_orders=1)
    sums = activation_replacement_curve(shipped, 0, "post", "sum", (1.0,), n_orders=1)
    axes = activation_replacement_curve(shipped, 0, "post", "additive", (1.0,), n_orders=1)
    assert pre.mean[0] > 0.99 and sums.mean[0] > 0.99
    assert axes.mean[0] < 0.05


@pytest.mark.parametrize("source", [s for s in SOURCES if s != "diagonal"])
def test_predicted_outputs_reproduce_the_synthetic_models_accuracy(synthetic, source):
    curve = output_replacement_curve(synthetic, source, "input", (0.0, 0.5, 1.0), n_orders=2)
    assert curve.original == pytest.approx(accuracy(synthetic), abs=1e-6)
    assert curve.original > 0.9
    assert curve.mean("predicted") == pytest.approx([curve.original] * 3, abs=1e-12)
    pred = curve.prediction
    tol = 1e-3 if source == "post" else 1e-5  # post: read from float32 activations
    assert pred.r2 > 1 - tol and pred.k_agree == 1.0
    assert pred.median_abs_phase_error < tol
    if source != "post":  # unit input amplitudes: the global factor is the output amplitude, 1
        assert pred.scale == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("source", ["weights", "pre"])
def test_predicted_outputs_restore_overwritten_rows(synthetic, source):
    """Every other output row of the synthetic model overwritten by noise: the accuracy falls
    to near chance; the rows predicted from the inputs alone (the global factor, fitted on the
    rows that are left, is about 1/2) give back the intact model's accuracy exactly."""
    params = synthetic.state_tensors()
    broken = params["W_out"].clone()
    broken[::2] = 3 * torch.randn(broken[::2].shape, generator=torch.Generator().manual_seed(0))
    model = HookedMLP.from_params(synthetic.cfg, {**params, "W_out": broken})
    curve = output_replacement_curve(model, source, "input", (0.0, 1.0), n_orders=1)
    assert curve.original < 0.2
    assert 0.4 < curve.prediction.scale < 0.6
    assert curve.mean("predicted")[1] == pytest.approx(accuracy(synthetic), abs=1e-6)
    assert curve.mean("fitted")[1] < 0.5  # each row's own fit keeps the noise rows' damage


def test_dead_neurons_do_not_count_in_the_frequency_agreement(synthetic):
    params = synthetic.state_tensors()
    W_in, W_out = params["W_in"].clone(), params["W_out"].clone()
    W_in[:, :32] = 0.0  # 32 dead neurons (no biases: their activation is 0 on every pair)
    W_out[:32] = torch.randn(32, 31, generator=torch.Generator().manual_seed(1))
    pred = predict_output_weights(HookedMLP.from_params(synthetic.cfg, {"W_in": W_in,
                                                                        "W_out": W_out}), "pre")
    assert pred.alive.tolist() == [False] * 32 + [True] * 96
    assert pred.k_agree == 1.0 and bool(pred.phase_error[:32].isnan().all())
    assert pred.to_dict()["alive_fraction"] == 0.75


def test_predictions_follow_the_operation_for_a_minus_b():
    """For a - b the predicted phase is phi_a - phi_b and the post term is the (k, -k) one."""
    sub = random_cosine_model(64, p=23, seed=1, operation="sub")
    for source in ("weights", "pre", "post"):
        curve = output_replacement_curve(sub, source, "input", (0.0, 1.0), n_orders=1)
        assert curve.prediction.r2 > 0.999
        assert curve.mean("predicted")[1] == pytest.approx(curve.original, abs=2e-3)


def test_matched_filter_prediction_reads_the_whole_function_of_a_plus_b(synthetic):
    """`diagonal`: each row is the neuron's mean over the pairs of each sum. On the synthetic
    model that is its cos(w (a + b) + phi_a + phi_b) term plus the ReLU's harmonics, so the
    frequency agrees everywhere and the prediction explains most, not all, of the rows."""
    from analyses.predict_out import diagonal_functions

    f = diagonal_functions(synthetic)
    _, cache = synthetic.run_with_cache(torch.tensor([[a, b] for a in range(31)
                                                      for b in range(31)]))
    grid = cache["blocks.0.mlp.hook_post"][:, 7].reshape(31, 31).double()
    by_sum = torch.stack([grid[torch.arange(31), (s - torch.arange(31)) % 31].mean()
                          for s in range(31)])
    torch.testing.assert_close(f[7], by_sum - by_sum.mean())
    pred = predict_output_weights(synthetic, "diagonal")
    assert pred.k_agree == 1.0 and 0.9 < pred.r2 < 0.99


def test_predicted_outputs_of_the_study_model(shipped):
    """The study's one-layer model: the prediction from the input weights explains most of the
    output weights, and keeps most, not all, of the accuracy (numbers on the questions page)."""
    curve = output_replacement_curve(shipped, "weights", "input", (0.0, 1.0), n_orders=1)
    pred = curve.prediction
    assert pred.k_agree == 1.0 and pred.median_abs_phase_error < 0.1
    assert 0.7 < pred.r2 < 0.9
    assert 0.6 < curve.mean("predicted")[1] < curve.mean("fitted")[1] < curve.original


def test_predictions_refuse_what_they_cannot_predict():
    circle = HookedMLP(MLPConfig(p=11, d_hidden=8, input_encoding="circle"))
    with pytest.raises(ValueError, match="input_encoding='circle'"):
        predict_output_weights(circle, "weights")
    with pytest.raises(ValueError, match="source must be one of"):
        predict_output_weights(circle, "nope")
    with pytest.raises(ValueError, match="holds for add and sub only"):
        predict_output_weights(HookedMLP(MLPConfig(p=11, d_hidden=8, operation="mul")), "pre")
    with pytest.raises(ValueError, match="layer must be an integer in"):
        fit_activations(circle, layer=1)
    with pytest.raises(ValueError, match="form must be one of"):
        fit_activations(circle, form="cubic")


# ------------------------------------------------------------------------------ the run
TINY = dict(name="tiny", p=13, d_hidden=32, epochs=40, seeds=(0, 1),
            encodings=("one_hot", "circle"), depths=(1, 2), retries=((("weight_decay", 0.05),),),
            fractions=(0.0, 0.5, 1.0), n_orders=1, small_p=False)


def test_questions_run_caches_and_writes_a_page(tmp_path):
    from analyses.experiments.questions import QuestionsPlan, run_questions
    from analyses.pages.questions import write_questions_page

    plan = QuestionsPlan(**TINY)
    lines: list[str] = []
    first = run_questions(tmp_path / "cache", plan, log=lines.append)
    assert any(line.startswith("training circle") for line in lines)
    assert sorted(first.encodings) == ["circle", "one_hot"] and sorted(first.depths) == ["1", "2"]
    # one_hot did not learn at p = 13 in 40 epochs: a try with the plan's other recipe follows
    one_hot = first.encodings["one_hot"]
    assert one_hot["learned_with"] is None and len(one_hot["tries"]) == 1
    assert one_hot["tries"][0]["recipe"]["weight_decay"] == 0.05
    assert len(first.depths["2"]["summary"]["layers"]) == 2
    # what the page draws is computed here, by the experiment: the analysed group, each layer's
    # frequency counts, the example neurons' spectra (of the stored grids, to 4 digits)
    from analyses.experiments.questions import (
        analysed_group,
        example_spectrum,
        single_frequency_counts,
    )

    assert one_hot["analysed"] in (0, 1) and analysed_group(one_hot) is (
        [one_hot["study_recipe"], *one_hot["tries"]][one_hot["analysed"]])
    for group in (first.encodings["circle"]["study_recipe"], first.depths["2"]):
        assert group["frequency_counts"] == [single_frequency_counts(group, layer)
                                             for layer in range(group["config"]["n_layers"])]
        for ex in group["examples"]["layers"]:
            for grid, spectrum in zip(ex["grids"], ex["spectra"], strict=True):
                assert torch.allclose(torch.tensor(spectrum, dtype=torch.float64),
                                      example_spectrum(grid), rtol=1e-3, atol=1e-3)
    again: list[str] = []
    second = run_questions(tmp_path / "cache", plan, log=again.append)
    assert not any(line.startswith(("training", "resuming")) for line in again)
    assert second.timings["train_s"] < first.timings["train_s"]
    for depth in ("1", "2"):  # the same models, so the same numbers
        assert second.to_dict()["depths"][depth]["models"] == \
            first.to_dict()["depths"][depth]["models"]
    assert first.small_p == {}  # the plan leaves it out; tests/test_encodings.py trains it
    second.small_p = {"circle": {"train_acc": 1.0, "val_acc": 0.914}}
    html_path, json_path = write_questions_page(second, tmp_path / "out", "hooked-mlp questions")
    page = html_path.read_text()
    assert "At a small p" in page and "91.4 %" in page
    for text in ("Open question 1", "Open question 3", "Measured answer",
                 "What would change the answer", "data:image/png;base64,"):
        assert text in page
    assert "http://" not in page and "https://" not in page
    doc = json.loads(json_path.read_text())
    assert doc["plan"]["p"] == 13 and doc["timings"]["total_s"] > 0
    assert doc["command"] == "hooked-mlp questions"
    assert page.startswith("<!doctype html>")
    assert '<meta name="generator" content="hooked-mlp questions page">' in page
    assert page.count('<img class="fig"') == 7 and page.count("<figcaption>") == 7

    # values reach the page as text, never as markup (autoescaped templates)
    crafted = "<script>alert(1)</script>"
    second.encodings["circle"]["study_recipe"]["label"] = f"circle {crafted}"
    (tmp_path / "out" / "cache").mkdir()  # the default cache lies in the page's folder
    (tmp_path / "out" / "cache" / "run.txt").write_text("kept")
    html_path, _ = write_questions_page(second, tmp_path / "out", f"hooked-mlp {crafted}")
    assert (tmp_path / "out" / "cache" / "run.txt").read_text() == "kept"
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == [
        "cache", "questions.html", "questions.json"]
    page = html_path.read_text()
    assert "<script>alert" not in page
    assert "<td>circle &lt;script&gt;alert(1)&lt;/script&gt;</td>" in page  # the runs table
    assert "<code>hooked-mlp &lt;script&gt;alert(1)&lt;/script&gt;</code>" in page


def test_questions_page_replaces_only_its_own_files(tmp_path):
    """The page goes through the one page writer: it replaces an earlier questions page (and
    its JSON; the first test), and refuses anyone else's file of the same name before writing
    anything."""
    from analyses.experiments.questions import QuestionsPlan, QuestionsResult
    from analyses.pages.questions import write_questions_page

    result = QuestionsResult(QuestionsPlan(**TINY))
    result.encodings = {}
    out = tmp_path / "out"
    out.mkdir()
    foreign = "<html><body>someone else's</body></html>"
    (out / "questions.html").write_text(foreign)
    with pytest.raises(ValueError, match="questions.html exists and is not a hooked-mlp "
                       "questions page"):
        write_questions_page(result, out)
    assert not (out / "questions.json").exists()
    (out / "questions.html").unlink()
    (out / "questions.json").write_text('{"results": []}')
    with pytest.raises(ValueError, match="questions.json exists and is not a hooked-mlp "
                       "questions page's JSON"):
        write_questions_page(result, out)
    assert not (out / "questions.html").exists()
    assert (out / "questions.json").read_text() == '{"results": []}'
    (out / "questions.json").unlink()


def test_the_page_draws_what_the_experiment_computed():
    """The spectra and frequency counts the page draws come from the experiment's functions."""
    from analyses.experiments.questions import example_spectrum, single_frequency_counts

    p = 11
    a = torch.arange(p, dtype=torch.float64)[:, None].expand(p, p)
    spectrum = example_spectrum((2.0 + torch.cos(2 * math.pi * 3 * a / p)).tolist())
    assert spectrum.shape == (p, p)
    peaks = (spectrum == spectrum.max()).nonzero().tolist()
    assert sorted(peaks) == [[p // 2 - 3, p // 2], [p // 2 + 3, p // 2]]  # k_a = ±3, k_b = 0
    assert float(spectrum.min()) == pytest.approx(float(spectrum.max()) - 6)  # the 1e-6 floor
    group = {"config": {"p": p}, "models": [{"layers": [{"k_single": [3, 3, 1]}]},
                                            {"layers": [{"k_single": [5]}]}]}
    assert single_frequency_counts(group, 0) == [1, 0, 2, 0, 1]
    assert single_frequency_counts({"config": {"p": p}, "models": [
        {"layers": [{"k_single": []}]}]}) is None


def test_questions_plan_and_cli_refuse_bad_input(tmp_path, capsys):
    from analyses.experiments.questions import QuestionsPlan
    from hooked_mlp.cli import main

    with pytest.raises(ValueError, match="QuestionsPlan.encodings must be names in"):
        QuestionsPlan(encodings=("fourier",))
    with pytest.raises(ValueError, match="QuestionsPlan.retries change unknown fields"):
        QuestionsPlan(retries=((("width", 3),),))
    with pytest.raises(ValueError, match="QuestionsPlan.seeds must not be empty"):
        QuestionsPlan(seeds=())
    with pytest.raises(TypeError, match="QuestionsPlan.encodings must be a tuple .* 'circle'"):
        QuestionsPlan(encodings="circle")
    from analyses.experiments.questions import run_questions

    with pytest.raises(TypeError, match="cache must be a folder path"):
        run_questions(None, QuestionsPlan(), log=lambda line: None)
    (tmp_path / "c").write_text("")
    with pytest.raises(ValueError, match="cache must be a folder, but .* is a file"):
        run_questions(tmp_path / "c" / "runs", QuestionsPlan(), log=lambda line: None)
    afile = tmp_path / "f"
    afile.write_text("")
    assert main(["questions", "--out", str(afile)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file" in err[0]
    # a --cache (or an --out) that cannot be a folder is refused before any training (it used
    # to train a whole run first and then fail with "[Errno 20] Not a directory")
    for argv, flag in ((["--out", str(tmp_path / "q"), "--cache", str(afile)], "--cache"),
                       (["--out", str(tmp_path / "q"), "--cache", str(afile / "c")], "--cache"),
                       (["--out", str(afile / "q")], "--out")):
        assert main(["questions", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"questions: {flag} " in err and "Errno" not in err
    assert not (tmp_path / "q").exists()
