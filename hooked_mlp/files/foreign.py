"""Reading the files other codebases save, safely: what a file is, and what it holds.

`sniff(path)` tells a file's kind by its content, whatever its suffix: `"torch"` (torch.save's
zip archive), `"safetensors"`, `"torch-legacy"` (torch.save's format before torch 1.6, which
starts with a pickle of its magic number), `"pickle"` (any other pickle), `"empty"`, or
`"other"`. `read_file(path)` returns what a torch or (non-hooked-mlp) safetensors
file holds, as plain objects:

- a torch file is read with `torch.load(weights_only=True, mmap=True)` (no Python object but
  tensors and plain containers is ever unpickled) after its zip directory is checked: an entry
  that is compressed, or that declares more bytes than the whole file has, is refused before
  anything is inflated (torch.save never compresses);
- a safetensors file is read by `hooked_mlp.files.format.read_plain`, after its header's sizes
  are checked against the file's; its metadata's JSON config strings are parsed;
- a pickle is refused (unpickling can run code), and so is torch's legacy format: it reads
  its storage sizes from a pickle and allocates them before they can be checked.

Problems are raised as `Refusal` (the problem alone): the importer turns it into a
`CheckpointError` naming the file, a folder of checkpoints into a line saying why a file was
skipped.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

from hooked_mlp.files.format import CheckpointError, is_hooked, read_plain, read_table
from hooked_mlp.text import short

KINDS = ("torch", "safetensors", "torch-legacy", "pickle", "empty", "other")
CONFIG_KEYS = ("config", "cfg", "hparams", "hyper_parameters")  # where a config dict may sit
# torch's legacy files start with the pickle (protocol 2) of the long 0x1950a86a20f9469cfc6c
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_ZIP_METHODS = {zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2",
                zipfile.ZIP_LZMA: "lzma"}


class Refusal(Exception):  # noqa: N818 - always re-raised as an error naming its source
    """A problem with a source, reported by `import_mlp` as a `CheckpointError` naming the file
    or as a `kind` (ValueError / TypeError) starting `state_dict:`."""

    def __init__(self, problem: str, kind: type[Exception] = ValueError) -> None:
        super().__init__(problem)
        self.problem = problem
        self.kind = kind


class NotAStateDict(Refusal):
    """The source holds something other than a model's weights (a list of pairs, a dict without
    tensors, tensors that fit no layout): what a folder of checkpoints skips, saying so."""


def clip(text: str, limit: int = 300) -> str:
    """`text` cut to about `limit` characters (a library's message can be long)."""
    return text if len(text) <= limit else f"{text[:limit]}..."


def sniff(path: Path) -> str:
    """The kind of file `path` is, by its first bytes (one of `KINDS`)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_LEGACY_MAGIC))
    except OSError as e:
        raise Refusal(f"cannot be read ({e.strerror})") from None
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04"):
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") >= 2:
        return "safetensors"  # (read_table says whether its header size is plausible)
    if head == _LEGACY_MAGIC:
        return "torch-legacy"
    if head[:1] == b"\x80":
        return "pickle"
    return "other"


RESAVE = "torch.save(torch.load(path, weights_only=True), new_path)"
LEGACY_REFUSAL = (
    "is a torch file in torch's legacy (pre-1.6) format, whose storage sizes cannot be checked "
    f"before torch allocates them; if you trust it, re-save it with a current torch: {RESAVE}")
PICKLE_REFUSAL = (
    "is a pickle (not a torch or safetensors file), which is never unpickled: unpickling can "
    "run any code; if you trust it and it holds tensors, save them with torch.save or "
    "safetensors")
SKIPPED = {  # why a folder of checkpoints skips a file of each kind it does not read
    "empty": "empty",
    "torch-legacy": "torch's legacy (pre-1.6) format, never read (torch allocates its storage "
                    f"sizes before they can be checked); to include it, re-save it: {RESAVE}",
    "pickle": "a pickle, never unpickled (unpickling can run code)",
    "other": "not a torch or safetensors file",
}
OTHER_REFUSAL = ("is neither a torch file (.pt, .pth: torch.save's zip archive) nor a "
                 "safetensors file")


def read_file(path: Path) -> tuple[Any, dict[str, Any] | None]:
    """What a torch file or a plain safetensors file holds: `(object, None)` for a torch file,
    `(tensors, metadata)` for a safetensors file (its JSON config strings parsed). Refuses
    every other kind of file, saying what it is; a hooked-mlp file is the checkpoint reader's
    (`Refusal` saying so)."""
    kind = sniff(path)
    if kind == "torch":
        return read_torch_file(path), None
    if kind == "safetensors":
        return read_plain_safetensors(path)
    if kind == "empty":
        raise Refusal("the file is empty")
    raise Refusal({"pickle": PICKLE_REFUSAL, "torch-legacy": LEGACY_REFUSAL}.get(kind,
                                                                            OTHER_REFUSAL))


# --------------------------------------------------------------------------- torch files
def read_torch_file(path: Path) -> Any:
    """A torch file's content: its zip directory checked (`check_zip`), then loaded with
    `torch.load(weights_only=True, mmap=True)` (tensors and plain containers only, mapped from
    the file rather than read)."""
    check_zip(path)
    return torch_load(path)


def check_zip(path: Path) -> None:
    """Refuse a zip archive that could inflate beyond its size, before torch reads it."""
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise Refusal(f"is a damaged zip archive ({clip(str(e))})") from None
    total = 0
    for info in entries:
        if info.compress_type != zipfile.ZIP_STORED:
            method = _ZIP_METHODS.get(info.compress_type, f"method {info.compress_type}")
            raise Refusal(
                f"its zip entry {short(info.filename)} is compressed ({method}, "
                f"{info.compress_size} bytes declared to inflate to {info.file_size}); "
                f"torch.save never compresses, and a compressed entry can inflate far beyond "
                f"the file's {size} bytes, so it is not opened. If you trust the file, load it "
                f"yourself and pass the state dict")
        if info.file_size != info.compress_size or info.file_size > size:
            raise Refusal(
                f"its zip entry {short(info.filename)} declares {info.file_size} bytes (stored "
                f"in {info.compress_size}) in a file of {size} bytes: the archive is damaged")
        total += info.file_size
    if total > size:
        raise Refusal(f"its zip entries declare {total} bytes in all, more than the file's "
                      f"{size}: the archive is damaged")


def torch_load(path: Path) -> Any:
    """`torch.load` restricted to tensors and plain containers, mapped rather than read (call
    `check_zip` first)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        lines = str(e).splitlines()
        detail = next((line.strip() for line in lines if "WeightsUnpickler" in line),
                      lines[0] if lines else "")
        raise Refusal(f"holds Python objects other than tensors and plain containers, which "
                      f"are not unpickled ({clip(detail)}); if it is a whole pickled model, "
                      f"save its model.state_dict() instead") from None
    except Exception as e:  # torch raises RuntimeError, ValueError, ... for damaged files
        first = str(e).splitlines()[0] if str(e) else ""
        raise Refusal(f"is not a loadable torch file ({type(e).__name__}: {clip(first)})"
                      ) from None


# --------------------------------------------------------------------------- safetensors
def is_hooked_file(path: Path) -> bool:
    """Whether a safetensors file is a hooked-mlp file (by its header's metadata)."""
    try:
        return is_hooked(read_table(path))
    except CheckpointError as e:
        raise Refusal(e.problem) from None


def read_plain_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A safetensors file of another codebase: its tensors and its metadata, with the JSON
    config strings (`CONFIG_KEYS`) parsed where they parse."""
    try:
        tensors, metadata = read_plain(path)
    except CheckpointError as e:
        raise Refusal(e.problem) from None
    parsed: dict[str, Any] = dict(metadata)
    for key in CONFIG_KEYS:
        value = parsed.get(key)
        if isinstance(value, str) and value.lstrip().startswith("{"):
            with contextlib.suppress(ValueError, RecursionError):  # not a config we can read
                parsed[key] = json.loads(value)
    return tensors, parsed
