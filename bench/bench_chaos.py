"""Chaos figures, printed as markdown tables (``nox -s chaos``, or ``python bench/bench_chaos.py``).

1. A faulted batch: 200 tasks against the loopback emulator (time scale 100) with
   about 10 % of requests faulted across every kind; outcomes, duplicates, the
   longest wait, and what leaked (descriptors, tasks, partial files).
2. Kill and resume: the same batch in a child process, SIGKILLed at three random
   points and resumed from its journal each time (through the Python API, and
   through the ``wanr2v`` CLI when it is installed).
   With ``--world``: the same batch in less kind worlds, each emulator world knob
   alone (asyncio), then all at once (``tests/_chaos.py``'s ``WORLD_ALL``: list and
   query lags of 5 s, dropped creates committed 5 s late, prompts echoed normalized,
   pages of 10; asyncio and trio). ``--world --skip batch resume cli fuzz``: only that.
3. Fuzzing counts: the hypothesis properties of ``tests/test_fuzz.py``, run here, and
   the examples each one ran.

Loopback only; every wait is bounded. ``--tasks N`` and ``--seed S`` change the batch.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import _chaos  # noqa: E402


def table(headers: list[str], rows: list[list[object]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def faulted_batch(
    n: int, seed: int, backend: str, world: dict[str, object] | None = None
) -> _chaos.BatchFigures:
    with tempfile.TemporaryDirectory(prefix="wanr2v-chaos-") as d:
        run = functools.partial(_chaos.run_faulted_batch, world=world)
        return anyio.run(run, n, seed, Path(d), backend=backend)


def print_batch(figs: dict[str, _chaos.BatchFigures], title: str = "Faulted batch") -> None:
    print(f"## {title}\n")
    names = list(figs)
    rows: list[list[object]] = []

    def row(label: str, fn: object) -> None:
        rows.append([label, *(fn(figs[b]) for b in names)])  # type: ignore[operator]

    row("tasks", lambda f: f.tasks)
    row("wall time (s)", lambda f: f"{f.wall_s:.1f}")
    row("requests seen by the emulator", lambda f: f.requests_total)
    row("requests faulted", lambda f: f"{f.faults_total} ({f.fault_rate:.1%})")
    row("tasks created (emulator)", lambda f: f.tasks_created)
    row("**duplicate creates (emulator)**", lambda f: f"**{f.duplicate_creates}**")
    row("orphan tasks (created, owned by no item)", lambda f: len(f.orphan_tasks))
    row("tasks owned by two items", lambda f: len(f.shared_task_ids))
    row("lost creates reconciled (adopted)", lambda f: f.client_stats.reconciled)
    row(
        "typed errors (items without a video)",
        lambda f: sum(v for k, v in f.outcomes.items() if k != "downloaded"),
    )
    row("untyped errors", lambda f: len(f.untyped_errors))
    row("longest item (s, bounded by fail_after)", lambda f: f"{f.max_item_s:.1f}")
    row("leaked fds / sockets", lambda f: len(f.leaked_fds))
    row("leaked event-loop tasks", lambda f: f.leaked_tasks)
    row("partial files left", lambda f: len(f.part_files))
    row(
        "governor after (http, tasks in flight, waiting)",
        lambda f: (
            f"{f.governor_after.http_in_flight}, {f.governor_after.tasks_in_flight}, "
            f"{f.governor_after.tasks_waiting + f.governor_after.http_waiting}"
        ),
    )
    row("429s seen by the client", lambda f: f.client_stats.rate_limited)
    row("poll errors ridden out", lambda f: f.scheduler_after.transient_errors)
    print(table(["figure", *names], rows))
    print("\n### Faults injected, by kind\n")
    kinds = sorted({k for f in figs.values() for k in f.faults_by_kind})
    print(
        table(
            ["kind", *names],
            [[k, *(figs[b].faults_by_kind.get(k, 0) for b in names)] for k in kinds],
        )
    )
    print("\n### Outcomes, by type\n")
    outs = sorted({k for f in figs.values() for k in f.outcomes})
    print(
        table(
            ["outcome", *names], [[k, *(figs[b].outcomes.get(k, 0) for b in names)] for k in outs]
        )
    )
    for b, f in figs.items():
        exp = f.failed_tasks_expected
        print(
            f"\n{b}: TaskFailedError {f.outcomes.get('TaskFailedError', 0)} = FAIL_TASK faults {exp}"
        )


def print_worlds(n: int, seed: int) -> None:
    """The faulted batch in each less kind world alone (asyncio), then in all at once
    (asyncio and trio): one row each, then the full figures of the latter."""
    every = dict(_chaos.WORLD_ALL)
    runs: list[tuple[str, str, dict[str, object], int]] = [
        (f"{k}={v}", "asyncio", {k: v}, seed) for k, v in every.items()
    ]
    runs += [("all of them", "asyncio", every, seed), ("all of them", "trio", every, seed + 1)]
    figs: dict[tuple[str, str], _chaos.BatchFigures] = {}
    for label, backend, world, s in runs:
        figs[(label, backend)] = faulted_batch(n, s, backend, world)
    print("## Faulted batch in less kind worlds (emulator world knobs)\n")
    rows = [
        [
            label,
            backend,
            f.tasks,
            f"{f.wall_s:.1f}",
            f"{f.fault_rate:.1%}",
            f"**{f.duplicate_creates}**",
            len(f.orphan_tasks),
            f.client_stats.reconciled,
            sum(v for k, v in f.outcomes.items() if k != "downloaded"),
            len(f.untyped_errors),
        ]
        for (label, backend), f in figs.items()
    ]
    print(
        table(
            [
                "world",
                "backend",
                "tasks",
                "wall (s)",
                "faulted",
                "duplicate creates",
                "tasks lost",
                "reconciled",
                "typed errors",
                "untyped",
            ],
            rows,
        )
    )
    print()
    print_batch(
        {b: figs[("all of them", b)] for b in ("asyncio", "trio")},
        title="Every world knob on (" + ", ".join(f"{k}={v}" for k, v in every.items()) + ")",
    )


def print_resume(results: dict[str, _chaos.ResumeFigures]) -> None:
    print("\n## Kill -9 and resume (three kills, then a resume to the end)\n")
    for via, fig in results.items():
        print(f"### via {via}: {fig.tasks} tasks, {fig.wall_s:.1f} s\n")
        rows = []
        for r in fig.rounds:
            states = ", ".join(f"{k} {v}" for k, v in sorted(r.journal_states.items()))
            killed = (
                f"SIGKILL after {r.killed_after_s:.2f} s" if r.killed_after_s else "ran to the end"
            )
            rows.append(
                [
                    r.round,
                    r.mode,
                    killed,
                    r.exit_code,
                    r.tasks_created,
                    r.duplicate_creates,
                    r.saved,
                    states,
                ]
            )
        print(
            table(
                [
                    "round",
                    "mode",
                    "end",
                    "exit",
                    "tasks created",
                    "duplicates",
                    "videos saved",
                    "journal after",
                ],
                rows,
            )
        )
        print(
            f"\nend: {fig.saved}/{fig.tasks} videos saved, {fig.tasks_created} tasks created, "
            f"**{fig.duplicate_creates} duplicates**, {fig.orphan_tasks} orphan tasks, "
            f"journal {dict(fig.final_states)}, {len(fig.part_files)} stale partial file(s) "
            "from the killed rounds\n"
        )


def run_fuzz() -> dict[str, int]:
    from tests import test_fuzz

    properties = [
        test_fuzz.test_accepted_requests_are_valid_on_the_wire,
        test_fuzz.test_any_invalid_field_is_refused_naming_it,
        test_fuzz.test_an_invalid_request_sends_nothing,
        test_fuzz.test_parse_result_yields_a_result_or_a_typed_error,
        test_fuzz.test_parse_list_yields_a_page_or_a_typed_error,
        test_fuzz.test_parse_policy_yields_a_policy_or_a_typed_error,
        test_fuzz.test_parse_created_yields_a_task_or_a_typed_error,
        test_fuzz.test_any_answer_through_the_client_is_a_result_or_a_typed_error,
        test_fuzz.test_emulator_answers_garbage_creates_with_vendor_400s,
        test_fuzz.test_emulator_routes_survive_garbage,
        test_fuzz.test_emulator_keeps_serving_after_garbage_over_a_socket,
    ]
    failures: dict[str, str] = {}
    for prop in properties:
        try:
            prop()
        except Exception as exc:  # report, do not stop the bench
            failures[prop.__name__] = f"{type(exc).__name__}: {str(exc)[:200]}"
    print("\n## Fuzzing (hypothesis, tests/test_fuzz.py)\n")
    print(table(["property", "examples run"], [[k, v] for k, v in test_fuzz.EXAMPLES.items()]))
    print(
        f"\ntotal examples: {sum(test_fuzz.EXAMPLES.values())}; properties failing: {len(failures)}"
    )
    for name, why in failures.items():
        print(f"- {name}: {why}")
    return dict(test_fuzz.EXAMPLES)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--skip", nargs="*", default=[], choices=["batch", "resume", "cli", "fuzz"])
    p.add_argument(
        "--world",
        action="store_true",
        help="also run the faulted batch with every emulator world knob on",
    )
    a = p.parse_args()
    started = time.monotonic()
    print(
        f"# wanr2v chaos figures\n\nloopback emulator, time scale {_chaos.SCALE:g}, seed {a.seed}\n"
    )
    if "batch" not in a.skip:
        print_batch(
            {
                "asyncio": faulted_batch(a.tasks, a.seed, "asyncio"),
                "trio": faulted_batch(a.tasks, a.seed + 1, "trio"),
            }
        )
    if a.world:
        print_worlds(a.tasks, a.seed)
    results: dict[str, _chaos.ResumeFigures] = {}
    with tempfile.TemporaryDirectory(prefix="wanr2v-kill-") as d:
        if "resume" not in a.skip:
            results["Python API (run_many / resume)"] = _chaos.kill_and_resume(
                a.tasks, a.seed, Path(d) / "api"
            )
        if "cli" not in a.skip:
            try:
                import wanr2v._cli  # noqa: F401
            except ImportError:
                print("\n(the wanr2v CLI is not installed: its kill-and-resume is skipped)")
            else:
                results["CLI (wanr2v run / wanr2v resume)"] = _chaos.kill_and_resume(
                    a.tasks, a.seed, Path(d) / "cli", via="cli", final_timeout=240.0
                )
    if results:
        print_resume(results)
    if "fuzz" not in a.skip:
        run_fuzz()
    print(f"\n(bench wall time {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
