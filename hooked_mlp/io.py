"""Checkpoints: safetensors for tensors, JSON for everything else; atomic writes; no pickle.

A checkpoint is one `.safetensors` file. Its tensors are the parameters (`W_in`, `b_in`, `W_out`,
`b_out`), and for a trained model the split (`train_mask`, bool `[p*p]`) and the per-epoch curves
(`history.<metric>`, float32 `[epochs]`). Its safetensors metadata holds one JSON document under
the key `hooked_mlp`: format and version, the kind of file, the model config, and for a trained
model the training recipe, final metrics and provenance.

Loading parses the header by hand (so a damaged file is named and described precisely), then
decodes the tensors with safetensors; nothing is ever unpickled. Every write goes to a temporary
file in the destination folder and is renamed over the target, so a crash leaves the previous
file intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hooked_mlp.config import MLPConfig, TrainConfig

if TYPE_CHECKING:
    from torch import Tensor

    from hooked_mlp.model import HookedMLP
    from hooked_mlp.params import TrainInfo

FORMAT = "hooked-mlp"
FORMAT_VERSION = 1
META_KEY = "hooked_mlp"
KINDS = ("model", "train-state")
MAX_HEADER_BYTES = 64 * 1024 * 1024
HISTORY_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc")
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


class CheckpointError(ValueError):
    """A file that is missing, damaged, or not the checkpoint that was asked for."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


# --------------------------------------------------------------------------- atomic writes
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    If the body raises (or the process dies), `path` keeps its previous content and the
    temporary file is removed (or, after a hard kill, left as a hidden `.tmp` file).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


# --------------------------------------------------------------------------- raw format
def write_safetensors(
    path: str | os.PathLike[str], tensors: dict[str, Tensor], meta: dict[str, Any]
) -> None:
    """Write `tensors` and the JSON document `meta` as one safetensors file, atomically."""
    from safetensors.torch import save

    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    payload = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    draft = save(payload, metadata={META_KEY: json.dumps(doc, allow_nan=False)})
    n = int.from_bytes(draft[:8], "little")
    table, body = json.loads(draft[8 : 8 + n]), draft[8 + n :]
    doc["checksum"] = _checksum(doc, table, body)
    data = save(payload, metadata={META_KEY: json.dumps(doc, allow_nan=False)})
    if data[8 + int.from_bytes(data[:8], "little") :] != body:  # pragma: no cover - invariant
        raise RuntimeError("safetensors laid out the same tensors differently twice")
    atomic_write_bytes(path, data)


