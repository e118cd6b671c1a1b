"""The tensor shapes the toolkit passes around, named once (jaxtyping), for annotations.

    def forward(tokens: Tokens) -> Logits: ...          # int64 [batch, 2] -> float [batch, p]

Dimension names: `batch` (inputs, pairs `(a, b)`), `p` (residues: one logit each), `d_hidden`
(the neurons of a hidden layer), `d_input` (rows of `W_in`: `2p` for one-hot inputs),
`d_operand` (the numbers encoding one operand), `table_rows` (rows of the input table
`E @ W_in`), `components` (a stack of contributions, e.g. one per neuron). The names are
aliases rather than inline `Float[Tensor, "batch p"]` because ruff reads a string inside an
annotation as a forward reference (F722), and not inside an assignment; any module may use them
(this one imports only torch and jaxtyping).
"""

from __future__ import annotations

from jaxtyping import Float, Int
from torch import Tensor

Tokens = Int[Tensor, "batch 2"]
Labels = Int[Tensor, "batch"]
Residue = Int[Tensor, ""]
Logits = Float[Tensor, "batch p"]
Scalar = Float[Tensor, ""]
Hidden = Float[Tensor, "batch d_hidden"]
PerPair = Float[Tensor, "p_squared *rest"]  # one row per pair, in the order of all_pairs(p)
Grid = Float[Tensor, "p p *rest"]  # rows a, columns b
InputWeights = Float[Tensor, "d_operand d_hidden"]
InputTable = Float[Tensor, "table_rows d_hidden"]
NeuronResults = Float[Tensor, "batch neurons *out"]
NeuronStack = Float[Tensor, "neurons batch p"]
LogitStack = Float[Tensor, "components *batch p"]
Attributions = Float[Tensor, "components *batch"]
Basis = Float[Tensor, "p p"]

# with the optional leading seed dimension of batched training (`hooked_mlp.functional`)
SeedTokens = Int[Tensor, "*seeds batch 2"]
SeedRows = Int[Tensor, "*seeds batch 2"]  # rows of the input table the operands select
SeedLogits = Float[Tensor, "*seeds batch p"]
SeedHidden = Float[Tensor, "*seeds batch d_hidden"]
SeedInputWeights = Float[Tensor, "*seeds d_input d_hidden"]
SeedInputTable = Float[Tensor, "*seeds table_rows d_hidden"]
EncodingMatrix = Float[Tensor, "table_rows d_input"]
