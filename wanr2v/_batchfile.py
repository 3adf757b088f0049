"""The batch-file format: a file of requests, read into keyed `VideoRequest` objects.

Two formats, chosen by the file's suffix:

- **JSONL** (any suffix but ``.toml``): one JSON object a line, each with the fields
  of `VideoRequest` and an optional ``"key"`` (default: the line number, counted from
  1). Blank lines and lines starting with ``#`` are skipped.
- **TOML** (``.toml``): ``[[requests]]`` tables (``[[request]]`` is accepted too),
  each with the fields of `VideoRequest` and an optional ``key`` (default: the
  entry's number, from 1), and an optional ``[defaults]`` table whose fields fill
  every entry (an entry's own fields win).

Keys are strings and unique; a local path in ``reference_urls`` (no ``://``) is made
absolute against the batch file's folder (``~`` expanded), so the requests mean the
same wherever the program runs. URLs are kept as written.

Guarantees: every problem is an `InvalidRequestError` whose message names the file,
the line (JSONL) or the entry (TOML) and what to fix; the first problem stops the
reading, and nothing is returned for a file with one. Limits: the whole file is read
into memory, and reading is blocking (call it in a worker thread from async code,
e.g. ``await anyio.to_thread.run_sync(read_batch_file, path)``). Local files are not
opened here: a missing reference file is found when the request is sent.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from ._exceptions import InvalidRequestError
from ._models import VideoRequest, closest

__all__ = ["read_batch_file"]

_REQUEST_FIELDS: Final = tuple(sorted(a.name for a in attrs.fields(VideoRequest)))
_REQUIRED_FIELDS: Final = tuple(
    a.name for a in attrs.fields(VideoRequest) if a.default is attrs.NOTHING
)


def absolute_refs(refs: object, base: Path) -> object:
    """``refs`` with every local path made absolute against ``base`` (URLs kept).

    A single string is taken as a list of one; anything else that is not a list is
    returned as is (`VideoRequest` then says what is wrong with it).
    """
    if isinstance(refs, str):
        refs = [refs]
    if not isinstance(refs, list):
        return refs
    out: list[object] = []
    for ref in refs:
        if isinstance(ref, str) and "://" not in ref and ref.strip():
            path = Path(ref).expanduser()
            out.append(str(path if path.is_absolute() else (base / path).resolve()))
        else:
            out.append(ref)
    return out


def _unknown_fields_message(where: str, unknown: list[str]) -> str:
    hints = [
        f"{name!r} (did you mean {hint!r}?)"
        for name in unknown
        if (hint := closest(name, _REQUEST_FIELDS))
    ]
    named = ", ".join(unknown)
    advice = f"; {', '.join(hints)}" if hints else ""
    return f"{where}: unknown field(s) {named}{advice}; use {', '.join(_REQUEST_FIELDS)} (and key)."


def _request_from(fields: Mapping[str, Any], where: str, base: Path) -> VideoRequest:
    unknown = sorted(set(fields) - set(_REQUEST_FIELDS))
    if unknown:
        raise InvalidRequestError(_unknown_fields_message(where, unknown))
    missing = [name for name in _REQUIRED_FIELDS if name not in fields]
    if missing:
        raise InvalidRequestError(
            f"{where}: missing field(s) {', '.join(missing)}; every request needs "
            f"{', '.join(_REQUIRED_FIELDS)}.",
            field=missing[0],
        )
    data = dict(fields)
    if "reference_urls" in data:
        data["reference_urls"] = absolute_refs(data["reference_urls"], base)
    try:
        return VideoRequest(**data)
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"{where}: {exc.message}", field=exc.field) from None
    except TypeError as exc:
        raise InvalidRequestError(f"{where}: {exc}") from None


def _toml_entries(file: Path, text: str) -> list[tuple[str, dict[str, Any], str]]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRequestError(f"{file}: not valid TOML: {exc}") from None
    defaults = doc.get("defaults", {})
    reqs = doc.get("requests", doc.get("request"))
    if not isinstance(defaults, dict) or not isinstance(reqs, list):
        raise InvalidRequestError(
            f"{file}: expected [[requests]] tables (and an optional [defaults])."
        )
    entries = []
    for n, entry in enumerate(reqs, start=1):
        if not isinstance(entry, dict):
            raise InvalidRequestError(f"{file}: requests #{n} is not a table.")
        merged = {**defaults, **entry}
        entries.append((str(merged.pop("key", n)), merged, f"{file}: requests #{n}"))
    return entries


def _jsonl_entries(file: Path, text: str) -> list[tuple[str, dict[str, Any], str]]:
    entries = []
    for n, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            entry = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(
                f"{file}:{n}: not valid JSON: {exc.msg} (column {exc.colno}); each line "
                "holds one JSON object."
            ) from None
        if not isinstance(entry, dict):
            raise InvalidRequestError(f"{file}:{n}: each line must be a JSON object.")
        entries.append((str(entry.pop("key", n)), entry, f"{file}:{n}"))
    return entries


def read_batch_file(path: str | os.PathLike[str]) -> dict[str, VideoRequest]:
    """Read a batch file (JSONL, or TOML by its ``.toml`` suffix) into keyed requests.

    Blocking (it reads the file): call it in a worker thread from async code.

    Args:
        path: the batch file.

    Returns:
        ``{key: request}`` in the file's order.

    Raises:
        InvalidRequestError: the file cannot be read, is malformed or empty, a key is
            empty or repeats, or a request is invalid; the message names the file and
            the line (JSONL) or entry (TOML).
    """
    file = Path(path)
    base = file.resolve().parent
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidRequestError(
            f"cannot read the batch file {file}: {exc.strerror or exc}"
        ) from None
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(
            f"{file}: not UTF-8 text (byte {exc.start}); save the batch file as UTF-8."
        ) from None
    if file.suffix.lower() == ".toml":
        entries = _toml_entries(file, text)
    else:
        entries = _jsonl_entries(file, text)
    if not entries:
        raise InvalidRequestError(f"{file}: no requests in the batch file.")
    out: dict[str, VideoRequest] = {}
    for key, fields, where in entries:
        if not key.strip():
            raise InvalidRequestError(f"{where}: the key is empty; give each request a key.")
        if key in out:
            raise InvalidRequestError(
                f"{where}: the key {key!r} is used twice; keys must be unique."
            )
        out[key] = _request_from(fields, where, base)
    return out
