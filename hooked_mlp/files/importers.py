"""Import an MLP trained elsewhere as a `HookedMLP`: `import_mlp(source, activation=...)`.

`source` is a path or a mapping. Files are recognised by their content, whatever their suffix
(`hooked_mlp.files.foreign`: torch files are checked before `torch.load(weights_only=True)`
reads them, safetensors files by `hooked_mlp.files.format`'s header checks; nothing is ever
unpickled): a hooked-mlp checkpoint is loaded by `hooked_mlp.load`; any other file, or a
mapping, is read as a state dict (e.g. `module.state_dict()`) or a checkpoint dict.

Checkpoint wrappers are unwrapped: `{"state_dict": ...}`, `{"model_state_dict": ...}`,
`{"model": ...}`, nested too (Lightning's `{"state_dict": {"model.0.weight": ...}}`). Their other
entries are metadata, in which the activation (`activation`, `act_type`, `act_fn`,
`nonlinearity`) and the operation (`operation`, `fn_name`) are looked up, also inside a
`config` / `cfg` / `hparams` / `hyper_parameters` dict (for a safetensors file: its metadata).

The state dict is then read as one of the layouts of `hooked_mlp.files.weight_layouts`: an
`nn.Sequential` of linear layers, the published `mlp.W_in` / `mlp.W_out` (the orientation read
from the shapes and the basis buffer, or `p=` / `orientation=`), or hooked-mlp's own names, each
optionally after a learned embedding, which is folded into the first layer and kept as
`model.learned_embedding` (`hooked_mlp.files.embeddings`). A layer without a bias in a model
whose other layers have one gets a zero bias (the same function). `key_map={"their key":
"layout key"}` renames keys before recognition (a value of None drops a key that is not part of
the model). Every tensor used must be dense, floating point, finite and within float32's range,
and no larger than its storage (a stride-0 view of one number can claim gigabytes): importing
never allocates much more than the file holds.

The activation is never assumed: it is the `activation=` argument, or the file's record of it, or
the import is refused (when both are present they must agree). Every refusal names the key and
shape at fault and the argument that resolves it, where one does: a `CheckpointError` naming the
file for a path, a `ValueError` (or a `TypeError` for a wrong type) starting `state_dict:` for a
mapping.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from hooked_mlp.config import MLPConfig
from hooked_mlp.family import ACTIVATIONS, INPUT_ENCODINGS, OPERATIONS
from hooked_mlp.files import weight_layouts as layouts
from hooked_mlp.files.embeddings import LearnedEmbedding
from hooked_mlp.files.foreign import (
    CONFIG_KEYS,
    NotAStateDict,
    Refusal,
    clip,
    is_hooked_file,
    read_file,
    sniff,
)
from hooked_mlp.files.format import CheckpointError
from hooked_mlp.files.weight_layouts import CANONICAL, ORIENTATIONS, show
from hooked_mlp.text import short

if TYPE_CHECKING:
    from hooked_mlp.model import HookedMLP

__all__ = ["ORIENTATIONS", "ImportOptions", "Imported", "NotAStateDict", "from_linear_state_dict",
           "import_mlp", "load_linear_state_dict", "read_state"]

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # tried in this order
_MAX_WRAPPERS = 4
_ACTIVATION_KEYS = ("activation", "act_type", "act_fn", "nonlinearity")
_OPERATION_KEYS = ("operation", "fn_name")
_SHOWN_KEYS = 10

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
_Refusal = Refusal


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
            (`[in, out]`, `x @ W`). Needed for `mlp.W_in`/`mlp.W_out` without their basis
            buffer (they read both ways) unless `p=` settles it; elsewhere it overrides the
            layout's own convention.
        p: the modulus. Checked against the weights; for `mlp.W_in`/`mlp.W_out` it also tells
            which dimension is `p` (not when `h == p`: then pass `orientation=`).
        tied_inputs: checked against the weights (a first layer of `p` inputs is tied, `2p` not).
        input_encoding: how the first layer reads each operand, a name of
            `hooked_mlp.family.INPUT_ENCODINGS` (default `one_hot`; `scalar`, `circle`, `binary`
            take 1, 2, ceil(log2 p) numbers per operand): the first layer must take twice (or,
            tied, once) that many inputs. Checked against a hooked-mlp checkpoint's record.

    Returns:
        A `HookedMLP` with the imported weights (float32, on the CPU) and `train_info` None; a
        learned embedding is folded into `W_in` and kept as `model.learned_embedding` (a
        `hooked_mlp.files.embeddings.LearnedEmbedding`; None without one). For a hooked-mlp
        checkpoint, the model `hooked_mlp.load` returns.

    Raises:
        CheckpointError: (a ValueError) for a path: what is wrong, naming the key and shape at
            fault and the argument that resolves it.
        ValueError, TypeError: the same for a mapping (messages start `state_dict:`), and for
            invalid arguments.
    """
    args = ImportOptions.checked(activation, operation, key_map, orientation, p, tied_inputs,
                         input_encoding)
    if isinstance(source, (str, os.PathLike)):
        path = Path(os.fsdecode(source))
        try:
            return _import_file(path, args)
        except _Refusal as refusal:
            raise CheckpointError(os.fsdecode(source), refusal.problem) from None
    if isinstance(source, Mapping):
        try:
            return _build(read_state(source, args, "this state dict"))
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
class ImportOptions:
    """`import_mlp`'s keyword arguments (but the source), checked and with names normalised."""

    activation: str | None
    operation: str | None
    key_map: dict[str, str | None] | None
    orientation: str | None
    p: int | None
    tied_inputs: bool | None
    input_encoding: str | None = None

    @classmethod
    def checked(cls, activation: Any, operation: Any, key_map: Any, orientation: Any, p: Any,
                tied_inputs: Any, input_encoding: Any = None) -> ImportOptions:
        act = None if activation is None else _argument_name("activation", activation)
        op = None if operation is None else _argument_name("operation", operation)
        if key_map is not None:
            if not isinstance(key_map, Mapping):
                raise TypeError(f"key_map must be a mapping from your keys to layout keys, "
                                f"got {type(key_map).__name__}")
            for k, v in key_map.items():
                if not isinstance(k, str) or not (v is None or isinstance(v, str)):
                    raise TypeError(f"key_map must map key names (str) to key names or None, "
                                    f"got {short(k)}: {short(v)}")
            targets: dict[str, str] = {}
            for k, v in key_map.items():
                if v is not None and v in targets:
                    raise ValueError(f"key_map maps both {short(targets[v])} and {short(k)} "
                                     f"to {short(v)}")
                if v is not None:
                    targets[v] = k
            key_map = dict(key_map)
        if orientation is not None and orientation not in ORIENTATIONS:
            raise ValueError(f"orientation must be one of {list(ORIENTATIONS)}: 'out_in' for "
                             f"weights [out, in] (nn.Linear), 'in_out' for [in, out] (x @ W); "
                             f"got {short(orientation)}")
        if p is not None and (isinstance(p, bool) or not isinstance(p, int) or p < 2):
            raise ValueError(f"p must be an integer >= 2, got {short(p)}")
        if tied_inputs is not None and not isinstance(tied_inputs, bool):
            raise TypeError(f"tied_inputs must be True, False or None, got "
                            f"{short(tied_inputs)}")
        if input_encoding is not None and input_encoding not in INPUT_ENCODINGS:
            raise ValueError(f"input_encoding must be one of {list(INPUT_ENCODINGS)}, got "
                             f"{short(input_encoding)}")
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
        raise TypeError(f"{what} must be a name, {_known(what)}; got {short(value)}")
    name = _normalise(value, _ACTIVATION_ALIASES if what == "activation" else _OPERATION_ALIASES)
    if name is None:
        raise ValueError(f"{what}={short(value)} is not known: pass {_known(what)}")
    return name


