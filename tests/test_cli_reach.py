"""The ``wanr2v`` command without traps, run as a subprocess against an emulator on
loopback: journals you can mend (--retry-failed, journal show), file names by key,
a budget, dry runs that check what they can, one labelled time zone, and the rough
edges of submit, wait and download."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli import SECRET, as_json, run_env, service, wanr2v_cmd
from wanr2v._demo import make_png
from wanr2v.testing import EmulatorConfig, serve
from wanr2v.testing._emulator import Emulator


@pytest.fixture
def emu() -> Iterator[Emulator]:
    """An emulator of its own per test (task counts are asserted), 60x faster."""
    with serve(EmulatorConfig(time_scale=60.0, seed=5, generation_time=(60.0, 120.0))) as e:
        yield e


def png(path: Path) -> Path:
    path.write_bytes(make_png(240, 240, lambda x, y: (x % 256, y % 256, 90)))
    return path


def line(key: str, ref: str, seed: int, **more: Any) -> str:
    entry = {
        "key": key,
        "model": "wan2.6-r2v-flash",
        "prompt": f"character1 juggles ({key})",
        "reference_urls": [ref],
        "size": "1280*720",
        "duration": 2,
        "seed": seed,
        **more,
    }
    return json.dumps(entry)


def test_retry_failed_after_the_missing_file_appears(emu: Emulator, tmp_path: Path) -> None:
    """`run mixed.jsonl --journal j.db` with one missing reference file fails that item
    (exit 1, nothing sent for it); once the file exists, `run ... --retry-failed` saves
    every video, exits 0, and no task was created twice."""
    png(tmp_path / "here.png")
    batch = tmp_path / "mixed.jsonl"
    batch.write_text(
        "\n".join(
            [
                line("alpha", "here.png", 1),
                line("beta", "later.png", 2),
                line("gamma", "https://cdn.example.com/g.png", 3),
            ]
        )
        + "\n"
    )
    args = ["run", str(batch), "--journal", "j.db", "--out", "videos", *service(emu)]
    first = wanr2v_cmd(*args, cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    assert "later.png" in first.stdout and "Traceback" not in first.stderr
    assert emu.stats().tasks_created == 2

    again = wanr2v_cmd(*args, cwd=tmp_path)
    assert again.returncode == 1 and "--retry-failed" in again.stdout
    assert emu.stats().tasks_created == 2

    png(tmp_path / "later.png")
    fixed = wanr2v_cmd(*args, "--retry-failed", "--json", cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    doc = as_json(fixed)
    assert all(it["ok"] for it in doc["items"])
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == [
        "alpha.mp4",
        "beta.mp4",
        "gamma.mp4",
    ]
    stats = emu.stats()
    assert stats.tasks_created == 3 and stats.duplicate_creates == 0


def test_journal_show_lists_states_tasks_and_costs(emu: Emulator, tmp_path: Path) -> None:
    """`wanr2v journal show j.db` prints every item with its state, task, cost and file
    or error, without a key; --json gives the same as a document."""
    batch = tmp_path / "b.jsonl"
    batch.write_text(
        line("ok", "https://cdn.example.com/a.png", 1) + "\n" + line("gone", "nope.png", 2) + "\n"
    )
    run = wanr2v_cmd("run", str(batch), "--journal", "j.db", *service(emu), cwd=tmp_path)
    assert run.returncode == 1
    shown = wanr2v_cmd("journal", "show", "j.db", cwd=tmp_path, key=None)
    assert shown.returncode == 0, shown.stderr
    assert "DOWNLOADED" in shown.stdout and "FAILED" in shown.stdout
    assert "nope.png" in shown.stdout and "USD" in shown.stdout
    doc = as_json(wanr2v_cmd("journal", "show", "j.db", "--json", cwd=tmp_path, key=None))
    items = {it["key"]: it for it in doc["items"]}
    assert items["ok"]["state"] == "DOWNLOADED" and items["ok"]["task_id"]
    assert items["ok"]["cost_usd"] > 0 and items["gone"]["cost_usd"] == 0
    assert items["gone"]["task_id"] is None and doc["cost_usd"] == items["ok"]["cost_usd"]
    missing = wanr2v_cmd("journal", "show", "nothing.db", cwd=tmp_path, key=None)
    assert missing.returncode == 2 and "no journal" in missing.stderr


def test_names_budget_and_dry_run(emu: Emulator, tmp_path: Path) -> None:
    """--name names the files; --budget creates no task over it (BudgetExceededError,
    exit 1) and --dry-run prints the estimate against it; bad values exit 2 naming the
    flag."""
    batch = tmp_path / "b.jsonl"
    batch.write_text(
        "\n".join(line(f"k{i}", "https://cdn.example.com/b.png", i) for i in range(3)) + "\n"
    )
    dry = wanr2v_cmd("run", str(batch), "--dry-run", "--budget", "0.2", cwd=tmp_path, key=None)
    assert dry.returncode == 0, dry.stderr
    assert "budget 0.20 USD" in dry.stdout and "over by" in dry.stdout
    doc = as_json(
        wanr2v_cmd(
            "run", str(batch), "--dry-run", "--budget", "5", "--json", cwd=tmp_path, key=None
        )
    )
    assert doc["within_budget"] is True and doc["budget_usd"] == 5

    proc = wanr2v_cmd(
        "run", str(batch), "--journal", "j.db", "--out", "v", "--budget", "0.2",
        "--name", "{key}-{model}.mp4", "--json", *service(emu), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    items = as_json(proc)["items"]
    refused = [it for it in items if it["error"] and it["error"]["type"] == "BudgetExceededError"]
    assert len(refused) == 1 and refused[0]["task_id"] is None
    assert emu.stats().tasks_created == 2
    made = sorted(f"{it['key']}-wan2.6-r2v-flash.mp4" for it in items if it["ok"])
    assert len(made) == 2 and sorted(p.name for p in (tmp_path / "v").iterdir()) == made
    for flag, value in (("--name", "same.mp4"), ("--budget", "lots")):
        bad = wanr2v_cmd("run", str(batch), flag, value, *service(emu), cwd=tmp_path)
        assert bad.returncode == 2 and flag in bad.stderr and "Traceback" not in bad.stderr


def test_unwritable_out_is_refused_before_paying(emu: Emulator, tmp_path: Path) -> None:
    """--out under a file (no folder can be made there): exit 2 naming --out, no task
    created, no traceback; the same for download."""
    (tmp_path / "blocker").write_text("a file")
    batch = tmp_path / "b.jsonl"
    batch.write_text(line("a", "https://cdn.example.com/b.png", 1) + "\n")
    proc = wanr2v_cmd(
        "run", str(batch), "--out", "blocker/videos", *service(emu), cwd=tmp_path
    )  # fmt: skip
    assert proc.returncode == 2 and "--out" in proc.stderr and "Traceback" not in proc.stderr
    assert emu.stats().tasks_created == 0
    proc = wanr2v_cmd("download", "t-1", "--out", "blocker/x", *service(emu), cwd=tmp_path)
    assert proc.returncode == 2 and "--out" in proc.stderr and "Traceback" not in proc.stderr


def test_submit_wait_and_download_rough_edges(emu: Emulator, tmp_path: Path) -> None:
    """submit --wait without --out shows the URL and the next command; submit --out
    waits and saves; download --out NAME.mp4 writes that file (not a folder); a --ref
    error names --ref; wait --timeout exits 3 as the table says."""
    submit = ["submit", "--prompt", "character1 waves", "--size", "1280*720", "--duration", "2"]
    proc = wanr2v_cmd(
        *submit, "--ref", "https://cdn.example.com/a.png", "--wait", *service(emu), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "http" in proc.stdout and "wanr2v download" in proc.stdout
    assert "the task goes on" in proc.stdout
    task_id = proc.stdout.split("created task ")[1].split()[0]

    proc = wanr2v_cmd(
        *submit, "--ref", "https://cdn.example.com/b.png", "--out", "one.mp4",
        *service(emu), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "one.mp4").is_file()

    proc = wanr2v_cmd("download", task_id, "--out", "my-video.mp4", *service(emu), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "my-video.mp4").is_file()

    proc = wanr2v_cmd(*submit, "--ref", "missing-dir/", *service(emu), cwd=tmp_path)
    assert proc.returncode == 2 and "--ref #1" in proc.stderr and "input." not in proc.stderr

    slow = wanr2v_cmd(
        *submit, "--ref", "https://cdn.example.com/c.png", *service(emu), cwd=tmp_path
    )
    slow_id = slow.stdout.split("created task ")[1].split()[0]
    proc = wanr2v_cmd("wait", slow_id, "--timeout", "0.01", *service(emu), cwd=tmp_path)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "submitting" not in proc.stdout


def test_times_in_one_labelled_zone(emu: Emulator, tmp_path: Path) -> None:
    """`status` and `list` show the same task's submit time in UTC, labelled as such."""
    proc = wanr2v_cmd(
        "submit", "--prompt", "character1 waves", "--ref", "https://cdn.example.com/a.png",
        *service(emu), cwd=tmp_path,
    )  # fmt: skip
    task_id = proc.stdout.split("created task ")[1].split()[0]
    status = wanr2v_cmd("status", task_id, *service(emu), cwd=tmp_path)
    listed = wanr2v_cmd("list", *service(emu), cwd=tmp_path)
    assert "SUBMITTED (UTC)" in status.stdout and "CREATED (UTC)" in listed.stdout

    def stamp(text: str) -> datetime:
        row = next(r for r in text.splitlines() if r.startswith(task_id))
        parts = row.split()
        i = next(n for n, p in enumerate(parts) if p.count("-") == 2 and len(p) == 10)
        return datetime.fromisoformat(f"{parts[i]} {parts[i + 1]}")

    assert abs((stamp(status.stdout) - stamp(listed.stdout)).total_seconds()) < 120


