"""The page cache and the page lock (mm/filemap.c).

The page lock is a sleeping lock.  The kernel keeps one bit per page and
hashed wait queues; pymm keeps PG_locked as the bit and gives a folio a real
pymm lock (class ``folio_lock``) the first time it is locked, so that lockdep
and the controlled scheduler see page-lock ordering (the kernel's lockdep does
not track PG_locked; pymm does, because two of the historical bugs are
folio_lock inversions).  Installing the lock object is a cmpxchg, so two
threads locking a fresh folio at once agree on one lock.

Lock classes.  One class for every folio lock would make lockdep merge
orders that never meet: an anon folio held across hugetlb_wp's fault-mutex
drop (Oscar Salvador's 2025 fix) against a hugetlbfs page-cache folio taken
under the fault mutex, or an ordinary page-cache folio taken under
mmap_lock against a hugetlbfs one ranked below i_mmap_rwsem.  So, as if the
kernel called ``lockdep_set_class`` on the page lock, a folio's lock belongs
to one of three classes, chosen each time it is taken from what the folio
is then (``folio_lock_class``):

- ``folio_lock#anon``: anon folios and swap-cache folios;
- ``folio_lock#hugetlbfs``: hugetlbfs page-cache folios (ranked below
  i_mmap_rwsem: FM -> vma_lock -> i_mmap_rwsem -> folio_lock);
- ``folio_lock#pagecache``: every other folio (page cache, tmpfs).

A folio nobody else can reach yet (just allocated, not yet in a page table
or the page cache) is locked with ``__folio_set_locked``: the kernel sets
the bit non-atomically there, because nobody can be waiting; pymm records
it as a successful trylock of the class the folio is about to have, so no
dependency *into* it is recorded (none can be waited on) and the ones out
of it are.  Rule (pymm's, the kernel's lockdep never sees page locks):
every order lockdep checks between folio locks and other locks is per
class; a fresh folio adds no edge into its class.
"""
from ..debug.report import report
from ..locking import lockdep
from ..locking._base import ExclusiveLock, class_key
from ..sched import point
from .atomic import atomic_add_return, clear_bits, cmpxchg, set_bits
from .mm_types import (FAULT_FLAG_ALLOW_RETRY, FAULT_FLAG_RETRY_NOWAIT, PG_anon, PG_hugetlb, PG_locked,
                       VM_FAULT_RETRY)
from .mmap_lock import release_fault_lock


class FolioLock(ExclusiveLock):
    """The page lock: ``folio_lock`` / ``folio_trylock`` / ``folio_unlock``."""

    KIND = "folio_lock"
    SLEEPING = True
    __slots__ = ()


FOLIO_LOCK_ANON = "folio_lock#anon"
FOLIO_LOCK_PAGECACHE = "folio_lock#pagecache"
FOLIO_LOCK_HUGETLBFS = "folio_lock#hugetlbfs"
FOLIO_LOCK_CLASSES = (FOLIO_LOCK_ANON, FOLIO_LOCK_PAGECACHE, FOLIO_LOCK_HUGETLBFS)


def folio_lock_class(folio):
    """The lockdep class of ``folio``'s lock, from what the folio is now."""
    if folio.flags & PG_anon or folio.swap is not None:
        return FOLIO_LOCK_ANON
    if folio.flags & PG_hugetlb:
        return FOLIO_LOCK_HUGETLBFS
    return FOLIO_LOCK_PAGECACHE


def _lock_of(folio, cls=None):
    """The folio's lock, in class ``cls`` (default: folio_lock_class).  The
    class is (re)set only while nobody holds the lock: a folio changes what
    it is (fresh -> anon, page cache -> truncated) between lockings."""
    lk = folio.lock
    if cls is None:
        cls = folio_lock_class(folio)
    if lk is None:
        lk = cmpxchg(folio, "lock", None, FolioLock(cls))
    if lk.name is not cls and not lk.is_locked():
        lk.key = class_key(cls, FolioLock.KIND, True)
        lk.name = cls
    return lk


def folio_lock(folio):
    """Context: may sleep; takes the page lock."""
    _lock_of(folio).lock()
    set_bits(folio, "flags", PG_locked)


def folio_lock_nested(folio, subclass):
    """folio_lock with a lockdep subclass: a folio lock held in a role that
    no other path of its class can meet (see remove_inode_single_folio).
    The kernel has no such call -- its lockdep does not see page locks."""
    _lock_of(folio).lock_nested(subclass)
    set_bits(folio, "flags", PG_locked)


def folio_trylock(folio, cls=None):
    if _lock_of(folio, cls).trylock():
        set_bits(folio, "flags", PG_locked)
        return True
    return False


def __folio_set_locked(folio, cls=None):
    """Lock a folio nobody else can reach yet (see the module comment):
    a trylock that cannot fail, in class ``cls`` (the class the folio is
    about to have)."""
    if not folio_trylock(folio, cls):
        raise AssertionError(f"__folio_set_locked: {folio!r} is already locked: it is not new")