# ------------------------------------------------------------------------------ files
def _import_file(path: Path, args: ImportOptions) -> HookedMLP:
    if not path.exists():
        raise _Refusal("no such file")
    if not path.is_file():
        raise _Refusal("not a file")
    if sniff(path) == "safetensors" and is_hooked_file(path):
        return _hooked_checkpoint(path, args)
    obj, metadata = read_file(path)
    extra = [("__metadata__.", metadata)] if metadata is not None else None
    return _build(read_state(obj, args, "this file", extra))


def _hooked_checkpoint(path: Path, args: ImportOptions) -> HookedMLP:
    """A hooked-mlp checkpoint: `hooked_mlp.load`, the arguments checked against its config."""
    from hooked_mlp.files.checkpoints import load

    if args.key_map is not None or args.orientation is not None:
        raise _Refusal("is a hooked-mlp checkpoint, which has its own names and orientation: "
                       "leave out key_map= and orientation=")
    model = load(path)
    # every argument that names a config field is checked against what the file records
    for name in (f.name for f in fields(ImportOptions)
                 if f.name in MLPConfig.__dataclass_fields__):
        wanted, recorded = getattr(args, name), getattr(model.cfg, name)
        if wanted is not None and wanted != recorded:
            raise _Refusal(f"{name}={wanted!r} was passed, but this hooked-mlp checkpoint "
                           f"records {name}={recorded!r}; pass {name}={recorded!r} or leave it "
                           f"out")
    return model


