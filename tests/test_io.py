import json
import os
import pickle
import struct

import pytest
import torch

from hooked_mlp import CheckpointError, HookedMLP, MLPConfig, load, save
from hooked_mlp.files.format import _checksum, atomic_path, atomic_write_text
from hooked_mlp.files.importers import load_linear_state_dict


def _same(m1, m2):
    names = ("W_in", "b_in", "W_out", "b_out")
    return all(torch.equal(getattr(m1, n), getattr(m2, n)) for n in names)


def test_save_load_bit_exact_with_training_record(shipped, tmp_path):
    path = tmp_path / "m.safetensors"
    save(shipped, path)
    back = load(path)
    assert _same(back, shipped) and back.cfg == shipped.cfg
    a, b = shipped.train_info, back.train_info
    assert torch.equal(a.train_mask, b.train_mask)
    assert a.history == b.history and a.metrics == b.metrics and a.provenance == b.provenance
    assert a.train_config == b.train_config
    # saving again gives the same bytes
    save(back, tmp_path / "again.safetensors")
    assert (tmp_path / "again.safetensors").read_bytes() == path.read_bytes()


def test_save_load_untrained_model(tmp_path):
    m = HookedMLP(MLPConfig(p=7, d_hidden=5), seed=2)
    save(m, tmp_path / "u.safetensors")
    back = load(tmp_path / "u.safetensors")
    assert _same(m, back) and back.train_info is None


