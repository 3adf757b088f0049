"""Secrets and boundaries: a planted key is searched for everywhere it must never be.

Logs (every logger, DEBUG, through a faulted batch), reprs, exception strings and
tracebacks, the journal file's bytes, CLI output; the upload and video hosts never
see it; plain http to a host that is not loopback is refused before anything is
sent; TLS verification is on by default.
"""

from __future__ import annotations

import logging
import os
import ssl
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import respx

import wanr2v
from tests import _chaos
from wanr2v import AsyncWanClient, ConfigurationError
from wanr2v._demo import make_png
from wanr2v.journal import SQLiteJournal
from wanr2v.testing import EmulatorConfig, Endpoint, FaultKind, FaultRule, make_mp4, serve
from wanr2v.testing._client import client_for

KEY = _chaos.PLANTED_KEY
#: The key without the last four characters that ``mask_key`` shows.
SECRET_PART = KEY[:-4]


def assert_clean(text: str | bytes, where: str) -> None:
    """Neither the key nor its unmasked part appears in ``text``."""
    needle_full = KEY.encode() if isinstance(text, bytes) else KEY
    needle_part = SECRET_PART.encode() if isinstance(text, bytes) else SECRET_PART
    assert needle_full not in text, f"the API key leaked into {where}"  # type: ignore[operator]
    assert needle_part not in text, f"the API key (unmasked part) leaked into {where}"  # type: ignore[operator]


def _files(folder: Path, pattern: str) -> list[tuple[str, bytes]]:
    found = [(p.name, p.read_bytes()) for p in folder.glob(pattern)]
    assert found, f"no {pattern} in {folder}"
    return found


def _everything_about(exc: BaseException) -> str:
    parts = [str(exc), repr(exc), repr(exc.args), repr(vars(exc))]
    parts += traceback.format_exception(exc)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc:
        parts += [str(cause), repr(cause)]
    return "\n".join(parts)


@pytest.mark.anyio
async def test_key_never_in_logs_reprs_errors_or_journal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A faulted, journaled, uploading and downloading batch at DEBUG: the key is nowhere."""
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "me.mp4").write_bytes(make_mp4(3))
    (refs / "dog.png").write_bytes(make_png(240, 240, lambda x, y: (x, y, 99)))  # real: checked
    reqs = _chaos.requests(40, 13)
    for i, fields in enumerate(reqs.values()):
        if i % 4 == 0:  # some local files: the upload flow runs too
            fields["reference_urls"] = [str(refs / "me.mp4"), str(refs / "dog.png")]
    caplog.set_level(logging.DEBUG)  # every logger: wanr2v, httpx, httpcore, uvicorn
    db = tmp_path / "batch.db"
    with serve(_chaos.emulator_config(13)) as emu:
        for rule in _chaos.fault_rules(13):
            emu.faults.add(rule)
        async with await SQLiteJournal.open(db) as journal:
            client = client_for(emu, **_chaos.client_kwargs())
            async with client:
                with anyio.fail_after(120):
                    items = await client.run_many(
                        reqs, journal=journal, download_to=tmp_path / "out"
                    )
                texts = [repr(client), repr(client.statistics()), repr(client.http.headers)]
                texts += [repr(s) for s in client._routing.sessions.values()]
                texts += [repr(it) for it in items]
                texts += [_everything_about(it.error) for it in items if it.error is not None]
                texts += [repr(r) for r in await journal.list()]
                texts.append(repr(journal))
        hosts = emu.host_requests()
        stats = emu.stats()
    assert stats.faults_injected, "the batch should have met faults"
    assert any(it.error is not None for it in items), "some items should have failed"
    for i, text in enumerate(texts):
        assert_clean(text, f"repr/str #{i}")
    logged = "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''} {r.args!r}"
        for r in caplog.records
    )
    assert any(r.levelno == logging.DEBUG and r.name == "wanr2v" for r in caplog.records)
    assert_clean(logged, "the logs")
    for name, data in _files(tmp_path, "batch.db*"):  # the database, its WAL, its shm
        assert_clean(data, name)
    # The upload and video hosts saw requests, and never the key.
    assert {h.host for h in hosts} == {"upload", "video"}
    for h in hosts:
        assert h.header("authorization") is None, h
        for name, value in h.headers:
            assert_clean(f"{name}: {value}", f"a header sent to the {h.host} host")


@pytest.mark.anyio
async def test_refused_key_error_carries_no_key() -> None:
    """A 401 (wrong key) raises AuthenticationError whose text and traceback hold no key."""
    with serve(EmulatorConfig(time_scale=100.0, seed=1, api_keys=["sk-the-only-good-key"])) as emu:
        async with client_for(emu, api_key=KEY) as client:
            with pytest.raises(wanr2v.AuthenticationError) as info:
                await client.fetch("some-task")
            with pytest.raises(wanr2v.WanError) as info2:
                await client.async_call(
                    model="wan2.6-r2v", prompt="p", reference_urls=["https://h.example.com/a.png"]
                )
    assert_clean(_everything_about(info.value), "AuthenticationError")
    assert_clean(_everything_about(info2.value), "a refused create")


def test_reprs_mask_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Client, session and region reprs show at most ``sk-…last4``; the key read from the env too."""
    from wanr2v._client import RegionEndpoint

    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    client = AsyncWanClient(regions={"singapore": RegionEndpoint(api_key=KEY + "-sg")})
    for text in (
        repr(client),
        str(client),
        repr(RegionEndpoint(api_key=KEY)),
        repr(client._routing.default),
    ):
        assert_clean(text, "a repr")
    assert KEY[-4:] in repr(client)


