"""The scheduler's mechanics: replay determinism, abort and cleanup, thread
exceptions and detector findings, the watchdog, dfs enumeration, tokens, and
bad input."""
import itertools
import random
import threading
from types import SimpleNamespace

import pytest

from pymm.locking import Mutex, RwSemaphore, events
from pymm.locking import lockdep as _lockdep
from pymm.sched import (Finding, SchedUsageError, decode_schedule, encode_schedule, explore,
                        is_controlled, point, replay, report_finding, run_schedule)
from pymm.sched import _core


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """Every test: no managed thread survives, no hook or listener stays."""
    yield
    assert _core._active is None and _core._hook is None
    assert _core._LISTENER not in events.listeners() and _core._session_owner is None
    alive = [t.name for t in threading.enumerate() if t.name.startswith("T") and "-" in t.name]
    assert alive == []


# -- replay determinism --------------------------------------------------------------------

def mixed_setup():
    return SimpleNamespace(m=Mutex("sched-test.mixed.m"), rw=RwSemaphore("sched-test.mixed.rw"),
                           log=[])


def mixed_writer(s):
    for i in range(3):
        with s.rw.write():
            s.log.append(("w", i))
            point("written")
        with s.m:
            s.log.append(("m", i))


def mixed_reader(s):
    for i in range(3):
        s.rw.down_read()
        s.log.append(("r", i))
        point("read")
        s.rw.up_read()
        if s.m.trylock():
            s.m.unlock()


def mixed_downgrader(s):
    s.rw.down_write()
    point("exclusive")
    s.rw.downgrade_write()
    s.log.append(("d", 0))
    s.rw.up_read()


MIXED = [mixed_writer, mixed_reader, mixed_downgrader]


def test_replay_twice_gives_identical_traces():
    for seed in range(5):
        r = explore(mixed_setup, MIXED, seed=seed, max_schedules=1)
        assert r.failure is None
        a = run_schedule(mixed_setup, MIXED, r.schedule)
        b = run_schedule(mixed_setup, MIXED, encode_schedule(r.schedule))
        assert a.failure is None and b.failure is None
        assert a.trace == b.trace == r.trace
        assert a.schedule == b.schedule == r.schedule
    labels = {lab.split()[0] for _, lab in r.trace}
    assert {"start", "exit", "lock", "unlock", "rlock", "runlock", "trylock",
            "downgrade", "point"} <= labels


def test_different_seeds_give_different_interleavings():
    traces = {tuple(explore(mixed_setup, MIXED, seed=s, max_schedules=1).trace)
              for s in range(20)}
    assert len(traces) > 10


# -- abort: nothing held, nothing alive -------------------------------------------------------

def abort_setup():
    s = SimpleNamespace(m1=Mutex("sched-test.abort.m1"), m2=Mutex("sched-test.abort.m2"),
                        rw=RwSemaphore("sched-test.abort.rw"), after_abort=[])
    STATES.append(s)
    return s


STATES = []


def boom(s):
    point("before boom")
    raise RuntimeError("boom")


def kernel_style(s):
    # no try/finally, as kernel code is written: an abort unwinds past the unlock
    s.m2.lock()
    point("holding m2")
    s.after_abort.append("ran on")
    s.m2.unlock()


def nested_with(s):
    with s.m1:
        with s.rw.read():
            point("holding m1 and rw")
            s.after_abort.append("ran on")


def test_abort_releases_everything_and_joins_every_thread():
    STATES.clear()
    threads = [boom, kernel_style, nested_with]
    # T2 starts, takes m1 and rw; at its point T1 starts and takes m2; at
    # T1's point T0 starts and raises while both hold their locks
    sched = [2, 2, 2, 1, 1, 0, 0]
    f = replay(abort_setup, threads, sched)
    assert f.kind == "exception" and f.thread == 0
    assert f.leaked_threads == [] and f.leaked_locks == []
    assert f.released_on_abort == ["T1-kernel_style: sched-test.abort.m2 (mutex)"]
    s = STATES[-1]
    assert not s.m1.is_locked() and not s.m2.is_locked() and not s.rw.is_locked()
    assert s.after_abort == []      # aborted threads did not run on
    # the locks are usable afterwards
    s.m2.lock()
    s.m2.unlock()
    with s.rw.write():
        pass


def test_abort_on_deadlock_unwinds_blocked_threads():
    _lockdep.disable()
    try:
        STATES.clear()

        def ab(s):
            with s.m1:
                point()
                with s.m2:
                    pass

        def ba(s):
            with s.m2:
                point()
                with s.m1:
                    pass
        r = explore(abort_setup, [ab, ba], max_schedules=50)
    finally:
        _lockdep.enable()
    f = r.failure
    assert f.kind == "deadlock"
    assert f.leaked_threads == [] and f.leaked_locks == []
    s = STATES[-1]
    assert not s.m1.is_locked() and not s.m2.is_locked()


