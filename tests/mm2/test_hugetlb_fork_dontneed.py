"""hugetlb-fork-dontneed (key hugetlb-no-page-ref): a fork child's
hugetlb_no_page unlocks its new anon folio after the PTE -- the folio's only
reference -- is visible to a MADV_DONTNEED of another of its threads, which
the fault does not exclude (the child's private VMA has no resv_map, so no
vma_lock).  Mainline (``unlock-unreferenced``) frees a locked folio;
pymm's proposed fix (``ref-across-unlock``) holds a reference across the
unlock.  Found as "BUG: Bad page state: hugetlb folio freed with locked
set" by a free run of a fork child's faults against parent and child
MADV_DONTNEED."""
import pytest

from pymm import constants as C
from pymm import stress
from pymm.mm import hugetlb as H
from pymm.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from pymm.scenarios import get

from .test_pymm_only_checks import first_finding, restore_default  # noqa: F401 (autouse fixture)


def test_mainline_frees_the_folio_the_fault_still_has_locked():
    f = first_finding("hugetlb-fork-dontneed", "unlock-unreferenced", replays=True)
    assert f["kind"] == "bad-page-state" and f["pymm_only"] is True
    assert "hugetlb folio freed with locked set" in f["text"]
    assert "__unmap_hugepage_range" in f["text"] and "madvise" in f["text"]


def test_with_pymm_checks_off_the_fault_unlocks_a_freed_folio():
    """The kernel's free_huge_folio does not check the flags: what is left
    is the fault's folio_unlock of a folio back in the pool."""
    f = first_finding("hugetlb-fork-dontneed", "unlock-unreferenced", pymm_checks=False)
    assert f["kind"] == "use-after-free" and f["pymm_only"] is False
    assert "hugetlb_no_page" in f["text"] and "folio_unlock" in f["text"]


@pytest.mark.parametrize("strategy", ["random", "pct"])
def test_ref_across_unlock_is_clean(strategy):
    r = stress.run_controlled("hugetlb-fork-dontneed", "ref-across-unlock", seed=0,
                              schedules=150, strategy=strategy)
    assert not r.findings, r.findings[0]["text"]
    assert r.schedules == 150


def test_the_child_has_no_vma_lock_and_the_owner_has_one():
    """Why only the child is exposed: the zap and the fault exclude each
    other through the resv_map's rw_sema of an owner VMA (2820b0f09be9,
    bf4916922c60); the child's VMA has none."""
    scn = get("hugetlb-fork-dontneed")()
    st = scn.setup("ref-across-unlock", 0)
    for proc, has_lock in ((st.p, True), (st.c, False)):
        mmap_read_lock(proc.mm)
        vma = proc.mm.mm_mt.vma_lookup(st.a)
        assert (H._vma_lock_sem(vma) is not None) is has_lock, proc
        mmap_read_unlock(proc.mm)
    st.c.madvise(st.a, C.HPAGE_SIZE, C.MADV_DONTNEED)
    st.c.store(st.a, b"C")                    # hugetlb_no_page: a new anon folio
    assert st.c.load(st.a, 1) == b"C" and st.p.load(st.a, 1) == b"P"
    scn.teardown(st)
    assert not st.kernel.findings(), st.kernel.findings()[0].text
