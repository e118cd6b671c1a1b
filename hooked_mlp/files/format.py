"""Checkpoints: safetensors for tensors, JSON for everything else; atomic writes; no pickle.

A checkpoint is one `.safetensors` file. Its tensors are the parameters (named as
`hooked_mlp.functional.param_shapes`: `W_in`, `b_in`, `W_out`, `b_out`, and `W_hidden`, `b_hidden`
for deeper models), and for a trained model the split (`train_mask`, bool `[p*p]`) and the
per-epoch curves (`history.<metric>`, float32 `[epochs]`). Its safetensors metadata holds one
JSON document under the key `hooked_mlp`: format and version, the kind of file, the model
config, and for a trained model the training recipe, final metrics and provenance.

Loading reads the 8-byte header size, then the header alone, and checks it (JSON with finite
numbers only, the tensor table against the shapes the config implies) before reading the
tensors, so a damaged or hostile file is refused with a `CheckpointError` naming it, without
reading or allocating more than the tensors it should hold. Then the checksum (metadata, tensor
table and every tensor byte) is checked and the tensors are decoded with safetensors; nothing is
ever unpickled. Every write goes to a temporary file in the destination folder and is renamed
over the target, so a crash leaves the previous file intact; what would be refused on reading
(non-finite weights) is refused on writing.

Format versions: 1 (hooked-mlp 0.1: the study's configuration only) and 2 (the model family:
`tied_inputs`, `bias`, `n_layers`, `init_scale`, `input_encoding` in the config; a model of
any input encoding saves and loads, its `W_in` `[d_input, d_hidden]`). Both are read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hooked_mlp.text import short

if TYPE_CHECKING:
    from torch import Tensor


FORMAT = "hooked-mlp"
FORMAT_VERSION = 2
META_KEY = "hooked_mlp"
KINDS = ("model", "train-state")
MAX_HEADER_BYTES = 16 * 1024 * 1024
HISTORY_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc")
# safetensors dtype names -> bytes per element (the ones a hooked-mlp file may hold)
DTYPE_BYTES = {"F32": 4, "F64": 8, "F16": 2, "BF16": 2, "BOOL": 1, "I64": 8, "I32": 4, "U8": 1}

Expected = dict[str, tuple[str, tuple[int, ...]]]  # tensor name -> (safetensors dtype, shape)


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


def _os_error(e: OSError, path: Path) -> OSError:
    """`e` with the path it concerns in its message (a full disk says which file)."""
    if e.filename is None:
        return type(e)(e.errno, f"{e.strerror or e} (writing {path})")
    return e


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    If the body raises (or the process dies), `path` keeps its previous content and the
    temporary file is removed (or, after a hard kill, left as a hidden `.tmp` file that the
    next run in the folder removes).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as e:
            raise _os_error(e, target) from None
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


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str],
                     earlier: Callable[[Path], str | None]) -> Iterator[Path]:
    """Yield a new, empty temporary folder beside `path`; on success it replaces `path` whole.

    For outputs made of several files (a report): readers see the old folder or the new one,
    never a mix. `path` must not exist, be empty, or be an earlier output of the same kind:
    `earlier(path)` returns None when it is, else what in it is not (then nothing happens), so
    that nothing else is ever replaced. The swap is one `renameat2(RENAME_EXCHANGE)` where the
    OS has it (Linux), else two renames.
    """
    target = Path(path)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise ValueError(f"{target} must be a folder (or not exist yet)")
    if target.exists():
        if Path.cwd().resolve().is_relative_to(target.resolve()):
            raise ValueError(f"{target} is the current folder or holds it; write the output "
                             "into a folder of its own")
        why = earlier(target) if any(target.iterdir()) else None
        if why is not None:
            raise ValueError(f"{target} holds files that are not part of an earlier output of "
                             f"this kind ({why}); choose an empty or new folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            _exchange(tmp, target)  # tmp now holds the old output
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _os_error(e, target) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _exchange(a: Path, b: Path) -> None:
    """Swap two folders' names: atomically with Linux's renameat2, else with a backup name."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
    backup = b.with_name(f"{a.name}.old")
    os.rename(b, backup)
    try:
        os.rename(a, b)
    except OSError:
        os.rename(backup, b)
        raise
    os.rename(backup, a)