# -- exceptions and findings -----------------------------------------------------------------

def plain_setup():
    return SimpleNamespace(lock=Mutex("sched-test.plain"), log=[])


def quiet(s):
    with s.lock:
        point()


def fails_deep(s):
    with s.lock:
        _helper_that_raises(s)


def _helper_that_raises(s):
    raise KeyError("no such vma")


def test_thread_exception_is_reported_with_its_traceback():
    r = explore(plain_setup, [quiet, fails_deep], max_schedules=5)
    f = r.failure
    assert f.kind == "exception" and f.thread == 1
    assert isinstance(f.exception, KeyError)
    assert "T1-fails_deep raised KeyError: 'no such vma'" in f.message
    assert "Traceback (most recent call last)" in f.message
    assert "_helper_that_raises" in f.message and "fails_deep" in f.message
    assert f.leaked_locks == []


def uaf_detector(s):
    with s.lock:
        s.log.append("before")
        report_finding("use-after-free", "BUG: KASAN: slab-use-after-free in vma_lookup",
                       "Read of size 8 by task T1")
        s.log.append("after")       # never reached: the finding ends the schedule


def test_report_finding_ends_the_run_with_its_kind():
    r = explore(plain_setup, [quiet, uaf_detector], max_schedules=5)
    f = r.failure
    assert f.kind == "use-after-free" and f.thread == 1
    assert f.message.startswith("BUG: KASAN: slab-use-after-free in vma_lookup\n"
                                "Read of size 8 by task T1")
    assert f.leaked_locks == []


def test_report_finding_outside_a_run_does_nothing():
    assert report_finding("rcu", "WARNING: suspicious RCU usage", "") is False
    assert not is_controlled()
    assert point("anything") is None


def raises_finding(s):
    raise Finding("bad-page-state", "BUG: Bad page state in process T0", "page dumped")


def test_finding_exception_sets_the_kind():
    f = explore(plain_setup, [raises_finding], max_schedules=1).failure
    assert f.kind == "bad-page-state" and "BUG: Bad page state" in f.message


def test_check_findings_and_errors():
    def check_finding(s):
        report_finding("data-corruption", "BUG: data corruption", "page 3")

    def check_error(s):
        raise ZeroDivisionError("oops")
    f = explore(plain_setup, [quiet], check_finding, max_schedules=1).failure
    assert f.kind == "data-corruption" and f.thread is None
    f = explore(plain_setup, [quiet], check_error, max_schedules=1).failure
    assert f.kind == "exception" and "check(state) raised ZeroDivisionError: oops" in f.message


def test_is_controlled_inside_managed_threads():
    seen = []
    explore(plain_setup, [lambda s: seen.append(is_controlled())],
            lambda s: seen.append(is_controlled()), max_schedules=1)
    assert seen == [True, False]


def test_nested_explore_is_refused():
    def nested(s):
        explore(plain_setup, [quiet], max_schedules=1)
    f = explore(plain_setup, [nested], max_schedules=1).failure
    assert f.kind == "exception" and "already in progress" in f.message


def test_exiting_with_a_lock_held_is_a_failure():
    def leaves_it_locked(s):
        s.lock.lock()
    was = _lockdep.is_enabled()
    _lockdep.disable()
    try:
        f = explore(plain_setup, [leaves_it_locked], max_schedules=1).failure
    finally:
        if was:
            _lockdep.enable()
    assert f.kind == "lock-held"
    assert "T0-leaves_it_locked exited holding mutex 'sched-test.plain' (held)" in f.message
    assert f.released_on_abort == ["T0-leaves_it_locked: sched-test.plain (mutex)"]
    assert f.leaked_locks == []


def test_exiting_with_a_lock_held_is_a_lockdep_report(lockdep):
    def leaves_it_locked(s):
        s.lock.lock()
    f = explore(plain_setup, [leaves_it_locked], max_schedules=1).failure
    assert f.kind == "lockdep" and f.report.kind == "thread-exit"
    assert f.leaked_locks == []


# -- the watchdog: blocking the scheduler cannot see -------------------------------------------

OUTSIDE = Mutex("sched-test.outside")     # built outside any run: a plain threading.Lock inside


def holds_outside(s):
    with OUTSIDE:
        point("holding the outside lock")


def wants_outside(s):
    with OUTSIDE:
        pass


