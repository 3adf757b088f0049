"""The command line, the public surface and the pytest fixture of wanr2v.testing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import wanr2v.testing
from wanr2v.testing import Emulator, EmulatorConfig
from wanr2v.testing._cli import build_parser, config_from_args


def test_public_surface_is_pinned() -> None:
    """__all__ is explicit, sorted, and names live in wanr2v.testing."""
    assert wanr2v.testing.__all__ == sorted(wanr2v.testing.__all__)
    assert set(wanr2v.testing.__all__) == {
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
    }
    assert Emulator.__module__ == "wanr2v.testing"


def test_importing_the_package_does_not_import_starlette() -> None:
    """wanr2v.testing and its pytest plugin import without Starlette or uvicorn."""
    code = (
        "import sys, wanr2v.testing, wanr2v.testing.pytest_plugin;"
        "print('starlette' in sys.modules, 'uvicorn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_parser_builds_a_config() -> None:
    """Options map onto the config: keys, regions, time scale, seed, quotas."""
    args = build_parser().parse_args(
        [
            "--time-scale",
            "100",
            "--seed",
            "1",
            "--api-key",
            "k1",
            "--api-key",
            "k2",
            "--region",
            "singapore=s1",
            "--no-quotas",
            "--generation-time",
            "4",
            "12",
        ]
    )
    cfg = config_from_args(args)
    assert isinstance(cfg, EmulatorConfig)
    assert dict(cfg.api_keys) == {"k1": "default", "k2": "default"}
    assert dict(cfg.regions["singapore"].api_keys) == {"s1": "default"}
    assert (cfg.time_scale, cfg.seed, cfg.generation_time) == (100.0, 1, (4.0, 12.0))
    assert cfg.quotas.create_per_s is None


def test_module_serves_until_interrupted() -> None:
    """`python -m wanr2v.testing` prints its base URL, serves, and stops on Ctrl-C."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wanr2v.testing",
            "--port",
            "0",
            "--time-scale",
            "100",
            "--seed",
            "1",
            "--api-key",
            "sk-cli",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"wanr2v emulator listening on (http://127\.0\.0\.1:\d+/api/v1)", line)
        assert match, line
        base = match.group(1)
        req = urllib.request.Request(
            base + "/tasks/abc", headers={"Authorization": "Bearer sk-cli"}
        )
        deadline = time.monotonic() + 60  # a hang bound only
        while True:
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    body = json.load(resp)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert body["output"]["task_status"] == "UNKNOWN"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        if proc.stdout is not None:
            proc.stdout.close()


def test_wan_emulator_fixture(wan_emulator: Emulator) -> None:
    """The plugin's wan_emulator fixture is a running loopback emulator."""
    assert wan_emulator.base_url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(wan_emulator.origin + "/_emulator/clock", timeout=5) as resp:
        assert "now" in json.load(resp)


def test_wan_emulator_config_can_be_overridden(tmp_path: Path) -> None:
    """Users override wan_emulator_config in their conftest to reconfigure wan_emulator."""
    (tmp_path / "conftest.py").write_text(
        "import pytest\n"
        "from wanr2v.testing import EmulatorConfig\n\n"
        "@pytest.fixture\n"
        "def wan_emulator_config():\n"
        "    return EmulatorConfig(api_keys=['sk-override'], seed=4)\n"
    )
    (tmp_path / "test_user.py").write_text(
        "def test_it(wan_emulator):\n"
        "    assert wan_emulator.seed == 4\n"
        "    assert dict(wan_emulator.config.api_keys) == {'sk-override': 'default'}\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout
