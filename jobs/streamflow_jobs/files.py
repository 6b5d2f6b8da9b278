"""Files the commands read and write, safely: no command destroys its own input.

- :func:`refuse_collisions`: any two paths of one command that resolve to the same file are
  refused before anything is opened for writing (``replay -i x -o x`` used to empty ``x``).
- :class:`Outputs`: every output is written to a temporary file beside its final name and renamed
  into place only when the command succeeds; a failing or killed run leaves the previous file
  intact and nothing half-written under the final name. ``-`` is standard output.
- :func:`open_input`: ``-`` is standard input; gzip input is read transparently; other
  compressed formats are refused with the command to use; a UTF-8 byte order mark is skipped.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import sys
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

STDIO = Path("-")
_BOM = b"\xef\xbb\xbf"
_COMPRESSED = {
    b"\x28\xb5\x2f\xfd": ("zstd", "zstdcat"),
    b"BZh": ("bzip2", "bzcat"),
    b"\xfd7zXZ": ("xz", "xzcat"),
}


class FileError(ValueError):
    """A file argument that cannot be used (one line, for the user)."""


def _identity(path: Path) -> tuple[int, int] | Path:
    """What makes two paths the same file: device and inode when it exists (hard links,
    symlinks), else the resolved path."""
    try:
        st = path.stat()
    except OSError:
        return path.resolve()
    return (st.st_dev, st.st_ino)


def refuse_collisions(inputs: dict[str, Path | None], outputs: dict[str, Path | None]) -> None:
    """Refuse an output that is an input or another output (``-`` excepted twice as stdin and
    stdout); the names are the options as the user typed them."""
    seen: dict[object, str] = {}
    for role, paths in (("input", inputs), ("output", outputs)):
        for option, path in paths.items():
            if path is None or path == STDIO:
                continue
            key = _identity(path)
            if key in seen:
                other = seen[key]
                if role == "input" and other.startswith("input"):
                    continue  # reading one file twice is harmless
                raise FileError(
                    f"{option} and {other.split(' ', 1)[1]} are the same file ({path}): "
                    "refusing to overwrite it"
                )
            seen[key] = f"{role} {option}"
    stdout = [o for o, p in outputs.items() if p == STDIO]
    if len(stdout) > 1:
        raise FileError(f"{' and '.join(stdout)} cannot both be standard output (-)")


class Outputs:
    """Temporary files renamed into place on success (a context manager).

    Every output is opened (created beside its destination) when the block starts, so an
    unwritable path fails before any work and before any existing file is touched."""

    def __init__(self, *paths: Path | None) -> None:
        self._paths = [p for p in paths if p is not None]
        self._open: dict[Path, tuple[IO[bytes], Path | None]] = {}

    def __enter__(self) -> Outputs:
        try:
            for path in self._paths:
                if path == STDIO:
                    self._open[path] = (sys.stdout.buffer, None)
                    continue
                if path.is_dir():
                    raise IsADirectoryError(21, "is a directory", str(path))
                try:
                    fd, tmp = tempfile.mkstemp(
                        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
                    )
                except OSError as exc:  # name the file the user gave, not the temporary one
                    raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
                self._open[path] = (os.fdopen(fd, "wb"), Path(tmp))
        except BaseException:
            self._discard()
            raise
        return self

    def __getitem__(self, path: Path) -> IO[bytes]:
        return self._open[path][0]

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            for path, (stream, tmp) in self._open.items():
                if tmp is None:
                    stream.flush()
                    continue
                stream.flush()
                os.fsync(stream.fileno())
                stream.close()
                # Keep the permissions an existing file had (mkstemp creates 0600).
                mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask()
                tmp.chmod(mode)
                tmp.replace(path)
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        for stream, tmp in self._open.values():
            if tmp is None:
                continue
            with contextlib.suppress(OSError):
                stream.close()
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._open.clear()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def open_input(path: Path) -> Iterator[BinaryIO]:
    """A binary stream of ``path`` (``-``: standard input), gunzipped if it is gzip, with a
    leading UTF-8 byte order mark skipped. Every stream here can peek (buffered readers)."""
    with contextlib.ExitStack() as stack:
        if path == STDIO:
            stream: Any = sys.stdin.buffer
        else:
            if path.is_dir():
                raise FileError(f"{path} is a directory, not a file")
            stream = stack.enter_context(path.open("rb"))
        head = stream.peek(6)[:6]
        if head[:2] == b"\x1f\x8b":
            stream = stack.enter_context(gzip.GzipFile(fileobj=stream, mode="rb"))
            head = stream.peek(6)[:6]
        for magic, (kind, tool) in _COMPRESSED.items():
            if head.startswith(magic):
                shown = "the file" if path == STDIO else str(path)
                raise FileError(
                    f"compressed input ({kind}): decompress it first, e.g. "
                    f"`{tool} {shown} | streamflow ... -i -`"
                )
        if head[:3] == _BOM:
            stream.read(3)
        try:
            yield stream
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            # (click would report an EOFError as a bare "Aborted.")
            raise FileError(f"{path}: corrupt or truncated compressed input ({exc})") from exc
