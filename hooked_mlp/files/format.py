"""The one safetensors reader and writer, and the one atomic writer, of hooked-mlp.

Every file hooked-mlp writes or reads goes through here: model checkpoints
(`hooked_mlp.files.checkpoints`), snapshot series (`hooked_mlp.files.series`), run states
(`hooked_mlp.training.runs`), activation caches, sweeps' weights, and the safetensors files of
other codebases (`hooked_mlp.files.importers`).

Reading a safetensors file (`read_table`) reads the 8-byte header size, then the header alone,
and checks it before any tensor byte is read: a size no larger than `MAX_HEADER_BYTES` that fits
the file, strict JSON (finite numbers only, bounded nesting), string metadata, and a tensor
table of known dtypes (`DTYPE_BYTES`) and non-negative shapes whose offsets tile the body
exactly. So a damaged or hostile file is refused with a `CheckpointError` naming it, without
reading or allocating more than the tensors it should hold.

A hooked-mlp file (`read_header`, `read_safetensors`) also holds one JSON document under the
metadata key `hooked_mlp`: format and version, the kind of file (`"model"`, `"train-state"`,
`"snapshots"`, ...) and what that kind records, and a SHA-256 checksum over the document, the
tensor table and every tensor byte. The document says which tensors the file must hold; they are
checked against the table before the body is read, then the checksum (of the whole file, or in
chunks for a file not read further), then the tensors are decoded with safetensors: nothing is
ever unpickled. A safetensors file of another codebase (`read_plain`) gets the same header and
table checks without the document.

Every write goes to a temporary file in the destination folder (`temporary_glob`) and is
renamed over the target, so a crash leaves the previous file intact; the file gets the mode the
umask allows, as `open` would give it. What would be refused on reading (non-finite floats) is
refused on writing. This module imports nothing of the project but `hooked_mlp.text`, so the
core may save through it.

Format versions: 1 (hooked-mlp 0.1: the study's configuration only), 2 (the model family:
`tied_inputs`, `bias`, `n_layers`, `init_scale`, `input_encoding` in the config) and 3 (a model
imported with a learned input embedding keeps the embedding's tables: written only for such a
model, so every other file stays readable by hooked-mlp 0.2). All are read.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hooked_mlp.text import safe_text, short

if TYPE_CHECKING:
    from torch import Tensor


FORMAT = "hooked-mlp"
FORMAT_VERSION = 3  # the newest this reader knows; `write_safetensors` writes 2 unless told
META_KEY = "hooked_mlp"
KINDS = ("model", "train-state")
# safetensors itself allows headers of 100 MB; 16 MiB holds some 150,000 tensor entries, far
# beyond any MLP, and bounds what parsing a hostile header's JSON can cost
MAX_HEADER_BYTES = 16 * 1024 * 1024
# every safetensors dtype of whole bytes -> bytes per element
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "U16": 2, "I16": 2, "F16": 2,
    "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8, "C64": 8,
}
_TEMPORARY = ".{name}.{random}.tmp"  # how `atomic_path` names its temporary files

Expected = dict[str, tuple[str, tuple[int, ...]]]  # tensor name -> (safetensors dtype, shape)


class CheckpointError(ValueError):
    """A file that is missing, damaged, or not the checkpoint that was asked for.

    `path` and `problem` are kept as given; the message shows the path with control and format
    characters escaped (`hooked_mlp.text.safe_text`: a crafted file name cannot rewrite the
    line it is printed on)."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fsdecode(path)
        self.problem = problem
        super().__init__(f"{safe_text(self.path, 4096)}: {problem}")


# --------------------------------------------------------------------------- atomic writes
def _umask() -> int:
    """The process's umask: read where Linux shows it (setting it, the only other way to read
    it, would change it for a moment under every other thread)."""
    with contextlib.suppress(OSError, ValueError, StopIteration), \
            open("/proc/self/status", encoding="ascii") as f:
        return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temporary_glob(name: str) -> str:
    """The pattern of the temporary files `atomic_path` writes for a file called `name`
    (hidden, so that no reader of the folder takes one for an output)."""
    return _TEMPORARY.format(name=name, random="*")


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
    prefix, suffix = _TEMPORARY.format(name=target.name, random="\0").split("\0")
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=target.parent)
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
    prefix, suffix = _TEMPORARY.format(name=target.name, random="\0").split("\0")
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700: give what mkdir would
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
    path: str | os.PathLike[str], tensors: dict[str, Tensor], meta: dict[str, Any], *,
    version: int = 2,
) -> None:
    """Write `tensors` and the JSON document `meta` (with `kind`) as one hooked-mlp safetensors
    file of format `version`, atomically.

    Refuses non-finite floating-point tensors (they would be refused on reading).
    """
    import torch
    from safetensors.torch import save

    for key, t in tensors.items():
        if t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{path}: not written: tensor {key!r} holds NaN or infinite values "
                             "(a checkpoint must hold finite numbers)")
    if not 2 <= version <= FORMAT_VERSION:
        raise ValueError(f"version must be 2 to {FORMAT_VERSION}, got {version!r}")
    doc = {"format": FORMAT, "format_version": version, **meta}
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


