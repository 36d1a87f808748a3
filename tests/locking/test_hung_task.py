"""The hung-task watchdog: threads blocked past a threshold, and real
wait-for cycles reported as demonstrated deadlocks.

A real deadlock cannot be undone by releasing a lock (every lock in the
cycle is held by a blocked thread), so the deadlock test builds its Mutexes
on a *cancellable* raw-lock backend: a blocking acquire waits in slices and
gives up with ``Cancelled`` once the test says so.  The pymm lock sees an
exception end the wait (the ``aborted`` event), each thread unwinds and
releases what it holds, and no thread is left behind.
"""
import threading

import pytest

from pymm.locking.lockdep_report import thread_label

from pymm.errors import PymmError
from pymm.locking import Mutex, RwSemaphore, events, hung_task, lockdep


@pytest.fixture(autouse=True)
def clean():
    was = lockdep.is_enabled()
    lockdep.enable()
    lockdep.reset()
    prev = lockdep.configure(raise_on_report=False)
    hung_task.enable()
    yield
    hung_task.disable()
    lockdep.configure(**prev)
    lockdep.reset()
    if not was:
        lockdep.disable()


class Cancelled(Exception):
    """Raised in a blocked acquire once the test cancels waits."""


class CancellableLock:
    """A raw lock (the backend's lock_factory) whose blocking acquire can be
    cancelled.  Waiting is a periodic poll of the cancel flag, never a
    sleep standing in for synchronisation."""

    cancel = None   # a threading.Event, set per test

    def __init__(self):
        self._l = threading.Lock()

    def acquire(self, blocking=True, timeout=-1):
        if not blocking or timeout == 0:
            return self._l.acquire(False)
        while not self._l.acquire(timeout=0.02):
            if self.cancel.is_set():
                raise Cancelled()
        return True

    def release(self):
        self._l.release()

    def locked(self):
        return self._l.locked()


class ContendedWatch:
    """A listener that lets the test wait until N threads are contended."""

    def __init__(self, n):
        self.n = n
        self.count = 0
        self.lock = threading.Lock()
        self.all = threading.Event()

    def contended(self, lock, read):
        with self.lock:
            self.count += 1
            if self.count >= self.n:
                self.all.set()


def test_abba_on_mutexes_is_a_demonstrated_deadlock_and_the_threads_are_freed():
    CancellableLock.cancel = threading.Event()
    backend = events.Backend(CancellableLock, events.DEFAULT_BACKEND.time_source, "cancellable")
    with events.use_backend(backend):
        a, b = Mutex("ht.A"), Mutex("ht.B")
    watch = ContendedWatch(2)
    events.register(watch)
    has_a, has_b = threading.Event(), threading.Event()
    outcome = {}

    def cpu(first, second, mine, other, name):
        first.lock()
        try:
            mine.set()
            assert other.wait(10)
            try:
                second.lock()
                second.unlock()
                outcome[name] = "locked"
            except Cancelled:
                outcome[name] = "cancelled"
        finally:
            first.unlock()

    t1 = threading.Thread(target=cpu, args=(a, b, has_a, has_b, "t1"), name="ht-t1")
    t2 = threading.Thread(target=cpu, args=(b, a, has_b, has_a, "t2"), name="ht-t2")
    try:
        t1.start()
        t2.start()
        assert watch.all.wait(10), "the threads never contended"
        reps = hung_task.check_now(threshold=0)
    finally:
        CancellableLock.cancel.set()
        t1.join(10)
        t2.join(10)
        events.unregister(watch)
    assert not t1.is_alive() and not t2.is_alive()
    # the first thread cancelled frees its lock, so the other may get it first
    assert set(outcome) == {"t1", "t2"} and "cancelled" in outcome.values()
    assert not a.is_locked() and not b.is_locked()
    assert hung_task.waiting() == {}

    by_kind = {}
    for r in reps:
        by_kind.setdefault(r.kind, []).append(r)
    assert sorted(by_kind) == ["deadlock", "hung-task"]
    assert len(by_kind["hung-task"]) == 2
    (dl,) = by_kind["deadlock"]
    assert dl.title == "WARNING: deadlock detected"
    assert "demonstrated" in dl.text
    assert sorted(dl.data["classes"]) == ["ht.A", "ht.B"]
    names = {s["thread"]["name"]: s for s in dl.data["cycle"]}
    assert names["ht-t1"]["class"] == "ht.B" and names["ht-t1"]["holder"]["name"] == "ht-t2"
    assert names["ht-t2"]["class"] == "ht.A" and names["ht-t2"]["holder"]["name"] == "ht-t1"
    assert "Showing all locks held in the system:" in dl.text
    # lockdep saw the inversion before it happened, and everything is in one list
    assert [r.kind for r in lockdep.reports()].count("circular") == 1
    assert dl in lockdep.reports()
    # a second look finds the same problems: nothing new
    assert hung_task.check_now(threshold=0) == []


