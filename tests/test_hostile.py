"""Hostile and broken input, class by class: no data lost, no crash, no memory bomb, no silent
wrong number, no unclear error, no untrusted text shown raw. Each row is a reproduced fault."""

import errno
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyses.cosine_fit import fit_neurons
from analyses.fourier import frequency_histogram
from analyses.replacement import replacement_curve
from analyses.synthetic import synthetic_curve
from hooked_mlp import CheckpointError, HookedMLP, MLPConfig, TrainConfig, load, save
from hooked_mlp.cli import main
from hooked_mlp.files.describe import describe
from hooked_mlp.files.describe import format_description as _format
from hooked_mlp.files.format import _checksum
from hooked_mlp.files.layout import STATE_FILE
from hooked_mlp.helpers import accuracy
from hooked_mlp.training.runs import train_run

CLI = [sys.executable, "-m", "hooked_mlp.cli"]
TINY = ["--p", "5", "--d-hidden", "3", "--epochs", "2"]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, status=(1, 2)):
    return code in status and err.startswith("hooked-mlp: error: ") and err.count("\n") == 1


def resign(path: Path, edit) -> None:
    """Apply `edit` to a hooked-mlp file's metadata document and recompute its checksum, as a
    buggy or malicious writer would, so that what lies behind the checksum is reached."""
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    doc = json.loads(header["__metadata__"]["hooked_mlp"])
    edit(doc)
    table = {k: v for k, v in header.items() if k != "__metadata__"}
    doc["checksum"] = _checksum(doc, table, data[8 + n :])
    header["__metadata__"]["hooked_mlp"] = json.dumps(doc)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])


