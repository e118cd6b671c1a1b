"""`HookedMLP`: a one-hidden-layer MLP on one-hot `(a, b)`, with TransformerLens hook points.

    pre    = W_in[a] + W_in[p + b] + b_in      # [batch, d_hidden]  (the one-hot matmul as a lookup)
    post   = relu(pre)                         # [batch, d_hidden]
    logits = post @ W_out + b_out              # [batch, p]

Every intermediate passes through an identity `HookPoint`, so caching and patching need no change
to the model: `hook_embed_a` (`W_in[a]`), `hook_embed_b` (`W_in[p + b]`), `hook_pre`, `hook_post`,
`hook_logits`. Weights are oriented `x @ W` as in TransformerLens; rows `0..p-1` of `W_in` belong
to `a` and rows `p..2p-1` to `b`, exactly the layout of the one-hot input `[e_a; e_b]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from transformer_lens import ActivationCache
from transformer_lens.hook_points import HookPoint

try:  # transformer-lens >= 4 exports it at the top level only
    from transformer_lens import HookedRootModule
except ImportError:  # pragma: no cover - transformer-lens 2.x / 3.x
    from transformer_lens.hook_points import HookedRootModule

from hooked_mlp.config import MLPConfig
from hooked_mlp.params import PARAM_NAMES, TrainInfo, init_params, param_shapes

HOOK_NAMES = ("hook_embed_a", "hook_embed_b", "hook_pre", "hook_post", "hook_logits")


def _check_tensor_dict(name: str, d: Any, keys: tuple[str, ...], what: str = "") -> None:
    """`d` must be a mapping holding exactly `keys`, each a tensor."""
    if not isinstance(d, Mapping):
        raise TypeError(f"{name} must be a mapping, got {type(d).__name__}")
    missing = [k for k in keys if k not in d]
    extra = sorted(set(d) - set(keys))
    if missing or extra:
        what = f" {what}" if what else ""
        raise ValueError(f"{name} must hold exactly the keys {list(keys)}{what}; "
                         f"missing {missing}, unexpected {extra}")
    for k in keys:
        if not isinstance(d[k], Tensor):
            raise TypeError(f"{name}[{k!r}] must be a tensor, got {type(d[k]).__name__}")


class HookedMLP(HookedRootModule):
    """A one-hidden-layer MLP on `(a, b)` modulo `p`, hookable like a TransformerLens model.

    Trained models, models with neurons replaced by cosine fits and synthetic random-cosine
    models are all instances of this class, so every analysis and hook works on each.
    """

    def __init__(self, cfg: MLPConfig | None = None, *, seed: int = 0) -> None:
        super().__init__()
        if cfg is None:
            cfg = MLPConfig()
        if not isinstance(cfg, MLPConfig):
            raise TypeError(f"cfg must be an MLPConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        params = init_params(cfg, seed)
        self.W_in = nn.Parameter(params["W_in"])  # [2p, d_hidden]
        self.b_in = nn.Parameter(params["b_in"])  # [d_hidden]
        self.W_out = nn.Parameter(params["W_out"])  # [d_hidden, p]
        self.b_out = nn.Parameter(params["b_out"])  # [p]
        self.hook_embed_a = HookPoint()  # [batch, d_hidden]
        self.hook_embed_b = HookPoint()  # [batch, d_hidden]
        self.hook_pre = HookPoint()  # [batch, d_hidden]
        self.hook_post = HookPoint()  # [batch, d_hidden]
        self.hook_logits = HookPoint()  # [batch, p]
        self.train_info: TrainInfo | None = None
        self.setup()

    # ----------------------------------------------------------------------------- weights
    @property
    def W_a(self) -> Tensor:
        """Input weights from `a`: rows `0..p-1` of `W_in`, `[p, d_hidden]`."""
        return self.W_in[: self.cfg.p]

    @property
    def W_b(self) -> Tensor:
        """Input weights from `b`: rows `p..2p-1` of `W_in`, `[p, d_hidden]`."""
        return self.W_in[self.cfg.p :]

    @property
    def device(self) -> torch.device:
        return self.W_in.device

    # ----------------------------------------------------------------------------- forward
    def check_tokens(self, tokens: Any) -> Tensor:
        """Validate `tokens` (int `[batch, 2]` in `[0, p)`, on the model's device)."""
        p = self.cfg.p
        if not isinstance(tokens, Tensor):
            raise TypeError(
                f"tokens must be a torch.Tensor of integers [batch, 2], got {type(tokens).__name__}"
            )
        if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must have an integer dtype (int64), got {tokens.dtype}")
        if tokens.ndim != 2 or tokens.shape[1] != 2:
            raise ValueError(f"tokens must have shape [batch, 2], got {list(tokens.shape)}")
        if tokens.device != self.device:
            raise ValueError(
                f"tokens are on {tokens.device} but the model is on {self.device}; "
                "move them with tokens.to(model.device)"
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= p):
            raise ValueError(
                f"tokens must lie in [0, {p - 1}] (p={p}), got values in "
                f"[{int(tokens.min())}, {int(tokens.max())}]"
            )
        return tokens.to(torch.int64)

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits `[batch, p]` for int64 tokens `[batch, 2]` holding `(a, b)`."""
        tokens = self.check_tokens(tokens)
        p = self.cfg.p
        embed_a = self.hook_embed_a(self.W_in[tokens[:, 0]])  # [batch, d_hidden]
        embed_b = self.hook_embed_b(self.W_in[tokens[:, 1] + p])  # [batch, d_hidden]
        pre = self.hook_pre(embed_a + embed_b + self.b_in)  # [batch, d_hidden]
        post = self.hook_post(torch.relu(pre))  # [batch, d_hidden]
        return self.hook_logits(torch.addmm(self.b_out, post, self.W_out))  # [batch, p]

    def run_with_cache(  # type: ignore[override]
        self, tokens: Tensor, *args: Any, **kwargs: Any
    ) -> tuple[Tensor, ActivationCache]:
        """Run and cache activations: `(logits [batch, p], ActivationCache)`.

        Takes TransformerLens's arguments (`names_filter`, `device`, ...). Hooks added for the
        cache are removed afterwards, also when the forward raises.
        """
        logits, cache_dict = super().run_with_cache(tokens, *args, **kwargs)
        has_batch_dim = not kwargs.get("remove_batch_dim", False)
        return logits, ActivationCache(cache_dict, self, has_batch_dim=has_batch_dim)

    # ----------------------------------------------------------------------------- helpers
    def state_tensors(self) -> dict[str, Tensor]:
        """The four parameters, detached: `W_in`, `b_in`, `W_out`, `b_out`."""
        return {name: getattr(self, name).detach() for name in PARAM_NAMES}

    @classmethod
    def from_params(
        cls, cfg: MLPConfig, params: Mapping[str, Tensor], *, train_info: TrainInfo | None = None
    ) -> HookedMLP:
        """A model holding `params` (`W_in`, `b_in`, `W_out`, `b_out`, shapes checked)."""
        _check_tensor_dict("params", params, PARAM_NAMES)
        model = cls(cfg)
        for name, shape in param_shapes(cfg).items():
            value = params[name]
            if tuple(value.shape) != shape:
                raise ValueError(
                    f"params[{name!r}] must have shape {list(shape)}, got {list(value.shape)}"
                )
            if not value.dtype.is_floating_point:
                raise TypeError(f"params[{name!r}] must be floating point, got {value.dtype}")
            getattr(model, name).data = value.detach().to(torch.float32).clone()
        model.train_info = train_info
        return model

    @classmethod
    def from_linear_state_dict(
        cls, state_dict: Mapping[str, Tensor], cfg: MLPConfig | None = None
    ) -> HookedMLP:
        """Import `nn.Sequential(Linear(2p, h), ReLU(), Linear(h, p))`'s state dict.

        This is the format the source study's own code produces (keys `0.weight` `[h, 2p]`,
        `0.bias`, `2.weight` `[p, h]`, `2.bias`). `p` and `h` are read from the shapes unless
        `cfg` is given, in which case they are checked against it.
        """
        keys = ("0.weight", "0.bias", "2.weight", "2.bias")
        _check_tensor_dict("state_dict", state_dict, keys,
                           "of nn.Sequential(Linear(2p, h), ReLU(), Linear(h, p))")
        w0, w2 = state_dict["0.weight"], state_dict["2.weight"]
        if w0.ndim != 2 or w2.ndim != 2:
            raise ValueError("state_dict['0.weight'] and ['2.weight'] must be 2-D")
        d_hidden, d_input = w0.shape
        if d_input % 2:
            raise ValueError(f"state_dict['0.weight'] must be [h, 2p], got {list(w0.shape)}")
        if cfg is None:
            cfg = MLPConfig(p=d_input // 2, d_hidden=d_hidden)
        params = {
            "W_in": w0.t(),
            "b_in": state_dict["0.bias"],
            "W_out": w2.t(),
            "b_out": state_dict["2.bias"],
        }
        return cls.from_params(cfg, params)

    def to_linear_state_dict(self) -> dict[str, Tensor]:
        """The inverse of `from_linear_state_dict`: an `nn.Sequential` state dict."""
        return {
            "0.weight": self.W_in.detach().t().contiguous(),
            "0.bias": self.b_in.detach().clone(),
            "2.weight": self.W_out.detach().t().contiguous(),
            "2.bias": self.b_out.detach().clone(),
        }

    def to_sequential(self) -> nn.Sequential:
        """An equivalent `nn.Sequential(Linear(2p, h), ReLU(), Linear(h, p))` on one-hot input."""
        cfg = self.cfg
        seq = nn.Sequential(
            nn.Linear(cfg.d_input, cfg.d_hidden), nn.ReLU(), nn.Linear(cfg.d_hidden, cfg.d_output)
        ).to(self.device)
        seq.load_state_dict(self.to_linear_state_dict())
        return seq

    def __repr__(self) -> str:
        c = self.cfg
        return f"HookedMLP(p={c.p}, d_hidden={c.d_hidden}, activation={c.activation!r})"
