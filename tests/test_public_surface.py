"""The public surface is a decision, written down here: what ``wanr2v``,
``wanr2v.journal`` and ``wanr2v.testing`` export, name by name.

A name added to or dropped from an ``__all__`` fails these tests until this file says
so too. Every exported name resolves, carries a docstring (for a constant or a type
alias: the string right after its assignment, which the API reference shows) and,
when it is a class or a function, says it belongs to the package it is exported from
(tracebacks and reprs name ``wanr2v.RateLimitError``, not a private module).
"""

from __future__ import annotations

import ast
import inspect
import itertools
import types
from functools import cache
from pathlib import Path

import pytest

import wanr2v
import wanr2v.journal
import wanr2v.testing

PACKAGE = Path(wanr2v.__file__).resolve().parent

WANR2V_ALL = [
    "APIError",
    "AioHttpClient",
    "ArrearageError",
    "AsyncWanClient",
    "AuthenticationError",
    "BadRequestError",
    "BatchItem",
    "BatchSummary",
    "BudgetExceededError",
    "ClientStatistics",
    "ConfigurationError",
    "ConnectError",
    "ContentModerationError",
    "DownloadError",
    "Governor",
    "GovernorStatistics",
    "InvalidParameterError",
    "InvalidRequestError",
    "Limits",
    "ModelName",
    "NotFoundError",
    "PermissionDeniedError",
    "PollPolicy",
    "QuotaExhaustedError",
    "REGION_BASE_URLS",
    "RateLimitError",
    "RateStatistics",
    "RegionEndpoint",
    "RequestTimeoutError",
    "ResponseTooLargeError",
    "ResultExpiredError",
    "RetryPolicy",
    "SchedulerStatistics",
    "ServerError",
    "ServiceUnavailableError",
    "SharedStorageError",
    "ShotType",
    "Size",
    "SubmitOutcomeUnknownError",
    "Task",
    "TaskCanceledError",
    "TaskError",
    "TaskEvent",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskResult",
    "TaskStatus",
    "TaskSummary",
    "TransportError",
    "UnsupportedOperationError",
    "UploadError",
    "Usage",
    "VideoRequest",
    "WaitTimeoutError",
    "WanClient",
    "WanError",
    "__version__",
    "raise_for_status",
    "read_batch_file",
]
"""``wanr2v.__all__``, sorted. Not in it, on purpose: ``BatchRunner`` (``run_many``,
``as_completed`` and ``resume`` build it) and ``PollScheduler`` (the client owns it;
``statistics().scheduler`` reports it)."""

JOURNAL_ALL = [
    "DuplicateRequestError",
    "JournalAccountError",
    "JournalBusyError",
    "JournalConflictError",
    "JournalError",
    "JournalOwner",
    "JournalStore",
    "JournalVanishedError",
    "LeasedJournal",
    "RedisJournal",
    "SQLiteJournal",
    "SubmissionRecord",
    "SubmissionState",
    "account_fingerprint",
]
"""``wanr2v.journal.__all__``, sorted: the stores, the protocols a new store implements,
the records and errors. The conversions (``request_to_dict`` ...), the field sets, the
schema version and the batch runner's checks stay in ``wanr2v.journal._base``."""

TESTING_ALL = [
    "Clock",
    "Emulator",
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorStats",
    "Endpoint",
    "FaultKind",
    "FaultRule",
    "Faults",
    "GenerationTime",
    "HostRequest",
    "ManualClock",
    "Quotas",
    "RegionCapabilities",
    "RegionConfig",
    "ScaledClock",
    "TaskRecord",
    "client_for",
    "make_mp4",
    "serve",
]
"""``wanr2v.testing.__all__``, sorted."""

MODULES = [(wanr2v, WANR2V_ALL), (wanr2v.journal, JOURNAL_ALL), (wanr2v.testing, TESTING_ALL)]
PUBLIC = [(module, name) for module, _ in MODULES for name in module.__all__]


@pytest.mark.parametrize(("module", "expected"), MODULES, ids=[m.__name__ for m, _ in MODULES])
def test_all_is_pinned(module: types.ModuleType, expected: list[str]) -> None:
    """``__all__`` names exactly the names listed here, each once."""
    assert expected == sorted(expected), "keep this file's list sorted"
    assert len(set(module.__all__)) == len(module.__all__), "a name is listed twice"
    assert sorted(module.__all__) == expected


def _is_class_or_function(obj: object) -> bool:
    """A class, or a function (also behind a wrapper such as ``functools.cache``)."""
    return isinstance(obj, type) or inspect.isfunction(inspect.unwrap(obj))  # type: ignore[arg-type]


@cache
def _assignment_docstrings(path: Path) -> dict[str, str]:
    """``{name: docstring}`` of a module's top-level assignments followed by a string."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    body = tree.body
    for node, after in itertools.pairwise(body):
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        if (
            isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            for target in targets:
                if isinstance(target, ast.Name):
                    out[target.id] = after.value.value
    return out


def _value_docstring(name: str, package: Path) -> str | None:
    """The docstring under the assignment that defines ``name`` in the package's sources."""
    for path in sorted(package.rglob("*.py")):
        found = _assignment_docstrings(path).get(name)
        if found:
            return found
    return None


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=[f"{m.__name__}.{n}" for m, n in PUBLIC])
def test_public_name_resolves_and_has_a_docstring(module: types.ModuleType, name: str) -> None:
    """Every exported name exists and says what it is."""
    obj = getattr(module, name)
    if name == "__version__":
        assert isinstance(obj, str) and obj
        return
    if _is_class_or_function(obj):
        doc = obj.__doc__  # a class's own docstring: ``__doc__`` is not inherited
    else:  # a constant or a type alias: the string right after its assignment
        doc = _value_docstring(name, Path(module.__file__ or "").parent)
    assert doc and doc.strip(), f"{module.__name__}.{name} has no docstring"


CLASSES_AND_FUNCTIONS = [
    (module, name)
    for module, name in PUBLIC
    if hasattr(module, name) and _is_class_or_function(getattr(module, name))
]


@pytest.mark.parametrize(
    ("module", "name"),
    CLASSES_AND_FUNCTIONS,
    ids=[f"{m.__name__}.{n}" for m, n in CLASSES_AND_FUNCTIONS],
)
def test_public_classes_and_functions_name_their_package(
    module: types.ModuleType, name: str
) -> None:
    """A class or function says it is the package's, not a private module's."""
    assert getattr(module, name).__module__ == module.__name__


def test_removed_plumbing_is_not_exported() -> None:
    """What the client builds for itself is not offered as an entry point."""
    for name in ("BatchRunner", "PollScheduler"):
        assert name not in wanr2v.__all__
        assert not hasattr(wanr2v, name), f"wanr2v.{name} is still importable"
    for name in ("check_requests", "request_to_dict", "result_to_dict", "SCHEMA_VERSION"):
        assert not hasattr(wanr2v.journal, name), f"wanr2v.journal.{name} is still importable"


def test_star_import_gives_exactly_all() -> None:
    """``from wanr2v import *`` binds the public names and no private module."""
    namespace: dict[str, object] = {}
    exec("from wanr2v import *", namespace)
    names = {n for n in namespace if n != "__builtins__"}
    assert names == set(wanr2v.__all__)
    assert not any(isinstance(v, types.ModuleType) for v in namespace.values())
    assert inspect.isclass(namespace["AsyncWanClient"])
