"""Benchmark section "locking": what a lock costs, raw and under the validator.

Per operation (one acquire + one release), best of several repetitions, the
variants of one lock interleaved inside each repetition so they share the
machine's noise:

- raw readerwriterlock RWLockFairD, read (``gen_rlock().acquire()/release()``
  per iteration) and write (one writer object, ``acquire()/release()``);
- pymm RwSemaphore ``down_read/up_read`` and ``down_write/up_write`` with the
  validator off (nothing listening: the locks' fast path) and on, on a
  chain-cache hit (an outer Mutex held, the same chain again and again);
- threading.Lock against pymm Mutex, likewise.

Targets, for the RwSemaphore rows against raw readerwriterlock:
validator off <= 1.1x raw; validator on with a chain-cache hit <= 1.5x raw.
"""
import threading
import time

from readerwriterlock.rwlock import RWLockFairD

from ..locking import Mutex, RwSemaphore, events, lockdep
from . import met

TARGET_OFF, TARGET_ON = 1.1, 1.5


def _loops():
    """The measured loops: name -> (setup, body(n)).  Each body runs n
    acquire+release pairs; setup returns a teardown (or None)."""
    rw = RWLockFairD()
    w = rw.gen_wlock()
    sem = RwSemaphore("bench.sem")
    outer = Mutex("bench.outer")
    m = Mutex("bench.mutex")
    tl = threading.Lock()

    def raw_read(n):
        for _ in range(n):
            r = rw.gen_rlock()
            r.acquire()
            r.release()

    def raw_write(n):
        for _ in range(n):
            w.acquire()
            w.release()

    def raw_write_gen(n):
        for _ in range(n):
            x = rw.gen_wlock()
            x.acquire()
            x.release()

    def sem_read(n):
        down, up = sem.down_read, sem.up_read
        for _ in range(n):
            down()
            up()

    def sem_write(n):
        down, up = sem.down_write, sem.up_write
        for _ in range(n):
            down()
            up()

    def tlock(n):
        a, r = tl.acquire, tl.release
        for _ in range(n):
            a()
            r()

    def mutex(n):
        a, r = m.lock, m.unlock
        for _ in range(n):
            a()
            r()

    def off():
        lockdep.disable()
        return lockdep.enable

    def on():
        # an outer lock held: the measured chain is [outer, lock] -- a hit
        # after the first iteration
        lockdep.enable()
        outer.lock()
        return outer.unlock

    return {
        "read": [("raw readerwriterlock RWLockFairD read", None, raw_read),
                 ("RwSemaphore down_read/up_read, validator off", off, sem_read),
                 ("RwSemaphore down_read/up_read, validator on (chain hit)", on, sem_read)],
        "write": [("raw readerwriterlock RWLockFairD write (one writer object)", None, raw_write),
                  ("RwSemaphore down_write/up_write, validator off", off, sem_write),
                  ("RwSemaphore down_write/up_write, validator on (chain hit)", on, sem_write),
                  ("raw readerwriterlock RWLockFairD write (gen_wlock() per op)", None,
                   raw_write_gen)],
        "mutex": [("threading.Lock acquire/release", None, tlock),
                  ("Mutex lock/unlock, validator off", off, mutex),
                  ("Mutex lock/unlock, validator on (chain hit)", on, mutex)],
    }


def _time(setup, body, n):
    teardown = setup() if setup else None
    try:
        body(100)   # warm up: the first acquisition validates the chain
        t0 = time.perf_counter()
        body(n)
        return (time.perf_counter() - t0) / n * 1e9
    finally:
        if teardown:
            teardown()


def run(quick=False):
    n = 20_000 if quick else 100_000
    reps = 3 if quick else 7
    was = lockdep.is_enabled()
    others = [l for l in events.listeners() if l is not lockdep._listener]
    groups = _loops()
    best = {}
    try:
        for _ in range(reps):
            for group in groups.values():
                for name, setup, body in group:
                    t = _time(setup, body, n)
                    best[name] = min(best.get(name, t), t)
    finally:
        (lockdep.enable if was else lockdep.disable)()
    rows = []
    for gname, group in groups.items():
        raw = best[group[0][0]]      # the ratios' baseline: the group's first row
        for i, (name, _, _) in enumerate(group):
            ratio = best[name] / raw
            target = (None, TARGET_OFF, TARGET_ON, None)[i]
            checked = target is not None and gname != "mutex"
            rows.append({"case": name, "ns/op": round(best[name], 1), "x raw": round(ratio, 3),
                         "target": f"<= {target}x" if checked else "",
                         "met": met(ratio <= target) if checked else ""})
    gen = best[groups["write"][3][0]]
    on_w = best[groups["write"][2][0]]
    notes = [f"one op = acquire + release; best of {reps} repetitions of {n:,} ops, "
             "variants interleaved",
             "write ratios are against one reused writer object (as RwSemaphore reuses "
             "its own); against gen_wlock() per op, the read rows' convention, validator "
             f"on is {on_w / gen:.2f}x",
             f"targets: RwSemaphore vs raw readerwriterlock -- validator off "
             f"<= {TARGET_OFF}x, validator on with a chain-cache hit <= {TARGET_ON}x",
             "Mutex rows are informative: threading.Lock is a C lock with no "
             "Python frame, so any Python wrapper is several times its cost"]
    if others:
        notes.append(f"other listeners were registered ({others}): 'validator off' "
                     "rows then take the watched path")
    return {"title": "Locking: acquire+release cost, raw vs pymm (validator off/on)",
            "rows": rows, "notes": notes}
