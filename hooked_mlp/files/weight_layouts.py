"""How a state dict lays out an MLP's weights: recognising the layout, reading its shapes, and
building hooked-mlp's parameters from it (for `hooked_mlp.files.importers.import_mlp`).

Layouts (each with one optional common prefix, such as `net.`, `model.`, `layers.`):

1. `nn.Sequential` of 2 to 17 `nn.Linear` layers: keys `<i>.weight` and optional `<i>.bias` for
   increasing integers `i`, weights `[out, in]`. `p` is the last layer's outputs; the first
   layer takes `2p` inputs (the one-hot `[e_a; e_b]`) or `p` (tied inputs: `e_a + e_b`); every
   hidden layer has the same width.
2. The published layout on this task (He et al.): `mlp.W_in [h, d]`, `mlp.W_out [p, h]`, no
   biases, `h = act(W_in @ x)`, `logits = W_out @ h`, and a Fourier basis buffer `mlp.basis`
   `[p, p]`, which gives `p`. TransformerLens writes the same names the other way round
   (`x @ W`); every such pair `W_in [A, B]`, `W_out [B, A]` reads both ways as two different
   models (p = B or p = A). The basis settles which; without it the import is refused unless
   `p=` or `orientation=` says which (`orientation=` alone when `h == p`).
3. hooked-mlp's own names (`HookedMLP.state_dict()`): `W_in [d_input, H]`, `b_in [H]`,
   `W_hidden [L-1, H, H]`, `b_hidden [L-1, H]`, `W_out [H, p]`, `b_out [p]`, oriented `x @ W`.

Any of them may read its inputs through a learned embedding (`hooked_mlp.files.embeddings`):
one table shared by `a` and `b` (`W_E` or `embed.W_E`, oriented as the layout: `[d_embed, p]`
in the published layout, `[p, d_embed]` the `x @ W` way; `embed.weight` or `embedding.weight`,
an `nn.Embedding`'s `[p, d_embed]`), or a table per operand (`E_a`/`E_b` and
`W_E_a`/`W_E_b` likewise, `embed_a.weight`/`embed_b.weight`, `embedding_a.weight`/
`embedding_b.weight`). The first layer takes the two embeddings summed (`d_embed` inputs) or
side by side (`2 d_embed`); the tables are folded into it.

Every refusal names the user's own key and shape (`'fc1.weight' (as '0.weight') [16, 14]`).

Why this file is over 600 lines: the three layouts, their embeddings and the `key_map`
suggestion for an unrecognised state dict share one reading of names and shapes, and the
suggestion is checked by building the model it describes with the same code. The suggestion
could move to a module of its own; it has not yet.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from hooked_mlp.config import MAX_LAYERS, MLPConfig
from hooked_mlp.family import INPUT_ENCODINGS
from hooked_mlp.files.embeddings import SHARED, LearnedEmbedding
from hooked_mlp.files.foreign import NotAStateDict, Refusal
from hooked_mlp.text import short

ORIENTATIONS = ("out_in", "in_out")
ORIENTATION_TEXT = {
    "out_in": "[out, in] (W @ x, like nn.Linear)",
    "in_out": "[in, out] (x @ W, like hooked-mlp and TransformerLens)",
}
CANONICAL = ("W_in", "b_in", "W_hidden", "b_hidden", "W_out", "b_out")
_PUBLISHED = ("W_in", "W_out")
_BASIS = "basis"
_SEQUENTIAL_KEY = re.compile(r"(?P<prefix>(?:.*\.)?)(?P<index>\d+)\.(?P<kind>weight|bias)")
_SHOWN_KEYS = 10
_EXAMPLE_ENTRIES = 12
# embedding key names -> (table, orientation): "rows" is [p, d_embed]; "layout" follows the
# layout's orientation ([d_embed, p] read as [out, in], [p, d_embed] read as [in, out])
EMBEDDING_NAMES = {
    "embed.W_E": (SHARED, "layout"), "W_E": (SHARED, "layout"),
    "embed.weight": (SHARED, "rows"), "embedding.weight": (SHARED, "rows"),
    "W_E_a": ("a", "layout"), "W_E_b": ("b", "layout"), "E_a": ("a", "rows"),
    "E_b": ("b", "rows"), "embed_a.weight": ("a", "rows"), "embed_b.weight": ("b", "rows"),
    "embedding_a.weight": ("a", "rows"), "embedding_b.weight": ("b", "rows"),
}
LAYOUTS_TEXT = (
    "nn.Sequential state dicts ('0.weight', '0.bias', '2.weight', ..., with any common prefix), "
    "hooked-mlp's names (W_in, b_in, W_hidden, b_hidden, W_out, b_out, x @ W), and "
    "'mlp.W_in' [h, p] with 'mlp.W_out' [p, h] (and 'mlp.basis'), each optionally after a "
    "learned embedding ('embed.W_E', 'E_a'/'E_b', 'embed_a.weight'/'embed_b.weight', ...)")


# ------------------------------------------------------------------------------ showing keys
def show(origin: Mapping[str, str], key: str, t: Tensor, index: int | None = None) -> str:
    """The user's own key and shape, e.g. `'fc1.weight' (as '0.weight') [16, 14]`."""
    own = origin.get(key, key)
    renamed = f" (as {short(key)})" if own != key else ""
    part = f"[{index}] (of {list(t.shape)})" if index is not None else f" {list(t.shape)}"
    return f"{short(own)}{renamed}{part}"


