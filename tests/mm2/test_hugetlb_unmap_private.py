"""hugetlb-unmap-private (key hugetlb-unmap-private): mainline's
hugetlb_unmap_file_folio takes a private owner VMA's vm_private_data
(resv_map|HPAGE_RESV_OWNER) for a struct hugetlb_vma_lock when its trylock
fails.  What pymm's detectors say: its own check of the kref landing in
resv_map memory (pymm_only), the kernel's refcount warning, lockdep's
non-static key; pymm's proposed fix (wait-on-resv-map) is clean."""
import pytest

from pymm import stress
from pymm.locking import lockdep

from .test_pymm_only_checks import first_finding, restore_default  # noqa: F401 (autouse fixture)


def test_mainline_uses_the_tagged_resv_map_as_a_vma_lock():
    f = first_finding("hugetlb-unmap-private", "resv-map-as-vma-lock", replays=True)
    assert f["kind"] == "data-corruption" and f["pymm_only"] is True
    assert "tagged resv_map" in f["title"]
    assert "hugetlb_unmap_file_folio" in f["text"] and "hugetlbfs_punch_hole" in f["text"]


def test_with_pymm_checks_off_the_kernel_warns_on_the_refcount():
    f = first_finding("hugetlb-unmap-private", "resv-map-as-vma-lock", pymm_checks=False)
    assert f["title"] == "refcount_t: addition on 0; use-after-free."
    assert f["kind"] == "use-after-free" and f["pymm_only"] is False


def test_the_overlay_rwsem_is_a_lock_lockdep_never_registered():
    """down_write(&vma_lock->rw_sema) on resv_map bytes (what follows the
    refcount warning in a free run)."""
    from pymm.fs.hugetlbfs import ResvMapAsVmaLock
    from pymm.mm.hugetlb import ResvMap
    was = lockdep.is_enabled()
    lockdep.reset()
    lockdep.enable()
    try:
        ResvMapAsVmaLock(ResvMap()).down_write()
        reps = [r for r in lockdep.reports()
                if r.title == "INFO: trying to register non-static key."]
    finally:
        if not was:
            lockdep.disable()
    assert reps and "resv_map" in reps[0].text and "test_the_overlay_rwsem" in reps[0].text


@pytest.mark.parametrize("strategy", ["random", "pct"])
def test_wait_on_resv_map_is_clean(strategy):
    r = stress.run_controlled("hugetlb-unmap-private", "wait-on-resv-map", seed=0,
                              schedules=150, strategy=strategy)
    assert not r.findings, r.findings[0]["text"]


def test_wait_on_resv_map_is_clean_in_free_mode():
    r = stress.run_free("hugetlb-unmap-private", "wait-on-resv-map", seed=0, seconds=1)
    assert not r.findings, r.findings[0]["text"]
