"""The one page writer and its one output-folder rule.

Every page hooked-mlp writes goes through here, so every page keeps the same guarantees:

- **A page replaces only an earlier page of its kind.** A `PageKind` names the files a page
  writes (its top-level files, its sub-folders and the pattern of their files) and how an
  earlier page is recognised (a JSON marker file holding given keys, or the `generator` meta
  that `templates/base.html.j2` writes). An output folder must be new, empty, or hold such a
  page and nothing else: every entry is checked, below the top level too (no links, no other
  files, no other folders). A one-file page (`DIR/sweep.html` beside a sweep's data) replaces
  only a file that carries its kind's `generator` meta.
- **Never a folder holding the page's inputs** (the models a report reads, the snapshots a
  dynamics page reads): the folder is replaced whole, so that would delete them.
- **Built beside and swapped in whole.** A folder page is written into a new temporary folder
  beside the target and exchanged with it in one `renameat2` (`hooked_mlp.files.format.
  atomic_directory`); a one-file page is written to a temporary file and renamed. A reader sees
  the old page or the new one, never a mix; a failure (a full disk, an exception while the page
  is computed) leaves the old page as it was.
- **A page this writer made is always one it will replace later:** before the swap the new
  folder is checked by the same rule, so a page module that writes a name its kind does not
  list fails at once, not on the next run.

An error of the writer itself (the folder is refused, the disk is full) is a `ValueError` or an
`OSError` naming the folder; an exception raised by the caller's code inside `page_folder` comes
out as it was raised (an `OSError` there is not dressed up as a failure to write the page).

Figures that are files of their own (`hooked-mlp probe --figures DIR`) go through
`write_figures`: names are made safe (`safe_name`), and a file is replaced only when it is a PNG
this writer marked for the same owner.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hooked_mlp.files.format import atomic_directory, atomic_write_bytes
from hooked_mlp.text import safe_text

# how far into an HTML file its `generator` meta is looked for (it sits in the <head>)
_HEAD_BYTES = 4096


@dataclass(frozen=True)
class PageKind:
    """What a page writes and how an earlier page of its kind is recognised.

    `name`: the kind (`"report"`); the page's template passes it to `base.html.j2` as `kind`,
    which writes `<meta name="generator" content="hooked-mlp NAME page">`.
    `files`: the top-level files the page may write. `folders`: sub-folder -> glob of the files
    it may hold (`{"figures": "*.png"}`). `marker`: `(file, keys)`, a JSON file of the page that
    must hold a dict with `keys`; without it an earlier page is recognised by the `generator`
    meta of `files[0]`.
    """

    name: str
    files: tuple[str, ...]
    folders: Mapping[str, str] = field(default_factory=dict)
    marker: tuple[str, tuple[str, ...]] | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9-]*", self.name):
            raise ValueError(f"a page kind's name is lower-case letters, digits and '-', got "
                             f"{self.name!r}")
        if not self.files:
            raise ValueError(f"page kind {self.name!r} names no file")
        if self.marker is not None and self.marker[0] not in self.files:
            raise ValueError(f"page kind {self.name!r}: its marker {self.marker[0]!r} must be "
                             "one of its files")
        if self.marker is None and not self.files[0].endswith(".html"):
            raise ValueError(f"page kind {self.name!r} has no marker, so its first file must be "
                             "the HTML page that carries its generator meta")

    @property
    def generator(self) -> str:
        """The `generator` meta element `base.html.j2` writes for this kind."""
        return f'<meta name="generator" content="hooked-mlp {self.name} page">'

    def allows(self, name: str) -> bool:
        """Whether `name` (a path relative to the page's folder, '/'-separated) is one of the
        files this kind writes."""
        parts = name.split("/")
        if len(parts) == 1:
            return name in self.files
        return (len(parts) == 2 and parts[0] in self.folders and parts[1] not in ("", ".", "..")
                and fnmatch.fnmatchcase(parts[1], self.folders[parts[0]]))

    def stranger(self, folder: Path) -> str | None:
        """None when `folder` holds a page of this kind and nothing else, else the first thing
        in it that is not part of one (checked below the top level, links refused)."""
        for entry in sorted(folder.iterdir()):
            if entry.name in self.files:
                if entry.is_symlink() or not entry.is_file():
                    return f"{entry.name} (not a plain file)"
            elif entry.name in self.folders:
                if entry.is_symlink() or not entry.is_dir():
                    return f"{entry.name} (not a folder)"
                for f in sorted(entry.iterdir()):
                    if (f.is_symlink() or not f.is_file()
                            or not fnmatch.fnmatchcase(f.name, self.folders[entry.name])):
                        return f"{entry.name}/{f.name}"
            else:
                return entry.name
        return self._unrecognised(folder)

    def _unrecognised(self, folder: Path) -> str | None:
        if self.marker is not None:
            name, keys = self.marker
            try:
                doc = json.loads((folder / name).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return f"no {name} of a hooked-mlp {self.name} page"
            if not isinstance(doc, dict) or not set(keys) <= set(doc):
                return f"its {name} is not a hooked-mlp {self.name} page's"
            return None
        if not is_page_file(folder / self.files[0], self):
            return f"{self.files[0]} is not a hooked-mlp {self.name} page"
        return None


def is_page_file(path: Path, kind: PageKind) -> bool:
    """Whether `path` is a plain file whose head carries `kind`'s generator meta."""
    if path.is_symlink() or not path.is_file():
        return False
    with open(path, "rb") as f:
        return kind.generator.encode("utf-8") in f.read(_HEAD_BYTES)


def _check_inputs(out: Path, inputs: Iterable[str | os.PathLike[str]], what: str) -> None:
    """Refuse an output that would replace one of the page's inputs."""
    if not out.exists():
        return
    target = out.resolve()
    for path in inputs:
        p = Path(path).resolve()
        if p == target or p.is_relative_to(target):
            raise ValueError(f"{safe_text(str(path))} lies inside the output {what} "
                             f"{safe_text(str(out))}, which the page replaces: write the page "
                             "elsewhere")


class _CallerError(Exception):
    """Carries an exception of the caller's code through `atomic_directory`, which would take
    an OSError for a failure to write the folder."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class PageFolder:
    """The temporary folder a page is built in (`page_folder` yields one)."""

    def __init__(self, tmp: Path, kind: PageKind, out_dir: Path | None = None) -> None:
        self.root = tmp
        self.kind = kind
        self.out_dir = tmp if out_dir is None else out_dir  # where the page will be

    def path(self, name: str) -> Path:
        """Where the page's file `name` ('figures/x.png') goes, its folder made; refused when
        the kind does not list it (so the page stays recognisable as one)."""
        if not self.kind.allows(name):
            allowed = [*self.kind.files, *(f"{d}/{g}" for d, g in self.kind.folders.items())]
            raise ValueError(f"a {self.kind.name} page writes {', '.join(allowed)}, not "
                             f"{name!r}")
        p = self.root / name
        p.parent.mkdir(exist_ok=True)
        return p

    def write(self, name: str, data: str | bytes) -> Path:
        """Write `data` (text as UTF-8) as the page's file `name`; its final path. A failed
        write (a full disk) is an OSError naming the output folder; nothing there changes."""
        try:
            atomic_write_bytes(self.path(name), data.encode("utf-8") if isinstance(data, str)
                               else bytes(data))
        except OSError as e:
            raise OSError(e.errno, f"{e.strerror or e}: could not write {name} of the "
                          f"{self.kind.name} page into {safe_text(str(self.out_dir))}") from e
        return self.root / name


@contextlib.contextmanager
def page_folder(out_dir: str | os.PathLike[str], kind: PageKind,
                inputs: Iterable[str | os.PathLike[str]] = ()) -> Iterator[PageFolder]:
    """Check `out_dir` by the output-folder rule, then yield a `PageFolder` to write the page
    into; when the body ends, the page replaces `out_dir` whole. The check comes first, so a
    page that computes for minutes (a report trains its models) is refused before it starts.
    If the body raises, nothing is replaced and the exception comes out as it was raised."""
    out = Path(out_dir)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ValueError(f"the output folder {safe_text(str(out))} must be a folder (or not "
                         "exist yet)")
    _check_inputs(out, inputs, "folder")
    try:
        with atomic_directory(out, kind.stranger) as tmp:
            page = PageFolder(tmp, kind, out)
            try:
                yield page
            except Exception as e:
                raise _CallerError(e) from e
            why = kind.stranger(tmp)
            if why is not None:  # a bug of the page module: say so now, not on the next run
                raise RuntimeError(f"the {kind.name} page just built would not be recognised "
                                   f"as one: {why}")
    except _CallerError as carried:
        raise carried.error from None


def write_page(out_dir: str | os.PathLike[str], kind: PageKind,
               files: Mapping[str, str | bytes],
               inputs: Iterable[str | os.PathLike[str]] = ()) -> Path:
    """Write a folder page whose files are all at hand (`{name: text or bytes}`) into `out_dir`
    by the output-folder rule; the folder's path."""
    with page_folder(out_dir, kind, inputs) as page:
        for name, data in files.items():
            page.write(name, data)
    return Path(out_dir)


def write_page_file(path: str | os.PathLike[str], kind: PageKind, html: str,
                    inputs: Iterable[str | os.PathLike[str]] = ()) -> Path:
    """Write the one-file page `html` (rendered from `base.html.j2` with `kind=kind.name`) to
    `path` atomically, replacing only an earlier page of `kind` there; the path."""
    target = Path(path)
    if kind.generator not in html[:_HEAD_BYTES]:
        raise ValueError(f"the {kind.name} page does not carry its generator meta (render it "
                         f"from base.html.j2 with kind={kind.name!r})")
    for p in inputs:
        if Path(p).resolve() == target.resolve():
            raise ValueError(f"{safe_text(str(target))} is one of the page's inputs: write the "
                             "page elsewhere")
    if (target.exists() or target.is_symlink()) and not is_page_file(target, kind):
        raise ValueError(f"{safe_text(str(target))} exists and is not a hooked-mlp "
                         f"{kind.name} page: choose another path or remove it")
    atomic_write_bytes(target, html.encode("utf-8"))
    return target


# --------------------------------------------------------------------------- figure files
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: Any, limit: int = 80) -> str:
    """`name` as one file name: letters, digits, '.', '_' and '-' only (anything else becomes
    '_'), no leading dot, at most `limit` characters, never empty (`"../../x"` -> `"x"`)."""
    text = _UNSAFE.sub("_", str(name)).strip("._-")[:limit].rstrip("._-")
    return text or "figure"


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MARK_KEY = b"hooked-mlp"