def listing(tensors: Mapping[str, Tensor], origin: Mapping[str, str]) -> str:
    """The first keys and shapes of a state dict, and how many more there are."""
    shown = [show(origin, k, t) for k, t in list(tensors.items())[:_SHOWN_KEYS]]
    more = len(tensors) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def apply_key_map(
    tensors: dict[str, Tensor], key_map: dict[str, str | None] | None
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Rename (or drop) keys; `origin` maps each new key back to the user's own."""
    if not key_map:
        return tensors, {k: k for k in tensors}
    missing = [k for k in key_map if k not in tensors]
    if missing:
        named = ", ".join(short(k) for k in missing)
        raise Refusal(f"key_map names [{named}], which the state dict does not hold; its keys "
                      f"are {listing(tensors, {k: k for k in tensors})}")
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in tensors.items():
        new = key_map.get(key, key)
        if new is None:
            continue
        if new in out:
            renamed = key if key in key_map else origin[new]
            raise Refusal(f"key_map renames {short(renamed)} to {short(new)}, a key the state "
                          "dict already holds; map that one too")
        out[new], origin[new] = value, key
    return out, origin


# ------------------------------------------------------------------------------ layouts
@dataclass(frozen=True)
class Layer:
    """One linear map: the layout keys of its weight and bias; `index` selects a slice of a
    stacked `W_hidden` / `b_hidden`."""

    weight: str
    bias: str | None
    index: int | None = None


@dataclass(frozen=True)
class Embedding:
    """The keys of a learned embedding's tables (`"a"`, `"b"` or `"shared"`) and how each is
    oriented (`"rows"`, or `"layout"`: as the layout's weights)."""

    keys: dict[str, str]
    orientation: dict[str, str]


@dataclass(frozen=True)
class Layout:
    name: str
    layers: list[Layer]
    convention: str  # the orientation its names imply
    infer_orientation: bool = False  # names used both ways (mlp.W_in / mlp.W_out)
    basis: str | None = None  # the published layout's Fourier basis buffer, [p, p]
    embedding: Embedding | None = None

    def used_keys(self) -> list[str]:
        """The keys whose tensors make the model (weights, biases, embedding tables)."""
        keys = [k for layer in self.layers for k in (layer.weight, layer.bias) if k is not None]
        if self.embedding is not None:
            keys += list(self.embedding.keys.values())
        return list(dict.fromkeys(keys))


@dataclass(frozen=True)
class Reading:
    p: int
    d_hidden: int
    tied: bool
    combine: str | None = None  # a learned embedding's: "sum" or "concat"


def recognise(tensors: dict[str, Tensor], origin: dict[str, str]) -> Layout:
    """The layout the keys form (after taking out a learned embedding's tables), or a refusal
    listing the keys and a `key_map` that would rename every weight matrix into one."""
    rest, embedding = _take_embedding(tensors, origin)
    for find in (_published_layout, _canonical_layout, _sequential_layout):
        layout = find(rest, origin) if rest else None
        if layout is not None:
            return dataclasses.replace(layout, embedding=embedding)
    example, why_none = key_map_example(tensors, origin)
    how = (f"e.g. {example}, with None for a key that is not part of the model" if example else
           f"with None for a key that is not part of the model (none is suggested: {why_none})")
    raise NotAStateDict(f"its keys fit no layout hooked-mlp reads: {listing(tensors, origin)}. "
                        f"Recognised: {LAYOUTS_TEXT}. Pass key_map= to rename your keys into "
                        f"one of them, {how}")


# ------------------------------------------------------------------------------ suggestions
_TABLE_WORDS = ("emb", "tok", "wte")  # a name part starting so names an embedding table


def key_map_example(tensors: Mapping[str, Tensor], origin: Mapping[str, str]
                    ) -> tuple[str | None, str]:
    """A key_map that renames every weight matrix of the state dict (in the user's own keys)
    into a layout that reads, and why there is none when there is none: `(key_map text, "")` or
    `(None, why)`. It never drops a matrix. Matrices whose names say they embed (a name part
    starting `emb`, `tok` or `wte`) become embedding tables, the others layers 0, 2, 4, ... in
    the state dict's order (a bias `<stem>.bias` with its `<stem>.weight`; other vectors and
    scalars dropped). Unnamed, the first two matrices may be a table per operand (equal shapes);
    when both readings load, the names and shapes cannot tell which is meant and none is
    suggested (following a wrong one would give a silently different model)."""
    own = {origin.get(k, k): t for k, t in tensors.items()}
    matrices = [k for k, t in own.items() if t.ndim >= 2 and _embedding_name(k) is None]
    if not matrices:
        return None, "it holds no weight matrix"
    named = [k for k in matrices if _names_a_table(k)]
    if named:
        readings = [named]
    else:
        pair = (matrices[:2] if len(matrices) >= 4 and own[matrices[0]].shape
                == own[matrices[1]].shape else None)
        readings = [[]] + ([pair] if pair else [])
    loading = [m for m in (_suggestion(own, matrices, tables) for tables in readings)
               if m is not None]
    if len(loading) > 1:
        return None, (f"the names and shapes do not tell whether {short(matrices[0])} and "
                      f"{short(matrices[1])} are embedding tables (one per operand) or layers")
    if not loading:
        return None, ("no renaming of its matrices into layers"
                      + (" and embedding tables" if named else "") + " gives a model that fits "
                      "together (shapes that chain, the last layer's outputs p)")
    entries = list(loading[0].items())
    shown = ", ".join(f"{short(k)}: {short(v)}" for k, v in entries[:_EXAMPLE_ENTRIES])
    return "key_map={" + shown + (", ...}" if len(entries) > _EXAMPLE_ENTRIES else "}"), ""


def _embedding_name(key: str) -> str | None:
    """The recognised embedding table name `key` ends with, if any (`EMBEDDING_NAMES`)."""
    return max((n for n in EMBEDDING_NAMES if key == n or key.endswith("." + n)), key=len,
               default=None)


def _names_a_table(key: str) -> bool:
    return any(part.startswith(_TABLE_WORDS) for part in re.split(r"[._]", key.lower()))


def _suggestion(own: Mapping[str, Tensor], matrices: list[str], tables: list[str]
                ) -> dict[str, str | None] | None:
    """The key_map taking `tables` as embedding tables and the other matrices as layers, if the
    model it gives reads (nn.Linear's orientation); else None."""
    layers = [k for k in matrices if k not in tables]
    if not layers or len(tables) > 2:
        return None
    p = own[layers[-1]].shape[0]
    key_map: dict[str, str | None] = {}
    suffixes = {0: (), 1: ("",), 2: ("_a", "_b")}[len(tables)]  # shared, or a and b in order
    for key, table in zip(tables, suffixes, strict=True):
        rows = own[key].shape[0] == p  # nn.Embedding's [p, d_embed], else [d_embed, p]
        key_map[key] = f"embed{table}.weight" if rows else f"W_E{table}"
    for i, key in enumerate(layers):
        key_map[key] = f"{2 * i}.weight"
        stem = key.removesuffix(".weight")
        if stem != key and f"{stem}.bias" in own:
            key_map[f"{stem}.bias"] = f"{2 * i}.bias"
    key_map |= {k: None for k, t in own.items() if k not in key_map and not (
        t.ndim >= 2 and _embedding_name(k) is not None)}
    try:
        tensors, origin = apply_key_map(dict(own), key_map)
        rest, embedding = _take_embedding(tensors, origin)
        layout = _sequential_layout(rest, origin)
        if layout is None:
            return None
        read(dataclasses.replace(layout, embedding=embedding), tensors, origin, "out_in")
    except Refusal:
        return None
    return key_map


def _take_embedding(tensors: dict[str, Tensor], origin: dict[str, str]
                    ) -> tuple[dict[str, Tensor], Embedding | None]:
    """The state dict without a learned embedding's tables, and the tables' keys."""
    found: dict[str, list[tuple[str, str]]] = {}
    for key in tensors:
        name = _embedding_name(key)
        if name is not None:
            table, orientation = EMBEDDING_NAMES[name]
            found.setdefault(table, []).append((key, orientation))
    if not found:
        return tensors, None
    shown = {t: [show(origin, k, tensors[k]) for k, _ in v] for t, v in found.items()}
    if any(len(v) > 1 for v in found.values()):
        table, keys = next((t, k) for t, k in shown.items() if len(k) > 1)
        raise Refusal(f"{', '.join(keys)} all look like the embedding table of "
                      f"{'both operands' if table == SHARED else 'operand ' + table}; pass "
                      f"key_map= with None for the ones that are not part of the model")
    if SHARED in found and len(found) > 1:
        raise Refusal(f"it holds both a shared embedding table ({shown[SHARED][0]}) and a "
                      f"table per operand ({', '.join(shown.get('a', []) + shown.get('b', []))})"
                      "; pass key_map= with None for the ones that are not part of the model")
    if SHARED not in found and set(found) != {"a", "b"}:
        have = next(iter(found))
        raise Refusal(f"{shown[have][0]} looks like operand {have}'s embedding table, but "
                      f"there is none for operand {'b' if have == 'a' else 'a'}; rename it "
                      "with key_map= if it is a table shared by both (to 'W_E')")
    for table, [(key, _)] in found.items():
        if tensors[key].ndim != 2:
            raise Refusal(f"{show(origin, key, tensors[key])} must be a matrix (2-D): the "
                          f"embedding table of {'both operands' if table == SHARED else table}")
    keys = {t: v[0][0] for t, v in found.items()}
    rest = {k: t for k, t in tensors.items() if k not in keys.values()}
    return rest, Embedding(keys, {t: v[0][1] for t, v in found.items()})


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


def _published_layout(tensors: dict[str, Tensor], origin: dict[str, str]) -> Layout | None:
    prefix = _common_prefix(list(tensors), (*_PUBLISHED, _BASIS))
    if prefix is None or not (prefix == "mlp." or prefix.endswith(".mlp.")):
        return None
    if any(f"{prefix}{n}" not in tensors for n in _PUBLISHED):
        return None
    layers = [Layer(f"{prefix}W_in", None), Layer(f"{prefix}W_out", None)]
    _check_dims(layers, tensors, origin)
    basis = f"{prefix}{_BASIS}" if f"{prefix}{_BASIS}" in tensors else None
    return Layout("mlp.W_in / mlp.W_out", layers, "out_in", infer_orientation=True, basis=basis)


def _canonical_layout(tensors: dict[str, Tensor], origin: dict[str, str]) -> Layout | None:
    prefix = _common_prefix(list(tensors), CANONICAL)
    if prefix is None:
        return None
    have = {name: f"{prefix}{name}" for name in CANONICAL if f"{prefix}{name}" in tensors}
    missing = [f"{prefix}{n}" for n in ("W_in", "W_out") if n not in have]
    if "b_hidden" in have and "W_hidden" not in have:
        missing.append(f"{prefix}W_hidden")
    if missing:
        raise Refusal(f"its keys are hooked-mlp's names ({listing(tensors, origin)}) but "
                      f"{missing} is missing; pass key_map= if it is under another name")
    n_hidden = 0
    if "W_hidden" in have:
        W = tensors[have["W_hidden"]]
        if W.ndim != 3 or W.shape[1] != W.shape[2]:
            raise Refusal(f"{show(origin, have['W_hidden'], W)} must be [n_layers - 1, H, H]")
        n_hidden = W.shape[0]
        if "b_hidden" in have:
            b = tensors[have["b_hidden"]]
            if b.ndim != 2 or b.shape[0] != n_hidden:
                raise Refusal(f"{show(origin, have['b_hidden'], b)} must be "
                              f"[n_layers - 1, H] = [{n_hidden}, H]")
    layers = [Layer(have["W_in"], have.get("b_in"))]
    layers += [Layer(have["W_hidden"], have.get("b_hidden"), i) for i in range(n_hidden)]
    layers.append(Layer(have["W_out"], have.get("b_out")))
    _check_dims(layers, tensors, origin)
    return Layout("hooked-mlp names", layers, "in_out")


def _sequential_layout(tensors: dict[str, Tensor], origin: dict[str, str]) -> Layout | None:
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
        raise Refusal(f"{show(origin, key, tensors[key])} is a bias without a weight "
                      f"({short(key[: -len('bias')] + 'weight')} is missing)")
    if not 2 <= len(weights) <= MAX_LAYERS + 1:
        raise Refusal(f"it holds {len(weights)} linear layer(s) ({listing(tensors, origin)}); "
                      f"hooked-mlp's models have 2 to {MAX_LAYERS + 1} (1 to {MAX_LAYERS} "
                      f"hidden layers)")
    layers = [Layer(weights[i], biases.get(i)) for i in sorted(weights)]
    _check_dims(layers, tensors, origin)
    return Layout("nn.Sequential", layers, "out_in")


def _check_dims(layers: list[Layer], tensors: dict[str, Tensor], origin: dict[str, str]) -> None:
    """Weights are matrices and biases vectors (slices of W_hidden / b_hidden are checked by
    the caller)."""
    for layer in layers:
        if layer.index is not None:
            continue
        W = tensors[layer.weight]
        if W.ndim != 2:
            raise Refusal(f"{show(origin, layer.weight, W)} must be a matrix (2-D)")
        if layer.bias is not None and tensors[layer.bias].ndim != 1:
            raise Refusal(f"{show(origin, layer.bias, tensors[layer.bias])} must be a "
                          f"vector (1-D)")


def matrix(tensors: Mapping[str, Tensor], layer: Layer) -> Tensor:
    W = tensors[layer.weight]
    return W if layer.index is None else W[layer.index]


def layer_text(layer: Layer, tensors: Mapping[str, Tensor], origin: Mapping[str, str]) -> str:
    return show(origin, layer.weight, tensors[layer.weight], layer.index)


def describe(layout: Layout, tensors: Mapping[str, Tensor], origin: Mapping[str, str]) -> str:
    """The layout's weight matrices, as the user named them."""
    seen = dict.fromkeys(layer.weight for layer in layout.layers)
    return ", ".join(show(origin, key, tensors[key]) for key in seen)


# ------------------------------------------------------------------------------ shapes
def _columns(layout: Layout, orientation: str, table: str) -> bool:
    """Whether an embedding table is `[d_embed, p]` (a column per residue) in this reading."""
    assert layout.embedding is not None
    return layout.embedding.orientation[table] == "layout" and orientation == "out_in"


def table_rows(layout: Layout, tensors: Mapping[str, Tensor], orientation: str,
               table: str) -> Tensor:
    """An embedding table as `[tokens, d_embed]` in the given reading of the layout."""
    assert layout.embedding is not None
    t = tensors[layout.embedding.keys[table]]
    return t.t() if _columns(layout, orientation, table) else t


def read(layout: Layout, tensors: Mapping[str, Tensor], origin: Mapping[str, str],
         orientation: str, encoding: str | None = None) -> Reading:
    """p, d_hidden and tied inputs from the shapes read in `orientation`, or a refusal saying
    which key and shape do not fit."""
    layers = layout.layers
    shapes = [tuple(tensors[layer.weight].shape[0 if layer.index is None else 1:])
              for layer in layers]
    ins_outs = [(s[1], s[0]) if orientation == "out_in" else s for s in shapes]
    reading_as = f"(reading the weights as {ORIENTATION_TEXT[orientation]})"
    for i in range(1, len(layers)):
        if ins_outs[i][0] != ins_outs[i - 1][1]:
            raise Refusal(
                f"{layer_text(layers[i - 1], tensors, origin)} gives {ins_outs[i - 1][1]} "
                f"outputs but {layer_text(layers[i], tensors, origin)} takes {ins_outs[i][0]} "
                f"inputs {reading_as}")
    widths = [out for _, out in ins_outs[:-1]]
    if len(set(widths)) > 1:
        listed = ", ".join(f"{layer_text(layer, tensors, origin)}: {w}"
                           for layer, w in zip(layers[:-1], widths, strict=True))
        raise Refusal(f"its hidden layers have different widths ({listed}); hooked-mlp's "
                      f"models have one width d_hidden for every hidden layer")
    d_in, p = ins_outs[0][0], ins_outs[-1][1]
    for layer, (_, out) in zip(layers, ins_outs, strict=True):
        if layer.bias is not None:
            b = tensors[layer.bias]
            if b.shape[-1] != out:
                raise Refusal(f"{show(origin, layer.bias, b, layer.index)} must have "
                              f"{out} entries, one per output of "
                              f"{layer_text(layer, tensors, origin)}")
    if layout.embedding is not None:
        return _read_embedding(layout, tensors, origin, orientation, encoding, d_in, p,
                               widths[0])
    width = INPUT_ENCODINGS[encoding or "one_hot"].width(p)
    first, last = layer_text(layers[0], tensors, origin), layer_text(layers[-1], tensors, origin)
    if encoding not in (None, "one_hot") and d_in not in (width, 2 * width):
        raise Refusal(
            f"{first} takes {d_in} inputs, but input_encoding={encoding!r} with p = {p} (from "
            f"{last} {reading_as}) gives {2 * width} inputs ([enc(a); enc(b)]) or {width} "
            f"(tied inputs)")
    if d_in not in (width, 2 * width):
        raise Refusal(
            f"{first} takes {d_in} inputs, but {last} gives p = {p} outputs {reading_as}: the "
            f"first layer must take 2p = {2 * p} (one-hot [e_a; e_b]) or p = {p} (e_a + e_b, "
            f"tied inputs)"
            + ("; for a dense first layer pass input_encoding= (scalar, circle or binary)"
               if d_in < p else ""))
    return Reading(p=p, d_hidden=widths[0], tied=d_in == width)


def _read_embedding(layout: Layout, tensors: Mapping[str, Tensor], origin: Mapping[str, str],
                    orientation: str, encoding: str | None, d_in: int, p: int,
                    d_hidden: int) -> Reading:
    """The reading of a layout whose first layer reads a learned embedding."""
    assert layout.embedding is not None
    emb = layout.embedding
    first = layer_text(layout.layers[0], tensors, origin)
    if encoding not in (None, "one_hot"):
        raise Refusal(f"it embeds its inputs with learned tables, which take the place of an "
                      f"input encoding: leave out input_encoding={encoding!r}")
    reading_as = f"(reading the weights as {ORIENTATION_TEXT[orientation]})"
    shapes = {}
    for table, key in emb.keys.items():
        rows = table_rows(layout, tensors, orientation, table)
        as_what = "[d_embed, p]" if _columns(layout, orientation, table) else "[p, d_embed]"
        if rows.shape[0] != p:
            raise Refusal(f"{show(origin, key, tensors[key])}, read as {as_what}, embeds "
                          f"{rows.shape[0]} residues, but "
                          f"{layer_text(layout.layers[-1], tensors, origin)} gives p = {p} "
                          f"{reading_as}")
        shapes[table] = rows.shape[1]
    if len(set(shapes.values())) > 1:
        raise Refusal(f"the embedding tables have different widths ({shapes}); a and b must be "
                      "embedded in one space")
    d = next(iter(shapes.values()))
    if d_in not in (d, 2 * d):
        raise Refusal(f"{first} takes {d_in} inputs, but the embeddings have d_embed = {d}: "
                      f"it must take {d} (the two embeddings summed) or {2 * d} (side by side) "
                      f"{reading_as}")
    combine = "sum" if d_in == d else "concat"
    return Reading(p=p, d_hidden=d_hidden, tied=SHARED in emb.keys and combine == "sum",
                   combine=combine)


def orient(layout: Layout, tensors: dict[str, Tensor], origin: dict[str, str], *,
           orientation: str | None, p: int | None, tied_inputs: bool | None,
           encoding: str | None) -> tuple[str, Reading]:
    """The orientation to read the weights in, and what they give; checks p= and tied_inputs=."""
    if layout.infer_orientation and orientation is None:
        orientation, reading = _infer_orientation(layout, tensors, origin, p, encoding)
    else:
        orientation = orientation or layout.convention
        reading = read(layout, tensors, origin, orientation, encoding)
    last, first = layout.layers[-1], layout.layers[0]
    if p is not None and reading.p != p:
        raise Refusal(f"p={p} was passed, but {layer_text(last, tensors, origin)} gives "
                      f"p = {reading.p} (read as {ORIENTATION_TEXT[orientation]})")
    if tied_inputs is not None and reading.tied != tied_inputs:
        size = "p" if reading.tied else "2p"
        raise Refusal(f"tied_inputs={tied_inputs} was passed, but "
                      f"{layer_text(first, tensors, origin)} takes {size} inputs "
                      f"(p = {reading.p}), so tied_inputs={reading.tied}")
    return orientation, reading


def _infer_orientation(layout: Layout, tensors: dict[str, Tensor], origin: dict[str, str],
                       p: int | None, encoding: str | None = None) -> tuple[str, Reading]:
    """`mlp.W_in` / `mlp.W_out` are written `[out, in]` by the published codebase and `[in, out]`
    by TransformerLens: keep the readings the shapes allow, then those that fit `p=`, or else
    the published basis `[p, p]`; refuse if two remain (two different models)."""
    readings: dict[str, Reading] = {}
    refusals: dict[str, Refusal] = {}
    for orientation in ORIENTATIONS:
        try:
            readings[orientation] = read(layout, tensors, origin, orientation, encoding)
        except Refusal as refusal:
            refusals[orientation] = refusal
    if not readings:
        raise refusals[layout.convention]
    if p is not None:
        fitting = {o: r for o, r in readings.items() if r.p == p}
        if not fitting:
            gives = " or ".join(f"p = {r.p} as {o}" for o, r in readings.items())
            raise Refusal(f"p={p} was passed, but {describe(layout, tensors, origin)} give "
                          f"{gives}")
        readings = fitting
    elif len(readings) > 1 and layout.basis is not None:
        basis = tensors[layout.basis]
        if basis.ndim == 2 and basis.shape[0] == basis.shape[1]:
            settled = {o: r for o, r in readings.items() if r.p == basis.shape[0]}
            readings = settled or readings
    if len(readings) == 1:
        return next(iter(readings.items()))
    a, b = readings["out_in"], readings["in_out"]
    weights = describe(layout, tensors, origin)
    if (a.p, a.d_hidden) == (b.p, b.d_hidden):
        raise Refusal(
            f"{weights} are square (h = p = {a.p}), so their orientation cannot be read from "
            f"their shapes: as [out, in] (h = act(W_in @ x), the published layout's "
            f"convention) or as [in, out] (h = act(x @ W_in), TransformerLens's), two "
            f"different models. Pass orientation='out_in' or orientation='in_out' (p= cannot "
            f"settle it when h == p)")
    settle = ("p= or orientation='out_in' / 'in_out'" if a.p != b.p
              else "orientation='out_in' or orientation='in_out'")
    raise Refusal(
        f"{weights} read two ways, as two different models: as [out, in] (the published "
        f"layout's convention) they give p = {a.p}, d_hidden = {a.d_hidden}; as [in, out] "
        f"(TransformerLens's) p = {b.p}, d_hidden = {b.d_hidden}. Nothing in the state dict "
        f"settles it (the published layout's basis buffer 'mlp.basis' [p, p] would): pass "
        f"{settle}")


# ------------------------------------------------------------------------------ tensors
_FLOAT32_MAX = torch.finfo(torch.float32).max


def check_storage(name: str, t: Tensor) -> None:
    """Dense, floating point, and backed by as many bytes as it claims: reading it allocates
    nothing beyond what the source holds."""
    if t.is_meta:
        raise Refusal(f"{name} is a meta tensor: a shape without data (save the weights of a "
                      f"model that holds them)", TypeError)
    if t.layout != torch.strided:
        raise Refusal(f"{name} is a {t.layout} tensor; dense weights are imported (save it "
                      f"with .to_dense())", TypeError)
    if not t.dtype.is_floating_point:
        raise Refusal(f"{name} has dtype {t.dtype}; weights must be floating point "
                      f"(save it with .float())", TypeError)
    claimed = t.numel() * t.element_size()
    try:
        held = t.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError):
        raise Refusal(f"{name} has no storage of its own (a {type(t).__name__}); pass plain "
                      f"tensors", TypeError) from None
    repeats = any(stride == 0 and size > 1
                  for stride, size in zip(t.stride(), t.shape, strict=True))
    if repeats or held < claimed:
        how = "repeats its elements (stride 0)" if repeats else "is larger than its storage"
        raise Refusal(f"{name} is a view that {how}: it claims {claimed} bytes from a storage "
                      f"of {held}, and is refused so that importing never expands a small "
                      f"source into gigabytes; save it with .contiguous() if it is meant")


