"""`hooked_mlp.files.importers.import_mlp`: every recognised layout round-trips exactly, every
refusal
says what is wrong and what resolves it, and hostile files are refused without inflating them.

The test files are built here, in each layout, from real torch modules.

Why this file is over 600 lines: every layout, refusal and hostile file has its own test, and
they share the torch modules and file builders at the top, which a split would repeat."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from hooked_mlp.config import MLPConfig
from hooked_mlp.files.checkpoints import pretrained_path
from hooked_mlp.files.format import CheckpointError
from hooked_mlp.files.importers import from_linear_state_dict, import_mlp, load_linear_state_dict
from hooked_mlp.model import HookedMLP

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ source models
class Square(nn.Module):
    """The quad activation as a module."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


ACTS = {"relu": nn.ReLU, "gelu": nn.GELU, "quad": Square}


def sequential(p: int, h: int, n_hidden: int, act: str, *, bias: bool = True,
               tied: bool = False, seed: int = 0) -> nn.Sequential:
    """`nn.Sequential(Linear(2p or p, h), act, [Linear(h, h), act]..., Linear(h, p))`."""
    torch.manual_seed(seed)
    widths = [p if tied else 2 * p] + [h] * n_hidden + [p]
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        if i:
            layers.append(ACTS[act]())
        layers.append(nn.Linear(widths[i], widths[i + 1], bias=bias))
    return nn.Sequential(*layers)


class PublishedMLP(nn.Module):
    """The published codebase's layout: tied inputs, no biases, `W_in [h, p]`, `W_out [p, h]`,
    `h = act(W_in @ x)`, `logits = W_out @ h`, and a Fourier basis kept as a buffer."""

    def __init__(self, p: int, h: int, act: str) -> None:
        super().__init__()
        self.W_in = nn.Parameter(torch.randn(h, p) / math.sqrt(p))
        self.W_out = nn.Parameter(torch.randn(p, h) / math.sqrt(h))
        k = torch.arange(p).float()
        self.register_buffer("basis", torch.cos(2 * math.pi * torch.outer(k, k) / p))
        self.act = ACTS[act]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [batch, p]: e_a + e_b
        return self.act(x @ self.W_in.T) @ self.W_out.T  # W @ x, one column per example


