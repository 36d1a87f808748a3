"""Benchmark section "engine": what the engine spends per schedule, per fault
and per page.

- distinct interleavings per campaign: 8 seeds x 150 schedules of populate's
  mainline variant (every schedule runs: the variant is clean), counted by
  distinct schedule digests.  Schedules of different seeds draw from
  independent streams, so only genuine coincidences repeat (a short program
  has few interleavings: populate's schedules make 10-55 choices).
- per-schedule fixed cost: ``explore`` of trivial threads (no scheduling
  point but start and exit), 3 and 23 threads, validator off: setup, thread
  hand-out, the hand-overs, join and bookkeeping.
- ``mix`` controlled: wall and CPU milliseconds per schedule.
- us per fault: one-byte stores, one per page, into a fresh private
  anonymous mapping, validator off and on (thread CPU time, best of 3).
- RSS per touched page: a populated mapping, then one store per page, in a
  fresh interpreter; and the RSS of a 1 GiB region populated and touched.
- free-mode ops/s: ``mix`` in free mode (real threads, delay injection).
- the floor under the scheduler's figures: one OS-level hand-over (two
  threads passing the baton, what a controlled schedule pays at every
  thread switch), measured in the same run for the scheduler's gate (an
  eventfd) and for raw locks, semaphores, events and conditions.
- Python calls per fault (cProfile's count: deterministic, load-free) and
  ``context.current()`` with no task set.

The machine is shared: the load average at the start and end is in the
notes; compare ratios within one run."""
import json
import os
import statistics
import subprocess
import sys
import time

from .. import constants as C
from .. import stress
from ..locking import lockdep
from ..sched import explore
from . import met
from .mm import _validator, fault_seconds

P = C.PAGE_SIZE
RW = C.PROT_READ | C.PROT_WRITE
ANON = C.MAP_PRIVATE | C.MAP_ANONYMOUS


def _row(measure, config, value, unit, target="", ok=None):
    return {"measure": measure, "config": config, "value": value, "unit": unit, "target": target,
            "met": "" if ok is None else met(ok)}


def distinct_interleavings(seeds=8, schedules=150, scenario="populate", variant="revalidate"):
    digests, n = set(), 0
    for s in range(seeds):
        r = stress.run_controlled(scenario, variant, s, schedules)
        if not r.ok:
            raise RuntimeError(f"{scenario}/{variant} seed {s}: {r.verdict}")
        digests |= r.digests
        n += r.schedules
    return len(digests), n


def _nop(state):
    pass


def fixed_cost_ms(threads, schedules=300, repeat=3):
    """Best-of-``repeat`` (wall, CPU) milliseconds per schedule of trivial
    threads (CPU: the process's, every thread's)."""
    best = cpu = None
    with _validator(False):
        explore(lambda: None, [_nop] * threads, max_schedules=5)      # warm the pool
        for r in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            res = explore(lambda: None, [_nop] * threads, seed=r, max_schedules=schedules)
            dt = (time.perf_counter() - t0) / res.schedules_run
            dc = (time.process_time() - c0) / res.schedules_run
            best = dt if best is None else min(best, dt)
            cpu = dc if cpu is None else min(cpu, dc)
    return best * 1e3, cpu * 1e3


def mix_ms(schedules, seeds=3):
    """(median wall ms, median CPU ms) per controlled ``mix`` schedule."""
    wall, cpu = [], []
    for s in range(seeds):
        t0, c0 = time.perf_counter(), time.process_time()
        r = stress.run_controlled("mix", "default", s, schedules)
        if not r.ok:
            raise RuntimeError(f"mix seed {s}: {r.verdict}")
        wall.append((time.perf_counter() - t0) / r.schedules * 1e3)
        cpu.append((time.process_time() - c0) / r.schedules * 1e3)
    return statistics.median(wall), statistics.median(cpu)


def fault_us(pages, validator, repeat=3):
    """Best-of-``repeat`` thread-CPU microseconds per write fault."""
    return fault_seconds(pages, validator, repeat, time.thread_time) * 1e6


def fault_calls(pages=1000):
    """Python function calls (pure-Python and built-in) per write fault, validator off."""
    import cProfile
    import pstats
    from ..kernel import Kernel
    with _validator(False):
        k = Kernel(nodes=1, pages_per_node=pages + 64, hugepages_per_node=0)
        p = k.spawn("faulter")
        a = p.mmap(0, pages * P, RW, ANON)
        store = p.store
        pr = cProfile.Profile()
        pr.enable()
        for i in range(pages):
            store(a + i * P, b"x")
        pr.disable()
        p.exit()
    return pstats.Stats(pr).total_calls / pages


def _gates(kind):
    """Two gates (open, wait) of a hand-over primitive."""
    import threading
    if kind == "eventfd (the scheduler's gate)":
        from ..sched._core import _Gate
        a, b = _Gate(), _Gate()
        return (a.open, a.wait), (b.open, b.wait), (a, b)
    if kind == "raw lock":
        from _thread import allocate_lock
        a, b = allocate_lock(), allocate_lock()
        a.acquire()
        b.acquire()
        return (a.release, a.acquire), (b.release, b.acquire), ()
    if kind == "threading.Semaphore":
        a, b = threading.Semaphore(0), threading.Semaphore(0)
        return (a.release, a.acquire), (b.release, b.acquire), ()
    if kind == "threading.Event":
        def gate():
            e = threading.Event()

            def wait():
                e.wait()
                e.clear()
            return e.set, wait
        return gate(), gate(), ()
    if kind == "threading.Condition":
        def gate():
            c, flag = threading.Condition(), [False]

            def open_():
                with c:
                    flag[0] = True
                    c.notify()

            def wait():
                with c:
                    while not flag[0]:
                        c.wait()
                    flag[0] = False
            return open_, wait
        return gate(), gate(), ()
    raise ValueError(kind)


