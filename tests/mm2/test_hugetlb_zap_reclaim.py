"""The open 2025 report (syzbot 3f5f9a0d292454409ca6), scenario
hugetlb-zap-reclaim: mainline (alloc-under-locks) shows the report's chain,
the reorder posted upstream (imap-before-vma-lock) shows the new AB-BA,
pymm's proposed fix (alloc-before-locks) is clean."""
import pytest

from pymm import MADV_DONTNEED, stress
from pymm.constants import HPAGE_SIZE
from pymm.locking import lockdep
from pymm.scenarios import get
from pymm.sched import explore

from .test_hugetlb_variants import kind_of, program

ORDER = ("reclaim", "send", "zap")     # the zap's allocation closes the report's cycle


@pytest.fixture(autouse=True)
def fresh_lockdep():
    lockdep.reset()
    yield
    lockdep.reset()
    lockdep.configure(raise_on_report=False)


def run_in_order(variant):
    """Every role once, in ORDER, in this thread; the cycles lockdep saw."""
    lockdep.configure(raise_on_report=False)
    scn = get("hugetlb-zap-reclaim")()
    st = scn.setup(variant, 0)
    roles = dict(scn.roles)
    for name in ORDER:
        roles[name](scn, st, None)
    scn.teardown(st)
    return [r for r in lockdep.reports() if r.kind == "circular"]


def test_mainline_reports_the_syzbot_chain():
    cycles = run_in_order("alloc-under-locks")
    chains = [set(r.data["classes"]) for r in cycles]
    want = {"fs_reclaim", "hugetlb_fault_mutex", "&vma_lock->rw_sema", "&hugetlbfs_i_mmap_rwsem_key"}
    assert any(want <= c for c in chains), chains
    rep = next(r for r in cycles if want <= set(r.data["classes"]))
    assert "__hugetlb_zap_begin" in rep.text and "region_chg" in rep.text
    assert "tcp_sendmsg" in rep.text and "nbd_queue_rq" in rep.text


def test_the_posted_reorder_trades_it_for_an_ab_ba_with_change_protection():
    cycles = run_in_order("imap-before-vma-lock")
    abba = [r for r in cycles
            if set(r.data["classes"]) == {"&vma_lock->rw_sema", "&hugetlbfs_i_mmap_rwsem_key"}]
    assert abba, [r.data["classes"] for r in cycles]
    assert "hugetlb_change_protection" in abba[0].text and "__hugetlb_zap_begin" in abba[0].text


def test_allocating_before_the_locks_is_clean():
    assert run_in_order("alloc-before-locks") == []


@pytest.mark.parametrize("variant", ["alloc-under-locks", "imap-before-vma-lock"])
def test_buggy_values_are_caught_under_the_scheduler(variant):
    setup, threads, check = program("hugetlb-zap-reclaim", variant)
    f = explore(setup, threads, check, strategy="random", seed=0, max_schedules=20).failure
    assert f is not None and kind_of(f) == "lockdep", f and f.message
    assert "fs_reclaim" in f.message or "&hugetlbfs_i_mmap_rwsem_key" in f.message


def test_fix_is_clean_under_the_scheduler():
    setup, threads, check = program("hugetlb-zap-reclaim", "alloc-before-locks")
    res = explore(setup, threads, check, strategy="random", seed=0, max_schedules=80)
    assert res.failure is None, res.failure.message


def test_fix_keeps_the_reservation_restored():
    """df7a6d1f6405's point survives the fix: after DONTNEED the owner's
    reservation is back, so the page is there for it again."""
    scn = get("hugetlb-zap-reclaim")()
    st = scn.setup("alloc-before-locks", 0)
    h = st.kernel.hstate
    before = h.resv_huge_pages
    st.o.madvise(st.oa, HPAGE_SIZE, MADV_DONTNEED)
    assert h.resv_huge_pages == before + 1
    st.o.store(st.oa, b"o")
    assert h.resv_huge_pages == before
    scn.teardown(st)
    st.kernel.check()
    assert not st.kernel.findings()


def test_free_mode_fix_clean():
    r = stress.run_free("hugetlb-zap-reclaim", "alloc-before-locks", seed=0, seconds=0.5)
    assert r.ops > 0 and not r.findings, r.findings