def _corruptions(good: bytes):
    n = struct.unpack("<Q", good[:8])[0]
    header = json.loads(good[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["hooked_mlp"])

    def with_header(h):
        raw = json.dumps(h).encode()
        return struct.pack("<Q", len(raw)) + raw + good[8 + n :]

    def with_meta(resign=True, **changes):
        """Edited metadata; `resign` recomputes the checksum, as a buggy writer would, so that
        the checks behind the checksum are reached."""
        m = {**meta, **changes}
        if resign:
            m["checksum"] = _checksum(m, header, good[8 + n :])
        h = json.loads(json.dumps(header))
        h["__metadata__"]["hooked_mlp"] = json.dumps(m)
        return with_header(h)

    yield "empty", b"", "only 0 bytes"
    yield "short", good[:5], "only 5 bytes"
    yield "cut header", good[: 8 + n // 2], "truncated"
    yield "cut tensors", good[: len(good) - 100], "truncated"
    yield "huge header size", b"\xff" * 16, "plausible header size"
    yield "not json", struct.pack("<Q", 4) + b"abcd", "header is not JSON"
    yield "json list", struct.pack("<Q", 2) + b"[]", "not a JSON object"
    h = json.loads(json.dumps(header))
    del h["__metadata__"]
    yield "no metadata", with_header(h), "no 'hooked_mlp' entry"
    h = json.loads(json.dumps(header))
    h["__metadata__"]["hooked_mlp"] = "{not json"
    yield "bad meta json", with_header(h), "is not valid JSON"
    yield "other format", with_meta(format="other"), "format is not 'hooked-mlp'"
    yield "newer version", with_meta(format_version=99), "newer hooked-mlp"
    yield "wrong kind", with_meta(kind="train-state"), "a 'model' file is needed"
    yield "bad config", with_meta(config={**meta["config"], "p": 1}), "invalid model config"
    yield "wrong shape", with_meta(config={**meta["config"], "d_hidden": 99}), "expected torch"
    bad_recipe = {**meta["train"], "train_config": {"lr": -1}}
    yield "bad recipe", with_meta(train=bad_recipe), "invalid training config"
    yield "pickle", pickle.dumps({"W_in": 1}), "header"
    yield "edited, not resigned", with_meta(resign=False, kind="x"), "checksum mismatch"
    m = dict(meta)
    del m["checksum"]
    h = json.loads(json.dumps(header))
    h["__metadata__"]["hooked_mlp"] = json.dumps(m)
    yield "no checksum", with_header(h), "no checksum"
    flipped = bytearray(good)
    flipped[-5] ^= 0x40
    yield "flipped weight bit", bytes(flipped), "checksum mismatch"


def test_damaged_files_are_refused_clearly(shipped, tmp_path):
    good_path = tmp_path / "good.safetensors"
    save(shipped, good_path)
    good = good_path.read_bytes()
    for label, data, message in _corruptions(good):
        path = tmp_path / f"{label}.safetensors"
        path.write_bytes(data)
        with pytest.raises(CheckpointError) as e:
            load(path)
        assert str(e.value).startswith(str(path)), label
        assert message in str(e.value), (label, str(e.value))


def test_nan_weights_and_missing_file(tmp_path):
    from safetensors.torch import save as st_save

    m = HookedMLP(MLPConfig(p=5, d_hidden=3))
    path = tmp_path / "nan.safetensors"
    save(m, path)
    good = path.read_bytes()
    m.W_out.data[0, 0] = float("nan")
    # what would be refused on reading is refused on writing, and the good file is kept
    with pytest.raises(ValueError, match="not written: tensor 'W_out' holds NaN or infinite"):
        save(m, path)
    assert path.read_bytes() == good
    m.W_out.data[0, 0] = float("inf")
    with pytest.raises(ValueError, match="not written"):
        save(m, path)
    # a NaN file written by other means is refused on reading
    tensors = {k: v.detach() for k, v in m.state_tensors().items()}
    tensors["W_out"] = tensors["W_out"].clone()
    tensors["W_out"][0, 0] = float("nan")
    doc = {"format": "hooked-mlp", "format_version": 2, "kind": "model",
           "config": m.cfg.to_dict(), "train": None}
    draft = st_save({k: v.contiguous() for k, v in tensors.items()},
                    metadata={"hooked_mlp": json.dumps(doc)})
    n = struct.unpack("<Q", draft[:8])[0]
    doc["checksum"] = _checksum(doc, json.loads(draft[8 : 8 + n]), draft[8 + n :])
    path.write_bytes(st_save({k: v.contiguous() for k, v in tensors.items()},
                             metadata={"hooked_mlp": json.dumps(doc)}))
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load(path)
    with pytest.raises(CheckpointError, match="no such file"):
        load(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="not a file"):
        load(tmp_path)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half of the new content")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_import_pt_state_dict_without_pickle(tmp_path):
    seq = torch.nn.Sequential(torch.nn.Linear(10, 4), torch.nn.ReLU(), torch.nn.Linear(4, 5))
    torch.save(seq.state_dict(), tmp_path / "seq.pt")
    with pytest.warns(DeprecationWarning, match="import_mlp"):
        m = load_linear_state_dict(tmp_path / "seq.pt")
    assert torch.equal(m.W_in, seq[0].weight.detach().t())

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"0.weight": Evil()}, f)
    with pytest.raises(CheckpointError, match="is a pickle"), pytest.warns(DeprecationWarning):
        load_linear_state_dict(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_read_model_needs_no_transformer_lens(tmp_path, shipped):
    # the trainer and `hooked-mlp info` read checkpoints without building a HookedMLP
    import subprocess
    import sys

    save(shipped, tmp_path / "m.safetensors")
    code = (
        "import sys\n"
        "from hooked_mlp.files.checkpoints import read_model\n"
        f"ckpt = read_model({str(tmp_path / 'm.safetensors')!r})\n"
        "assert sorted(ckpt.params) == ['W_in', 'W_out', 'b_in', 'b_out'], ckpt.params\n"
        "assert ckpt.info.metrics['val_acc'] > 0.99\n"
        "assert 'transformer_lens' not in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _flip(data: bytes, pos: int, value: int) -> bytes:
    return data[:pos] + bytes([value]) + data[pos + 1 :]


def test_fuzzed_files_are_refused_or_identical(shipped, tmp_path):
    """Random bytes, cut files, flipped bytes and edited JSON: `load` either refuses with a
    CheckpointError naming the file or returns exactly the original; nothing else happens."""
    good_path = tmp_path / "good.safetensors"
    save(shipped, good_path)
    good = good_path.read_bytes()
    n = struct.unpack("<Q", good[:8])[0]
    gen = torch.Generator().manual_seed(1234)

    def rand(lo, hi):
        return int(torch.randint(lo, hi, (1,), generator=gen))

    variants = []
    for i in range(40):
        size = rand(0, 3000)
        variants.append((f"random{i}", bytes(torch.randint(0, 256, (size,), generator=gen,
                                                           dtype=torch.uint8).tolist())))
    for i in range(40):
        variants.append((f"cut{i}", good[: rand(0, len(good))]))
    for i in range(60):
        pos = rand(0, 8 + n) if i % 2 else rand(8 + n, len(good))  # header, then tensor bytes
        variants.append((f"flip{i}", _flip(good, pos, (good[pos] + rand(1, 256)) % 256)))
    header = json.loads(good[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["hooked_mlp"])
    edits = [("lr", lambda m: m["train"]["train_config"].__setitem__("lr", 0.004)),
             ("val_acc", lambda m: m["train"]["metrics"].__setitem__("val_acc", 1.0)),
             ("seed", lambda m: m["train"]["train_config"].__setitem__("seed", 7)),
             ("kind", lambda m: m.__setitem__("kind", "model ")),
             ("extra", lambda m: m.__setitem__("note", "hello"))]
    for label, edit in edits:
        m = json.loads(json.dumps(meta))
        edit(m)
        h = json.loads(json.dumps(header))
        h["__metadata__"]["hooked_mlp"] = json.dumps(m)
        raw = json.dumps(h).encode()
        variants.append((f"edit-{label}", struct.pack("<Q", len(raw)) + raw + good[8 + n :]))
    variants.append(("appended", good + b"\x00" * 16))
    # the tensor table: swap two same-shaped tensors' offsets, rename one, change a shape
    table_edits = []
    h = json.loads(json.dumps(header))
    a, b = h["history.train_acc"], h["history.val_acc"]
    a["data_offsets"], b["data_offsets"] = b["data_offsets"], a["data_offsets"]
    table_edits.append(("swap-offsets", h))
    h = json.loads(json.dumps(header))
    h["history.val_loss"], h["history.train_loss"] = h["history.train_loss"], h["history.val_loss"]
    table_edits.append(("swap-names", h))
    h = json.loads(json.dumps(header))
    h["b_in"]["shape"] = [10, 10]
    h["b_in"]["dtype"] = "F32"
    table_edits.append(("reshape", h))
    for label, h in table_edits:
        raw = json.dumps(h).encode()
        variants.append((f"table-{label}", struct.pack("<Q", len(raw)) + raw + good[8 + n :]))

    refused = 0
    before = sorted(os.listdir(tmp_path))
    for label, data in variants:
        path = tmp_path / f"fuzz-{label}.safetensors"
        path.write_bytes(data)
        try:
            back = load(path)
        except CheckpointError as e:
            assert str(e).startswith(str(path)), label
            refused += 1
        else:  # only a change that leaves the content equal may load
            assert _same(back, shipped), label
            assert back.train_info.history == shipped.train_info.history, label
            assert back.train_info.metrics == shipped.train_info.metrics, label
        path.unlink()
    assert sorted(os.listdir(tmp_path)) == before
    assert refused >= len(variants) - 10
