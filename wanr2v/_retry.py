"""The one retry policy: API calls, uploads and downloads wait and give up by it.

`RetryPolicy` is the client's ``retry_policy``: ``ApiSession`` (API calls), ``Uploader``
(the temporary-storage host) and ``Downloader`` (the result video host) all hold the
client's policy, so ``max_retries`` (also through ``with_options``) bounds every one of
them.

What may be sent again (`retryable_status`, `retryable_error`) is about money:

- A broken exchange (no connection, a timeout, a dropped answer) may be sent again,
  except a create that may have reached the service (``maybe_sent``): it may have made
  a paid task, and is reconciled instead, never re-sent blindly.
- An error answer may be sent again when it is 429 or 500 / 502 / 503 / 504; a create
  only on 429 or 503 (the service refused it: nothing was made, nothing billed).
  Uploads (content-addressed keys) and downloads (GETs) are never creates.

How long to wait (`RetryPolicy.backoff`): the server's ``Retry-After`` when it gave one
(capped at ``max_retry_after``), else exponential backoff with jitter. Limits: the jitter
uses the ``random`` module (not seeded here); a ``Retry-After`` given as an HTTP date is
read against the local clock.
"""

from __future__ import annotations

import email.utils
import random
import time
from typing import Final

import attrs

from ._exceptions import TransportError

__all__ = [
    "CREATE_RETRYABLE_STATUS",
    "RETRYABLE_STATUS",
    "RetryPolicy",
    "parse_retry_after",
    "retryable_error",
    "retryable_status",
]

RETRYABLE_STATUS: Final = frozenset({429, 500, 502, 503, 504})
"""Error answers worth another attempt of a request that may be repeated."""
CREATE_RETRYABLE_STATUS: Final = frozenset({429, 503})
"""A 429 or 503 on create means the service refused it: nothing was made, nothing billed."""


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter, honouring ``Retry-After``.

    Used by API calls, uploads of local references and result downloads alike (for a
    download, ``max_retries`` counts the attempts in a row that receive no bytes: a
    drop after progress resumes without using one up).

    Args:
        max_retries: retries after the first attempt (so ``max_retries + 1`` sends).
        initial: the first backoff's upper bound, seconds.
        maximum: cap of one backoff, seconds.
        max_retry_after: cap on a server's ``Retry-After``.
    """

    max_retries: int = 4
    initial: float = 0.5
    maximum: float = 20.0
    max_retry_after: float = 60.0

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry ``attempt`` (0-based): ``Retry-After`` if given."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        bound = min(self.maximum, self.initial * (2**attempt))
        return random.uniform(bound / 2, bound)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retryable_status(status: int, *, create: bool = False) -> bool:
    """Whether an error answer with ``status`` is worth another attempt.

    A create only on 429 or 503 (refused: nothing made); anything else on 429, 500, 502,
    503 or 504.
    """
    return status in (CREATE_RETRYABLE_STATUS if create else RETRYABLE_STATUS)


def retryable_error(error: TransportError, *, create: bool = False) -> bool:
    """Whether a broken exchange (connect error, timeout, drop, oversized answer) may be
    sent again: always, except a create that may have reached the service."""
    return not (create and error.maybe_sent)
