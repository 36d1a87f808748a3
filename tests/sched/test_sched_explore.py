"""Classic interleaving bugs with known answers: each is found by explore(),
replayed to the same failure, and its correctly-locked twin runs clean.

Whether the validator is on is explicit per test: ``no_lockdep`` when the
test needs the real deadlock (the validator would report the inversion
first), the plugin's ``lockdep`` fixture (on, reset) when it expects the
report.
"""
from types import SimpleNamespace

import pytest

from pymm.locking import Mutex, RwSemaphore
from pymm.locking import lockdep as _lockdep
from pymm.sched import explore, point, replay


@pytest.fixture
def no_lockdep():
    was = _lockdep.is_enabled()
    _lockdep.disable()
    yield
    if was:
        _lockdep.enable()


# -- ABBA on two Mutexes ---------------------------------------------------------------

def abba_setup():
    return SimpleNamespace(a=Mutex("sched-test.A"), b=Mutex("sched-test.B"))


def take_ab(s):
    with s.a:
        with s.b:
            pass


def take_ba(s):
    with s.b:
        with s.a:
            pass


def test_abba_is_a_real_deadlock_found_and_replayed(no_lockdep):
    r = explore(abba_setup, [take_ab, take_ba], seed=0, max_schedules=200)
    f = r.failure
    assert f is not None and f.kind == "deadlock", r
    assert "waits-for cycle:" in f.message
    assert "T0-take_ab -> mutex 'sched-test.B' -> T1-take_ba" in f.message
    assert "T1-take_ba -> mutex 'sched-test.A' -> T0-take_ab" in f.message
    assert f"replay with: pymm.sched.replay(setup, threads, schedule={f.schedule!r})" in f.message
    assert f.message.rstrip().endswith(f.token)
    assert f.leaked_threads == [] and f.leaked_locks == []

    for again in (f.schedule, f.token):
        g = replay(abba_setup, [take_ab, take_ba], again)
        assert g.kind == "deadlock"
        assert g.trace == f.trace and g.schedule == f.schedule
        assert g.leaked_threads == [] and g.leaked_locks == []

    # the seed and the schedule's number reproduce it too
    r1 = explore(abba_setup, [take_ab, take_ba], seed=f.seed, first_schedule=f.schedule_index,
                 max_schedules=1)
    assert r1.failure.kind == "deadlock" and r1.failure.schedule == f.schedule


def test_abba_is_reported_by_lockdep_first(lockdep):
    r = explore(abba_setup, [take_ab, take_ba], seed=0, max_schedules=200)
    f = r.failure
    assert f is not None and f.kind == "lockdep", r
    assert f.report.kind == "circular"
    assert "WARNING: possible circular locking dependency detected" in f.message
    assert f.leaked_threads == [] and f.leaked_locks == []
    # The validator remembers what it reported: a replay reports the same
    # problem (possibly earlier), and two replays are identical.
    g1 = replay(abba_setup, [take_ab, take_ba], f.schedule)
    g2 = replay(abba_setup, [take_ab, take_ba], f.schedule)
    assert g1.kind == g2.kind == "lockdep"
    assert g1.report.signature == g2.report.signature == f.report.signature
    assert g1.trace == g2.trace


def same_order(s):
    with s.a:
        point("holding A")
        with s.b:
            point("holding both")


def test_abba_fixed_runs_clean(lockdep):
    r = explore(abba_setup, [same_order, same_order, same_order], max_schedules=300)
    assert r.failure is None and r.schedules_run == 300
    assert lockdep.reports() == []


# -- a lost update ---------------------------------------------------------------------

def counter_setup():
    return SimpleNamespace(x=0, lock=Mutex("sched-test.counter"))


def racy_inc(s):
    v = s.x
    point("read x")
    s.x = v + 1


def locked_inc(s):
    with s.lock:
        v = s.x
        point("read x")
        s.x = v + 1


def both_counted(s):
    assert s.x == 2, f"lost update: x = {s.x}"


def test_lost_update_found_and_replayed():
    r = explore(counter_setup, [racy_inc, racy_inc], both_counted, seed=0, max_schedules=100)
    f = r.failure
    assert f is not None and f.kind == "assertion"
    assert "lost update: x = 1" in f.message and "Traceback" in f.message
    # both threads read before either wrote
    reads = [i for i, label in f.trace if label == "point read x"]
    assert sorted(reads) == [0, 1]
    g = replay(counter_setup, [racy_inc, racy_inc], f.schedule, both_counted)
    assert g.kind == "assertion" and g.trace == f.trace


