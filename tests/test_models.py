"""Local validation of requests: every limit refused with the field's name."""

from __future__ import annotations

from pathlib import Path

import pytest

import wanr2v
from wanr2v import InvalidRequestError, VideoRequest

REF = "https://x.example.com/a.mp4"


def req(**kw: object) -> VideoRequest:
    base: dict[str, object] = {
        "model": "wan2.6-r2v-flash",
        "prompt": "character1 waves",
        "reference_urls": [REF],
    }
    base.update(kw)
    return VideoRequest(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"prompt": ""}, "input.prompt"),
        ({"reference_urls": []}, "input.reference_urls"),
        ({"reference_urls": [REF] * 6}, "input.reference_urls"),
        ({"reference_urls": [REF] * 4}, "input.reference_urls"),
        ({"reference_urls": ["ftp://x/a.mp4"]}, "input.reference_urls[0]"),
        ({"size": "1280x720"}, "parameters.size"),
        ({"duration": 11}, "parameters.duration"),
        ({"duration": 1}, "parameters.duration"),
        ({"duration": 5.5}, "parameters.duration"),
        ({"duration": True}, "parameters.duration"),
        ({"shot_type": "many"}, "parameters.shot_type"),
        ({"audio": "yes"}, "parameters.audio"),
        ({"seed": -1}, "parameters.seed"),
        ({"seed": 2**31}, "parameters.seed"),
        ({"model": ""}, "model"),
    ],
)
def test_each_limit_refused_naming_field(kw: dict[str, object], field: str) -> None:
    """Each out-of-bounds field raises InvalidRequestError naming it."""
    with pytest.raises(InvalidRequestError) as ei:
        req(**kw)
    assert ei.value.field == field
    assert field in str(ei.value)


def test_valid_limits_accepted(tmp_path: Path) -> None:
    """The documented extremes and local paths are accepted."""
    r = req(
        reference_urls=[REF, REF, REF, "https://x/b.png", tmp_path / "c.jpg"],
        size="1920*1080",
        duration=10,
        seed=2**31 - 1,
        shot_type="multi",
        audio=False,
    )
    assert r.local_references == (4,)
    assert req(duration=2).duration == 2


def test_cost_estimate() -> None:
    """The cost estimate follows the vendor's prices (10 s 1080P standard ≈ 1.5 USD + input)."""
    r = req(model="wan2.6-r2v", size="1920*1080", duration=10, reference_urls=["https://x/a.png"])
    assert r.estimated_cost_usd() == pytest.approx(1.5)
    silent = req(size="1280*720", duration=5, audio=False, reference_urls=["https://x/a.png"])
    assert silent.estimated_cost_usd() == pytest.approx(0.125)


def test_public_all_pinned() -> None:
    """The public surface is explicit, sorted within groups, and names resolve."""
    for name in wanr2v.__all__:
        assert hasattr(wanr2v, name), name
    assert wanr2v.RateLimitError.__module__ == "wanr2v"
    assert "AsyncWanClient" in wanr2v.__all__ and "VideoRequest" in wanr2v.__all__