HANDOVER_KINDS = ("raw lock", "eventfd (the scheduler's gate)", "threading.Semaphore",
                  "threading.Event", "threading.Condition")


def handover_us(kind="eventfd (the scheduler's gate)", n=10_000):
    """(wall, CPU) microseconds per hand-over between two OS threads passing
    a baton through two gates of ``kind`` (best of 3): what a controlled
    thread switch pays at least on this machine.  CPU: the process's."""
    import threading
    best = None
    for _ in range(3):
        (open_a, wait_a), (open_b, wait_b), keep = _gates(kind)

        def other():
            for _ in range(n):
                wait_a()
                open_b()
        t = threading.Thread(target=other)
        t.start()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            open_a()
            wait_b()
        row = ((time.perf_counter() - t0) / (2 * n), (time.process_time() - c0) / (2 * n))
        t.join()
        best = row if best is None or row[0] < best[0] else best
    return best[0] * 1e6, best[1] * 1e6


def current_ns(n=200_000):
    """Nanoseconds per ``context.current()`` with no task set (user space)."""
    import timeit
    from ..context import current
    return min(timeit.repeat(current, number=n, repeat=5)) / n * 1e9


def touched_child(pages):
    """In a fresh interpreter: RSS of populating ``pages`` pages, then of one
    store per page; prints JSON."""
    from ..kernel import Kernel
    import gc
    lockdep.disable()

    def rss():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    k = Kernel(nodes=1, pages_per_node=pages + 1024, hugepages_per_node=0)
    p = k.spawn("toucher")
    gc.collect()
    r0 = rss()
    a = p.mmap(0, pages * P, RW, ANON | C.MAP_POPULATE)
    gc.collect()
    r1 = rss()
    store = p.store
    for i in range(pages):
        store(a + i * P, b"x")
    gc.collect()
    r2 = rss()
    print(json.dumps({"populated": r1 - r0, "touched": r2 - r1, "total": r2, "pages": pages}))


def touched(pages):
    code = f"from pymm.benchmarks.engine import touched_child; touched_child({pages})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=3600, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def free_ops(seconds):
    r = stress.run_free("mix", "default", 0, seconds)
    if not r.ok:
        raise RuntimeError(f"mix free: {r.verdict}")
    return r.ops / r.seconds


def run(quick=False):
    load0 = os.getloadavg()
    rows = []
    for kind in HANDOVER_KINDS:
        wall, cpu = handover_us(kind, 2_000 if quick else 10_000)
        rows.append(_row("OS hand-over floor", f"two threads passing a baton: {kind}, wall",
                         wall, "us"))
        rows.append(_row("OS hand-over floor", f"two threads passing a baton: {kind}, CPU",
                         cpu, "us"))
    d, n = distinct_interleavings(seeds=8, schedules=30 if quick else 150)
    rows.append(_row("distinct interleavings", f"populate/revalidate, 8 seeds x {n // 8} schedules",
                     d, f"of {n}", f"{n}", d == n))
    for threads, target in ((3, 0.05), (23, 0.3)):
        ms, cpu = fixed_cost_ms(threads, 100 if quick else 300)
        rows.append(_row("per-schedule fixed cost", f"{threads} trivial threads, validator off",
                         ms, "ms", f"< {target}", ms < target))
        rows.append(_row("per-schedule fixed cost", f"{threads} trivial threads, CPU", cpu, "ms"))
    wall, cpu = mix_ms(5 if quick else 20)
    rows.append(_row("mix, controlled", "wall per schedule (median of 3 seeds)", wall, "ms", "< 25",
                     wall < 25))
    rows.append(_row("mix, controlled", "CPU per schedule (median of 3 seeds)", cpu, "ms"))
    pages = 5_000 if quick else 20_000
    for v in (False, True):
        us = fault_us(pages, v)
        rows.append(_row("page fault", f"{pages} pages, validator {'on' if v else 'off'}",
                         us, "us CPU", "" if v else "<= 15", None if v else us <= 15))
    rows.append(_row("page fault", "Python calls per fault, validator off", fault_calls(), "calls"))
    rows.append(_row("context.current()", "no task set", current_ns(), "ns"))
    t = touched(20_000 if quick else 50_000)
    per = t["touched"] / t["pages"]
    rows.append(_row("RSS per touched page", f"{t['pages']:,} pages populated, then one store each",
                     per, "bytes", "<= 1024", per <= 1024))
    if not quick:
        g = touched(262_144)
        mib = g["total"] / 2**20
        rows.append(_row("1 GiB populated and touched", "262,144 pages: process RSS",
                         mib, "MiB", "< 500", mib < 500))
    rows.append(_row("free-mode ops/s", f"mix, {1 if quick else 5} s", free_ops(1.0 if quick else 5.0),
                     "ops/s"))
    load1 = os.getloadavg()
    return {
        "title": "Engine: independent schedules, scheduler cost, fault path, memory",
        "rows": rows,
        "notes": [f"load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
                  f"at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} (2 cores)",
                  "wall figures grow with the load (a hand-over waits for the OS to run the "
                  "next thread); CPU figures much less",
                  "distinct interleavings: a repeat is a genuine coincidence of two independent "
                  "random walks over a short program, not a shared stream"],
    }