# --------------------------------------------------------------------------- raw format
def write_safetensors(
    path: str | os.PathLike[str], tensors: dict[str, Tensor], meta: dict[str, Any]
) -> None:
    """Write `tensors` and the JSON document `meta` as one safetensors file, atomically.

    Refuses non-finite floating-point tensors (they would be refused on reading).
    """
    import torch
    from safetensors.torch import save

    for key, t in tensors.items():
        if t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{path}: not written: tensor {key!r} holds NaN or infinite values "
                             "(a checkpoint must hold finite numbers)")
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
    h = _checksum_start(doc, header)
    h.update(body)
    return "sha256:" + h.hexdigest()


def _checksum_start(doc: dict[str, Any], header: dict[str, Any]) -> Any:
    """The checksum's hash after the metadata and the tensor table, before the tensor bytes."""
    h = hashlib.sha256(_canonical({k: v for k, v in doc.items() if k != "checksum"}))
    h.update(_canonical({k: v for k, v in header.items() if k != "__metadata__"}))
    return h


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as infinity
        raise ValueError(f"{text} is not a finite number")
    return value


def _json(text: str | bytes) -> Any:
    """Strict JSON: finite numbers only (no NaN, Infinity or 1e999); RecursionError (absurd
    nesting) becomes a ValueError."""
    try:
        return json.loads(text, parse_constant=_no_constants, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass
class Header:
    """A checked safetensors header: the hooked-mlp document, the tensor table, where the
    tensor bytes start and how many there are."""

    doc: dict[str, Any]
    table: dict[str, Any]
    body_start: int
    body_size: int


def read_header(path: str | os.PathLike[str]) -> Header:
    """Read and check the header of a hooked-mlp file, without reading its tensors.

    Checks: the 8-byte size is plausible and fits the file, the header is strict JSON, the
    tensor table is well formed (known dtypes, non-negative shapes, offsets that tile the body
    exactly), and the metadata is a hooked-mlp document of a version this reader knows.
    """
    name = str(path)
    p = Path(path)
    if not p.exists():
        raise CheckpointError(name, "no such file")
    if not p.is_file():
        raise CheckpointError(name, "not a file")
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            first = f.read(8)
            if len(first) < 8:
                raise CheckpointError(
                    name, f"not a hooked-mlp checkpoint: the file has only {len(first)} bytes")
            n = struct.unpack("<Q", first)[0]
            if n > MAX_HEADER_BYTES:
                raise CheckpointError(name, "not a safetensors file: its first 8 bytes do not "
                                      "give a plausible header size")
            if 8 + n > size:
                raise CheckpointError(name, f"truncated: the header needs {8 + n} bytes but the "
                                      f"file has {size}")
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(name, f"cannot be read ({e.strerror or e})") from None
    try:
        header = _json(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CheckpointError(name, "not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise CheckpointError(name, "not a safetensors file: its header is not a JSON object")
    table = {k: v for k, v in header.items() if k != "__metadata__"}
    body = size - 8 - n
    _check_table(name, table, body)
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or META_KEY not in meta:
        raise CheckpointError(
            name, f"not a hooked-mlp checkpoint: no {META_KEY!r} entry in its safetensors "
            "metadata")
    try:
        doc = _json(meta[META_KEY]) if isinstance(meta[META_KEY], str) else None
    except ValueError:
        doc = None
    if doc is None:
        raise CheckpointError(name, f"corrupt metadata: {META_KEY!r} is not valid JSON")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(name, f"not a hooked-mlp checkpoint: format is not {FORMAT!r}")
    version = doc.get("format_version")
    if not _is_int(version) or version < 1:
        raise CheckpointError(name, f"corrupt metadata: format_version {short(version)}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            name,
            f"written by a newer hooked-mlp (format version {version}); this version reads "
            f"format versions up to {FORMAT_VERSION}: upgrade hooked-mlp",
        )
    if not isinstance(doc.get("checksum"), str):
        raise CheckpointError(name, "corrupt metadata: no checksum")
    return Header(doc, table, 8 + n, body)


def _check_table(name: str, table: dict[str, Any], body: int) -> None:
    """The tensor table must describe tensors that tile the body exactly."""
    spans = []
    for key, spec in table.items():
        offsets = spec.get("data_offsets") if isinstance(spec, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(_is_int(o) for o in offsets)):
            raise CheckpointError(name, f"corrupt header: tensor {short(key)} has no valid "
                                  "offsets")
        dtype, shape = spec.get("dtype"), spec.get("shape")
        if dtype not in DTYPE_BYTES or not isinstance(shape, list) or not all(
                _is_int(d) and d >= 0 for d in shape):
            raise CheckpointError(name, f"corrupt header: tensor {short(key)} has no valid "
                                  "dtype and shape")
        start, end = offsets
        if not 0 <= start <= end or end - start != DTYPE_BYTES[dtype] * math.prod(shape):
            raise CheckpointError(name, f"corrupt header: tensor {short(key)}'s offsets do not "
                                  "match its dtype and shape")
        spans.append((start, end))
    spans.sort()
    if spans and spans[-1][1] > body:
        raise CheckpointError(
            name, f"truncated: the tensors need {spans[-1][1]} bytes after the header, found "
            f"{body}")
    at = 0
    for start, end in spans:
        if start != at:
            raise CheckpointError(name, "corrupt header: the tensors overlap or leave gaps")
        at = end
    if at != body:
        raise CheckpointError(name, f"corrupt file: {body - at} bytes after the last tensor")


def read_safetensors(
    path: str | os.PathLike[str], kind: str,
    expected: Callable[[dict[str, Any], dict[str, Any]], Expected] | None = None,
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read and check a hooked-mlp file of `kind`: `(metadata document, tensors)`.

    `expected(doc, table)` gives the tensors the document implies (name -> safetensors dtype and
    shape); the file's table must hold exactly those, which is checked before any tensor byte is
    read, so the memory used is what the document itself implies.
    """
    import torch
    from safetensors.torch import load

    name = str(path)
    head = read_header(path)
    doc = head.doc
    if expected is not None and doc.get("kind") == kind:
        # before reading the body: it must hold exactly the tensors the document implies, so
        # the work (and memory) below is what a genuine file of this config would take
        want = expected(doc, head.table)
        got = {k: (v["dtype"], tuple(v["shape"])) for k, v in head.table.items()}
        for key, (dtype, shape) in want.items():
            if key not in got:
                raise CheckpointError(name, f"missing tensor {key!r}")
            if got[key] != (dtype, tuple(shape)):
                raise CheckpointError(
                    name, f"tensor {key!r} is {_dtype_name(got[key][0])} {list(got[key][1])}, "
                    f"expected {_dtype_name(dtype)} {list(shape)}")
        extra = sorted(set(got) - set(want))
        if extra:
            raise CheckpointError(name, f"unexpected tensors {[short(k) for k in extra[:5]]}")
    if doc.get("kind") != kind:
        # a file not read further: its checksum in chunks (bounded memory), so that a damaged or
        # edited one is called that rather than taken at its word
        if doc["checksum"] != _file_checksum(name, head):
            raise CheckpointError(
                name, "checksum mismatch: the file was damaged or edited after it was written")
        raise CheckpointError(
            name, f"is a hooked-mlp {short(doc.get('kind'))} file, but a {kind!r} file is needed"
        )
    try:  # the tensors are what the document implies, so this is what the file should hold
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(name, f"cannot be read ({e.strerror or e})") from None
    if len(data) != head.body_start + head.body_size:
        raise CheckpointError(name, "the file changed while it was being read")
    if doc["checksum"] != _checksum(doc, head.table, data[head.body_start :]):
        raise CheckpointError(
            name, "checksum mismatch: the file was damaged or edited after it was written")
    try:
        tensors = load(data)
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise CheckpointError(name, f"corrupt tensor data ({e})") from None
    for key, t in tensors.items():
        if t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
            raise CheckpointError(name, f"tensor {key!r} holds NaN or infinite values")
    return doc, tensors


def _file_checksum(name: str, head: Header, chunk: int = 1 << 20) -> str:
    """`_checksum` of a file's metadata, table and body, reading the body in chunks."""
    h = _checksum_start(head.doc, head.table)
    try:
        with open(name, "rb") as f:
            f.seek(head.body_start)
            left = head.body_size
            while left:
                block = f.read(min(chunk, left))
                if not block:
                    raise CheckpointError(name, "the file changed while it was being read")
                h.update(block)
                left -= len(block)
    except OSError as e:
        raise CheckpointError(name, f"cannot be read ({e.strerror or e})") from None
    return "sha256:" + h.hexdigest()


def _dtype_name(st_dtype: str) -> str:
    return {"F32": "torch.float32", "F64": "torch.float64", "BOOL": "torch.bool",
            "I64": "torch.int64"}.get(st_dtype, st_dtype)


def config_from(path: str, cls: type, data: Any, what: str) -> Any:
    """`cls.from_dict(data)`, or a CheckpointError naming the file and the field."""
    try:
        return cls.from_dict(data)
    except (TypeError, ValueError) as e:
        raise CheckpointError(path, f"invalid {what}: {e}") from None


