"""Two ``wanr2v run`` and then two ``wanr2v resume`` on one journal, with a ``kill -9``
between, as subprocesses against an emulator on loopback: every task is created once,
every video saved once. Also the CLI's refusals of journals that are not what they
seem (empty, another account's, a changed or duplicated request)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests._db import raw_db
from wanr2v._cli import main
from wanr2v.testing import EmulatorConfig, serve
from wanr2v.testing._emulator import Emulator

SECRET = "sk-journal-cli-SECRET-0a1b2c3d"
OTHER = "sk-journal-cli-OTHER-9f8e7d6c"
SCALE = 60.0


def env(key: str = SECRET) -> dict[str, str]:
    """The environment of a subprocess: the key, no base URL or region override."""
    out = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DASHSCOPE_API_KEY", "DASHSCOPE_HTTP_BASE_URL", "DASHSCOPE_REGION")
    }
    out["DASHSCOPE_API_KEY"] = key
    out["PYTHONUNBUFFERED"] = "1"
    return out


def start(*args: str, cwd: Path, key: str = SECRET) -> subprocess.Popen[str]:
    """``python -m wanr2v ARGS`` in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "wanr2v", *args],
        cwd=cwd,
        env=env(key),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 90) -> tuple[int, str, str]:
    """Wait for ``proc``; its exit code and output (the key must appear in neither)."""
    out, err = proc.communicate(timeout=timeout)
    for key in (SECRET, OTHER):
        assert key not in out and key not in err
    return proc.returncode, out, err


def cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
    key: str = SECRET,
) -> tuple[int, str, str]:
    """``wanr2v ARGS`` in this process (no interpreter start-up); exit code and output."""
    capsys.readouterr()
    with monkeypatch.context() as m:
        for name in ("DASHSCOPE_HTTP_BASE_URL", "DASHSCOPE_REGION"):
            m.delenv(name, raising=False)
        m.setenv("DASHSCOPE_API_KEY", key)
        code = main(list(args))
    out, err = capsys.readouterr()
    for secret in (SECRET, OTHER):
        assert secret not in out and secret not in err
    return code, out, err


