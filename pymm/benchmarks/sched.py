"""Benchmark section "sched": how fast the controlled scheduler runs.

Workload: three managed threads share one RwSemaphore; each loops
down_read / point / up_read / down_write / point / up_write, about 200
scheduling points per schedule in all.  Measured per strategy, with the lock
validator off and on: scheduling points per second and schedules per second
(setup, thread start and join included).  Targets: >= 50,000
points/s and >= 300 schedules/s on a 2-core machine.
"""
import time

from ..locking import RwSemaphore
from ..sched import explore, point
from . import met

ITERATIONS = 10         # 3 threads x 10 x 6 points + waits and exits ~ 200 points per schedule


class _State:
    __slots__ = ("sem", "n")


def _setup():
    s = _State()
    s.sem = RwSemaphore("bench.sched.sem")
    s.n = 0
    return s


def _worker(s):
    sem = s.sem
    for _ in range(ITERATIONS):
        sem.down_read()
        point("read side")
        sem.up_read()
        sem.down_write()
        point("write side")
        s.n += 1
        sem.up_write()


def _check(s):
    assert s.n == 3 * ITERATIONS, s.n


def measure(strategy, schedules, repeat=3):
    """Best of ``repeat`` explore() calls of ``schedules`` schedules each:
    (points/s, schedules/s, points per schedule)."""
    best = None
    for r in range(repeat):
        t0 = time.perf_counter()
        res = explore(_setup, [_worker, _worker, _worker], _check, strategy=strategy,
                      seed=1000 * r, max_schedules=schedules)
        dt = time.perf_counter() - t0
        if res.failure is not None:
            raise RuntimeError(f"the benchmark workload failed:\n{res.failure.message}")
        row = (res.points / dt, res.schedules_run / dt, res.points / res.schedules_run)
        if best is None or row[0] > best[0]:
            best = row
    return best


def run(quick=False):
    from ..locking import lockdep
    schedules = 60 if quick else 300
    rows = []
    was_on = lockdep.is_enabled()
    try:
        for validator in (False, True):
            (lockdep.enable if validator else lockdep.disable)()
            for strategy in ("random", "pct"):
                pps, sps, per = measure(strategy, schedules)
                checked = strategy == "random" and not validator
                rows.append({"strategy": strategy, "validator": "on" if validator else "off",
                             "points/schedule": round(per), "points/s": pps,
                             "schedules/s": sps,
                             "target": ">= 50,000 points/s, >= 300 schedules/s" if checked else "",
                             "met": met(pps >= 50_000 and sps >= 300) if checked else ""})
    finally:
        (lockdep.enable if was_on else lockdep.disable)()
    return {
        "title": "Controlled scheduler: 3 threads on one RwSemaphore",
        "rows": rows,
        "notes": [f"best of 3 explore() calls of {schedules} schedules each; thread start, "
                  "setup, check and join included",
                  "targets: >= 50,000 points/s and >= 300 schedules/s (random, validator off)",
                  "random switches thread at ~2/3 of the points; pct rarely switches"],
    }
