"""The emulator's world knobs, through HTTP on a loopback socket.

A world less kind than the default one: tasks that show in the list late
(``list_lag``), answer UNKNOWN while young (``query_lag``), creates whose dropped
connection commits them late (``commit_delay``), ``orig_prompt`` shown normalized
(``prompt_normalization``) and list pages capped below what is asked
(``page_size_cap``). Each is set from Python config, the CLI or the admin routes, is
measured on the emulator clock (a manual clock here: no sleeps), and is off by default.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from wanr2v.testing import (
    Emulator,
    EmulatorConfig,
    Endpoint,
    FaultKind,
    FaultRule,
    ManualClock,
    Quotas,
    serve,
)
from wanr2v.testing._cli import build_parser, config_from_args
from wanr2v.testing._config import WORLD_KNOBS

KEY = "sk-world"
CREATE = "/services/aigc/video-generation/video-synthesis"
HEADERS = {"Authorization": f"Bearer {KEY}", "X-DashScope-Async": "enable"}
T0 = 1_750_000_000.0


def body(prompt: str = "character1 waves") -> dict[str, Any]:
    return {
        "model": "wan2.6-r2v-flash",
        "input": {"prompt": prompt, "reference_urls": ["https://cdn.example.com/a.mp4"]},
    }


def config(**world: Any) -> EmulatorConfig:
    """Manual clock, quotas off, 10 s generation, the given knobs."""
    return EmulatorConfig(
        clock=ManualClock(start=T0),
        quotas=Quotas.off(),
        seed=3,
        generation_time=(10.0, 10.0),
        **world,
    )


@pytest.fixture
def world() -> Iterator[tuple[Emulator, httpx.Client]]:
    """A served emulator with every knob off, and a client on its origin."""
    with serve(config()) as emu, httpx.Client(base_url=emu.origin, timeout=10.0) as http:
        yield emu, http


def create(http: httpx.Client, prompt: str = "character1 waves") -> str:
    r = http.post("/api/v1" + CREATE, json=body(prompt), headers=HEADERS)
    assert r.status_code == 200, r.text
    return str(r.json()["output"]["task_id"])


def query(http: httpx.Client, task_id: str) -> dict[str, Any]:
    r = http.get(f"/api/v1/tasks/{task_id}", headers=HEADERS)
    assert r.status_code == 200, r.text
    return dict(r.json()["output"])


def listed(http: httpx.Client, **params: Any) -> dict[str, Any]:
    r = http.get("/api/v1/tasks", headers=HEADERS, params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def ids(page: dict[str, Any]) -> list[str]:
    return [row["task_id"] for row in page["data"]]


def test_defaults_are_the_kind_world(world: tuple[Emulator, httpx.Client]) -> None:
    """Off by default: a task is listed and queryable the instant it is made, and its
    prompt comes back byte for byte."""
    emu, http = world
    assert emu.world() == {
        "list_lag": 0.0,
        "query_lag": 0.0,
        "commit_delay": 0.0,
        "prompt_normalization": False,
        "page_size_cap": None,
    }
    prompt = "  Cafe\u0301   waves\n\tat  character2 "
    tid = create(http, prompt)
    assert ids(listed(http)) == [tid]
    assert query(http, tid)["task_status"] in ("PENDING", "RUNNING")
    emu.advance(60)
    assert query(http, tid)["orig_prompt"] == prompt


def test_list_lag_hides_a_new_task_from_the_list_only(
    world: tuple[Emulator, httpx.Client],
) -> None:
    """``list_lag``: the task list shows a task that many emulator seconds after its
    create (the ``task_id`` filter too); a query sees it at once."""
    emu, http = world
    emu.set_world(list_lag=3.0)
    tid = create(http)
    assert ids(listed(http)) == [] and listed(http)["total"] == 0
    assert ids(listed(http, task_id=tid)) == []
    assert query(http, tid)["task_status"] != "UNKNOWN"
    emu.advance(2.9)
    assert ids(listed(http)) == []
    emu.advance(0.2)
    assert ids(listed(http)) == [tid]
    assert ids(listed(http, task_id=tid)) == [tid]


def test_query_lag_answers_unknown_while_the_task_is_young(
    world: tuple[Emulator, httpx.Client],
) -> None:
    """``query_lag``: a task younger than that answers UNKNOWN (as an id the service
    does not know), then its real status; the list shows it meanwhile."""
    emu, http = world
    emu.set_world(query_lag=4.0)
    tid = create(http)
    assert query(http, tid)["task_status"] == "UNKNOWN"
    assert ids(listed(http)) == [tid]
    emu.advance(3.9)
    assert query(http, tid)["task_status"] == "UNKNOWN"
    emu.advance(0.2)
    assert query(http, tid)["task_status"] in ("PENDING", "RUNNING")


def test_commit_delay_makes_a_dropped_create_commit_late(
    world: tuple[Emulator, httpx.Client],
) -> None:
    """``commit_delay``: a create carried out and then dropped commits that much later;
    until then it is neither listed nor queryable, and its creation time (``gmt_create``,
    ``submit_time``) is the commit's. A create that was answered commits at once."""
    emu, http = world
    emu.set_world(commit_delay=5.0)
    emu.faults.add(FaultRule(kind=FaultKind.DROP_AFTER_COMMIT, endpoint=Endpoint.CREATE, count=1))
    with pytest.raises(httpx.TransportError):
        http.post("/api/v1" + CREATE, json=body("the lost one"), headers=HEADERS)
    (lost,) = [r.task_id for r in emu.task_records()]
    assert emu.stats().tasks_created == 1
    answered = create(http, "the answered one")
    assert ids(listed(http)) == [answered]
    assert query(http, lost)["task_status"] == "UNKNOWN"
    emu.advance(4.9)
    assert query(http, lost)["task_status"] == "UNKNOWN"
    assert ids(listed(http)) == [answered]
    emu.advance(0.2)
    assert ids(listed(http)) == [lost, answered]  # newest first: it was made later
    out = query(http, lost)
    assert out["task_status"] in ("PENDING", "RUNNING")
    row = next(r for r in listed(http)["data"] if r["task_id"] == lost)
    assert row["gmt_create"] == int((T0 + 5.0) * 1000)
    shown = dt.datetime.strptime(out["submit_time"], "%Y-%m-%d %H:%M:%S.%f")
    assert (
        shown.strftime("%S.%f")[:6]
        == dt.datetime.fromtimestamp(T0 + 5.0, dt.UTC).strftime("%S.%f")[:6]
    )
    # It runs like any other task once committed.
    emu.advance(60)
    assert query(http, lost)["task_status"] == "SUCCEEDED"


