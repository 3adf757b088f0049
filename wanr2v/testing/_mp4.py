"""A tiny, real H.264 MP4 written in pure Python: the emulator's result video.

The vendor's results are MP4 (H.264, 30 fps). The emulator serves a file of the
same kind, small enough to be cheap: 32x32 pixels, Baseline profile, one IDR
frame coded with ``I_PCM`` macroblocks (raw samples, so no transform or entropy
coder is needed) followed by ``P`` frames in which every macroblock is skipped.
Tests of the reference-media checks ask for other lengths, frame rates, picture
sizes and the QuickTime (``.mov``) brand; the defaults give the result video.
Any decoder (ffmpeg, browsers, PyAV) plays it; ``file`` and ISO-BMFF parsers see
``ftyp`` / ``moov`` / ``mdat``.

The bitstream follows ITU-T H.264 (CAVLC, ``pic_order_cnt_type`` 2, one reference
frame); the container follows ISO/IEC 14496-12 and 14496-15 (``avc1`` + ``avcC``).
"""

from __future__ import annotations

import functools
import struct

__all__ = ["FPS", "HEIGHT", "WIDTH", "make_mp4"]

WIDTH = 32
HEIGHT = 32
FPS = 30
_LOG2_MAX_FRAME_NUM = 8
_SAMPLE_DELTA = 1000
"""Ticks per frame; the media timescale is ``fps * 1000`` (so 29.97 fps is exact)."""
#: (largest frame in macroblocks, level_idc): the smallest H.264 level that fits.
_LEVELS = ((99, 10), (396, 20), (792, 21), (1620, 30), (3600, 31), (8192, 40), (36864, 51))