def folio_unlock(folio):
    clear_bits(folio, "flags", PG_locked)
    folio.lock.unlock()


def folio_test_locked(folio):
    return bool(folio.flags & PG_locked)


def folio_assert_locked(folio):
    """VM_BUG_ON_FOLIO(!folio_test_locked(folio)) and lockdep's view of it."""
    lk = folio.lock
    if lk is None:
        report("assertion", "WARNING: folio_assert_locked failed",
               f"folio {folio!r} was never locked")
        return
    lockdep.lockdep_assert_held(lk)


def folio_lock_or_retry(folio, vmf):
    """Lock the folio for a fault (include/linux/pagemap.h
    folio_lock_or_retry, mm/filemap.c __folio_lock_or_retry): a trylock;
    if that fails and the fault may retry, the fault's lock (the VMA's read
    lock, or mmap_lock) is released first and the folio waited for -- a
    fault never sleeps on a folio lock holding the VMA lock, which
    vma_start_write would then wait for -- and VM_FAULT_RETRY returned
    (with FAULT_FLAG_RETRY_NOWAIT without waiting or releasing).  Returns 0
    with the folio locked, or VM_FAULT_RETRY.  Context: the caller holds a
    reference on the folio."""
    if folio_trylock(folio):
        return 0
    if vmf.flags & FAULT_FLAG_ALLOW_RETRY:
        if vmf.flags & FAULT_FLAG_RETRY_NOWAIT:
            return VM_FAULT_RETRY
        release_fault_lock(vmf)
        folio_wait_locked(folio)
        return VM_FAULT_RETRY
    folio_lock(folio)
    return 0


def folio_wait_locked(folio):
    """Wait until the folio is unlocked (modelled as lock + unlock).
    Context: the caller holds a reference."""
    folio_lock(folio)
    folio_unlock(folio)


def folio_waitqueue(folio):
    """Where a waiter for the page lock sleeps.  The kernel hashes the folio
    into a table of wait queues that outlive any folio; pymm's queue is the
    folio's lock object, which a waiter may keep after the folio is freed."""
    return _lock_of(folio)


def migration_entry_wait_on_locked(folio, ptl):
    """Wait, with NO folio reference, for the migration that installed a
    migration entry for ``folio`` to unlock it.  As the kernel: join the wait
    queue while the ptl is held (the migration holds a reference and must
    take this ptl to remove the entry, so the folio is valid until then),
    drop the ptl, and from then on touch only the queue -- the folio may be
    freed meanwhile.  (The wait is modelled as lock + unlock of the queue's
    lock object, never of the folio.)  Context: ptl held; released here."""
    wq = folio_waitqueue(folio)
    ptl.unlock()
    point("migration_entry_wait_on_locked")
    wq.lock()
    wq.unlock()


# -- the page cache ----------------------------------------------------------------

def filemap_get_folio(mapping, index):
    """Look up and reference a page-cache folio, or None.  Context: any; takes
    the i_pages lock (the kernel uses RCU and a speculative reference)."""
    mapping.xa_lock.lock()
    folio = mapping.i_pages.get(index)
    if folio is not None:
        atomic_add_return(folio, "_refcount", 1)
    mapping.xa_lock.unlock()
    return folio


def filemap_add_folio(kernel, mapping, folio, index):
    """Insert a new, locked folio.  Returns None on success (the page cache
    took a reference) or the folio already there (referenced for the caller)."""
    mapping.xa_lock.lock()
    cur = mapping.i_pages.get(index)
    if cur is not None:
        atomic_add_return(cur, "_refcount", 1)
        mapping.xa_lock.unlock()
        return cur
    folio.mapping = mapping
    folio.index = index
    atomic_add_return(folio, "_refcount", 1)
    mapping.i_pages[index] = folio
    mapping.nrpages += 1
    mapping.xa_lock.unlock()
    st = kernel.nodes[folio.node].vm_stat
    st["NR_FILE_PAGES"].add(folio.nr_pages())
    st["NR_SHMEM"].add(folio.nr_pages())
    point("filemap_add_folio")
    return None


def filemap_remove_folio(kernel, folio):
    """Delete a folio from the page cache (the caller then drops the cache's
    reference with folio_put).  Context: folio locked."""
    folio_assert_locked(folio)
    mapping = folio.mapping
    mapping.xa_lock.lock()
    if mapping.i_pages.get(folio.index) is folio:
        del mapping.i_pages[folio.index]
        mapping.nrpages -= 1
    folio.mapping = None
    mapping.xa_lock.unlock()
    st = kernel.nodes[folio.node].vm_stat
    st["NR_FILE_PAGES"].add(-folio.nr_pages())
    st["NR_SHMEM"].add(-folio.nr_pages())