def mark_png(png: bytes, owner: str) -> bytes:
    """`png` with a text chunk saying which hooked-mlp command wrote it (`owner`), so that the
    next run can tell its own files from anyone else's."""
    if not png.startswith(_PNG_SIGNATURE) or png[12:16] != b"IHDR":
        raise ValueError("mark_png takes the bytes of a PNG image")
    data = _MARK_KEY + b"\0" + owner.encode("latin-1")
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(
        ">I", zlib.crc32(b"tEXt" + data))
    end_of_ihdr = 8 + 8 + struct.unpack(">I", png[8:12])[0] + 4
    return png[:end_of_ihdr] + chunk + png[end_of_ihdr:]


def png_owner(path: Path) -> str | None:
    """The owner `mark_png` wrote into the PNG file at `path`, or None (not a plain file, not a
    PNG, or not marked)."""
    if path.is_symlink() or not path.is_file():
        return None
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
    if not head.startswith(_PNG_SIGNATURE):
        return None
    pos = 8
    while pos + 8 <= len(head):
        size, tag = struct.unpack(">I4s", head[pos:pos + 8])
        if tag == b"tEXt":
            key, _, value = head[pos + 8:pos + 8 + size].partition(b"\0")
            if key == _MARK_KEY:
                return value.decode("latin-1")
        if tag == b"IDAT":
            return None
        pos += 12 + size
    return None


