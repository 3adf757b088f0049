"""Requests, task handles and results: frozen attrs classes.

The wire shapes (``model`` / ``input`` / ``parameters``) are built and parsed in
``_wire.py``; these classes are what a caller holds.
"""

from __future__ import annotations

import difflib
import enum
import functools
import inspect
import os
import posixpath
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, ParamSpec, TypeAlias, TypeVar

import attrs

from ._exceptions import InvalidRequestError

__all__ = [
    "TaskStatus",
    "VideoRequest",
    "Task",
    "TaskResult",
    "TaskSummary",
    "Usage",
    "Reference",
    "FINAL_STATUSES",
    "ModelName",
    "ShotType",
    "Size",
    "reference_kind",
]

P = ParamSpec("P")
R = TypeVar("R")

ModelName: TypeAlias = Literal["wan2.6-r2v", "wan2.6-r2v-flash"]
"""The model names this version knows (any other string is still accepted: a model the
vendor adds later works without a new release; the service judges it)."""
ShotType: TypeAlias = Literal["single", "multi"]
"""``"single"`` (one continuous shot, the service's default) or ``"multi"`` (several
shots); it wins over what the prompt says."""
Size: TypeAlias = Literal[
    "1280*720",
    "720*1280",
    "960*960",
    "1088*832",
    "832*1088",
    "1920*1080",
    "1080*1920",
    "1440*1440",
    "1632*1248",
    "1248*1632",
]
"""The sizes the service offers (``"W*H"``)."""


def closest(name: str, valid: Sequence[str]) -> str | None:
    """The valid name closest to a misspelt one, or ``None`` when none is close."""
    found = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return found[0] if found else None


def check_keywords(where: str, given: Sequence[str], valid: Sequence[str]) -> None:
    """Raise ``TypeError`` for a keyword not in ``valid``, naming the closest valid one."""
    for name in given:
        if name in valid:
            continue
        hint = closest(name, valid)
        advice = f"did you mean {hint!r}?" if hint else f"valid: {', '.join(sorted(valid))}."
        raise TypeError(f"{where}() got an unexpected keyword argument {name!r}; {advice}")


def keyword_names(fn: Callable[..., Any]) -> tuple[str, ...]:
    """The names ``fn`` accepts as keywords (``self`` aside)."""
    params = inspect.signature(fn).parameters.items()
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(n for n, p in params if p.kind in kinds and n != "self")


def keyword_hints(fn: Callable[P, R]) -> Callable[P, R]:
    """Make a misspelt keyword a ``TypeError`` naming the closest valid one.

    The signature seen by type checkers is unchanged (a misspelt keyword is a type
    error there already); at run time the message says what was meant.
    """
    valid = keyword_names(fn)
    where = fn.__qualname__

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            check_keywords(where, tuple(kwargs), valid)
            return await fn(*args, **kwargs)

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        check_keywords(where, tuple(kwargs), valid)
        return fn(*args, **kwargs)

    return wrapper


IMAGE_EXTENSIONS: Final = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".webp"})
VIDEO_EXTENSIONS: Final = frozenset({".mp4", ".mov"})
SIZES_720P: Final = ("1280*720", "720*1280", "960*960", "1088*832", "832*1088")
SIZES_1080P: Final = ("1920*1080", "1080*1920", "1440*1440", "1632*1248", "1248*1632")
SIZES: Final = SIZES_720P + SIZES_1080P
MAX_REFERENCES: Final = 5
MAX_IMAGES: Final = 5
MAX_VIDEOS: Final = 3
MIN_DURATION: Final = 2
MAX_DURATION: Final = 10
MAX_SEED: Final = 2_147_483_647
SHOT_TYPES: Final = ("single", "multi")
MAX_PROMPT: Final = 1500
"""Characters of ``input.prompt`` the service reads; it cuts the rest silently."""
STANDARD_MODEL: Final = "wan2.6-r2v"
FLASH_MODEL: Final = "wan2.6-r2v-flash"
# ``character1`` … as the service reads them: any case (the vendor's own sample writes
# "Character2"), not part of a longer word, next to any text (Chinese has no spaces).
_CHARACTER: Final = re.compile(r"(?<![a-z])character(\d+)(?!\d)", re.IGNORECASE)

