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
        out = campaign.run(items, db_path=db, schedules=schedules, seconds=seconds, jobs=jobs,
                           minimize_crashes=False, progress=campaign.Progress(None, 0, False))
        ro = campaign.CrashDB.open(db, readonly=True)
        try:
            runs = ro.runs()
        finally:
            ro.close()
    assert out.ran == len(items)
    return out.finished - out.started, runs, out


def account(out, jobs):
    """Where the workers' wall time went in one campaign (``jobs`` workers
    from ``out.started`` to ``out.finished``): running items, starting up
    (spawn and import, before a worker's first item), between items (the
    parent's dispatch and result handling, and replacing a worker after
    TASKS_PER_WORKER items), and the tail (a worker with nothing left while
    the last items finish).  Fractions of jobs x wall; they add up to 1.
    Also each item's CPU seconds per wall second inside the worker (below 1:
    the worker was runnable or waiting and not on a CPU) and the parent's CPU
    milliseconds per item."""
    wall = out.finished - out.started
    by_pid = {}
    for w in out.worker_items:
        by_pid.setdefault(w["pid"], []).append(w)
    spans = sorted((sorted(ws, key=lambda w: w["started"]) for ws in by_pid.values()),
                   key=lambda ws: ws[0]["started"])
    run = sum(w["finished"] - w["started"] for w in out.worker_items)
    startup = sum(ws[0]["started"] - out.started for ws in spans[:jobs])
    ends = sorted(ws[-1]["finished"] for ws in spans)[-jobs:]
    tail = sum(out.finished - e for e in ends)
    total = jobs * wall
    between = max(0.0, total - run - startup - tail)
    cpu = sum(w["cpu"] for w in out.worker_items)
    n = max(1, len(out.worker_items))
    return {"run": run / total, "startup": startup / total, "between": between / total,
            "tail": tail / total, "cpu_per_wall": cpu / run if run else 0.0,
            "parent_ms": 1e3 * out.parent_cpu / n, "workers": len(spans)}


def run(quick=False):
    rows, notes = [], []
    load = os.getloadavg()[0]
    # jobs 1 and jobs 2 alternate, A B B A, on the same items (fresh
    # databases): a load that drifts during the benchmark weighs on both alike
    items = _fixed_items(range(1 if quick else 3))
    res = {1: [], 2: []}
    for jobs in (1, 2, 2, 1):
        wall, runs, out = _campaign(items, jobs)
        res[jobs].append((wall, runs, out))
    rate = {j: len(items) * len(rs) / sum(r[0] for r in rs) for j, rs in res.items()}
    r1, r2 = rate[1], rate[2]
    rows.append({"measure": "items/s, --jobs 1", "value": round(r1, 2), "target": ""})
    rows.append({"measure": "items/s, --jobs 2", "value": round(r2, 2),
                 "target": f">= 1.8x: {met(r2 / r1 >= 1.8)} ({r2 / r1:.2f}x)", "met": met(r2 / r1 >= 1.8)})
    rows.append({"measure": "  each run's items/s (A B B A)", "value": " ".join(
        f"{len(items) / w:.2f}" for w, _, _ in (res[1][0], res[2][0], res[2][1], res[1][1])),
        "target": ""})
    # where the workers' time went (the rest of jobs x wall is what the
    # campaign itself costs, or the machine took)
    for jobs in (1, 2):
        acc = [account(out, jobs) for _, _, out in res[jobs]]
        avg = {k: statistics.mean(a[k] for a in acc) for k in acc[0]}
        rows.append({"measure": f"worker time, --jobs {jobs}: running items / start-up / between "
                     "items / tail", "value": f"{avg['run']:.3f} / {avg['startup']:.3f} / "
                     f"{avg['between']:.3f} / {avg['tail']:.3f}", "target": ""})
        rows.append({"measure": f"  CPU s per wall s inside an item, --jobs {jobs}",
                     "value": round(avg["cpu_per_wall"], 3), "target": ""})
        rows.append({"measure": f"  parent CPU ms per item, --jobs {jobs}",
                     "value": round(avg["parent_ms"], 2), "target": ""})
    runs1 = res[1][0][1] + res[1][1][1]
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
    wf, runsf, _ = _campaign(free_items, 1, seconds=budget)
    rows.append({"measure": f"wall s per free-mode second ({len(free_items)} items of {budget} s, "
                 "--jobs 1)", "value": round(wf / (budget * len(free_items)), 2), "target": ""})
    # the default campaign: every scenario and variant, controlled, default budget
    seeds = 1 if quick else 2
    full = campaign.plan(None, None, ("controlled",), range(1000, 1000 + seeds))
    wd, _, _ = _campaign(full, 2, schedules=stress.DEFAULT_SCHEDULES)
    rows.append({"measure": f"seeds/hour, default campaign, --jobs 2 ({len(full) // seeds} items "
                 f"a seed, {stress.DEFAULT_SCHEDULES} schedules)", "value": round(3600 * seeds / wd, 1),
                 "target": ""})
    notes.append(f"{len(items)} items (every fixed variant, controlled, {SCHEDULES} schedules each, "
                 f"no findings), the same for the four runs (--jobs 1, 2, 2, 1); worker start-up "
                 "included")
    notes.append(f"load average at start: {load:.2f} on {os.cpu_count()} cores "
                 f"(now {os.getloadavg()[0]:.2f}); other processes share these cores")
    return {"title": "Campaign scaling (pymm campaign)", "rows": rows, "notes": notes}
