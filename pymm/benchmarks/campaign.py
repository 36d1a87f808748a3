"""Campaign scaling: items/s with one worker process and with two (the same
items, fresh databases), the cost of a controlled schedule and of a
free-mode second, and how many seeds of the default campaign (every
scenario, every variant, controlled, 200 schedules) a 2-worker campaign
covers in an hour.  Worker start-up is included (it is part of every
campaign); the load average is in the notes: the figures are only as quiet
as the machine."""
import os
import statistics
import tempfile
import time

from .. import campaign, stress
from . import met

SCHEDULES = 25              # per item in the scaling runs (fixed variants run the whole budget)


def _fixed_items(seeds):
    combos = []
    for name in stress.all_scenarios():
        if name == "mix":
            continue
        cls = stress.get_scenario(name)
        combos += [(name, v) for v in cls.variants() if cls.expected(v) == "clean"]
    return [(n, v, "controlled", s) for s in seeds for n, v in combos]


def _campaign(items, jobs, schedules=SCHEDULES, seconds=None):
    with tempfile.TemporaryDirectory() as d:
        db = os.path.join(d, "bench.sqlite")
        t0 = time.perf_counter()
        out = campaign.run(items, db_path=db, schedules=schedules, seconds=seconds, jobs=jobs,
                           minimize_crashes=False, progress=campaign.Progress(None, 0, False))
        wall = time.perf_counter() - t0
        ro = campaign.CrashDB.open(db, readonly=True)
        try:
            runs = ro.runs()
        finally:
            ro.close()
    assert out.ran == len(items)
    return wall, runs


def run(quick=False):
    rows, notes = [], []
    load = os.getloadavg()[0]
    items = _fixed_items(range(2 if quick else 6))
    w1, runs1 = _campaign(items, 1)
    w2, runs2 = _campaign(items, 2)
    r1, r2 = len(items) / w1, len(items) / w2
    rows.append({"measure": "items/s, --jobs 1", "value": round(r1, 2), "target": ""})
    rows.append({"measure": "items/s, --jobs 2", "value": round(r2, 2),
                 "target": f">= 1.8x: {met(r2 / r1 >= 1.8)} ({r2 / r1:.2f}x)", "met": met(r2 / r1 >= 1.8)})
    # how much of the wall time the workers spent running items (the rest is
    # start-up and dispatch: what the campaign itself costs, whatever the load)
    for jobs, wall, runs in ((1, w1, runs1), (2, w2, runs2)):
        busy = sum(r["duration"] for r in runs) / (wall * jobs)
        rows.append({"measure": f"worker busy fraction, --jobs {jobs}", "value": round(busy, 3),
                     "target": ""})
    per = {}
    for r in runs1:
        per.setdefault(r["scenario"], []).append(r["duration"] / max(1, r["schedules"]))
    total = sum(r["duration"] for r in runs1) / max(1, sum(r["schedules"] for r in runs1))
    rows.append({"measure": "ms per controlled schedule (all fixed variants)",
                 "value": round(total * 1e3, 2), "target": ""})
    for name, xs in per.items():
        rows.append({"measure": f"  ms per schedule: {name}", "value": round(statistics.median(xs) * 1e3, 2),
                     "target": ""})
    # free mode: wall seconds per budget second (setup, rounds, teardown and checks included)
    free_items = [(n, v, "free", s) for n, v, _, s in _fixed_items(range(1))][:4 if quick else 8]
    budget = 0.5 if quick else 1.0
    wf, runsf = _campaign(free_items, 1, seconds=budget)
    rows.append({"measure": f"wall s per free-mode second ({len(free_items)} items of {budget} s, "
                 "--jobs 1)", "value": round(wf / (budget * len(free_items)), 2), "target": ""})
    # the default campaign: every scenario and variant, controlled, default budget
    seeds = 1 if quick else 2
    full = campaign.plan(None, None, ("controlled",), range(1000, 1000 + seeds))
    wd, _ = _campaign(full, 2, schedules=stress.DEFAULT_SCHEDULES)
    rows.append({"measure": f"seeds/hour, default campaign, --jobs 2 ({len(full) // seeds} items "
                 f"a seed, {stress.DEFAULT_SCHEDULES} schedules)", "value": round(3600 * seeds / wd, 1),
                 "target": ""})
    notes.append(f"{len(items)} items (every fixed variant, controlled, {SCHEDULES} schedules each, "
                 f"no findings), the same for both runs; worker start-up included")
    notes.append(f"load average at start: {load:.2f} on {os.cpu_count()} cores "
                 f"(now {os.getloadavg()[0]:.2f}); other processes share these cores")
    return {"title": "Campaign scaling (pymm campaign)", "rows": rows, "notes": notes}
