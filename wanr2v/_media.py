"""Reference media checked against the service's documented limits, from headers only.

The service downloads each reference when its task starts and fails the task (``FAILED``,
``InvalidFile.*``) when one breaks a limit, minutes after a create that was answered 200.
A local file is checked here first, so the caller learns at once and nothing is sent
(protocol.md, "Create a task"; the vendor's code in brackets):

- videos (``.mp4``, ``.mov``): an ISO-BMFF / QuickTime file with a video track, lasting
  1–30 s [``InvalidFile.Duration``] at 15–60 frames per second [``InvalidFile.FPS``];
- images: JPEG, PNG, BMP or WebP content [``InvalidFile.Openerror``], a PNG without an
  alpha channel or transparency [``InvalidFile.Format``], 240–5000 px on each side
  [``InvalidFile.Resolution``].

File sizes (10 MB images, 100 MB videos) and extensions are checked before, by
``_upload``; the emulator (``wanr2v.testing``) applies the same probes to what it is sent.

How, and what it costs:

- Videos are read by a small parser of the ISO-BMFF boxes written here: it seeks from
  box header to box header and reads only the ``moov`` box (the movie header, a few
  kilobytes for a short clip; at most `MAX_MOOV_BYTES`), never the media data.
  It needs nothing outside the standard library, so video checks always run.
- Images are opened with Pillow, which reads the header only (for WebP it reads the file,
  at most 10 MB by then). Pillow is the optional extra ``wanr2v[media]``; without it,
  image checks are skipped with a debug log on the ``wanr2v`` logger.
- `check_local_file` probes in a worker thread: the event loop never blocks.

Limits of the method, stated honestly:

- The duration is the video track's (``mdhd``, else the sum of ``stts``), not the
  container's: an audio track a little longer than the picture does not count. The
  frame rate is the average (samples / duration), which is the rate of a constant-rate
  file. Limits are inclusive and compared exactly (as fractions).
- A fragmented MP4 (``moof`` boxes, as some cameras and streamers write) keeps its
  samples outside ``moov``: its duration is taken from ``mehd`` / ``mvhd`` when present,
  and its frame rate is not checked (debug log).
- The 1 s lower bound is the vendor's current page; older pages said 2 s.
- Only local files are checked. ``http(s)://`` and ``oss://`` references are not fetched
  by the client: the service checks them, and a bad one fails its task after the create.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import IO, Final

import anyio
import anyio.to_thread
import attrs

from ._exceptions import InvalidRequestError

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_MOOV_BYTES",
    "MediaInfo",
    "MediaLimits",
    "UnreadableMediaError",
    "Violation",
    "check_local_file",
    "pillow_available",
    "probe",
    "probe_image",
    "probe_video",
    "violations",
]

logger = logging.getLogger("wanr2v")

MAX_MOOV_BYTES: Final = 64 * 1024 * 1024
"""A ``moov`` box larger than this is refused rather than read (a 30 s clip has a few
hundred kilobytes at most; hours of video would be needed to come near)."""

_ALPHA_MODES: Final = frozenset({"RGBA", "LA", "PA", "RGBa", "La", "I;16A"})
_PIL_FORMATS: Final = ("JPEG", "PNG", "BMP", "WEBP")
_JPEG_FORMATS: Final = frozenset({"JPEG", "MPO"})  # MPO: a phone's multi-picture JPEG
_FIRST_BOXES: Final = frozenset(
    {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"junk"}
)
_UNKNOWN_32: Final = 0xFFFFFFFF
_UNKNOWN_64: Final = 0xFFFFFFFFFFFFFFFF


@attrs.frozen(kw_only=True)
class MediaLimits:
    """The documented limits of reference media (protocol.md); all bounds inclusive.

    Attributes:
        video_min_s: shortest video, seconds (current vendor page; older pages: 2).
        video_max_s: longest video, seconds.
        fps_min: lowest average frame rate.
        fps_max: highest average frame rate.
        image_min_px: shortest image side, pixels.
        image_max_px: longest image side, pixels.
        png_alpha: whether a PNG may carry an alpha channel or transparency.
    """

    video_min_s: int = 1
    video_max_s: int = 30
    fps_min: int = 15
    fps_max: int = 60
    image_min_px: int = 240
    image_max_px: int = 5000
    png_alpha: bool = False


DEFAULT_LIMITS: Final = MediaLimits()


@attrs.frozen(kw_only=True)
class MediaInfo:
    """What the headers of one file say.

    Attributes:
        kind: ``"image"`` or ``"video"``.
        format: ``"MP4"``, ``"MOV"``, or Pillow's name (``"JPEG"``, ``"PNG"``, ``"BMP"``,
            ``"WEBP"``, ``"MPO"``); ``None`` when the image was too large to open.
        width: picture width in pixels (a video's display width), if known.
        height: picture height in pixels, if known.
        duration: seconds, exact, if known (videos).
        frame_rate: average frames per second, exact, if known (videos).
        frames: number of video samples, if known.
        codec: the video sample entry (``"avc1"``, ``"hvc1"``, …), if known.
        fragmented: the video keeps its samples in ``moof`` boxes.
        mode: Pillow's pixel mode (images), e.g. ``"RGB"``, ``"RGBA"``.
        alpha: the image has an alpha channel or a transparent colour.
        too_many_pixels: Pillow refused to open the image as a decompression bomb
            (over 89 million pixels): it is far beyond the per-side limit.
    """

    kind: str
    format: str | None
    width: int | None = None
    height: int | None = None
    duration: Fraction | None = None
    frame_rate: Fraction | None = None
    frames: int | None = None
    codec: str | None = None
    fragmented: bool = False
    mode: str | None = None
    alpha: bool = False
    too_many_pixels: bool = False


class UnreadableMediaError(Exception):
    """The file is not media of its declared kind (or is damaged): ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen(kw_only=True)
class Violation:
    """One limit a file breaks.

    Attributes:
        code: the vendor's error code for it, e.g. ``"InvalidFile.FPS"``.
        problem: what was measured against which limit, e.g. ``"runs at 12 fps;
            videos must run at 15–60 fps"``.
        fix: what to do about it.
    """

    code: str
    problem: str
    fix: str


def _fmt(value: Fraction) -> str:
    """A measured value for a message: up to three decimals, no trailing zeros."""
    text = f"{float(value):.3f}".rstrip("0").rstrip(".")
    return text or "0"


# --- videos: ISO-BMFF / QuickTime ----------------------------------------------------------


def _children(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """``(type, payload_start, box_end)`` of each box in ``data[start:end]``."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                raise UnreadableMediaError(f"is damaged: box {_name(kind)} is cut short.")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise UnreadableMediaError(
                f"is damaged: box {_name(kind)} claims {size} bytes, more than its parent holds."
            )
        yield kind, pos + header, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for k, s, e in _children(data, start, end):
        if k == kind:
            return s, e
    return None


def _name(kind: bytes) -> str:
    return repr(kind.decode("latin-1"))


def _need(start: int, end: int, length: int, kind: bytes) -> None:
    if end - start < length:
        raise UnreadableMediaError(f"is damaged: box {_name(kind)} is too short.")


def _header_times(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int | None]:
    """``(timescale, duration)`` of an ``mvhd`` or ``mdhd`` box (``None``: unknown)."""
    _need(start, end, 4, kind)
    if data[start] == 1:
        _need(start, end, 32, kind)
        timescale, duration = struct.unpack_from(">IQ", data, start + 20)
        unknown = _UNKNOWN_64
    else:
        _need(start, end, 20, kind)
        timescale, duration = struct.unpack_from(">II", data, start + 12)
        unknown = _UNKNOWN_32
    if timescale == 0:
        raise UnreadableMediaError(f"is damaged: box {_name(kind)} has a timescale of 0.")
    return timescale, (None if duration in (0, unknown) else duration)


@attrs.frozen
class _Track:
    handler: bytes
    timescale: int | None
    duration: int | None
    samples: int
    ticks: int
    width: int
    height: int
    codec: str | None


def _track(data: bytes, start: int, end: int) -> _Track:
    width = height = 0
    tkhd = _child(data, start, end, b"tkhd")
    if tkhd is not None:
        _need(*tkhd, 84, b"tkhd")
        width, height = struct.unpack_from(">II", data, tkhd[1] - 8)
        width, height = width >> 16, height >> 16
    handler = b""
    timescale: int | None = None
    duration: int | None = None
    samples = ticks = 0
    codec: str | None = None
    mdia = _child(data, start, end, b"mdia")
    if mdia is not None:
        mdhd = _child(data, *mdia, b"mdhd")
        if mdhd is not None:
            timescale, duration = _header_times(data, *mdhd, b"mdhd")
        hdlr = _child(data, *mdia, b"hdlr")
        if hdlr is not None:
            _need(*hdlr, 12, b"hdlr")
            handler = data[hdlr[0] + 8 : hdlr[0] + 12]
        minf = _child(data, *mdia, b"minf")
        stbl = _child(data, *minf, b"stbl") if minf is not None else None
        if stbl is not None:
            stts = _child(data, *stbl, b"stts")
            if stts is not None:
                _need(*stts, 8, b"stts")
                (count,) = struct.unpack_from(">I", data, stts[0] + 4)
                _need(*stts, 8 + 8 * count, b"stts")
                entries = struct.unpack_from(f">{2 * count}I", data, stts[0] + 8)
                samples = sum(entries[0::2])
                ticks = sum(n * d for n, d in zip(entries[0::2], entries[1::2], strict=True))
            stsd = _child(data, *stbl, b"stsd")
            if stsd is not None and stsd[1] - stsd[0] >= 16:
                codec = data[stsd[0] + 12 : stsd[0] + 16].decode("latin-1")
                if (width == 0 or height == 0) and stsd[1] - stsd[0] >= 44:
                    width, height = struct.unpack_from(">HH", data, stsd[0] + 8 + 32)
    return _Track(handler, timescale, duration, samples, ticks, width, height, codec)


def _moov_from_cmov(data: bytes, start: int, end: int) -> bytes:
    """The ``moov`` box inside a QuickTime compressed movie header (``cmov``)."""
    dcom = _child(data, start, end, b"dcom")
    cmvd = _child(data, start, end, b"cmvd")
    if dcom is None or cmvd is None or data[dcom[0] : dcom[0] + 4] != b"zlib":
        raise UnreadableMediaError("has a compressed movie header in an unknown compression.")
    _need(*cmvd, 4, b"cmvd")
    (size,) = struct.unpack_from(">I", data, cmvd[0])
    if size > MAX_MOOV_BYTES:
        raise UnreadableMediaError("has a movie header too large to check.")
    try:
        inner = zlib.decompressobj().decompress(data[cmvd[0] + 4 : cmvd[1]], size)
    except zlib.error:
        raise UnreadableMediaError(
            "is damaged: its compressed movie header does not inflate."
        ) from None
    box = _child(inner, 0, len(inner), b"moov")
    if box is None:
        raise UnreadableMediaError("is damaged: its compressed movie header holds no 'moov'.")
    return inner[box[0] : box[1]]


def _read_moov(fh: IO[bytes], size: int) -> tuple[bytes, str]:
    """The payload of the top-level ``moov`` box and the container's name (MP4 or MOV)."""
    pos = 0
    brand: bytes | None = None
    while pos + 8 <= size:
        fh.seek(pos)
        head = fh.read(16)
        if len(head) < 8:
            break
        box_size, kind = struct.unpack_from(">I4s", head)
        header = 8
        if box_size == 1 and len(head) == 16:
            (box_size,) = struct.unpack_from(">Q", head, 8)
            header = 16
        elif box_size == 0:
            box_size = size - pos
        if pos == 0 and kind not in _FIRST_BOXES:
            raise UnreadableMediaError(
                "is not an MP4/MOV video: it does not start with an ISO-BMFF box "
                "(is it another kind of file, renamed?)."
            )
        if box_size < header:
            raise UnreadableMediaError(f"is damaged: box {_name(kind)} has a bad size.")
        if kind == b"ftyp" and brand is None:
            brand = head[header : header + 4]
        if kind == b"moov":
            if box_size - header > MAX_MOOV_BYTES:
                raise UnreadableMediaError("has a movie header ('moov') too large to check.")
            fh.seek(pos + header)
            moov = fh.read(box_size - header)
            if len(moov) != box_size - header:
                raise UnreadableMediaError("is cut short: its movie header ('moov') is incomplete.")
            container = "MOV" if brand in (None, b"qt  ") else "MP4"
            return moov, container
        pos += box_size
    raise UnreadableMediaError(
        "has no movie header ('moov' box): it is not a complete MP4/MOV file "
        "(a download cut short, or a recording not finished?)."
    )


def probe_video(fh: IO[bytes], size: int | None = None) -> MediaInfo:
    """Read an MP4 / MOV file's duration, frame rate and size from its boxes.

    Args:
        fh: the file, open for binary reading and seekable.
        size: its length in bytes (found by seeking when ``None``).

    Raises:
        UnreadableMediaError: not an ISO-BMFF / QuickTime file, damaged, or without a
            video track.
    """
    if size is None:
        size = fh.seek(0, os.SEEK_END)
    moov, container = _read_moov(fh, size)
    end = len(moov)
    cmov = _child(moov, 0, end, b"cmov")
    if cmov is not None:
        moov = _moov_from_cmov(moov, *cmov)
        end = len(moov)
    movie_scale: int | None = None
    movie_duration: int | None = None
    fragment_duration: int | None = None
    fragmented = False
    video: _Track | None = None
    for kind, start, stop in _children(moov, 0, end):
        if kind == b"mvhd":
            movie_scale, movie_duration = _header_times(moov, start, stop, kind)
        elif kind == b"mvex":
            fragmented = True
            mehd = _child(moov, start, stop, b"mehd")
            if mehd is not None:
                _need(*mehd, 8, b"mehd")
                if moov[mehd[0]] == 1:
                    _need(*mehd, 12, b"mehd")
                    (fragment_duration,) = struct.unpack_from(">Q", moov, mehd[0] + 4)
                else:
                    (fragment_duration,) = struct.unpack_from(">I", moov, mehd[0] + 4)
        elif kind == b"trak" and video is None:
            track = _track(moov, start, stop)
            if track.handler == b"vide":
                video = track
    if video is None:
        raise UnreadableMediaError("has no video track (is it an audio-only file?).")

    duration: Fraction | None = None
    frame_rate: Fraction | None = None
    if video.timescale is not None:
        if video.duration is not None:
            duration = Fraction(video.duration, video.timescale)
        elif video.ticks:
            duration = Fraction(video.ticks, video.timescale)
        if video.samples and video.ticks:
            frame_rate = Fraction(video.samples * video.timescale, video.ticks)
    if duration is None and movie_scale is not None:
        whole = fragment_duration or movie_duration
        if whole:
            duration = Fraction(whole, movie_scale)
    return MediaInfo(
        kind="video",
        format=container,
        width=video.width or None,
        height=video.height or None,
        duration=duration,
        frame_rate=frame_rate,
        frames=video.samples or None,
        codec=video.codec,
        fragmented=fragmented,
    )


# --- images: Pillow ----------------------------------------------------------------------


def pillow_available() -> bool:
    """Whether Pillow (the ``wanr2v[media]`` extra) can be imported."""
    try:
        import PIL.Image  # noqa: F401
    except ImportError:
        return False
    return True


def probe_image(fh: IO[bytes]) -> MediaInfo | None:
    """Read an image's format, size and alpha from its header, with Pillow.

    Returns:
        What the header says, or ``None`` when Pillow is not installed (or cannot read
        WebP at all): the caller then skips the checks.

    Raises:
        UnreadableMediaError: the content is not a JPEG, PNG, BMP or WebP image.
    """
    try:
        from PIL import Image, UnidentifiedImageError, features
    except ImportError:
        logger.debug("Image checks skipped: Pillow is not installed (pip install 'wanr2v[media]').")
        return None
    start = fh.tell()
    head = fh.read(12)
    fh.seek(start)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and not features.check_module("webp"):
        logger.debug("Image checks skipped: this Pillow cannot read WebP.")
        return None
    try:
        with Image.open(fh, formats=_PIL_FORMATS) as im:
            fmt = im.format
            width, height = im.size
            mode = im.mode
            alpha = mode in _ALPHA_MODES or "transparency" in im.info
    except UnidentifiedImageError:
        raise UnreadableMediaError(
            "is not a JPEG, PNG, BMP or WebP image (its content was not recognised: is it "
            "another kind of file, renamed?)."
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Raised above ~89 million pixels (the warning, when warnings are errors): far
        # beyond 5000 px per side, so the size is not needed to refuse it.
        return MediaInfo(kind="image", format=None, too_many_pixels=True)
    except (OSError, SyntaxError, ValueError, struct.error) as exc:
        raise UnreadableMediaError(f"is a damaged image ({exc}).") from None
    return MediaInfo(kind="image", format=fmt, width=width, height=height, mode=mode, alpha=alpha)


def probe(fh: IO[bytes], kind: str, size: int | None = None) -> MediaInfo | None:
    """Probe ``fh`` as its declared ``kind`` (``"image"`` or ``"video"``).

    Returns:
        What its headers say; ``None`` when the probe for this kind is not installed.

    Raises:
        UnreadableMediaError: the file is not media of that kind, or is damaged.
    """
    if kind == "video":
        return probe_video(fh, size)
    if kind == "image":
        return probe_image(fh)
    raise ValueError(f"kind must be 'image' or 'video', got {kind!r}")


# --- limits ------------------------------------------------------------------------------


def violations(info: MediaInfo, limits: MediaLimits = DEFAULT_LIMITS) -> list[Violation]:
    """Every limit ``info`` breaks, in a stable order (empty when it is fine).

    A value the headers did not give (``None``) is not checked; the omission is logged
    at debug level.
    """
    out: list[Violation] = []
    if info.kind == "video":
        lo, hi = limits.video_min_s, limits.video_max_s
        if info.duration is None:
            logger.debug("Video duration not checked: the file's headers do not give it.")
        elif not lo <= info.duration <= hi:
            out.append(
                Violation(
                    code="InvalidFile.Duration",
                    problem=f"lasts {_fmt(info.duration)} s; videos must last {lo}–{hi} s",
                    fix="trim it" if info.duration > hi else "use a longer clip",
                )
            )
        lo, hi = limits.fps_min, limits.fps_max
        if info.frame_rate is None:
            logger.debug("Video frame rate not checked: the file's headers do not give it.")
        elif not lo <= info.frame_rate <= hi:
            out.append(
                Violation(
                    code="InvalidFile.FPS",
                    problem=f"runs at {_fmt(info.frame_rate)} fps; videos must run at {lo}–{hi} fps",
                    fix="re-encode it at a rate in range, e.g. `ffmpeg -i in.mp4 -r 30 out.mp4`",
                )
            )
        return out
    lo, hi = limits.image_min_px, limits.image_max_px
    if info.too_many_pixels:
        out.append(
            Violation(
                code="InvalidFile.Resolution",
                problem=f"has over 89 million pixels; images must be {lo}–{hi} px on each side",
                fix="resize it",
            )
        )
        return out
    if info.format == "PNG" and info.alpha and not limits.png_alpha:
        out.append(
            Violation(
                code="InvalidFile.Format",
                problem=f"is a PNG with an alpha channel or transparency (mode {info.mode}); "
                "PNG references must have none",
                fix="save it without transparency (as RGB), or as JPEG",
            )
        )
    w, h = info.width, info.height
    if w is not None and h is not None and not (lo <= w <= hi and lo <= h <= hi):
        out.append(
            Violation(
                code="InvalidFile.Resolution",
                problem=f"is {w}×{h} px; images must be {lo}–{hi} px on each side",
                fix="resize it" if max(w, h) > hi else "use a larger image",
            )
        )
    return out


# --- local files -------------------------------------------------------------------------


def _probe_path(path: Path, kind: str) -> MediaInfo | None:
    with path.open("rb") as fh:
        return probe(fh, kind, os.fstat(fh.fileno()).st_size)


async def check_local_file(
    path: Path, *, index: int, kind: str, limits: MediaLimits = DEFAULT_LIMITS
) -> MediaInfo | None:
    """Check one local reference before it is uploaded (headers only, in a worker thread).

    Args:
        path: the file.
        index: its position in ``reference_urls`` (``characterN`` is ``index + 1``).
        kind: ``"image"`` or ``"video"``, from its extension.
        limits: the limits to hold it to.

    Returns:
        What its headers say, or ``None`` when the probe for its kind is not installed.

    Raises:
        InvalidRequestError: the file breaks a limit, is not media of its kind, or cannot
            be read; the message names the field, ``characterN``, the file, the limit and
            the measured value, and says what to do.
    """
    field = f"input.reference_urls[{index}]"
    who = f"{field} (character{index + 1}): local file {str(path)!r}"
    try:
        info = await anyio.to_thread.run_sync(_probe_path, path, kind)
    except UnreadableMediaError as exc:
        raise InvalidRequestError(f"{who} {exc.reason}", field=field) from None
    except OSError as exc:
        raise InvalidRequestError(
            f"{who} cannot be read ({exc.strerror or exc}): check its permissions.", field=field
        ) from None
    if info is None:
        return None
    found = violations(info, limits)
    if found:
        problems = "; and it ".join(v.problem for v in found)
        fixes = "; ".join(f"{v.fix}" for v in found)
        codes = ", ".join(v.code for v in found)
        raise InvalidRequestError(
            f"{who} {problems} (the service would fail the task with {codes}): {fixes}.",
            field=field,
        )
    return info