def strict_json(text: str | bytes) -> Any:
    """Strict JSON: finite numbers only (no NaN, Infinity or 1e999); RecursionError (absurd
    nesting) becomes a ValueError."""
    try:
        return json.loads(text, parse_constant=_no_constants, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("nested too deeply") from None


_json = strict_json  # the name other modules used first


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass
class Table:
    """A checked safetensors header: its metadata (names to strings; None when it has none),
    the tensor table (name -> dtype, shape, offsets), where the tensor bytes start and how many
    there are."""

    metadata: dict[str, str] | None
    table: dict[str, Any]
    body_start: int
    body_size: int


@dataclass
class Header(Table):
    """The checked header of a hooked-mlp file: a `Table` and its hooked-mlp document."""

    doc: dict[str, Any] = field(default_factory=dict)


def read_table(path: str | os.PathLike[str], what: str = "safetensors file") -> Table:
    """Read and check the header of any safetensors file, without reading its tensors.

    Checks: the 8-byte size is plausible (at most `MAX_HEADER_BYTES`) and fits the file, the
    header is strict JSON, its metadata maps names to strings, and the tensor table is well
    formed (dtypes of `DTYPE_BYTES`, non-negative shapes, offsets that tile the body exactly).
    `what` names the kind of file the messages say it is not.
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
                    name, f"not a {what}: the file has only {len(first)} bytes")
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
        header = strict_json(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CheckpointError(name, "not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise CheckpointError(name, "not a safetensors file: its header is not a JSON object")
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(v, str) for v in metadata.values())):
        raise CheckpointError(name, "corrupt header: its __metadata__ must map names to "
                              "strings")
    table = {k: v for k, v in header.items() if k != "__metadata__"}
    body = size - 8 - n
    _check_table(name, table, body)
    return Table(metadata, table, 8 + n, body)


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
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise CheckpointError(name, f"corrupt header: tensor {short(key)} has no valid "
                                  "shape")
        if dtype not in DTYPE_BYTES:
            raise CheckpointError(name, f"tensor {short(key)} has dtype {short(dtype)}, which "
                                  f"this reader does not know (it reads {', '.join(DTYPE_BYTES)})")
        start, end = offsets
        need = DTYPE_BYTES[dtype] * math.prod(shape)
        if not 0 <= start <= end or end - start != need:
            raise CheckpointError(name, f"corrupt header: tensor {short(key)} declares {dtype} "
                                  f"{shape} ({need} bytes) at bytes {start}..{end}")
        if end > body:
            raise CheckpointError(
                name, f"truncated: tensor {short(key)} declares {dtype} {shape} ({need} bytes) "
                f"at bytes {start}..{end} of a body of {body}")
        spans.append((start, end))
    spans.sort()
    at = 0
    for start, end in spans:
        if start != at:
            raise CheckpointError(name, "corrupt header: the tensors overlap or leave gaps")
        at = end
    if at != body:
        raise CheckpointError(name, f"corrupt file: {body - at} bytes after the last tensor")


def read_header(path: str | os.PathLike[str]) -> Header:
    """Read and check the header of a hooked-mlp file, without reading its tensors: the checks
    of `read_table`, then the metadata must be a hooked-mlp document of a version this reader
    knows, with a checksum."""
    name = str(path)
    head = read_table(path, "hooked-mlp checkpoint")
    meta = head.metadata
    if meta is None or META_KEY not in meta:
        raise CheckpointError(
            name, f"not a hooked-mlp checkpoint: no {META_KEY!r} entry in its safetensors "
            "metadata")
    try:
        doc = strict_json(meta[META_KEY])
    except ValueError:
        raise CheckpointError(name, f"corrupt metadata: {META_KEY!r} is not valid JSON") from None
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
    return Header(meta, head.table, head.body_start, head.body_size, doc)


def is_hooked(table: Table) -> bool:
    """Whether a safetensors file's header says it is a hooked-mlp file (its metadata holds
    the hooked-mlp document's key), so that `read_header` is the reader for it."""
    return table.metadata is not None and META_KEY in table.metadata


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


def read_plain(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a safetensors file of another codebase: `(tensors, metadata)`, after the header and
    table checks of `read_table` (a file that claims more than it holds is refused before a
    byte of its body is read). Its tensors are read with safetensors' own reader, mapped from
    the file rather than read into memory first."""
    from safetensors import safe_open

    name = str(path)
    head = read_table(path)
    try:
        with safe_open(name, framework="pt", device="cpu") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors has its own error types for damaged files
        raise CheckpointError(name, f"corrupt tensor data ({short(str(e), 300)})") from None
    if set(tensors) != set(head.table):
        raise CheckpointError(name, "the file changed while it was being read")
    return tensors, dict(head.metadata or {})


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


