"""Schedule minimisation (pymm.sched.shrink): a lost update found by a random
walk is shrunk to the one preemption it needs, and the shrunk schedule
replays the same failure exactly."""
from types import SimpleNamespace

from pymm.locking import Mutex
from pymm.sched import explore, point, replay
from pymm.sched.shrink import measure, shrink


def setup():
    return SimpleNamespace(n=0, lock=Mutex("shrink-test.lock"))


def worker(s):
    for _ in range(3):
        with s.lock:          # busy work that gives the walk many choice points
            pass
    v = s.n
    point("read")
    s.n = v + 1               # a lost update when another increment ran in between
    for _ in range(3):
        with s.lock:
            pass


def check(s):
    assert s.n == 3, f"lost update: n == {s.n}"


THREADS = [worker, worker, worker]


def found():
    r = explore(setup, THREADS, check, seed=0, max_schedules=500)
    assert r.failure is not None and r.failure.kind == "assertion"
    return r.failure


def test_shrink_keeps_the_failure_with_fewer_preemptions():
    f = found()
    same = lambda g: g.kind == "assertion" and "lost update" in g.detail
    before = measure(setup, THREADS, f.schedule, check)
    s = shrink(setup, THREADS, f.schedule, check, same=same)
    assert s is not None
    assert s.preemptions_from == before > s.preemptions
    assert s.preemptions == 1            # a lost update needs exactly one preemption
    assert s.switches <= s.switches_from
    g = replay(setup, THREADS, s.schedule, check)      # the shrunk schedule replays exactly
    assert g is not None and same(g)


def test_shrink_returns_none_when_the_schedule_does_not_fail_that_way():
    f = found()
    assert shrink(setup, THREADS, f.schedule, check, same=lambda g: g.kind == "deadlock") is None


def test_shrink_respects_its_run_budget():
    f = found()
    s = shrink(setup, THREADS, f.schedule, check, same=lambda g: g.kind == "assertion", max_runs=2)
    assert s is not None and s.runs <= 2
