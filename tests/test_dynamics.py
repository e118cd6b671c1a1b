"""Progress measures, the lottery and the phase finder (analyses.dynamics), and their page."""

import json
import math

import pytest
import torch

from analyses.dynamics import (
    dynamics,
    frequency_losses,
    ipr,
    key_frequencies,
    lottery,
    neuron_measures,
    weight_norms,
)
from hooked_mlp import HookedMLP, MLPConfig, TrainConfig, train
from hooked_mlp.cli import main

P = 23
KEYS = [2, 5, 9]
QUARTERS = [0.0, math.pi / 2, math.pi, 3 * math.pi / 2]


def key_frequency_model(keys=KEYS, p=P, operation="add") -> HookedMLP:
    """x^2 neurons whose logits are exactly 8 * sum_k cos(w_k (a + b - c)): for each key
    frequency, 16 neurons with input phases in {0, pi/2, pi, 3pi/2}^2 and output phase their
    sum, so every other product term cancels across the 16."""
    cfg = MLPConfig(p=p, d_hidden=16 * len(keys), activation="quad", bias=False,
                    operation=operation)
    x = torch.arange(p, dtype=torch.float64)
    W_a, W_b, W_out = [], [], []
    for k in keys:
        w = 2 * math.pi * k / p
        for pa in QUARTERS:
            for pb in QUARTERS:
                W_a.append(torch.cos(w * x + pa))
                W_b.append(torch.cos(w * x + pb))
                W_out.append(torch.cos(w * x + pa + pb))
    W_in = torch.cat([torch.stack(W_a, 1), torch.stack(W_b, 1)])
    return HookedMLP.from_params(cfg, {"W_in": W_in.float(), "W_out": torch.stack(W_out).float()})


def test_the_construction_is_exact():
    model = key_frequency_model()
    pairs = torch.cartesian_prod(torch.arange(P), torch.arange(P))
    c = torch.arange(P)
    s = (pairs[:, 0] + pairs[:, 1])[:, None] - c[None, :]
    want = 8 * sum(torch.cos(2 * math.pi * k * s / P) for k in KEYS)
    assert torch.allclose(model(pairs).double(), want.double(), atol=1e-4)


def test_restricted_loss_of_a_key_frequency_model_is_its_loss_and_excluded_is_chance():
    model = key_frequency_model()
    assert key_frequencies(model) == KEYS
    out = frequency_losses(model, KEYS)
    assert out["loss_all"] < 0.5  # the construction is right, not just uniform
    assert out["restricted_loss"] == pytest.approx(out["loss_all"], abs=1e-5)
    assert out["restricted_acc"] == 1.0
    assert out["excluded_loss"] == pytest.approx(math.log(P), abs=1e-4)
    # dropping one key frequency from the restriction costs loss; excluding fewer keeps signal
    partial = frequency_losses(model, KEYS[:2])
    assert partial["restricted_loss"] > 2 * out["restricted_loss"]
    assert partial["excluded_loss"] < math.log(P) - 0.1


def test_restricted_logits_keep_each_answers_constant_term():
    """Nanda et al. keep the constant term (their code adds back each answer's mean logit): a
    per-answer bias stays in the restricted logits and is all the excluded logits keep."""
    base = key_frequency_model()
    cfg = MLPConfig(**{**base.cfg.to_dict(), "bias": True})
    b_out = 3.0 * torch.randn(P, generator=torch.Generator().manual_seed(1))
    model = HookedMLP.from_params(cfg, {"W_in": base.W_in, "b_in": torch.zeros(cfg.d_hidden),
                                        "W_out": base.W_out, "b_out": b_out})
    out = frequency_losses(model, KEYS)
    assert out["restricted_loss"] == pytest.approx(out["loss_all"], abs=1e-5)
    labels = (torch.arange(P)[:, None] + torch.arange(P)[None, :]).flatten() % P
    bias_only = torch.nn.functional.cross_entropy(b_out.expand(P * P, P).double(), labels)
    assert out["excluded_loss"] == pytest.approx(float(bias_only), abs=1e-4)
    assert abs(float(bias_only) - math.log(P)) > 0.5  # the bias is big enough to tell


