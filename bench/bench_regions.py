"""60 tasks in one emulated region, then spread over two: makespans side by side.

Run: ``python bench/bench_regions.py`` (or ``nox -s bench -- bench/bench_regions.py``).
Target (issue 9): two regions finish in at most 0.6 x the single-region makespan.
Loopback only; bounded (about a minute at the default time scale).
"""

from __future__ import annotations

import argparse
import time

import anyio

from wanr2v import AsyncWanClient, Limits, PollPolicy, RegionEndpoint
from wanr2v.testing import EmulatorConfig, RegionConfig, serve

BJ, SG = "sk-bench-beijing-01", "sk-bench-singapore-02"


def config(scale: float, seed: int) -> EmulatorConfig:
    return EmulatorConfig(
        api_keys=[BJ],
        regions={"singapore": RegionConfig(api_keys=[SG])},
        time_scale=scale,
        seed=seed,
    )


async def run(n: int, scale: float, seed: int, two: bool) -> tuple[float, int, int, dict[str, int]]:
    with serve(config(scale, seed)) as emu:
        regions = (
            {"singapore": RegionEndpoint(api_key=SG, base_url=emu.base_url_for("singapore"))}
            if two
            else None
        )
        reqs = [
            {
                "model": "wan2.6-r2v-flash",
                "prompt": f"character1 and character2 dance, take {i}",
                "reference_urls": [
                    "https://cdn.example.com/a.mp4",
                    "https://cdn.example.com/b.png",
                ],
                "duration": 5,
            }
            for i in range(n)
        ]
        async with AsyncWanClient(
            api_key=BJ,
            base_url=emu.base_url,
            region="beijing",
            regions=regions,
            limits=Limits().scaled(scale),
            poll_policy=PollPolicy().scaled(scale),
        ) as client:
            start = time.perf_counter()
            items = await client.run_many(reqs, spread=two)
            wall = time.perf_counter() - start
            rate_limited = client.statistics().rate_limited
        st = emu.stats()
        per_region: dict[str, int] = {}
        for r in emu.task_records():
            per_region[r.region] = per_region.get(r.region, 0) + 1
        ok = sum(it.ok for it in items)
        assert st.duplicate_creates == 0
        return wall, ok, rate_limited, per_region


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tasks", type=int, default=60)
    p.add_argument("--time-scale", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args()
    one = await run(a.tasks, a.time_scale, a.seed, two=False)
    two = await run(a.tasks, a.time_scale, a.seed, two=True)
    print(
        f"## {a.tasks} tasks, generation 45-200 emulated s (flash), time scale {a.time_scale:g}x\n"
    )
    print(
        "| setup | makespan (real s) | makespan (emulated min) | succeeded | 429s | tasks per region |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for name, (wall, ok, limited, per) in (("one region", one), ("two regions, spread", two)):
        regions = ", ".join(f"{k}: {v}" for k, v in sorted(per.items()))
        print(
            f"| {name} | {wall:.2f} | {wall * a.time_scale / 60:.1f} | {ok}/{a.tasks} | {limited} | {regions} |"
        )
    ratio = two[0] / one[0]
    verdict = "met" if ratio <= 0.6 else "MISSED"
    print(f"\nratio two/one = {ratio:.2f} (target <= 0.60: {verdict})")


if __name__ == "__main__":
    anyio.run(main)