def test_a_blocked_thread_is_reported_with_the_holders_and_all_held_locks():
    sem = RwSemaphore("ht2.sem")
    watch = ContendedWatch(1)
    events.register(watch)
    sem.down_read()         # main holds it for read: the writer below blocks
    done = threading.Event()

    def writer():
        sem.down_write()
        sem.up_write()
        done.set()

    t = threading.Thread(target=writer, name="ht2-writer")
    t.start()
    try:
        assert watch.all.wait(10)
        assert hung_task.check_now(threshold=3600) == []     # not blocked that long
        reps = hung_task.check_now(threshold=0)
    finally:
        sem.up_read()
        t.join(10)
        events.unregister(watch)
    assert done.is_set() and not t.is_alive()
    (r,) = reps
    assert r.kind == "hung-task"
    assert r.title == f"INFO: task ht2-writer:{t.ident} blocked for more than 0 seconds."
    assert r.text.startswith(r.title + "\n")
    me = thread_label("MainThread", threading.get_ident())
    assert f" {me} (read)" in r.text    # rwsem readers count
    assert "Showing all locks held in the system:" in r.text
    assert f"1 lock held by {me}:" in r.text
    assert "Call Trace:" in r.text and "writer" in r.text
    assert r.data["holders"] == [{"name": "MainThread", "tid": threading.get_ident(),
                                  "mode": "read"}]
    assert r.data["lock"]["mode"] == "write"
    assert r in lockdep.reports()


def test_watchdog_thread_reports_through_subscribers_and_stops_promptly():
    m = Mutex("ht3.M")
    got = threading.Event()
    seen = []

    def sub(r):
        if r.kind == "hung-task":
            seen.append(r)
            got.set()

    lockdep.subscribe(sub)
    m.lock()
    t = threading.Thread(target=lambda: (m.lock(), m.unlock()), name="ht3-waiter")
    try:
        t.start()
        hung_task.start(threshold=0.05, interval=0.01)
        assert hung_task.is_running()
        assert got.wait(10), "the watchdog never reported"
    finally:
        hung_task.stop()
        m.unlock()
        t.join(10)
        lockdep.unsubscribe(sub)
    assert not hung_task.is_running()
    assert seen[0].title.startswith("INFO: task ht3-waiter:")
    assert "blocked for more than 0 seconds." in seen[0].title


def test_self_deadlock_waiting_on_a_lock_the_thread_holds_is_a_cycle():
    CancellableLock.cancel = threading.Event()
    backend = events.Backend(CancellableLock, events.DEFAULT_BACKEND.time_source, "cancellable")
    with events.use_backend(backend):
        m = Mutex("ht4.M")
    watch = ContendedWatch(1)
    events.register(watch)

    def aa():
        m.lock()
        try:
            m.lock()    # lockdep reports it; the real lock then blocks forever
        except Cancelled:
            pass
        finally:
            m.unlock()

    t = threading.Thread(target=aa, name="ht4-aa")
    try:
        t.start()
        assert watch.all.wait(10)
        reps = hung_task.check_now(threshold=0)
    finally:
        CancellableLock.cancel.set()
        t.join(10)
        events.unregister(watch)
    assert not t.is_alive()
    assert sorted(r.kind for r in reps) == ["deadlock", "hung-task"]
    assert [r.kind for r in lockdep.reports()][0] == "recursive"


def test_bad_input_and_tracking_off():
    with pytest.raises(PymmError, match="threshold"):
        hung_task.check_now(-1)
    with pytest.raises(PymmError, match="interval"):
        hung_task.start(threshold=1, interval=0)
    hung_task.disable()
    with pytest.raises(PymmError, match="enable"):
        hung_task.check_now(0)


def test_reading_the_waiters_while_a_garbage_collection_lets_another_thread_change_them():
    """CI once failed with "dictionary changed size during iteration" in
    ``waiting()``: iterating the waiters allocates tuples, an allocation can
    start a garbage collection, and a finalizer run by it lets another
    thread add or drop its wait.  Here the finalizer adds the wait itself,
    with the collector collecting on every allocation, so the change lands
    mid-read every time unless the read is a copy that runs no Python code."""
    import gc

    class Waits:
        """Cyclic garbage whose finalizer starts or ends a wait (another
        thread's, in life) and leaves new garbage for the next collection."""
        def __del__(self):
            if hung_task._waiting.pop(-1, None) is None:
                hung_task._waiting[-1] = (lock, False, 0.0)
            if armed:
                garbage()

    def garbage():
        w = Waits()
        w.cycle = w

    lock = Mutex("test_gc_waiter")
    for tid in range(-5000, -2):
        hung_task._waiting[tid] = (lock, False, 0.0)
    thresholds = gc.get_threshold()
    armed = True
    try:
        garbage()
        gc.set_threshold(1)
        seen = hung_task.waiting()
        lines = hung_task.format_waits()
    finally:
        gc.set_threshold(*thresholds)
        armed = False
        gc.collect()
        for tid in list(range(-5000, -2)) + [-1]:
            hung_task._waiting.pop(tid, None)
    assert set(range(-5000, -2)) <= set(seen)
    assert len(lines) >= 4998
