"""hugetlb-fault-truncate (key hugetlb-fault-truncate): a fault on a shared
hugetlb mapping that found its index reserved races ftruncate of the file.
Mainline (``unsynced``, 188a39725ad7 + fa27759af4a6) lets the truncation
give the index's reservation back while the fault, which checked i_size
before the truncation wrote it, goes on to consume it and re-adds the
entry: HugePages_Rsvd counted down twice, -1 at quiescence.  pymm's proposed
fix (``wait-for-faults``): after i_size_write, hugetlb_vmtruncate takes and
releases the fault mutex of every index it truncates.  Found by the fuzz
scenario as "HugePages_Rsvd 0 -> -1"."""
import pytest

from pymm import Kernel, stress
from pymm import constants as C
from pymm.errors import BusError
from pymm.fs import hugetlbfs
from pymm.sched import explore

from .test_pymm_only_checks import first_finding, restore_default  # noqa: F401 (autouse fixture)

HS = C.HPAGE_SIZE
RW = C.PROT_READ | C.PROT_WRITE


def test_mainline_counts_the_reservation_down_twice():
    f = first_finding("hugetlb-fault-truncate", "unsynced", replays=True)
    assert f["kind"] == "bad-page-state"
    assert "HugePages_Rsvd -1 but 0 reservations outstanding" in f["text"]
    # the fuzzer's quiescence check says it in its words too
    assert "HugePages_Rsvd 0 -> -1" in f["text"]


@pytest.mark.parametrize("strategy", ["random", "pct"])
def test_wait_for_faults_is_clean(strategy):
    r = stress.run_controlled("hugetlb-fault-truncate", "wait-for-faults", seed=0,
                              schedules=150, strategy=strategy)
    assert not r.findings, r.findings[0]["text"]
    assert r.schedules == 150


def test_free_mode_catches_mainline_and_not_the_fix():
    r = stress.run_free("hugetlb-fault-truncate", "unsynced", seed=0, seconds=10)   # stops when caught
    assert r.caught, "unsynced ran clean for 10 s in free mode"
    r = stress.run_free("hugetlb-fault-truncate", "wait-for-faults", seed=0, seconds=1)
    assert not r.findings, r.findings[0]["text"]


def test_replay_token_is_identical():
    a = stress.run_controlled("hugetlb-fault-truncate", "unsynced", seed=3)
    b = stress.run_controlled("hugetlb-fault-truncate", "unsynced", seed=3)
    assert a.findings and [f["replay"] for f in a.findings] == [f["replay"] for f in b.findings]


# -- the fuzzer's reproducer (README: "explore(..., strategy="pct", seed=0), schedule 5") ------

def _reproducer(variant):
    """A file of 2 huge pages mapped MAP_SHARED (both reserved); one thread
    stores to page 1, another truncates the file to one huge page; then the
    process exits and the file is truncated to 0: HugePages_Rsvd must be 0."""
    def setup():
        k = Kernel(nodes=1, pages_per_node=64, hugepages_per_node=2,
                   variants={"hugetlb-fault-truncate": variant})
        f = k.create_file("h", 2 * HS, hugetlb=True)
        p = k.spawn("p")
        a = p.mmap(0, 2 * HS, RW, C.MAP_SHARED, fd=f)
        return k, f, p, a

    def fault(s):
        k, f, p, a = s
        try:
            p.store(a + HS, b"x")
        except BusError:
            pass

    def truncate(s):
        s[1].ftruncate(HS)

    def check(s):
        k, f, p, a = s
        p.exit()
        f.ftruncate(0)
        assert k.meminfo()["HugePages_Rsvd"] == 0, k.meminfo()["HugePages_Rsvd"]
        assert [x.title for x in k.check()] == []

    return explore(setup, [fault, truncate], check, strategy="pct", seed=0, max_schedules=40)


def test_the_fuzzers_reproducer_is_caught_on_mainline():
    res = _reproducer("unsynced")
    assert res.failure is not None
    assert res.failure.schedule_index == 5, res.failure.message
    assert "HugePages_Rsvd" in res.failure.message or \
        "reservation accounting" in res.failure.message, res.failure.message


def test_the_fuzzers_reproducer_is_clean_with_the_fix():
    res = _reproducer("wait-for-faults")
    assert res.failure is None, res.failure.message


def test_the_fix_waits_only_on_the_truncated_range():
    """Growing or keeping the size waits for nothing; a shrink waits on the
    mutexes of [new, old) -- each table slot once however long the range."""
    from pymm.mm import hugetlb as H
    k = Kernel(nodes=1, pages_per_node=64, hugepages_per_node=2)
    f = k.create_file("h", 2 * HS, hugetlb=True)
    taken = []

    class Spy:
        def __init__(self, slot):
            self.slot = slot

        def lock(self):
            taken.append(self.slot)

        def unlock(self):
            taken.append(-1)

    n = len(k.hstate.hugetlb_fault_mutex_table)
    k.hstate.hugetlb_fault_mutex_table = [Spy(i) for i in range(n)]
    hugetlbfs.hugetlb_wait_for_faults(f, 2 * HS, 2 * HS)        # same size
    hugetlbfs.hugetlb_wait_for_faults(f, HS, 2 * HS)            # grows
    assert taken == []
    hugetlbfs.hugetlb_wait_for_faults(f, 2 * HS, HS)
    assert taken == [H.hugetlb_fault_mutex_hash(f, 1), -1]
    taken.clear()
    hugetlbfs.hugetlb_wait_for_faults(f, 1000 * HS, 0)
    assert taken == [x for i in range(n) for x in (i, -1)]
