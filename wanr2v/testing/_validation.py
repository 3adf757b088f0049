"""Checks of a create body, as the service makes them; pure functions, no state.

Reference media: the emulator holds the bytes of the files uploaded to it, and checks
each ``oss://`` reference the way the client checks a local file (``wanr2v._media``:
headers only, Pillow for images when installed). A file out of its limits does not
refuse the create: the task is accepted and ends FAILED with the vendor's
``InvalidFile.*`` code, as the service fails a task whose input it inspects
(``_rules``, "Reference media"). ``http(s)://`` references are never fetched, so their
content is not checked.
"""

from __future__ import annotations

import io
import logging
import math
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

import wanr2v.testing._rules as _rules
from wanr2v import _media

__all__ = [
    "Invalid",
    "Reference",
    "ValidRequest",
    "billed_usage",
    "fails_at_inspection",
    "media_failure",
    "reference_kind",
    "validate",
]

logger = logging.getLogger("wanr2v.testing")

_MEDIA_LIMITS = _media.MediaLimits(
    video_min_s=_rules.MEDIA_VIDEO_SECONDS[0],
    video_max_s=_rules.MEDIA_VIDEO_SECONDS[1],
    fps_min=_rules.MEDIA_VIDEO_FPS[0],
    fps_max=_rules.MEDIA_VIDEO_FPS[1],
    image_min_px=_rules.MEDIA_IMAGE_SIDE_PX[0],
    image_max_px=_rules.MEDIA_IMAGE_SIDE_PX[1],
    png_alpha=False,
)
_MEDIA_CODES = frozenset(
    code
    for code, _ in (
        _rules.MEDIA_DURATION,
        _rules.MEDIA_FPS,
        _rules.MEDIA_RESOLUTION,
        _rules.MEDIA_SIZE,
        _rules.MEDIA_ALPHA,
        _rules.MEDIA_UNREADABLE,
    )
)

_SIZE_RE = re.compile(r"^[1-9][0-9]{0,4}\*[1-9][0-9]{0,4}$")


@attrs.frozen
class Invalid(Exception):
    """A refused create: HTTP ``status``, vendor ``code`` and ``message``."""

    status: int
    code: str
    message: str


@attrs.frozen(kw_only=True)
class Reference:
    """One reference after resolution: its URL, kind, and whether it can be fetched."""

    url: str
    kind: str
    reachable: bool


@attrs.frozen(kw_only=True)
class ValidRequest:
    """A create body the service accepts, with the defaults applied."""

    model: str
    prompt: str
    negative_prompt: str | None
    references: tuple[Reference, ...]
    size: str
    duration: int
    shot_type: str
    audio: bool | None
    watermark: bool
    seed: int | None
    #: ``(code, message)`` the task will fail with, though the create is accepted.
    failure: tuple[str, str] | None

    @property
    def sr(self) -> int:
        """The resolution class, 720 or 1080 (1080 for a size the model cannot make)."""
        return 720 if self.size in _rules.SIZES_720P else 1080

    def as_request(self) -> dict[str, Any]:
        """Return the request as a plain dict, for a user's generation-time callable."""
        return {
            "model": self.model,
            "input": {
                "prompt": self.prompt,
                "negative_prompt": self.negative_prompt,
                "reference_urls": [r.url for r in self.references],
            },
            "parameters": {
                "size": self.size,
                "duration": self.duration,
                "shot_type": self.shot_type,
                "audio": self.audio,
                "watermark": self.watermark,
                "seed": self.seed,
            },
        }


def _bad(message: str, code: str = _rules.INVALID_PARAMETER) -> Invalid:
    return Invalid(400, code, message)


def reference_kind(path: str) -> str | None:
    """Return ``"image"`` / ``"video"`` from a path's extension; ``None`` if unsupported."""
    name = path.rsplit("/", 1)[-1]
    if "." not in name:
        return _rules.EXTENSIONLESS_KIND
    ext = name.rsplit(".", 1)[-1].lower()
    if ext in _rules.IMAGE_EXTENSIONS:
        return "image"
    if ext in _rules.VIDEO_EXTENSIONS:
        return "video"
    return None


#: Looks up an ``oss://`` key among the emulator's uploads: returns the stored
#: file name, or ``None`` when unknown, expired, of another region or model.
OssLookup = Callable[[str, str], str | None]
#: The bytes of an uploaded ``oss://`` key (already found by ``OssLookup``), or ``None``.
OssData = Callable[[str], bytes | None]


