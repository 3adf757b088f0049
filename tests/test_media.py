"""Reference media is checked from its headers against the documented limits, before any
upload or create: videos 1–30 s at 15–60 fps, images 240–5000 px per side and PNG without
alpha. Files here are real: images written by Pillow, videos by the emulator's MP4 writer."""

from __future__ import annotations

import io
import logging
import struct
import sys
import threading
import zlib
from fractions import Fraction
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image

from wanr2v import InvalidRequestError, _media
from wanr2v._media import (
    MediaInfo,
    UnreadableMediaError,
    check_local_file,
    probe_image,
    probe_video,
    violations,
)
from wanr2v.testing import Emulator, EmulatorConfig, ManualClock, Quotas, make_mp4
from wanr2v.testing._client import client_for


def codes(info: MediaInfo) -> list[str]:
    return [v.code for v in violations(info)]


def video(data: bytes) -> MediaInfo:
    return probe_video(io.BytesIO(data))


def image(img: Image.Image, fmt: str = "PNG", **save: Any) -> MediaInfo:
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    buf.seek(0)
    info = probe_image(buf)
    assert info is not None
    return info


# --- hand-built ISO-BMFF boxes, for layouts the writer does not make -------------------------


def box(kind: bytes, *parts: bytes) -> bytes:
    payload = b"".join(parts)
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def full(kind: bytes, version: int, *parts: bytes) -> bytes:
    return box(kind, struct.pack(">I", version << 24), *parts)


def times(version: int, timescale: int, duration: int) -> bytes:
    """The creation/modification/timescale/duration run of an mvhd or mdhd box."""
    if version == 1:
        return struct.pack(">QQIQ", 0, 0, timescale, duration)
    return struct.pack(">IIII", 0, 0, timescale, duration)


def movie(
    *,
    version: int = 0,
    timescale: int = 600,
    duration: int = 600 * 4,
    stts: list[tuple[int, int]] | None = None,
    handler: bytes = b"vide",
    mvex: bytes = b"",
    movie_duration: int = 4000,
) -> bytes:
    """A ``moov`` box with one track (no media data is needed to probe it)."""
    entries = stts if stts is not None else [(96, 25)]  # 96 frames at 24 fps in 1/600 s
    tkhd = full(b"tkhd", 0, bytes(76), struct.pack(">II", 640 << 16, 360 << 16))
    stbl = box(
        b"stbl",
        full(
            b"stts",
            0,
            struct.pack(">I", len(entries)),
            *(struct.pack(">II", n, d) for n, d in entries),
        ),
    )
    mdia = box(
        b"mdia",
        full(b"mdhd", version, times(version, timescale, duration), bytes(4)),
        full(b"hdlr", 0, bytes(4), handler, bytes(12), b"\x00"),
        box(b"minf", stbl),
    )
    mvhd = full(b"mvhd", version, times(version, 1000, movie_duration), bytes(80))
    return box(b"moov", mvhd, mvex, box(b"trak", tkhd, mdia))


FTYP = box(b"ftyp", b"isom", bytes(4), b"isom")


# --- videos ------------------------------------------------------------------------------


def test_video_probe_reads_duration_frame_rate_and_size() -> None:
    """An MP4's duration, average frame rate, picture size and codec come from its boxes."""
    info = video(make_mp4(7, fps=25, width=64, height=48))
    assert info.format == "MP4" and info.codec == "avc1"
    assert (info.duration, info.frame_rate, info.frames) == (Fraction(7), Fraction(25), 175)
    assert (info.width, info.height) == (64, 48)
    assert codes(info) == []


def test_quicktime_brand_is_reported_as_mov() -> None:
    """A file with the QuickTime brand is probed the same way and named MOV."""
    info = video(make_mp4(2, fps=29.97, quicktime=True))
    assert info.format == "MOV"
    assert info.frame_rate == Fraction(29970, 1000)
    assert codes(info) == []


@pytest.mark.parametrize(
    ("seconds", "fps", "ok"),
    [
        (1.0, 30, True),  # the shortest video the current page allows
        (29 / 30, 30, False),  # one frame short of 1 s
        (30.0, 30, True),  # the longest
        (30 + 1 / 15, 15, False),  # one frame past 30 s
    ],
)
def test_video_duration_limits_are_inclusive(seconds: float, fps: int, ok: bool) -> None:
    """Videos last 1–30 s, bounds included, measured exactly (not rounded)."""
    info = video(make_mp4(seconds, fps=fps))
    assert codes(info) == ([] if ok else ["InvalidFile.Duration"])