def test_watchdog_reports_a_hang_and_unwinds():
    # T0 takes OUTSIDE and yields to T1, which blocks on it inside C
    f = replay(plain_setup, [holds_outside, wants_outside], [0, 0, 1, 1], watchdog=0.3)
    assert f.kind == "hung" and f.thread == 1
    assert "T1-wants_outside made no scheduling point for 0.3 s" in f.message
    assert "it waits for <Mutex 'sched-test.outside'" in f.message
    assert "wants_outside" in f.message      # its stack
    assert f.leaked_threads == [] and f.leaked_locks == []
    assert not OUTSIDE.is_locked()


# -- spin loops: pct falls back to random choices, dfs reports a livelock ---------------------

def holder(s):
    with s.lock:
        point("holding")


def spinner(s):
    while not s.lock.trylock():
        s.log.append("spin")
        point("spin")
    s.lock.unlock()


def test_spin_loops_end_under_random_and_pct():
    for strategy in ("random", "pct"):
        spins = []
        r = explore(plain_setup, [holder, spinner], lambda s: spins.append(len(s.log)),
                    strategy=strategy, max_schedules=100, max_steps=50_000)
        assert r.failure is None, r.failure and r.failure.message
        assert max(spins) > 0       # the spinner did wait on a preempted holder


def test_a_spin_that_never_ends_is_a_livelock():
    r = explore(plain_setup, [holder, spinner], strategy="dfs", max_schedules=100, max_steps=500)
    f = r.failure
    assert f is not None and f.kind == "livelock"
    assert "no end after 500 scheduling points" in f.message
    assert f.leaked_threads == [] and f.leaked_locks == []
    assert set(f.trace[-10:]) == {(1, "trylock sched-test.plain"), (1, "point spin")}


# -- dfs: systematic enumeration ------------------------------------------------------------------

def dfs_setup():
    return SimpleNamespace(log=[])


def stepper(name):
    def step(s):
        s.log.append(name)
        point()
        s.log.append(name)
        point()
        s.log.append(name)
    step.__name__ = f"step_{name}"
    return step


@pytest.mark.parametrize("bound, expected", [(0, 2), (1, 6), (10, 20)])
def test_dfs_enumerates_each_interleaving_once(bound, expected):
    # two threads of three segments each: C(6, 3) = 20 interleavings; with at
    # most one preemption 6 (run k segments, switch, finish the other, finish);
    # with none 2
    seen = []
    r = explore(dfs_setup, [stepper("a"), stepper("b")], lambda s: seen.append(tuple(s.log)),
                strategy="dfs", preemption_bound=bound, max_schedules=100)
    assert r.failure is None and r.exhausted
    assert r.schedules_run == len(seen) == len(set(seen)) == expected
    if bound == 10:
        assert set(seen) == {tuple("a" if i in pos else "b" for i in range(6))
                             for pos in itertools.combinations(range(6), 3)}


def test_dfs_finds_the_lost_update():
    def setup():
        return SimpleNamespace(x=0)

    def inc(s):
        v = s.x
        point("read")
        s.x = v + 1
    r = explore(setup, [inc, inc], lambda s: _eq(s.x, 2), strategy="dfs", max_schedules=100)
    assert r.failure is not None and r.failure.kind == "assertion"
    assert r.failure.seed is None and r.failure.params == {"bound": 2}


def _eq(a, b):
    assert a == b, (a, b)


# -- tokens ------------------------------------------------------------------------------------------

def test_schedule_tokens_round_trip():
    rnd = random.Random(7)
    for n in (0, 1, 5, 64, 1000):
        for width in (2, 3, 255):
            sched = [rnd.randrange(width) for _ in range(n)]
            tok = encode_schedule(sched, "random", seed=3)
            assert tok.startswith("sched:v1:random:seed=3:")
            assert decode_schedule(tok) == sched
    long = [0, 1] * 500
    assert len(encode_schedule(long)) < 100     # compressed


def test_long_schedules_are_shown_as_a_token():
    def setup():
        return SimpleNamespace(x=0)

    def busy(s):
        for _ in range(60):
            point()
        s.x += 1

    def check(s):
        assert False, "always"
    f = explore(setup, [busy, busy], check, max_schedules=1).failure
    assert len(f.schedule) > 64
    assert f"schedule={f.token!r})" in f.message
    assert replay(setup, [busy, busy], f.token, check).trace == f.trace


# -- bad input ------------------------------------------------------------------------------------------

def _noop(s):
    pass