def media_failure(data: bytes, kind: str) -> tuple[str, str] | None:
    """The ``(code, message)`` a task fails with for this reference, or ``None`` if fine.

    Args:
        data: the file's bytes, as uploaded.
        kind: ``"image"`` or ``"video"``, from its name.
    """
    mb = _rules.MEDIA_IMAGE_MAX_MB if kind == "image" else _rules.MEDIA_VIDEO_MAX_MB
    if len(data) > mb * 1024 * 1024:
        code, message = _rules.MEDIA_SIZE
        return code, message.format(kind=kind, mb=mb)
    try:
        info = _media.probe(io.BytesIO(data), kind, len(data))
    except _media.UnreadableMediaError:
        return _rules.MEDIA_UNREADABLE
    if info is None:
        logger.debug("Emulator: %s content not checked (its probe is not installed).", kind)
        return None
    found = _media.violations(info, _MEDIA_LIMITS)
    if not found:
        return None
    templates = {
        "InvalidFile.Duration": (_rules.MEDIA_DURATION, _rules.MEDIA_VIDEO_SECONDS),
        "InvalidFile.FPS": (_rules.MEDIA_FPS, _rules.MEDIA_VIDEO_FPS),
        "InvalidFile.Resolution": (_rules.MEDIA_RESOLUTION, _rules.MEDIA_IMAGE_SIDE_PX),
    }
    first = found[0].code
    if first not in templates:
        return _rules.MEDIA_ALPHA
    (code, message), (lo, hi) = templates[first]
    return code, message.format(lo=lo, hi=hi)


