"""Parameters the service accepts silently but that would bill a video other than the one
asked for are refused locally, before anything is uploaded or sent, with a message that
says what to change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from wanr2v import AsyncWanClient, InvalidRequestError, VideoRequest
from wanr2v.testing import EmulatorConfig, serve

REFS2 = ["https://cdn.example.com/me.mp4", "https://cdn.example.com/dog.png"]


def req(**fields: object) -> VideoRequest:
    """A request with sensible defaults, overridden by ``fields``."""
    base: dict[str, object] = {
        "model": "wan2.6-r2v-flash",
        "prompt": "character1 walks character2",
        "reference_urls": REFS2,
    }
    base.update(fields)
    return VideoRequest(**base)  # type: ignore[arg-type]


# --- audio -------------------------------------------------------------------------------


def test_silent_video_on_the_standard_model_is_refused_naming_flash() -> None:
    """audio=False on wan2.6-r2v (which always makes sound) names the field and the fix."""
    with pytest.raises(InvalidRequestError) as info:
        req(model="wan2.6-r2v", audio=False)
    assert info.value.field == "parameters.audio"
    text = str(info.value)
    assert "wan2.6-r2v-flash" in text and "sound" in text


def test_silent_video_through_extra_parameters_is_refused_too() -> None:
    """The escape hatch for future fields does not bypass the audio rule."""
    with pytest.raises(InvalidRequestError) as info:
        req(model="wan2.6-r2v", extra_parameters={"audio": False})
    assert info.value.field == "parameters.audio"


@pytest.mark.parametrize(
    ("model", "audio"),
    [
        ("wan2.6-r2v-flash", False),
        ("wan2.6-r2v-flash", True),
        ("wan2.6-r2v", True),
        ("wan2.6-r2v", None),
    ],
)
def test_audio_settings_the_service_honours_are_accepted(model: str, audio: bool | None) -> None:
    """Silent flash, sound on either model and the default stay valid."""
    assert req(model=model, audio=audio).audio is audio


# --- prompt length -----------------------------------------------------------------------


def test_prompt_of_1500_characters_is_accepted() -> None:
    """The documented limit itself is fine (counted in characters, not bytes)."""
    prompt = "character1 " + "日" * (1500 - len("character1 "))
    assert len(req(prompt=prompt).prompt) == 1500


def test_prompt_over_1500_characters_is_refused_with_its_length() -> None:
    """One character over: an error that gives the length and says the rest would be cut."""
    prompt = "character1 " + "x" * (1501 - len("character1 "))
    with pytest.raises(InvalidRequestError) as info:
        req(prompt=prompt)
    assert info.value.field == "input.prompt"
    assert "1501" in str(info.value) and "1,500" in str(info.value)


# --- characterN --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt",
    [
        "character1 meets character3",
        "Character3 sits",  # any case, as in the vendor's sample
        "手持character3开口",  # Chinese has no spaces around the name
        "character0 waves",  # numbering starts at 1
        "character12 waves",  # not read as character1
    ],
)
def test_naming_a_character_without_its_reference_is_refused(prompt: str) -> None:
    """characterN beyond the number of references: a local error naming N and the count."""
    with pytest.raises(InvalidRequestError) as info:
        req(prompt=prompt)
    assert info.value.field == "input.prompt"
    assert "2 references" in str(info.value)


@pytest.mark.parametrize(
    "prompt",
    [
        "Character2 sits by character1",
        "characters walk; a character walks",
        "subcharacter9 is a word, not a name",
        "对Character2开口",
    ],
)
def test_names_within_the_references_and_other_words_are_accepted(prompt: str) -> None:
    """Names up to the count, and words that are not names, are fine."""
    assert req(prompt=prompt).prompt == prompt


# --- nothing is sent ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_refused_parameters_send_nothing(tmp_path: Path) -> None:
    """Through the client: each refusal happens before any request reaches the service."""
    with serve(EmulatorConfig(time_scale=600)) as emu:
        async with AsyncWanClient(api_key="sk-money-params", base_url=emu.base_url) as client:
            bad: list[dict[str, Any]] = [
                {"model": "wan2.6-r2v", "audio": False},
                {"prompt": "character1 " + "y" * 1600},
                {"prompt": "character1 hugs character3"},
            ]
            for fields in bad:
                with pytest.raises(InvalidRequestError):
                    await client.async_call(
                        **{
                            "model": "wan2.6-r2v-flash",
                            "prompt": "character1 walks character2",
                            "reference_urls": REFS2,
                            **fields,
                        }
                    )
        assert emu.stats().tasks_created == 0
        assert emu.stats().total_requests == 0
