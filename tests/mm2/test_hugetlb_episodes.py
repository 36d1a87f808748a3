"""New hugetlb episodes of issue 12: hugetlb-cow-imap (e7dd91c456a8) and
hugetlb-dontneed (04ada095dcfc): buggy caught with the expected finding and
replayed, fixed clean."""
import pytest

from pymm.locking import lockdep
from pymm.sched import explore, replay

from .test_hugetlb_variants import fresh_lockdep, kind_of, lockdep_off, program  # noqa: F401 (fixtures)

# the fixed values, each clean over a random exploration of this many schedules
CLEAN = [("hugetlb-cow-imap", "drop-imap-in-cow", 100), ("hugetlb-dontneed", "non-final-zap", 150),
         ("hugetlb-split", "unshare-in-split", 60), ("hugetlb-mbind-punch", "keep-imap", 100)]


@pytest.mark.parametrize("name, fixed, schedules", CLEAN, ids=[c[0] for c in CLEAN])
def test_fixed_value_is_clean(name, fixed, schedules):
    setup, threads, check = program(name, fixed)
    res = explore(setup, threads, check, strategy="random", seed=0, max_schedules=schedules)
    assert res.failure is None, res.failure.message


def test_imap_held_in_cow_is_recursive_locking():
    setup, threads, check = program("hugetlb-cow-imap", "imap-held-in-cow")
    f = explore(setup, threads, check, seed=0, max_schedules=20).failure
    assert f is not None and kind_of(f) == "lockdep", f and f.message
    assert "possible recursive locking" in f.message
    assert "&hugetlbfs_i_mmap_rwsem_key" in f.message and "unmap_ref_private" in f.message
    lockdep.reset()
    assert replay(setup, threads, f.schedule, check).message.splitlines()[0] == f.message.splitlines()[0]


def test_imap_held_in_cow_hangs_without_the_validator(lockdep_off):
    setup, threads, check = program("hugetlb-cow-imap", "imap-held-in-cow")
    f = explore(setup, threads, check, strategy="pct", seed=0, max_schedules=50).failure
    assert f is not None and f.kind == "deadlock", f and f.message
    assert "&hugetlbfs_i_mmap_rwsem_key" in f.message


def test_final_zap_loses_the_vma_lock_under_a_waiting_fault():
    setup, threads, check = program("hugetlb-dontneed", "final-zap")
    f = explore(setup, threads, check, strategy="random", seed=0, max_schedules=200).failure
    assert f is not None, "final-zap ran clean"
    assert kind_of(f) in ("lockdep", "use-after-free"), f.message
    assert "vma_lock" in f.message


def test_final_zap_leaves_a_shared_vma_without_its_lock():
    """Even with no race: after MADV_DONTNEED the VMA that stays has no
    vma_lock any more (its faults would run unprotected)."""
    from pymm.mm.hugetlb import HugetlbVmaLock
    from pymm.scenarios import get
    for value, kept in (("final-zap", False), ("non-final-zap", True)):
        scn = get("hugetlb-dontneed")()
        st = scn.setup(value, 0)
        st.p.madvise(st.a, 2 << 20, 4)
        vma = st.p.mm.mm_mt.vma_lookup(st.a)
        assert isinstance(vma.vm_private_data, HugetlbVmaLock) is kept, value
        scn.teardown(st)


def test_unshare_before_split_leaves_a_shared_table_in_a_partial_vma():
    setup, threads, check = program("hugetlb-split", "unshare-before-split")
    f = explore(setup, threads, check, strategy="random", seed=0, max_schedules=50).failure
    assert f is not None and kind_of(f) == "assertion", f and f.message
    assert "shared hugetlb PMD table in a VMA that does not cover its PUD range" in f.message
    lockdep.reset()
    assert replay(setup, threads, f.schedule, check) is not None


def test_the_coverage_check_is_labelled_pymm_only():
    from pymm.scenarios import get
    scn = get("hugetlb-split")()
    setup, threads, check = program("hugetlb-split", "unshare-before-split")
    st = setup()
    k = st.kernel
    # force the interleaving: B shares A's table between the unshare and the split
    from pymm.mm import hugetlb as H
    orig = H.point

    def point(name):
        if name == "hugetlb_vm_op_split":
            st.b.load(scn_base(), 1)
        return orig(name)
    H.point = point
    try:
        st.a.mprotect(scn_base() + 8 * (2 << 20), 2 << 20, 1)
    finally:
        H.point = orig
    bad = [f for f in k.findings() if "does not cover its PUD range" in f.title]
    assert bad and bad[0].data.get("pymm_only") is True
    for p in (st.a, st.b):
        p.exit()


def scn_base():
    from pymm.scenarios.hugetlb_split import BASE
    return BASE


def test_mbind_punch_relock_under_folio_is_a_circular_dependency():
    setup, threads, check = program("hugetlb-mbind-punch", "relock-under-folio")
    f = explore(setup, threads, check, seed=0, max_schedules=20).failure
    assert f is not None and kind_of(f) == "lockdep", f and f.message
    assert "possible circular locking dependency" in f.message
    assert "&hugetlbfs_i_mmap_rwsem_key" in f.message and "hugetlbfs_zero_partial_page" in f.message
    assert "do_mbind" in f.message or "migrate_pages" in f.message


def test_mbind_punch_hangs_without_the_validator(lockdep_off):
    setup, threads, check = program("hugetlb-mbind-punch", "relock-under-folio")
    f = explore(setup, threads, check, strategy="random", seed=0, max_schedules=200).failure
    assert f is not None and f.kind == "deadlock", f and f.message
