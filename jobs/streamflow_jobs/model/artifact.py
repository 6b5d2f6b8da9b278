"""What every model artifact shares: JSON with a declared format, packed arrays, a checksum.

An artifact is a JSON document: ``format`` (which kind of model), ``format_version``, a
content-derived ``model_version``, the ``features`` it scores, its node arrays as base64 of
zlib-compressed little-endian arrays, and a SHA-256 ``checksum`` of everything else. Reading one
executes nothing (no pickle, no joblib): it is decoded, checked against its checksum, then
validated by its kind's module. Every refusal is a :class:`ModelArtifactError` of one line.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import orjson


class ModelArtifactError(ValueError):
    """A model file that is unreadable, tampered with, or not a StreamFlow model."""


def pack(array: npt.NDArray[Any]) -> str:
    return base64.b64encode(zlib.compress(array.tobytes(), 9)).decode("ascii")


def unpack(text: str, dtype: str, count: int, name: str) -> npt.NDArray[Any]:
    try:
        # Bounded: a decompression bomb cannot expand past the declared size.
        inflater = zlib.decompressobj()
        raw = inflater.decompress(
            base64.b64decode(text, validate=True), count * np.dtype(dtype).itemsize + 1
        )
    except (ValueError, zlib.error) as exc:
        raise ModelArtifactError(f"trees.{name}: not zlib+base64 data: {exc}") from exc
    arr = np.frombuffer(raw, dtype=np.dtype(dtype))
    if arr.size != count:
        raise ModelArtifactError(f"trees.{name}: {arr.size} values, expected {count}")
    return arr


def payload_checksum(document: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of everything but the checksum itself."""
    body = {k: v for k, v in document.items() if k != "checksum"}
    return "sha256:" + hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def seal(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """Give a document its content-derived ``model_version`` (``name-<12 hex>``) and checksum."""
    doc["model_version"] = ""
    digest = payload_checksum(doc).removeprefix("sha256:")
    doc["model_version"] = f"{name}-{digest[:12]}"
    doc["checksum"] = payload_checksum(doc)
    return doc


def write_artifact(doc: dict[str, Any], target: str | Path | IO[bytes]) -> None:
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    if isinstance(target, str | Path):
        Path(target).write_bytes(data)
    else:
        target.write(data)


def parse_document(raw: bytes, source: str) -> dict[str, Any]:
    """The JSON object of an artifact, whatever its kind (its format is not checked here)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ModelArtifactError(f"{source}: not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ModelArtifactError(f"{source}: not a StreamFlow model artifact")
    return doc


def check_document(doc: dict[str, Any], source: str, fmt: str, version: int) -> None:
    """Format, version and checksum of a decoded artifact of one kind."""
    if doc.get("format") != fmt:
        raise ModelArtifactError(f"{source}: not a {fmt} artifact")
    if doc.get("format_version") != version:
        raise ModelArtifactError(
            f"{source}: format_version {doc.get('format_version')!r} is not supported "
            f"(this build reads {version})"
        )
    if doc.get("checksum") != payload_checksum(doc):
        raise ModelArtifactError(f"{source}: checksum mismatch: the file is corrupt or altered")


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelArtifactError(f"cannot read model {path}: {exc.strerror}") from exc
