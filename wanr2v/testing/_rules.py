"""Every vendor rule the emulator plays, and every choice made where the vendor is silent.

This is the one place to edit when the service turns out to behave differently.
Facts come from ``shared/protocol.md``; lines marked ``ASSUMED`` are the
emulator's own choices (the protocol says "assumed" or says nothing).
"""

from __future__ import annotations

import datetime as _dt
from typing import Final

import attrs

# --- Models -----------------------------------------------------------------

MODEL_FLASH: Final = "wan2.6-r2v-flash"
MODEL_STANDARD: Final = "wan2.6-r2v"
MODELS: Final = frozenset({MODEL_FLASH, MODEL_STANDARD})
#: Models that accept ``parameters.audio`` (flash only).
AUDIO_MODELS: Final = frozenset({MODEL_FLASH})
#: ASSUMED: ``audio`` sent to a model without audio is ignored, like any unknown field.
AUDIO_IGNORED_ELSEWHERE: Final = True

# --- Input limits -----------------------------------------------------------

PROMPT_MAX_CHARS: Final = 1500
NEGATIVE_PROMPT_MAX_CHARS: Final = 500
MAX_REFERENCES: Final = 5
MAX_IMAGE_REFERENCES: Final = 5
MAX_VIDEO_REFERENCES: Final = 3
IMAGE_EXTENSIONS: Final = frozenset({"jpeg", "jpg", "png", "bmp", "webp"})
VIDEO_EXTENSIONS: Final = frozenset({"mp4", "mov"})
#: ASSUMED: a reference URL without any file extension is taken for an image
#: (the service would sniff the bytes; the emulator cannot).
EXTENSIONLESS_KIND: Final = "image"
#: ASSUMED: a reference whose host ends with one of these cannot be downloaded:
#: the create call answers 200 and the task ends FAILED (as the vendor does).
UNREACHABLE_HOST_SUFFIXES: Final = (".invalid",)
#: ASSUMED: emulator seconds after the task starts before a download failure ends it.
REFERENCE_FAILURE_AFTER_S: Final = 3.0

# --- Reference media (what the emulator can read: files uploaded to it) -------

#: Video length in seconds, inclusive. The vendor's current page says 1–30 s
#: (older pages said 2–30 s).
MEDIA_VIDEO_SECONDS: Final = (1, 30)
#: Average frame rate, inclusive (the vendor's generic ``InvalidFile.FPS`` error).
MEDIA_VIDEO_FPS: Final = (15, 60)
#: Pixels on each side of an image, inclusive.
MEDIA_IMAGE_SIDE_PX: Final = (240, 5000)
#: Largest files, in MB (ASSUMED MiB, as OSS policies count).
MEDIA_IMAGE_MAX_MB: Final = 10
MEDIA_VIDEO_MAX_MB: Final = 100
#: ASSUMED: media out of its limits is found when the task inspects its input, as a
#: reference that cannot be downloaded is: the create answers 200 and the task ends
#: FAILED after ``REFERENCE_FAILURE_AFTER_S`` with one of these codes. Messages are
#: the vendor's error-code page's, with the r2v limits filled in. ``http(s)://``
#: references are not fetched by the emulator, so only uploads are checked.
MEDIA_DURATION: Final = (
    "InvalidFile.Duration",
    "Invalid file duration. The file duration must be {lo} s ~ {hi} s.",
)
MEDIA_FPS: Final = ("InvalidFile.FPS", "Invalid video FPS. The video FPS must be {lo} ~ {hi}.")
MEDIA_RESOLUTION: Final = (
    "InvalidFile.Resolution",
    "The image resolution is invalid, please make sure that the largest length of image "
    "is smaller than {hi}, and the smallest length of image is larger than {lo}.",
)
MEDIA_SIZE: Final = (
    "InvalidFile.Size",
    "Invalid file size. The {kind} file size must be less than {mb}MB.",
)
#: ASSUMED: a PNG with an alpha channel is refused as a format the service does not take.
MEDIA_ALPHA: Final = (
    "InvalidFile.Format",
    "Invalid file format, PNG images with an alpha channel (transparency) are not supported.",
)
MEDIA_UNREADABLE: Final = (
    "InvalidFile.Openerror",
    "Invalid file, cannot open file as video/audio/image.",
)

# --- Parameters -------------------------------------------------------------

SIZES_720P: Final = frozenset({"1280*720", "720*1280", "960*960", "1088*832", "832*1088"})
SIZES_1080P: Final = frozenset({"1920*1080", "1080*1920", "1440*1440", "1632*1248", "1248*1632"})
DEFAULT_SIZE: Final = "1920*1080"
DURATION_MIN_S: Final = 2
DURATION_MAX_S: Final = 10
DEFAULT_DURATION_S: Final = 5
SHOT_TYPES: Final = frozenset({"single", "multi"})
DEFAULT_SHOT_TYPE: Final = "single"
DEFAULT_AUDIO: Final = True
DEFAULT_WATERMARK: Final = False
SEED_MIN: Final = 0
SEED_MAX: Final = 2147483647
#: ASSUMED: a well-formed ``W*H`` outside the size lists is accepted (200) and the
#: task then ends FAILED with this message, as in the vendor's example; a size
#: that is not a ``W*H`` string is refused with 400 at once.
SIZE_MISMATCH_FAILS_TASK: Final = True

# --- Regions ----------------------------------------------------------------

DEFAULT_REGION: Final = "beijing"


@attrs.frozen(kw_only=True)
class RegionCapabilities:
    """What one region offers.

    Attributes:
        models: The model names served there.
        durations: The allowed durations in seconds (``None``: the full 2-10 range).
        image_references: Whether pictures may be references there.
        region_id: The region's id as the list endpoint reports it.
    """

    models: frozenset[str] = MODELS
    durations: frozenset[int] | None = None
    image_references: bool = True
    region_id: str = "cn-beijing"