def test_prompt_normalization_shows_orig_prompt_normalized(
    world: tuple[Emulator, httpx.Client],
) -> None:
    """``prompt_normalization``: ``orig_prompt`` comes back in Unicode NFC, trimmed, with
    every run of whitespace one space."""
    emu, http = world
    emu.set_world(prompt_normalization=True)
    tid = create(http, "  Cafe\u0301   waves\n\tat  character2 ")
    emu.advance(60)
    assert query(http, tid)["orig_prompt"] == "Caf\u00e9 waves at character2"


def test_page_size_cap_serves_smaller_pages(world: tuple[Emulator, httpx.Client]) -> None:
    """``page_size_cap``: pages hold at most the cap, whatever ``page_size`` asks; the
    answer's ``page_size`` and ``total_page`` follow the cap, so every row is on some page."""
    emu, http = world
    emu.set_world(page_size_cap=3)
    made = []
    for i in range(7):
        made.append(create(http, f"take {i}"))
        emu.advance(0.01)
    first = listed(http, page_size=100)
    assert len(first["data"]) == 3
    assert (first["page_size"], first["total"], first["total_page"]) == (3, 7, 3)
    rows = [tid for n in (1, 2, 3) for tid in ids(listed(http, page_size=100, page_no=n))]
    assert rows == made[::-1]
    assert len(ids(listed(http, page_size=2))) == 2  # below the cap: as asked


def test_admin_world_route_reads_and_sets_knobs(world: tuple[Emulator, httpx.Client]) -> None:
    """``GET/POST /_emulator/world`` read and set the knobs; a bad knob or value is a
    400 that says what is wrong, and changes nothing."""
    emu, http = world
    assert http.get("/_emulator/world").json() == emu.world()
    r = http.post("/_emulator/world", json={"list_lag": 2.5, "prompt_normalization": True})
    assert r.status_code == 200
    assert r.json()["list_lag"] == 2.5 and r.json()["prompt_normalization"] is True
    assert emu.config.list_lag == 2.5
    tid = create(http)
    assert ids(listed(http)) == []  # the knob is in force
    emu.advance(2.6)
    assert ids(listed(http)) == [tid]
    bad = http.post("/_emulator/world", json={"list_lagg": 1})
    assert bad.status_code == 400 and "list_lagg" in bad.json()["error"]
    bad = http.post("/_emulator/world", json={"query_lag": -1})
    assert bad.status_code == 400 and "query_lag" in bad.json()["error"]
    bad = http.post("/_emulator/world", json={"page_size_cap": 0})
    assert bad.status_code == 400 and "page_size_cap" in bad.json()["error"]
    assert http.get("/_emulator/world").json()["query_lag"] == 0.0


def test_config_refuses_bad_knobs() -> None:
    """Negative lags and a cap below 1 are refused with the knob's name."""
    with pytest.raises(ValueError, match="commit_delay"):
        EmulatorConfig(commit_delay=-0.5)
    with pytest.raises(ValueError, match="page_size_cap"):
        EmulatorConfig(page_size_cap=0)
    with pytest.raises(ValueError, match="unknown world knob"):
        Emulator(EmulatorConfig()).set_world(lag=1)


def test_cli_flags_set_every_knob(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m wanr2v.testing`` / ``wanr2v emulator`` take a flag per knob; a bad
    value is refused by the parser."""
    args = build_parser().parse_args(
        [
            "--list-lag",
            "2",
            "--query-lag",
            "1.5",
            "--commit-delay",
            "5",
            "--prompt-normalization",
            "--page-size-cap",
            "10",
        ]
    )
    cfg = config_from_args(args)
    assert {k: getattr(cfg, k) for k in WORLD_KNOBS} == {
        "list_lag": 2.0,
        "query_lag": 1.5,
        "commit_delay": 5.0,
        "prompt_normalization": True,
        "page_size_cap": 10,
    }
    default = config_from_args(build_parser().parse_args([]))
    assert {k: getattr(default, k) for k in WORLD_KNOBS} == Emulator().world()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--list-lag", "-1"])
    assert "--list-lag" in capsys.readouterr().err