def check_finite(name: str, t: Tensor) -> None:
    """Finite, and within float32's range (hooked-mlp models compute in float32)."""
    values = t if t.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) \
        else t.to(torch.float32)
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        raise Refusal(f"{name} holds NaN or infinite values ({bad} of {t.numel()}); "
                      f"only finite weights are imported")
    if values.dtype == torch.float64 and values.numel():
        big = values.abs().max()
        if float(big) > _FLOAT32_MAX:
            over = int((values.abs() > _FLOAT32_MAX).sum())
            raise Refusal(f"{name} holds finite values too large for float32 ({over} of "
                          f"{t.numel()}, up to {float(big):.3g}; float32 ends at "
                          f"{_FLOAT32_MAX:.3g}): hooked-mlp models compute in float32, where "
                          f"they would be infinite; rescale the weights or leave this model out")


def build(layout: Layout, tensors: Mapping[str, Tensor], origin: Mapping[str, str],
          orientation: str, reading: Reading, cfg: MLPConfig
          ) -> tuple[dict[str, Tensor], LearnedEmbedding | None]:
    """The parameters named and shaped as `functional.param_shapes(cfg)`, float32 on the CPU,
    and the learned embedding folded into `W_in` (None without one).

    Weights read as [out, in] stay transposed views of the source's memory, so the model
    multiplies exactly as `nn.Linear` does and reproduces its logits bit for bit."""
    def x_at_w(W: Tensor) -> Tensor:
        W = W.to("cpu", torch.float32)
        return W.t() if orientation == "out_in" else W

    def bias(layer: Layer, width: int) -> Tensor:
        if layer.bias is None:
            return torch.zeros(width)
        b = tensors[layer.bias]
        return (b if layer.index is None else b[layer.index]).to("cpu", torch.float32)

    first, *hidden, last = layout.layers
    H = cfg.d_hidden
    W1 = x_at_w(matrix(tensors, first)).contiguous()  # a row lookup
    embedding = None
    if layout.embedding is not None:
        assert reading.combine is not None
        tables = {t: table_rows(layout, tensors, orientation, t).to("cpu", torch.float32)
                  .contiguous() for t in layout.embedding.keys}
        embedding = LearnedEmbedding(
            tables, reading.combine, W1,
            {**{t: origin.get(k, k) for t, k in layout.embedding.keys.items()},
             "first_layer": origin.get(first.weight, first.weight)})
        W1 = embedding.folded()
        if not bool(torch.isfinite(W1).all()):
            raise Refusal(f"folding the embedding into {layer_text(first, tensors, origin)} "
                          "overflows float32 (the product of the two is too large)")
    params = {"W_in": W1}
    if cfg.bias:
        params["b_in"] = bias(first, H)
    if hidden:
        stacked = torch.stack([matrix(tensors, layer).to("cpu", torch.float32)
                               for layer in hidden])
        params["W_hidden"] = stacked.transpose(1, 2) if orientation == "out_in" else stacked
        if cfg.bias:
            params["b_hidden"] = torch.stack([bias(layer, H) for layer in hidden])
    params["W_out"] = x_at_w(matrix(tensors, last))
    if cfg.bias:
        params["b_out"] = bias(last, cfg.p)
    return params, embedding
