"""The lock primitives themselves: exclusion, rwsem writer fairness, atomic
downgrade, trylock results, repr/statistics and misuse.

Blocking is observed, never guessed: a ``Watch`` listener on the choke
point sets an Event when a thread's first try fails (``contended``), which
the locks dispatch right before the thread blocks.  Tests that need no
blocking also run with nothing listening (the locks' fast path).
"""
import threading
import time

import pytest

from pymm.errors import LockUsageError
from pymm.locking import (LOCK_KINDS, MAX_LOCKDEP_SUBCLASSES, Mutex, RwLock, RwSemaphore,
                          SpinLock, events, lockdep, new_lock)


@pytest.fixture(autouse=True)
def clean():
    lockdep.enable()
    lockdep.reset()
    yield
    assert lockdep.held_locks() == []
    lockdep.reset()


@pytest.fixture(params=["watched", "fast-path"])
def mode(request):
    """Run with the validator on, and with nothing listening at all."""
    if request.param == "fast-path":
        lockdep.disable()
        if events.listeners():
            pytest.skip(f"other listeners registered: {events.listeners()}")
        assert events.on is False
    yield request.param
    lockdep.enable()


class Watch:
    """Counts ``contended`` per lock; ``wait_for(lock, n)`` blocks until n."""

    def __init__(self):
        self.cond = threading.Condition()
        self.counts = {}

    def contended(self, lock, read):
        with self.cond:
            self.counts[id(lock)] = self.counts.get(id(lock), 0) + 1
            self.cond.notify_all()

    def wait_for(self, lock, n=1, timeout=10):
        with self.cond:
            return self.cond.wait_for(lambda: self.counts.get(id(lock), 0) >= n, timeout)


@pytest.fixture
def watch():
    w = Watch()
    events.register(w)
    yield w
    events.unregister(w)


def start(fn, name=None):
    t = threading.Thread(target=fn, name=name)
    t.start()
    return t


# -- exclusion ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [SpinLock, Mutex])
def test_exclusive_locks_exclude_across_threads(cls, mode):
    lk = cls(f"prim.excl.{cls.__name__}")
    counter = [0]

    def worker():
        for _ in range(200):
            with lk:
                v = counter[0]
                time.sleep(0)       # invite a switch inside the critical section
                counter[0] = v + 1
                assert lk.owner == threading.get_ident()

    ts = [start(worker) for _ in range(4)]
    for t in ts:
        t.join(30)
    assert counter[0] == 800
    assert not lk.is_locked()


def test_rwsem_writer_excludes_readers_and_readers_share(watch):
    s = RwSemaphore("prim.rw1")
    s.down_read()
    shared = threading.Event()
    t = start(lambda: (s.down_read(), shared.set(), s.up_read()))
    assert shared.wait(10), "a second reader must not wait for the first"
    t.join(10)
    got = []
    w = start(lambda: (s.down_write(), got.append("w"), s.up_write()))
    assert watch.wait_for(s, 1)
    assert got == []
    s.up_read()
    w.join(10)
    assert got == ["w"] and not s.is_locked()


def test_rwsem_is_writer_fair_a_queued_writer_blocks_new_readers(watch):
    s = RwSemaphore("prim.fair")
    order = []
    s.down_read()
    w = start(lambda: (s.down_write(), order.append("writer"), s.up_write()), "writer")
    assert watch.wait_for(s, 1)             # the writer queued behind our read
    assert not s.down_read_trylock()        # a new reader may not overtake it
    r = start(lambda: (s.down_read(), order.append("reader"), s.up_read()), "reader")
    assert watch.wait_for(s, 2)             # and a blocking reader waits too
    assert order == []
    s.up_read()
    w.join(10)
    r.join(10)
    assert order == ["writer", "reader"]


def test_rwlock_readers_are_recursive_even_with_a_writer_waiting(watch):
    rw = RwLock("prim.rwlock")
    rw.read_lock()
    got = []
    w = start(lambda: (rw.write_lock(), got.append("w"), rw.write_unlock()))
    assert watch.wait_for(rw, 1)
    rw.read_lock()          # rwlock_t: a reader re-enters past the waiting writer
    assert rw.readers == {threading.get_ident(): 2}
    rw.read_unlock()
    assert got == []
    rw.read_unlock()
    w.join(10)
    assert got == ["w"]


def test_downgrade_is_atomic_no_writer_gets_in_between(watch):
    s = RwSemaphore("prim.dg")
    s.down_write()
    got = []
    w = start(lambda: (s.down_write(), got.append("w2"), s.up_write()), "w2")
    assert watch.wait_for(s, 1)
    s.downgrade_write()
    me = threading.get_ident()
    # still held, now for read, by us alone; the queued writer is still out
    assert s.owner is None and s.readers == {me: 1}
    assert not s.down_write_trylock()
    assert got == [] and s.waiters == 1
    assert [(h.name, h.read) for h in lockdep.held_locks()] == [("prim.dg", 1)]
    s.up_read()
    w.join(10)
    assert got == ["w2"] and not s.is_locked()


