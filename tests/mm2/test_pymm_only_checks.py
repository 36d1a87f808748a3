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
