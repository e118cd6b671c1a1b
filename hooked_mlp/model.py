"""`HookedMLP`: any member of the model family, with TransformerLens hook points.

    pre    = W_in[a] + W_in[p + b] + b_in      # hook_embed_a, hook_embed_b; blocks.0.mlp.hook_pre
    post   = act(pre)                          # blocks.0.mlp.hook_post            [batch, d_hidden]
    ...                                        # blocks.{l}.mlp.hook_pre/post for deeper models
    logits = post @ W_out + b_out              # hook_logits                       [batch, p]

The mathematics is `hooked_mlp.functional.forward`; this class holds the parameters, passes every
intermediate through an identity `HookPoint` (so caching and patching need no change to the
model) and checks its inputs. Hook names follow TransformerLens's scheme for layers, so
`cache["post", 0]`, `transformer_lens.utilities.get_act_name("post", 0)`,
`cache.stack_activation("post")` and `hook.layer()` work. Weights are oriented `x @ W` as in
TransformerLens; rows `0..p-1` of `W_in` belong to `a` and rows `p..2p-1` to `b` (the one-hot
input `[e_a; e_b]`), or all `p` rows to both with tied inputs. With another input encoding
(`scalar`, `circle`, `binary`) `W_in` is a dense `[d_input, d_hidden]` weight on `[enc(a);
enc(b)]` and `input_table()` gives its residue-indexed view.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

try:  # transformer-lens >= 4 exports it at the top level only
    from transformer_lens import HookedRootModule
except ImportError:  # pragma: no cover - transformer-lens 2.x / 3.x
    from transformer_lens.hook_points import HookedRootModule

from hooked_mlp import functional, reference
from hooked_mlp.cache import MLPActivationCache
from hooked_mlp.checks import check_finite_logits
from hooked_mlp.config import MAX_SEED, MLPConfig, describe, settings
from hooked_mlp.fingerprint import fingerprint
from hooked_mlp.functional import RENAMED_HOOKS, init_params, param_shapes
from hooked_mlp.shapes import InputTable, InputWeights, Labels, Logits, Scalar, Tokens
from hooked_mlp.train_info import TrainInfo

ALL_PARAM_NAMES = ("W_in", "b_in", "W_hidden", "b_hidden", "W_out", "b_out")
RETURN_TYPES = ("logits", "loss", "both", None)
_UNSIGNED = (torch.uint8, torch.uint16, torch.uint32, torch.uint64)


def check_param_dict(name: str, d: Any, shapes: Mapping[str, tuple[int, ...]],
                     what: str = "") -> None:
    """`d` must be a mapping holding exactly the keys of `shapes`, each a finite floating-point
    dense tensor of that shape."""
    if not isinstance(d, Mapping):
        raise TypeError(f"{name} must be a mapping, got {type(d).__name__}")
    missing = [k for k in shapes if k not in d]
    extra = sorted(str(k) for k in set(d) - set(shapes))
    if missing or extra:
        what = f" {what}" if what else ""
        raise ValueError(f"{name} must hold exactly the keys {list(shapes)}{what}; "
                         f"missing {missing}, unexpected {extra}")
    for k, shape in shapes.items():
        v = d[k]
        if not isinstance(v, Tensor):
            raise TypeError(f"{name}[{k!r}] must be a tensor, got {type(v).__name__}")
        if v.layout != torch.strided or v.is_meta:
            raise TypeError(f"{name}[{k!r}] must be a dense tensor with data, got a "
                            f"{'meta' if v.is_meta else str(v.layout)} tensor")
        if not v.dtype.is_floating_point:
            raise TypeError(f"{name}[{k!r}] must be floating point, got {v.dtype}")
        if tuple(v.shape) != tuple(shape):
            raise ValueError(f"{name}[{k!r}] must have shape {list(shape)}, got {list(v.shape)}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{name}[{k!r}] holds NaN or infinite values")


class MLPHooks(nn.Module):
    """The hook points of one hidden layer: `hook_pre` (before the activation) and `hook_post`."""

    def __init__(self) -> None:
        super().__init__()
        self.hook_pre = HookPoint()  # [batch, d_hidden]
        self.hook_post = HookPoint()  # [batch, d_hidden]


class Block(nn.Module):
    """Hidden layer `l`: its hooks live at `blocks.{l}.mlp.*`, as in TransformerLens."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = MLPHooks()


