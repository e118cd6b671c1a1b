"""Issue 20, the report's items: no number about the wrong model, no report lost to one part
(a probe that edits, raises or hangs; an overflowing model; a tiny p), figure files that stay
inside their folder."""

from __future__ import annotations

import json
import time

import pytest
import torch

import analyses.probes as probes_mod
from analyses.probes import Probe, ProbeResult, run_probes
from hooked_mlp import MLPConfig, TrainConfig, load_pretrained
from hooked_mlp.helpers import accuracy


@pytest.fixture(scope="module")
def model():
    return load_pretrained(0)


def _register(monkeypatch, **funcs):
    found = {name: Probe(name, f, "tests") for name, f in sorted(funcs.items())}
    monkeypatch.setattr(probes_mod, "registered_probes", lambda: found)


def _vandal(model):
    """Scales W_out, adds a hook, freezes W_in and leaves training mode on"""
    with torch.no_grad():
        model.W_out.mul_(0.01)
    next(iter(model.hook_dict.values())).add_hook(lambda x, hook: x)
    model.W_in.requires_grad_(False)
    model.train()
    return ProbeResult({"done": 1})


def _witness(model):
    """Measures the accuracy it is given"""
    return ProbeResult({"accuracy": accuracy(model)})


def test_a_probe_that_edits_its_model_changes_nothing_else(monkeypatch, model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expected = accuracy(model)
    _register(monkeypatch, a_vandal=_vandal, b_witness=_witness)
    runs = run_probes([model], ["seed 0"])
    assert runs.per_model["b_witness"][0]["data"]["accuracy"] == expected
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not model.training and model.W_in.requires_grad
    changed = " ".join(runs.per_model["a_vandal"][0]["changed_model"])
    for word in ("weights", "W_out", "requires_grad", "training mode", "hooks"):
        assert word in changed
    assert "changed_model" not in runs.per_model["b_witness"][0]


class _BadSummary:
    def to_dict(self):
        return {"x": 1}

    def summary(self):
        raise KeyError("summary broke")


class _BadFigures(_BadSummary):
    def summary(self):
        return "fine"

    def figures(self):
        raise ZeroDivisionError("figures broke")


def _raises(error):
    def probe(model):
        """Raises"""
        raise error
    return probe


def test_a_probe_that_raises_costs_only_its_row(monkeypatch, model):
    _register(monkeypatch, runtime=_raises(RuntimeError("boom")),
              oserror=_raises(OSError(28, "No space left on device")),
              refuses=_raises(ValueError("needs p >= 3")),
              summary=lambda m: _BadSummary(), figures=lambda m: _BadFigures(),
              witness=_witness)
    runs = run_probes([model], ["seed 0"])
    rows = {name: r[0] for name, r in runs.per_model.items()}
    assert rows["runtime"]["failure"] == "failed" and "RuntimeError: boom" in rows[
        "runtime"]["error"]
    assert "OSError" in rows["oserror"]["error"] and "No space" in rows["oserror"]["error"]
    assert rows["refuses"] == {"model": "seed 0", "failure": "does not apply",
                               "error": "needs p >= 3"}
    assert "KeyError" in rows["summary"]["error"]
    assert "ZeroDivisionError" in rows["figures"]["error"]
    assert rows["witness"]["data"]["accuracy"] == accuracy(model)


def test_a_hanging_probe_is_stopped_by_its_time_limit(monkeypatch, model):
    def hangs(m):
        """Never returns"""
        while True:
            time.sleep(0.05)

    _register(monkeypatch, hangs=hangs, witness=_witness)
    start = time.monotonic()
    runs = run_probes([model], ["seed 0"], time_limit=0.5)
    assert time.monotonic() - start < 30
    row = runs.per_model["hangs"][0]
    assert row["failure"] == "timed out" and "0.5 s" in row["error"]
    assert "data" in runs.per_model["witness"][0]


@pytest.fixture(scope="module")
def huge(tmp_path_factory):
    """A small trained model scaled by 1e30: its logits overflow float32."""
    from hooked_mlp import train
    from hooked_mlp.files.checkpoints import save

    m, _ = train(MLPConfig(p=23, d_hidden=24), TrainConfig(epochs=20), progress=False)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(1e30)
    path = tmp_path_factory.mktemp("huge") / "huge.safetensors"
    save(m, path)
    return path


def test_a_report_is_written_on_an_overflowing_model_with_a_raising_probe(
        monkeypatch, tmp_path, huge):
    from analyses.pages.report import run_report

    _register(monkeypatch, runtime=_raises(RuntimeError("boom")),
              oserror=_raises(OSError(5, "Input/output error")))
    res = run_report(tmp_path / "r", model_paths=[huge], progress=False,
                     synthetic_seeds=range(1), n_orders_scale=0.1)
    data = json.loads(res.summary.read_text())
    assert data["sections_failed"]["study"].startswith("overflow: the logits overflowed")
    page = res.html.read_text()
    assert "overflow" in page and "Sections left out" in page
    assert "RuntimeError: boom" in page and "OSError" in page
    assert data["probes"]["runtime"]["per_model"][0]["failure"] == "failed"


def test_cli_probe_figures_stay_inside_their_folder(monkeypatch, tmp_path, capsys):
    from matplotlib.figure import Figure

    from analyses.pages.writer import png_owner
    from hooked_mlp.cli import main

    def drawing(m):
        """Draws"""
        return ProbeResult({"x": 1}, {"../../x": Figure, "ok": Figure})

    _register(monkeypatch, drawing=drawing)
    figs = tmp_path / "a" / "b" / "figs"
    assert main(["probe", "drawing", "--figures", str(figs)]) == 0
    assert sorted(p.name for p in figs.iterdir()) == ["drawing-ok.png", "drawing-x.png"]
    assert not list(tmp_path.glob("*.png")) and not list((tmp_path / "a").glob("*.png"))
    assert png_owner(figs / "drawing-x.png") is not None
    assert main(["probe", "drawing", "--figures", str(figs)]) == 0  # its own files: replaced

    (figs / "drawing-ok.png").write_bytes(b"someone else's")
    capsys.readouterr()
    assert main(["probe", "drawing", "--figures", str(figs)]) == 1
    assert "not written by" in capsys.readouterr().err
    assert (figs / "drawing-ok.png").read_bytes() == b"someone else's"


def test_p2_and_p3_get_the_same_kind_of_report(tmp_path):
    from analyses.pages.report import run_report
    from hooked_mlp import train
    from hooked_mlp.files.checkpoints import save

    verdicts = {}
    for p in (2, 3):
        m, _ = train(MLPConfig(p=p, d_hidden=8), TrainConfig(epochs=5), progress=False)
        save(m, tmp_path / f"p{p}.safetensors")
        res = run_report(tmp_path / f"r{p}", model_paths=[tmp_path / f"p{p}.safetensors"],
                         progress=False, synthetic_seeds=range(1), n_orders_scale=0.1)
        assert res.data["sections_failed"] == {}
        verdicts[p] = [c["verdict"] for c in res.data["claims"]]
    assert verdicts[2][1:] == verdicts[3][1:] == ["n/a"] * (len(verdicts[3]) - 1)


def test_how_it_formed_uses_only_the_models_own_snapshots(tmp_path):
    from analyses.experiments.report import SECTIONS, ReportContext
    from analyses.experiments.report import run_report as run_sections
    from analyses.pages.report import render_report
    from hooked_mlp import load, train
    from hooked_mlp.cli import main
    from hooked_mlp.files.checkpoints import save

    formed = [s for s in SECTIONS if s.name == "how_it_formed"]

    def section(model, path):
        report = run_sections(ReportContext([model], ["m"], model_paths=[path]), formed)
        return report["how_it_formed"], render_report(report, 0.0, "")

    run = tmp_path / "run"
    assert main(["train", "--p", "23", "--d-hidden", "16", "--epochs", "30", "--seed", "0",
                 "--snapshots", "every:10", "--out", str(run), "--no-progress"]) == 0
    own = load(run / "seed-0.safetensors")
    formation, html = section(own, run / "seed-0.safetensors")
    assert formation.dynamics is not None and formation.dynamics.epochs == [0, 10, 20, 30]
    assert "Left out" not in html and 'id="fig-how_it_formed-losses"' in html

    other, _ = train(MLPConfig(p=29, d_hidden=16), TrainConfig(epochs=30), progress=False)
    save(other, run / "seed-0.safetensors")  # a p = 29 model beside the p = 23 snapshots
    formation, html = section(other, run / "seed-0.safetensors")
    assert formation.dynamics is None and "another model" in formation.left_out
    assert "Left out" in html and "another model" in html and "fig-how_it_formed" not in html


def test_a_dead_model_gets_no_verdict_on_what_it_computes(tmp_path):
    from analyses.pages.report import run_report
    from hooked_mlp import train
    from hooked_mlp.files.checkpoints import save

    m, _ = train(MLPConfig(p=23, d_hidden=24), TrainConfig(epochs=5), progress=False)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
    save(m, tmp_path / "zero.safetensors")
    res = run_report(tmp_path / "r", model_paths=[tmp_path / "zero.safetensors"],
                     progress=False, synthetic_seeds=range(1), n_orders_scale=0.1)
    verdicts = [c["verdict"] for c in res.data["claims"]]
    # training differs (it is a failed model); random cosine models (claim 5) are no model's
    assert verdicts[0] == "differs" and verdicts[4] in ("holds", "partly", "differs")
    assert [v for i, v in enumerate(verdicts) if i not in (0, 4)] == ["no verdict"] * 5
    assert all("at chance" in c["measured"] for i, c in enumerate(res.data["claims"])
               if i not in (0, 4))
    assert "no verdict" in res.html.read_text()


def _hangs(m):
    """Never returns"""
    while True:
        time.sleep(0.05)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e300"])
def test_cli_probe_time_limit_must_be_positive_seconds(value, capsys):
    from hooked_mlp.cli import main

    for command in (["report", "--no-progress"], ["probe", "weights"]):
        capsys.readouterr()
        assert main([*command, f"--probe-time-limit={value}"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--probe-time-limit must be a number of seconds" in err
        assert err.startswith(f"hooked-mlp: error: {command[0]}: ")
    assert main(["probe", "weights", "--probe-time-limit", "soon"]) == 2
    assert "expected a number, got 'soon'" in capsys.readouterr().err


def test_cli_probe_time_limit_stops_a_hanging_probe(monkeypatch, capsys):
    from hooked_mlp.cli import main

    _register(monkeypatch, hangs=_hangs)
    start = time.monotonic()
    assert main(["probe", "hangs", "--probe-time-limit", "0.5"]) == 1
    assert time.monotonic() - start < 60
    err = capsys.readouterr().err
    assert err == ("hooked-mlp: error: the probe 'hangs' ran past its time limit of 0.5 s\n")


def test_cli_report_probe_time_limit_reaches_the_probes(monkeypatch, tmp_path, capsys):
    from analyses.probes import PROBE_TIME_LIMIT
    from hooked_mlp import train
    from hooked_mlp.cli import build_parser, main
    from hooked_mlp.files.checkpoints import save

    m, _ = train(MLPConfig(p=3, d_hidden=8), TrainConfig(epochs=5), progress=False)
    save(m, tmp_path / "p3.safetensors")
    _register(monkeypatch, hangs=_hangs, witness=_witness)
    assert main(["report", "--model", str(tmp_path / "p3.safetensors"), "--out",
                 str(tmp_path / "r"), "--no-progress", "--probe-time-limit", "0.5"]) == 0
    data = json.loads((tmp_path / "r" / "summary.json").read_text())
    row = data["probes"]["hangs"]["per_model"][0]
    assert row["failure"] == "timed out" and "0.5 s" in row["error"]
    assert "data" in data["probes"]["witness"]["per_model"][0]
    # the default the help names is the report's
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["report"]
    text = next(a.help for a in sub._actions if a.dest == "probe_time_limit")
    assert f"default {PROBE_TIME_LIMIT:g}" in text


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "30", True])
def test_run_report_refuses_a_bad_probe_time_limit_before_any_work(tmp_path, bad):
    from analyses.pages.report import run_report

    with pytest.raises((TypeError, ValueError), match="probe_time_limit"):
        run_report(tmp_path / "r", probe_time_limit=bad, progress=False)
    assert not (tmp_path / "r").exists()
