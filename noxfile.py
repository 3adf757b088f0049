"""Sessions: tests (what CI runs), compat, lint, typecheck, docs, bench, chaos, stress."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]

PY = "3.11"


@nox.session(python=PY)
def tests(session: nox.Session) -> None:
    """The test suite (asyncio and trio), including the chaos marker.

    Three workers on two cores: most tests wait on a time-scaled emulator, not the CPU.
    """
    session.install("-e", ".[test]")
    session.run("pytest", *(session.posargs or ["-q", "-n", "3"]), env={"PYTHONFAULTHANDLER": "1"})


@nox.session(python=["3.12", "3.13"])
def compat(session: nox.Session) -> None:
    """The test suite on the newer Pythons (``tests`` runs it on 3.11, what CI has);
    ``nox -s compat-3.13`` runs one."""
    session.install("-e", ".[test]")
    session.run("pytest", *(session.posargs or ["-q", "-n", "3"]), env={"PYTHONFAULTHANDLER": "1"})


@nox.session(python=PY)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PY)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package, and pyright's completeness of the public API."""
    session.install("-e", ".[test]", "mypy>=1.10", "pyright>=1.1.380")
    session.run("mypy", "-p", "wanr2v")
    session.run("mypy", "tests")
    session.run("mypy", "examples")
    if "--no-pyright" not in session.posargs:
        session.run("pyright", "--verifytypes", "wanr2v", "--ignoreexternal")


@nox.session(python=PY)
def docs(session: nox.Session) -> None:
    """Build the documentation site in strict mode (warnings are errors), then check
    what strict mode does not: no literal Sphinx role, no private module path, every
    public name and every field of the result models in the reference, no plumbing
    (``docs/_check_site.py``)."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})
    session.run("python", "docs/_check_site.py", "site")


@nox.session(python=PY)
def bench(session: nox.Session) -> None:
    """Benchmarks against the emulator, side by side with the vendor's dashscope SDK.

    The harness runs with the library's emulator, aiohttp, redis and media extras, the
    vendor's SDK, trio, and what the fuzzing figures need; wanr2v's clients in ``bench/bench_overhead.py`` run in a venv
    of their own (see below).
    """
    session.install(
        "-e",
        ".[emulator,aiohttp,redis,media]",
        "dashscope==2.0.2",
        "trio>=0.25",
        # bench_chaos.py's fuzzing figures reuse tests/test_fuzz.py's strategies.
        "pytest>=8",
        "respx>=0.21",
        "hypothesis>=6.100",
    )
    # wanr2v's clients run in a venv of their own holding what a user deploys,
    # ``wanr2v[aiohttp]``: the vendor's SDK requires rich, and where rich is installed
    # ``import httpx`` loads httpx's command line (~5.5 MB of peak RSS).
    client = Path(session.virtualenv.location) / "client"
    if not (client / "bin" / "python").exists():
        session.run("python", "-m", "venv", str(client))
    session.run(
        str(client / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "-e",
        ".[aiohttp]",
        external=True,
    )
    env = {"WANR2V_BENCH_CLIENT_PYTHON": str(client / "bin" / "python")}
    scripts = session.posargs or sorted(
        f"bench/{name}" for name in os.listdir("bench") if name.startswith("bench_")
    )
    for script in scripts:
        session.run("python", script, env=env)


@nox.session(python=PY)
def chaos(session: nox.Session) -> None:
    """Chaos figures: faulted batches, kill-and-resume, fuzzing counts, and the batches
    in less kind worlds (list/query lags, late commits, normalized prompts, capped pages)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-q", "-m", "chaos", "-s")
    if os.path.exists("bench/bench_chaos.py"):
        session.run("python", "bench/bench_chaos.py")
        session.run(
            "python", "bench/bench_chaos.py", "--world", "--skip", "batch", "resume", "cli", "fuzz"
        )


def _failed(junit: Path) -> list[str]:
    """The tests a JUnit XML report marks failed or errored (``file::name``)."""
    if not junit.exists():
        return ["(no report: pytest did not finish)"]
    out = []
    for case in ET.parse(junit).iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            module = case.get("classname", "").replace(".", "/")
            out.append(f"{module}.py::{case.get('name')}")
    return out


def _burners() -> list[subprocess.Popen[bytes]]:
    """One process spinning on each core, started and stopped by the session."""
    return [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 2)
    ]


@nox.session(python=PY)
def stress(session: nox.Session) -> None:
    """The suite three times in a row while a CPU burner keeps every core busy, then once
    on a single worker (``-n 0``, no burner); prints every test that failed in any run
    and fails if any did. ``nox -s stress -- tests/test_chaos.py`` stresses a subset."""
    session.install("-e", ".[test]")
    # Reports outside the repository: ``session.create_tmp()`` would point TMPDIR inside
    # it, and the tests' own pytest subprocesses would then find this project's config.
    tmp = Path(tempfile.mkdtemp(prefix="wanr2v-stress-"))
    target = list(session.posargs)
    runs: list[tuple[str, list[str]]] = [
        *((f"run {i} (-n 3, CPU burner)", ["-n", "3"]) for i in (1, 2, 3)),
        ("run 4 (-n 0)", ["-n", "0"]),
    ]
    failed: dict[str, list[str]] = {}
    for i, (name, workers) in enumerate(runs):
        junit = tmp / f"stress-{i}.xml"
        junit.unlink(missing_ok=True)
        burners = _burners() if "burner" in name else []
        try:
            session.log(f"stress {name}")
            session.run(
                "pytest", "-q", *workers, f"--junitxml={junit}", *target,
                env={"PYTHONFAULTHANDLER": "1"}, success_codes=[0, 1],
            )  # fmt: skip
        finally:
            for b in burners:
                b.terminate()
            for b in burners:
                try:
                    b.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    b.kill()
                    b.wait()
        failed[name] = _failed(junit)
    shutil.rmtree(tmp, ignore_errors=True)
    print("\n== stress summary ==")
    for name, tests in failed.items():
        print(f"{name}: {len(tests)} failed")
        for t in tests:
            print(f"    {t}")
    everywhere = sorted({t for tests in failed.values() for t in tests})
    if everywhere:
        session.error(f"{len(everywhere)} test(s) failed in at least one run: {everywhere}")
    print("every run passed")