def test_http_client_defaults_carry_no_key_and_verify_tls() -> None:
    """The httpx client holds no key in its defaults, verifies TLS, and follows no redirects."""
    client = AsyncWanClient(api_key=KEY)
    http = client.http
    assert "authorization" not in {k.lower() for k in http.headers}
    assert_clean(repr(dict(http.headers)), "the httpx default headers")
    assert http.follow_redirects is False  # a redirect could carry Authorization elsewhere
    transport = http._transport
    assert isinstance(transport, httpx.AsyncHTTPTransport)
    ctx = transport._pool._ssl_context
    assert ctx is not None
    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname is True


@pytest.mark.parametrize(
    "url",
    [
        "http://dashscope.aliyuncs.com/api/v1",
        "http://10.0.0.5:8080/api/v1",
        "http://127.0.0.1.attacker.example/api/v1",
        "http://localhost.attacker.example/api/v1",
        "http://0.0.0.0:8000/api/v1",
        "HTTP://DASHSCOPE.ALIYUNCS.COM/api/v1",
    ],
)
def test_plain_http_to_a_remote_host_is_refused_and_nothing_is_sent(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``http://`` to a host that is not loopback: ConfigurationError, not one request sent."""
    with respx.mock(assert_all_called=False) as mock:
        route = mock.route()
        with pytest.raises(ConfigurationError) as info:
            AsyncWanClient(api_key=KEY, base_url=url)
        monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", url)
        with pytest.raises(ConfigurationError):
            AsyncWanClient(api_key=KEY)
        monkeypatch.delenv("DASHSCOPE_HTTP_BASE_URL")
        with pytest.raises(ConfigurationError):
            AsyncWanClient(
                api_key=KEY,
                regions={"extra": wanr2v._client.RegionEndpoint(api_key=KEY, base_url=url)},
            )
        assert route.call_count == 0
    assert_clean(_everything_about(info.value), "the refusal")


def test_plain_http_is_allowed_when_asked_or_loopback() -> None:
    """``allow_insecure=True`` lets plain http through (then requests go); loopback is allowed."""

    async def go() -> None:
        with respx.mock:
            route = respx.get("http://dashscope.internal.example/api/v1/tasks/t").respond(
                200, json={"output": {"task_id": "t", "task_status": "RUNNING"}}
            )
            async with AsyncWanClient(
                api_key=KEY,
                base_url="http://dashscope.internal.example/api/v1",
                allow_insecure=True,
            ) as client:
                result = await client.fetch("t")
            assert route.call_count == 1 and result.status is wanr2v.TaskStatus.RUNNING

    anyio.run(go)
    for url in ("http://127.0.0.1:1/api/v1", "http://localhost:1/api/v1", "http://[::1]:1/api/v1"):
        AsyncWanClient(api_key=KEY, base_url=url)


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wanr2v", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_output_never_shows_the_key(tmp_path: Path) -> None:
    """``wanr2v`` run/status/list/resume (human and --json), faults and a refused key: no key."""
    pytest.importorskip("wanr2v._cli", reason="the CLI is not there yet")
    env: dict[str, Any] = {**os.environ, "DASHSCOPE_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    env.pop("DASHSCOPE_HTTP_BASE_URL", None)
    _chaos.write_jsonl(tmp_path / "reqs.jsonl", 12, 17)
    outputs: list[str] = []
    with serve(_chaos.emulator_config(17)) as emu:
        for rule in _chaos.fault_rules(17):
            emu.faults.add(rule)
        emu.faults.add(FaultRule(kind=FaultKind.SERVER_ERROR, endpoint=Endpoint.LIST, count=2))
        svc = ["--base-url", emu.base_url, "--time-scale", f"{_chaos.SCALE:g}"]
        runs = [
            ["run", "reqs.jsonl", "--journal", "b.db", "--out", "v", *svc],
            ["run", "reqs.jsonl", "--journal", "b.db", "--out", "v", "--json", *svc],
            ["resume", "--journal", "b.db"],
            ["list", *svc],
            ["status", "no-such-task", "--json", *svc],
            ["submit", "--prompt", "p", "--ref", "https://h.example.com/a.png", *svc],
        ]
        for args in runs:
            done = _cli(args, env, tmp_path)
            outputs.append(f"$ wanr2v {' '.join(args)}\n{done.stdout}\n{done.stderr}")
    with serve(EmulatorConfig(time_scale=100.0, seed=1, api_keys=["sk-the-only-good-key"])) as emu:
        for args in (
            ["status", "t", "--base-url", emu.base_url],
            ["list", "--json", "--base-url", emu.base_url],
        ):
            done = _cli(args, env, tmp_path)
            assert done.returncode != 0
            outputs.append(f"$ wanr2v {' '.join(args)}\n{done.stdout}\n{done.stderr}")
    joined = "\n".join(outputs)
    assert (
        "sk-…" in joined
        or "401" in joined
        or "InvalidApiKey" in joined
        or "refused" in joined.lower()
    )
    assert_clean(joined, "the CLI output")
    for name, data in _files(tmp_path, "b.db*"):
        assert_clean(data, name)
