"""Chaos in a world less kind than the default emulator: every world knob at once.

Tasks show in the list 5 s late and answer queries 5 s late, a create whose
connection dropped commits 5 s late, prompts come back normalized (the requests'
prompts are messy), list pages hold at most 10 rows; and about 10 % of all requests
meet an injected fault of every kind. Whatever happens: no create is paid twice, no
task is lost (every task the service made belongs to exactly one item), and every
item ends with a result or a typed ``WanError``. Under asyncio and trio.

The 200-task version and its figures: ``python bench/bench_chaos.py --world``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import _chaos

pytestmark = [pytest.mark.chaos, pytest.mark.anyio]

TASKS = 100
DEADLINE = 60.0
"""Real seconds the whole batch may take (``anyio.fail_after`` inside)."""


async def test_faulted_batch_in_the_least_kind_world(tmp_path: Path) -> None:
    """All knobs on, ~10 % faults: 0 duplicate creates, 0 tasks lost, every item a
    result or a typed error, nothing leaked."""
    fig = await _chaos.run_faulted_batch(
        TASKS, seed=21, folder=tmp_path, deadline=DEADLINE, world=_chaos.WORLD_ALL
    )
    print(
        f"\n{fig.tasks} tasks in {fig.wall_s:.1f}s, {fig.faults_total}/{fig.requests_total} "
        f"faulted ({fig.fault_rate:.1%}); outcomes {dict(fig.outcomes)}; "
        f"duplicates {fig.duplicate_creates}; reconciled {fig.client_stats.reconciled}"
    )
    # The chaos was real: faults struck creates, about one request in ten or more.
    assert fig.faults_by_kind.get("drop_after_commit", 0) >= 1, fig.faults_by_kind
    assert fig.fault_rate >= 0.05
    # Never paid twice; nothing lost; nobody shares a task.
    assert fig.duplicate_creates == 0
    assert fig.orphan_tasks == []
    assert fig.shared_task_ids == []
    # Every item: a result or a typed error.
    assert fig.untyped_errors == []
    assert sum(fig.outcomes.values()) == TASKS
    assert fig.outcomes.get("succeeded, not saved", 0) == 0
    assert fig.outcomes.get("TaskFailedError", 0) == fig.failed_tasks_expected
    assert fig.outcomes.get("TaskNotFoundError", 0) == 0  # query lag is not loss
    # Nothing left behind.
    assert fig.leaked_fds == {} and fig.leaked_tasks == 0 and fig.part_files == []
