"""Schedules to find hugetlb-mbind-punch ``relock-under-folio`` with mbind
holding mmap_lock across migration (``hold-mmap-lock``, before
72e315f7a750) or not (``mpol-alloc``): median over seeds, with lockdep on
(its circular report) and off (a real hang).  Run:
``python -m pymm.benchmarks.mbind_punch [SEEDS]`` (the README's figure)."""
import statistics
import sys

from ..locking import lockdep
from ..scenarios.hugetlb_mbind_punch import HugetlbMbindPunchScenario
from ..sched import explore

BUDGET = 2000


def _program(mbind, seed):
    scn = type("MbindPunch", (HugetlbMbindPunchScenario,), {"MBIND": mbind})()

    def setup():
        return scn.setup("relock-under-folio", seed)

    def thread(fn):
        def body(st):
            try:
                fn(scn, st, None)
            except OSError:
                pass
        body.__name__ = fn.__name__
        return body

    def check(st):
        scn.teardown(st)
        st.kernel.check()
        bad = st.kernel.findings()
        assert not bad, bad[0].text
    return setup, [thread(fn) for _, fn in scn.roles], check


def measure(validator_on, seeds=10):
    """{mbind value: (schedules per seed (None: not found), median)}."""
    was = lockdep.is_enabled()
    (lockdep.enable if validator_on else lockdep.disable)()
    out = {}
    try:
        for mbind in ("mpol-alloc", "hold-mmap-lock"):
            counts = []
            for seed in range(seeds):
                lockdep.reset()
                setup, threads, check = _program(mbind, seed)
                res = explore(setup, threads, check, strategy="random", seed=seed, max_schedules=BUDGET)
                counts.append(res.schedules_run if res.failure is not None else None)
            found = [c for c in counts if c is not None]
            out[mbind] = (counts, statistics.median(found) if found else None)
    finally:
        (lockdep.enable if was else lockdep.disable)()
        lockdep.reset()
    return out


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    for on in (True, False):
        for mbind, (counts, med) in measure(on, n).items():
            print(f"lockdep {'on ' if on else 'off'} {mbind:15} median {med} {counts}")