# ------------------------------------------------------------------------------ data lost
def test_data_loss_lock_links_are_never_followed(tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for kind in ("symlink", "hardlink"):
        for argv in (["train", *TINY, "--out"], ["train", "--resume"]):
            folder = tmp_path / f"{kind}-{argv[-1][2:]}"
            folder.mkdir()
            if kind == "symlink":
                (folder / ".lock").symlink_to(victim)
            else:
                os.link(victim, folder / ".lock")
            if argv[-1] == "--resume":  # a folder with a run in it, so the lock is taken
                (folder / STATE_FILE).write_bytes(b"x")
            code, _, err = run_cli(capsys, *argv, folder)
            assert one_line_error(code, err), (kind, argv, err)
            assert "lock" in err and victim.read_text() == "precious", (kind, argv)


def test_data_loss_resume_on_a_folder_without_a_run_leaves_nothing(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path)
    assert one_line_error(code, err) and "holds no run to resume" in err
    assert os.listdir(tmp_path) == []


def test_data_loss_save_refuses_what_load_would_refuse(tmp_path):
    good = HookedMLP(MLPConfig(p=5, d_hidden=3))
    path = tmp_path / "m.safetensors"
    save(good, path)
    before = path.read_bytes()
    bad = HookedMLP(MLPConfig(p=5, d_hidden=3))
    bad.W_in.data[0, 0] = float("inf")
    with pytest.raises(ValueError, match="not written"):
        save(bad, path)
    assert path.read_bytes() == before


def test_data_loss_every_argument_is_checked_before_any_work(tmp_path, capsys):
    started = time.perf_counter()
    for threads in ("2147483648", "5000", "0"):
        code, _, err = run_cli(capsys, "train", *TINY, "--threads", threads, "--backend",
                               "torch", "--out", tmp_path / "run")
        assert one_line_error(code, err, (2,)) and "--threads" in err
    assert not (tmp_path / "run").exists()
    assert time.perf_counter() - started < 5


def test_data_loss_a_report_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    import analyses.pages.report as report

    model_path = tmp_path / "m.safetensors"
    save(__import__("hooked_mlp").train(MLPConfig(p=11, d_hidden=16), TrainConfig(epochs=3),
                                        progress=False)[0], model_path)
    out = tmp_path / "report"
    report.run_report(out, [model_path], progress=False, synthetic_seeds=[0],
                      n_orders_scale=0.1)
    files = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    import analyses.pages.writer as writer

    real = writer.atomic_write_bytes

    def disk_full(path, data):
        if Path(path).name == "report.html":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(writer, "atomic_write_bytes", disk_full)
    with pytest.raises(OSError, match=f"No space left on device.*{out.name}"):
        report.run_report(out, [model_path], progress=False, synthetic_seeds=[1],
                          n_orders_scale=0.1)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors", "report"]  # no temporary left
    # and a folder holding anything else is never replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    monkeypatch.setattr(writer, "atomic_write_bytes", real)
    with pytest.raises(ValueError, match="not part of an earlier output of this kind"):
        report.run_report(tmp_path / "mine", progress=False)
    # nor a folder that looks like one at the top but holds a stranger's files below, and no
    # model is read from inside the folder that the report replaces
    (tmp_path / "exp" / "models").mkdir(parents=True)
    save(HookedMLP(MLPConfig(p=11, d_hidden=16)), tmp_path / "exp" / "models" / "mine.safetensors")
    with pytest.raises(ValueError, match="lies inside the output folder"):
        report.run_report(tmp_path / "exp", [tmp_path / "exp" / "models" / "mine.safetensors"],
                          progress=False)
    with pytest.raises(ValueError, match="not part of an earlier output of this kind"):
        report.run_report(tmp_path / "exp", [model_path], progress=False)
    assert (tmp_path / "exp" / "models" / "mine.safetensors").exists()


def test_data_loss_temporaries_of_a_killed_run_are_removed(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    stale = [folder / ".state.safetensors.abc123.tmp", folder / ".seed-0.safetensors.x.tmp"]
    for f in stale:
        f.write_bytes(b"half a file")
    keep = folder / ".notes.tmp"
    keep.write_text("not ours")
    train_run(folder, MLPConfig(p=5, d_hidden=3), TrainConfig(epochs=1), progress=False)
    assert not any(f.exists() for f in stale) and keep.exists()


# ------------------------------------------------------------------------------ crashes, hangs
@pytest.mark.parametrize(("seeds", "message"), [
    ("0-1000000000", "1,000,000,001 seeds; one run takes at most 100,000"),
    ("0-10000000", "10,000,001 seeds"),
    ("0_1", "'0_1' is not a seed"),
    ("1e3", "is not a seed"),
    ("٣", "is not a seed"),  # an Arabic-Indic digit: int() would take it
    ("4-2", "ends before it starts"),
])
def test_crash_seed_lists_are_refused_at_once(tmp_path, capsys, seeds, message):
    started = time.perf_counter()
    code, _, err = run_cli(capsys, "train", *TINY, "--seeds", seeds, "--out", tmp_path / "x")
    assert one_line_error(code, err, (2,)) and message in err, err
    assert time.perf_counter() - started < 2


def test_crash_a_stored_thread_count_is_checked_on_resume(tmp_path, capsys):
    folder = tmp_path / "run"
    train_run(folder, MLPConfig(p=5, d_hidden=3), TrainConfig(epochs=5), checkpoint_every=2,
              progress=False)
    (folder / "seed-0.safetensors").unlink()
    from hooked_mlp.training.runs import _write_state
    from hooked_mlp.training.trainer import BatchedTrainer

    trainer = BatchedTrainer(MLPConfig(p=5, d_hidden=3), TrainConfig(epochs=5), [0])
    _write_state(folder, trainer, threads=1, every=2, wall_s=0.0, command=None)
    resign(folder / STATE_FILE, lambda d: d.__setitem__("threads", 5000))
    code, _, err = run_cli(capsys, "train", "--resume", folder)
    assert one_line_error(code, err) and "invalid 'threads'" in err and "[1, 256]" in err


# ------------------------------------------------------------------------------ memory bombs
BOMB_SCRIPT = r"""
import resource, sys, os
resource.setrlimit(resource.RLIMIT_AS, (__LIMIT__, __LIMIT__))
def peak_mib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) // 1024
import torch
from hooked_mlp.cli import main
base = peak_mib()
code = main(sys.argv[1:])
print(f"PEAK {peak_mib()} BASE {base} CODE {code}")
"""


def _bomb(tmp_path: Path, kind: str) -> list[str]:
    """Build one bomb; return the CLI arguments that meet it."""
    if kind in ("info-2GB", "info-40GB"):
        path = tmp_path / f"{kind}.safetensors"
        with open(path, "wb") as f:  # sparse: gigabytes of zeros that take no disk
            f.truncate(2 * 2**30 if kind == "info-2GB" else 40 * 2**30)
        return ["info", str(path)]
    if kind == "info-huge-table":  # a valid header whose one tensor claims 40 GB
        path = tmp_path / "table.safetensors"
        header = json.dumps({"W_in": {"dtype": "F32", "shape": [10 * 2**30],
                                      "data_offsets": [0, 40 * 2**30]}}).encode()
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(header)) + header)
            f.truncate(8 + len(header) + 40 * 2**30)
        return ["info", str(path)]
    if kind == "resume-history":  # a valid state of 2000 tiny seeds, claiming 10^7 epochs
        folder = tmp_path / kind
        folder.mkdir()
        from hooked_mlp.training.runs import _write_state
        from hooked_mlp.training.trainer import BatchedTrainer

        seeds = list(range(2000))
        trainer = BatchedTrainer(MLPConfig(p=2, d_hidden=1), TrainConfig(epochs=5), seeds)
        _write_state(folder, trainer, 1, 2, 0.0, None)
        resign(folder / STATE_FILE, lambda d: d["train_config"].update(epochs=10_000_000))
        return ["train", "--resume", str(folder)]
    if kind.startswith("resume"):
        folder = tmp_path / kind
        cfg = MLPConfig(p=5, d_hidden=3)
        train_run(folder, cfg, TrainConfig(epochs=5), checkpoint_every=2, progress=False)
        (folder / "seed-0.safetensors").unlink()
        from hooked_mlp.training.runs import _write_state
        from hooked_mlp.training.trainer import BatchedTrainer

        _write_state(folder, BatchedTrainer(cfg, TrainConfig(epochs=5), [0]), 1, 2, 0.0, None)
        big = {"p": 60000, "d_hidden": 1_000_000} if kind == "resume-huge" else \
            {"p": 20000, "d_hidden": 20000}  # 1.2e9 parameters: a config it may hold
        resign(folder / STATE_FILE, lambda d: d["config"].update(big))
        return ["train", "--resume", str(folder)]
    if kind == "report-p65535":
        path = tmp_path / "wide.safetensors"
        save(HookedMLP(MLPConfig(p=65535, d_hidden=8)), path)
        return ["report", "--model", str(path), "--out", str(tmp_path / "rep"), "--no-progress"]
    raise AssertionError(kind)