def test_downgrade_then_up_read_leaves_the_rwsem_free(mode):
    s = RwSemaphore("prim.dg2")
    s.down_write()
    s.downgrade_write()
    assert s.owner is None
    s.up_read()
    assert not s.is_locked()
    s.down_write()      # and a writer gets it again
    s.up_write()


# -- trylock -------------------------------------------------------------------------------------

def test_trylock_results(mode):
    m, sp = Mutex("prim.try.m"), SpinLock("prim.try.s")
    s, rw = RwSemaphore("prim.try.sem"), RwLock("prim.try.rw")
    for lk in (m, sp):
        assert lk.trylock() is True
        res = []
        t = start(lambda lk=lk: res.append(lk.trylock()))
        t.join(10)
        assert res == [False]
        lk.unlock()
    assert s.down_read_trylock() is True
    res = []
    start(lambda: res.extend([s.down_read_trylock() and (s.up_read() or True),
                              s.down_write_trylock()])).join(10)
    assert res == [True, False]
    s.up_read()
    assert s.down_write_trylock() is True
    res = []
    start(lambda: res.extend([s.down_read_trylock(), s.down_write_trylock()])).join(10)
    assert res == [False, False]
    s.up_write()
    assert rw.write_trylock() is True
    res = []
    start(lambda: res.extend([rw.read_trylock(), rw.write_trylock()])).join(10)
    assert res == [False, False]
    rw.write_unlock()
    assert rw.read_trylock() and rw.read_trylock()
    rw.read_unlock()
    rw.read_unlock()
    assert not any(lk.is_locked() for lk in (m, sp, s, rw))


# -- introspection ---------------------------------------------------------------------------------

def test_repr_and_statistics():
    s = RwSemaphore("prim.stat")
    assert repr(s).startswith("<RwSemaphore 'prim.stat' unlocked at 0x")
    s.down_read()
    st = s.statistics()
    assert st["name"] == "prim.stat" and st["kind"] == "rwsem" and st["locked"] is True
    assert st["readers"] == {"MainThread": 1} and st["owner"] is None
    assert "read-held by MainThread" in repr(s)
    s.up_read()
    m = Mutex("prim.stat.m")
    m.lock()
    assert "held by MainThread" in repr(m)
    assert m.statistics()["owner"] == "MainThread"
    m.unlock()
    before = m.statistics()["acquisitions"]
    m.lock()
    m.unlock()
    assert m.statistics()["acquisitions"] == before + 1


def test_locks_with_the_same_name_and_kind_share_a_class():
    a, b, c = Mutex("prim.cls"), Mutex("prim.cls"), SpinLock("prim.cls")
    assert a.key is b.key and a.key is not c.key
    assert a.key.sleeping and not c.key.sleeping


# -- misuse ------------------------------------------------------------------------------------------

UNLOCKS = [
    (Mutex, "lock", "unlock"), (SpinLock, "lock", "unlock"),
    (RwSemaphore, "down_write", "up_write"), (RwSemaphore, "down_read", "up_read"),
    (RwLock, "write_lock", "write_unlock"), (RwLock, "read_lock", "read_unlock"),
]


@pytest.mark.parametrize("cls,take,drop", UNLOCKS, ids=[f"{c.__name__}.{d}" for c, _, d in UNLOCKS])
def test_bad_unlock_raises_and_leaves_the_lock_usable(cls, take, drop, mode):
    lk = cls(f"prim.bad.{cls.__name__}")
    with pytest.raises(LockUsageError, match="does not hold it"):
        getattr(lk, drop)()
    assert not lk.is_locked()
    getattr(lk, take)()
    getattr(lk, drop)()
    assert not lk.is_locked()
    if mode == "watched":
        assert [r.kind for r in lockdep.reports()] == ["bad-unlock"]


def test_unlock_by_another_thread_is_refused():
    m = Mutex("prim.bad.other")
    m.lock()
    err = []

    def other():
        try:
            m.unlock()
        except LockUsageError as e:
            err.append(e)

    start(other).join(10)
    assert err and m.owner == threading.get_ident()
    m.unlock()


@pytest.mark.parametrize("bad", [-1, MAX_LOCKDEP_SUBCLASSES, 1.0, "1", None])
def test_subclass_out_of_range(bad):
    for call in (Mutex("prim.sub").lock_nested, RwSemaphore("prim.sub").down_read_nested,
                 RwSemaphore("prim.sub").down_write_nested):
        with pytest.raises(LockUsageError, match="subclass must be an int in 0..7"):
            call(bad)


def test_new_lock_by_kind_and_bad_input():
    for kind, cls in LOCK_KINDS.items():
        assert type(new_lock(kind, f"prim.new.{kind}")) is cls
    with pytest.raises(LockUsageError, match="unknown lock kind 'semaphore'; expected one of"):
        new_lock("semaphore", "x")
    with pytest.raises(LockUsageError, match="unknown lock kind"):
        new_lock(["mutex"], "x")
    with pytest.raises(LockUsageError, match="non-empty class name"):
        Mutex("")
    with pytest.raises(LockUsageError, match="non-empty class name"):
        RwSemaphore(None)