def write_figures(folder: str | os.PathLike[str], figures: Mapping[str, bytes], owner: str,
                  prefix: str = "") -> list[Path]:
    """Write each PNG of `figures` as `folder/PREFIX-NAME.png` (names made safe, distinct),
    marked as `owner`'s; a file already there is replaced only when `owner` wrote it. Every
    name is checked before anything is written. The paths written."""
    out = Path(folder)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ValueError(f"the figures folder {safe_text(str(out))} must be a folder (or not "
                         "exist yet)")
    paths: dict[Path, bytes] = {}
    for name, png in figures.items():
        stem = f"{safe_name(prefix)}-{safe_name(name)}" if prefix else safe_name(name)
        path, n = out / f"{stem}.png", 1
        while path in paths:
            n += 1
            path = out / f"{stem}-{n}.png"
        if (path.exists() or path.is_symlink()) and png_owner(path) != owner:
            raise ValueError(f"{safe_text(str(path))} exists and was not written by {owner}: "
                             "choose another folder or remove it")
        paths[path] = mark_png(png, owner)
    out.mkdir(parents=True, exist_ok=True)
    for path, png in paths.items():
        atomic_write_bytes(path, png)
    return list(paths)


__all__ = ["PageFolder", "PageKind", "is_page_file", "mark_png", "page_folder", "png_owner",
           "safe_name", "write_figures", "write_page", "write_page_file"]