@pytest.mark.parametrize(("kind", "message"), [
    ("info-2GB", "not a safetensors file"),
    ("info-40GB", "not a safetensors file"),
    ("info-huge-table", "no 'hooked_mlp' entry"),
    ("resume-huge", "parameters; at most 2,147,483,647 are allowed"),
    ("resume-mismatch", "expected float32"),
    ("resume-history", "cannot resume this run: training 2000 seed(s)"),
    ("report-p65535", "more than half of the"),
])
def test_memory_a_small_file_never_allocates_far_beyond_its_size(tmp_path, kind, message):
    """Each bomb in a subprocess under a hard 3 GiB address-space limit: refused with a clear
    message, with the peak resident memory barely above what importing torch takes."""
    argv = _bomb(tmp_path, kind)
    limit = 3 * 2**30
    r = subprocess.run([sys.executable, "-c", BOMB_SCRIPT.replace("__LIMIT__", str(limit)), *argv],
                       capture_output=True, text=True, timeout=300)
    assert "PEAK" in r.stdout, r.stderr
    peak, base, code = (int(x) for x in r.stdout.strip().splitlines()[-1].split()[1::2])
    assert code == 1 and message in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert peak - base < 300, f"{kind}: peak {peak} MiB, {base} MiB after importing torch"


# ------------------------------------------------------------------------------ silent numbers
def test_silent_all_zero_weights_have_no_fit_and_no_frequency():
    m = HookedMLP(MLPConfig(p=13, d_hidden=6))
    for name in ("W_in", "W_out"):
        getattr(m, name).data.zero_()
    fits = fit_neurons(m)
    assert bool(fits.a.r2.isnan().all()) and bool(fits.out.r2.isnan().all())
    s = fits.summary()
    assert s["n_constant"] == 6 and s["frac_k_all_equal"] is None  # nothing to measure
    h = frequency_histogram(m)
    assert h.n_neurons == 0 and h.n_without_frequency == 6 and h.most_common == 0


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_silent_non_finite_weights_are_refused_everywhere(value, tmp_path):
    m = HookedMLP(MLPConfig(p=13, d_hidden=6))
    m.W_out.data[1, 2] = value
    for analysis in (fit_neurons, frequency_histogram, replacement_curve):
        with pytest.raises(ValueError, match="model.W_out holds NaN or infinite values"):
            analysis(m)
    params = {k: v.clone() for k, v in m.state_tensors().items()}
    with pytest.raises(ValueError, match="params\\['W_out'\\] holds NaN or infinite"):
        HookedMLP.from_params(m.cfg, params)
    from hooked_mlp import import_mlp

    with pytest.raises(ValueError, match="NaN or infinite"):
        import_mlp(m.to_linear_state_dict(), activation="relu")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"chunk": -1}, "chunk must be an integer >= 1, got -1"),
    ({"chunk": 2.5}, "chunk must be an integer >= 1"),
    ({"ns": [2.7]}, "ns must be an integer >= 1, got 2.7"),
    ({"ns": "64"}, "ns must be a list of integers"),
    ({"seeds": [0.5]}, "seeds must be an integer >= 0"),
    ({"operation": "mul"}, "operation must be one of ['add', 'sub']"),
])
def test_silent_synthetic_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError) as e:
        synthetic_curve(**{"ns": [8], "seeds": [0], "p": 11, **kwargs})
    assert message in str(e.value)