def fails_at_inspection(failure: tuple[str, str] | None) -> bool:
    """Whether a task with this failure ends when its input is inspected (a few seconds
    after it starts), not after a full generation time: a reference that cannot be
    downloaded, or media out of its limits."""
    return failure is not None and (failure == _rules.DOWNLOAD_FAILED or failure[0] in _MEDIA_CODES)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(
    body: Mapping[str, Any],
    *,
    model: str,
    caps: _rules.RegionCapabilities,
    region: str,
    oss_resolve: bool,
    oss_lookup: OssLookup,
    oss_data: OssData | None = None,
) -> ValidRequest:
    """Check a create body (model already checked) and apply the defaults.

    Args:
        body: The parsed JSON body.
        model: Its model name, known to be served in the region.
        caps: What the region offers.
        region: The region's name (for messages).
        oss_resolve: Whether ``X-DashScope-OssResourceResolve: enable`` was sent.
        oss_lookup: Resolves ``oss://`` keys to stored file names.
        oss_data: Gives the bytes of an uploaded ``oss://`` key, so its media is checked
            (`media_failure`); ``None`` leaves uploads unchecked.

    Returns:
        The accepted request.

    Raises:
        Invalid: The service refuses the body; carries status, code and message.
    """
    failure: tuple[str, str] | None = None
    inp = body.get("input")
    if inp is None:
        raise _bad("Field required: input")
    if not isinstance(inp, dict):
        raise _bad("Input should be a valid dictionary: input")
    prompt = inp.get("prompt")
    if prompt is None or prompt == "":
        raise _bad("Field required: input.prompt")
    if not isinstance(prompt, str):
        raise _bad("Input should be a valid string: input.prompt")
    negative = inp.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        raise _bad("Input should be a valid string: input.negative_prompt")

    videos_only = False
    refs = inp.get("reference_urls")
    field = "input.reference_urls"
    if refs is None and inp.get("reference_video_urls") is not None:
        refs = inp.get("reference_video_urls")
        field = "input.reference_video_urls"
        videos_only = True
    if refs is None:
        raise _bad("Field required: input.reference_urls")
    if not isinstance(refs, list) or not all(isinstance(u, str) and u for u in refs):
        raise _bad(f"Input should be a valid list of URL strings: {field}")
    limit = _rules.MAX_VIDEO_REFERENCES if videos_only else _rules.MAX_REFERENCES
    if not 1 <= len(refs) <= limit:
        raise _bad(f"The number of {field} must be between 1 and {limit}, got {len(refs)}.")

    resolved: list[Reference] = []
    media: list[tuple[str, str]] = []
    for url in refs:
        try:
            parts = urlsplit(url)
        except ValueError:
            raise _bad(f"The reference url is invalid: {url}") from None
        scheme = parts.scheme.lower()
        if scheme == "oss":
            if not oss_resolve:
                raise _bad(_rules.OSS_WITHOUT_RESOLVE[1], _rules.OSS_WITHOUT_RESOLVE[0])
            name = oss_lookup(url[len("oss://") :], model)
            if name is None:
                code, message = _rules.OSS_NOT_FOUND
                raise _bad(message.format(url=url), code)
            kind = reference_kind(name)
            reachable = True
            data = oss_data(url[len("oss://") :]) if oss_data is not None else None
            if data is not None and kind is not None:
                found = media_failure(data, kind)
                if found is not None:
                    media.append(found)
        elif scheme in ("http", "https") and parts.hostname:
            kind = reference_kind(parts.path)
            host = parts.hostname.lower()
            reachable = not host.endswith(_rules.UNREACHABLE_HOST_SUFFIXES)
        else:
            raise _bad(f"The reference url is invalid: {url}")
        if kind is None:
            code, message = _rules.UNSUPPORTED_FORMAT
            raise _bad(message.format(url=url), code)
        if videos_only and kind != "video":
            raise _bad(f"{field} accepts videos only (mp4, mov), got: {url}")
        resolved.append(Reference(url=url, kind=kind, reachable=reachable))
    images = sum(r.kind == "image" for r in resolved)
    videos = len(resolved) - images
    if images > _rules.MAX_IMAGE_REFERENCES:
        raise _bad(f"At most {_rules.MAX_IMAGE_REFERENCES} image references are allowed.")
    if videos > _rules.MAX_VIDEO_REFERENCES:
        raise _bad(f"At most {_rules.MAX_VIDEO_REFERENCES} video references are allowed.")
    if images and not caps.image_references:
        raise _bad(
            f"Image references are not supported in region {region}: "
            "use video references (mp4, mov) only."
        )
    if not all(r.reachable for r in resolved):
        failure = _rules.DOWNLOAD_FAILED
    elif media:
        failure = media[0]

    params = body.get("parameters")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise _bad("Input should be a valid dictionary: parameters")

    size = params.get("size", _rules.DEFAULT_SIZE)
    if not isinstance(size, str) or not _SIZE_RE.match(size):
        raise _bad(f'The size must be a string "width*height", e.g. "1280*720", got {size!r}.')
    if size not in _rules.SIZES_720P and size not in _rules.SIZES_1080P:
        if not _rules.SIZE_MISMATCH_FAILS_TASK:
            raise _bad(_rules.SIZE_NOT_MATCH[1], _rules.SIZE_NOT_MATCH[0])
        failure = failure or _rules.SIZE_NOT_MATCH

    duration = params.get("duration", _rules.DEFAULT_DURATION_S)
    if not _is_int(duration) or not _rules.DURATION_MIN_S <= duration <= _rules.DURATION_MAX_S:
        raise _bad(
            f"The duration must be an integer between {_rules.DURATION_MIN_S} and "
            f"{_rules.DURATION_MAX_S}, got {duration!r}."
        )
    if caps.durations is not None and duration not in caps.durations:
        allowed = " or ".join(str(d) for d in sorted(caps.durations))
        raise _bad(
            f"The duration must be {allowed} for {model} in region {region}, got {duration}."
        )

    shot_type = params.get("shot_type", _rules.DEFAULT_SHOT_TYPE)
    if not isinstance(shot_type, str) or shot_type not in _rules.SHOT_TYPES:
        raise _bad(f"The shot_type must be 'single' or 'multi', got {shot_type!r}.")

    audio: bool | None = None
    if model in _rules.AUDIO_MODELS:
        audio = params.get("audio", _rules.DEFAULT_AUDIO)
        if not isinstance(audio, bool):
            raise _bad(f"The audio must be a boolean, got {audio!r}.")
    elif not _rules.AUDIO_IGNORED_ELSEWHERE and "audio" in params:
        raise _bad(f"The audio parameter is not supported by {model}.")

    watermark = params.get("watermark", _rules.DEFAULT_WATERMARK)
    if not isinstance(watermark, bool):
        raise _bad(f"The watermark must be a boolean, got {watermark!r}.")

    seed = params.get("seed")
    if seed is not None and (not _is_int(seed) or not _rules.SEED_MIN <= seed <= _rules.SEED_MAX):
        raise _bad(
            f"The seed must be an integer between {_rules.SEED_MIN} and {_rules.SEED_MAX}, "
            f"got {seed!r}."
        )

    return ValidRequest(
        model=model,
        prompt=prompt[: _rules.PROMPT_MAX_CHARS],
        negative_prompt=None if negative is None else negative[: _rules.NEGATIVE_PROMPT_MAX_CHARS],
        references=tuple(resolved),
        size=size,
        duration=duration,
        shot_type=shot_type,
        audio=audio,
        watermark=watermark,
        seed=seed,
        failure=failure,
    )


def _number(value: float) -> float | int:
    value = round(value, 2)
    return int(value) if value == int(value) else value


def billed_usage(req: ValidRequest) -> dict[str, Any]:
    """Return the ``usage`` of a successful task, per the vendor's billing rules."""
    n = len(req.references)
    steps = math.floor(_rules.INPUT_VIDEO_BUDGET_S / n / _rules.INPUT_SHARE_STEP_S + 1e-9)
    share = steps * _rules.INPUT_SHARE_STEP_S
    videos = sum(r.kind == "video" for r in req.references)
    input_s = round(share * videos, 2)
    output_s = req.duration
    return {
        "duration": float(round(input_s + output_s, 2)),
        "size": req.size,
        "input_video_duration": _number(input_s),
        "output_video_duration": output_s,
        "video_count": 1,
        "SR": req.sr,
    }
