"""Benchmark section "vtime": what virtual time costs.

- An experiment at default settings (every design x 5 seeds, 5 virtual ms
  each): wall seconds per design-seed and for the whole experiment, and the
  process's CPU seconds beside them (on a shared machine the wall time
  says more about the load than about pymm).  The target is 4 designs x 5
  seeds in under 2 minutes of wall time.
- What the cost points cost ``pymm stress`` when nobody simulates: a
  controlled ``mix`` run is repeated with a counting hook to learn how many
  ``charge`` calls it makes; the cost of one call that finds no simulation
  (one global load and a compare) is timed on its own; their product over the
  run's own wall time is the slow-down (target <= 10%).  Measured, not
  asserted.
"""
import os
import time
import timeit

from .. import experiment, stress
from ..sched import vtime
from . import met


def _charge_calls(name, variant, schedules):
    """How many ``charge`` calls a controlled run makes."""
    n = [0]

    def count(what, k=1):
        n[0] += 1
    prev = vtime._charge
    vtime._charge = count
    try:
        stress.run_controlled(name, variant, 0, schedules)
    finally:
        vtime._charge = prev
    return n[0]


def run(quick=False):
    rows, notes = [], []
    seeds = 2 if quick else 5
    for name in experiment.EXPERIMENTS:
        cls = experiment.EXPERIMENTS[name]
        t0, c0 = time.perf_counter(), time.process_time()
        experiment.run(name, seeds=seeds)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        n = len(cls.variants) * seeds
        per = dt / n
        rows.append({"measure": f"experiment {name}", "config": f"{len(cls.variants)} designs x {seeds} seeds",
                     "value": f"{dt:.1f} s wall, {cpu:.1f} s CPU ({per:.2f} s wall, {cpu / n:.2f} s CPU "
                              f"per design-seed; 4 x 5 would take {20 * per:.0f} s wall, "
                              f"{20 * cpu / n:.0f} s CPU)",
                     "target": "4 designs x 5 seeds < 120 s", "met": met(20 * per < 120)})
    schedules = 20 if quick else 100
    vtime._charge = None
    t0 = time.perf_counter()
    stress.run_controlled("mix", "default", 0, schedules)
    wall = time.perf_counter() - t0
    calls = _charge_calls("mix", "default", schedules)
    per_call = min(timeit.repeat(lambda: vtime.charge("pte"), number=100_000, repeat=5)) / 100_000
    slow = calls * per_call / wall
    rows.append({"measure": "charge() calls in pymm stress (controlled mix)",
                 "config": f"{schedules} schedules", "value": f"{calls:,} calls, {per_call * 1e9:.0f} ns each "
                 f"= {100 * slow:.2f}% of {wall:.1f} s", "target": "<= 10% slow-down",
                 "met": met(slow <= 0.10)})
    notes.append(f"load average {os.getloadavg()[0]:.2f} (the machine is shared)")
    return {"title": "virtual time: experiment cost and cost-point overhead", "rows": rows, "notes": notes}