def test_silent_fits_of_another_model_are_refused(shipped):
    other = HookedMLP(shipped.cfg, seed=9)
    with pytest.raises(ValueError, match="fitted on other weights"):
        replacement_curve(shipped, fits=fit_neurons(other), n_orders=1)


def test_silent_one_rule_for_hooks(shipped, all_pairs_tokens):
    """Analyses that run the model see its permanent hooks; analyses that compute behaviour from
    the weights refuse a hooked model instead of silently leaving the hooks out."""
    clean = accuracy(shipped)

    def ablate(post, hook):
        return post * 0

    shipped.add_hook("blocks.0.mlp.hook_post", ablate, is_permanent=True)
    try:
        assert accuracy(shipped) < 0.05 < clean
        with pytest.raises(ValueError, match="permanent hooks on \\['blocks.0.mlp.hook_post'\\]"):
            replacement_curve(shipped, n_orders=1)
        fit_neurons(shipped)  # the weights are what they are: fits describe them
    finally:
        shipped.reset_hooks(including_permanent=True)
    assert accuracy(shipped) == clean


# ------------------------------------------------------------------------------ unclear errors
@pytest.mark.parametrize(("what", "call", "exc", "message"), [
    ("float seed", lambda m: HookedMLP(seed=1.5), ValueError,
     "seed must be an integer in [0, 4294967295], got 1.5"),
    ("replacement seed", lambda m: replacement_curve(m, seed=1.5), ValueError,
     "seed must be a non-negative integer, got 1.5"),
    ("huge lr", lambda m: TrainConfig(lr=10**400), ValueError,
     "TrainConfig.lr must be a finite number in (0.0, 10.0], got an integer of 1329 bits"),
    ("unknown hook", lambda m: m.run_with_hooks(torch.tensor([[1, 2]]),
                                                fwd_hooks=[("hook_nope", lambda x, hook: x)]),
     ValueError, "unknown hook name 'hook_nope'; this model's hook points are ['hook_embed_a'"),
    ("old hook name", lambda m: m.add_hook("hook_post", lambda x, hook: x), ValueError,
     "'hook_post' is now 'blocks.0.mlp.hook_post'"),
    ("p = 2", lambda m: fit_neurons(HookedMLP(MLPConfig(p=2, d_hidden=3))), ValueError,
     "fit_neurons needs p >= 3"),
    ("uint32 tokens", lambda m: m(torch.tensor([[1, 200]], dtype=torch.uint32)), ValueError,
     "tokens must lie in [0, 112]"),
    ("uint64 tokens", lambda m: m(torch.tensor([[1, 2**63]], dtype=torch.uint64)), ValueError,
     "tokens must lie in [0, 112]"),
    ("sparse tokens", lambda m: m(torch.tensor([[1, 2]]).to_sparse()), TypeError,
     "tokens must be a dense tensor"),
    ("meta import", lambda m: __import__("hooked_mlp").import_mlp(
        {"0.weight": torch.empty(3, 10, device="meta"), "2.weight": torch.empty(5, 3)},
        activation="relu"), TypeError, "meta"),
    ("sparse import", lambda m: __import__("hooked_mlp").import_mlp(
        {"0.weight": torch.zeros(3, 10).to_sparse(), "2.weight": torch.zeros(5, 3)},
        activation="relu"), TypeError, "sparse"),
])
def test_unclear_errors_name_the_argument(shipped, what, call, exc, message):
    with pytest.raises(exc) as e:
        call(shipped)
    assert message in str(e.value), str(e.value)
    assert all(not hp.fwd_hooks for hp in shipped.hook_dict.values())


