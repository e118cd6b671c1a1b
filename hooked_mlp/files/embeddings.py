"""Learned input embeddings of imported models: folded into the first layer, and kept.

Some MLPs on this task embed each operand with a learned table before their first layer:
Nanda-style models with a table per operand (`E_a`, `E_b`, `[p, d_embed]`), or He et al.'s
learned-embedding runs with one table shared by `a` and `b` (`embed.W_E`, `[d_embed, p]`). The
first layer `W1` (`[d_in, d_hidden]`, oriented `x @ W`) then reads the two embeddings summed
(`E_a[a] + E_b[b]`, `d_in = d_embed`) or side by side (`[E_a[a]; E_b[b]]`, `d_in = 2 d_embed`).
Either way the first pre-activation is linear in the one-hot inputs, so the model is a
`HookedMLP` whose first layer is the product

    W_in = [E_a @ W1_a ; E_b @ W1_b]     [2p, d_hidden]   (W1_a = W1_b = W1 when summed)
    W_in = E @ W1                         [p, d_hidden]    one shared table, summed: tied inputs

computed in float64 and rounded once to float32, so the imported model's logits equal the
original's to float32 precision. Every analysis reads that folded model.

The factors are kept too, for analyses of the embedding itself (its Fourier spectrum over the
residues, which neurons read which of its directions): `model.learned_embedding` is a
`LearnedEmbedding` holding the tables (row `x` is residue `x`'s embedding), how they combine,
and the unfolded first layer. It is an attribute of the model rather than a part of its
training record because it describes the weights (an imported model has no training record),
and `hooked_mlp.save` writes it into the checkpoint (format version 3), checked on loading
against the folded `W_in`, so it survives a save and a load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

COMBINES = ("sum", "concat")
_WORDS = {"sum": "summed", "concat": "concatenated"}
SHARED = "shared"
KEY_PREFIX = "embedding."  # a checkpoint's tensors: embedding.<table>, embedding.first_layer
EmbeddingTable = Float[Tensor, "p d_embed"]  # row x: residue x's embedding
FirstLayer = Float[Tensor, "d_in d_hidden"]  # the layer reading the embeddings, x @ W
InputWeights = Float[Tensor, "d_input d_hidden"]  # the folded one-hot first layer


@dataclass
class LearnedEmbedding:
    """An imported model's learned input embedding, before it was folded into `W_in`.

    `tables` maps `"a"` and `"b"` (a table per operand) or `"shared"` (one for both) to
    `[p, d_embed]`, row `x` the embedding of residue `x`. `combine` is `"sum"` or `"concat"`.
    `first_layer` is the layer that read them, `[d_embed or 2 d_embed, d_hidden]`, `x @ W`.
    `source_keys` names where each came from in the imported state dict.
    """

    tables: dict[str, EmbeddingTable]
    combine: str
    first_layer: FirstLayer
    source_keys: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.tables) not in ({"a", "b"}, {SHARED}):
            raise ValueError(f"tables must be 'a' and 'b', or {SHARED!r}; got "
                             f"{sorted(self.tables)}")
        if self.combine not in COMBINES:
            raise ValueError(f"combine must be one of {list(COMBINES)}, got {self.combine!r}")
        shapes = {tuple(t.shape) for t in self.tables.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"the tables must be matrices of one shape [p, d_embed], got "
                             f"{sorted(shapes)}")
        d_in = self.d_embed * (2 if self.combine == "concat" else 1)
        if self.first_layer.ndim != 2 or self.first_layer.shape[0] != d_in:
            raise ValueError(f"first_layer must be [{d_in}, d_hidden] for {_WORDS[self.combine]} "
                             f"embeddings of {self.d_embed}, got {list(self.first_layer.shape)}")

    @property
    def shared(self) -> bool:
        """One table for both operands."""
        return SHARED in self.tables

    @property
    def p(self) -> int:
        return next(iter(self.tables.values())).shape[0]

    @property
    def d_embed(self) -> int:
        return next(iter(self.tables.values())).shape[1]

    @property
    def tied(self) -> bool:
        """Whether the folded first layer is tied (`W_in [p, d_hidden]` read by `e_a + e_b`)."""
        return self.shared and self.combine == "sum"

    def table(self, operand: str) -> EmbeddingTable:
        """Operand `"a"`'s or `"b"`'s table (the shared one for either)."""
        if operand not in ("a", "b"):
            raise ValueError(f"operand must be 'a' or 'b', got {operand!r}")
        return self.tables[SHARED] if self.shared else self.tables[operand]

    def folded(self) -> InputWeights:
        """The first layer of the one-hot model: `[E_a @ W1_a; E_b @ W1_b]` (`[2p, d_hidden]`),
        or `E @ W1` (`[p, d_hidden]`) for one shared table summed; float64, rounded once to
        float32."""
        W = self.first_layer.detach().to("cpu", torch.float64)
        d = self.d_embed
        W_a, W_b = (W, W) if self.combine == "sum" else (W[:d], W[d:])
        E_a = self.table("a").detach().to("cpu", torch.float64)
        if self.tied:
            return (E_a @ W).to(torch.float32)
        E_b = self.table("b").detach().to("cpu", torch.float64)
        return torch.cat([E_a @ W_a, E_b @ W_b]).to(torch.float32)

    def __repr__(self) -> str:
        tables = "one shared table" if self.shared else "tables for a and b"
        return (f"LearnedEmbedding({tables} [p={self.p}, d_embed={self.d_embed}], "
                f"{_WORDS[self.combine]} into a first layer {list(self.first_layer.shape)})")

    # ------------------------------------------------------------------------- in a file
    def to_record(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """The checkpoint's document entry and tensors (`embedding.<table>`,
        `embedding.first_layer`, float32)."""
        tensors = {f"{KEY_PREFIX}{k}": v.detach().to("cpu", torch.float32)
                   for k, v in self.tables.items()}
        tensors[f"{KEY_PREFIX}first_layer"] = self.first_layer.detach().to("cpu", torch.float32)
        doc = {"tables": sorted(self.tables), "combine": self.combine, "d_embed": self.d_embed,
               "source_keys": dict(self.source_keys)}
        return doc, tensors


def expected_tensors(doc: Any, p: int, d_hidden: int) -> dict[str, tuple[int, ...]] | None:
    """The tensors a checkpoint's `embedding` entry implies (name -> shape), or None when the
    entry is malformed."""
    if not isinstance(doc, Mapping):
        return None
    tables, combine, d = doc.get("tables"), doc.get("combine"), doc.get("d_embed")
    if tables not in (["a", "b"], [SHARED]) or combine not in COMBINES or isinstance(d, bool) \
            or not isinstance(d, int) or not 1 <= d <= 1 << 20:
        return None
    out = {f"{KEY_PREFIX}{k}": (p, d) for k in tables}
    out[f"{KEY_PREFIX}first_layer"] = (d * (2 if combine == "concat" else 1), d_hidden)
    return out


def from_record(doc: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> LearnedEmbedding:
    """The `LearnedEmbedding` of a checkpoint entry (checked by `expected_tensors` first)."""
    keys = doc.get("source_keys", {})
    source_keys = {str(k): str(v) for k, v in keys.items()} if isinstance(keys, Mapping) else {}
    return LearnedEmbedding({k: tensors[f"{KEY_PREFIX}{k}"] for k in doc["tables"]},
                            doc["combine"], tensors[f"{KEY_PREFIX}first_layer"], source_keys)


def folds_to(embedding: LearnedEmbedding, W_in: Tensor) -> bool:
    """Whether the embedding folds to `W_in` (to float32 rounding: the product is recomputed
    here, and float64 products may differ in their last bits between machines)."""
    folded = embedding.folded()
    if folded.shape != W_in.shape:
        return False
    scale = float(folded.abs().max()) if folded.numel() else 0.0
    return bool(torch.allclose(W_in.detach().cpu().float(), folded, rtol=1e-5,
                               atol=1e-6 * max(scale, 1e-30)))
