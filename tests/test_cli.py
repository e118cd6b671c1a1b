import json
import subprocess
import sys
from pathlib import Path

import pytest

from hooked_mlp.cli import main, parse_seeds


def run_cli(*args, capsys):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("5,1,9") == [5, 1, 9]
    assert parse_seeds("0-1,7") == [0, 1, 7]


def test_train_then_info(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, err = run_cli("train", "--p", "11", "--d-hidden", "8", "--epochs", "3",
                             "--seeds", "0-1", "--out", str(out_dir), "--no-progress",
                             capsys=capsys)
    assert code == 0, err
    assert "seed-0.safetensors: train acc" in out and "seed-1.safetensors" in out
    assert sorted(f.name for f in out_dir.glob("*.safetensors")) == [
        "seed-0.safetensors", "seed-1.safetensors"]
    code, out, _ = run_cli("info", str(out_dir / "seed-1.safetensors"), "--json", capsys=capsys)
    assert code == 0
    (d,) = json.loads(out)
    assert d["config"]["p"] == 11 and d["train_config"]["seed"] == 1
    assert d["train_config"]["epochs"] == 3 and d["metrics"]["epochs"] == 3
    assert "--seeds 0-1" in d["provenance"]["command"]
    code, out, _ = run_cli("info", str(out_dir), capsys=capsys)
    assert code == 0 and out.count("recipe   AdamW") == 2


def test_info_defaults_to_shipped_models(capsys):
    code, out, _ = run_cli("info", capsys=capsys)
    assert code == 0
    assert "seed-0.safetensors" in out and "val acc" in out and "command  hooked-mlp train" in out


BAD = [
    (["train", "--bogus"], 2, "unrecognized arguments: --bogus"),
    (["train", "--p", "1", "--out", "{tmp}/x"], 1, "MLPConfig.p must be an integer in [2, 65535]"),
    (["train", "--lr", "-1", "--out", "{tmp}/x"], 1, "TrainConfig.lr must be a finite number"),
    (["train", "--seeds", "3-1", "--out", "{tmp}/x"], 2, "invalid seeds '3-1'"),
    (["train", "--seeds", "1,1", "--out", "{tmp}/x"], 2, "a seed is listed twice"),
    (["train", "--threads", "0", "--out", "{tmp}/x"], 2, "expected a positive integer"),
    (["train", "--checkpoint-every", "-2", "--out", "{tmp}/x"], 2, "non-negative integer"),
    (["train"], 2, "--out DIR is required"),
    (["train", "--seed", "1", "--seeds", "0-2", "--out", "{tmp}/x"], 2, "not both"),
    (["train", "--device", "tpu", "--out", "{tmp}/x"], 1, "device must be 'cpu', 'cuda'"),
    (["train", "--resume", "{tmp}/nothing"], 1, "is not a folder"),
    (["train", "--resume", "{tmp}", "--seed", "3"], 2, "drop --seed"),
    (["train", "--resume", "{tmp}", "--epochs", "5000", "--lr", "0.5"], 2,
     "drop --epochs, --lr"),
    (["info", "{tmp}/missing.safetensors"], 1, "no such file"),
    (["info", "{tmp}"], 1, "no checkpoints"),
    (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    ([], 2, "the following arguments are required: COMMAND"),
]


@pytest.mark.parametrize(("argv", "status", "message"), BAD)
def test_errors_are_one_line(tmp_path, capsys, argv, status, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, _, err = run_cli(*argv, capsys=capsys)
    assert code == status
    assert err.count("\n") == 1 and err.startswith("hooked-mlp: error: ")
    assert message in err
    assert "Traceback" not in err


def test_corrupt_checkpoint_via_cli(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 3)
    code, _, err = run_cli("info", str(bad), capsys=capsys)
    assert code == 1 and "only 3 bytes" in err and err.count("\n") == 1


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "from hooked_mlp.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "heavy = ('torch', 'transformer_lens', 'numpy', 'matplotlib')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "import hooked_mlp\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "usage: hooked-mlp" in result.stdout


def test_console_script_exit_status(tmp_path):
    exe = Path(sys.executable).parent / "hooked-mlp"
    assert exe.exists(), "the hooked-mlp console script is not installed beside this Python"
    r = subprocess.run([exe, "info", str(tmp_path / "nope")], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "no such file" in r.stderr