class HookedMLP(HookedRootModule):
    """A model of the family (`MLPConfig`) on `(a, b)` modulo `p`, hookable like a
    TransformerLens model.

    Trained models, models with neurons replaced by their fits, synthetic random-cosine models,
    snapshots and imported models are all instances of this class, so every analysis and hook
    works on each. Parameters absent from a configuration (`b_in` without biases, `W_hidden`
    with one layer) are None. A model starts in eval mode (it has no dropout or normalisation,
    so the mode changes nothing it computes), so that TransformerLens's analyses that refuse a
    model in training mode (`transformer_lens.patching`) take it as they take a loaded one.
    """

    def __init__(self, cfg: MLPConfig | None = None, *, seed: int = 0) -> None:
        super().__init__()
        if cfg is None:
            cfg = MLPConfig()
        if not isinstance(cfg, MLPConfig):
            raise TypeError(f"cfg must be an MLPConfig, got {type(cfg).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
        self.cfg = cfg
        params = init_params(cfg, seed)
        for name in ALL_PARAM_NAMES:
            value = params.get(name)
            self.register_parameter(name, None if value is None else nn.Parameter(value))
        self.hook_embed_a = HookPoint()  # [batch, d_hidden]: W_in[a] (one-hot), enc(a) @ W_a
        self.hook_embed_b = HookPoint()  # [batch, d_hidden]: W_in[p + b] (W_in[b] when tied)
        self.blocks = nn.ModuleList([Block() for _ in range(cfg.n_layers)])
        self.hook_logits = HookPoint()  # [batch, p]
        self.train_info: TrainInfo | None = None
        self.setup()
        self.eval()  # nothing in it behaves differently in training: as TL's loaded models
        if cfg.device != "cpu":
            self.to(cfg.device)

    # ----------------------------------------------------------------------------- weights
    @property
    def W_a(self) -> InputWeights:
        """Input weights from `a`, `[d_operand, d_hidden]` (`[p, d_hidden]` one-hot): the first
        `d_operand` rows of `W_in` (all of it when tied)."""
        return self.W_in[: self.cfg.d_operand]

    @property
    def W_b(self) -> InputWeights:
        """Input weights from `b`, `[d_operand, d_hidden]` (`[p, d_hidden]` one-hot): the last
        `d_operand` rows of `W_in` (all of it when tied)."""
        return self.W_in if self.cfg.tied_inputs else self.W_in[self.cfg.d_operand :]

    def input_table(self) -> InputTable:
        """What each residue adds to the first pre-activation, `[table_rows, d_hidden]`: row `x`
        for `a = x` and row `p + x` for `b = x` (`p` rows when tied): `E @ W_in`
        (`functional.input_table`). For one-hot inputs it is `W_in`; for the others it is the
        residue-indexed view of a dense first layer (`hook_embed_a` is row `a` of it)."""
        return functional.input_table(self.cfg, self.W_in)

    @property
    def device(self) -> torch.device:
        return self.W_in.device

    def param_dict(self) -> dict[str, Tensor]:
        """The parameters this configuration has (see `functional.param_shapes`), live."""
        return {name: getattr(self, name) for name in param_shapes(self.cfg)}

    def state_tensors(self) -> dict[str, Tensor]:
        """The parameters this configuration has, detached."""
        return {name: value.detach() for name, value in self.param_dict().items()}

    def fingerprint(self) -> str:
        """`"sha256:..."` of the config and the parameters' values (`hooked_mlp.fingerprint`):
        equal for two models exactly when they compute the same function with the same
        bits; hooks, device, training mode and training record are not part of it."""
        return fingerprint(self.cfg, self.param_dict())

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> HookedMLP:
        """Keep `cfg.device` where the parameters are (`.to()`, `.cuda()`, `.cpu()`)."""
        out = super()._apply(fn, *args, **kwargs)
        device = str(self.W_in.device)
        if device != self.cfg.device:
            self.cfg = dataclasses.replace(self.cfg, device=device)
        return out

    # ----------------------------------------------------------------------------- forward
    def check_tokens(self, tokens: Any) -> Tokens:
        """Validate `tokens` (int `[batch, 2]` in `[0, p)`, dense, on the model's device)."""
        p = self.cfg.p
        if not isinstance(tokens, Tensor):
            raise TypeError(
                f"tokens must be a torch.Tensor of integers [batch, 2], got {type(tokens).__name__}"
            )
        if tokens.layout != torch.strided:
            raise TypeError(f"tokens must be a dense tensor, got a {tokens.layout} tensor")
        if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must have an integer dtype (int64), got {tokens.dtype}")
        if tokens.ndim != 2 or tokens.shape[1] != 2:
            raise ValueError(f"tokens must have shape [batch, 2], got {list(tokens.shape)}")
        if tokens.device != self.device:
            raise ValueError(
                f"tokens are on {tokens.device} but the model is on {self.device}; "
                "move them with tokens.to(model.device)"
            )
        if tokens.dtype in _UNSIGNED:  # few ops take them; above 2^63 a uint64 wraps negative
            tokens = tokens.to(torch.int64)
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= p):
            raise ValueError(
                f"tokens must lie in [0, {p - 1}] (p={p}), got values in "
                f"[{int(tokens.min())}, {int(tokens.max())}]"
            )
        return tokens.to(torch.int64)

    def _hook(self, name: str, value: Tensor) -> Tensor:
        return self.hook_dict[name](value)

    def check_hook_name(self, name: Any) -> None:
        """A hook name must be one of this model's hook points (a ValueError lists them, and
        points from a name of hooked-mlp 0.1 to its new one)."""
        if isinstance(name, str) and name not in self.hook_dict:
            hint = (f" ({name!r} is now {RENAMED_HOOKS[name]!r})" if name in RENAMED_HOOKS
                    else "")
            raise ValueError(f"unknown hook name {name!r}{hint}; this model's hook points are "
                             f"{list(self.hook_dict)}")

    def add_hook(self, name: Any, hook: Any, *args: Any, **kwargs: Any) -> None:
        """TransformerLens's `add_hook`, with the name checked first."""
        self.check_hook_name(name)
        super().add_hook(name, hook, *args, **kwargs)

    def _enable_hook_with_name(self, name: str, hook: Any, dir: Any) -> None:
        self.check_hook_name(name)  # for hooks(), run_with_hooks() and their fwd_hooks lists
        super()._enable_hook_with_name(name, hook, dir)

    def forward(
        self, tokens: Tokens, return_type: str | None = "logits", *,
        labels: Labels | None = None,
        metric: Callable[[Logits], Tensor] | None = None,
    ) -> Logits | Scalar | tuple[Tensor, Tensor] | Any:
        """The model on int tokens `[batch, 2]` holding `(a, b)`, as TransformerLens's forward.

        `return_type`: `"logits"` (`[batch, p]`), `"loss"` (the mean cross-entropy against
        `labels`, by default the right answers of the model's operation), `"both"`
        (`(logits, loss)`) or None (nothing: run for the hooks). `metric(logits)`, if given,
        is returned instead (a scalar to differentiate, e.g. a logit difference: see
        `run_with_cache(..., incl_bwd=True)`).
        """
        if return_type not in RETURN_TYPES:
            raise ValueError(f"return_type must be one of {list(RETURN_TYPES)}, got "
                             f"{return_type!r}")
        tokens = self.check_tokens(tokens)
        logits = functional.forward(self.cfg, self.param_dict(), tokens, self._hook)
        if metric is not None:
            if not callable(metric):
                raise TypeError(f"metric must be a function of the logits, got "
                                f"{type(metric).__name__}")
            return metric(logits)
        if return_type in ("loss", "both"):
            loss = self.loss_fn(logits, tokens, labels)
            return loss if return_type == "loss" else (logits, loss)
        return logits if return_type == "logits" else None

    def loss_fn(self, logits: Logits, tokens: Tokens,
                labels: Labels | None = None) -> Scalar:
        """Mean cross-entropy of `logits` `[batch, p]` against `labels` (default: the answers of
        the model's operation on `tokens`). Logits that overflowed (inf or NaN) are refused
        with a `hooked_mlp.checks.LogitsOverflowError`: the loss would be NaN."""
        import torch.nn.functional as F

        from hooked_mlp.data import labels_of

        if labels is None:
            labels = labels_of(tokens, self.cfg)
        elif not isinstance(labels, Tensor) or labels.shape != logits.shape[:1] or \
                labels.dtype.is_floating_point or labels.dtype == torch.bool or (
                    labels.numel() and not (int(labels.min()) >= 0
                                            and int(labels.max()) < self.cfg.p)):
            raise ValueError(f"labels must be residues in [0, {self.cfg.p - 1}], an integer "
                             f"tensor [{logits.shape[0]}], got "
                             f"{getattr(labels, 'dtype', type(labels).__name__)} "
                             f"{list(getattr(labels, 'shape', []))}")
        check_finite_logits(logits, "the loss")
        return F.cross_entropy(logits, labels.to(logits.device))

    def run_with_cache(  # type: ignore[override]
        self, tokens: Tokens, *args: Any, return_cache_object: bool = True,
        pos_slice: Any = None, **kwargs: Any,
    ) -> tuple[Any, MLPActivationCache | dict[str, Tensor]]:
        """Run and cache activations: `(output, MLPActivationCache)`, as in TransformerLens.

        Takes TL's arguments (`names_filter`, `device`, `remove_batch_dim`, `incl_bwd`,
        `return_cache_object`) and the forward's (`return_type`, `labels`, `metric`).
        `incl_bwd=True` differentiates the output, so it needs a scalar: `return_type="loss"`
        (gradients of the mean loss) or a `metric`; the cache then holds `<hook>_grad` entries,
        and, as with any backward, the parameters' `.grad` accumulate (`model.zero_grad()`).
        `pos_slice` is refused: the activations have no position axis. `names_filter` (a name,
        a list of names or a function of a name) must name hook points of this model: an
        unknown name, or a function that picks none, is refused (the cache would be empty, or
        miss what was asked for). Hooks added for the cache are removed afterwards, also when
        the forward raises. The cache records the tokens, the model's fingerprint and any hook
        points that carried hooks of their own (its activations are then the hooked model's).
        """
        if pos_slice is not None:
            raise ValueError("pos_slice does not apply to a HookedMLP: its activations are "
                             "[batch, ...] with no position axis (TransformerLens would slice "
                             "the batch); index the cached tensors instead")
        if args:  # TL's forward takes return_type second: the same here
            if len(args) > 1 or "return_type" in kwargs:
                raise TypeError("run_with_cache takes the tokens and, second, return_type; "
                                "pass everything else by name")
            kwargs["return_type"] = args[0]
            args = ()
        if kwargs.get("incl_bwd") and kwargs.get("metric") is None and kwargs.get(
                "return_type", "logits") not in ("loss",):
            raise ValueError("incl_bwd=True differentiates the forward's output, which must be "
                             "a scalar: pass return_type='loss' (the mean loss) or metric=fn "
                             "(a function of the logits returning a scalar)")
        self._check_names_filter(kwargs.get("names_filter"))
        out, cache_dict = super().run_with_cache(tokens, *args, **kwargs)
        if not return_cache_object:
            return out, cache_dict
        has_batch_dim = not kwargs.get("remove_batch_dim", False)
        checked = self.check_tokens(tokens)
        hooked = [name for name, point in self.hook_dict.items()
                  if point._forward_hooks or point._backward_hooks]
        return out, MLPActivationCache(cache_dict, self, has_batch_dim=has_batch_dim,
                                       tokens=checked if has_batch_dim else checked[0],
                                       hooks=hooked)

    def _check_names_filter(self, names_filter: Any) -> None:
        """TL's `names_filter` must pick hook points of this model (see `run_with_cache`)."""
        if names_filter is None:
            return
        if isinstance(names_filter, str):
            self.check_hook_name(names_filter)
        elif isinstance(names_filter, (list, tuple, set, frozenset)):
            for name in names_filter:
                if not isinstance(name, str):
                    raise TypeError(f"names_filter must list hook names (str), got "
                                    f"{type(name).__name__}")
                self.check_hook_name(name)
        elif callable(names_filter):
            if not any(names_filter(name) for name in self.hook_dict):
                raise ValueError(f"names_filter picks none of this model's hook points "
                                 f"{list(self.hook_dict)}: the cache would be empty")
        else:
            raise TypeError(f"names_filter must be a hook name, a list of hook names or a "
                            f"function of a name, got {type(names_filter).__name__}")

    # ----------------------------------------------------------------------------- building
    @classmethod
    def from_params(
        cls, cfg: MLPConfig, params: Mapping[str, Tensor], *, train_info: TrainInfo | None = None
    ) -> HookedMLP:
        """A model holding `params` (named and shaped as `functional.param_shapes(cfg)`,
        checked: floating point, finite), copied to float32."""
        if not isinstance(cfg, MLPConfig):
            raise TypeError(f"cfg must be an MLPConfig, got {type(cfg).__name__}")
        check_param_dict("params", params, param_shapes(cfg))
        model = cls(dataclasses.replace(cfg, device="cpu"))
        for name, value in params.items():
            getattr(model, name).data = value.detach().to("cpu", torch.float32).clone()
        model.train_info = train_info
        return model.to(cfg.device)

    @classmethod
    def from_linear_state_dict(
        cls, state_dict: Mapping[str, Tensor], cfg: MLPConfig | None = None
    ) -> HookedMLP:
        """Deprecated (hooked-mlp 0.1): use `hooked_mlp.import_mlp(state_dict,
        activation="relu")`, which reads every layout and checks more.

        The model of an `nn.Sequential(Linear(d_input, h), act, ..., Linear(h, p))` state dict
        (keys `0.weight` `[h, d_input]`, `0.bias`, `2.weight`, ...; `nn.Linear`'s `[out, in]`
        orientation): the inverse of `to_linear_state_dict`. Without `cfg` it is 0.1's model,
        `Linear(2p, h), ReLU(), Linear(h, p)` (p and h read from the shapes); with `cfg`, any
        member of the family, every shape checked against it."""
        warnings.warn("HookedMLP.from_linear_state_dict is deprecated; use "
                      "hooked_mlp.import_mlp(state_dict, activation='relu')", DeprecationWarning,
                      stacklevel=2)
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        if cfg is None:
            keys = ("0.weight", "0.bias", "2.weight", "2.bias")
            missing = [k for k in keys if k not in state_dict]
            extra = sorted(str(k) for k in set(state_dict) - set(keys))
            if missing or extra:
                raise ValueError(f"state_dict must hold exactly {list(keys)} (nn.Sequential("
                                 f"Linear(2p, h), ReLU(), Linear(h, p))); missing {missing}, "
                                 f"unexpected {extra}; pass cfg= for another member, or use "
                                 "hooked_mlp.import_mlp")
            w0 = state_dict["0.weight"]
            if not isinstance(w0, Tensor) or w0.ndim != 2 or w0.shape[1] % 2:
                raise ValueError(f"state_dict['0.weight'] must be a tensor [h, 2p], got "
                                 f"{list(getattr(w0, 'shape', []))}")
            cfg = MLPConfig(p=w0.shape[1] // 2, d_hidden=w0.shape[0])
        if not isinstance(cfg, MLPConfig):
            raise TypeError(f"cfg must be an MLPConfig, got {type(cfg).__name__}")
        want = reference.linear_shapes(cfg)
        check_param_dict("state_dict", state_dict, want,
                         f"(nn.Sequential of {describe(cfg)})")
        return cls.from_params(cfg, reference.params_from_linear(cfg, dict(state_dict)))

    def to_linear_state_dict(self) -> dict[str, Tensor]:
        """The state dict of the equivalent `nn.Sequential` (see `to_sequential`): keys
        `0.weight`, `0.bias`, `2.weight`, ... in `nn.Linear`'s `[out, in]` orientation."""
        return reference.linear_state_dict(self.cfg, self.state_tensors())

    def to_sequential(self) -> nn.Module:
        """An equivalent `nn.Sequential(Linear, act, Linear, ...)` on the encoded input
        (`hooked_mlp.reference.one_hot_input`: `[e_a; e_b]`, or `e_a + e_b` when tied)."""
        return reference.sequential(self.cfg, self.state_tensors())

    def __repr__(self) -> str:
        """`HookedMLP(p=113, d_hidden=100, activation='relu')`, and every other field of the
        config that differs from its default."""
        shown = settings(self.cfg, always=("p", "d_hidden", "activation"))
        return f"HookedMLP({', '.join(f'{k}={v!r}' for k, v in shown)})"
