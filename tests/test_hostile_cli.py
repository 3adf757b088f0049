"""Signals and errors at the edges: SIGTERM like Ctrl-C, one line per error, no
ExceptionGroup reaching the CLI or ``client.resume()``, no key in any output.

The CLI runs as a subprocess (``python -m wanr2v``) against emulators on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._db import raw_db
from wanr2v import VideoRequest
from wanr2v.journal import JournalError, SQLiteJournal, SubmissionRecord
from wanr2v.testing import EmulatorConfig, FaultRule, Quotas, serve
from wanr2v.testing._client import client_for
from wanr2v.testing._emulator import Emulator

SECRET = "sk-hostile-cli-SECRET-1f2e3d4c5b6a"
SCALE = 60.0
REF = "https://cdn.example.com/me.mp4"


def run_env(key: str = SECRET) -> dict[str, str]:
    """A subprocess environment with ``key`` and no base URL or region override."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DASHSCOPE_API_KEY", "DASHSCOPE_HTTP_BASE_URL", "DASHSCOPE_REGION")
    }
    env["DASHSCOPE_API_KEY"] = key
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wanr2v_cmd(*args: str, cwd: Path, key: str = SECRET) -> subprocess.CompletedProcess[str]:
    """``python -m wanr2v ARGS``; neither stream may hold the key, a traceback or a group."""
    proc = subprocess.run(
        [sys.executable, "-m", "wanr2v", *args],
        cwd=cwd,
        env=run_env(key),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_clean(proc.stdout, proc.stderr, key=key)
    return proc


def assert_clean(*texts: str, key: str = SECRET) -> None:
    """No key, no traceback, no ExceptionGroup in ``texts``."""
    for text in texts:
        assert key not in text
        assert "Traceback" not in text and "ExceptionGroup" not in text


def service(emu: Emulator) -> list[str]:
    """Options pointing a command at ``emu``."""
    return ["--base-url", emu.base_url, "--time-scale", str(SCALE)]


@pytest.fixture(scope="module")
def guarded() -> Iterator[Emulator]:
    """An emulator that accepts only its own key (any other is refused with 401)."""
    config = EmulatorConfig(
        api_keys=["sk-the-only-valid-key-000"], time_scale=SCALE, generation_time=(30.0, 30.0)
    )
    with serve(config) as emu:
        yield emu


@pytest.mark.parametrize(
    "command",
    [["status"], ["wait"], ["cancel"], ["download", "--out", "videos"]],
)
def test_a_refused_key_on_several_tasks_is_one_error_and_exit_2(
    guarded: Emulator, tmp_path: Path, command: list[str]
) -> None:
    """Three ids, a key the service refuses: exit 2, the 401's message on one line (any
    other errors as more lines), no traceback, no ExceptionGroup, no key."""
    ids = ["task-a", "task-b", "task-c"]
    proc = wanr2v_cmd(*command, *ids, *service(guarded), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert any(line.startswith("wanr2v: error: Invalid API-key provided.") for line in lines)
    assert all(line.startswith(("wanr2v: error:", "waiting for ")) for line in lines)


def test_an_echoed_key_is_not_in_the_cli_output(tmp_path: Path) -> None:
    """A create answered by a 400 echoing the request's headers: exit 2, the echo is
    shown scrubbed, in human and in --json output."""
    with serve(EmulatorConfig(time_scale=SCALE)) as emu:
        emu.faults.add(FaultRule(kind="echo_headers", endpoint="create"))
        submit = ["submit", "--prompt", "character1 echoes", "--ref", REF, *service(emu)]
        proc = wanr2v_cmd(*submit, cwd=tmp_path)
        assert proc.returncode == 2 and "Bearer ***" in proc.stderr
        proc = wanr2v_cmd(*submit, "--json", cwd=tmp_path)
        assert proc.returncode == 2
        doc = json.loads(proc.stdout)
        assert doc["error"]["status_code"] == 400 and "Bearer ***" in doc["error"]["message"]


def created_in(db: Path) -> int:
    """Submissions the journal knows a task id for."""
    if not db.exists():
        return 0
    try:
        with raw_db(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute("SELECT count(*) FROM submissions WHERE task_id IS NOT NULL")
            return int(row.fetchone()[0])
    except sqlite3.Error:
        return 0


def test_sigterm_during_run_cancels_pending_tasks_and_resume_leaves_no_part(
    tmp_path: Path,
) -> None:
    """SIGTERM during ``run --cancel-pending``: the PENDING tasks are canceled, the exit
    is 143 with the resume hint, no traceback; ``resume`` then finishes the running task
    and removes the ``.part`` leftovers of the journal's tasks."""
    config = EmulatorConfig(
        time_scale=SCALE, seed=21, generation_time=(90.0, 90.0), quotas=Quotas(running=1)
    )
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        "".join(
            json.dumps(
                {
                    "key": f"k{i}",
                    "model": "wan2.6-r2v-flash",
                    "prompt": f"character1 waits {i}",
                    "reference_urls": [REF],
                }
            )
            + "\n"
            for i in range(4)
        )
    )
    db = tmp_path / "batch.db"
    with serve(config) as emu:
        child = subprocess.Popen(
            [
                sys.executable, "-m", "wanr2v", "run", str(batch), "--journal", str(db),
                "--out", "videos", "--cancel-pending", *service(emu),
            ],
            cwd=tmp_path,
            env=run_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        end = time.monotonic() + 30
        while created_in(db) < 4:
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < end, "the run created nothing in time"
            time.sleep(0.02)
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=30)
        assert child.returncode == 143, err
        assert_clean(out, err)
        assert "terminated" in err and f"wanr2v resume --journal {db}" in err
        statuses = sorted(r.status for r in emu.task_records())
        assert statuses.count("CANCELED") == 3, statuses  # one RUNNING, three PENDING

        running = next(r.task_id for r in emu.task_records() if r.status != "CANCELED")
        with raw_db(db) as conn:
            rows = conn.execute("SELECT batch_key, task_id FROM submissions").fetchall()
        key = next(k for k, t in rows if t == running)
        videos = tmp_path / "videos"
        videos.mkdir(exist_ok=True)
        leftover = videos / f".{key}.mp4.0a1b2c3d4e5f.part"  # a kill -9 mid-download
        leftover.write_bytes(b"partial")
        proc = wanr2v_cmd("resume", "--journal", str(db), cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr  # three canceled, one downloaded
        assert (videos / f"{key}.mp4").exists()
        assert not list(videos.glob("*.part")) and not list(videos.glob(".*.part"))
        assert emu.stats().duplicate_creates == 0


class FullDiskJournal(SQLiteJournal):
    """A journal whose every update fails as on a full disk."""

    async def update(
        self, submission_id: str, *, expect_state: Any = None, **changes: Any
    ) -> SubmissionRecord:
        """Fail as SQLite does when the disk is full."""
        raise JournalError("database or disk is full", path=self.path)


@pytest.mark.anyio
async def test_resume_on_an_unwritable_journal_sends_nothing_and_raises_no_group(
    tmp_path: Path,
) -> None:
    """``client.resume()`` on a journal that cannot be written: the claim before each
    create fails, so every item ends with that JournalError (typed, never an
    ExceptionGroup, not raised from resume as a group either), and nothing is sent: the
    batch never pays without a record."""
    db = tmp_path / "full.db"
    async with await SQLiteJournal.open(db) as journal:
        for i in range(3):
            request = VideoRequest(model="wan2.6-r2v-flash", prompt=f"p{i}", reference_urls=[REF])
            await journal.add(SubmissionRecord.new(f"k{i}", request))
    with serve(EmulatorConfig(time_scale=SCALE)) as emu:
        full = await FullDiskJournal.open(db)
        async with client_for(emu, api_key=SECRET) as client, full:
            items = await client.resume(full)
        assert len(items) == 3
        for item in items:
            assert isinstance(item.error, JournalError)
            assert not isinstance(item.error, BaseExceptionGroup)
            assert "disk is full" in str(item.error)
        assert emu.stats().tasks_created == 0
