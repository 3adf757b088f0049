"""Sessions: tests (what CI runs), lint, typecheck, docs, bench, chaos."""

from __future__ import annotations

import os

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
    """Build the documentation site in strict mode (warnings are errors)."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session(python=PY)
def bench(session: nox.Session) -> None:
    """Benchmarks against the emulator, side by side with the vendor's dashscope SDK."""
    session.install("-e", ".[test]")
    scripts = session.posargs or sorted(
        f"bench/{name}" for name in os.listdir("bench") if name.startswith("bench_")
    )
    for script in scripts:
        session.run("python", script)


@nox.session(python=PY)
def chaos(session: nox.Session) -> None:
    """Chaos figures: faulted batches, kill-and-resume, fuzzing counts."""
    session.install("-e", ".[test]")
    session.run("pytest", "-q", "-m", "chaos", "-s")
    if os.path.exists("bench/bench_chaos.py"):
        session.run("python", "bench/bench_chaos.py")