class _BitWriter:
    """Big-endian bit writer with Exp-Golomb codes (H.264 clause 9.1)."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._acc = 0
        self._n = 0  # bits held in _acc (0-7 after each call)

    def u(self, n: int, value: int) -> None:
        self._acc = (self._acc << n) | (value & ((1 << n) - 1))
        self._n += n
        while self._n >= 8:
            self._n -= 8
            self._out.append((self._acc >> self._n) & 0xFF)
        self._acc &= (1 << self._n) - 1

    def ue(self, value: int) -> None:
        code = value + 1
        length = code.bit_length()
        self.u(length - 1, 0)
        self.u(length, code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def align_zero(self) -> None:
        if self._n:
            self.u(8 - self._n, 0)

    def raw(self, data: bytes) -> None:
        assert self._n == 0
        self._out += data

    def trailing(self) -> bytes:
        self.u(1, 1)
        self.align_zero()
        return bytes(self._out)


def _nal(ref_idc: int, nal_type: int, rbsp: bytes) -> bytes:
    """Wrap an RBSP in a NAL unit, inserting emulation-prevention bytes."""
    out = bytearray([(ref_idc << 5) | nal_type])
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _level(cols: int, rows: int) -> int:
    return next((level for mbs, level in _LEVELS if cols * rows <= mbs), 51)


def _sps(cols: int, rows: int) -> bytes:
    w = _BitWriter()
    w.u(8, 66)  # profile_idc: Baseline
    w.u(8, 0xC0)  # constraint_set0_flag, constraint_set1_flag
    w.u(8, _level(cols, rows))  # level_idc (1.0 for the 32x32 result video)
    w.ue(0)  # seq_parameter_set_id
    w.ue(_LOG2_MAX_FRAME_NUM - 4)
    w.ue(2)  # pic_order_cnt_type
    w.ue(1)  # max_num_ref_frames
    w.u(1, 0)  # gaps_in_frame_num_value_allowed_flag
    w.ue(cols - 1)
    w.ue(rows - 1)
    w.u(1, 1)  # frame_mbs_only_flag
    w.u(1, 1)  # direct_8x8_inference_flag
    w.u(1, 0)  # frame_cropping_flag
    w.u(1, 0)  # vui_parameters_present_flag
    return _nal(3, 7, w.trailing())


def _pps() -> bytes:
    w = _BitWriter()
    w.ue(0)  # pic_parameter_set_id
    w.ue(0)  # seq_parameter_set_id
    w.u(1, 0)  # entropy_coding_mode_flag: CAVLC
    w.u(1, 0)  # bottom_field_pic_order_in_frame_present_flag
    w.ue(0)  # num_slice_groups_minus1
    w.ue(0)  # num_ref_idx_l0_default_active_minus1
    w.ue(0)  # num_ref_idx_l1_default_active_minus1
    w.u(1, 0)  # weighted_pred_flag
    w.u(2, 0)  # weighted_bipred_idc
    w.se(0)  # pic_init_qp_minus26
    w.se(0)  # pic_init_qs_minus26
    w.se(0)  # chroma_qp_index_offset
    w.u(1, 1)  # deblocking_filter_control_present_flag
    w.u(1, 0)  # constrained_intra_pred_flag
    w.u(1, 0)  # redundant_pic_cnt_present_flag
    return _nal(3, 8, w.trailing())


def _idr_slice(width: int, height: int) -> bytes:
    w = _BitWriter()
    w.ue(0)  # first_mb_in_slice
    w.ue(7)  # slice_type: I (all slices of the picture)
    w.ue(0)  # pic_parameter_set_id
    w.u(_LOG2_MAX_FRAME_NUM, 0)  # frame_num
    w.ue(0)  # idr_pic_id
    w.u(1, 0)  # no_output_of_prior_pics_flag
    w.u(1, 0)  # long_term_reference_flag
    w.se(0)  # slice_qp_delta
    w.ue(1)  # disable_deblocking_filter_idc
    for row in range(height // 16):
        for col in range(width // 16):
            w.ue(25)  # mb_type I_PCM
            w.align_zero()  # pcm_alignment_zero_bit
            luma = bytes(
                40 + ((col * 16 + x) * 150) // width + ((row * 16 + y) * 40) // height
                for y in range(16)
                for x in range(16)
            )
            w.raw(luma)
            w.raw(bytes([90]) * 64)  # Cb
            w.raw(bytes([200]) * 64)  # Cr
    return _nal(3, 5, w.trailing())


def _p_skip_slice(frame_num: int, macroblocks: int) -> bytes:
    w = _BitWriter()
    w.ue(0)  # first_mb_in_slice
    w.ue(5)  # slice_type: P (all slices of the picture)
    w.ue(0)  # pic_parameter_set_id
    w.u(_LOG2_MAX_FRAME_NUM, frame_num % (1 << _LOG2_MAX_FRAME_NUM))
    w.u(1, 0)  # num_ref_idx_active_override_flag
    w.u(1, 0)  # ref_pic_list_modification_flag_l0
    w.u(1, 0)  # adaptive_ref_pic_marking_mode_flag
    w.se(0)  # slice_qp_delta
    w.ue(1)  # disable_deblocking_filter_idc
    w.ue(macroblocks)  # mb_skip_run: the whole picture
    return _nal(2, 1, w.trailing())


def _box(kind: bytes, *parts: bytes) -> bytes:
    payload = b"".join(parts)
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *parts)


_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


@functools.lru_cache(maxsize=16)
def make_mp4(
    duration_s: float,
    *,
    fps: float = FPS,
    width: int = WIDTH,
    height: int = HEIGHT,
    quicktime: bool = False,
) -> bytes:
    """Build an MP4 file lasting ``duration_s`` seconds (at least one frame).

    The length is a whole number of frames: ``round(duration_s * fps)`` of them, so the
    file lasts ``frames / fps`` seconds exactly (its media timescale is ``fps * 1000``).

    Args:
        duration_s: The video length in seconds.
        fps: Frames per second, e.g. ``29.97``; a multiple of 0.001.
        width: Picture width in pixels, a multiple of 16.
        height: Picture height in pixels, a multiple of 16.
        quicktime: Write the QuickTime brand (``qt  ``), as a ``.mov`` file has.

    Returns:
        The bytes of a complete MP4 file (H.264 Baseline; 30 fps, 32x32 by default).

    Raises:
        ValueError: a size that is not a positive multiple of 16, or a frame rate
            that is not positive.
    """
    if width < 16 or height < 16 or width % 16 or height % 16:
        raise ValueError(
            f"make_mp4: width and height must be multiples of 16, got {width}x{height}"
        )
    timescale = round(fps * 1000)
    if timescale < 1:
        raise ValueError(f"make_mp4: fps must be positive, got {fps}")
    cols, rows = width // 16, height // 16
    frames = max(1, round(duration_s * timescale / _SAMPLE_DELTA))
    sps, pps = _sps(cols, rows), _pps()
    samples = [struct.pack(">I", len(n)) + n for n in (sps, pps, _idr_slice(width, height))]
    first = b"".join(samples)
    rest = []
    for i in range(1, frames):
        nal = _p_skip_slice(i, cols * rows)
        rest.append(struct.pack(">I", len(nal)) + nal)
    sizes = [len(first)] + [len(s) for s in rest]
    media_duration = frames * _SAMPLE_DELTA
    movie_duration = frames * _SAMPLE_DELTA * 1000 // timescale

    if quicktime:
        ftyp = _box(b"ftyp", b"qt  ", struct.pack(">I", 0x200), b"qt  ")
    else:
        ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso2avc1mp41")
    avcc = _box(
        b"avcC",
        bytes([1, 66, 0xC0, _level(cols, rows), 0xFF, 0xE1]),
        struct.pack(">H", len(sps)),
        sps,
        bytes([1]),
        struct.pack(">H", len(pps)),
        pps,
    )
    avc1 = _box(
        b"avc1",
        bytes(6),
        struct.pack(">H", 1),  # data_reference_index
        bytes(16),
        struct.pack(">HH", width, height),
        struct.pack(">II", 0x480000, 0x480000),  # 72 dpi
        bytes(4),
        struct.pack(">H", 1),  # frame_count
        bytes(32),  # compressorname
        struct.pack(">Hh", 0x18, -1),
        avcc,
    )

    def stbl(chunk_offset: int) -> bytes:
        return _box(
            b"stbl",
            _full_box(b"stsd", 0, 0, struct.pack(">I", 1), avc1),
            _full_box(b"stts", 0, 0, struct.pack(">III", 1, frames, _SAMPLE_DELTA)),
            _full_box(b"stss", 0, 0, struct.pack(">II", 1, 1)),
            _full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, frames, 1)),
            _full_box(
                b"stsz", 0, 0, struct.pack(">II", 0, frames), struct.pack(f">{frames}I", *sizes)
            ),
            _full_box(b"stco", 0, 0, struct.pack(">II", 1, chunk_offset)),
        )

    def moov(chunk_offset: int) -> bytes:
        mvhd = _full_box(
            b"mvhd",
            0,
            0,
            struct.pack(">IIII", 0, 0, 1000, movie_duration),
            struct.pack(">IH", 0x10000, 0x100),
            bytes(10),
            _MATRIX,
            bytes(24),
            struct.pack(">I", 2),  # next_track_ID
        )
        tkhd = _full_box(
            b"tkhd",
            0,
            3,  # enabled, in movie
            struct.pack(">IIIII", 0, 0, 1, 0, movie_duration),
            bytes(8),
            struct.pack(">hhHH", 0, 0, 0, 0),
            _MATRIX,
            struct.pack(">II", width << 16, height << 16),
        )
        mdhd = _full_box(
            b"mdhd",
            0,
            0,
            struct.pack(">IIII", 0, 0, timescale, media_duration),
            struct.pack(">HH", 0x55C4, 0),  # language "und"
        )
        hdlr = _full_box(b"hdlr", 0, 0, bytes(4), b"vide", bytes(12), b"VideoHandler\x00")
        vmhd = _full_box(b"vmhd", 0, 1, bytes(8))
        dinf = _box(
            b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1))
        )
        minf = _box(b"minf", vmhd, dinf, stbl(chunk_offset))
        mdia = _box(b"mdia", mdhd, hdlr, minf)
        return _box(b"moov", mvhd, _box(b"trak", tkhd, mdia))

    # moov before mdat ("fast start"); its size does not depend on the offset value.
    offset = len(ftyp) + len(moov(0)) + 8
    mdat = _box(b"mdat", first, *rest)
    return ftyp + moov(offset) + mdat
