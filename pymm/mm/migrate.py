"""Page migration (mm/migrate.c): isolate, lock, unmap to migration entries,
copy, remap, put back.

Per folio (migrate_folio_unmap + migrate_folio_move): PL(src) -- trylock,
blocking in MIGRATE_SYNC; anon: pin the anon_vma; allocate dst through the
caller's callback; TryPL(dst); try_to_migrate(src) (the rmap walk takes
anon_vma->rwsem or i_mmap_rwsem for read, then each ptl); copy contents and
the page-cache slot; remove_migration_ptes(src, dst); unlock dst, unlock src.
A folio that is still mapped or still referenced after unmapping is restored
and retried (-EAGAIN), up to NR_MAX_MIGRATE_PAGES_RETRY times.
"""
import errno

from ..sched import charge, point
from .atomic import atomic_add_return, clear_bits, set_bits
from .filemap import folio_lock, folio_lock_class, folio_trylock, folio_unlock
from .mm_types import (PG_anon, PG_dirty, PG_hugetlb, PG_isolated, PG_lru, PG_swapbacked,
                       PG_uptodate)
from .gfp import __GFP_MOVABLE, __GFP_RETRY_MAYFAIL, GFP_USER
from .page_alloc import __alloc_pages, folio_put
from .rmap import folio_get_anon_vma, put_anon_vma, remove_migration_ptes, try_to_migrate
from .swap import folio_add_lru, lruvec_del_folio_locked
from .util import folio_copy
from . import hugetlb_ops

MIGRATE_ASYNC, MIGRATE_SYNC_LIGHT, MIGRATE_SYNC = range(3)
MIGRATEPAGE_SUCCESS = 0
NR_MAX_MIGRATE_PAGES_RETRY = 10

# migrate_reason
MR_COMPACTION, MR_MEMORY_FAILURE, MR_MEMORY_HOTPLUG, MR_SYSCALL, MR_MEMPOLICY_MBIND, \
    MR_NUMA_MISPLACED, MR_CONTIG_RANGE, MR_LONGTERM_PIN, MR_DEMOTION = range(9)


# -- isolation -------------------------------------------------------------------------

def folio_isolate_lru(kernel, folio):
    """Take a folio off its LRU for migration, with a reference.  Returns
    False if it is not on an LRU (already isolated, or being freed)."""
    lruvec = kernel.nodes[folio.node].lruvec
    lruvec.lru_lock.lock()
    ok = bool(folio.flags & PG_lru) and folio._refcount > 0
    if ok:
        atomic_add_return(folio, "_refcount", 1)
        lruvec_del_folio_locked(lruvec, folio)
        set_bits(folio, "flags", PG_isolated)
    lruvec.lru_lock.unlock()
    return ok


def folio_putback_lru(kernel, folio):
    """Undo folio_isolate_lru: back on the LRU, drop the isolation reference."""
    clear_bits(folio, "flags", PG_isolated)
    folio_add_lru(kernel, folio)
    folio_put(folio, kernel)


def putback_movable_pages(kernel, folios):
    for f in folios:
        if f.flags & PG_hugetlb:
            hugetlb_ops.folio_putback_hugetlb(kernel, f)
        else:
            folio_putback_lru(kernel, f)


# -- allocation callbacks ------------------------------------------------------------

class MigrationTargetControl:
    """``struct migration_target_control``."""
    __slots__ = ("nid", "nmask")

    def __init__(self, nid, nmask=None):
        self.nid = nid
        self.nmask = nmask


def alloc_migration_target(kernel, src, mtc):
    """Allocate the destination on mtc.nid (falling back within mtc.nmask).
    Touches no VMA and no mm: safe without mmap_lock."""
    if src.flags & PG_hugetlb:
        return hugetlb_ops.alloc_hugetlb_folio_nodemask(kernel, mtc.nid, mtc.nmask)
    return __alloc_pages(kernel, src.order, mtc.nid, mtc.nmask,
                         GFP_USER | __GFP_MOVABLE | __GFP_RETRY_MAYFAIL)


# -- the per-folio core ----------------------------------------------------------------

def folio_expected_refs(folio):
    """References a fully unmapped folio has: the isolation one, plus the page
    cache's for a file folio or the swap cache's for an anon one in it."""
    if folio.flags & PG_anon:
        return 1 + (folio.swap is not None)
    return 1 + (folio.mapping is not None)


def folio_migrate_swap_cache(src, dst):
    """The swap-cache half of folio_migrate_mapping: dst takes src's slot
    in the swap cache, and the cache's reference moves with it.  Returns
    False if someone else took a reference meanwhile.  Context: both folios
    locked; takes si->lock then the swap cache lock (lookups take their
    reference under it, so the count is stable there)."""
    entry = src.swap
    si = entry.si
    si.lock.lock()
    si.cache_lock.lock()
    ok = si.cache.get(entry.offset) is src and src._refcount == folio_expected_refs(src)
    if ok:
        si.cache[entry.offset] = dst
        dst.swap, src.swap = entry, None
        atomic_add_return(dst, "_refcount", 1)
        atomic_add_return(src, "_refcount", -1)
    si.cache_lock.unlock()
    si.lock.unlock()
    return ok