def batch_file(path: Path, n: int) -> Path:
    """A JSONL batch of ``n`` distinct flash requests with two references each."""
    lines = [
        json.dumps(
            {
                "key": f"shot-{i}",
                "model": "wan2.6-r2v-flash",
                "prompt": f"character1 hands character2 a letter, shot {i}",
                "reference_urls": [
                    "https://cdn.example.com/me.mp4",
                    "https://cdn.example.com/letter.png",
                ],
                "size": "1280*720",
                "duration": 5,
            }
        )
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def created_in(db: Path) -> int:
    """How many submissions the journal knows a task id for (read-only, never blocks)."""
    try:
        with raw_db(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return int(
                conn.execute(
                    "SELECT count(*) FROM submissions WHERE task_id IS NOT NULL"
                ).fetchone()[0]
            )
    except sqlite3.Error:
        return 0


def states_in(db: Path) -> dict[str, int]:
    """Records per state."""
    with raw_db(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM submissions GROUP BY state"))


def service(emu: Emulator, scale: float) -> list[str]:
    """Options pointing a command at ``emu``."""
    return ["--base-url", emu.base_url, "--time-scale", str(scale)]


def test_two_runs_then_two_resumes_with_kill_9_create_and_save_each_task_once(
    tmp_path: Path,
) -> None:
    """Two `run` at once on one journal: one owns it, the other is refused naming it
    (exit 2, nothing sent). The owner is killed with SIGKILL mid-batch. Two `resume` at
    once: one takes the dead owner's lease over at once (its pid is gone), the other is
    refused or, if it starts after the first ended, finds nothing left. In the end the
    emulator counts each task created once (0 duplicate creates), each video is saved
    once, and the journal says DOWNLOADED for all."""
    n = 8
    config = EmulatorConfig(time_scale=SCALE, seed=21, generation_time=(120.0, 240.0))
    with serve(config) as emu:
        batch = batch_file(tmp_path / "shots.jsonl", n)
        db = tmp_path / "shots.db"
        # Creates paced at the real service's 5/s so that the kill lands mid-submission.
        run_args = ["run", str(batch), "--journal", str(db), "--out", "videos"]
        runs = [start(*run_args, *service(emu, 1.0), cwd=tmp_path) for _ in range(2)]

        # One of them is refused at once; the other goes on.
        deadline = time.monotonic() + 60
        while all(p.poll() is None for p in runs):
            assert time.monotonic() < deadline, "neither run was refused"
            time.sleep(0.02)
        refused = next(p for p in runs if p.poll() is not None)
        owner = next(p for p in runs if p is not refused)
        code, _, err = finish(refused)
        assert code == 2, err
        assert "in use by another batch" in err and f"pid {owner.pid}" in err

        deadline = time.monotonic() + 60
        while created_in(db) < 3:
            assert owner.poll() is None, finish(owner)
            assert time.monotonic() < deadline, "the run created nothing in time"
            time.sleep(0.02)
        owner.send_signal(signal.SIGKILL)
        owner.communicate(timeout=10)  # reaped: its pid is gone
        assert owner.returncode == -signal.SIGKILL
        assert 3 <= emu.stats().tasks_created <= n

        resume_args = ["resume", "--journal", str(db), "--time-scale", str(SCALE), "--json"]
        resumes = [start(*resume_args, cwd=tmp_path) for _ in range(2)]
        results = [finish(p) for p in resumes]
        codes = sorted(code for code, _, _ in results)
        assert codes in ([0, 0], [0, 2]), results
        for code, out, err in results:
            if code == 2:
                assert "in use by another batch" in err
            else:
                doc: Any = json.loads(out)
                assert doc["unfinished"] == 0

        stats = emu.stats()
        assert stats.tasks_created == n
        assert stats.duplicate_creates == 0
    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == n, [v.name for v in videos]
    assert all(v.read_bytes()[4:8] == b"ftyp" for v in videos)
    assert states_in(db) == {"DOWNLOADED": n}


def test_resume_refuses_an_empty_file_and_another_accounts_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`resume` on an empty file: exit 2, "not a wanr2v journal", the file untouched.
    `resume` with another account's key: exit 2 naming the account mismatch, and no
    record is marked FAILED; the right key then finishes with exit 0."""
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    code, _, err = cli(monkeypatch, capsys, "resume", "--journal", str(empty))
    assert code == 2 and "not a wanr2v journal" in err
    assert empty.read_bytes() == b""

    config = EmulatorConfig(
        time_scale=SCALE,
        seed=22,
        generation_time=(120.0, 240.0),
        api_keys={SECRET: "alice", OTHER: "bob"},
    )
    with serve(config) as emu:
        batch = batch_file(tmp_path / "b.jsonl", 3)
        db = tmp_path / "b.db"
        run = start(
            "run", str(batch), "--journal", str(db), "--out", "videos",
            *service(emu, SCALE), cwd=tmp_path,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while created_in(db) < 3:
            assert run.poll() is None, finish(run)
            assert time.monotonic() < deadline
            time.sleep(0.02)
        run.send_signal(signal.SIGKILL)
        run.communicate(timeout=10)

        code, _, err = cli(monkeypatch, capsys, "resume", "--journal", str(db), key=OTHER)
        assert code == 2, err
        assert "another API key" in err
        assert "FAILED" not in states_in(db)
        code, _, err = cli(monkeypatch, capsys, "resume", "--journal", str(db))
        assert code == 0, err
        assert states_in(db) == {"DOWNLOADED": 3}
        assert emu.stats().tasks_created == 3


def test_run_refuses_a_changed_request_and_a_renamed_duplicate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A batch file edited under a known key, or a request copied under a new key: exit
    2 before anything is sent; --allow-duplicates lets the copy through."""
    monkeypatch.chdir(tmp_path)
    with serve(EmulatorConfig(time_scale=600.0, seed=23)) as emu:
        batch = batch_file(tmp_path / "b.jsonl", 2)
        db = tmp_path / "b.db"
        args = ["run", str(batch), "--journal", str(db), "--out", "videos", *service(emu, 600.0)]
        code, _, err = cli(monkeypatch, capsys, *args)
        assert code == 0, err
        sent = emu.stats().total_requests

        lines = batch.read_text().splitlines()
        changed = json.loads(lines[0])
        changed["prompt"] = "character1 tears the letter up"
        batch.write_text(json.dumps(changed) + "\n" + lines[1] + "\n")
        code, _, err = cli(monkeypatch, capsys, *args)
        assert code == 2 and "different request under key 'shot-0'" in err

        copy = json.loads(lines[0])
        copy["key"] = "shot-0-again"
        batch.write_text(lines[0] + "\n" + json.dumps(copy) + "\n")
        code, _, err = cli(monkeypatch, capsys, *args)
        assert code == 2 and "'shot-0'" in err and "--allow-duplicates" in err
        assert emu.stats().total_requests == sent

        code, _, err = cli(monkeypatch, capsys, *args, "--allow-duplicates")
        assert code == 0, err
        assert emu.stats().tasks_created == 3


def test_resume_of_a_journal_without_submissions_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A journal with no records (e.g. its main file copied alone before the first
    checkpoint) is not "tasks 0, exit 0": exit 2 saying there is nothing to resume."""
    import anyio

    from wanr2v.journal import SQLiteJournal

    db = tmp_path / "fresh.db"

    async def make() -> None:
        async with SQLiteJournal(db):
            pass

    anyio.run(make)
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(monkeypatch, capsys, "resume", "--journal", str(db))
    assert code == 2 and "holds no submissions" in err


def test_run_at_another_base_url_is_refused_by_the_library_and_resume_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A journal with unfinished tasks at emulator one, run again against emulator two:
    the library refuses it (exit 2, "unfinished tasks at"), nothing reaches two, and the
    journal still remembers one, so a plain `resume` finishes the tasks there."""
    monkeypatch.chdir(tmp_path)
    slow = EmulatorConfig(time_scale=SCALE, seed=24, generation_time=(120.0, 240.0))
    with serve(slow) as one, serve(EmulatorConfig(time_scale=SCALE, seed=25)) as two:
        batch = batch_file(tmp_path / "b.jsonl", 2)
        db = tmp_path / "b.db"
        run = start(
            "run", str(batch), "--journal", str(db), "--out", "videos",
            *service(one, SCALE), cwd=tmp_path,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while created_in(db) < 2:
            assert run.poll() is None, finish(run)
            assert time.monotonic() < deadline
            time.sleep(0.02)
        run.send_signal(signal.SIGKILL)
        run.communicate(timeout=10)

        args = ["run", str(batch), "--journal", str(db), "--out", "videos"]
        code, _, err = cli(monkeypatch, capsys, *args, *service(two, SCALE))
        assert code == 2, err
        assert f"unfinished tasks at {one.base_url.rstrip('/')}" in err
        assert two.stats().total_requests == 0
        assert "FAILED" not in states_in(db)

        code, _, err = cli(monkeypatch, capsys, "resume", "--journal", str(db))
        assert code == 0, err
        assert states_in(db) == {"DOWNLOADED": 2}
        assert one.stats().tasks_created == 2