# ------------------------------------------------------------------------------ the state dict
@dataclass
class Imported:
    """What a state dict gives, before a model is built: the config, the parameters (named and
    shaped as `functional.param_shapes(cfg)`, float32) and the learned embedding folded into
    `W_in` (None without one)."""

    cfg: MLPConfig
    params: dict[str, Tensor]
    embedding: LearnedEmbedding | None = None


def read_state(obj: Any, args: ImportOptions, what: str,
               extra_metadata: list[tuple[str, Any]] | None = None) -> Imported:
    """Read a loaded object as a model: unwrap, rename, recognise, check; `NotAStateDict` when
    it is not one, `Refusal` for a model that cannot be imported as it is."""
    if not isinstance(obj, Mapping):
        raise NotAStateDict(f"{what} holds a {type(obj).__name__}, not a state dict (a mapping "
                            f"of names to tensors)", TypeError)
    state, levels = _unwrap(obj)
    tensors = _tensors_of(state, what, levels[-1][0])
    tensors, origin = layouts.apply_key_map(tensors, args.key_map)
    layout = layouts.recognise(tensors, origin)
    orientation, reading = layouts.orient(
        layout, tensors, origin, orientation=args.orientation, p=args.p,
        tied_inputs=args.tied_inputs, encoding=args.input_encoding)
    used = layout.used_keys()
    for key in used:
        layouts.check_storage(show(origin, key, tensors[key]), tensors[key])
    metadata = levels + (extra_metadata or [])
    activation = _resolve("activation", args.activation, metadata, what)
    operation = _resolve("operation", args.operation, metadata, what) or "add"
    bias = any(layer.bias is not None for layer in layout.layers)
    n_layers = len(layout.layers) - 1
    try:
        cfg = MLPConfig(p=reading.p, d_hidden=reading.d_hidden, activation=activation,
                        operation=operation, tied_inputs=reading.tied, bias=bias,
                        input_encoding=args.input_encoding or "one_hot", n_layers=n_layers)
    except ValueError as e:
        raise _Refusal(f"the {layout.name} weights ({layouts.describe(layout, tensors, origin)}) "
                       f"give p={reading.p}, d_hidden={reading.d_hidden}, n_layers={n_layers}, "
                       f"which hooked-mlp cannot build: {e}") from None
    for key in used:
        layouts.check_finite(show(origin, key, tensors[key]), tensors[key])
    params, embedding = layouts.build(layout, tensors, origin, orientation, reading, cfg)
    return Imported(cfg, params, embedding)


def _build(imported: Imported) -> HookedMLP:
    from hooked_mlp.model import HookedMLP

    model = HookedMLP.from_params(imported.cfg, imported.params)
    model.learned_embedding = imported.embedding
    return model


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
    raise _Refusal(f"wrappers nested more than {_MAX_WRAPPERS} deep ({short(path[:-1])}); pass "
                   f"the state dict itself")


def _tensors_of(state: Mapping[Any, Any], what: str, where: str) -> dict[str, Tensor]:
    """The tensors of the state dict; its other entries stay as metadata."""
    tensors: dict[str, Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise _Refusal(f"its keys must be names (str), got {short(key)} "
                           f"({type(key).__name__})", TypeError)
        if isinstance(value, Tensor):
            tensors[key] = value
        elif _looks_like_parameter(key):
            raise _Refusal(f"{short(key)} must be a tensor, got {type(value).__name__}",
                           TypeError)
    if not tensors:
        keys = ", ".join(short(k) for k in list(state)[:_SHOWN_KEYS])
        at = f" at {short(where[:-1])}" if where else ""
        raise NotAStateDict(f"{what} holds no tensors{at} (its keys: {keys or 'none'})")
    return tensors


def _looks_like_parameter(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return last in ("weight", "bias") or last in CANONICAL


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
            shown = text if text is not None else clip(repr(value))
            raise _Refusal(
                f"{source} records the {what} {short(shown)} (at {short(where)}), which is not "
                f"{_known(what)}. If it is one of these under another name, pass the state "
                f"dict without that entry, with {what}=")
        known.setdefault(name, where)
    if len(known) > 1:
        listed = " and ".join(f"{n!r} (at {short(w)})" for n, w in known.items())
        raise _Refusal(f"{source} records conflicting {what}s: {listed}; pass the state dict "
                       f"without the wrong entry, with {what}=")
    recorded = next(iter(known.items()), None)
    if argument is not None:
        if recorded is not None and recorded[0] != argument:
            raise _Refusal(f"{what}={argument!r} was passed, but {source} records "
                           f"{recorded[0]!r} (at {short(recorded[1])}); pass {what}="
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
        for config_key in CONFIG_KEYS:
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
