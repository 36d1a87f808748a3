"""The page cache and the page lock (mm/filemap.c).

The page lock is a sleeping lock.  The kernel keeps one bit per page and
hashed wait queues; pymm keeps PG_locked as the bit and gives a folio a real
pymm lock (class ``folio_lock``) the first time it is locked, so that lockdep
and the controlled scheduler see page-lock ordering (the kernel's lockdep does
not track PG_locked; pymm does, because two of the historical bugs are
folio_lock inversions).  Installing the lock object is a cmpxchg, so two
threads locking a fresh folio at once agree on one lock.
"""
from ..debug.report import report
from ..locking import lockdep
from ..locking._base import ExclusiveLock
from ..sched import point
from .atomic import atomic_add_return, clear_bits, cmpxchg, set_bits
from .mm_types import PG_locked


class FolioLock(ExclusiveLock):
    """The page lock: ``folio_lock`` / ``folio_trylock`` / ``folio_unlock``."""

    KIND = "folio_lock"
    SLEEPING = True
    __slots__ = ()


def _lock_of(folio):
    lk = folio.lock
    if lk is None:
        lk = cmpxchg(folio, "lock", None, FolioLock("folio_lock"))
    return lk


def folio_lock(folio):
    """Context: may sleep; takes the page lock."""
    _lock_of(folio).lock()
    set_bits(folio, "flags", PG_locked)


def folio_trylock(folio):
    if _lock_of(folio).trylock():
        set_bits(folio, "flags", PG_locked)
        return True
    return False


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


def folio_wait_locked(folio):
    """Wait until the folio is unlocked (modelled as lock + unlock)."""
    folio_lock(folio)
    folio_unlock(folio)


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
