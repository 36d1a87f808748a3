"""pymm's own checks (the ones the kernel never had) are labelled
"pymm_only" in findings and JSON, and can be switched off (Kernel option
``pymm_checks``, CLI ``--no-pymm-checks``); hugetlb-anon-migrate rmap-locked
is then caught by its historical mechanism: the walk reads freed anon_vma
chain nodes (KASAN use-after-free)."""
import pytest

from pymm import Kernel, stress
from pymm.debug import report as R
from pymm.locking import lockdep


@pytest.fixture(autouse=True)
def restore_default():
    yield
    R.set_pymm_checks_default(True)
    lockdep.reset()


def test_kernel_option_validates_and_defaults():
    assert Kernel(nodes=1, pages_per_node=8).pymm_checks is True
    assert Kernel(nodes=1, pages_per_node=8, pymm_checks=False).pymm_checks is False
    with pytest.raises(ValueError):
        Kernel(nodes=1, pages_per_node=8, pymm_checks="no")
    R.set_pymm_checks_default(False)
    assert Kernel(nodes=1, pages_per_node=8).pymm_checks is False


def test_rmap_locked_assertion_is_labelled_pymm_only():
    r = stress.run_controlled("hugetlb-anon-migrate", "rmap-locked", seed=0, schedules=20)
    assert r.findings and r.findings[0]["kind"] == "assertion"
    assert r.findings[0]["pymm_only"] is True


def test_rmap_locked_is_caught_by_the_freed_chain_nodes_with_pymm_checks_off():
    R.set_pymm_checks_default(False)
    r = stress.run_controlled("hugetlb-anon-migrate", "rmap-locked", seed=0)   # the default budget
    assert r.findings, "rmap-locked ran clean with pymm's checks off"
    f = r.findings[0]
    assert f["kind"] == "use-after-free" and f["pymm_only"] is False
    assert "anon_vma" in f["text"]


def test_fixed_anon_migration_is_clean_with_pymm_checks_off():
    R.set_pymm_checks_default(False)
    r = stress.run_controlled("hugetlb-anon-migrate", "anon-vma-lock", seed=0, schedules=150)
    assert not r.findings, r.findings


def first_finding(name, variant, pymm_checks=True, replays=False):
    """The first finding of a seed-0 controlled run of a buggy ``variant``
    (which must catch it); with ``replays``, its token must reproduce it."""
    R.set_pymm_checks_default(pymm_checks)
    r = stress.run_controlled(name, variant, seed=0)
    assert r.findings, f"{name}={variant} ran clean (pymm checks {'on' if pymm_checks else 'off'})"
    f = r.findings[0]
    if replays:
        again = stress.run_replay(f["replay"].split()[-1])
        assert again.findings and again.findings[0]["title"] == f["title"]
    return f


# -- one report per bug: the first event of every buggy interleaving (issue 14) ------------

@pytest.mark.parametrize("seed", range(8))
def test_final_zap_is_reported_at_the_free_of_the_lock(seed):
    """hugetlb-dontneed final-zap: whatever the interleaving (a fault
    waiting for the vma_lock, preempted in its down_read, or holding it
    after a trylock), the first report is the free of the lock under it,
    not what the fault does next (KASAN when it wakes, the lock held on the
    way to user space, or the fault mutex taken under it)."""
    R.set_pymm_checks_default(True)
    r = stress.run_controlled("hugetlb-dontneed", "final-zap", seed=seed)
    assert r.findings, "final-zap ran clean"
    f = r.findings[0]
    assert f["title"] == "WARNING: lock freed while another task holds it!", f["title"]
    assert f["pymm_only"] is True and "(hugetlb_vma_lock)" in f["text"]
    assert "__hugetlb_vma_unlock_write_put" in f["text"]


def test_final_zap_replays_and_is_caught_by_the_kernels_detectors_without_pymm_checks():
    first_finding("hugetlb-dontneed", "final-zap", replays=True)
    f = first_finding("hugetlb-dontneed", "final-zap", pymm_checks=False)
    assert f["pymm_only"] is False
    assert f["kind"] in ("use-after-free", "lockdep") and "vma_lock" in f["text"]


@pytest.mark.parametrize("seed", range(4))
def test_no_vma_lock_is_reported_at_the_unshare(seed):
    """hugetlb-pmd-share no-vma-lock: the first report is the hole punch
    unsharing the PMD table under the fault that holds its ptep, not the
    fault's later use of the table (KASAN once the other mm freed it, its
    page in the other mm's table: map count, pgtables_bytes)."""
    R.set_pymm_checks_default(True)
    r = stress.run_controlled("hugetlb-pmd-share", "no-vma-lock", seed=seed)
    assert r.findings, "no-vma-lock ran clean"
    f = r.findings[0]
    assert f["title"] == "BUG: hugetlb PMD table unshared under a fault using it", f["title"]
    assert f["pymm_only"] is True


def test_no_vma_lock_replays_and_is_caught_by_the_kernels_detectors_without_pymm_checks():
    first_finding("hugetlb-pmd-share", "no-vma-lock", replays=True)
    f = first_finding("hugetlb-pmd-share", "no-vma-lock", pymm_checks=False)
    assert f["pymm_only"] is False
    assert f["kind"] in ("use-after-free", "rss-counter", "bad-page-state"), f["title"]