def move_to_new_folio(kernel, dst, src):
    """Copy contents, flags and the page-cache slot (folio_migrate_mapping).
    Returns 0 or -EAGAIN if someone else holds a reference.  Context: both
    folios locked, src unmapped."""
    if src._refcount != folio_expected_refs(src):
        return -errno.EAGAIN
    mapping = src.mapping
    if not src.flags & PG_anon and mapping is not None:
        mapping.xa_lock.lock()
        if mapping.i_pages.get(src.index) is not src or src._refcount != folio_expected_refs(src):
            mapping.xa_lock.unlock()
            return -errno.EAGAIN
        mapping.i_pages[src.index] = dst
        atomic_add_return(dst, "_refcount", 1)          # the page cache's reference moves
        atomic_add_return(src, "_refcount", -1)
        mapping.xa_lock.unlock()
        st_src, st_dst = kernel.nodes[src.node].vm_stat, kernel.nodes[dst.node].vm_stat
        for item in ("NR_FILE_PAGES", "NR_SHMEM"):
            st_src[item].add(-src.nr_pages())
            st_dst[item].add(dst.nr_pages())
    elif src.flags & PG_anon and src.swap is not None and not folio_migrate_swap_cache(src, dst):
        return -errno.EAGAIN
    charge("migrate_page")
    folio_copy(dst, src)
    set_bits(dst, "flags", src.flags & (PG_anon | PG_swapbacked | PG_uptodate | PG_dirty | PG_hugetlb))
    dst.mapping = mapping
    dst.index = src.index
    if src.flags & PG_anon:
        # NR_ANON_MAPPED follows the mappings: try_to_migrate took src's
        # out, remove_migration_ptes counts dst's first one in
        src.mapping = None
    point("move_to_new_folio")
    return MIGRATEPAGE_SUCCESS


def migrate_folio_unmap_and_move(kernel, src, get_new_folio, private, mode):
    """Migrate one isolated folio.  Returns (rc, dst).  Context: no page lock held."""
    if src._refcount == 1:
        # Freed from under us (unmapped, and out of the page cache, while
        # isolated): only our reference is left, nothing to move.
        return MIGRATEPAGE_SUCCESS, None
    if not folio_trylock(src):
        if mode == MIGRATE_ASYNC:
            return -errno.EAGAIN, None
        folio_lock(src)
    # an unmapped folio's anon_vma may be freed already (munmap while it sat isolated)
    anon_vma = folio_get_anon_vma(src) if src.flags & PG_anon else None
    dst = get_new_folio(src, private)
    if dst is None:
        _unlock_src(kernel, src, anon_vma)
        return -errno.ENOMEM, None
    if not folio_trylock(dst, folio_lock_class(src)):   # a new folio: nobody else has it
        raise AssertionError("migrate: destination folio already locked")
    was_mapped = src.folio_mapped()
    if was_mapped:
        try_to_migrate(src, 0)
    rc = -errno.EAGAIN
    if not src.folio_mapped():
        rc = move_to_new_folio(kernel, dst, src)
    if rc == MIGRATEPAGE_SUCCESS:
        if was_mapped:
            remove_migration_ptes(src, dst)
        folio_unlock(dst)
        _unlock_src(kernel, src, anon_vma)
        folio_add_lru(kernel, dst)
        folio_put(dst, kernel)               # the allocation reference
        return rc, dst
    if was_mapped:
        remove_migration_ptes(src, src)
    folio_unlock(dst)
    folio_put(dst, kernel)
    _unlock_src(kernel, src, anon_vma)
    return rc, None


def _unlock_src(kernel, src, anon_vma):
    folio_unlock(src)
    if anon_vma is not None:
        put_anon_vma(anon_vma)


def migrate_pages(kernel, folios, get_new_folio, put_new_folio, private, mode, reason):
    """Migrate a list of isolated folios.  Returns the number that could not be
    moved (they are put back), or -ENOMEM when a destination could not be
    allocated (as the kernel, that one and the rest are put back untried);
    moved ones are released.  Context: may sleep; holds no lock across folios."""
    failed = 0
    todo = list(folios)
    while todo:
        src = todo.pop(0)
        huge = bool(src.flags & PG_hugetlb)
        move = hugetlb_ops.unmap_and_move_huge_page if huge else migrate_folio_unmap_and_move
        rc = -errno.EAGAIN
        for _ in range(NR_MAX_MIGRATE_PAGES_RETRY):
            rc, dst = move(kernel, src, get_new_folio, private, mode)
            if rc != -errno.EAGAIN:
                break
        if rc == MIGRATEPAGE_SUCCESS:
            clear_bits(src, "flags", PG_isolated)
            if huge:
                hugetlb_ops.folio_putback_hugetlb(kernel, src)
            else:
                folio_put(src, kernel)       # the isolation reference: usually the last
        elif rc == -errno.ENOMEM:
            putback_movable_pages(kernel, [src] + todo)
            folios.clear()
            return rc
        else:
            failed += 1
            putback_movable_pages(kernel, [src])
    folios.clear()
    return failed
