"""Import an MLP trained elsewhere as a `HookedMLP`: `import_mlp(source, activation=...)`.

`source` is a path or a mapping. Files are recognised by their content, whatever their suffix:

- a torch file (`.pt`, `.pth`, `.ckpt`: `torch.save`'s zip archive), read with
  `torch.load(weights_only=True, mmap=True)` after its zip directory is checked: an entry that is
  compressed, or that declares more bytes than the whole file has, is refused before anything is
  inflated (torch.save never compresses). torch's legacy (pre-1.6) format is refused: its storage
  sizes are read from the pickle and allocated before they can be checked;
- a safetensors file: a hooked-mlp checkpoint is loaded by `hooked_mlp.files.format.load`; any
other is read
  as a state dict with `safetensors.safe_open`, after its header's sizes are checked against the
  file's size;
- a mapping: a state dict (e.g. `module.state_dict()`) or a checkpoint dict.

Checkpoint wrappers are unwrapped: `{"state_dict": ...}`, `{"model_state_dict": ...}`,
`{"model": ...}`, nested too (Lightning's `{"state_dict": {"model.0.weight": ...}}`). Their other
entries are metadata, in which the activation (`activation`, `act_type`, `act_fn`,
`nonlinearity`) and the operation (`operation`, `fn_name`) are looked up, also inside a
`config` / `cfg` / `hparams` / `hyper_parameters` dict (for a safetensors file: its metadata).

The state dict is then read as one of three layouts (all with one optional common prefix, such as
`net.`, `model.`, `layers.`):

1. `nn.Sequential` of 2 to 17 `nn.Linear` layers: keys `<i>.weight` and optional `<i>.bias` for
   increasing integers `i` (`0, 2, 4` with the activations between them, or any others), weights
   `[out, in]`. `p` is the last layer's outputs; the first layer takes `2p` inputs (the one-hot
   `[e_a; e_b]`) or `p` (tied inputs: `e_a + e_b`); every hidden layer has the same width.
2. The layout of a published codebase on this task: `mlp.W_in [h, p]`, `mlp.W_out [p, h]`, tied
   inputs, no biases, `h = act(W_in @ (e_a + e_b))`, `logits = W_out @ h`; its `mlp.basis`
   buffer is ignored. TransformerLens uses the same names the other way round (`x @ W`), so the
   orientation is read from the shapes: as `[out, in]` unless `p=` says otherwise. When
   `h == p` the two orientations give models of the same shape, and the import is refused unless
   `orientation=` says which.
3. hooked-mlp's own names (`HookedMLP.state_dict()`): `W_in [d_input, H]`, `b_in [H]`,
   `W_hidden [L-1, H, H]`, `b_hidden [L-1, H]`, `W_out [H, p]`, `b_out [p]`, oriented `x @ W`.
   `W_out` gives `p`, so even a square `W_in` is unambiguous: `d_input == p` is tied, `2p` is not.

A layer without a bias in a model whose other layers have one gets a zero bias (the same function).
`key_map={"their key": "layout key"}` renames keys before recognition (a value of None drops a
key that is not part of the model). Every tensor used must be dense, floating point, finite, and
no larger than its storage (a stride-0 view of one number can claim gigabytes): importing never
allocates much more than the file holds.

The activation is never assumed: it is the `activation=` argument, or the file's record of it, or
the import is refused (when both are present they must agree). Every refusal names the key and
shape at fault and the argument that resolves it, where one does: a `CheckpointError` naming the
file for a path, a `ValueError` (or a `TypeError` for a wrong type) starting `state_dict:` for a
mapping.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from hooked_mlp.config import MAX_LAYERS, MLPConfig
from hooked_mlp.family import ACTIVATIONS, INPUT_ENCODINGS, OPERATIONS
from hooked_mlp.files.format import CheckpointError

if TYPE_CHECKING:
    from hooked_mlp.model import HookedMLP

__all__ = ["ORIENTATIONS", "from_linear_state_dict", "import_mlp", "load_linear_state_dict"]

ORIENTATIONS = ("out_in", "in_out")
_ORIENTATION_TEXT = {
    "out_in": "[out, in] (W @ x, like nn.Linear)",
    "in_out": "[in, out] (x @ W, like hooked-mlp and TransformerLens)",
}

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # tried in this order
_MAX_WRAPPERS = 4
_CONFIG_KEYS = ("config", "cfg", "hparams", "hyper_parameters")
_ACTIVATION_KEYS = ("activation", "act_type", "act_fn", "nonlinearity")
_OPERATION_KEYS = ("operation", "fn_name")

_ACTIVATION_ALIASES = {
    "relu": "relu",
    "gelu": "gelu",
    "silu": "silu", "swish": "silu",
    "quad": "quad", "square": "quad", "quadratic": "quad",
    "identity": "identity", "id": "identity", "linear": "identity", "none": "identity",
}
_OPERATION_ALIASES = {
    "add": "add", "addition": "add",
    "sub": "sub", "subtract": "sub", "subtraction": "sub",
    "mul": "mul", "multiply": "mul", "multiplication": "mul",
    "div": "div", "divide": "div", "division": "div",
    "x2_xy_y2": "x2_xy_y2", "x2xyy2": "x2_xy_y2",
}

_CANONICAL = ("W_in", "b_in", "W_hidden", "b_hidden", "W_out", "b_out")
_PUBLISHED = ("W_in", "W_out")
_PUBLISHED_IGNORED = ("basis",)
_SEQUENTIAL_KEY = re.compile(r"(?P<prefix>(?:.*\.)?)(?P<index>\d+)\.(?P<kind>weight|bias)")
_SHOWN_KEYS = 10

_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
_SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
    "C64": 8,
}
_ZIP_METHODS = {zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2",
                zipfile.ZIP_LZMA: "lzma"}


class _Refusal(Exception):  # noqa: N818 - internal; always re-raised as an error
    """A problem with the source, reported by `import_mlp` as a `CheckpointError` naming the file
    or as a `kind` (ValueError / TypeError) starting `state_dict:`."""

    def __init__(self, problem: str, kind: type[Exception] = ValueError) -> None:
        super().__init__(problem)
        self.problem = problem
        self.kind = kind


# ------------------------------------------------------------------------------ public API
def import_mlp(
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    activation: str | None = None,
    operation: str | None = None,
    key_map: Mapping[str, str | None] | None = None,
    orientation: str | None = None,
    p: int | None = None,
    tied_inputs: bool | None = None,
    input_encoding: str | None = None,
) -> HookedMLP:
    """Import an MLP from a torch or safetensors file, or from a state dict, as a `HookedMLP`.

    The layouts recognised are described in this module's docstring (`hooked_mlp.files.importers`).

    Args:
        source: a path to a torch file (`.pt`, `.pth`) or a safetensors file (recognised by
            content), or a mapping: a state dict or a checkpoint dict wrapping one.
        activation: the hidden layers' activation, a name of `hooked_mlp.family.ACTIVATIONS`
            (relu, gelu, silu, quad, identity; case-insensitive, with the aliases swish, square,
            linear, ...). Needed unless the file records it; must agree with the file if it does.
        operation: the task's operation (add, sub, mul, div, x2_xy_y2). If neither given nor
            recorded in the file, `add`, the study's task. It changes the labels and analyses,
            not the weights.
        key_map: renames the state dict's keys into a recognised layout before reading it, e.g.
            `{"fc1.weight": "0.weight", "fc2.weight": "2.weight"}`; a value of None drops the key.
        orientation: `"out_in"` (weights `[out, in]`, `W @ x`, like `nn.Linear`) or `"in_out"`
            (`[in, out]`, `x @ W`). Needed for `mlp.W_in`/`mlp.W_out` when `h == p`; elsewhere it
            overrides the layout's own convention.
        p: the modulus. Checked against the weights; for `mlp.W_in`/`mlp.W_out` it also tells
            which dimension is `p`.
        tied_inputs: checked against the weights (a first layer of `p` inputs is tied, `2p` not).
        input_encoding: how the first layer reads each operand, a name of
            `hooked_mlp.family.INPUT_ENCODINGS` (default `one_hot`; `scalar`, `circle`, `binary`
            take 1, 2, ceil(log2 p) numbers per operand): the first layer must take twice (or,
            tied, once) that many inputs. Checked against a hooked-mlp checkpoint's record.

    Returns:
        A `HookedMLP` with the imported weights (float32, on the CPU) and `train_info` None; for a
        hooked-mlp checkpoint, the model `hooked_mlp.files.format.load` returns.

    Raises:
        CheckpointError: (a ValueError) for a path: what is wrong, naming the key and shape at
            fault and the argument that resolves it.
        ValueError, TypeError: the same for a mapping (messages start `state_dict:`), and for
            invalid arguments.
    """
    args = _Args.checked(activation, operation, key_map, orientation, p, tied_inputs,
                         input_encoding)
    if isinstance(source, (str, os.PathLike)):
        path = Path(os.fsdecode(source))
        try:
            return _import_file(path, args)
        except _Refusal as refusal:
            raise CheckpointError(os.fsdecode(source), refusal.problem) from None
    if isinstance(source, Mapping):
        try:
            return _import_object(source, args, "this state dict")
        except _Refusal as refusal:
            raise refusal.kind(f"state_dict: {refusal.problem}") from None
    module = isinstance(source, torch.nn.Module)
    hint = " (for a module, pass module.state_dict())" if module else ""
    raise TypeError(f"source must be a path (.pt, .pth, .safetensors) or a mapping (a state dict "
                    f"or a checkpoint dict), got {type(source).__name__}{hint}")


def load_linear_state_dict(
    path: str | os.PathLike[str], cfg: MLPConfig | None = None
) -> HookedMLP:
    """Deprecated: use `import_mlp(path, activation="relu")`.

    Imports a torch file holding an `nn.Sequential` state dict as a ReLU model (its documented
    contract), or with `cfg`'s activation, operation and shape when `cfg` is given. It now goes
    through `import_mlp`, so it reads every layout `import_mlp` reads, with the same checks.
    """
    warnings.warn("hooked_mlp.load_linear_state_dict is deprecated; use "
                  "hooked_mlp.import_mlp(path, activation='relu')", DeprecationWarning,
                  stacklevel=2)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a path to a .pt file, got {type(path).__name__}")
    return _import_as(path, cfg, os.fsdecode(path))


def from_linear_state_dict(
    state_dict: Mapping[str, Tensor], cfg: MLPConfig | None = None
) -> HookedMLP:
    """Deprecated: use `import_mlp(state_dict, activation="relu")`.

    Imports an `nn.Sequential` state dict as a ReLU model (its documented contract), or with
    `cfg`'s activation, operation and shape when `cfg` is given, through `import_mlp`.
    """
    warnings.warn("hooked_mlp.from_linear_state_dict is deprecated; use "
                  "hooked_mlp.import_mlp(state_dict, activation='relu')", DeprecationWarning,
                  stacklevel=2)
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    return _import_as(state_dict, cfg, None)


def _import_as(source: Any, cfg: MLPConfig | None, path: str | None) -> HookedMLP:
    """The deprecated importers: relu, or everything `cfg` says, checked against the weights."""
    if cfg is None:
        return import_mlp(source, activation="relu")
    if not isinstance(cfg, MLPConfig):
        raise TypeError(f"cfg must be an MLPConfig, got {type(cfg).__name__}")
    model = import_mlp(source, activation=cfg.activation, operation=cfg.operation, p=cfg.p,
                       tied_inputs=cfg.tied_inputs, input_encoding=cfg.input_encoding)
    differ = [name for name in ("d_hidden", "bias", "n_layers")
              if getattr(model.cfg, name) != getattr(cfg, name)]
    if differ:
        problem = ("the weights give "
                   + ", ".join(f"{n}={getattr(model.cfg, n)!r}" for n in differ)
                   + ", but cfg has " + ", ".join(f"{n}={getattr(cfg, n)!r}" for n in differ))
        if path is not None:
            raise CheckpointError(path, problem)
        raise ValueError(f"state_dict: {problem}")
    from hooked_mlp.model import HookedMLP

    return HookedMLP.from_params(cfg, model.state_tensors())


# ------------------------------------------------------------------------------ arguments
@dataclass(frozen=True)
class _Args:
    """`import_mlp`'s keyword arguments, checked and with names normalised."""

    activation: str | None
    operation: str | None
    key_map: dict[str, str | None] | None
    orientation: str | None
    p: int | None
    tied_inputs: bool | None
    input_encoding: str | None = None

    @classmethod
    def checked(cls, activation: Any, operation: Any, key_map: Any, orientation: Any, p: Any,
                tied_inputs: Any, input_encoding: Any = None) -> _Args:
        act = None if activation is None else _argument_name("activation", activation)
        op = None if operation is None else _argument_name("operation", operation)
        if key_map is not None:
            if not isinstance(key_map, Mapping):
                raise TypeError(f"key_map must be a mapping from your keys to layout keys, "
                                f"got {type(key_map).__name__}")
            for k, v in key_map.items():
                if not isinstance(k, str) or not (v is None or isinstance(v, str)):
                    raise TypeError(f"key_map must map key names (str) to key names or None, "
                                    f"got {k!r}: {v!r}")
            targets: dict[str, str] = {}
            for k, v in key_map.items():
                if v is not None and v in targets:
                    raise ValueError(f"key_map maps both {targets[v]!r} and {k!r} to {v!r}")
                if v is not None:
                    targets[v] = k
            key_map = dict(key_map)
        if orientation is not None and orientation not in ORIENTATIONS:
            raise ValueError(f"orientation must be one of {list(ORIENTATIONS)}: 'out_in' for "
                             f"weights [out, in] (nn.Linear), 'in_out' for [in, out] (x @ W); "
                             f"got {orientation!r}")
        if p is not None and (isinstance(p, bool) or not isinstance(p, int) or p < 2):
            raise ValueError(f"p must be an integer >= 2, got {p!r}")
        if tied_inputs is not None and not isinstance(tied_inputs, bool):
            raise TypeError(f"tied_inputs must be True, False or None, got {tied_inputs!r}")
        if input_encoding is not None and input_encoding not in INPUT_ENCODINGS:
            raise ValueError(f"input_encoding must be one of {list(INPUT_ENCODINGS)}, got "
                             f"{input_encoding!r}")
        return cls(act, op, key_map, orientation, p, tied_inputs, input_encoding)