def test_verbose_and_wanr2v_log(emu: Emulator, tmp_path: Path) -> None:
    """-vv and WANR2V_LOG=debug log the requests on stderr (scrubbed of the key); by
    default nothing is logged."""
    quiet = wanr2v_cmd("list", *service(emu), cwd=tmp_path)
    assert "wanr2v: debug" not in quiet.stderr
    loud = wanr2v_cmd("list", "-vv", *service(emu), cwd=tmp_path)
    assert loud.returncode == 0 and "wanr2v: debug:" in loud.stderr and "GET" in loud.stderr
    env = {**run_env(), "WANR2V_LOG": "debug"}
    proc = subprocess.run(
        [sys.executable, "-m", "wanr2v", "list", *service(emu)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "wanr2v: debug:" in proc.stderr and SECRET not in proc.stderr + proc.stdout


def test_emulator_json_head_does_not_hang(tmp_path: Path) -> None:
    """`URL=$(wanr2v emulator --json | head -1)` returns with the first line while the
    emulator goes on serving in the background (its pid is in that line)."""
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m wanr2v emulator --json --port 0 | head -1"],
        cwd=tmp_path, env=run_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert time.monotonic() - started < 30
    doc = json.loads(proc.stdout.splitlines()[0])
    pid = int(doc["pid"])
    try:
        listed = wanr2v_cmd("list", "--base-url", doc["base_url"], cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
    finally:
        import os
        import signal

        os.kill(pid, signal.SIGTERM)


def test_resume_keeps_the_budget_and_retries_failed(emu: Emulator, tmp_path: Path) -> None:
    """`resume` keeps the budget `run` was given; `resume --retry-failed --budget MORE`
    runs the items the budget stopped, and nothing is created twice."""
    batch = tmp_path / "b.jsonl"
    batch.write_text(
        "\n".join(line(f"k{i}", "https://cdn.example.com/r.png", i) for i in range(2)) + "\n"
    )
    run = ["run", str(batch), "--journal", "j.db", "--out", "v", "--budget", "0.15"]
    assert wanr2v_cmd(*run, *service(emu), cwd=tmp_path).returncode == 1
    assert emu.stats().tasks_created == 1
    proc = wanr2v_cmd("resume", "--journal", "j.db", "--retry-failed", *service(emu), cwd=tmp_path)
    assert proc.returncode == 1 and "BudgetExceededError" in proc.stdout
    assert emu.stats().tasks_created == 1
    proc = wanr2v_cmd(
        "resume", "--journal", "j.db", "--retry-failed", "--budget", "5", *service(emu),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["k0.mp4", "k1.mp4"]
    assert emu.stats().tasks_created == 2 and emu.stats().duplicate_creates == 0