@pytest.mark.parametrize(("fps", "ok"), [(15, True), (14.999, False), (60, True), (60.001, False)])
def test_video_frame_rate_limits_are_inclusive(fps: float, ok: bool) -> None:
    """Videos run at 15–60 fps on average, bounds included."""
    assert codes(video(make_mp4(2, fps=fps))) == ([] if ok else ["InvalidFile.FPS"])


def test_video_breaking_two_limits_reports_both() -> None:
    """A video too long and too slow gets both codes, in a stable order."""
    assert codes(video(make_mp4(31, fps=12))) == ["InvalidFile.Duration", "InvalidFile.FPS"]


def test_version_1_headers_and_mixed_frame_durations() -> None:
    """64-bit mvhd/mdhd headers are read; the frame rate averages uneven stts runs."""
    moov = movie(version=1, timescale=90000, duration=90000 * 3, stts=[(60, 3000), (15, 6000)])
    info = video(FTYP + moov)
    assert info.duration == 3
    assert info.frame_rate == 25  # 75 frames in 3 s
    assert (info.width, info.height) == (640, 360)


def test_moov_after_a_huge_mdat_is_found_by_seeking() -> None:
    """A 64-bit mdat of 100 MB before the moov is skipped, not read: few bytes are read."""

    class Sparse(io.RawIOBase):
        """A 100 MB file whose middle is never materialized; counts the bytes read."""

        def __init__(self, head: bytes, hole: int, tail: bytes) -> None:
            self.head, self.hole, self.tail = head, hole, tail
            self.size = len(head) + hole + len(tail)
            self.pos = 0
            self.read_bytes = 0

        def seekable(self) -> bool:
            return True

        def readable(self) -> bool:
            return True

        def seek(self, offset: int, whence: int = 0) -> int:
            self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
            return self.pos

        def tell(self) -> int:
            return self.pos

        def readinto(self, buf: Any) -> int:
            n = max(0, min(len(buf), self.size - self.pos))
            data = bytearray(n)
            for i in range(n):  # only header-sized reads come here
                p = self.pos + i
                if p < len(self.head):
                    data[i] = self.head[p]
                elif p >= len(self.head) + self.hole:
                    data[i] = self.tail[p - len(self.head) - self.hole]
            buf[:n] = data
            self.pos += n
            self.read_bytes += n
            return n

    hole = 100 * 1024 * 1024
    mdat_head = struct.pack(">I4sQ", 1, b"mdat", 16 + hole)  # size 1: a 64-bit size follows
    moov = movie()
    fh = Sparse(FTYP + mdat_head, hole, moov)
    info = probe_video(fh)  # type: ignore[arg-type]
    assert (info.duration, info.frame_rate) == (Fraction(4), Fraction(24))
    assert fh.read_bytes < 4096


def test_compressed_quicktime_movie_header_is_inflated() -> None:
    """An old QuickTime file with a zlib-compressed movie header (cmov) is read too."""
    moov = movie()
    cmov = box(
        b"cmov",
        box(b"dcom", b"zlib"),
        box(b"cmvd", struct.pack(">I", len(moov)), zlib.compress(moov)),
    )
    info = video(box(b"ftyp", b"qt  ", bytes(4)) + box(b"moov", cmov))
    assert (info.format, info.duration, info.frame_rate) == ("MOV", Fraction(4), Fraction(24))