def test_unclear_a_uint32_token_in_range_works(shipped):
    tokens = torch.tensor([[3, 5]], dtype=torch.uint32)
    assert shipped(tokens).argmax(-1).tolist() == [8]


@pytest.mark.parametrize(("label", "raw", "message"), [
    ("1e999", lambda meta: meta.replace('"epochs": 2', '"epochs": 1e999'), "not valid JSON"),
    ("NaN", lambda meta: meta.replace('"lr": 0.003', '"lr": NaN'), "not valid JSON"),
    ("deep", lambda meta: meta[:-1] + ', "x": ' + "[" * 200_000 + "]" * 200_000 + "}",
     "not valid JSON"),
])
def test_unclear_odd_json_in_the_metadata(tmp_path, shipped, label, raw, message):
    path = tmp_path / "m.safetensors"
    save(shipped, path)
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    header["__metadata__"]["hooked_mlp"] = raw(header["__metadata__"]["hooked_mlp"])
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data[8 + n :])
    with pytest.raises(CheckpointError, match=message):
        load(path)


def test_unclear_a_full_disk_names_the_file(tmp_path, capsys, monkeypatch):
    import hooked_mlp.files.format as io

    real = Path.write_bytes

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    code, _, err = run_cli(capsys, "train", *TINY, "--out", tmp_path / "run",
                           "--checkpoint-every", "0")
    monkeypatch.setattr(Path, "write_bytes", real)
    assert one_line_error(code, err) and "No space left on device" in err
    assert str(tmp_path / "run" / "seed-0.safetensors") in err
    assert io  # the path comes from hooked_mlp.files.format's atomic writes


# ------------------------------------------------------------------------------ untrusted text
def test_untrusted_text_from_a_file_is_shown_escaped(tmp_path, capsys):
    folder = tmp_path / "run"
    train_run(folder, MLPConfig(p=5, d_hidden=3), TrainConfig(epochs=1), progress=False,
              command="hooked-mlp train\x1b[2J\x1b]0;owned\x07\rmodel verified OK\u202e")
    path = folder / "seed-0.safetensors"
    resign(path, lambda d: d["train"]["provenance"].update(device="\x1b[31mcpu",
                                                           finished="\x9b2J"))
    code, out, err = run_cli(capsys, "info", path)
    assert code == 0, err
    assert not any(ch in out for ch in "\x1b\x07\r\x9b\u202e")
    assert "\\x1b[2J" in out and "\\r" in out and "\\u202e" in out


# ------------------------------------------------------------------------------ metadata fuzz
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=3),
    max_leaves=6)
PATHS = [("kind",), ("format_version",), ("config",), ("config", "p"), ("config", "d_hidden"),
         ("config", "activation"), ("config", "n_layers"), ("config", "bias"), ("train",),
         ("train", "train_config"), ("train", "train_config", "epochs"),
         ("train", "train_config", "lr"), ("train", "metrics"), ("train", "metrics", "val_acc"),
         ("train", "metrics", "epochs"), ("train", "provenance"),
         ("train", "provenance", "wall_s"), ("train", "provenance", "command"),
         ("train", "history_keys")]


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "good.safetensors"
    model, _ = __import__("hooked_mlp").train(MLPConfig(p=5, d_hidden=3), TrainConfig(epochs=2),
                                              progress=False)
    save(model, path)
    return path.read_bytes()


DELETE = object()


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(PATHS), value=VALUES | st.just(DELETE))
def test_fuzzed_metadata_is_refused_clearly_or_shown_safely(small_checkpoint, tmp_path, where,
                                                            value):
    """Any value anywhere in the metadata, re-signed: loading refuses with a CheckpointError or
    succeeds, and `hooked-mlp info` shows one clean line either way; nothing else happens."""
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(small_checkpoint)

    def edit(doc):
        node = doc
        for key in where[:-1]:
            node = node[key]
        if value is DELETE:
            node.pop(where[-1], None)
        else:
            node[where[-1]] = value

    resign(path, edit)
    try:
        load(path)
    except CheckpointError as e:
        assert str(e).startswith(str(path))
    try:
        text = _format(describe(path))
    except CheckpointError:
        pass
    else:
        assert "\x1b" not in text