def test_subtraction_uses_a_minus_b():
    model = key_frequency_model(operation="sub")
    # the same weights compute a + b, which for `sub` has no power along w_k (a - b)
    assert frequency_losses(model, KEYS)["restricted_loss"] == pytest.approx(math.log(P),
                                                                             abs=1e-3)


def test_ipr_of_one_frequency_is_one_and_of_a_flat_spectrum_one_over_k():
    K = (P - 1) // 2
    assert float(ipr(torch.eye(K)[3])) == 1.0
    assert float(ipr(torch.ones(K))) == pytest.approx(1 / K)
    model = key_frequency_model()
    m = neuron_measures(model)
    assert torch.allclose(m.ipr, torch.ones(48), atol=1e-6)
    assert m.dominant.tolist() == [k for k in KEYS for _ in range(16)]
    assert float(m.phase_error.abs().max()) < 1e-4
    assert bool(m.explained.all()) and m.summary()["n_frequencies"] == 3
    # a flat neuron: every frequency at equal amplitude, random phases, in a and in b
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(P, dtype=torch.float64)
    flat = sum(torch.cos(2 * math.pi * k * x / P + 6.28 * torch.rand(1, generator=gen))
               for k in range(1, K + 1))
    W_in = model.W_in.detach().clone()
    W_in[:P, 0], W_in[P:, 0] = flat.float(), flat.float()
    flat_model = HookedMLP.from_params(model.cfg, {"W_in": W_in, "W_out": model.W_out})
    assert float(neuron_measures(flat_model).ipr[0]) == pytest.approx(1 / K, rel=1e-4)


def test_weight_norms():
    model = key_frequency_model()
    norms = weight_norms(model)
    assert norms["W_in"] == pytest.approx(float(model.W_in.detach().double().square().sum()))
    assert norms["total"] == pytest.approx(norms["W_in"] + norms["W_out"])


def test_lottery_of_a_model_against_itself_hits_every_neuron():
    model = key_frequency_model()
    lot = lottery(model, model)
    assert lot.n_neurons == 48
    assert lot.hit_rate_magnitude == 1.0 and lot.hit_rate_alignment == 1.0
    assert lot.chance_magnitude == pytest.approx(3 * (1 / 3) ** 2)
    assert lot.final_rank_median == 1


def test_refusals():
    model = key_frequency_model()
    with pytest.raises(ValueError, match=r"key frequencies must be .* integers in \[1, 11\]"):
        frequency_losses(model, [0, 3])
    with pytest.raises(ValueError, match="coverage"):
        key_frequencies(model, coverage=1.5)
    mul = HookedMLP(MLPConfig(p=P, d_hidden=8, operation="mul"))
    with pytest.raises(ValueError, match="add or sub"):
        frequency_losses(mul, [1])
    with pytest.raises(TypeError, match="series must be"):
        dynamics([model, model])
    with pytest.raises(ValueError, match="keys: the key frequencies must be"):
        frequency_losses(model, [float("nan")])
    with pytest.raises(ValueError, match="initial_epoch must be a non-negative integer"):
        lottery(model, model, initial_epoch=-1)


