"""The batch-file format (``wanr2v._batchfile.read_batch_file``): JSONL and TOML into
keyed requests, every problem an ``InvalidRequestError`` naming the file, the line or
entry, and what to fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wanr2v import InvalidRequestError, VideoRequest
from wanr2v._batchfile import read_batch_file

GOOD: dict[str, Any] = {
    "model": "wan2.6-r2v-flash",
    "prompt": "character1 waves",
    "reference_urls": ["https://example.com/a.png"],
}


def jsonl(path: Path, *lines: object) -> Path:
    """Write ``lines`` (dicts as JSON, strings as they are) one a line."""
    path.write_text(
        "".join((json.dumps(x) if isinstance(x, dict) else str(x)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return path


def refused(path: Path) -> InvalidRequestError:
    """The error reading ``path`` raises (it must raise one)."""
    with pytest.raises(InvalidRequestError) as info:
        read_batch_file(path)
    assert str(path) in str(info.value), "the message names the file"
    return info.value


def test_jsonl_keys_default_to_line_numbers_and_skip_blanks_and_comments(tmp_path: Path) -> None:
    """Keys are the given ``key`` or the line number; blank and ``#`` lines are skipped."""
    path = jsonl(tmp_path / "b.jsonl", "# a comment", GOOD, "", {**GOOD, "key": "x", "seed": 3})
    batch = read_batch_file(path)
    assert list(batch) == ["2", "x"]
    assert isinstance(batch["x"], VideoRequest) and batch["x"].seed == 3
    assert batch["2"].reference_urls == ("https://example.com/a.png",)


def test_local_references_are_made_absolute_against_the_files_folder(tmp_path: Path) -> None:
    """A relative path means the same wherever the program runs; a single string is a list."""
    (tmp_path / "sub").mkdir()
    path = jsonl(tmp_path / "sub" / "b.jsonl", {**GOOD, "reference_urls": "clips/me.mp4"})
    assert read_batch_file(path)["1"].reference_urls == (str(tmp_path / "sub/clips/me.mp4"),)


def test_bad_json_on_line_3_is_named(tmp_path: Path) -> None:
    """Bad JSON names the file and line 3, and says what a line must hold."""
    exc = refused(jsonl(tmp_path / "b.jsonl", GOOD, {**GOOD, "key": "two"}, "{oops"))
    assert f"{tmp_path / 'b.jsonl'}:3: not valid JSON" in exc.message
    assert "one JSON object" in exc.message


def test_a_line_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    """A JSON list or string on a line is refused, naming the line."""
    exc = refused(jsonl(tmp_path / "b.jsonl", GOOD, "[1, 2]"))
    assert ":2: each line must be a JSON object" in exc.message


def test_a_missing_prompt_is_named_with_its_line(tmp_path: Path) -> None:
    """A request without a prompt names the line and the missing field."""
    fields = {k: v for k, v in GOOD.items() if k != "prompt"}
    exc = refused(jsonl(tmp_path / "b.jsonl", GOOD, fields))
    assert ":2: missing field(s) prompt" in exc.message
    assert exc.field == "prompt"


def test_an_unknown_field_gets_a_close_match_hint(tmp_path: Path) -> None:
    """A misspelt field is named with the field it was probably meant to be."""
    exc = refused(jsonl(tmp_path / "b.jsonl", {**GOOD, "durration": 5}))
    assert ":1: unknown field(s) durration" in exc.message
    assert "did you mean 'duration'?" in exc.message


def test_an_unknown_field_far_from_any_lists_the_valid_ones(tmp_path: Path) -> None:
    """A field like no other gets no guess, only the list of valid fields."""
    exc = refused(jsonl(tmp_path / "b.jsonl", {**GOOD, "fps": 1}))
    assert "unknown field(s) fps;" in exc.message and "did you mean" not in exc.message
    assert "negative_prompt" in exc.message