REGION_CAPABILITIES: Final[dict[str, RegionCapabilities]] = {
    "beijing": RegionCapabilities(region_id="cn-beijing"),
    "singapore": RegionCapabilities(region_id="ap-southeast-1"),
    "virginia": RegionCapabilities(
        models=frozenset({MODEL_STANDARD}),
        durations=frozenset({5, 10}),
        image_references=False,
        region_id="us-east-1",
    ),
}
#: Capabilities of a region name not listed above (ASSUMED: everything).
OTHER_REGION_CAPABILITIES: Final = RegionCapabilities(region_id="cn-beijing")

# --- Quotas (per main account, per region; creates and slots also per model) ---

CREATE_PER_S: Final = 5
RUNNING_TASKS: Final = 5
QUERY_PER_S: Final = 20
LIST_PER_S: Final = 20
CANCEL_PER_S: Final = 20
POLICY_PER_S: Final = 100
#: ASSUMED: past the running-task quota, tasks queue as PENDING (FIFO);
#: the strict alternative answers 429 ``Throttling.AllocationQuota``.
QUEUE_WHEN_BUSY: Final = True
#: ASSUMED: ``Retry-After`` (seconds) sent with a quota 429.
RETRY_AFTER_S: Final = 1
#: ASSUMED: when no key is configured, every ``sk-`` key belongs to one account.
OPEN_ACCOUNT: Final = "default"
API_KEY_PREFIX: Final = "sk-"

# --- Time -------------------------------------------------------------------

#: ASSUMED: the time zone of ``submit_time`` & co and of the list's ``YYYYMMDDhhmmss``.
TIMEZONE: Final = _dt.timezone(_dt.timedelta(hours=8))
TASK_TTL_S: Final = 24 * 3600.0
VIDEO_URL_TTL_S: Final = 24 * 3600.0
LIST_MAX_WINDOW_S: Final = 24 * 3600.0
#: ASSUMED: emulator seconds between a slot freeing and ``scheduled_time``.
DISPATCH_DELAY_S: Final = 0.031
#: Generation time (emulator seconds), uniform between the bounds, per model.
GENERATION_TIME_S: Final[dict[str, tuple[float, float]]] = {
    MODEL_STANDARD: (60.0, 300.0),
    MODEL_FLASH: (45.0, 200.0),  # ASSUMED: "somewhat faster"
}

# --- List -------------------------------------------------------------------

DEFAULT_PAGE_NO: Final = 1
DEFAULT_PAGE_SIZE: Final = 10
#: ASSUMED: the largest page the list endpoint serves.
MAX_PAGE_SIZE: Final = 100

# --- Uploads ----------------------------------------------------------------

#: ASSUMED: lifetime of an upload policy (the vendor sends ``expire_in_seconds``).
POLICY_TTL_S: Final = 300
UPLOAD_TTL_S: Final = 48 * 3600.0
MAX_FILE_SIZE_MB: Final = 100
CAPACITY_LIMIT_MB: Final = 999999999
OSS_ACCESS_KEY_ID: Final = "LTAI5tEmulatorWanR2V"

# --- Billing ----------------------------------------------------------------

#: Input video seconds billed at most, split evenly over the references.
INPUT_VIDEO_BUDGET_S: Final = 5.0
#: Each reference's share is cut down to a multiple of this (5/3 -> 1.65).
INPUT_SHARE_STEP_S: Final = 0.05

# --- Error codes and messages -----------------------------------------------

INVALID_API_KEY: Final = ("InvalidApiKey", "Invalid API-key provided.")
SYNC_NOT_SUPPORTED: Final = ("AccessDenied", "current user api does not support synchronous calls")
URL_ERROR: Final = ("InvalidParameter", "url error, please check url!")
BAD_JSON: Final = (
    "InvalidParameter",
    "Required body invalid, please check the request body format.",
)
MODEL_NOT_EXIST: Final = ("InvalidParameter", "Model not exist.")
RATE_QUOTA: Final = (
    "Throttling.RateQuota",
    "Requests rate limit exceeded, please try again later.",
)
ALLOCATION_QUOTA: Final = (
    "Throttling.AllocationQuota",
    "Allocated quota exceeded, please increase your quota limit.",
)
INTERNAL_ERROR: Final = (
    "InternalError",
    "An internal error has occured, please try again later or contact service support.",
)
MODEL_UNAVAILABLE: Final = ("ModelUnavailable", "Model is unavailable, please try again later.")
CANCEL_NOT_PENDING: Final = (
    "UnsupportedOperation",
    "Failed to cancel the task, please confirm if the task is in PENDING status.",
)
OSS_WITHOUT_RESOLVE: Final = (
    "InvalidParameter.DataInspection",
    "The oss:// resource cannot be resolved: set header X-DashScope-OssResourceResolve: enable.",
)
OSS_NOT_FOUND: Final = (
    "InvalidParameter.DataInspection",
    "The media resource {url} could not be found, or has expired, or belongs to another model.",
)
DOWNLOAD_FAILED: Final = (
    "InvalidParameter.DataInspection",
    "Download the media resource timed out during the data inspection process.",
)
SIZE_NOT_MATCH: Final = (
    "InvalidParameter",
    "The size is not match the allowed size list of the model.",
)
UNSUPPORTED_FORMAT: Final = ("InvalidFile.Format", "The format of {url} is not supported.")
NOT_FOUND: Final = ("NotFound", "Not found.")
INVALID_PARAMETER: Final = "InvalidParameter"
