"""Free-mode helpers: delay injection at lock release and point(), the
switch interval, and their combination."""
import sys
import threading

import pytest

from pymm.locking import Mutex, events
from pymm.sched import DelayInjector, SchedUsageError, explore, free_mode, point, switch_interval
from pymm.sched import _core


def test_injector_delays_at_release_and_point_only_while_installed():
    m = Mutex("sched-test.free.m")
    inj = DelayInjector(seed=1, probability=1.0, max_sleep=0.0)
    with inj:
        assert inj in events.listeners() and _core._hook == inj.delay
        for _ in range(30):
            m.lock()
            m.unlock()
        for _ in range(20):
            point("window")
    assert inj.yields + inj.sleeps == 50
    assert inj.yields > 0 and inj.sleeps > 0
    assert inj not in events.listeners() and _core._hook is None
    for _ in range(10):
        point()
        m.lock()
        m.unlock()
    assert inj.yields + inj.sleeps == 50


def test_injector_probability_zero_never_delays():
    with DelayInjector(seed=0, probability=0.0) as inj:
        for _ in range(100):
            point()
    assert inj.yields == inj.sleeps == 0


def test_injector_is_seeded():
    def pattern(seed):
        inj = DelayInjector(seed=seed, probability=0.3, max_sleep=0.0)
        out = []
        for _ in range(200):
            before = inj.yields + inj.sleeps
            inj.delay()
            out.append(inj.yields + inj.sleeps - before)
        return out
    assert pattern(5) == pattern(5)
    assert pattern(5) != pattern(6)
    assert 30 < sum(pattern(5)) < 90        # ~ 0.3 * 200


def test_switch_interval_is_set_and_restored():
    prev = sys.getswitchinterval()
    with switch_interval(1e-5) as old:
        assert old == prev
        assert sys.getswitchinterval() == pytest.approx(1e-5)
    assert sys.getswitchinterval() == prev
    with pytest.raises(KeyError):
        with switch_interval(2e-6):
            raise KeyError("x")
    assert sys.getswitchinterval() == prev


def test_free_mode_combines_both_and_finds_nothing_in_correct_code():
    prev = sys.getswitchinterval()
    counter = {"n": 0}
    lock = Mutex("sched-test.free.counter")

    def work():
        for _ in range(200):
            with lock:
                v = counter["n"]
                point("read")
                counter["n"] = v + 1

    with free_mode(seed=3, probability=0.2, max_sleep=1e-5) as inj:
        assert sys.getswitchinterval() == pytest.approx(1e-6)
        ts = [threading.Thread(target=work) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in ts)
    assert counter["n"] == 800
    assert inj.yields + inj.sleeps > 0
    assert sys.getswitchinterval() == prev and _core._hook is None


@pytest.mark.parametrize("make, words", [
    (lambda: DelayInjector(probability=1.5), "probability must be a number in [0, 1]"),
    (lambda: DelayInjector(probability=-0.1), "probability must be a number in [0, 1]"),
    (lambda: DelayInjector(max_sleep=-1), "max_sleep must be a number of seconds"),
    (lambda: DelayInjector(seed="x"), "seed must be an int"),
    (lambda: switch_interval(0).__enter__(), "switch interval must be a positive number"),
    (lambda: free_mode(probability=2).__enter__(), "probability must be a number in [0, 1]"),
])
def test_free_mode_rejects_bad_input(make, words):
    with pytest.raises(ValueError) as ei:
        make()
    assert words in str(ei.value) and isinstance(ei.value, SchedUsageError)


def test_injector_install_twice_is_refused():
    with DelayInjector() as inj:
        with pytest.raises(SchedUsageError, match="already installed"):
            inj.install()


def test_free_mode_cannot_start_inside_a_controlled_run():
    def tries(s):
        with free_mode():
            pass
    f = explore(lambda: None, [tries], max_schedules=1).failure
    assert f.kind == "exception" and "cannot start during a controlled run" in f.message
    assert _core._hook is None