def test_lost_update_fixed_runs_clean(lockdep):
    r = explore(counter_setup, [locked_inc, locked_inc, locked_inc],
                lambda s: assert_equal(s.x, 3), max_schedules=300)
    assert r.failure is None and r.schedules_run == 300


def assert_equal(a, b):
    assert a == b, (a, b)


# -- PCT: a depth-2 bug that needs one preemption at one exact point -------------------
# The reader looks at the object when it starts and again after its STEPS
# steps; the bug is seeing it unpublished both times, i.e. the whole reader
# running while the updater sits between "unpublished" and republishing.  A
# random walk must start the reader exactly there and then pick it STEPS
# times in a row (~2^-21); PCT needs the updater to start with the higher
# priority and its one change point on that step (~1/(2k), k ~ 2*STEPS).

STEPS = 20


def pct_setup():
    return SimpleNamespace(obj="ready", seen=[])


def updater(s):
    for _ in range(STEPS):
        point("prepare")
    s.obj = None
    point("unpublished")
    s.obj = "ready"
    for _ in range(STEPS):
        point("finish")


def reader(s):
    s.seen.append(s.obj)
    for _ in range(STEPS):
        point("think")
    s.seen.append(s.obj)


def saw_ready(s):
    assert s.seen != [None, None], f"reader saw {s.seen}"


def test_pct_finds_the_depth_2_bug_random_does_not():
    r = explore(pct_setup, [updater, reader], saw_ready, strategy="pct", pct_depth=2,
                seed=0, max_schedules=2000)
    f = r.failure
    assert f is not None and f.kind == "assertion", r
    assert "reader saw [None, None]" in f.message
    assert f.params["depth"] == 2 and f.params["k"] >= 2 * STEPS
    # the preemption is exactly at "unpublished": the reader's steps all
    # follow it and precede the updater's next step
    labels = [(i, lab) for i, lab in f.trace]
    at = labels.index((0, "point unpublished"))
    assert labels[at + 1:at + 1 + STEPS + 1] == [(1, "start")] + [(1, "point think")] * STEPS
    g = replay(pct_setup, [updater, reader], f.schedule, saw_ready)
    assert g.kind == "assertion" and g.trace == f.trace
    # pct_k pins k, so the seed and the schedule's number reproduce the schedule
    r1 = explore(pct_setup, [updater, reader], saw_ready, strategy="pct", pct_depth=2,
                 pct_k=f.params["k"], seed=f.seed, first_schedule=f.schedule_index, max_schedules=1)
    assert r1.failure is not None and r1.failure.schedule == f.schedule

    assert explore(pct_setup, [updater, reader], saw_ready, strategy="random",
                   max_schedules=r.schedules_run).failure is None
    # depth 1 never preempts, so it cannot find it either
    assert explore(pct_setup, [updater, reader], saw_ready, strategy="pct", pct_depth=1,
                   max_schedules=200).failure is None


# -- rwsem: a queued writer blocks new readers ------------------------------------------

def rw_setup():
    return SimpleNamespace(a=RwSemaphore("sched-test.rwA"), b=RwSemaphore("sched-test.rwB"))


def read_ab(s):
    with s.a.read():
        point("holding A for read")
        with s.b.read():
            pass


def read_ba(s):
    with s.b.read():
        point("holding B for read")
        with s.a.read():
            pass


def write_a(s):
    with s.a.write():
        pass


def write_b(s):
    with s.b.write():
        pass


def test_rwsem_read_read_abba_deadlocks_once_writers_queue(no_lockdep):
    threads = [read_ab, read_ba, write_a, write_b]
    r = explore(rw_setup, threads, seed=0, max_schedules=3000)
    f = r.failure
    assert f is not None and f.kind == "deadlock", r
    assert "T0-read_ab waits for rwsem 'sched-test.rwB', held by T1-read_ba (read)" in f.message
    assert "T1-read_ba waits for rwsem 'sched-test.rwA', held by T0-read_ab (read)" in f.message
    assert "waits-for cycle:" in f.message
    assert f.leaked_threads == [] and f.leaked_locks == []
    g = replay(rw_setup, threads, f.schedule)
    assert g.kind == "deadlock" and g.trace == f.trace


def test_rwsem_read_read_abba_without_writers_runs_clean(no_lockdep):
    r = explore(rw_setup, [read_ab, read_ba], max_schedules=300)
    assert r.failure is None


def test_rwsem_read_read_abba_is_a_lockdep_report(lockdep):
    r = explore(rw_setup, [read_ab, read_ba], max_schedules=300)
    assert r.failure is not None and r.failure.kind == "lockdep"
    assert r.failure.report.kind == "circular"