def _canonical(x: Any) -> bytes:
    return json.dumps(x, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _checksum(doc: dict[str, Any], header: dict[str, Any], body: bytes) -> str:
    """SHA-256 over the metadata (without the checksum), the tensor table (names, dtypes, shapes,
    offsets) and the tensor bytes, each in a canonical form."""
    h = hashlib.sha256(_canonical({k: v for k, v in doc.items() if k != "checksum"}))
    h.update(_canonical({k: v for k, v in header.items() if k != "__metadata__"}))
    h.update(body)
    return "sha256:" + h.hexdigest()


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_header(data: bytes, path: str) -> dict[str, Any]:
    """Check the safetensors header and the hooked-mlp metadata of `data`; return the latter.

    Also checks the checksum, which covers the metadata, the tensor table and every tensor byte,
    so a file that was damaged or edited anywhere is refused.
    """
    if len(data) < 8:
        raise CheckpointError(
            path, f"not a hooked-mlp checkpoint: the file has only {len(data)} bytes"
        )
    n = int.from_bytes(data[:8], "little")
    if n > MAX_HEADER_BYTES:
        raise CheckpointError(
            path, "not a safetensors file: its first 8 bytes do not give a plausible header size"
        )
    if 8 + n > len(data):
        raise CheckpointError(
            path,
            f"truncated: the header needs {8 + n} bytes but the file has {len(data)}",
        )
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError):
        raise CheckpointError(path, "not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, "not a safetensors file: its header is not a JSON object")
    ends = []
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        offsets = spec.get("data_offsets") if isinstance(spec, dict) else None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise CheckpointError(path, f"corrupt header: tensor {name!r} has no valid offsets")
        ends.append(offsets[1])
    body = len(data) - 8 - n
    if ends and max(ends) > body:
        raise CheckpointError(
            path, f"truncated: the tensors need {max(ends)} bytes after the header, found {body}"
        )
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or META_KEY not in meta:
        raise CheckpointError(
            path, f"not a hooked-mlp checkpoint: no {META_KEY!r} entry in its safetensors metadata"
        )
    try:
        doc = json.loads(meta[META_KEY], parse_constant=_no_constants)
    except (TypeError, ValueError):
        raise CheckpointError(path, f"corrupt metadata: {META_KEY!r} is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(path, f"not a hooked-mlp checkpoint: format is not {FORMAT!r}")
    version = doc.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(path, f"corrupt metadata: format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            path,
            f"written by a newer hooked-mlp (format version {version}); this version reads "
            f"format versions up to {FORMAT_VERSION}: upgrade hooked-mlp",
        )
    checksum = doc.get("checksum")
    if not isinstance(checksum, str):
        raise CheckpointError(path, "corrupt metadata: no checksum")
    if checksum != _checksum(doc, header, data[8 + n :]):
        raise CheckpointError(
            path, "checksum mismatch: the file was damaged or edited after it was written"
        )
    return doc


def read_safetensors(
    path: str | os.PathLike[str], kind: str
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read and check a hooked-mlp file of `kind`: `(metadata document, tensors)`."""
    import torch
    from safetensors.torch import load

    name = str(path)
    p = Path(path)
    if not p.exists():
        raise CheckpointError(name, "no such file")
    if not p.is_file():
        raise CheckpointError(name, "not a file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise CheckpointError(name, f"cannot be read ({e.strerror})") from None
    doc = _parse_header(data, name)
    if doc.get("kind") != kind:
        raise CheckpointError(
            name, f"is a hooked-mlp {doc.get('kind')!r} file, but a {kind!r} file is needed"
        )
    try:
        tensors = load(data)
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise CheckpointError(name, f"corrupt tensor data ({e})") from None
    for key, t in tensors.items():
        if t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
            raise CheckpointError(name, f"tensor {key!r} holds NaN or infinite values")
    return doc, tensors


def _expect(path: str, tensors: dict[str, Tensor], name: str, shape: tuple[int, ...], dtype: Any):
    if name not in tensors:
        raise CheckpointError(path, f"missing tensor {name!r}")
    t = tensors[name]
    if tuple(t.shape) != shape or t.dtype != dtype:
        raise CheckpointError(
            path,
            f"tensor {name!r} is {t.dtype} {list(t.shape)}, expected {dtype} {list(shape)}",
        )
    return t


def _config(path: str, cls: type, data: Any, what: str) -> Any:
    try:
        return cls.from_dict(data)
    except (TypeError, ValueError) as e:
        raise CheckpointError(path, f"invalid {what}: {e}") from None


# --------------------------------------------------------------------------- model files
@dataclass
class Checkpoint:
    """The content of a model checkpoint, without building a model (no transformer-lens)."""

    cfg: MLPConfig
    params: dict[str, Tensor]
    info: TrainInfo | None


def write_model(
    path: str | os.PathLike[str],
    cfg: MLPConfig,
    params: dict[str, Tensor],
    info: TrainInfo | None = None,
) -> None:
    """Write a model checkpoint from raw parameters (what `save` and the trainer use)."""
    import torch

    from hooked_mlp.params import PARAM_NAMES

    tensors = {name: params[name].detach().to(torch.float32) for name in PARAM_NAMES}
    meta: dict[str, Any] = {"kind": "model", "config": cfg.to_dict(), "train": None}
    if info is not None:
        tensors["train_mask"] = info.train_mask.detach().to(torch.bool)
        for key, values in info.history.items():
            tensors[f"history.{key}"] = torch.tensor(values, dtype=torch.float32)
        meta["train"] = {
            "train_config": info.train_config.to_dict(),
            "metrics": info.metrics,
            "provenance": info.provenance,
            "history_keys": list(info.history),
        }
    write_safetensors(path, tensors, meta)


def read_model(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and check a model checkpoint."""
    import torch

    from hooked_mlp.params import TrainInfo, param_shapes

    name = str(path)
    doc, tensors = read_safetensors(path, "model")
    cfg = _config(name, MLPConfig, doc.get("config"), "model config")
    params = {
        key: _expect(name, tensors, key, shape, torch.float32)
        for key, shape in param_shapes(cfg).items()
    }
    expected = set(params)
    info = None
    train = doc.get("train")
    if train is not None:
        if not isinstance(train, dict):
            raise CheckpointError(name, "corrupt metadata: 'train' is not an object")
        tcfg = _config(name, TrainConfig, train.get("train_config"), "training config")
        mask = _expect(name, tensors, "train_mask", (cfg.p * cfg.p,), torch.bool)
        keys = train.get("history_keys", [])
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise CheckpointError(name, "corrupt metadata: 'history_keys' is not a list of names")
        history = {}
        for key in keys:
            t = tensors.get(f"history.{key}")
            if t is None or t.ndim != 1 or t.dtype != torch.float32:
                raise CheckpointError(name, f"missing or malformed tensor 'history.{key}'")
            history[key] = t.tolist()
        if len({len(v) for v in history.values()}) > 1:
            raise CheckpointError(name, "corrupt history: the curves have different lengths")
        metrics = train.get("metrics", {})
        provenance = train.get("provenance", {})
        if not isinstance(metrics, dict) or not isinstance(provenance, dict):
            raise CheckpointError(name, "corrupt metadata: metrics or provenance is not an object")
        info = TrainInfo(tcfg, mask, history, metrics, provenance)
        expected |= {"train_mask"} | {f"history.{k}" for k in keys}
    extra = sorted(set(tensors) - expected)
    if extra:
        raise CheckpointError(name, f"unexpected tensors {extra}")
    return Checkpoint(cfg, params, info)


def save(model: HookedMLP, path: str | os.PathLike[str]) -> None:
    """Save `model` (weights, config and, if trained here, its training record) atomically."""
    write_model(path, model.cfg, model.state_tensors(), model.train_info)


def load(path: str | os.PathLike[str], device: str = "cpu") -> HookedMLP:
    """Load a checkpoint written by `save` or `hooked-mlp train` as a `HookedMLP`.

    Raises `CheckpointError` (a `ValueError`) naming the file for anything missing or damaged.
    """
    from hooked_mlp.model import HookedMLP
    from hooked_mlp.training import check_device

    dev = check_device(device)
    ckpt = read_model(path)
    model = HookedMLP.from_params(ckpt.cfg, ckpt.params, train_info=ckpt.info)
    return model.to(dev)


def load_linear_state_dict(path: str | os.PathLike[str], cfg: MLPConfig | None = None) -> HookedMLP:
    """Import a `.pt` file holding an `nn.Sequential` state dict (the seed study's format).

    Read with `torch.load(weights_only=True)`, which refuses anything but tensors and containers.
    """
    import torch

    from hooked_mlp.model import HookedMLP

    name = str(path)
    if not Path(path).is_file():
        raise CheckpointError(name, "no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        problem = f"not a loadable state dict ({type(e).__name__}: {e})"
        raise CheckpointError(name, problem) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        return HookedMLP.from_linear_state_dict(state, cfg)
    except (TypeError, ValueError) as e:
        raise CheckpointError(name, str(e)) from None


# --------------------------------------------------------------------------- shipped models
def pretrained_seeds() -> list[int]:
    """Seeds of the models shipped inside the package."""
    seeds = []
    for f in PRETRAINED_DIR.glob("seed-*.safetensors"):
        stem = f.name[len("seed-") : -len(".safetensors")]
        if stem.isdigit():
            seeds.append(int(stem))
    return sorted(seeds)


def pretrained_path(seed: int = 0) -> Path:
    """Path of the shipped checkpoint trained with `seed`."""
    available = pretrained_seeds()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed not in available:
        raise ValueError(f"seed must be one of the shipped seeds {available}, got {seed!r}")
    return PRETRAINED_DIR / f"seed-{seed}.safetensors"


def load_pretrained(seed: int = 0, device: str = "cpu") -> HookedMLP:
    """The shipped model trained by this project with the seed recipe (2000 epochs).

    See `hooked_mlp/pretrained/README.md` for its provenance and the command that regenerates it.
    """
    return load(pretrained_path(seed), device=device)

