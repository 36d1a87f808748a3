"""Free mode tells a hung worker from a slow one (issue 16): a worker
blocked longer than HUNG_THRESHOLD on a lock whose holder is merely slow
does not end the run; one that stays blocked once the others have stopped
is reported by the hung-task check."""
import threading
from types import SimpleNamespace

import pymm
from pymm import stress, variants
from pymm.locking import Mutex, hung_task

KEY = variants.register("test-holder-waiter", ["any"], "any",
                        doc="tests/sched/test_stress_hung.py: a holder and a waiter")


class _HolderWaiter(pymm.Scenario):
    """``holder`` takes the mutex once and keeps it until ``release(st)``
    says so; ``waiter`` takes and drops it."""
    name = "holder-waiter"
    variant_key = KEY
    caught_kinds = frozenset({"hung-task"})
    controlled_steps = 1

    def setup(self, variant, seed):
        return SimpleNamespace(kernel=pymm.Kernel(), m=Mutex("holder_waiter_mutex"), held=False)

    def release(self, st):
        raise NotImplementedError

    def holder(self, st, rng):
        if st.held:
            return
        st.held = True
        st.m.lock()
        try:
            self.release(st)
        finally:
            st.m.unlock()

    def waiter(self, st, rng):
        st.m.lock()
        st.m.unlock()

    roles = (("holder", holder), ("waiter", waiter))


class SlowHolder(_HolderWaiter):
    def release(self, st):
        # a holder that does not get the CPU for a while: it lets go once the
        # waiter has waited longer than the hung threshold (a real condition,
        # polled, not a sleep standing in for it)
        while not any(lock is st.m and waited > stress.HUNG_THRESHOLD + 0.3
                      for lock, _, waited in hung_task.waiting().values()):
            threading.Event().wait(0.01)


class HungHolder(_HolderWaiter):
    gate = threading.Event()

    def release(self, st):
        self.gate.wait()          # never set while the run lasts: the holder hangs


def test_a_slow_holder_does_not_end_the_run_and_is_not_reported():
    r = stress.run_free(SlowHolder, "any", seed=1, seconds=2.5, round_seconds=5,
                        hung_timeout=4.0)
    assert r.findings == [], [f["title"] for f in r.findings]
    assert r.slow_waits >= 1
    assert r.seconds >= 2.5          # the round ran to its deadline


def test_a_hung_holder_is_reported():
    try:
        r = stress.run_free(HungHolder, "any", seed=1, seconds=1.0, round_seconds=5,
                            hung_timeout=1.5)
        titles = [f["title"] for f in r.findings]
        assert any(f["kind"] == "hung-task" and "blocked for more than 1 seconds" in f["title"]
                   for f in r.findings), titles
        assert r.slow_waits == 0
    finally:
        HungHolder.gate.set()        # let the left-behind threads end
