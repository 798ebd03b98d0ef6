#!/usr/bin/env python3
"""Skills: what a save with dry runs takes, what an import adds to a goal, listing a big store.

    ./tidybot run python bench/skills.py [--goals 40] [--dry-runs 3] [--skills 1000]

Starts the simulator and the node (warm worker on, leases required) as processes, then:
  * saves examples/skills/pick_cube.py (its __main__ block picks the simulated world's
    cube) with ``dry_runs`` N, several times (wall time of the skills/save call: N dry runs
    on private simulators seeded from the live state, + the save);
  * a trivial goal against the same goal importing a skill (``from tidybot_skills import
    NAME``; call it), interleaved goal by goal, warm path: the medians and the difference;
  * skills/list and skills/get with ``--skills`` skills in the store (saved through the
    service; listing is the newest version of each name with its statistics).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from common import start_stack, stop
from tidybot_exec.clients.client import TidybotClient, spun_client

SKILL = Path(__file__).resolve().parents[1] / "examples" / "skills" / "pick_cube.py"


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--goals", type=int, default=40)
    p.add_argument("--dry-runs", type=int, default=3)
    p.add_argument("--saves", type=int, default=3)
    p.add_argument("--skills", type=int, default=1000)
    a = p.parse_args()
    sim, node = start_stack(78)
    try:
        with spun_client("bench_skills") as client:
            measure(client, a)
    finally:
        stop(node, sim)


def measure(client: TidybotClient, a: argparse.Namespace) -> None:
    assert client.wait_for_server(60), "no node"
    client.acquire("bench-skills", ttl_s=3600)
    saves = []
    for _ in range(a.saves):
        t = time.perf_counter()
        answer = client.save_skill("pick_cube", SKILL.read_text(), dry_runs=a.dry_runs)
        saves.append(time.perf_counter() - t)
        assert answer.success, answer.message
    print(f"save of pick_cube with dry_runs {a.dry_runs}: "
          f"median {statistics.median(saves):.2f} s, all {', '.join(f'{s:.2f}' for s in saves)}")

    assert client.save_skill("double", "def double(x):\n    return 2 * x\n").success
    plain, imported = "print(2 * 21)\n", "from tidybot_skills import double\nprint(double(21))\n"
    for code in (plain, imported):          # warm up both paths
        assert client.execute(code).result(60).status == 0
    times: dict[str, list[float]] = {"plain": [], "import": []}
    for _ in range(a.goals):
        for name, code in (("plain", plain), ("import", imported)):
            times[name].append(timed(lambda: client.execute(code).result(60)))
    m = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"goal -> result, warm, median of {a.goals}: trivial {m['plain']:.1f} ms, "
          f"importing a skill {m['import']:.1f} ms: the import adds {m['import'] - m['plain']:.1f} ms")

    t = time.perf_counter()
    for i in range(a.skills):
        assert client.save_skill(f"skill_{i:04d}", f"def skill_{i:04d}(x):\n"
                                 f"    \"\"\"Skill number {i}.\"\"\"\n    return x + {i}\n").success
    print(f"{a.skills} saves without dry runs: {1000 * (time.perf_counter() - t) / a.skills:.1f} ms each")
    lists = [timed(lambda: client.list_skills()) for _ in range(10)]
    count = len(client.list_skills())
    queries = [timed(lambda: client.list_skills("number 99")) for _ in range(10)]
    gets = [timed(lambda: client.get_skill("skill_0500")) for _ in range(20)]
    print(f"skills/list of {count} skills: median {1000 * statistics.median(lists):.1f} ms; "
          f"with a query: {1000 * statistics.median(queries):.1f} ms; skills/get: "
          f"{1000 * statistics.median(gets):.1f} ms")
    client.release()


if __name__ == "__main__":
    main()
