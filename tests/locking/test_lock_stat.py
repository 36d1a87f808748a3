"""lock_stat: contentions, wait and hold times per class, -W/-R rows for
rw locks, contention call sites; off by default."""
import threading

import pytest

from pymm.locking import Mutex, RwSemaphore, events, lock_stat


@pytest.fixture(autouse=True)
def clean():
    assert not lock_stat.is_enabled(), "lock_stat must be off by default"
    lock_stat.reset()
    lock_stat.enable()
    yield
    lock_stat.disable()
    lock_stat.reset()


class Contended:
    def __init__(self):
        self.ev = threading.Event()

    def contended(self, lock, read):
        self.ev.set()


def contend(lock_fn, unlock_fn, holder_take, holder_drop, name):
    """Main thread holds; a thread blocks (contended) then gets the lock."""
    watch = Contended()
    events.register(watch)
    holder_take()
    t = threading.Thread(target=lambda: (lock_fn(), unlock_fn()), name=name)
    try:
        t.start()
        assert watch.ev.wait(10)
    finally:
        holder_drop()
        t.join(10)
        events.unregister(watch)
    assert not t.is_alive()


def waits_for_the_lock(m):
    m.lock()
    m.unlock()


def test_mutex_contention_wait_and_hold_times():
    m = Mutex("ls.M")
    contend(lambda: waits_for_the_lock(m), lambda: None, m.lock, m.unlock, "ls-waiter")
    for _ in range(3):
        m.lock()
        m.unlock()
    snap = lock_stat.snapshot()
    row = snap["ls.M"]
    assert row["class"] == "ls.M" and row["kind"] == "mutex"
    assert row["contentions"] == 1
    assert row["acquisitions"] == 5             # holder, waiter, 3 more
    assert 0 < row["waittime_min"] == row["waittime_max"] == row["waittime_total"]
    assert row["waittime_avg"] == pytest.approx(row["waittime_total"])
    assert 0 < row["holdtime_min"] <= row["holdtime_avg"] <= row["holdtime_max"]
    assert row["holdtime_total"] == pytest.approx(row["holdtime_avg"] * 5)
    (pt,) = row["contention_points"]
    assert pt["count"] == 1 and pt["site"].startswith("waits_for_the_lock+0x0/0x0 tests/locking/test_lock_stat.py:")


def test_rwsem_has_separate_write_and_read_rows():
    s = RwSemaphore("ls.S")
    contend(s.down_read, s.up_read, s.down_write, s.up_write, "ls-reader")
    s.down_read()
    s.down_read()
    s.up_read()
    s.up_read()
    snap = lock_stat.snapshot()
    w, r = snap["ls.S-W"], snap["ls.S-R"]
    assert (w["acquisitions"], w["contentions"]) == (1, 0)
    assert (r["acquisitions"], r["contentions"]) == (3, 1)
    assert w["class"] == r["class"] == "ls.S"
    assert r["waittime_max"] > 0 and w["holdtime_max"] > 0 and w["waittime_max"] == 0


def test_format_and_reset_and_off_by_default():
    m = Mutex("ls2.M")
    contend(lambda: waits_for_the_lock(m), lambda: None, m.lock, m.unlock, "ls2-waiter")
    text = lock_stat.format()
    lines = text.splitlines()
    assert lines[0].startswith("lock_stat version 0.4")
    assert "contentions" in lines[2] and "holdtime-avg" in lines[2]
    row = next(x for x in lines if x.strip().startswith("ls2.M:"))
    assert row.split()[1] == "1"            # contentions
    assert any("waits_for_the_lock" in x for x in lines)
    lock_stat.reset()
    assert lock_stat.snapshot() == {}
    lock_stat.disable()
    m.lock()
    m.unlock()
    assert lock_stat.snapshot() == {}       # nothing collected while off
    lock_stat.enable()


def test_trylock_counts_as_an_acquisition_and_a_failed_one_does_not():
    m = Mutex("ls3.M")
    assert m.trylock()
    t = threading.Thread(target=lambda: m.trylock())
    t.start()
    t.join(10)
    m.unlock()
    row = lock_stat.snapshot()["ls3.M"]
    assert (row["acquisitions"], row["contentions"]) == (1, 0)
