"""Time to detection of every buggy variant.

Controlled mode: schedules and seconds until the first finding, median and
worst over 20 seeds (targets: 1 s median, 10 s worst).  Free mode: seconds
until caught, median over a few seeds (target: 10 s median).  A run that is
not caught within its budget counts as the budget and is flagged."""
import statistics

from .. import stress
from . import met

SEEDS = 20
FREE_SEEDS = 5
CONTROLLED_BUDGET = 5000     # schedules
FREE_BUDGET = 30.0           # seconds


def run(quick=False):
    seeds = 5 if quick else SEEDS
    free_seeds = 2 if quick else FREE_SEEDS
    rows = []
    for name in stress.all_scenarios():
        cls = stress.get_scenario(name)
        for v in cls.variants():
            if cls.expected(v) != "caught":
                continue
            ctl = [stress.run_controlled(name, v, s, CONTROLLED_BUDGET) for s in range(seeds)]
            fr = [stress.run_free(name, v, s, FREE_BUDGET) for s in range(free_seeds)]
            secs = [r.seconds for r in ctl]
            scheds = [r.schedules for r in ctl]
            fsecs = [r.seconds for r in fr]
            missed = sum(not r.caught for r in ctl) + sum(not r.caught for r in fr)
            rows.append({
                "scenario": name, "variant": v,
                "ctl sched median": statistics.median(scheds), "ctl sched worst": max(scheds),
                "ctl s median": round(statistics.median(secs), 3), "ctl s worst": round(max(secs), 3),
                "free s median": round(statistics.median(fsecs), 3),
                "missed": missed,
                "met": met(not missed and statistics.median(secs) <= 1 and max(secs) <= 10
                           and statistics.median(fsecs) <= 10),
            })
    return {"title": "Time to detection of every buggy variant",
            "rows": rows,
            "notes": [f"controlled: {seeds} seeds, budget {CONTROLLED_BUDGET} schedules; free: "
                      f"{free_seeds} seeds, budget {FREE_BUDGET:.0f} s; 'missed' counts runs not caught",
                      "targets: controlled <= 1 s median and <= 10 s worst; free <= 10 s median",
                      "fixed variants over a long mix run: pymm stress --scenario mix --mode free --seconds 600"]}