def _normalise(value: str, aliases: Mapping[str, str]) -> str | None:
    """`"ReLU"`, `"nn.GELU()"`, `" Swish "` -> the family's name; None if unknown."""
    name = value.strip().rsplit(".", 1)[-1].removesuffix("()").strip().lower()
    return aliases.get(name)


def _known(what: str) -> str:
    table, aliases = ((ACTIVATIONS, _ACTIVATION_ALIASES) if what == "activation"
                      else (OPERATIONS, _OPERATION_ALIASES))
    extra = sorted(a for a, name in aliases.items() if a != name)
    return f"one of {list(table)} (case-insensitive; also {', '.join(extra)})"


def _argument_name(what: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a name, {_known(what)}; got {value!r}")
    name = _normalise(value, _ACTIVATION_ALIASES if what == "activation" else _OPERATION_ALIASES)
    if name is None:
        raise ValueError(f"{what}={value!r} is not known: pass {_known(what)}")
    return name


# ------------------------------------------------------------------------------ files
def _import_file(path: Path, args: _Args) -> HookedMLP:
    if not path.exists():
        raise _Refusal("no such file")
    if not path.is_file():
        raise _Refusal("not a file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as e:
        raise _Refusal(f"cannot be read ({e.strerror})") from None
    if size == 0:
        raise _Refusal("the file is empty")
    if head.startswith(b"PK\x03\x04"):
        _check_zip(path, size)
        return _import_object(_torch_load(path), args, "this file")
    if len(head) == 9 and head[8:9] == b"{":
        header = _safetensors_header(path, size)
        metadata = header.get("__metadata__")
        if isinstance(metadata, dict) and "hooked_mlp" in metadata:
            return _hooked_checkpoint(path, args)
        tensors, metadata = _read_safetensors(path)
        return _import_object(tensors, args, "this file", [("__metadata__.", metadata)])
    if head[:1] == b"\x80":
        raise _Refusal("is a pickle, or a torch file in torch's legacy (pre-1.6) format, whose "
                       "storage sizes cannot be checked before torch allocates them; if you "
                       "trust it, re-save it with a current torch: "
                       "torch.save(torch.load(path, weights_only=True), new_path)")
    raise _Refusal("is neither a torch file (.pt, .pth: torch.save's zip archive) nor a "
                   "safetensors file")


def _check_zip(path: Path, size: int) -> None:
    """Refuse a zip archive that could inflate beyond its size, before torch reads it."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise _Refusal(f"is a damaged zip archive ({e})") from None
    total = 0
    for info in entries:
        if info.compress_type != zipfile.ZIP_STORED:
            method = _ZIP_METHODS.get(info.compress_type, f"method {info.compress_type}")
            raise _Refusal(
                f"its zip entry {info.filename!r} is compressed ({method}, {info.compress_size} "
                f"bytes declared to inflate to {info.file_size}); torch.save never compresses, "
                f"and a compressed entry can inflate far beyond the file's {size} bytes, so it "
                f"is not opened. If you trust the file, load it yourself and pass the state dict")
        if info.file_size != info.compress_size or info.file_size > size:
            raise _Refusal(
                f"its zip entry {info.filename!r} declares {info.file_size} bytes (stored in "
                f"{info.compress_size}) in a file of {size} bytes: the archive is damaged")
        total += info.file_size
    if total > size:
        raise _Refusal(f"its zip entries declare {total} bytes in all, more than the file's "
                       f"{size}: the archive is damaged")


def _torch_load(path: Path) -> Any:
    """`torch.load` restricted to tensors and plain containers, mapped rather than read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        lines = str(e).splitlines()
        detail = next((line.strip() for line in lines if "WeightsUnpickler" in line),
                      lines[0] if lines else "")
        raise _Refusal(f"holds Python objects other than tensors and plain containers, which "
                       f"are not unpickled ({_clip(detail)}); if it is a whole pickled model, "
                       f"save its model.state_dict() instead") from None
    except Exception as e:  # torch raises RuntimeError, ValueError, ... for damaged files
        first = str(e).splitlines()[0] if str(e) else ""
        raise _Refusal(f"is not a loadable torch file ({type(e).__name__}: {_clip(first)})"
                       ) from None


def _safetensors_header(path: Path, size: int) -> dict[str, Any]:
    """The header of a safetensors file, its declared sizes checked against the file's size."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > size - 8 or n > _MAX_SAFETENSORS_HEADER:
            raise _Refusal(f"not a valid safetensors file: its header claims {n} bytes in a "
                           f"file of {size}")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _Refusal("not a valid safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise _Refusal("not a valid safetensors file: its header is not a JSON object")
    body, total = size - 8 - n, 0
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        ok = (isinstance(spec, dict) and isinstance(spec.get("dtype"), str)
              and isinstance(spec.get("shape"), list) and isinstance(spec.get("data_offsets"), list)
              and len(spec["data_offsets"]) == 2
              and all(_is_count(x) for x in spec["shape"] + spec["data_offsets"]))
        if not ok:
            raise _Refusal(f"not a valid safetensors file: tensor {name!r} has a malformed entry")
        start, end = spec["data_offsets"]
        width = _SAFETENSORS_DTYPE_BYTES.get(spec["dtype"])
        if width is None:
            raise _Refusal(f"tensor {name!r} has dtype {spec['dtype']}, which is not imported")
        need = math.prod(spec["shape"]) * width
        if not start <= end <= body or end - start != need:
            raise _Refusal(
                f"tensor {name!r} declares {spec['dtype']} {spec['shape']} ({need} bytes) at "
                f"bytes {start}..{end} of a body of {body}: the file is damaged")
        total += need
    if total > body:
        raise _Refusal(f"its tensors declare {total} bytes, more than the {body} the file holds")
    return header


def _is_count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """A plain safetensors file: its tensors, and its metadata (JSON config strings parsed)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata: dict[str, Any] = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors has its own error types
        raise _Refusal(f"corrupt safetensors data ({_clip(str(e))})") from None
    for key in _CONFIG_KEYS:
        value = metadata.get(key)
        if isinstance(value, str) and value.lstrip().startswith("{"):
            with contextlib.suppress(ValueError, RecursionError):  # not a config we can read
                metadata[key] = json.loads(value)
    return tensors, metadata


def _hooked_checkpoint(path: Path, args: _Args) -> HookedMLP:
    """A hooked-mlp checkpoint: `hooked_mlp.files.format.load`, the arguments checked against its
    config."""
    if args.key_map is not None or args.orientation is not None:
        raise _Refusal("is a hooked-mlp checkpoint, which has its own names and orientation: "
                       "leave out key_map= and orientation=")
    model = _load_hooked(path)
    # every argument that names a config field is checked against what the file records
    for name in (f.name for f in fields(_Args) if f.name in MLPConfig.__dataclass_fields__):
        wanted, recorded = getattr(args, name), getattr(model.cfg, name)
        if wanted is not None and wanted != recorded:
            raise _Refusal(f"{name}={wanted!r} was passed, but this hooked-mlp checkpoint "
                           f"records {name}={recorded!r}; pass {name}={recorded!r} or leave it "
                           f"out")
    return model


def _load_hooked(path: Path) -> HookedMLP:
    from hooked_mlp.files.checkpoints import load

    return load(path)


# ------------------------------------------------------------------------------ the state dict
def _import_object(
    obj: Any, args: _Args, what: str, extra_metadata: list[tuple[str, Any]] | None = None
) -> HookedMLP:
    """Import from a loaded object: unwrap, rename, recognise, check, build."""
    if not isinstance(obj, Mapping):
        raise _Refusal(f"{what} holds a {type(obj).__name__}, not a state dict (a mapping of "
                       f"names to tensors)", TypeError)
    state, levels = _unwrap(obj)
    tensors = _tensors_of(state, what, levels[-1][0])
    tensors, origin = _apply_key_map(tensors, args.key_map)
    layout = _recognise(tensors, origin)
    orientation, reading = _orient(layout, tensors, origin, args)
    used = list(dict.fromkeys(key for layer in layout.layers
                              for key in (layer.weight, layer.bias) if key is not None))
    for key in used:
        _check_storage(_show(origin, key, tensors[key]), tensors[key])
    metadata = levels + (extra_metadata or [])
    activation = _resolve("activation", args.activation, metadata, what)
    operation = _resolve("operation", args.operation, metadata, what) or "add"
    bias = any(layer.bias is not None for layer in layout.layers)
    try:
        cfg = MLPConfig(p=reading.p, d_hidden=reading.d_hidden, activation=activation,
                        operation=operation, tied_inputs=reading.tied, bias=bias,
                        input_encoding=args.input_encoding or "one_hot",
                        n_layers=len(layout.layers) - 1)
    except ValueError as e:
        raise _Refusal(f"the {layout.name} weights ({_describe(layout, tensors, origin)}) give "
                       f"p={reading.p}, d_hidden={reading.d_hidden}, "
                       f"n_layers={len(layout.layers) - 1}, which hooked-mlp cannot build: {e}"
                       ) from None
    for key in used:
        _check_finite(_show(origin, key, tensors[key]), tensors[key])
    from hooked_mlp.model import HookedMLP

    return HookedMLP.from_params(cfg, _params(layout, tensors, orientation, cfg))


def _unwrap(obj: Mapping[Any, Any]) -> tuple[Mapping[Any, Any], list[tuple[str, Any]]]:
    """Descend through `{"state_dict": ...}`-style wrappers: the state dict, and every mapping
    passed on the way (with its path) as metadata."""
    levels: list[tuple[str, Any]] = []
    path = ""
    for _ in range(_MAX_WRAPPERS + 1):
        levels.append((path, obj))
        inner = next((k for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            return obj, levels
        path, obj = f"{path}{inner}.", obj[inner]
    raise _Refusal(f"wrappers nested more than {_MAX_WRAPPERS} deep ({path[:-1]!r}); pass the "
                   f"state dict itself")


def _tensors_of(state: Mapping[Any, Any], what: str, where: str) -> dict[str, Tensor]:
    """The tensors of the state dict; its other entries stay as metadata."""
    tensors: dict[str, Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise _Refusal(f"its keys must be names (str), got {key!r} "
                           f"({type(key).__name__})", TypeError)
        if isinstance(value, Tensor):
            tensors[key] = value
        elif _looks_like_parameter(key):
            raise _Refusal(f"{key!r} must be a tensor, got {type(value).__name__}", TypeError)
    if not tensors:
        keys = ", ".join(repr(k) for k in list(state)[:_SHOWN_KEYS])
        at = f" at {where[:-1]!r}" if where else ""
        raise _Refusal(f"{what} holds no tensors{at} (its keys: {keys or 'none'})")
    return tensors


def _looks_like_parameter(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return last in ("weight", "bias") or last in _CANONICAL


def _apply_key_map(
    tensors: dict[str, Tensor], key_map: dict[str, str | None] | None
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Rename (or drop) keys; `origin` maps each new key back to the user's own."""
    if not key_map:
        return tensors, {k: k for k in tensors}
    missing = [k for k in key_map if k not in tensors]
    if missing:
        raise _Refusal(f"key_map names {missing}, which the state dict does not hold; its keys "
                       f"are {_listing(tensors, {k: k for k in tensors})}")
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in tensors.items():
        new = key_map.get(key, key)
        if new is None:
            continue
        if new in out:
            renamed = key if key in key_map else origin[new]
            raise _Refusal(f"key_map renames {renamed!r} to "
                           f"{new!r}, a key the state dict already holds; map that one too")
        out[new], origin[new] = value, key
    return out, origin


def _show(origin: Mapping[str, str], key: str, t: Tensor, index: int | None = None) -> str:
    """The user's own key and shape, e.g. `'fc1.weight' (as '0.weight') [16, 14]`."""
    own = origin.get(key, key)
    renamed = f" (as {key!r})" if own != key else ""
    part = f"[{index}] (of {list(t.shape)})" if index is not None else f" {list(t.shape)}"
    return f"{own!r}{renamed}{part}"


def _listing(tensors: Mapping[str, Tensor], origin: Mapping[str, str]) -> str:
    shown = [_show(origin, k, t) for k, t in list(tensors.items())[:_SHOWN_KEYS]]
    more = len(tensors) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


# ------------------------------------------------------------------------------ layouts
@dataclass(frozen=True)
class _Layer:
    """One linear map: the layout keys of its weight and bias; `index` selects a slice of a
    stacked `W_hidden` / `b_hidden`."""

    weight: str
    bias: str | None
    index: int | None = None


@dataclass(frozen=True)
class _Layout:
    name: str
    layers: list[_Layer]
    convention: str  # the orientation its names imply
    infer_orientation: bool = False  # names used both ways (mlp.W_in / mlp.W_out)


@dataclass(frozen=True)
class _Reading:
    p: int
    d_hidden: int
    tied: bool


_LAYOUTS_TEXT = (
    "nn.Sequential state dicts ('0.weight', '0.bias', '2.weight', ..., with any common prefix), "
    "hooked-mlp's names (W_in, b_in, W_hidden, b_hidden, W_out, b_out, x @ W), and "
    "'mlp.W_in' [h, p] with 'mlp.W_out' [p, h] (and 'mlp.basis', ignored)")


def _recognise(tensors: dict[str, Tensor], origin: dict[str, str]) -> _Layout:
    for recognise in (_published_layout, _canonical_layout, _sequential_layout):
        layout = recognise(tensors, origin)
        if layout is not None:
            return layout
    raise _Refusal(f"its keys fit no layout hooked-mlp reads: {_listing(tensors, origin)}. "
                   f"Recognised: {_LAYOUTS_TEXT}. Pass key_map= to rename your keys into one "
                   f"of them, e.g. {_key_map_example(tensors, origin)}, with None for a key that "
                   f"is not part of the model")


def _key_map_example(tensors: Mapping[str, Tensor], origin: Mapping[str, str]) -> str:
    """A key_map for the user's own layers, taken in their order as layers 0, 2, 4, ..."""
    own = [origin[k] for k in tensors]
    stems = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in own
                               if k.endswith((".weight", ".bias"))))
    pairs = [(f"{stem}.{kind}", f"{2 * i}.{kind}") for i, stem in enumerate(stems[:2])
             for kind in ("weight", "bias") if f"{stem}.{kind}" in own]
    if len(stems) < 2 or any(theirs == ours for theirs, ours in pairs):
        pairs = [("fc1.weight", "0.weight"), ("fc1.bias", "0.bias")]
    return "key_map={" + ", ".join(f"{theirs!r}: {ours!r}" for theirs, ours in pairs) + ", ...}"


def _common_prefix(keys: list[str], names: tuple[str, ...]) -> str | None:
    """The one prefix (empty or ending in '.') that makes every key one of `names`, or None."""
    prefixes = set()
    for key in keys:
        name = next((n for n in names if key.endswith(n)
                     and (len(key) == len(n) or key[-len(n) - 1] == ".")), None)
        if name is None:
            return None
        prefixes.add(key[: len(key) - len(name)])
    return prefixes.pop() if len(prefixes) == 1 else None


def _published_layout(tensors: dict[str, Tensor], origin: dict[str, str]) -> _Layout | None:
    prefix = _common_prefix(list(tensors), _PUBLISHED + _PUBLISHED_IGNORED)
    if prefix is None or not (prefix == "mlp." or prefix.endswith(".mlp.")):
        return None
    if any(f"{prefix}{n}" not in tensors for n in _PUBLISHED):
        return None
    layers = [_Layer(f"{prefix}W_in", None), _Layer(f"{prefix}W_out", None)]
    _check_dims(layers, tensors, origin)
    return _Layout("mlp.W_in / mlp.W_out", layers, "out_in", infer_orientation=True)


def _canonical_layout(tensors: dict[str, Tensor], origin: dict[str, str]) -> _Layout | None:
    prefix = _common_prefix(list(tensors), _CANONICAL)
    if prefix is None:
        return None
    have = {name: f"{prefix}{name}" for name in _CANONICAL if f"{prefix}{name}" in tensors}
    missing = [f"{prefix}{n}" for n in ("W_in", "W_out") if n not in have]
    if "b_hidden" in have and "W_hidden" not in have:
        missing.append(f"{prefix}W_hidden")
    if missing:
        raise _Refusal(f"its keys are hooked-mlp's names ({_listing(tensors, origin)}) but "
                       f"{missing} is missing; pass key_map= if it is under another name")
    n_hidden = 0
    if "W_hidden" in have:
        W = tensors[have["W_hidden"]]
        if W.ndim != 3 or W.shape[1] != W.shape[2]:
            raise _Refusal(f"{_show(origin, have['W_hidden'], W)} must be [n_layers - 1, H, H]")
        n_hidden = W.shape[0]
        if "b_hidden" in have:
            b = tensors[have["b_hidden"]]
            if b.ndim != 2 or b.shape[0] != n_hidden:
                raise _Refusal(f"{_show(origin, have['b_hidden'], b)} must be "
                               f"[n_layers - 1, H] = [{n_hidden}, H]")
    layers = [_Layer(have["W_in"], have.get("b_in"))]
    layers += [_Layer(have["W_hidden"], have.get("b_hidden"), i) for i in range(n_hidden)]
    layers.append(_Layer(have["W_out"], have.get("b_out")))
    _check_dims(layers, tensors, origin)
    return _Layout("hooked-mlp names", layers, "in_out")


def _sequential_layout(tensors: dict[str, Tensor], origin: dict[str, str]) -> _Layout | None:
    matches = [_SEQUENTIAL_KEY.fullmatch(k) for k in tensors]
    if not all(matches) or len({m["prefix"] for m in matches if m}) != 1:
        return None
    weights: dict[int, str] = {}
    biases: dict[int, str] = {}
    for m in matches:
        assert m is not None
        (weights if m["kind"] == "weight" else biases)[int(m["index"])] = m.string
    orphans = sorted(set(biases) - set(weights))
    if orphans:
        key = biases[orphans[0]]
        raise _Refusal(f"{_show(origin, key, tensors[key])} is a bias without a weight "
                       f"('{key[: -len('bias')]}weight' is missing)")
    if not 2 <= len(weights) <= MAX_LAYERS + 1:
        raise _Refusal(f"it holds {len(weights)} linear layer(s) ({_listing(tensors, origin)}); "
                       f"hooked-mlp's models have 2 to {MAX_LAYERS + 1} (1 to {MAX_LAYERS} "
                       f"hidden layers)")
    layers = [_Layer(weights[i], biases.get(i)) for i in sorted(weights)]
    _check_dims(layers, tensors, origin)
    return _Layout("nn.Sequential", layers, "out_in")


def _check_dims(layers: list[_Layer], tensors: dict[str, Tensor], origin: dict[str, str]) -> None:
    """Weights are matrices and biases vectors (slices of W_hidden / b_hidden are checked by
    the caller)."""
    for layer in layers:
        if layer.index is not None:
            continue
        W = tensors[layer.weight]
        if W.ndim != 2:
            raise _Refusal(f"{_show(origin, layer.weight, W)} must be a matrix (2-D)")
        if layer.bias is not None and tensors[layer.bias].ndim != 1:
            raise _Refusal(f"{_show(origin, layer.bias, tensors[layer.bias])} must be a "
                           f"vector (1-D)")


def _matrix(tensors: Mapping[str, Tensor], layer: _Layer) -> Tensor:
    W = tensors[layer.weight]
    return W if layer.index is None else W[layer.index]


def _layer_text(layer: _Layer, tensors: Mapping[str, Tensor], origin: Mapping[str, str]) -> str:
    return _show(origin, layer.weight, tensors[layer.weight], layer.index)


def _describe(layout: _Layout, tensors: Mapping[str, Tensor], origin: Mapping[str, str]) -> str:
    seen = dict.fromkeys(layer.weight for layer in layout.layers)
    return ", ".join(_show(origin, key, tensors[key]) for key in seen)


def _read(layout: _Layout, tensors: Mapping[str, Tensor], origin: Mapping[str, str],
          orientation: str, encoding: str | None = None) -> _Reading:
    """p, d_hidden and tied inputs from the shapes read in `orientation`, or a refusal saying
    which key and shape do not fit."""
    layers = layout.layers
    shapes = [tuple(tensors[layer.weight].shape[0 if layer.index is None else 1:])
              for layer in layers]
    ins_outs = [(s[1], s[0]) if orientation == "out_in" else s for s in shapes]
    reading_as = f"(reading the weights as {_ORIENTATION_TEXT[orientation]})"
    for i in range(1, len(layers)):
        if ins_outs[i][0] != ins_outs[i - 1][1]:
            raise _Refusal(
                f"{_layer_text(layers[i - 1], tensors, origin)} gives {ins_outs[i - 1][1]} "
                f"outputs but {_layer_text(layers[i], tensors, origin)} takes {ins_outs[i][0]} "
                f"inputs {reading_as}")
    widths = [out for _, out in ins_outs[:-1]]
    if len(set(widths)) > 1:
        listed = ", ".join(f"{_layer_text(layer, tensors, origin)}: {w}"
                           for layer, w in zip(layers[:-1], widths, strict=True))
        raise _Refusal(f"its hidden layers have different widths ({listed}); hooked-mlp's "
                       f"models have one width d_hidden for every hidden layer")
    d_in, p = ins_outs[0][0], ins_outs[-1][1]
    width = INPUT_ENCODINGS[encoding or "one_hot"].width(p)
    if encoding not in (None, "one_hot") and d_in not in (width, 2 * width):
        raise _Refusal(
            f"{_layer_text(layers[0], tensors, origin)} takes {d_in} inputs, but "
            f"input_encoding={encoding!r} with p = {p} (from "
            f"{_layer_text(layers[-1], tensors, origin)} {reading_as}) gives {2 * width} "
            f"inputs ([enc(a); enc(b)]) or {width} (tied inputs)")
    if d_in not in (width, 2 * width):
        raise _Refusal(
            f"{_layer_text(layers[0], tensors, origin)} takes {d_in} inputs, but "
            f"{_layer_text(layers[-1], tensors, origin)} gives p = {p} outputs {reading_as}: "
            f"the first layer must take 2p = {2 * p} (one-hot [e_a; e_b]) or p = {p} "
            f"(e_a + e_b, tied inputs)"
            + ("; for a dense first layer pass input_encoding= (scalar, circle or binary)"
               if d_in < p else ""))
    for layer, (_, out) in zip(layers, ins_outs, strict=True):
        if layer.bias is not None:
            b = tensors[layer.bias]
            length = b.shape[-1]
            if length != out:
                raise _Refusal(f"{_show(origin, layer.bias, b, layer.index)} must have "
                               f"{out} entries, one per output of "
                               f"{_layer_text(layer, tensors, origin)}")
    return _Reading(p=p, d_hidden=widths[0], tied=d_in == width)


def _orient(layout: _Layout, tensors: dict[str, Tensor], origin: dict[str, str],
            args: _Args) -> tuple[str, _Reading]:
    """The orientation to read the weights in, and what they give; checks p= and tied_inputs=."""
    if layout.infer_orientation and args.orientation is None:
        orientation, reading = _infer_orientation(layout, tensors, origin, args.p,
                                                  args.input_encoding)
    else:
        orientation = args.orientation or layout.convention
        reading = _read(layout, tensors, origin, orientation, args.input_encoding)
    last, first = layout.layers[-1], layout.layers[0]
    if args.p is not None and reading.p != args.p:
        raise _Refusal(f"p={args.p} was passed, but {_layer_text(last, tensors, origin)} gives "
                       f"p = {reading.p} (read as {_ORIENTATION_TEXT[orientation]})")
    if args.tied_inputs is not None and reading.tied != args.tied_inputs:
        size = "p" if reading.tied else "2p"
        raise _Refusal(f"tied_inputs={args.tied_inputs} was passed, but "
                       f"{_layer_text(first, tensors, origin)} takes {size} inputs "
                       f"(p = {reading.p}), so tied_inputs={reading.tied}")
    return orientation, reading


def _infer_orientation(layout: _Layout, tensors: dict[str, Tensor], origin: dict[str, str],
                       p: int | None, encoding: str | None = None) -> tuple[str, _Reading]:
    """`mlp.W_in` / `mlp.W_out` are written `[out, in]` by the published codebase and `[in, out]`
    by TransformerLens: keep the readings the shapes (and p=) allow; refuse if two remain that
    give models of the same shape (square weights), else prefer the published convention."""
    readings: dict[str, _Reading] = {}
    refusals: dict[str, _Refusal] = {}
    for orientation in ORIENTATIONS:
        try:
            readings[orientation] = _read(layout, tensors, origin, orientation, encoding)
        except _Refusal as refusal:
            refusals[orientation] = refusal
    if not readings:
        raise refusals[layout.convention]
    if p is not None:
        fitting = {o: r for o, r in readings.items() if r.p == p}
        if not fitting:
            gives = " or ".join(f"p = {r.p} as {o}" for o, r in readings.items())
            raise _Refusal(f"p={p} was passed, but {_describe(layout, tensors, origin)} give "
                           f"{gives}")
        readings = fitting
    if len(readings) == 1:
        return next(iter(readings.items()))
    a, b = readings.values()
    if (a.p, a.d_hidden) == (b.p, b.d_hidden):
        raise _Refusal(
            f"{_describe(layout, tensors, origin)} are square (h = p = {a.p}), so their "
            f"orientation cannot be read from their shapes: as [out, in] (h = act(W_in @ x), "
            f"the published layout's convention) or as [in, out] (h = act(x @ W_in), "
            f"TransformerLens's), two different models. Pass orientation='out_in' or "
            f"orientation='in_out' (p= cannot settle it when h == p)")
    return layout.convention, readings[layout.convention]


# ------------------------------------------------------------------------------ tensors
def _check_storage(name: str, t: Tensor) -> None:
    """Dense, floating point, and backed by as many bytes as it claims: reading it allocates
    nothing beyond what the source holds."""
    if t.is_meta:
        raise _Refusal(f"{name} is a meta tensor: a shape without data (save the weights of a "
                       f"model that holds them)", TypeError)
    if t.layout != torch.strided:
        raise _Refusal(f"{name} is a {t.layout} tensor; dense weights are imported (save it "
                       f"with .to_dense())", TypeError)
    if not t.dtype.is_floating_point:
        raise _Refusal(f"{name} has dtype {t.dtype}; weights must be floating point "
                       f"(save it with .float())", TypeError)
    claimed = t.numel() * t.element_size()
    try:
        held = t.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError):
        raise _Refusal(f"{name} has no storage of its own (a {type(t).__name__}); pass plain "
                       f"tensors", TypeError) from None
    repeats = any(stride == 0 and size > 1
                  for stride, size in zip(t.stride(), t.shape, strict=True))
    if repeats or held < claimed:
        how = "repeats its elements (stride 0)" if repeats else "is larger than its storage"
        raise _Refusal(f"{name} is a view that {how}: it claims {claimed} bytes from a storage "
                       f"of {held}, and is refused so that importing never expands a small "
                       f"source into gigabytes; save it with .contiguous() if it is meant")


def _check_finite(name: str, t: Tensor) -> None:
    values = t if t.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) \
        else t.to(torch.float32)
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        raise _Refusal(f"{name} holds NaN or infinite values ({bad} of {t.numel()}); "
                       f"only finite weights are imported")


def _params(layout: _Layout, tensors: Mapping[str, Tensor], orientation: str,
            cfg: MLPConfig) -> dict[str, Tensor]:
    """The parameters named and shaped as `functional.param_shapes(cfg)`, float32 on the CPU.

    Weights read as [out, in] stay transposed views of the source's memory, so the model
    multiplies exactly as `nn.Linear` does and reproduces its logits bit for bit."""
    def x_at_w(W: Tensor) -> Tensor:
        W = W.to("cpu", torch.float32)
        return W.t() if orientation == "out_in" else W

    def bias(layer: _Layer, width: int) -> Tensor:
        if layer.bias is None:
            return torch.zeros(width)
        b = tensors[layer.bias]
        return (b if layer.index is None else b[layer.index]).to("cpu", torch.float32)

    first, *hidden, last = layout.layers
    H = cfg.d_hidden
    params = {"W_in": x_at_w(_matrix(tensors, first)).contiguous()}  # a row lookup
    if cfg.bias:
        params["b_in"] = bias(first, H)
    if hidden:
        stacked = torch.stack([_matrix(tensors, layer).to("cpu", torch.float32)
                               for layer in hidden])
        params["W_hidden"] = stacked.transpose(1, 2) if orientation == "out_in" else stacked
        if cfg.bias:
            params["b_hidden"] = torch.stack([bias(layer, H) for layer in hidden])
    params["W_out"] = x_at_w(_matrix(tensors, last))
    if cfg.bias:
        params["b_out"] = bias(last, cfg.p)
    return params


# ------------------------------------------------------------------------------ metadata
def _resolve(what: str, argument: str | None, levels: list[tuple[str, Any]],
             source: str) -> str | None:
    """The activation (or operation): the argument, checked against the file's records of it."""
    keys = _ACTIVATION_KEYS if what == "activation" else _OPERATION_KEYS
    aliases = _ACTIVATION_ALIASES if what == "activation" else _OPERATION_ALIASES
    records = _records(levels, keys)
    known: dict[str, str] = {}  # name -> where
    for where, value in records:
        text = value if isinstance(value, str) else getattr(value, "__name__", None)
        name = None if text is None else _normalise(text, aliases)
        if name is None:
            shown = text if text is not None else _clip(repr(value))
            raise _Refusal(
                f"{source} records the {what} {shown!r} (at {where!r}), which is not "
                f"{_known(what)}. If it is one of these under another name, pass the state "
                f"dict without that entry, with {what}=")
        known.setdefault(name, where)
    if len(known) > 1:
        listed = " and ".join(f"{n!r} (at {w!r})" for n, w in known.items())
        raise _Refusal(f"{source} records conflicting {what}s: {listed}; pass the state dict "
                       f"without the wrong entry, with {what}=")
    recorded = next(iter(known.items()), None)
    if argument is not None:
        if recorded is not None and recorded[0] != argument:
            raise _Refusal(f"{what}={argument!r} was passed, but {source} records "
                           f"{recorded[0]!r} (at {recorded[1]!r}); pass {what}="
                           f"{recorded[0]!r} or leave it out")
        return argument
    if recorded is not None:
        return recorded[0]
    if what == "operation":
        return None
    raise _Refusal(f"the activation is not recorded in {source}; pass activation= "
                   f"one of {list(ACTIVATIONS)}")


def _records(levels: list[tuple[str, Any]], keys: tuple[str, ...]) -> list[tuple[str, Any]]:
    """`(where, value)` for each of `keys` found in a level or in a level's config dict."""
    found = []
    for path, level in levels:
        places = [(path, level)]
        for config_key in _CONFIG_KEYS:
            config = _as_mapping(level.get(config_key))
            if config is not None:
                places.append((f"{path}{config_key}.", config))
        for prefix, place in places:
            for key in keys:
                value = place.get(key)
                if value is not None and not isinstance(value, Tensor):
                    found.append((f"{prefix}{key}", value))
    return found


def _as_mapping(value: Any) -> Mapping[str, Any] | None:
    if isinstance(value, Mapping):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return None


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."