def test_a_duplicate_key_is_refused(tmp_path: Path) -> None:
    """Two lines under one key: the second line is named."""
    exc = refused(jsonl(tmp_path / "b.jsonl", {**GOOD, "key": "a"}, {**GOOD, "key": "a"}))
    assert ":2: the key 'a' is used twice" in exc.message


def test_an_explicit_key_equal_to_a_line_number_collides(tmp_path: Path) -> None:
    """A key "2" on line 1 and an unkeyed line 2 would share a key: refused."""
    exc = refused(jsonl(tmp_path / "b.jsonl", {**GOOD, "key": 2}, GOOD))
    assert "the key '2' is used twice" in exc.message


def test_an_empty_key_is_refused(tmp_path: Path) -> None:
    """A blank key names its line."""
    exc = refused(jsonl(tmp_path / "b.jsonl", {**GOOD, "key": "  "}))
    assert ":1: the key is empty" in exc.message


@pytest.mark.parametrize("text", ["", "\n\n# only comments\n"])
def test_an_empty_file_is_refused(tmp_path: Path, text: str) -> None:
    """A file without requests is an error, not an empty batch."""
    path = tmp_path / "b.jsonl"
    path.write_text(text, encoding="utf-8")
    assert "no requests in the batch file" in refused(path).message


def test_a_missing_file_is_an_invalid_request_error(tmp_path: Path) -> None:
    """An unreadable file is refused with the same error type, naming the file."""
    exc = refused(tmp_path / "nope.jsonl")
    assert "cannot read the batch file" in exc.message


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are an InvalidRequestError (not a UnicodeDecodeError)."""
    path = tmp_path / "b.jsonl"
    path.write_bytes(b'{"prompt": "\xff"}\n')
    assert "not UTF-8" in refused(path).message


def test_an_invalid_value_is_named_with_its_line_and_field(tmp_path: Path) -> None:
    """The request's own check (duration 2-10) is prefixed with the line."""
    exc = refused(jsonl(tmp_path / "b.jsonl", GOOD, {**GOOD, "duration": 99}))
    assert f"{tmp_path / 'b.jsonl'}:2: " in exc.message
    assert exc.field is not None and "duration" in exc.field


def test_toml_defaults_fill_each_entry_and_keys_default_to_entry_numbers(tmp_path: Path) -> None:
    """[defaults] fill every [[requests]] table; an entry's own fields win."""
    path = tmp_path / "b.toml"
    path.write_text(
        '[defaults]\nmodel = "wan2.6-r2v"\nduration = 10\n\n'
        '[[requests]]\nprompt = "one"\nreference_urls = ["https://x.test/a.png"]\n\n'
        '[[requests]]\nkey = "two"\nprompt = "two"\nduration = 5\n'
        'reference_urls = ["https://x.test/b.png"]\n',
        encoding="utf-8",
    )
    batch = read_batch_file(path)
    assert list(batch) == ["1", "two"]
    assert batch["1"].duration == 10 and batch["two"].duration == 5
    assert batch["two"].model == "wan2.6-r2v"


def test_bad_toml_and_a_toml_without_requests_are_refused(tmp_path: Path) -> None:
    """Broken TOML, and TOML without [[requests]] tables, are named errors."""
    path = tmp_path / "b.toml"
    path.write_text("[[requests]\nprompt = 1\n", encoding="utf-8")
    assert "not valid TOML" in refused(path).message
    path.write_text('[defaults]\nmodel = "wan2.6-r2v"\n', encoding="utf-8")
    assert "expected [[requests]] tables" in refused(path).message


def test_a_toml_entry_missing_a_field_is_named_by_number(tmp_path: Path) -> None:
    """TOML entries are named ``requests #N``."""
    path = tmp_path / "b.toml"
    path.write_text(
        '[[requests]]\nmodel = "wan2.6-r2v"\nprompt = "a"\nreference_urls = ["https://x/a.png"]\n'
        '[[requests]]\nmodel = "wan2.6-r2v"\nreference_urls = ["https://x/a.png"]\n',
        encoding="utf-8",
    )
    assert "requests #2: missing field(s) prompt" in refused(path).message
