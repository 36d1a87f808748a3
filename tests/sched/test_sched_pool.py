"""The managed threads run on pooled OS threads kept across schedules, with
each schedule isolated exactly as if its threads were fresh: thread names,
pymm's thread-locals (current task, RCU depth, lockdep's held locks), and a
worker that leaked from an aborted run is never reused."""
import threading
from types import SimpleNamespace

from pymm import Kernel
from pymm.context import _KernelContext, current
from pymm.locking import Mutex
from pymm.locking import lockdep
from pymm.rcu import rcu_read_lock, rcu_read_lock_held
from pymm.sched import _core, explore, point, run_schedule


def _setup():
    return SimpleNamespace(seen=[])


def _who(s):
    t = threading.current_thread()
    s.seen.append((t.ident, t.name))
    point("a")


def test_workers_are_reused_and_named_after_the_managed_thread():
    states = []

    def setup():
        states.append(_setup())
        return states[-1]

    explore(setup, [_who, _who, _who], max_schedules=5)
    tids = [{tid for tid, _ in s.seen} for s in states]
    assert all(len(t) == 3 for t in tids) and all(t == tids[0] for t in tids)
    assert sorted({name for s in states for _, name in s.seen}) == ["T0-_who", "T1-_who", "T2-_who"]
    idle = [t.name for t in threading.enumerate() if t.ident in tids[0]]
    assert idle == [_core._IDLE_NAME] * 3


def test_thread_local_state_does_not_survive_a_schedule():
    """Schedule n leaves its thread in kernel context, inside an RCU read
    section and holding a lockdep-tracked entry; schedule n+1 on the same
    worker starts clean."""
    k = Kernel(nodes=1, pages_per_node=16, hugepages_per_node=0)
    task = k.spawn("p")
    seen = []
    mine = threading.local()        # the program's own (not a module-level one)

    def dirty(s):
        seen.append((current(), rcu_read_lock_held(), len(lockdep.held_locks()),
                     getattr(mine, "v", None)))
        _KernelContext(task).__enter__()        # never exited
        rcu_read_lock()                          # never unlocked
        mine.v = 1
        point("dirty")

    was = lockdep.is_enabled()
    lockdep.enable()
    try:
        r = explore(lambda: None, [dirty], max_schedules=3)
    finally:
        (lockdep.enable if was else lockdep.disable)()
    assert r.failure is None
    assert seen == [(None, False, 0, None)] * 3


def test_a_thread_that_never_started_gives_its_worker_back():
    def boom(s):
        raise RuntimeError("first")

    def other(s):
        point("never")

    before = len(_core._pool)
    out = run_schedule(lambda: None, [boom, other], [0])
    assert out.failure.kind == "exception"
    assert out.failure.leaked_threads == []
    assert len(_core._pool) >= max(before, 2)
    assert all(not w.retired and w.job is None for w in _core._pool)


def test_a_leaked_worker_is_retired_and_replaced():
    release = threading.Event()
    tids = []

    def stuck(s):
        tids.append(threading.get_ident())
        release.wait()          # blocking the scheduler cannot see

    r = explore(lambda: None, [stuck], max_schedules=1, watchdog=0.3)
    try:
        assert r.failure.kind == "hung"
        assert r.failure.leaked_threads and tids
        assert all(w.tid != tids[0] for w in _core._pool)
    finally:
        release.set()
    again = []
    explore(lambda: None, [lambda s: again.append(threading.get_ident())], max_schedules=1)
    assert again and again[0] != tids[0]


def test_locks_are_released_between_schedules_after_an_abort():
    """An aborted thread's pymm locks are released for it; the next schedule
    on the same workers takes them freely."""
    m = SimpleNamespace()

    def setup():
        m.lock = Mutex("pool-test.m")
        return m

    def take_and_fail(s):
        s.lock.lock()
        raise RuntimeError("holding")

    r = run_schedule(setup, [take_and_fail], [])
    assert r.failure.kind == "exception" and r.failure.released_on_abort
    r2 = explore(setup, [lambda s: (s.lock.lock(), s.lock.unlock())], max_schedules=2)
    assert r2.failure is None


def test_gate_lets_one_wait_through_per_opening_run():
    """The scheduler's gate: an opening made before the wait is not lost,
    and openings made before one wait let that one wait through only."""
    g = _core._Gate()
    assert not g.is_open() and not g.wait_for(0.01)
    g.open()
    assert g.is_open()
    g.wait()
    assert not g.is_open()
    g.open()
    g.open()
    assert g.wait_for(0.01)
    assert not g.is_open() and not g.wait_for(0.01)


def _fds():
    import os
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def _boom(s):
    point("a")
    raise RuntimeError("boom")


def test_schedules_leave_no_descriptor_behind():
    """Gates are per worker (pooled) and the controller's is reused: clean and
    failing schedules, run after run, open no descriptor that stays open."""
    import gc
    explore(_setup, [_who, _who, _who], max_schedules=3)     # warm the pool
    gc.collect()            # (earlier tests' retired workers' gates close when collected)
    before = _fds()
    if before is None:
        return      # no /proc: nothing to count here
    for seed in range(5):
        explore(_setup, [_who, _who, _who], seed=seed, max_schedules=40)
        r = explore(_setup, [_who, _boom, _who], seed=seed, max_schedules=5)
        assert r.failure is not None and r.failure.kind == "exception"
    gc.collect()
    assert _fds() <= before     # a descriptor per schedule would be 225 more


def test_a_signal_to_a_waiting_worker_does_not_end_it():
    """A signal delivered to a pooled worker (or a managed thread) blocked
    on its gate interrupts the wait (EINTR); the wait resumes, the worker
    stays usable.  Regression: the eventfd gate's read raised
    InterruptedError, which ended the worker's loop."""
    import os
    import signal
    import time
    got = []
    prev = signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
    try:
        explore(_setup, [_who, _who, _who], max_schedules=2)
        workers = list(_core._pool)
        for w in workers:
            signal.pthread_kill(w.tid, signal.SIGUSR1)
        time.sleep(0.2)     # (let the signals land; nothing to synchronise with)
        assert all(w.thread.is_alive() for w in workers)
        r = explore(_setup, [_who, _who, _who], max_schedules=5)
        assert r.failure is None and r.schedules_run == 5
    finally:
        signal.signal(signal.SIGUSR1, prev)
