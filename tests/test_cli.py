"""The ``wanr2v`` command, run as a subprocess against emulators on loopback.

Every call goes through :func:`wanr2v_cmd`, which also checks that the API key never
appears in stdout or stderr.
"""

from __future__ import annotations

import io
import json
import os
import pty
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
from wanr2v._batchfile import read_batch_file
from wanr2v._cli._output import Output
from wanr2v.testing import EmulatorConfig, FaultRule, Quotas, serve
from wanr2v.testing._emulator import Emulator

SECRET = "sk-cli-test-SECRET-5f1e2d3c4b5a"
SCALE = 60.0
ANSI = "\x1b["
BAR = "━"


def run_env(key: str | None = SECRET) -> dict[str, str]:
    """The environment of a subprocess: the key (or none), no base URL or region."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DASHSCOPE_API_KEY", "DASHSCOPE_HTTP_BASE_URL", "DASHSCOPE_REGION")
    }
    if key is not None:
        env["DASHSCOPE_API_KEY"] = key
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wanr2v_cmd(
    *args: str, cwd: Path, key: str | None = SECRET, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m wanr2v ARGS``; the key must appear in neither stream."""
    proc = subprocess.run(
        [sys.executable, "-m", "wanr2v", *args],
        cwd=cwd,
        env=run_env(key),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if key:
        assert key not in proc.stdout and key not in proc.stderr
    return proc


def service(emu: Emulator) -> list[str]:
    """The options pointing a command at ``emu`` (its clock sped up ``SCALE`` times)."""
    return ["--base-url", emu.base_url, "--time-scale", str(SCALE)]


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    """The JSON document a ``--json`` command printed."""
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """A shared emulator on loopback, 60× faster than the service (1–2.5 s tasks)."""
    with serve(EmulatorConfig(time_scale=SCALE, seed=11, generation_time=(60.0, 150.0))) as emu:
        yield emu


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    """A local picture reference (uploaded by the client)."""
    from wanr2v._demo import make_png

    path = tmp_path / "object.png"
    path.write_bytes(make_png(240, 240, lambda x, y: (x % 256, y % 256, 128)))
    return path


def write_batch(path: Path, prompts: list[str], refs: list[str]) -> Path:
    """A JSONL batch: one flash request per prompt (the first keyed "first")."""
    lines = []
    for i, prompt in enumerate(prompts):
        entry: dict[str, Any] = {
            "model": "wan2.6-r2v-flash" if i % 2 == 0 else "wan2.6-r2v",
            "prompt": prompt,
            "reference_urls": refs,
            "size": "1280*720",
            "duration": 5,
        }
        if i == 0:
            entry["key"] = "first"
        lines.append(json.dumps(entry))
    path.write_text("\n".join(lines) + "\n")
    return path


# --- help, setup and exit codes --------------------------------------------------------


def test_help_lists_every_command_exit_codes_and_examples(tmp_path: Path) -> None:
    """--help names the ten commands, the exit codes and examples; python -m works."""
    proc = wanr2v_cmd("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for command in (
        "submit",
        "status",
        "wait",
        "cancel",
        "list",
        "download",
        "run",
        "resume",
        "emulator",
        "demo",
    ):
        assert command in proc.stdout
    assert "exit codes:" in proc.stdout and "130" in proc.stdout
    assert "wanr2v run requests.jsonl --journal batch.db --out videos/" in proc.stdout
    run_help = wanr2v_cmd("run", "--help", cwd=tmp_path)
    assert "[[requests]]" in run_help.stdout and "--base-url" in run_help.stdout


def test_missing_key_is_a_usage_error_naming_the_variable(tmp_path: Path) -> None:
    """No DASHSCOPE_API_KEY: exit 2 and a message naming it (plain and --json)."""
    base = ["--base-url", "http://127.0.0.1:9/api/v1"]
    proc = wanr2v_cmd("status", "some-task", *base, cwd=tmp_path, key=None)
    assert proc.returncode == 2
    assert "DASHSCOPE_API_KEY" in proc.stderr
    proc = wanr2v_cmd("list", *base, "--json", cwd=tmp_path, key=None)
    assert proc.returncode == 2
    assert as_json(proc)["exit_code"] == 2


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    """Unknown options, bad regions and invalid requests exit 2 before sending anything."""
    assert wanr2v_cmd("status", cwd=tmp_path).returncode == 2  # no task id
    assert wanr2v_cmd("list", "--region", "mars", cwd=tmp_path).returncode == 2
    proc = wanr2v_cmd(
        "submit", "--prompt", "x", "--ref", "a.gif", "--base-url", "http://127.0.0.1:9/api/v1",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2 and "--ref #1" in proc.stderr  # named by its flag


def test_a_refused_key_exits_2_and_is_never_printed(emulator: Emulator, tmp_path: Path) -> None:
    """A key the service refuses (401): exit 2, and the key shows nowhere."""
    bad = "not-a-valid-key-SECRET-0000"
    proc = wanr2v_cmd("list", *service(emulator), cwd=tmp_path, key=bad)
    assert proc.returncode == 2
    assert "InvalidApiKey" in proc.stderr or "401" in proc.stderr or "key" in proc.stderr


def test_progress_bars_only_when_stdout_is_a_terminal() -> None:
    """Rich output needs a terminal; a pipe or a file gets plain text, JSON mode none."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert not Output(json_mode=False, stdout=io.StringIO()).rich
    assert Output(json_mode=False, stdout=Terminal()).rich
    assert not Output(json_mode=True, stdout=Terminal()).rich


def test_without_rich_a_terminal_gets_plain_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich is optional (the ``cli`` extra): without it tables are plain columns."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("wanr2v._cli._output._rich_available", lambda: False)
    out = Output(json_mode=False, stdout=Terminal())
    assert not out.rich
    out.secrets.append(SECRET)
    out.table(["KEY", "DETAIL"], [["a", f"refused {SECRET}"]])
    assert out.stdout.getvalue().splitlines()[1].startswith("a    refused sk-…")  # type: ignore[union-attr]
    assert SECRET not in out.stdout.getvalue()  # type: ignore[union-attr]


# --- single tasks ------------------------------------------------------------------------


def test_submit_wait_status_download(emulator: Emulator, tmp_path: Path, picture: Path) -> None:
    """submit → wait --out → status → download; unknown tasks and late cancels exit 1."""
    proc = wanr2v_cmd(
        "submit",
        "--prompt", "character1 rolls across character2",
        "--ref", str(picture),
        "--ref", "https://example.com/background.jpg",
        "--size", "1280*720", "--no-audio", "--json",
        *service(emulator),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    task_id = as_json(proc)["task"]["task_id"]

    proc = wanr2v_cmd(
        "wait", task_id, "--out", "videos", "--json", *service(emulator), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    [row] = as_json(proc)["tasks"]
    assert row["status"] == "SUCCEEDED"
    assert Path(row["path"]).read_bytes()[4:8] == b"ftyp"

    proc = wanr2v_cmd("status", task_id, *service(emulator), cwd=tmp_path)
    assert proc.returncode == 0
    assert task_id in proc.stdout and "SUCCEEDED" in proc.stdout
    assert ANSI not in proc.stdout

    proc = wanr2v_cmd("download", task_id, "--out", "again", *service(emulator), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "again" / f"{task_id}.mp4").exists()

    proc = wanr2v_cmd("cancel", task_id, "--json", *service(emulator), cwd=tmp_path)
    assert proc.returncode == 1  # no longer PENDING
    assert as_json(proc)["tasks"][0]["canceled"] is False

    proc = wanr2v_cmd("status", "no-such-task", "--json", *service(emulator), cwd=tmp_path)
    assert proc.returncode == 1
    assert as_json(proc)["tasks"][0]["status"] == "UNKNOWN"


def test_progress_bar_is_drawn_on_a_terminal(
    emulator: Emulator, tmp_path: Path, picture: Path
) -> None:
    """Under a pseudo-terminal `wait` draws rich's bar (and in a pipe it does not)."""
    proc = wanr2v_cmd(
        "submit", "--prompt", "character1 on a terminal", "--ref", str(picture), "--wait",
        *service(emulator), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert BAR not in proc.stdout and ANSI not in proc.stdout
    assert "succeeded" in proc.stdout  # plain progress lines instead
    task_id = proc.stdout.split("created task ", 1)[1].split()[0]

    leader, follower = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-m", "wanr2v", "wait", task_id, *service(emulator)],
        cwd=tmp_path,
        env={**run_env(), "COLUMNS": "100"},
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert child.wait(timeout=30) == 0
    os.close(leader)
    text = b"".join(chunks).decode(errors="replace")
    assert BAR in text and SECRET not in text


def test_cancel_a_pending_task(tmp_path: Path, picture: Path) -> None:
    """A task queued behind a busy slot is canceled (exit 0) and ends CANCELED."""
    config = EmulatorConfig(
        time_scale=SCALE, seed=3, generation_time=(900.0, 900.0), quotas=Quotas(running=1)
    )
    with serve(config) as emu:
        ids = []
        for n in range(2):
            proc = wanr2v_cmd(
                "submit", "--prompt", f"character1 queue {n}", "--ref", str(picture), "--json",
                *service(emu), cwd=tmp_path,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            ids.append(as_json(proc)["task"]["task_id"])
        proc = wanr2v_cmd("cancel", ids[1], *service(emu), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "canceled" in proc.stdout
        proc = wanr2v_cmd("status", ids[1], "--json", *service(emu), cwd=tmp_path)
        assert as_json(proc)["tasks"][0]["status"] == "CANCELED" and proc.returncode == 1


def test_an_ambiguous_submit_is_reconciled_not_sent_twice(tmp_path: Path, picture: Path) -> None:
    """The emulator drops the create's connection after making the task: one task, 0 dups."""
    config = EmulatorConfig(time_scale=SCALE, seed=5, generation_time=(60.0, 90.0))
    with serve(config) as emu:
        emu.faults.add(FaultRule(kind="drop_after_commit", endpoint="create", count=1))
        proc = wanr2v_cmd(
            "submit", "--prompt", "character1 and the lost answer", "--ref", str(picture),
            "--json", *service(emu), cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        stats = emu.stats()
        assert stats.tasks_created == 1 and stats.duplicate_creates == 0
        assert as_json(proc)["task"]["task_id"] == emu.task_records()[0].task_id


def test_an_unresolvable_submit_exits_3(tmp_path: Path) -> None:
    """Lost answer after an older same-prompt task: the new task is adopted, not the old;
    lost answer while the task list cannot be read: nothing re-sent, exit 3."""
    config = EmulatorConfig(time_scale=SCALE, seed=6, generation_time=(30.0, 30.0))
    same = ["submit", "--prompt", "character1, again", "--ref", "https://example.com/a.png"]
    with serve(config) as emu:
        first = wanr2v_cmd(*same, "--wait", "--json", *service(emu), cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        emu.faults.add(FaultRule(kind="drop_after_commit", endpoint="create", count=1))
        proc = wanr2v_cmd(*same, "--json", *service(emu), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert emu.stats().tasks_created == 2  # the lost create was not sent again
        assert "SubmitOutcomeUnknownError" not in proc.stdout
        emu.faults.add(FaultRule(kind="drop_after_commit", endpoint="create", count=1))
        emu.faults.add(FaultRule(kind="server_error", endpoint="list", count=1000))
        proc = wanr2v_cmd(*same, "--json", *service(emu), cwd=tmp_path)
        assert proc.returncode == 3, proc.stderr
        error = as_json(proc)["error"]
        assert error["type"] == "SubmitOutcomeUnknownError"
        assert emu.stats().tasks_created == 3  # made once, never re-sent


# --- batches ---------------------------------------------------------------------------


def test_run_then_status_list_download(emulator: Emulator, tmp_path: Path, picture: Path) -> None:
    """`run` saves every video and reports; its tasks show in status, list and download."""
    batch = write_batch(
        tmp_path / "requests.jsonl",
        [f"character1 juggles character2, take {n}" for n in range(3)],
        [str(picture.name), "https://example.com/clip.mp4"],
    )
    proc = wanr2v_cmd(
        "run", str(batch), "--journal", "batch.db", "--out", "videos", "--json",
        *service(emulator), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = as_json(proc)
    assert doc["summary"]["succeeded"] == 3 and doc["summary"]["downloaded"] == 3
    assert doc["summary"]["estimated_cost_usd"] > 0
    assert [it["key"] for it in doc["items"]] == ["first", "2", "3"]
    assert doc["stats"]["requests"]["create"] == 3
    ids = [it["task_id"] for it in doc["items"]]
    assert all((tmp_path / "videos" / f"{k}.mp4").exists() for k in ("first", "2", "3"))

    proc = wanr2v_cmd("status", *ids, "--json", *service(emulator), cwd=tmp_path)
    assert proc.returncode == 0
    assert {t["status"] for t in as_json(proc)["tasks"]} == {"SUCCEEDED"}

    proc = wanr2v_cmd("list", "--json", "--limit", "100", *service(emulator), cwd=tmp_path)
    assert proc.returncode == 0
    assert set(ids) <= {t["task_id"] for t in as_json(proc)["tasks"]}
    proc = wanr2v_cmd("list", "--status", "SUCCEEDED", *service(emulator), cwd=tmp_path)
    assert proc.returncode == 0 and ids[0] in proc.stdout

    proc = wanr2v_cmd("download", ids[1], "--out", "dl", *service(emulator), cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / "dl" / f"{ids[1]}.mp4").exists()

    # The same batch again: the journal knows it is done; plain output, no bars.
    proc = wanr2v_cmd("run", str(batch), "--journal", "batch.db", *service(emulator), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "succeeded 3" in proc.stdout and "nothing to do" in proc.stdout
    assert "estimated cost" not in proc.stdout  # nothing was billed by this run
    assert ANSI not in proc.stdout and BAR not in proc.stdout
    assert emulator.stats().duplicate_creates == 0


def test_a_failed_task_exits_1(emulator: Emulator, tmp_path: Path) -> None:
    """A reference the service cannot fetch ends its task FAILED: exit 1, the rest saved."""
    batch = tmp_path / "b.jsonl"
    good = {"model": "wan2.6-r2v-flash", "prompt": "character1 fine", "size": "1280*720"}
    batch.write_text(
        json.dumps({**good, "key": "ok", "reference_urls": ["https://example.com/a.png"]})
        + "\n"
        + json.dumps({**good, "key": "bad", "reference_urls": ["https://host.invalid/a.png"]})
        + "\n"
    )
    proc = wanr2v_cmd("run", str(batch), "--out", "v", "--json", *service(emulator), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    items = {it["key"]: it for it in as_json(proc)["items"]}
    assert items["ok"]["ok"] and items["ok"]["path"]
    assert items["bad"]["status"] == "FAILED" and items["bad"]["error"]["code"]


def test_bad_batch_files_exit_2_and_dry_run_needs_no_key(tmp_path: Path) -> None:
    """A bad line is named (exit 2); --dry-run checks a file and prices it without a key."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"model": "wan2.6-r2v", "prompt": "x", "reference_urls": ["a.mp4"]}\n{oops\n')
    proc = wanr2v_cmd("run", str(bad), cwd=tmp_path, key=None)
    assert proc.returncode == 2 and "bad.jsonl:2" in proc.stderr
    bad.write_text('{"model": "wan2.6-r2v", "prompt": "x", "reference_urls": ["a.mp4"], "fps": 1}')
    proc = wanr2v_cmd("run", str(bad), cwd=tmp_path, key=None)
    assert proc.returncode == 2 and "fps" in proc.stderr

    good = tmp_path / "good.toml"
    good.write_text(
        '[defaults]\nmodel = "wan2.6-r2v"\nsize = "1920*1080"\nduration = 10\n\n'
        '[[requests]]\nkey = "a"\nprompt = "character1"\nreference_urls = ["clip.mp4"]\n'
    )
    proc = wanr2v_cmd("run", str(good), "--dry-run", "--json", cwd=tmp_path, key=None)
    assert proc.returncode == 2 and "clip.mp4" in proc.stderr  # local files are checked
    from wanr2v.testing._mp4 import make_mp4

    (tmp_path / "clip.mp4").write_bytes(make_mp4(2.0))
    proc = wanr2v_cmd("run", str(good), "--dry-run", "--json", cwd=tmp_path, key=None)
    assert proc.returncode == 0, proc.stderr
    assert as_json(proc)["estimated_cost_usd"] == pytest.approx(2.25)  # (10 + 5) s × 0.15


def test_read_batch_file_reads_toml_defaults_and_resolves_relative_paths(tmp_path: Path) -> None:
    """TOML [defaults] fill each [[requests]]; local paths are relative to the file."""
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "batch.toml"
    path.write_text(
        '[defaults]\nmodel = "wan2.6-r2v-flash"\naudio = false\n\n'
        '[[requests]]\nprompt = "one"\nreference_urls = ["me.mp4", "https://x.test/a.png"]\n\n'
        '[[requests]]\nkey = "two"\nprompt = "two"\nmodel = "wan2.6-r2v"\naudio = true\n'
        'reference_urls = ["/abs/b.png"]\n'
    )
    batch = read_batch_file(path)
    assert list(batch) == ["1", "two"]
    assert batch["1"].audio is False and batch["1"].model == "wan2.6-r2v-flash"
    assert batch["1"].reference_urls == (str(tmp_path / "sub" / "me.mp4"), "https://x.test/a.png")
    assert batch["two"].model == "wan2.6-r2v" and batch["two"].reference_urls == ("/abs/b.png",)


# --- durability --------------------------------------------------------------------------


def created_in(db: Path) -> int:
    """Submissions the journal knows a task id for (0 while it does not exist yet)."""
    if not db.exists():
        return 0
    try:
        with raw_db(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute("SELECT count(*) FROM submissions WHERE task_id IS NOT NULL")
            return int(row.fetchone()[0])
    except sqlite3.Error:
        return 0


def start_run(batch: Path, db: Path, emu: Emulator, cwd: Path, *, scale: float) -> Any:
    """``wanr2v run`` in the background (creates paced as at ``scale``)."""
    return subprocess.Popen(
        [
            sys.executable, "-m", "wanr2v", "run", str(batch), "--journal", str(db),
            "--out", "videos", "--base-url", emu.base_url, "--time-scale", str(scale),
        ],
        cwd=cwd,
        env=run_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def wait_for_created(db: Path, n: int, proc: Any, deadline: float = 180) -> None:
    """Wait until the journal records ``n`` task ids (the run must still be going);
    ``deadline`` only bounds a hung run, far above any run's time on a loaded machine."""
    end = time.monotonic() + deadline
    while created_in(db) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "the run created nothing in time"
        time.sleep(0.02)


def test_kill_9_mid_batch_then_resume_pays_nothing_twice(tmp_path: Path, picture: Path) -> None:
    """SIGKILL during `run`; `resume` finishes every task and the emulator counts 0 dups."""
    config = EmulatorConfig(time_scale=SCALE, seed=9, generation_time=(120.0, 240.0))
    n = 6
    with serve(config) as emu:
        batch = write_batch(
            tmp_path / "big.jsonl",
            [f"character1 and the crash, scene {i}" for i in range(n)],
            [str(picture), "https://example.com/clip.mp4"],
        )
        db = tmp_path / "batch.db"
        # Creates paced at the real service's 5/s, so the kill lands mid-submission;
        # the first three tasks stay PENDING (by poll count) until the kill, so the run
        # is still going when it lands, however slow the machine.
        emu.script_polls(("PENDING", 10**9), "SUCCEEDED", tasks=3)
        proc = start_run(batch, db, emu, tmp_path, scale=1.0)
        wait_for_created(db, 3, proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        before = emu.stats().tasks_created
        assert before >= 3  # some were made; usually not all
        for record in emu.task_records()[:3]:  # now let them finish
            emu.script_polls("SUCCEEDED", task_id=record.task_id)

        resumed = wanr2v_cmd(
            "resume", "--journal", str(db), "--time-scale", str(SCALE), "--json", cwd=tmp_path
        )
        assert resumed.returncode == 0, resumed.stderr
        doc = as_json(resumed)
        assert doc["summary"]["succeeded"] == n and doc["unfinished"] == 0
        assert doc["out"] == str(tmp_path / "videos")  # remembered by the journal
        assert len(list((tmp_path / "videos").glob("*.mp4"))) == n
        stats = emu.stats()
        assert stats.tasks_created == n
        assert stats.duplicate_creates == 0


def test_ctrl_c_exits_130_and_names_the_resume_command(tmp_path: Path, picture: Path) -> None:
    """SIGINT during `run`: exit 130, a hint to resume; resume then finishes with exit 0."""
    config = EmulatorConfig(time_scale=SCALE, seed=10, generation_time=(90.0, 150.0))
    with serve(config) as emu:
        batch = write_batch(
            tmp_path / "b.jsonl",
            [f"character1 interrupted, scene {i}" for i in range(3)],
            [str(picture)],
        )
        db = tmp_path / "b.db"
        # The tasks stay PENDING (by poll count, not by clock) until the run is
        # interrupted: however slow the machine, SIGINT lands on a running batch.
        emu.script_polls(("PENDING", 10**9), "SUCCEEDED", tasks=3)
        proc = start_run(batch, db, emu, tmp_path, scale=SCALE)
        wait_for_created(db, 3, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert f"wanr2v resume --journal {db}" in err
        for record in emu.task_records():  # now let them finish
            emu.script_polls("SUCCEEDED", task_id=record.task_id)
        resumed = wanr2v_cmd("resume", "--journal", str(db), cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        assert emu.stats().duplicate_creates == 0


# --- emulator and demo -----------------------------------------------------------------


def test_emulator_command_serves_until_sigterm(tmp_path: Path) -> None:
    """`wanr2v emulator --json` prints its base URL first; other commands use it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "wanr2v", "emulator", "--json", "--time-scale", "60"],
        cwd=tmp_path,
        env=run_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())  # the first line, as soon as it serves
        listed = wanr2v_cmd("list", "--base-url", info["base_url"], "--json", cwd=tmp_path)
        assert listed.returncode == 0 and as_json(listed)["tasks"] == []
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    assert proc.returncode == 0


def test_demo_end_to_end(tmp_path: Path) -> None:
    """`wanr2v demo` (the README's first command) saves every video and prints a summary."""
    # The timeout bounds a hang only: a loaded machine must not decide this test.
    proc = wanr2v_cmd("demo", "--out", "demo-videos", cwd=tmp_path, key=None, timeout=300)
    assert proc.returncode == 0, proc.stderr
    videos = sorted(p.name for p in (tmp_path / "demo-videos").glob("*.mp4"))
    assert len(videos) == 5
    out = proc.stdout
    assert "tasks 5 · succeeded 5" in out
    assert "0 duplicate creates" in out and "429s 0" in out
    assert "queries sent" in out and "estimated cost" in out and "USD" in out
    assert ANSI not in out and BAR not in out


def test_demo_json(tmp_path: Path) -> None:
    """`wanr2v demo --json` gives one document: items, costs, emulator counters."""
    proc = wanr2v_cmd("demo", "--json", "--time-scale", "120", "--out", "v", cwd=tmp_path, key=None)
    assert proc.returncode == 0, proc.stderr
    doc = as_json(proc)
    assert doc["ok"] and doc["summary"]["succeeded"] == 5
    models = {it["model"] for it in doc["items"]}
    assert models == {"wan2.6-r2v", "wan2.6-r2v-flash"}
    assert doc["emulator"]["duplicate_creates"] == 0
    assert doc["summary"]["estimated_cost_usd"] == pytest.approx(
        sum(it["estimated_cost_usd"] for it in doc["items"]), abs=0.01
    )