def test_summaries_of_a_run_that_got_nowhere_read_as_words(tmp_path, capsys):
    from analyses.dynamics import Lottery

    none = Lottery(n_neurons=0, n_frequencies=11, hit_rate_magnitude=math.nan,
                   hit_rate_alignment=math.nan, chance_magnitude=math.nan,
                   chance_alignment=math.nan, uniform=1 / 11, final_rank_median=math.nan)
    assert "nan" not in none.describe() and "no neuron" in none.describe()
    model, _ = train(MLPConfig(p=11, d_hidden=8), TrainConfig(epochs=4), snapshots="0,2",
                     progress=False)
    text = dynamics(model.train_info.snapshots).describe()
    assert "None" not in text and "nan" not in text and "jumps never" in text
    afile = tmp_path / "f"
    afile.write_text("")
    for out in (afile, afile / "page"):  # a usage error (2), as in `questions`
        assert main(["dynamics", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"dynamics: --out {out}" in err


@pytest.fixture(scope="module")
def grokked():
    """The grokking preset at a small size: p = 23, 128 neurons, lr 1e-2, weight decay 1, 75 %
    of the pairs, 1200 epochs (about a second)."""
    cfg = MLPConfig(p=P, d_hidden=128)
    tcfg = TrainConfig.grokking(epochs=1200, lr=1e-2, weight_decay=1.0, train_frac=0.75)
    model, history = train(cfg, tcfg, snapshots="log:40", progress=False, threads=1)
    return model, history, dynamics(model.train_info.snapshots)


def test_grokking_preset_small_phases(grokked):
    model, history, d = grokked
    ph = d.phases
    # validation accuracy lags: memorised early, validation still near 0 there
    assert ph.memorisation_end is not None and ph.memorisation_end < 150
    assert history["val_acc"][ph.memorisation_end - 1] < 0.1
    # the finder's jump (steepest rise) lands where validation accuracy crosses 50 %
    assert ph.val_acc_50 is not None and ph.val_acc_50 > 2 * ph.memorisation_end
    assert abs(ph.jump - ph.val_acc_50) <= 0.2 * ph.val_acc_50
    # the restricted loss falls before the jump (Nanda et al.)
    assert ph.restricted_half is not None and ph.restricted_half < ph.jump
    m = d.measures
    assert m["ipr_mean"][-1] > 3 * m["ipr_mean"][0]  # spectra sparsify
    assert d.epochs[0] == 0 and d.epochs[-1] == 1200 and len(m["val_acc"]) == len(d.epochs)
    assert m["val_acc"][-1] == pytest.approx(model.train_info.metrics["val_acc"], abs=1e-6)
    assert d.lottery.n_neurons > 50


def test_split_measures_from_the_shared_forward_equal_their_own(grokked):
    from analyses.dynamics import split_measures
    from analyses.frequency_losses import logits_grid

    model = grokked[0].train_info.snapshots[20]
    own, shared = split_measures(model), split_measures(model, logits_grid(model))
    assert set(own) == {"train_loss", "train_acc", "val_loss", "val_acc"} == set(shared)
    for name, value in own.items():
        assert shared[name] == pytest.approx(value, rel=1e-6), name
    assert own["val_acc"] < 0.9 < own["train_acc"]  # a snapshot where the splits differ


def test_page_and_cli(tmp_path, grokked, capsys):
    model, _, _ = grokked
    from hooked_mlp.files.series import write_series

    run = tmp_path / "run"
    run.mkdir()
    series = model.train_info.snapshots
    # every other snapshot (and the last): the page's cost is in its figures, not its length
    keep = sorted({*range(0, len(series), 2), len(series) - 1})
    write_series(run / "snapshots-seed-0.safetensors", type(series)(
        series.cfg, [series.epochs[i] for i in keep],
        {k: v[keep] for k, v in series.params.items()}, series.train_info))
    (tmp_path / "page").mkdir()
    (tmp_path / "page" / "dynamics.json").write_text('{"measures": {}, "phases": {}}')
    assert main(["dynamics", str(run), "--out", str(tmp_path / "page")]) == 0  # replaces it
    assert "validation accuracy jumps" in capsys.readouterr().out
    doc = json.loads((tmp_path / "page" / "dynamics.json").read_text())
    assert doc["epochs"][-1] == 1200 and set(doc["measures"]) >= {
        "restricted_loss", "excluded_loss", "weight_norm", "ipr_mean", "phase_error_abs_mean",
        "n_frequencies", "val_acc"}
    assert doc["phases"]["jump"] is not None and doc["lottery"]["n_neurons"] > 50
    text = (tmp_path / "page" / "dynamics.html").read_text()
    assert text.count("data:image/png;base64,") == 5 and "http" not in text
    assert '<meta name="generator" content="hooked-mlp dynamics page">' in text
    for name in ("losses", "measures", "spectra", "frequencies", "lottery"):
        assert f'<img class="fig" id="fig-{name}"' in text
    assert f"<tr><td>validation accuracy jumps (steepest rise)</td><td>{doc['phases']['jump']}" \
        in text
    # the JSON is the series' own, written as before: "seconds" first, then Dynamics.to_dict
    from analyses._common import to_jsonable
    from hooked_mlp import load_snapshots

    again = dynamics(load_snapshots(str(run)))
    assert (tmp_path / "page" / "dynamics.json").read_text() == json.dumps(
        to_jsonable({"seconds": doc["seconds"]} | again.to_dict()), indent=1, allow_nan=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("keep")
    assert main(["dynamics", str(run), "--out", str(tmp_path / "other")]) == 1
    assert "mine.txt" in capsys.readouterr().err
    assert (tmp_path / "other" / "mine.txt").exists()


def test_shipped_snapshots_and_the_report_section():
    from analyses.experiments.formation import how_it_formed
    from analyses.pages.dynamics import how_it_formed_html
    from hooked_mlp import load_pretrained, load_snapshots
    from hooked_mlp.files.checkpoints import PRETRAINED_DIR
    from hooked_mlp.files.format import read_header
    from hooked_mlp.files.layout import SHIPPED_SERIES

    path = PRETRAINED_DIR / SHIPPED_SERIES
    assert path.stat().st_size < 3 * 2**20
    assert read_header(path).table["param.W_in"]["dtype"] == "F16"
    series = load_snapshots(path)
    assert series.epochs[0] == 0 and series.epochs[-1] == 2000 and len(series) == 33
    assert series.train_info.metrics["val_acc"] > 0.99
    # the same recipe and split as the shipped seed 0 (a retrained twin, see SNAPSHOTS.md)
    shipped = load_pretrained(0).train_info
    assert series.train_info.train_config == shipped.train_config
    assert torch.equal(series.train_info.train_mask, shipped.train_mask)
    # ... but not bit-identical: its last snapshot is not seed 0, so it is left out, saying why
    part = how_it_formed_html(how_it_formed([load_pretrained(0)], None, shipped=True))
    assert '<section id="how_it_formed">\n<h2>How it formed</h2>' in part
    assert "Left out: the shipped snapshots" in part
    assert "the last snapshot (epoch 2000) is not the model" in part
    assert "data:image/png;base64," not in part
    assert how_it_formed([load_pretrained(1)], None, shipped=True) is None
    assert how_it_formed([load_pretrained(0)], None, shipped=False) is None
    assert how_it_formed_html(None) == ""


def test_the_shipped_measures_cache_is_the_measures_of_the_shipped_snapshots(tmp_path):
    """The report reads the shipped series' measures from a cache: it must be what measuring
    the stored snapshots gives now (checked at three snapshots and for the lottery), and it is
    not used for another file."""
    from analyses.dynamics import snapshot_measures
    from analyses.pages.dynamics import SHIPPED_CACHE, read_measures_cache
    from hooked_mlp import load_snapshots
    from hooked_mlp.files.checkpoints import PRETRAINED_DIR
    from hooked_mlp.files.layout import SHIPPED_SERIES

    path, cache = PRETRAINED_DIR / SHIPPED_SERIES, PRETRAINED_DIR / SHIPPED_CACHE
    series = load_snapshots(path)
    d = read_measures_cache(series, path, cache)
    assert d is not None, "stale cache: run scripts/make_shipped_snapshots.py --measures-only"
    keys = key_frequencies(series[-1])
    assert d.key_frequencies == keys
    for i in (0, len(series) // 2, len(series) - 1):
        fresh, _ = snapshot_measures(series[i], keys)
        assert set(fresh) <= set(d.measures)
        for name, value in fresh.items():
            assert d.measures[name][i] == pytest.approx(value, rel=1e-5, abs=1e-7,
                                                        nan_ok=True), (i, name)
    lot = lottery(series[0], series[-1])
    assert (d.lottery.hit_rate_magnitude, d.lottery.hit_rate_alignment, d.lottery.final) == (
        lot.hit_rate_magnitude, lot.hit_rate_alignment, lot.final)
    assert d.phases.memorisation_end is not None and d.power is None
    # written for another file (or another version of the measures): not used
    doc = json.loads(cache.read_text())
    other = tmp_path / "cache.json"
    other.write_text(json.dumps(doc | {"snapshots_checksum": "sha256:" + "0" * 64}))
    assert read_measures_cache(series, path, other) is None
    other.write_text(json.dumps(doc | {"version": doc["version"] - 1}))
    assert read_measures_cache(series, path, other) is None
    other.write_text("{not json")
    assert read_measures_cache(series, path, other) is None


def test_report_section_measures_a_long_series_at_fewer_snapshots(grokked):
    from analyses.experiments.formation import how_it_formed
    from analyses.pages.dynamics import REPORT_SNAPSHOTS, how_it_formed_html

    png = b"\x89PNG\r\n\x1a\n"  # the text only: no figure drawn
    model, _, d = grokked
    part = how_it_formed_html(how_it_formed([model], None),
                              figures={"losses": png, "measures": png})
    assert f"{len(d.epochs)} snapshots (measured at {REPORT_SNAPSHOTS} of them)" in part
    assert "epochs 0..1200" in part.split("<pre>")[1].split("</pre>")[0]
    assert part.count('<img class="fig"') == 2


def test_the_page_escapes_what_it_shows(grokked, tmp_path):
    """The page shows values read from files (the source's path, the describing text) as
    text: a crafted name with markup in it is escaped by the template, never run."""
    import dataclasses

    from analyses.pages.dynamics import DYNAMICS, earlier_page, render_page
    from analyses.pages.writer import write_page

    _, _, d = grokked
    crafted = dataclasses.replace(d, source="run-<script>alert(1)</script>&<b>")
    text = render_page(crafted, {}, 1.25)
    assert "<script>alert" not in text and "<b>" not in text
    assert "run-&lt;script&gt;alert(1)&lt;/script&gt;&amp;&lt;b&gt;" in text
    assert text.count("<script>") == 1  # base.html.j2's own load check, nothing else
    assert "computed in 1.2 s" in text and "<h2 id=\"phases\">Phases</h2>" in text
    assert "<h2 id=\"losses\">" not in text  # no figures given: none shown
    # the page kind recognises the page it writes (and what it refuses)
    folder = write_page(tmp_path / "page", DYNAMICS, {
        "dynamics.html": text, "dynamics.json": json.dumps({"measures": {}, "phases": {}})})
    assert earlier_page(folder) is None
    (folder / "notes.txt").write_text("mine")
    assert earlier_page(folder) == "notes.txt"


def test_how_it_formed_measures_only_the_models_own_snapshots(grokked, monkeypatch):
    """The formation experiment measures a model's own snapshots; snapshots that end elsewhere
    than the model's weights are left out, saying why (issue 20, item 4)."""
    import copy

    from analyses.experiments import formation

    monkeypatch.setattr(formation, "REPORT_SNAPSHOTS", 5)
    model, _, _ = grokked
    f = formation.how_it_formed([model])
    assert f.left_out is None and f.dynamics is not None and f.dynamics.epochs[-1] == 1200
    assert "(measured at 5 of them)" in f.count
    edited = copy.deepcopy(model)
    with torch.no_grad():
        edited.W_in.mul_(2)
    f = formation.how_it_formed([edited])
    assert f.dynamics is None and "the last snapshot (epoch 1200) is not the model" in f.left_out
    assert f.describe().startswith("Left out: the snapshots taken while it trained were found")
    assert f.summary()["dynamics"] is None and f.summary()["left_out"] == f.left_out