Reference = str | os.PathLike[str]
"""A reference: an ``http(s)://`` or ``oss://`` URL, a ``file://`` URL, or a local path."""


class TaskStatus(enum.StrEnum):
    """A task's status as the service reports it."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    UNKNOWN = "UNKNOWN"
    UNRECOGNIZED = "UNRECOGNIZED"
    """A value this version of wanr2v does not know (``raw_status`` holds it); not final."""

    @property
    def is_final(self) -> bool:
        """SUCCEEDED, FAILED, CANCELED and UNKNOWN are final; polling stops there."""
        return self in FINAL_STATUSES

    @classmethod
    def parse(cls, value: object) -> TaskStatus:
        """Lenient: any unknown value becomes ``UNRECOGNIZED`` instead of an error."""
        if isinstance(value, str):
            try:
                return cls(value.strip().upper())
            except ValueError:
                pass
        return cls.UNRECOGNIZED


FINAL_STATUSES: Final = frozenset(
    {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED, TaskStatus.UNKNOWN}
)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # e.g. a lone surrogate
        return False
    return True


def reference_kind(ref: str) -> str | None:
    """``"image"``, ``"video"`` or ``None`` (unknown) judged from the extension of a URL/path."""
    try:
        path = urllib.parse.urlsplit(ref).path if "://" in ref else ref
    except ValueError:  # not a parsable URL
        return None
    ext = posixpath.splitext(path.lower())[1]
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return None


def _is_remote(ref: str) -> bool:
    return ref.startswith(("http://", "https://", "oss://"))


def _refs_converter(value: object) -> tuple[Reference, ...]:
    if isinstance(value, (str, os.PathLike)):
        return (value,)
    if isinstance(value, Sequence):
        return tuple(value)
    raise InvalidRequestError(
        f"reference_urls must be a list of URLs or paths, got {type(value).__name__}.",
        field="input.reference_urls",
    )


def _mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(value) if value else {}


@attrs.frozen(kw_only=True)
class VideoRequest:
    """One reference-to-video request, checked against the service's documented limits.

    Every parameter is a keyword; a misspelt one is a type error under ``mypy`` and a
    ``TypeError`` naming the closest valid one at run time.

    Args:
        model: ``"wan2.6-r2v-flash"`` or ``"wan2.6-r2v"`` (typed as `ModelName`;
            another name is accepted for models the vendor adds later).
        prompt: up to 1500 characters; name the subjects ``character1`` … ``character5``
            in the order of ``reference_urls``. A longer prompt is refused here: the
            service would accept it, cut it at 1500 characters without a word and bill a
            video that ignores its end, so an error (shorten it yourself, knowing what is
            dropped) costs less than a warning in a log nobody reads. Naming a
            ``characterN`` with no N-th reference is refused too: the service has no
            subject for it and makes (and bills) a video without it.
        reference_urls: 1–5 references, a list or tuple (at most 5 images, 3 videos):
            ``http(s)://`` or ``oss://`` URLs, ``file://`` URLs or local paths (uploaded
            for you). One string is taken as a list of one.
        negative_prompt: up to 500 characters.
        size: ``"W*H"``, e.g. ``"1280*720"``; the service's default is ``1920*1080``.
        duration: whole seconds, 2–10 (service default 5).
        shot_type: ``"single"`` or ``"multi"``.
        audio: flash only; ``False`` for a silent video (the service's default is sound).
            ``audio=False`` on ``wan2.6-r2v`` is refused: that model always makes sound
            and ignores the flag, so the silent video you asked for would be billed at
            the full price with sound (also when given through ``extra_parameters``).
        watermark: add the vendor's watermark.
        seed: 0–2147483647.
        prompt_extend: let the service rewrite the prompt (sent as
            ``parameters.prompt_extend`` only when set).
        extra_input: fields added to ``input`` as they are (for fields the service adds later).
        extra_parameters: fields added to ``parameters`` as they are.

    Raises:
        InvalidRequestError: naming the field and what to change.
    """

    model: ModelName | str
    prompt: str
    reference_urls: tuple[Reference, ...] = attrs.field(converter=_refs_converter)
    negative_prompt: str | None = None
    size: Size | str | None = None
    duration: int | None = None
    shot_type: ShotType | str | None = None
    audio: bool | None = None
    watermark: bool | None = None
    seed: int | None = None
    prompt_extend: bool | None = None
    extra_input: Mapping[str, Any] = attrs.field(factory=dict, converter=_mapping)
    extra_parameters: Mapping[str, Any] = attrs.field(factory=dict, converter=_mapping)

    def __attrs_post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every documented limit; raise `InvalidRequestError` on the first."""
        from ._config import MODELS

        def bad(field: str, msg: str) -> InvalidRequestError:
            return InvalidRequestError(f"{field}: {msg}", field=field)

        if not isinstance(self.model, str) or not self.model:
            raise bad("model", f"give a model name, one of {', '.join(MODELS)}.")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise bad("input.prompt", "the prompt is required and must be non-empty text.")
        if not _utf8(self.prompt):
            raise bad("input.prompt", "holds characters that are not valid Unicode text.")
        if self.negative_prompt is not None and not isinstance(self.negative_prompt, str):
            raise bad("input.negative_prompt", "must be text.")
        if self.negative_prompt is not None and not _utf8(self.negative_prompt):
            raise bad("input.negative_prompt", "holds characters that are not valid Unicode text.")
        refs = self.reference_urls
        if not 1 <= len(refs) <= MAX_REFERENCES:
            raise bad(
                "input.reference_urls",
                f"give 1 to {MAX_REFERENCES} references, got {len(refs)}.",
            )
        images = videos = 0
        for i, ref in enumerate(refs):
            if not isinstance(ref, (str, os.PathLike)):
                raise bad(
                    f"input.reference_urls[{i}]",
                    f"must be a URL or a path, got {type(ref).__name__}.",
                )
            text = os.fspath(ref)
            if not text.strip():
                raise bad(f"input.reference_urls[{i}]", "is empty.")
            if "://" in text and not (_is_remote(text) or text.startswith("file://")):
                raise bad(
                    f"input.reference_urls[{i}]",
                    f"{text!r}: use an http(s)://, oss:// or file:// URL or a local path.",
                )
            if not _utf8(text):
                raise bad(f"input.reference_urls[{i}]", "is not valid Unicode text.")
            if text.startswith(("http://", "https://", "oss://")):
                try:
                    parts = urllib.parse.urlsplit(text)
                except ValueError as exc:
                    raise bad(
                        f"input.reference_urls[{i}]", f"{text!r} is not a URL: {exc}."
                    ) from None
                if not parts.netloc:
                    raise bad(f"input.reference_urls[{i}]", f"{text!r} has no host.")
            kind = reference_kind(text)
            images += kind == "image"
            videos += kind == "video"
        if images > MAX_IMAGES:
            raise bad("input.reference_urls", f"at most {MAX_IMAGES} images, got {images}.")
        if videos > MAX_VIDEOS:
            raise bad("input.reference_urls", f"at most {MAX_VIDEOS} videos, got {videos}.")
        if self.size is not None and self.size not in SIZES:
            raise bad(
                "parameters.size",
                f"{self.size!r} is not offered; use one of {', '.join(SIZES)} ('W*H').",
            )
        if self.duration is not None and (
            isinstance(self.duration, bool)
            or not isinstance(self.duration, int)
            or not MIN_DURATION <= self.duration <= MAX_DURATION
        ):
            raise bad(
                "parameters.duration",
                f"whole seconds from {MIN_DURATION} to {MAX_DURATION}, got {self.duration!r}.",
            )
        if self.shot_type is not None and self.shot_type not in SHOT_TYPES:
            raise bad("parameters.shot_type", f"'single' or 'multi', got {self.shot_type!r}.")
        if self.audio is not None and not isinstance(self.audio, bool):
            raise bad("parameters.audio", f"True or False, got {self.audio!r}.")
        if self.watermark is not None and not isinstance(self.watermark, bool):
            raise bad("parameters.watermark", f"True or False, got {self.watermark!r}.")
        if self.prompt_extend is not None and not isinstance(self.prompt_extend, bool):
            raise bad("parameters.prompt_extend", f"True or False, got {self.prompt_extend!r}.")
        if self.seed is not None and (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not 0 <= self.seed <= MAX_SEED
        ):
            raise bad("parameters.seed", f"an integer from 0 to {MAX_SEED}, got {self.seed!r}.")
        self._check_costly(bad)

    def _check_costly(self, bad: Callable[[str, str], InvalidRequestError]) -> None:
        # Fields the service *accepts* but that would make a paid video other than the one
        # asked for: refused here, before anything is uploaded or sent.
        audio = self.extra_parameters.get("audio", self.audio)
        if audio is False and self.model == STANDARD_MODEL:
            raise bad(
                "parameters.audio",
                f"{STANDARD_MODEL} always makes a video with sound (billed at its full price): "
                "the service ignores audio=False there. For a silent video use "
                f"model={FLASH_MODEL!r}; otherwise leave audio unset.",
            )
        if len(self.prompt) > MAX_PROMPT:
            raise bad(
                "input.prompt",
                f"{len(self.prompt)} characters; the service reads the first {MAX_PROMPT:,} and "
                "silently drops the rest, so the video would ignore the end of your prompt. "
                f"Shorten it to {MAX_PROMPT:,} characters or fewer.",
            )
        n = len(self.reference_urls)
        for m in _CHARACTER.finditer(self.prompt):
            if not 1 <= int(m.group(1)) <= n:
                raise bad(
                    "input.prompt",
                    f"names {m.group(0)!r}, but there {'is' if n == 1 else 'are'} only {n} "
                    f"reference{'' if n == 1 else 's'} (character1 … character{n}, in the "
                    "order of reference_urls): add its reference or rename it.",
                )

    @property
    def local_references(self) -> tuple[int, ...]:
        """Indexes of references that are local files (paths or ``file://`` URLs)."""
        return tuple(i for i, r in enumerate(self.reference_urls) if not _is_remote(os.fspath(r)))

    @property
    def resolution(self) -> int:
        """720 or 1080, from ``size`` (the service default is 1080P)."""
        return 720 if self.size in SIZES_720P else 1080

    def rate_usd_per_second(self, resolution: int | None = None) -> float:
        """The vendor's list price of one billed second, in USD.

        Args:
            resolution: 720 or 1080 (default: this request's).
        """
        res = resolution if resolution is not None else self.resolution
        flash = self.model.endswith("flash")
        if not flash:
            return 0.10 if res == 720 else 0.15
        if self.audio is False:
            return 0.025 if res == 720 else 0.0375
        return 0.05 if res == 720 else 0.075

    def estimated_cost_usd(self) -> float:
        """Upper estimate at the vendor's list prices, in USD.

        Billed seconds = input video seconds (at most 5 s in all, images free) + output
        seconds. Videos referenced by URL are assumed to bill their full share.
        """
        out = self.duration or 5
        n = len(self.reference_urls)
        videos = sum(reference_kind(os.fspath(r)) == "video" for r in self.reference_urls)
        seconds = out + (5.0 / n) * videos
        return round(seconds * self.rate_usd_per_second(), 4)

    def billed_cost_usd(self, usage: Usage | None) -> float | None:
        """What a succeeded task of this request cost, from its ``usage`` (billed
        seconds at the list price of its resolution); ``None`` when usage says nothing."""
        if usage is None:
            return None
        seconds = usage.duration
        if seconds is None and usage.output_video_duration is not None:
            seconds = usage.output_video_duration + (usage.input_video_duration or 0)
        if seconds is None:
            return None
        resolution = usage.sr if usage.sr in (720, 1080) else None
        return round(float(seconds) * self.rate_usd_per_second(resolution), 4)


def _with_keyword_hints(cls: type[VideoRequest]) -> None:
    init = cls.__init__
    valid = tuple(a.name for a in attrs.fields(cls))

    @functools.wraps(init)
    def __init__(self: VideoRequest, *args: Any, **kwargs: Any) -> None:
        check_keywords("VideoRequest", tuple(kwargs), valid)
        init(self, *args, **kwargs)

    cls.__init__ = __init__  # type: ignore[method-assign]


_with_keyword_hints(VideoRequest)


@attrs.frozen(kw_only=True)
class Task:
    """A created task: what ``async_call`` returns.

    Attributes:
        task_id: the service's task id (valid 24 h, in the region that made it).
        status: the status in the create answer (normally PENDING).
        request_id: the create's request id.
        base_url: where the task lives; ``fetch``/``wait``/``cancel`` always go there.
        region: the region name of ``base_url`` (``"custom"`` for another host).
        model: the model it runs.
        submitted_at: UNIX time the create was sent.
        fingerprint: a hash (sha256) of the create body's model, input and
            parameters: the same request gives the same fingerprint.
    """

    task_id: str
    status: TaskStatus = TaskStatus.PENDING
    request_id: str | None = None
    base_url: str | None = None
    region: str | None = None
    model: str | None = None
    submitted_at: float | None = None
    fingerprint: str | None = None


@attrs.frozen(kw_only=True)
class Usage:
    """Billing figures of a succeeded task (the ``usage`` of its query answer).

    The service sends usage only on success. Numbers may come as int, float or string
    and are read leniently; a key this version does not know is kept in ``extra``.

    Attributes:
        duration: billed seconds: input video seconds (at most 5 s in all, images
            free) plus output seconds.
        size: the video's size, ``"W*H"`` (e.g. ``"1280*720"``).
        input_video_duration: billed seconds of the reference videos.
        output_video_duration: seconds of the generated video.
        video_count: videos made (1).
        sr: the resolution class, 720 or 1080 (the service's ``SR``); it sets the
            price of a second.
        extra: the other keys of ``usage``, as sent.
    """

    duration: float | None = None
    size: str | None = None
    input_video_duration: float | None = None
    output_video_duration: float | None = None
    video_count: int | None = None
    sr: int | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class TaskResult:
    """A task as ``fetch`` sees it: one answer of the service's task query.

    Times are timezone-aware (the service's strings carry no zone; UTC+8 is assumed).
    A field the answer did not carry is ``None``.

    Attributes:
        task_id: the task.
        status: the status; ``UNRECOGNIZED`` for a value this version does not know.
        raw_status: the status string exactly as sent.
        request_id: the query's request id (quote it to the vendor's support).
        submit_time: when the service accepted the create.
        scheduled_time: when the task started running (set from RUNNING on).
        end_time: when the task reached its final status.
        video_url: the video (an MP4), on SUCCEEDED only; the URL works for 24 h, then
            the video is deleted: download it in time (``download``).
        orig_prompt: the prompt as the service echoes it (possibly normalized:
            Unicode form, whitespace).
        code: the error code of a FAILED task (e.g. ``InvalidParameter``).
        message: the error message of a FAILED task.
        usage: the billing figures, on SUCCEEDED only.
        base_url: the base URL the task was queried at (its region's).
        extra: the other keys of the answer's ``output``, as sent.
    """

    task_id: str
    status: TaskStatus
    raw_status: str | None = None
    request_id: str | None = None
    submit_time: datetime | None = None
    scheduled_time: datetime | None = None
    end_time: datetime | None = None
    video_url: str | None = None
    orig_prompt: str | None = None
    code: str | None = None
    message: str | None = None
    usage: Usage | None = None
    base_url: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def is_final(self) -> bool:
        """The status is final: SUCCEEDED, FAILED, CANCELED or UNKNOWN."""
        return self.status.is_final

    @property
    def succeeded(self) -> bool:
        """The status is SUCCEEDED (``video_url`` and ``usage`` are set)."""
        return self.status is TaskStatus.SUCCEEDED


@attrs.frozen(kw_only=True)
class TaskSummary:
    """One row of ``list_tasks``: a task of the account as the task list shows it.

    The list shows no prompt, video or usage: ``fetch`` the task for those. Times come
    as epoch milliseconds and are given in UTC.

    Attributes:
        task_id: the task.
        status: the status (``UNRECOGNIZED`` for a value this version does not know).
        raw_status: the status string exactly as sent.
        model_name: the model the task runs.
        request_id: the request id of the task's create.
        gmt_create: when the task was created.
        start_time: when it started running.
        end_time: when it reached its final status.
        region: the region id the service reports (e.g. ``"cn-beijing"``).
        extra: the other keys of the row, as sent (e.g. ``api_key_id``).
    """

    task_id: str
    status: TaskStatus
    raw_status: str | None = None
    model_name: str | None = None
    request_id: str | None = None
    gmt_create: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    region: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict)


def local_path(ref: Reference) -> Path:
    """The filesystem path of a local reference (a path or a ``file://`` URL)."""
    text = os.fspath(ref)
    if text.startswith("file://"):
        parsed = urllib.parse.urlsplit(text)
        return Path(urllib.parse.unquote(parsed.path))
    return Path(text)
