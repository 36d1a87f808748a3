"""Folio lock classes (mm/filemap.py): anon, page-cache and hugetlbfs
page-cache folios are separate lockdep classes, a fresh folio adds no
dependency into its class, and truncation's folio lock (7b7387650dcf) is
subclass 1.  The merged fixes run clean with them; with the classes merged
back into one (or the subclass dropped) lockdep reports cycles the kernel
does not have -- these tests fail without the mechanism."""
import pytest

from pymm.fs import hugetlbfs
from pymm.locking import lockdep
from pymm.mm import filemap
from pymm.sched import explore

from .test_hugetlb_variants import kind_of, program


@pytest.fixture(autouse=True)
def fresh_lockdep():
    lockdep.reset()
    yield
    lockdep.reset()


def explore_fixed(name, value, n=150):
    setup, threads, check = program(name, value)
    return explore(setup, threads, check, strategy="random", seed=0, max_schedules=n)


def test_class_of_a_folio_follows_what_it_is():
    from pymm import Kernel
    from pymm.mm.mm_types import PG_anon, PG_hugetlb, Folio
    f = Folio(0)
    assert filemap.folio_lock_class(f) == filemap.FOLIO_LOCK_PAGECACHE
    f.flags |= PG_hugetlb
    assert filemap.folio_lock_class(f) == filemap.FOLIO_LOCK_HUGETLBFS
    f.flags |= PG_anon
    assert filemap.folio_lock_class(f) == filemap.FOLIO_LOCK_ANON
    Kernel(nodes=1, pages_per_node=8)            # a kernel enables the validator
    filemap.folio_lock(f)
    assert lockdep.held_locks()[-1].name == "folio_lock#anon"
    filemap.folio_unlock(f)
    f.flags &= ~PG_anon                          # re-classed while unlocked
    filemap.folio_lock(f)
    assert lockdep.held_locks()[-1].name == "folio_lock#hugetlbfs"
    filemap.folio_unlock(f)


@pytest.mark.parametrize("name, value", [("hugetlb-wp", "folio-trylock"),
                                         ("hugetlb-truncate", "lock-folio-across-unmap")])
def test_merged_fixes_run_clean(name, value):
    res = explore_fixed(name, value)
    assert res.failure is None, res.failure.message


def test_one_folio_class_would_report_folio_trylock(monkeypatch):
    """2ae1ab9934c7 keeps the old anon folio locked across the fault-mutex
    retake (anon folio -> FM) while the other process's fault locks the
    page-cache folio under FM: one class makes that a cycle."""
    monkeypatch.setattr(filemap, "folio_lock_class", lambda folio: "folio_lock")
    f = explore_fixed("hugetlb-wp", "folio-trylock").failure
    assert f is not None and kind_of(f) == "lockdep", f and f.message
    assert "possible circular locking dependency" in f.message and "hugetlb_fault_mutex" in f.message


def test_no_subclass_would_report_lock_folio_across_unmap(monkeypatch):
    """7b7387650dcf takes the vma_lock under the folio lock; a fault takes
    the folio lock under the vma_lock (a fault on another index, or after
    the fault mutex is gone): without subclass 1 lockdep sees a cycle."""
    monkeypatch.setattr(hugetlbfs, "folio_lock_nested", lambda folio, sub: filemap.folio_lock(folio))
    f = explore_fixed("hugetlb-truncate", "lock-folio-across-unmap").failure
    assert f is not None and kind_of(f) == "lockdep", f and f.message
    assert "folio_lock#hugetlbfs" in f.message


def test_buggy_wp_is_still_a_cycle_between_fault_mutex_and_the_page_cache_folio():
    setup, threads, check = program("hugetlb-wp", "fault-mutex-under-folio")
    f = explore(setup, threads, check, seed=0, max_schedules=20).failure
    assert kind_of(f) == "lockdep"
    assert "folio_lock#hugetlbfs" in f.message and "hugetlb_fault_mutex" in f.message