@pytest.mark.parametrize("kwargs, words", [
    (dict(threads=[]), "threads is empty"),
    (dict(threads=[_noop, 3]), "threads[1] is not callable"),
    (dict(threads="ab"), "threads must be a list"),
    (dict(setup=None), "setup must be a callable"),
    (dict(check=5), "check must be None or a callable"),
    (dict(strategy="bfs"), "unknown strategy 'bfs'"),
    (dict(max_schedules=0), "max_schedules must be >= 1"),
    (dict(max_schedules=-3), "max_schedules must be >= 1"),
    (dict(max_schedules=True), "max_schedules must be an int"),
    (dict(pct_depth=0), "pct_depth must be >= 1"),
    (dict(pct_k=0), "pct_k must be >= 1"),
    (dict(preemption_bound=-1), "preemption_bound must be >= 0"),
    (dict(seed=1.5), "seed must be an int"),
    (dict(watchdog=0), "watchdog must be a positive number"),
    (dict(max_steps=0), "max_steps must be >= 1"),
])
def test_explore_rejects_bad_input(kwargs, words):
    args = dict(setup=plain_setup, threads=[_noop], check=None)
    args.update(kwargs)
    with pytest.raises(ValueError) as ei:
        explore(args.pop("setup"), args.pop("threads"), args.pop("check"), **args)
    assert words in str(ei.value)
    assert isinstance(ei.value, SchedUsageError)


def one_point(s):
    point()


def hold_across_point(s):
    with s.lock:
        point()


def want_lock(s):
    with s.lock:
        pass


@pytest.mark.parametrize("threads, schedule, words", [
    ([one_point, one_point], [0, 5], "schedule[1] = 5 is not a thread index in 0..1"),
    ([one_point, one_point], [0, "1"], "schedule[1] = '1' is not a thread index"),
    ([one_point, one_point], 42, "schedule must be a list of thread indices or a token"),
    ([one_point, one_point], "sched:v2:xyz", "not a pymm.sched schedule token"),
    ([one_point, one_point], "sched:v1:random:r!!", "corrupt schedule token"),
    ([one_point, one_point], [], "it has 0 choices but the program reached choice point 0"),
    ([one_point, one_point], [0, 1], "it has 2 choices but the program reached choice point 2"),
    ([one_point, one_point], [0, 0, 1], "finished after 2 of the schedule's 3 choices"),
    # T1 blocks on the lock T0 holds; then choice 4 names it
    ([hold_across_point, want_lock, one_point], [0, 0, 1, 1, 1],
     "choice 4 picks thread 1, which cannot run there (runnable: [0, 2])"),
])
def test_replay_rejects_schedules_that_do_not_fit(threads, schedule, words):
    with pytest.raises(ValueError) as ei:
        replay(plain_setup, threads, schedule)
    assert words in str(ei.value)


def test_replay_accepts_a_schedule_that_fits():
    assert replay(plain_setup, [one_point, one_point], [0, 0]) is None
    # T0 takes the lock; T1 blocks on it; T0 releases and exits; T1 gets it; T2 last
    sched = [0, 0, 1, 1, 0, 0, 1, 1]
    out = run_schedule(plain_setup, [hold_across_point, want_lock, one_point], sched)
    assert out.failure is None and out.schedule == sched
    assert out.trace == [
        (0, "start"), (0, "lock sched-test.plain"), (0, "point"),
        (1, "start"), (1, "lock sched-test.plain"), (1, "wait sched-test.plain"),
        (0, "unlock sched-test.plain"), (0, "exit"),
        (1, "unlock sched-test.plain"), (1, "exit"),
        (2, "start"), (2, "point"), (2, "exit")]


# -- the controlled backend and its raw lock ------------------------------------------------------

def test_setup_and_check_run_inside_the_controlled_backend():
    seen = []

    def setup():
        seen.append(events.backend().name)
        return SimpleNamespace(sem=RwSemaphore("sched-test.backend"))

    def check(s):
        seen.append(events.backend().name)
        with s.sem.write():         # the controller uses the run's locks as plain locks
            pass
    explore(setup, [lambda s: s.sem.down_read() or s.sem.up_read()], check, max_schedules=1)
    assert seen == ["controlled", "controlled"]
    assert events.backend().name != "controlled"


def test_controlled_lock_is_a_plain_lock_outside_a_run():
    lk = _core.ControlledLock()
    assert lk.acquire() is True and lk.locked()
    assert lk.acquire(False) is False
    assert lk.acquire(True, 0) is False
    assert lk.acquire(True, 0.01) is False
    got = []
    t = threading.Thread(target=lambda: got.append(lk.acquire(True, 5)))
    t.start()
    lk.release()        # another thread waits in C: a plain lock wakes it
    t.join(5)
    assert got == [True] and lk.locked()
    # released by a thread that did not take it (readerwriterlock relies on that)
    t = threading.Thread(target=lk.release)
    t.start()
    t.join(5)
    assert not lk.locked()


def test_public_names_are_exported_once():
    import pymm.sched as sched
    assert len(sched.__all__) == len(set(sched.__all__))
    for name in sched.__all__:
        assert getattr(sched, name) is not None
    assert {"explore", "replay", "point", "Finding", "report_finding", "DelayInjector",
            "switch_interval", "free_mode"} <= set(sched.__all__)