def test_fragmented_mp4_duration_from_mehd_frame_rate_unchecked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Samples in moof boxes: the duration comes from mehd, the frame rate is not checked."""
    mehd = full(b"mehd", 0, struct.pack(">I", 45_000))  # 45 s on the movie's 1/1000 s scale
    info = video(FTYP + movie(duration=0, stts=[], mvex=box(b"mvex", mehd), movie_duration=0))
    assert info.fragmented and info.frame_rate is None
    assert info.duration == 45
    with caplog.at_level(logging.DEBUG, logger="wanr2v"):
        assert codes(info) == ["InvalidFile.Duration"]
    assert "frame rate not checked" in caplog.text


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"just some text, renamed to .mp4\n" * 20, "does not start with an ISO-BMFF box"),
        (make_mp4(3)[:600], "cut short"),  # a download stopped inside the moov box
        (FTYP + box(b"mdat", bytes(64)), "no movie header"),
        (FTYP + movie(handler=b"soun"), "no video track"),
        (FTYP + box(b"moov", struct.pack(">I4s", 4000, b"trak")), "damaged"),
        (b"", "no movie header"),
    ],
)
def test_files_that_are_not_readable_videos_are_refused(data: bytes, reason: str) -> None:
    """Not a video, cut short, no moov, audio only, or boxes that overrun: refused, saying why."""
    with pytest.raises(UnreadableMediaError, match=reason):
        video(data)


# --- images ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "ok"),
    [
        ((240, 240), True),
        ((239, 240), False),
        ((240, 239), False),
        ((5000, 240), True),
        ((240, 5000), True),
        ((5001, 240), False),
        ((240, 5001), False),
    ],
)
def test_image_side_limits_are_inclusive(size: tuple[int, int], ok: bool) -> None:
    """Each side of an image is 240–5000 px, bounds included."""
    info = image(Image.new("RGB", size, (10, 120, 200)))
    assert (info.width, info.height) == size
    assert codes(info) == ([] if ok else ["InvalidFile.Resolution"])


@pytest.mark.parametrize(
    ("fmt", "name"), [("JPEG", "JPEG"), ("PNG", "PNG"), ("BMP", "BMP"), ("WEBP", "WEBP")]
)
def test_every_documented_image_format_is_read(fmt: str, name: str) -> None:
    """JPEG, PNG, BMP and WebP are read from their headers and pass at a valid size."""
    info = image(Image.new("RGB", (320, 256), (200, 30, 30)), fmt)
    assert (info.format, info.width, info.height) == (name, 320, 256)
    assert codes(info) == []


@pytest.mark.parametrize(
    "make",
    [
        lambda: Image.new("RGBA", (300, 300), (0, 0, 0, 128)),
        lambda: Image.new("LA", (300, 300), (0, 128)),
    ],
)
def test_png_with_alpha_is_refused(make: Any) -> None:
    """A PNG with an alpha channel is refused (InvalidFile.Format)."""
    assert codes(image(make())) == ["InvalidFile.Format"]


def test_png_with_a_transparent_palette_colour_is_refused() -> None:
    """A palette PNG whose tRNS makes a colour transparent counts as alpha too."""
    img = Image.new("P", (300, 300), 0)
    img.putpalette([0, 0, 0, 255, 255, 255])
    assert codes(image(img, transparency=0)) == ["InvalidFile.Format"]


def test_opaque_png_and_webp_with_alpha_pass() -> None:
    """An RGB PNG passes; alpha is refused for PNG only, as documented (WebP passes)."""
    assert codes(image(Image.new("RGB", (300, 300)))) == []
    assert codes(image(Image.new("RGBA", (300, 300), (0, 0, 0, 0)), "WEBP")) == []


@pytest.mark.parametrize(
    "data",
    [
        b"not an image at all" * 10,
        b"GIF89a" + bytes(100),  # a format the service does not take
        make_mp4(2),  # a video named .png
    ],
)
def test_files_that_are_not_images_are_refused(data: bytes) -> None:
    """Content that is not JPEG, PNG, BMP or WebP is refused, whatever its name says."""
    with pytest.raises(UnreadableMediaError, match="not a JPEG, PNG, BMP or WebP image"):
        probe_image(io.BytesIO(data))


@pytest.mark.parametrize("side", [10_000, 20_000])
def test_images_with_huge_dimensions_are_refused_without_decoding(side: int) -> None:
    """A header claiming 100 or 400 million pixels is refused (Pillow's bomb guard trips)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    chunk += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    idat = struct.pack(">I", 0) + b"IDAT" + struct.pack(">I", zlib.crc32(b"IDAT"))
    info = probe_image(io.BytesIO(b"\x89PNG\r\n\x1a\n" + chunk + idat))
    assert info is not None
    assert info.too_many_pixels  # pytest turns Pillow's warning into an error, too
    assert codes(info) == ["InvalidFile.Resolution"]


def test_without_pillow_image_checks_are_skipped_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the media extra, image probing returns None with a debug log; videos still work."""
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL now raises ImportError
    assert not _media.pillow_available()
    with caplog.at_level(logging.DEBUG, logger="wanr2v"):
        assert probe_image(io.BytesIO(b"anything")) is None
    assert "Pillow is not installed" in caplog.text
    assert "wanr2v[media]" in caplog.text
    assert codes(video(make_mp4(0.5))) == ["InvalidFile.Duration"]


# --- local files, through the client ------------------------------------------------------


@pytest.fixture
def emu() -> Emulator:
    return Emulator(
        EmulatorConfig(
            clock=ManualClock(start=1_750_000_000.0),
            quotas=Quotas.off(),
            generation_time=(10.0, 10.0),
        )
    )


async def refused(emu: Emulator, refs: list[Any]) -> InvalidRequestError:
    """Submit ``refs`` through AsyncWanClient; return the local refusal; nothing was sent."""
    async with client_for(emu, in_process=True) as client:
        with pytest.raises(InvalidRequestError) as info:
            await client.async_call(
                model="wan2.6-r2v-flash", prompt="character1", reference_urls=refs
            )
    assert emu.host_requests("upload") == []
    stats = emu.stats()
    assert stats.tasks_created == 0
    assert "policy" not in stats.requests  # not even an upload policy was asked for
    return info.value


@pytest.mark.anyio
async def test_short_local_video_is_refused_before_any_upload(
    tmp_path: Path, emu: Emulator
) -> None:
    """A 0.967 s clip as the second reference: the error names the field, character2, the
    file, the limit, the measured value and the vendor code; nothing is sent."""
    good = tmp_path / "good.mp4"
    good.write_bytes(make_mp4(3))
    short = tmp_path / "short.mp4"
    short.write_bytes(make_mp4(29 / 30))
    err = await refused(emu, [good, short])
    assert err.field == "input.reference_urls[1]"
    text = str(err)
    for part in ("input.reference_urls[1]", "character2", str(short), "0.967 s", "1–30 s"):
        assert part in text
    assert "InvalidFile.Duration" in text


@pytest.mark.anyio
async def test_slow_local_video_names_frame_rate(tmp_path: Path, emu: Emulator) -> None:
    """A 12 fps clip is refused with its measured rate and the 15–60 fps limit."""
    clip = tmp_path / "slow.mov"
    clip.write_bytes(make_mp4(3, fps=12, quicktime=True))
    text = str(await refused(emu, [clip]))
    assert "12 fps" in text and "15–60 fps" in text and "character1" in text


@pytest.mark.anyio
async def test_alpha_png_and_small_image_are_refused(tmp_path: Path, emu: Emulator) -> None:
    """A PNG with alpha, and an image 200 px high, are refused before any upload."""
    alpha = tmp_path / "logo.png"
    Image.new("RGBA", (400, 400), (255, 0, 0, 100)).save(alpha)
    assert "alpha" in str(await refused(emu, ["https://cdn.example/a.mp4", alpha]))
    small = tmp_path / "thumb.jpg"
    Image.new("RGB", (400, 200)).save(small)
    text = str(await refused(emu, [small]))
    assert "400×200 px" in text and "240–5000 px" in text


@pytest.mark.anyio
async def test_non_media_file_with_video_extension_is_refused(
    tmp_path: Path, emu: Emulator
) -> None:
    """A text file named .mp4 is refused as not a video, naming the file."""
    fake = tmp_path / "notes.mp4"
    fake.write_text("meeting notes, not a video\n" * 50)
    err = await refused(emu, [fake])
    assert "not an MP4/MOV video" in str(err) and str(fake) in str(err)


@pytest.mark.anyio
async def test_valid_local_media_is_uploaded(tmp_path: Path, emu: Emulator) -> None:
    """Files within every limit pass the checks and are uploaded (the checks are not a wall)."""
    clip = tmp_path / "me.mp4"
    clip.write_bytes(make_mp4(1))
    photo = tmp_path / "dog.webp"
    Image.new("RGB", (5000, 240), (90, 60, 30)).save(photo)
    async with client_for(emu, in_process=True) as client:
        task = await client.async_call(
            model="wan2.6-r2v-flash",
            prompt="character1 walks character2",
            reference_urls=[clip, photo],
        )
    assert task.task_id
    assert len(emu.host_requests("upload")) == 2


@pytest.mark.anyio
async def test_probing_runs_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe runs off the event loop: the loop stays free while a probe is blocked."""
    started, release = threading.Event(), threading.Event()
    real = _media._probe_path

    def blocking(path: Path, kind: str) -> MediaInfo | None:
        started.set()
        assert release.wait(10), "the event loop was blocked by the probe"
        return real(path, kind)

    monkeypatch.setattr(_media, "_probe_path", blocking)
    clip = tmp_path / "c.mp4"
    clip.write_bytes(make_mp4(2))
    results: list[MediaInfo | None] = []

    async def check() -> None:
        results.append(await check_local_file(clip, index=0, kind="video"))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(check)
            # Reached only if the loop is free while the probe waits in its thread.
            assert await anyio.to_thread.run_sync(started.wait, 10)
            release.set()
    assert results[0] is not None and results[0].duration == 2
