"""Learned input embeddings (issue 21, section 4): Nanda-style MLPs that embed `a` and `b` with
tables `E_a`, `E_b` `[p, d_embed]` (or one table shared by both, He et al.'s `embed.W_E`
`[d_embed, p]`) before the first layer import with the tables folded into `W_in` exactly: the
logits equal the source's at d_embed of 8, p and 2p, and the tables stay available."""

import pytest
import torch
from torch import nn

from hooked_mlp import import_mlp

P, H = 7, 12


class Embedded(nn.Module):
    """A Nanda-style model: embeddings of a and b, summed or concatenated, then an MLP."""

    def __init__(self, d: int, concat: bool, shared: bool = False) -> None:
        super().__init__()
        self.concat, self.shared = concat, shared
        if shared:  # one table for both operands
            self.embed = nn.Embedding(P, d)
        else:
            self.embed_a, self.embed_b = nn.Embedding(P, d), nn.Embedding(P, d)
        self.mlp = nn.Sequential(nn.Linear(2 * d if concat else d, H), nn.ReLU(),
                                 nn.Linear(H, P))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ea = (self.embed if self.shared else self.embed_a)(x[:, 0])
        eb = (self.embed if self.shared else self.embed_b)(x[:, 1])
        return self.mlp(torch.cat([ea, eb], 1) if self.concat else ea + eb)


PAIRS = torch.cartesian_prod(torch.arange(P), torch.arange(P))


@pytest.mark.parametrize("concat", [False, True], ids=["summed", "concatenated"])
@pytest.mark.parametrize("d", [8, P, 2 * P], ids=["d8", "d=p", "d=2p"])
def test_separate_tables_fold_into_the_first_layer_exactly(d, concat):
    torch.manual_seed(0)
    source = Embedded(d, concat)
    model = import_mlp(source.state_dict(), activation="relu")
    assert model.cfg.p == P and model.cfg.d_hidden == H and not model.cfg.tied_inputs
    with torch.no_grad():
        assert torch.allclose(model(PAIRS), source(PAIRS), atol=1e-5)
    assert model.learned_embedding is not None


@pytest.mark.parametrize("d", [8, P, 2 * P], ids=["d8", "d=p", "d=2p"])
def test_one_shared_table_folds_exactly(d):
    torch.manual_seed(1)
    source = Embedded(d, concat=False, shared=True)
    model = import_mlp(source.state_dict(), activation="relu")
    assert model.cfg.p == P
    with torch.no_grad():
        assert torch.allclose(model(PAIRS), source(PAIRS), atol=1e-5)


def test_he_et_al_layout_embed_W_E_before_mlp_W_in():
    """He et al.'s learned-embedding runs: `embed.W_E` `[d_embed, p]` shared by a and b, then
    `mlp.W_in` `[h, d_embed]` and `mlp.W_out` `[p, h]` (their tests/_published layout)."""
    torch.manual_seed(2)
    d = 2 * P
    W_E, W_in, W_out = torch.randn(d, P), torch.randn(H, d), torch.randn(P, H)
    state = {"embed.W_E": W_E, "mlp.W_in": W_in, "mlp.W_out": W_out}
    model = import_mlp(state, activation="relu")
    x = torch.relu((W_E[:, PAIRS[:, 0]] + W_E[:, PAIRS[:, 1]]).t() @ W_in.t())
    with torch.no_grad():
        assert torch.allclose(model(PAIRS), x @ W_out.t(), atol=1e-4)