class TransformerLensStyleMLP(nn.Module):
    """The same names the TransformerLens way round: `W_in [p, h]`, `W_out [h, p]`, `x @ W`."""

    def __init__(self, p: int, h: int) -> None:
        super().__init__()
        self.W_in = nn.Parameter(torch.randn(p, h) / math.sqrt(p))
        self.W_out = nn.Parameter(torch.randn(h, p) / math.sqrt(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W_in) @ self.W_out


class Holder(nn.Module):
    """Puts a module under `mlp.`, as the published codebase does."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp


def all_pairs(p: int) -> torch.Tensor:
    return torch.cartesian_prod(torch.arange(p), torch.arange(p))


def one_hot(tokens: torch.Tensor, p: int, tied: bool) -> torch.Tensor:
    a, b = F.one_hot(tokens[:, 0], p).float(), F.one_hot(tokens[:, 1], p).float()
    return a + b if tied else torch.cat([a, b], dim=1)


def assert_same_logits(model: HookedMLP, source: nn.Module, p: int, tied: bool) -> None:
    tokens = all_pairs(p)
    with torch.no_grad():
        ours, theirs = model(tokens), source(one_hot(tokens, p, tied))
    # Bit for bit: the importer keeps nn.Linear's memory layout for the matrices it multiplies
    # (see importers._params), and the one-hot input layer sums the same two numbers.
    assert torch.equal(ours, theirs)


# ------------------------------------------------------------------------------ round trips
SEQUENTIAL_CASES = [
    # n_hidden, activation, bias, tied, how the state dict reaches import_mlp
    (1, "relu", True, False, "mapping"),
    (1, "relu", True, False, "pt"),
    (2, "gelu", False, False, "pt {'model': ..., 'config': {'act_fn': ...}}"),
    (3, "quad", True, True, "safetensors"),
    (1, "quad", False, True, "lightning .ckpt"),
    (2, "relu", True, True, "pth {'model_state_dict': ...}"),
    (3, "gelu", True, False, "OrderedDict with prefix 'net.'"),
]


@pytest.mark.parametrize(("n_hidden", "act", "bias", "tied", "form"), SEQUENTIAL_CASES)
def test_sequential_round_trip(tmp_path, n_hidden, act, bias, tied, form):
    p, h = 7, 12
    seq = sequential(p, h, n_hidden, act, bias=bias, tied=tied, seed=n_hidden)
    sd = seq.state_dict()
    kwargs = {"activation": act}
    if form == "mapping":
        source = sd
    elif form == "pt":
        torch.save(sd, source := tmp_path / "model.pt")
    elif form.startswith("pt {'model'"):
        torch.save({"model": sd, "config": {"act_fn": act.upper()}, "epoch": 3},
                   source := tmp_path / "model.pt")
        kwargs = {}  # the activation is read from the file
    elif form == "safetensors":
        save_file(dict(sd), source := tmp_path / "model.safetensors")
    elif form == "lightning .ckpt":
        torch.save({"state_dict": {f"model.{k}": v for k, v in sd.items()},
                    "hyper_parameters": {"activation": "square"}, "global_step": 10},
                   source := tmp_path / "epoch=3.ckpt")
        kwargs = {}
    elif form == "pth {'model_state_dict': ...}":
        torch.save({"model_state_dict": sd, "optimizer_state_dict": {}},
                   source := tmp_path / "model.pth")
    else:
        source = OrderedDict((f"net.{k}", v) for k, v in sd.items())
    model = import_mlp(source, **kwargs)
    assert model.cfg == MLPConfig(p=p, d_hidden=h, activation=act, tied_inputs=tied,
                                  bias=bias, n_layers=n_hidden)
    assert model.train_info is None
    assert_same_logits(model, seq, p, tied)


def test_layers_without_bias_get_zero_biases():
    p, h = 7, 10
    seq = sequential(p, h, 2, "relu")
    seq[2].bias = None  # the middle layer has no bias, the others have
    model = import_mlp(seq.state_dict(), activation="relu")
    assert model.cfg.bias and model.cfg.n_layers == 2
    assert torch.equal(model.b_hidden, torch.zeros(1, h))
    assert_same_logits(model, seq, p, tied=False)


class NamedLayers(nn.Module):
    def __init__(self, p: int, h: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(2 * p, h), nn.Linear(h, p)
        self.register_buffer("step", torch.tensor(1000))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def test_key_map_renames_named_layers_and_drops_extra_keys(tmp_path):
    p, h = 7, 9
    net = NamedLayers(p, h)
    torch.save(net.state_dict(), tmp_path / "named.pt")
    key_map = {"fc1.weight": "0.weight", "fc1.bias": "0.bias", "fc2.weight": "2.weight",
               "fc2.bias": "2.bias", "step": None}
    model = import_mlp(tmp_path / "named.pt", activation="relu", key_map=key_map)
    assert (model.cfg.p, model.cfg.d_hidden) == (p, h)
    assert_same_logits(model, net, p, tied=False)


@pytest.mark.parametrize(("act", "h"), [("quad", 20), ("relu", 5)])
def test_published_layout_round_trip(tmp_path, act, h):
    p = 11
    torch.manual_seed(1)
    net = Holder(PublishedMLP(p, h, act))
    torch.save(net.state_dict(), tmp_path / "published.pt")
    model = import_mlp(tmp_path / "published.pt", activation=act)
    assert model.cfg == MLPConfig(p=p, d_hidden=h, activation=act, tied_inputs=True,
                                  bias=False)
    assert_same_logits(model, net.mlp, p, tied=True)


def test_published_names_the_transformer_lens_way_round_are_settled_by_p():
    p, h = 7, 16
    torch.manual_seed(2)
    net = Holder(TransformerLensStyleMLP(p, h))
    # [7, 16] and [16, 7] read both ways (p = 16 or p = 7), and no basis buffer settles it
    with pytest.raises(ValueError, match=r"read two ways, as two different models: as \[out, "
                       r"in\] .* p = 16, d_hidden = 7; as \[in, out\] .* p = 7, d_hidden = 16"
                       r".* pass p= or orientation="):
        import_mlp(net.state_dict(), activation="relu")
    model = import_mlp(net.state_dict(), activation="relu", p=p)
    assert (model.cfg.p, model.cfg.d_hidden) == (p, h)
    assert_same_logits(model, net.mlp, p, tied=True)
    assert_same_logits(import_mlp(net.state_dict(), activation="relu", orientation="in_out"),
                       net.mlp, p, tied=True)


def test_square_published_layout_is_refused_until_orientation_is_given(tmp_path):
    p = h = 7
    torch.manual_seed(3)
    net = Holder(PublishedMLP(p, h, "relu"))
    torch.save(net.state_dict(), tmp_path / "square.pt")
    message = (r"'mlp.W_in' \[7, 7\], 'mlp.W_out' \[7, 7\] are square \(h = p = 7\).*"
               r"Pass orientation='out_in' or orientation='in_out'")
    with pytest.raises(CheckpointError, match=message):
        import_mlp(tmp_path / "square.pt", activation="relu")
    with pytest.raises(CheckpointError, match="p= cannot settle it when h == p"):
        import_mlp(tmp_path / "square.pt", activation="relu", p=7)
    model = import_mlp(tmp_path / "square.pt", activation="relu", orientation="out_in")
    assert_same_logits(model, net.mlp, p, tied=True)
    transposed = import_mlp(tmp_path / "square.pt", activation="relu", orientation="in_out")
    assert torch.equal(transposed.W_in, model.W_in.T)  # the other reading: another model


@pytest.mark.parametrize(
    "cfg",
    [
        MLPConfig(p=7, d_hidden=7, tied_inputs=True),  # W_in [7, 7]: tied, as W_out gives p = 7
        MLPConfig(p=7, d_hidden=14, activation="gelu"),  # W_in [14, 14]: separate inputs
        MLPConfig(p=5, d_hidden=6, activation="quad", bias=False, n_layers=3),
    ],
    ids=["tied-square", "separate-square", "deep-bias-free"],
)
def test_hooked_mlp_names_round_trip(tmp_path, cfg):
    source = HookedMLP(cfg, seed=4)
    for state in (source.state_dict(), {f"model.{k}": v for k, v in source.state_dict().items()}):
        model = import_mlp(state, activation=cfg.activation)
        assert model.cfg == cfg
        for name, value in source.state_tensors().items():
            assert torch.equal(getattr(model, name), value)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()},
              tmp_path / "names.safetensors", metadata={"activation": cfg.activation})
    model = import_mlp(tmp_path / "names.safetensors")
    assert torch.equal(model(all_pairs(cfg.p)), source(all_pairs(cfg.p)))


def test_hooked_mlp_checkpoint_is_loaded_as_saved():
    from safetensors.torch import load_file

    path = pretrained_path(0)
    model = import_mlp(path)
    raw = load_file(path)
    assert (model.cfg.p, model.cfg.d_hidden, model.cfg.activation) == (113, 100, "relu")
    for name in ("W_in", "b_in", "W_out", "b_out"):
        assert torch.equal(getattr(model, name), raw[name])
    assert import_mlp(path, activation="relu", operation="add").cfg == model.cfg
    with pytest.raises(CheckpointError, match=r"activation='gelu' was passed, but this "
                       r"hooked-mlp checkpoint records activation='relu'"):
        import_mlp(path, activation="gelu")
    with pytest.raises(CheckpointError, match="leave out key_map= and orientation="):
        import_mlp(path, orientation="in_out")


def test_metadata_gives_activation_and_operation(tmp_path):
    seq = sequential(7, 8, 1, "gelu")
    save_file(dict(seq.state_dict()), tmp_path / "meta.safetensors",
              metadata={"config": json.dumps({"nonlinearity": "GeLU", "fn_name": "subtract"})})
    model = import_mlp(tmp_path / "meta.safetensors")
    assert (model.cfg.activation, model.cfg.operation) == ("gelu", "sub")
    wrapped = {"model": seq.state_dict(), "cfg": {"act_type": "nn.GELU()", "fn_name": "x2xyy2"}}
    model = import_mlp(wrapped)
    assert (model.cfg.activation, model.cfg.operation) == ("gelu", "x2_xy_y2")
    model = import_mlp(seq.state_dict(), activation="GELU", operation="multiply")
    assert (model.cfg.activation, model.cfg.operation) == ("gelu", "mul")
    assert import_mlp(seq.state_dict(), activation="gelu").cfg.operation == "add"


# ------------------------------------------------------------------------------ refusals
def small_state(p: int = 7, h: int = 8, **kwargs) -> dict[str, torch.Tensor]:
    return dict(sequential(p, h, 1, "relu", **kwargs).state_dict())


def test_missing_activation_is_refused(tmp_path):
    with pytest.raises(ValueError, match=re.escape(
            "state_dict: the activation is not recorded in this state dict; pass activation= "
            "one of ['relu', 'gelu', 'silu', 'quad', 'identity']")):
        import_mlp(small_state())
    torch.save(small_state(), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=re.escape(
            f"{tmp_path / 'm.pt'}: the activation is not recorded in this file; pass "
            f"activation= one of")):
        import_mlp(tmp_path / "m.pt")


def test_unknown_activation_is_refused_listing_the_known_ones():
    with pytest.raises(ValueError, match=r"activation='tanh' is not known: pass one of "
                       r"\['relu', 'gelu', 'silu', 'quad', 'identity'\]"):
        import_mlp(small_state(), activation="tanh")
    with pytest.raises(ValueError, match=r"records the activation 'gelu_new' \(at "
                       r"'config.act_fn'\), which is not one of \['relu', 'gelu'"):
        import_mlp({"model": small_state(), "config": {"act_fn": "gelu_new"}},
                   activation="gelu")


def test_activation_conflicts_are_refused_naming_both():
    with pytest.raises(ValueError, match=r"activation='relu' was passed, but this state dict "
                       r"records 'quad' \(at 'activation'\); pass activation='quad'"):
        import_mlp({"state_dict": small_state(), "activation": "Quad"}, activation="relu")
    with pytest.raises(ValueError, match=r"records conflicting activations: 'relu' \(at "
                       r"'activation'\) and 'gelu' \(at 'config.act_type'\)"):
        import_mlp({"model": small_state(), "activation": "relu",
                    "config": {"act_type": "gelu"}})


def test_different_hidden_widths_are_refused():
    seq = nn.Sequential(nn.Linear(14, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(),
                        nn.Linear(8, 7))
    with pytest.raises(ValueError, match=re.escape(
            "its hidden layers have different widths ('0.weight' [16, 14]: 16, "
            "'2.weight' [8, 16]: 8)")):
        import_mlp(seq.state_dict(), activation="relu")


def test_layers_that_do_not_fit_the_task_are_refused():
    bad_input = {"0.weight": torch.zeros(8, 15), "2.weight": torch.zeros(7, 8)}
    with pytest.raises(ValueError, match=re.escape(
            "'0.weight' [8, 15] takes 15 inputs, but '2.weight' [7, 8] gives p = 7 outputs")):
        import_mlp(bad_input, activation="relu")
    broken_chain = {"0.weight": torch.zeros(8, 14), "2.weight": torch.zeros(7, 9)}
    with pytest.raises(ValueError, match=re.escape(
            "'0.weight' [8, 14] gives 8 outputs but '2.weight' [7, 9] takes 9 inputs")):
        import_mlp(broken_chain, activation="relu")
    with pytest.raises(ValueError, match=r"holds 1 linear layer\(s\) \('0.weight' \[8, 14\]\)"):
        import_mlp({"0.weight": torch.zeros(8, 14)}, activation="relu")
    with pytest.raises(ValueError, match=r"needs a prime p"):
        import_mlp(small_state(p=12), activation="relu", operation="div")


def test_arguments_that_contradict_the_weights_are_refused():
    with pytest.raises(ValueError, match=re.escape(
            "p=11 was passed, but '2.weight' [7, 8] gives p = 7")):
        import_mlp(small_state(), activation="relu", p=11)
    with pytest.raises(ValueError, match=re.escape(
            "tied_inputs=True was passed, but '0.weight' [8, 14] takes 2p inputs (p = 7)")):
        import_mlp(small_state(), activation="relu", tied_inputs=True)


def test_unknown_keys_are_refused_listing_them():
    state = {f"block{i}.proj": torch.zeros(3, 3) for i in range(12)}
    message = (r"its keys fit no layout hooked-mlp reads: 'block0.proj' \[3, 3\], .*"
               r"'block9.proj' \[3, 3\] and 2 more\. Recognised: nn.Sequential .* Pass key_map=")
    with pytest.raises(ValueError, match=message):
        import_mlp(state, activation="relu")
    named = NamedLayers(7, 8).state_dict()
    with pytest.raises(ValueError, match=re.escape(
            "e.g. key_map={'fc1.weight': '0.weight', 'fc1.bias': '0.bias', "
            "'fc2.weight': '2.weight', 'fc2.bias': '2.bias', 'step': None}")):
        import_mlp(named, activation="relu")


def test_key_map_naming_a_missing_key_is_refused():
    with pytest.raises(ValueError, match=r"key_map names \['fc3.weight'\], which the state dict "
                       r"does not hold; its keys are 'step' \[\], 'fc1.weight' \[8, 14\]"):
        import_mlp(NamedLayers(7, 8).state_dict(), activation="relu",
                   key_map={"fc3.weight": "4.weight"})


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_weights_are_refused_naming_the_key(tmp_path, bad):
    state = small_state()
    state["2.bias"] = state["2.bias"].clone()
    state["2.bias"][3] = bad
    with pytest.raises(ValueError, match=re.escape(
            "state_dict: '2.bias' [7] holds NaN or infinite values (1 of 7)")):
        import_mlp(state, activation="relu")
    torch.save({"model": state}, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=r"nan.pt: '2.bias' \[7\] holds NaN"):
        import_mlp(tmp_path / "nan.pt", activation="relu")
    renamed = {k.replace("2.", "fc2."): v for k, v in state.items()}
    with pytest.raises(ValueError, match=re.escape("'fc2.bias' (as '2.bias') [7] holds NaN")):
        import_mlp(renamed, activation="relu",
                   key_map={"fc2.weight": "2.weight", "fc2.bias": "2.bias"})


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: t.to_sparse(), r"'0.weight' \[8, 14\] is a torch.sparse_coo tensor; dense "
         r"weights are imported \(save it with .to_dense\(\)\)"),
        (lambda t: t.to("meta"), r"'0.weight' \[8, 14\] is a meta tensor: a shape without data"),
        (lambda t: t.to(torch.int64), r"'0.weight' \[8, 14\] has dtype torch.int64; weights "
         r"must be floating point"),
    ],
    ids=["sparse", "meta", "integer"],
)
def test_tensors_that_are_not_dense_floats_are_refused(tmp_path, make, message):
    state = small_state()
    state["0.weight"] = make(state["0.weight"])
    with pytest.raises(TypeError, match="state_dict: " + message):
        import_mlp(state, activation="relu")
    torch.save(state, tmp_path / "odd.pt")  # torch.load(weights_only=True) keeps them as they are
    with pytest.raises(CheckpointError, match="odd.pt: " + message):
        import_mlp(tmp_path / "odd.pt", activation="relu")


def test_sources_that_are_not_state_dicts_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothing.pt: no such file"):
        import_mlp(tmp_path / "nothing.pt", activation="relu")
    with pytest.raises(CheckpointError, match=r": not a file"):
        import_mlp(tmp_path, activation="relu")
    (tmp_path / "notes.pt").write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match=r"notes.pt: is neither a torch file"):
        import_mlp(tmp_path / "notes.pt", activation="relu")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.pt: the file is empty"):
        import_mlp(tmp_path / "empty.pt", activation="relu")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"this file holds a list, not a state dict"):
        import_mlp(tmp_path / "list.pt", activation="relu")
    with pytest.raises(TypeError, match=r"source must be a path .* got list"):
        import_mlp([1, 2], activation="relu")
    with pytest.raises(TypeError, match=r"pass module.state_dict\(\)"):
        import_mlp(nn.Linear(2, 2), activation="relu")
    with pytest.raises(TypeError, match=r"'0.weight' must be a tensor, got list"):
        import_mlp({"0.weight": [[1.0]], "2.weight": torch.zeros(1, 1)}, activation="relu")


def test_pickles_are_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    with open(tmp_path / "legacy.pt", "wb") as f:  # a bare pickle, as torch's legacy format
        pickle.dump({"0.weight": Evil()}, f)
    with pytest.raises(CheckpointError, match=r"legacy.pt: is a pickle \(not a torch or "
                       r"safetensors file\), which is never unpickled"):
        import_mlp(tmp_path / "legacy.pt", activation="relu")
    torch.save({"0.weight": Evil()}, tmp_path / "evil.pt")  # torch's zip format
    with pytest.raises(CheckpointError, match=r"evil.pt: holds Python objects other than "
                       r"tensors and plain containers.*save its model.state_dict\(\) instead"):
        import_mlp(tmp_path / "evil.pt", activation="relu")
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------------ deprecated
def test_deprecated_importers_delegate_to_import_mlp(tmp_path):
    seq = sequential(7, 8, 1, "relu")
    torch.save(seq.state_dict(), tmp_path / "seq.pt")
    with pytest.warns(DeprecationWarning, match=r"use hooked_mlp.import_mlp\(path"):
        model = load_linear_state_dict(tmp_path / "seq.pt")
    assert model.cfg.activation == "relu"
    assert_same_logits(model, seq, 7, tied=False)
    with pytest.warns(DeprecationWarning, match=r"use hooked_mlp.import_mlp\(state_dict"):
        model = from_linear_state_dict(seq.state_dict(), MLPConfig(p=7, d_hidden=8))
    assert model.cfg == MLPConfig(p=7, d_hidden=8)
    with pytest.warns(DeprecationWarning), pytest.raises(
            ValueError, match=r"the weights give d_hidden=8, but cfg has d_hidden=9"):
        from_linear_state_dict(seq.state_dict(), MLPConfig(p=7, d_hidden=9))
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="must be a mapping"):
        from_linear_state_dict([1, 2])


# ------------------------------------------------------------------------------ memory bombs
GiB = 1 << 30
BOMB_FLOATS = 1 << 28  # 1 GiB of float32 zeros, declared by files of a few KB to 1 MB


def write_zip(path: Path, entries: list[tuple[str, bytes, int, int, int]]) -> None:
    """A zip archive of `(name, payload, method, declared size, crc)` entries, written by hand so
    that a payload can be pre-compressed, or lie about its size."""
    out, central = bytearray(), bytearray()
    for name, payload, method, size, crc in entries:
        fn, offset = name.encode(), len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc,
                           len(payload), size, len(fn), 0) + fn + payload
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc,
                               len(payload), size, len(fn), 0, 0, 0, 0, 0, offset) + fn
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries),
                      len(central), len(out), 0)
    path.write_bytes(bytes(out + central + end))


def torch_zip_declaring(n_floats: int, tmp: Path) -> list[tuple[str, bytes]]:
    """The entries of `torch.save({"0.weight": zeros(n_floats)})`, made from a small save whose
    pickle is patched (same length) to declare `n_floats`."""
    k = 65_537  # pickled as BININT, like n_floats
    torch.save({"0.weight": torch.zeros(k)}, tmp / "seed.pt")
    with zipfile.ZipFile(tmp / "seed.pt") as archive:
        entries = [(i.filename, archive.read(i.filename)) for i in archive.infolist()]
    old, new = b"J" + struct.pack("<i", k), b"J" + struct.pack("<i", n_floats)
    patched = [(n, d.replace(old, new) if n.endswith("data.pkl") else d) for n, d in entries]
    assert sum(d.count(new) for _, d in patched) == 2  # the storage's size and the tensor's
    return patched


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("bombs")
    paths = {}
    # 1. stride-0 views: 6 GiB of float32 claimed by a file of ~2 KB (torch.save keeps views)
    paths["stride0"] = tmp / "stride0.pt"
    torch.save({"0.weight": torch.zeros(1).expand(32_000, 32_000),
                "2.weight": torch.zeros(1).expand(16_000, 32_000)}, paths["stride0"])
    # 2. a deflated storage: 1 GiB of zeros in ~1 MB, a genuine deflate stream
    chunk = 1 << 24
    block_compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = block_compressor.compress(bytes(chunk)) + block_compressor.flush(zlib.Z_FULL_FLUSH)
    n_blocks = 4 * BOMB_FLOATS // chunk
    stream = block * n_blocks + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc = 0
    for _ in range(n_blocks):
        crc = zlib.crc32(bytes(chunk), crc)
    entries = []
    for name, data in torch_zip_declaring(BOMB_FLOATS, tmp):
        if name.endswith("data/0"):
            entries.append((name, stream, zipfile.ZIP_DEFLATED, 4 * BOMB_FLOATS, crc))
        else:
            entries.append((name, data, zipfile.ZIP_STORED, len(data), zlib.crc32(data)))
    write_zip(paths.setdefault("deflate", tmp / "deflate.pt"), entries)
    # 3. a stored entry whose directory claims 1 GiB that the file does not have
    write_zip(paths.setdefault("stored_lie", tmp / "stored_lie.pt"),
              [(n, d, zipfile.ZIP_STORED, 4 * BOMB_FLOATS if n.endswith("data/0") else len(d),
                zlib.crc32(d)) for n, d in torch_zip_declaring(BOMB_FLOATS, tmp)])
    # 4. a safetensors header declaring a 10 GB tensor in a file of a few hundred bytes
    header = json.dumps({"0.weight": {"dtype": "F32", "shape": [50_000, 50_000],
                                      "data_offsets": [0, 10_000_000_000]}}).encode()
    paths["header_lie"] = tmp / "header_lie.safetensors"
    paths["header_lie"].write_bytes(struct.pack("<Q", len(header)) + header + bytes(64))
    return paths


BOMB_REFUSALS = {
    "stride0": r"'0.weight' \[32000, 32000\] is a view that repeats its elements \(stride 0\): "
               r"it claims 4096000000 bytes from a storage of 4",
    "deflate": r"its zip entry 'seed/data/0' is compressed \(deflate, \d+ bytes declared to "
               r"inflate to 1073741824\)",
    "stored_lie": r"its zip entry 'seed/data/0' declares 1073741824 bytes \(stored in \d+\) "
                  r"in a file of \d+ bytes: the archive is damaged",
    "header_lie": r"tensor '0.weight' declares F32 \[50000, 50000\] \(10000000000 bytes\) at "
                  r"bytes 0..10000000000 of a body of 64",
}


def test_bombs_are_small_files_claiming_gigabytes(bombs):
    assert bombs["stride0"].stat().st_size < 4096
    assert torch.load(bombs["stride0"], weights_only=True, mmap=True)["0.weight"].stride() == (0, 0)
    assert bombs["deflate"].stat().st_size < 2 << 20
    with zipfile.ZipFile(bombs["deflate"]) as archive:
        assert archive.getinfo("seed/data/0").file_size == GiB
    assert bombs["header_lie"].stat().st_size < 1024


@pytest.mark.parametrize("bomb", list(BOMB_REFUSALS))
def test_bombs_are_refused(bombs, bomb):
    with pytest.raises(CheckpointError, match=BOMB_REFUSALS[bomb]):
        import_mlp(bombs[bomb], activation="relu")


def test_deprecated_importer_refuses_the_stride0_bomb(bombs):
    with pytest.warns(DeprecationWarning), pytest.raises(CheckpointError, match="stride 0"):
        load_linear_state_dict(bombs["stride0"])


# Run in a child process under a hard address-space limit; prints one JSON line. Exit code 0:
# every bomb was refused with a CheckpointError; 1: one was not.
CHILD = textwrap.dedent("""
    import json, resource, sys
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch
    from hooked_mlp.files.importers import import_mlp
    from hooked_mlp.files.format import CheckpointError

    def peak_kib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def hwm_kib():  # this process's own peak RSS (ru_maxrss keeps the parent's, see below)
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("VmHWM:")).split()[1])

    report = {"baseline_kib": peak_kib(), "baseline_hwm_kib": hwm_kib(), "bombs": {}}
    refused = True
    for path in sys.argv[2:]:
        try:
            import_mlp(path, activation="relu")
            outcome = "imported"
        except CheckpointError as e:
            outcome = "CheckpointError: " + str(e)
        except BaseException as e:
            outcome = type(e).__name__ + ": " + str(e)
        refused &= outcome.startswith("CheckpointError")
        report["bombs"][path] = {"outcome": outcome, "peak_kib": peak_kib(),
                                 "hwm_kib": hwm_kib()}
    # Controls, after the measurements: what torch.load alone (the old importer) does with them
    controls = {}
    for name, load in [
        ("deflate", lambda: torch.load(sys.argv[3], weights_only=True)),
        ("stride0", lambda: torch.load(sys.argv[2], weights_only=True)["0.weight"].clone()),
    ]:
        try:
            load()
            controls[name] = "loaded"
        except BaseException as e:
            controls[name] = type(e).__name__ + ": " + str(e)
    report["controls"] = controls
    print(json.dumps(report))
    sys.exit(0 if refused else 1)
""")


def test_bombs_never_allocate_under_an_address_space_limit(bombs):
    limit = 3 * GiB // 2  # room for torch itself (~0.7 GiB of address space), not for a bomb
    order = ["stride0", "deflate", "stored_lie", "header_lie"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(limit), *map(str, map(bombs.get,
                                                                                  order))],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    for name in order:
        result = report["bombs"][str(bombs[name])]
        assert re.match("CheckpointError: .*" + BOMB_REFUSALS[name], result["outcome"]), result
        # Refusing files that claim 1 to 6 GiB raised the peak RSS by less than 32 MiB. Linux
        # carries the parent's RSS at fork into the child's ru_maxrss, so that figure only bounds
        # the growth; VmHWM is this process's own peak (about 0.25 GiB: torch itself).
        assert result["peak_kib"] - report["baseline_kib"] < 32 * 1024, (name, report)
        assert result["hwm_kib"] - report["baseline_hwm_kib"] < 32 * 1024, (name, report)
        assert result["hwm_kib"] < 512 * 1024, (name, report)
    # The bombs are real: loading them as torch.load does, without the checks, cannot fit
    for name, outcome in report["controls"].items():
        assert "can't allocate memory" in outcome, (name, outcome)
