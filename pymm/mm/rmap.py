"""Reverse mapping (mm/rmap.c): anon_vma chains, file i_mmap, mapcounts.

Lock ordering in mm (as at the top of mm/rmap.c, current kernels):

  inode->i_rwsem                          (while writing or truncating)
    mm->mmap_lock
      mapping->invalidate_lock            (in filemap_fault)
        folio_lock
          hugetlbfs_i_mmap_rwsem_key      (in huge_pmd_share, see hugetlbfs below)
            vma_start_write
              mapping->i_mmap_rwsem
                anon_vma->rwsem
                  mm->page_table_lock or pte_lock
                    swap_lock             (in swap_duplicate, swap_info_get)
                    lruvec->lru_lock      (in folio_lruvec_lock_irq)
                    zone->lock            (within the page allocator)
                    mapping->i_pages lock (widely used)

hugetlbfs PageHuge() take locks in this order:
  hugetlb_fault_mutex (hugetlbfs specific page fault mutex)
    vma_lock (hugetlb specific lock for pmd_sharing)
      mapping->i_mmap_rwsem
        folio_lock

Folio locks have three lockdep classes in pymm (mm/filemap.py):
``folio_lock#anon`` and ``folio_lock#pagecache`` rank where the first tree
says folio_lock, ``folio_lock#hugetlbfs`` where the hugetlbfs order does.

``LOCK_ORDER`` below is the same order as data (pymm lockdep class names):
a test and ``pymm lockdep-graph`` compare it with what lockdep observes.
The per-VMA lock (class ``vm_lock``, both sides: vma_start_write and the
fault's vma_start_read) ranks right below mmap_lock, above
mapping->invalidate_lock and folio_lock.  The comment above lists
vma_start_write below folio_lock; read literally, that would let a writer
take it with a folio locked -- but a fault holding the VMA's read lock
waits for folio locks (migration_entry_wait; folio_lock_or_retry without
FAULT_FLAG_ALLOW_RETRY) and filemap_fault takes invalidate_lock under it,
and vma_start_write waits for those readers: a writer holding a folio lock
would deadlock against them.  No path does; the kernel's lockdep never sees
the page lock, pymm's does, so the data says what pymm observes.  The
position that matters, vma_start_write before i_mmap_rwsem and
anon_vma->rwsem (vma_prepare), is the comment's.
The data leaves out the first tree's hugetlbfs_i_mmap_rwsem_key line: read
literally it puts that class below folio_lock while the hugetlbfs order puts
it above, and for hugetlbfs folios (the only ones whose mapping has that
class) the hugetlbfs order is the one every path follows (hole punch zeroes a
page under it).  The kernel's lockdep never sees the page lock, so its
comment can afford both; pymm's lockdep does.
"""
import errno

from ..debug.fault_inject import should_fail
from ..debug.kasan import kasan_poison
from ..debug.report import pymm_checks, pymm_only_title
from ..locking import lockdep
from ..context import current
from ..rcu import rcu_read
from ..sched import point
from .atomic import atomic_add_return, atomic_inc_not_zero, set_bits
from .gfp import GFP_KERNEL, __GFP_NOFAIL, might_alloc
from .mlock import clear_page_mlock, mlock_vma_folio, mlock_vma_page, munlock_vma_folio
from .mm_types import (MM_ANONPAGES, MM_SWAPENTS, PG_anon, PG_dirty, PG_hugetlb, PG_mlocked,
                       PG_swapbacked, VM_ACCESS_FLAGS, VM_LOCKED, AnonVma, AnonVmaChain, mm_counter)
from .mmap_lock import mmap_read_trylock, mmap_read_unlock
from .page_alloc import folio_get, folio_put
from .pgtable import _PAGE_DIRTY, _PAGE_PROTNONE, _PAGE_RW, pte_index, pte_offset
from .swap_state import swap_duplicate
from .swapops import MigrationEntry
from .tlb import (ArchTlbflushUnmapBatch, arch_tlbbatch_add_pending, arch_tlbbatch_flush,
                  flush_tlb_mm, flush_tlb_page)
from . import hugetlb_ops
from . import internal
LOCK_ORDER_TREE = [
    ("&sb->s_type->i_mutex_key", [
        ("&mm->mmap_lock", [
            ("vm_lock", [
                ("&mapping->invalidate_lock", [
                    (("folio_lock#anon", "folio_lock#pagecache"), [
                        ("&mapping->i_mmap_rwsem", [
                            ("&anon_vma->rwsem", [
                                ("&mm->page_table_lock", [
                                    ("&si->lock", [("&xa->xa_lock", [])]),
                                    ("&lruvec->lru_lock", []), ("&zone->lock", []),
                                    ("&xa->xa_lock", [])]),
                                ("ptlock_ptr(ptdesc)", [
                                    ("&si->lock", [("&xa->xa_lock", [])]),
                                    ("&lruvec->lru_lock", []), ("&zone->lock", []),
                                    ("&xa->xa_lock", [])]),
                            ])])])])])])]),
]
HUGETLB_LOCK_ORDER = ["hugetlb_fault_mutex", "&vma_lock->rw_sema", "&resv_map->rw_sema",
                      "&hugetlbfs_i_mmap_rwsem_key", "folio_lock#hugetlbfs"]

# Observed edges (exact class names, subclass included) that go against the
# documented order on purpose, with the reason it is safe.
LOCK_ORDER_EXCEPTIONS = {
    ("folio_lock#hugetlbfs/1", "&hugetlbfs_i_mmap_rwsem_key"):
        "7b7387650dcf: truncation keeps the folio locked across hugetlb_unmap_file_folio, "
        "under the inode lock and the fault mutex (fs/hugetlbfs.py remove_inode_single_folio)",
    ("folio_lock#hugetlbfs/1", "&vma_lock->rw_sema"): "7b7387650dcf, as above",
    ("folio_lock#hugetlbfs/1", "&resv_map->rw_sema"): "7b7387650dcf, as above",
    ("&hugetlbfs_i_mmap_rwsem_key", "hugetlb_fault_mutex"):
        "c0d0381ade79 (5.7-5.18): the era's fault takes i_mmap_rwsem before the fault mutex "
        "(hugetlb-cow-imap replays it; today's fault takes no i_mmap_rwsem)",
}


def lock_order_pairs():
    """Every (outer, inner) class pair the documented order implies."""
    pairs = set()

    def names(n):
        return n if isinstance(n, tuple) else (n,)

    def walk(node, ancestors):
        name, children = node
        for a in ancestors:
            for x in names(a):
                pairs.update((x, y) for y in names(name))
        for c in children:
            walk(c, ancestors + [name])
    for root in LOCK_ORDER_TREE:
        walk(root, [])
    h = HUGETLB_LOCK_ORDER
    pairs.update((h[i], h[j]) for i in range(len(h)) for j in range(i + 1, len(h)))
    return pairs


# -- anon_vma locking ------------------------------------------------------------

def anon_vma_lock_write(anon_vma):
    anon_vma.root.rwsem.down_write()


def anon_vma_unlock_write(anon_vma):
    anon_vma.root.rwsem.up_write()


def anon_vma_lock_read(anon_vma):
    anon_vma.root.rwsem.down_read()


def anon_vma_trylock_read(anon_vma):
    return anon_vma.root.rwsem.down_read_trylock()


def anon_vma_unlock_read(anon_vma):
    anon_vma.root.rwsem.up_read()


ANON_VMA_ASSERT_TITLE = pymm_only_title("WARNING: lockdep_assert_held(&anon_vma->rwsem) failed")


def anon_vma_assert_locked(anon_vma):
    """pymm's own check (the kernel's rmap_walk_anon trusts its caller): a
    "locked" anon walk must hold the anon_vma lock.  Off with pymm_checks."""
    if pymm_checks():
        lockdep.lockdep_assert_held(anon_vma.root.rwsem)


def get_anon_vma(anon_vma):
    atomic_add_return(anon_vma, "refcount", 1)


def put_anon_vma(anon_vma):
    if atomic_add_return(anon_vma, "refcount", -1) == 0:
        root = anon_vma.root
        kasan_poison(anon_vma)
        if root is not anon_vma:
            put_anon_vma(root)


def folio_get_anon_vma(folio):
    """Pin the anon_vma of an anon folio that may be unmapped -- and its
    anon_vma freed by munmap -- at any moment (the caller holds a folio
    reference, e.g. isolation, not a mapping).  As the kernel: trust
    folio->mapping only while the folio is mapped, under rcu_read_lock, and
    take a reference only if the count is not already 0 (anon_vmas are
    SLAB_TYPESAFE_BY_RCU).  Returns the anon_vma or None."""
    with rcu_read():
        anon_vma = folio_anon_vma(folio)
        if anon_vma is None or not folio.folio_mapped():
            return None
        if not atomic_inc_not_zero(anon_vma, "refcount"):
            return None
        if not folio.folio_mapped():        # unmapped meanwhile: maybe ours is the last ref
            put_anon_vma(anon_vma)
            return None
    return anon_vma


def anon_vma_chain_link(vma, avc, anon_vma):
    """Context: anon_vma root rwsem held for write."""
    vma.anon_vma_chain.append(avc)
    start, last = avc.interval()
    anon_vma.rb_root.insert(avc, start, last)


def anon_vma_prepare(vma):
    """Give the VMA an anon_vma before its first anonymous page (__anon_vma_prepare).
    Context: mmap_lock held (read is enough); takes anon_vma->rwsem then
    mm->page_table_lock."""
    if vma.anon_vma is not None:
        return 0
    mm = vma.vm_mm
    might_alloc(GFP_KERNEL)                 # anon_vma_chain_alloc, anon_vma_alloc: GFP_KERNEL
    if should_fail(mm.kernel, "slab"):      # anon_vma_alloc() or the chain node failed
        return -errno.ENOMEM
    anon_vma = AnonVma()
    avc = AnonVmaChain(vma, anon_vma)
    anon_vma_lock_write(anon_vma)
    mm.page_table_lock.lock()
    if vma.anon_vma is None:
        vma.anon_vma = anon_vma
        anon_vma_chain_link(vma, avc, anon_vma)
        anon_vma.num_active_vmas += 1
        anon_vma, avc = None, None
    mm.page_table_lock.unlock()
    if anon_vma is not None:
        anon_vma_unlock_write(anon_vma)
        kasan_poison(avc)
        put_anon_vma(anon_vma)
    else:
        anon_vma_unlock_write(vma.anon_vma)
    return 0


def anon_vma_clone(dst, src, gfp=GFP_KERNEL | __GFP_NOFAIL):
    """Attach dst to every anon_vma src is attached to (split, merge).
    Returns 0, or -ENOMEM when a chain node cannot be allocated (fault
    injection: site ``slab``); then, as the kernel's enomem_failure, dst is
    detached from everything linked so far and dst->anon_vma is NULL -- the
    callers (a merge's dup_anon_vma) rely on that.  ``gfp``: only a caller
    that undoes its work on failure passes plain GFP_KERNEL (dup_anon_vma:
    the merge is given up); the default __GFP_NOFAIL, which failslab never
    fails, is pymm's for the others (split_vma), which have no undo path yet
    -- in the kernel every caller handles -ENOMEM (__split_vma returns it).
    Context: mmap_lock held for write."""
    kernel = dst.vm_mm.kernel
    for pavc in reversed(src.anon_vma_chain):
        anon_vma = pavc.anon_vma
        # the kernel tries GFP_NOWAIT under the anon_vma lock, then GFP_KERNEL
        # unlocked; pymm allocates before locking: the GFP_KERNEL case
        might_alloc(GFP_KERNEL)
        if not gfp & __GFP_NOFAIL and should_fail(kernel, "slab"):   # anon_vma_chain_alloc
            # enomem_failure: with dst->anon_vma still set, unlink_anon_vmas
            # would drop a num_active_vmas count dst never took
            dst.anon_vma = None
            unlink_anon_vmas(dst)
            return -errno.ENOMEM
        avc = AnonVmaChain(dst, anon_vma)
        anon_vma_lock_write(anon_vma)
        anon_vma_chain_link(dst, avc, anon_vma)
        get_anon_vma(anon_vma)
        anon_vma_unlock_write(anon_vma)
    dst.anon_vma = src.anon_vma
    if dst.anon_vma is not None:
        dst.anon_vma.num_active_vmas += 1
    return 0


def anon_vma_fork(vma, pvma):
    """Fork: attach the child VMA to the parent's anon_vmas, then give it its
    own anon_vma under the same root (so COW pages the child creates are found
    from the child only)."""
    if pvma.anon_vma is None:
        return 0
    if should_fail(vma.vm_mm.kernel, "slab"):   # anon_vma_clone's chains or the new anon_vma
        return -errno.ENOMEM                     # (pymm fails before linking anything)
    vma.anon_vma = None
    for pavc in reversed(pvma.anon_vma_chain):
        anon_vma = pavc.anon_vma
        might_alloc(GFP_KERNEL)             # anon_vma_clone's chain (see there)
        avc = AnonVmaChain(vma, anon_vma)
        anon_vma_lock_write(anon_vma)
        anon_vma_chain_link(vma, avc, anon_vma)
        get_anon_vma(anon_vma)
        anon_vma_unlock_write(anon_vma)
    might_alloc(GFP_KERNEL)                 # anon_vma_alloc, anon_vma_chain_alloc
    anon_vma = AnonVma(root=pvma.anon_vma.root)
    anon_vma.parent = pvma.anon_vma
    get_anon_vma(anon_vma.root)
    avc = AnonVmaChain(vma, anon_vma)
    vma.anon_vma = anon_vma
    anon_vma_lock_write(anon_vma)
    anon_vma_chain_link(vma, avc, anon_vma)
    anon_vma.parent.num_children += 1
    anon_vma.num_active_vmas += 1
    anon_vma_unlock_write(anon_vma)
    return 0


def unlink_anon_vmas(vma):
    """Detach a dying VMA from its anon_vmas; chain nodes are freed (poisoned)
    and anon_vmas left with no chains are put.  Context: mmap_lock held for
    write; takes each anon_vma's root rwsem for write."""
    chains = vma.anon_vma_chain
    vma.anon_vma_chain = []
    if vma.anon_vma is not None:
        vma.anon_vma.num_active_vmas -= 1      # before the puts below may free it
    for avc in reversed(chains):
        anon_vma = avc.anon_vma
        anon_vma_lock_write(anon_vma)
        anon_vma.rb_root.remove(avc)
        anon_vma_unlock_write(anon_vma)
        kasan_poison(avc)
        put_anon_vma(anon_vma)


# -- file rmap ---------------------------------------------------------------------

def i_mmap_lock_write(mapping):
    mapping.i_mmap_rwsem.down_write()


def i_mmap_trylock_write(mapping):
    return mapping.i_mmap_rwsem.down_write_trylock()


def i_mmap_unlock_write(mapping):
    mapping.i_mmap_rwsem.up_write()


def i_mmap_lock_read(mapping):
    mapping.i_mmap_rwsem.down_read()


def i_mmap_trylock_read(mapping):
    return mapping.i_mmap_rwsem.down_read_trylock()


def i_mmap_unlock_read(mapping):
    mapping.i_mmap_rwsem.up_read()


def i_mmap_assert_locked(mapping):
    lockdep.lockdep_assert_held(mapping.i_mmap_rwsem)


def i_mmap_assert_write_locked(mapping):
    lockdep.lockdep_assert_held_write(mapping.i_mmap_rwsem)


def vma_interval_tree_insert(vma, mapping):
    mapping.i_mmap.insert(vma, vma.vm_pgoff, vma.vm_pgoff + vma.vma_pages() - 1)


def vma_interval_tree_remove(vma, mapping):
    mapping.i_mmap.remove(vma)


def vma_link_file(vma):
    """Context: mmap_lock held for write; takes i_mmap_rwsem for write."""
    f = vma.vm_file
    if f is not None:
        mapping = f.mapping
        i_mmap_lock_write(mapping)
        vma_interval_tree_insert(vma, mapping)
        i_mmap_unlock_write(mapping)


def unlink_file_vma(vma):
    f = vma.vm_file
    if f is not None:
        mapping = f.mapping
        i_mmap_lock_write(mapping)
        vma_interval_tree_remove(vma, mapping)
        i_mmap_unlock_write(mapping)


# -- mapcounts ---------------------------------------------------------------------

def folio_add_new_anon_rmap(kernel, folio, vma, address):
    """A brand-new anon folio gets its first mapping.  Context: ptl held.
    (The kernel sets the flags and the mapcount with plain stores; pymm keeps
    its atomics: a swapped-in folio reaching here is already in the swap
    cache, where other threads can set its flags.)"""
    set_bits(folio, 'flags', PG_anon | PG_swapbacked)
    folio.mapping = vma.anon_vma
    folio.index = ((address - vma.vm_start) >> 12) + vma.vm_pgoff     # linear_page_index
    atomic_add_return(folio, "_mapcount", 1)
    kernel.nodes[folio.node].vm_stat["NR_ANON_MAPPED"].add(1 << folio.order)
    if vma.vm_flags & VM_LOCKED:                                        # mlock_on_map
        mlock_vma_folio(kernel, folio, vma)


def folio_add_anon_rmap_pte(kernel, folio, vma, address):
    """Another PTE maps an existing anon folio (fork, swap-in, the end of a
    migration).  The first mapping counts the folio in NR_ANON_MAPPED, as
    __folio_add_anon_rmap does.  Context: ptl held."""
    if atomic_add_return(folio, "_mapcount", 1) == 1:
        kernel.nodes[folio.node].vm_stat["NR_ANON_MAPPED"].add(folio.nr_pages())
    mlock_on_map(kernel, folio, vma)


def folio_add_file_rmap_pte(kernel, folio, vma):
    """Context: ptl held, folio locked or its page-cache reference held."""
    atomic_add_return(folio, "_mapcount", 1)
    mlock_on_map(kernel, folio, vma)


def folio_remove_rmap_pte(kernel, folio, vma):
    """A PTE mapping the folio was cleared.  The last mapping takes any mlock
    with it (clear_page_mlock, as page_remove_rmap did before 5.18: exit's
    munlock of that era clears VM_LOCKED before it looks at the pages, so a
    page unmapped meanwhile -- by reclaim -- relies on this).  Context: ptl held."""
    n = atomic_add_return(folio, "_mapcount", -1)
    if n == 0 and folio.flags & PG_anon:
        kernel.nodes[folio.node].vm_stat["NR_ANON_MAPPED"].add(-folio.nr_pages())
    if vma.vm_flags & VM_LOCKED:
        munlock_vma_folio(kernel, folio, vma)
    if n == 0 and folio.flags & PG_mlocked:
        clear_page_mlock(kernel, folio)


def mlock_on_map(kernel, folio, vma):
    if vma.vm_flags & VM_LOCKED:
        mlock_vma_folio(kernel, folio, vma)


# -- rmap walks ----------------------------------------------------------------------

class RmapWalkControl:
    """``struct rmap_walk_control``.  ``rmap_one(folio, vma, address, arg)``
    returns False to stop the walk; ``try_lock`` makes the walk give up
    (setting ``contended``) instead of sleeping on the rmap lock;
    ``anon_lock(folio, rwc)`` replaces the anon_vma locking of an unlocked walk
    (returns the locked anon_vma, or None to skip the walk)."""

    __slots__ = ("arg", "rmap_one", "done", "invalid_vma", "try_lock", "contended", "anon_lock")

    def __init__(self, rmap_one, arg=None, done=None, invalid_vma=None, try_lock=False,
                 anon_lock=None):
        self.rmap_one = rmap_one
        self.arg = arg
        self.done = done
        self.invalid_vma = invalid_vma
        self.try_lock = try_lock
        self.contended = False
        self.anon_lock = anon_lock


def folio_anon_vma(folio):
    m = folio.mapping
    return m if folio.flags & PG_anon else None


def vma_address(folio, vma):
    """The address of ``folio`` in ``vma``, or None if it falls outside."""
    addr = vma.vm_start + ((folio.index - vma.vm_pgoff) << 12)
    if addr < vma.vm_start or addr >= vma.vm_end:
        return None
    return addr


def _walk_vmas(folio, vmas, rwc):
    for vma in vmas:
        address = vma_address(folio, vma)
        if address is None:
            continue
        point("rmap_walk")
        if rwc.invalid_vma is not None and rwc.invalid_vma(vma, rwc.arg):
            continue
        if not rwc.rmap_one(folio, vma, address, rwc.arg):
            break
        if rwc.done is not None and rwc.done(folio):
            break


def anon_vma_interval_tree_foreach(anon_vma, start, last):
    """Yield the VMA of each chain node of ``anon_vma`` overlapping [start,
    last], reading each node only as the walk reaches it, as the kernel's
    iterator does: a walker without the anon_vma lock reads nodes that a
    racing unlink_anon_vmas has freed.  Context: anon_vma->rwsem held."""
    for avc in anon_vma.rb_root.iter(start, last):
        yield avc.vma


def rmap_walk_anon(folio, rwc, locked):
    """Walk every VMA that may map an anon folio.  Context: folio locked;
    with ``locked`` the caller holds the anon_vma lock, else it is taken for
    read here (or trylocked with rwc.try_lock)."""
    anon_vma = folio_anon_vma(folio)
    if anon_vma is None:
        return
    if locked:
        # The anon_vma interval tree changes under anon_vma->rwsem only; a
        # "locked" walk that holds some other lock (say i_mmap_rwsem) walks a
        # tree that munmap/fork are editing.
        anon_vma_assert_locked(anon_vma)
    elif rwc.anon_lock is not None:
        anon_vma = rwc.anon_lock(folio, rwc)
        if anon_vma is None:
            return
    elif rwc.try_lock:
        if not anon_vma_trylock_read(anon_vma):
            rwc.contended = True
            return
    else:
        anon_vma_lock_read(anon_vma)
    start = folio.index
    last = start + folio.nr_pages() - 1
    _walk_vmas(folio, anon_vma_interval_tree_foreach(anon_vma, start, last), rwc)
    if not locked:
        anon_vma_unlock_read(anon_vma)


def folio_lock_anon_vma_read(folio, rwc):
    """Lock the anon_vma of a folio the caller holds no anon_vma reference
    for (reclaim): the anon_vma may be freed as soon as the folio is unmapped
    (the kernel reads it under RCU, SLAB_TYPESAFE_BY_RCU), so check that the
    folio is mapped before using it and again once the lock is held.  Returns
    the anon_vma read-locked, or None.  Context: folio locked."""
    anon_vma = folio_anon_vma(folio)
    if anon_vma is None or not folio.folio_mapped():
        return None
    # root_anon_vma = READ_ONCE(anon_vma->root): RCU keeps its rwsem a valid
    # rwsem even if the anon_vma is freed meanwhile; touch only that.
    root_rwsem = anon_vma.root.rwsem
    if root_rwsem.down_read_trylock():
        if not folio.folio_mapped():
            root_rwsem.up_read()
            return None
        return anon_vma
    if rwc.try_lock:
        rwc.contended = True
        return None
    get_anon_vma(anon_vma)          # atomic_inc_not_zero: it is mapped, so still live
    anon_vma_lock_read(anon_vma)    # may sleep: our reference keeps it
    if not folio.folio_mapped():
        anon_vma_unlock_read(anon_vma)
        put_anon_vma(anon_vma)      # may be the last: then it is freed here
        return None
    put_anon_vma(anon_vma)          # not the last: a VMA mapping the folio links it
    return anon_vma


def rmap_walk_file(folio, rwc, locked):
    """Walk every VMA mapping a file folio.  Context: folio locked; with
    ``locked`` the caller holds i_mmap_rwsem."""
    mapping = folio.mapping
    if mapping is None:
        return
    if locked:
        i_mmap_assert_locked(mapping)
    elif rwc.try_lock:
        if not i_mmap_trylock_read(mapping):
            rwc.contended = True
            return
    else:
        i_mmap_lock_read(mapping)
    start = folio.index
    last = start + folio.nr_pages() - 1
    _walk_vmas(folio, mapping.i_mmap.iter(start, last), rwc)
    if not locked:
        i_mmap_unlock_read(mapping)


def rmap_walk(folio, rwc, locked=False):
    """Context: folio locked; ``locked``: the caller holds the rmap lock."""
    (rmap_walk_anon if folio.flags & PG_anon else rmap_walk_file)(folio, rwc, locked)


def rmap_walk_locked(folio, rwc):
    rmap_walk(folio, rwc, True)


PVMW_SYNC = 1 << 0        # look at the PTE under the ptl only (no lockless peek)
PVMW_MIGRATION = 1 << 1   # look for a migration entry, not a present PTE


def page_vma_mapped_walk(folio, vma, address, migration=False, flags=0):
    """Find the PTE mapping ``folio`` (or, with ``migration``, a migration entry
    for it) at ``address``; return (table, index) with the ptl held, or
    (None, 0).

    Without PVMW_SYNC the PTE is first peeked at without the ptl (map_pte's
    lockless check): a PTE that is none, or maps something else, is skipped
    without taking the lock.  The peek can miss a mapping whose PTE is
    transiently none under another thread's ptl (a COW replacing it, say);
    callers that must not miss one pass PVMW_SYNC: try_to_unmap with
    TTU_SYNC, and remove_migration_pte (a missed migration entry would
    outlive its folio).
    Context: the rmap lock keeps the page tables alive."""
    pt = pte_offset(vma.vm_mm, address)
    if pt is None:
        return None, 0
    i = pte_index(address)

    def match(e):
        return (e is folio) if not migration else (type(e) is MigrationEntry and e.folio is folio)
    if not flags & PVMW_SYNC and not match(pt.ptes[i]):
        return None, 0                    # the lockless peek: nothing of ours here
    pt.ptl.lock()
    if match(pt.ptes[i]):
        return pt, i
    pt.ptl.unlock()
    return None, 0


# -- try_to_unmap / try_to_migrate ---------------------------------------------------

def folio_not_mapped(folio):
    return not folio.folio_mapped()


TTU_SPLIT_HUGE_PMD = 0x4
TTU_IGNORE_MLOCK = 0x8
TTU_SYNC = 0x10
TTU_HWPOISON = 0x20
TTU_BATCH_FLUSH = 0x40
TTU_RMAP_LOCKED = 0x80
TTU_MUNLOCK = 0x100      # the pre-5.18 munlock walk (try_to_munlock)


# -- batched TLB flushing of reclaim (CONFIG_ARCH_WANT_BATCHED_UNMAP_TLB_FLUSH) --------------

class TlbflushUnmapBatch:
    """``struct tlbflush_unmap_batch`` (current->tlb_ubc): the CPUs to flush
    before the unmapped folios may be written out or freed."""

    __slots__ = ("arch", "flush_required", "writable", "stale")

    def __init__(self):
        self.arch = ArchTlbflushUnmapBatch()
        self.flush_required = False
        self.writable = False     # a PTE was dirty: flush before writeback
        # Not kernel state: the (mm, address, folio) unmapped in this batch,
        # which the data-integrity checker lets CPUs read until the flush
        # (MmStruct.user_shadow_stale_begin).
        self.stale = []


def _tlb_ubc():
    t = current()
    ubc = t.tlb_ubc
    if ubc is None:
        ubc = t.tlb_ubc = TlbflushUnmapBatch()
    return ubc


def set_tlb_ubc_flush_pending(mm, writable):
    """A PTE of ``mm`` was cleared without a flush: remember its CPUs in
    this task's batch and count a pending batch in ``mm``
    (mm->tlb_flush_batched: mainline packs the pending and flushed counts in
    one atomic_t; pymm keeps two fields).  Context: ptl held."""
    ubc = _tlb_ubc()
    arch_tlbbatch_add_pending(ubc.arch, mm)
    ubc.flush_required = True
    atomic_add_return(mm, "tlb_flush_pending", 1)
    if writable:
        ubc.writable = True


def try_to_unmap_flush():
    """Flush what this task's batched unmaps left in TLBs (reclaim calls it
    before freeing the folios)."""
    ubc = _tlb_ubc()
    if not ubc.flush_required:
        return
    arch_tlbbatch_flush(ubc.arch)
    ubc.flush_required = False
    ubc.writable = False
    for mm, address, folio in ubc.stale:
        mm.user_shadow_stale_end(address, folio)
    ubc.stale.clear()


def try_to_unmap_flush_dirty():
    """Flush if a dirty PTE was unmapped: before writeback starts, no CPU may
    still write the folio."""
    if _tlb_ubc().writable:
        try_to_unmap_flush()


def flush_tlb_batched_pending(mm):
    """Reclaim may have cleared PTEs of ``mm`` and not flushed yet; a caller
    about to change PTEs -- and to rely on what it sees there -- flushes
    first (3ea277194daa, 4.12, variant "tlb-batched-pending"):

    - no-pending-flush (before 4.12): nothing.  mprotect, munmap or madvise
      find the PTE already none (or a swap entry), so they flush nothing,
      return, and another CPU keeps writing through its stale TLB entry.
    - flush-pending (mainline): if a batch is pending, flush the mm's TLBs.

    Context: the ptl of the range (or mmap_lock) held."""
    if mm.kernel.variant("tlb-batched-pending") == "no-pending-flush":
        return
    pending = mm.tlb_flush_pending
    if pending != mm.tlb_flush_flushed:
        flush_tlb_mm(mm)
        # A batch that became pending during the flush stays pending.
        mm.tlb_flush_flushed = pending


def try_to_migrate_one(folio, vma, address, flags):
    """Replace the PTE mapping ``folio`` with a migration entry (the rss
    counters keep counting it: the page is only in transit)."""
    if folio.flags & PG_hugetlb:         # the folio_test_hugetlb branch
        return hugetlb_ops.hugetlb_try_to_unmap_one(folio, vma, address, flags, True)
    k = vma.vm_mm.kernel
    pt, i = page_vma_mapped_walk(folio, vma, address,
                                 flags=PVMW_SYNC if flags & TTU_SYNC else 0)
    if pt is None:
        return True
    bits = pt.bits[i]
    pt.ptes[i] = MigrationEntry(folio, bool(bits & _PAGE_RW))
    pt.bits[i] = 0
    # ptep_clear_flush: the copy must not miss a store still in a TLB
    flush_tlb_page(vma, address)
    if bits & _PAGE_DIRTY:
        set_bits(folio, "flags", PG_dirty)
    folio_remove_rmap_pte(k, folio, vma)
    pt.ptl.unlock()
    folio_put(folio, k)          # the reference the PTE held
    return True


def try_to_migrate(folio, flags=0):
    """Unmap every mapping of ``folio``, leaving migration entries.  Context:
    folio locked; with TTU_RMAP_LOCKED the caller holds the rmap lock."""
    rmap_walk(folio, RmapWalkControl(try_to_migrate_one, arg=flags, done=folio_not_mapped),
              bool(flags & TTU_RMAP_LOCKED))


def try_to_unmap_one(folio, vma, address, flags):
    """Unmap one mapping of ``folio`` (reclaim), or with TTU_MUNLOCK only
    re-mlock it where a VMA is still VM_LOCKED (try_to_munlock).

    An anonymous folio must be in the swap cache: its PTE becomes the swap
    entry.  A VM_LOCKED VMA keeps its mapping and mlocks the folio instead
    (reclaim then stops the walk; the munlock walk goes on counting).  How
    that mlock is ordered against munlock and zap is SCENARIOS.md section E,
    variant "rmap-mlock":

    - mmap-trylock (<= 4.3): drop the ptl, mmap_read_trylock the VMA's mm, and
      if VM_LOCKED is still set, mlock.  Exit's munlock takes no mmap_lock
      and truncation's zap none either, so the mlock can land after munlock
      cleared PG_mlocked, or on a page the zap just unmapped.
    - pte-lock (b87537d9): TTU_MUNLOCK skips VMAs that are not VM_LOCKED; the
      mlock happens under the ptl, which munlock's page collection (after it
      cleared VM_LOCKED) and the zap's rmap removal also take.

    Returns False to stop the walk.  Context: folio locked (and isolated);
    the rmap lock held by the walk."""
    if folio.flags & PG_hugetlb:         # the folio_test_hugetlb branch (memory failure)
        return hugetlb_ops.hugetlb_try_to_unmap_one(folio, vma, address, flags, False)
    k = vma.vm_mm.kernel
    pte_lock = k.variant("rmap-mlock") == "pte-lock"
    if pte_lock and flags & TTU_MUNLOCK and not vma.vm_flags & VM_LOCKED:
        return True            # munlock has nothing to gain from examining un-locked vmas
    pt, i = page_vma_mapped_walk(folio, vma, address,
                                 flags=PVMW_SYNC if flags & TTU_SYNC else 0)
    if pt is None:
        return True
    if not flags & TTU_IGNORE_MLOCK:
        if vma.vm_flags & VM_LOCKED:
            if pte_lock:
                # Holding pte lock, we do *not* need mmap_lock here
                _rmap_mlock(k, folio, flags, vma)
                pt.ptl.unlock()
                return bool(flags & TTU_MUNLOCK)
            pt.ptl.unlock()
            point("try_to_unmap_one:out_mlock")
            # We cannot wait for mmap_lock: we hold the rmap lock.  If the
            # trylock fails, the mapping stays and a later scan may mlock it.
            if mmap_read_trylock(vma.vm_mm):
                mlocked = bool(vma.vm_flags & VM_LOCKED)
                if mlocked:
                    _rmap_mlock(k, folio, flags, vma)
                mmap_read_unlock(vma.vm_mm)
                if mlocked:
                    return bool(flags & TTU_MUNLOCK)
            return True
        if flags & TTU_MUNLOCK:
            pt.ptl.unlock()
            return True
    mm = vma.vm_mm
    if folio.flags & PG_anon and not folio.flags & PG_swapbacked:
        # MADV_FREE'd (lazyfree): discard it if nobody redirtied it and
        # only its mappings and our isolation hold it; otherwise the lazy
        # free is cancelled and the folio is swap-backed again.  As
        # mainline: clear and flush first (ptep_clear_flush), so that no CPU
        # can redirty it through its TLB after the check; put it back if the
        # check fails.
        bits = pt.bits[i]
        pt.ptes[i] = None
        pt.bits[i] = 0
        flush_tlb_page(vma, address)
        if bits & _PAGE_DIRTY:
            set_bits(folio, "flags", PG_dirty)
        if folio.flags & PG_dirty or folio._refcount != 1 + folio._mapcount:
            pt.ptes[i] = folio
            pt.bits[i] = bits
            set_bits(folio, "flags", PG_swapbacked)
            pt.ptl.unlock()
            return False
        pt.nr -= 1
        mm.rss_stat[MM_ANONPAGES].add(-1)
        mm.user_shadow_drop(address, address + 4096)   # the process now reads zeros
        folio_remove_rmap_pte(k, folio, vma)
        pt.ptl.unlock()
        folio_put(folio, k)
        return True
    if folio.flags & PG_anon and folio.swap is None:   # reclaim adds anon folios to swap first
        pt.ptl.unlock()
        return False
    bits = pt.bits[i]
    # Nuke the page table entry: with TTU_BATCH_FLUSH, ptep_get_and_clear and
    # a flush later (set_tlb_ubc_flush_pending: another CPU may write through
    # its TLB until try_to_unmap_flush); else ptep_clear_flush.
    pt.ptes[i] = None
    pt.bits[i] = 0
    if flags & TTU_BATCH_FLUSH:
        set_tlb_ubc_flush_pending(mm, bool(bits & _PAGE_DIRTY))
        _tlb_ubc().stale.append((mm, address, folio))      # (the checker's)
        mm.user_shadow_stale_begin(address, folio)
    else:
        flush_tlb_page(vma, address)
    if bits & _PAGE_DIRTY:
        set_bits(folio, "flags", PG_dirty)
    if folio.flags & PG_anon:
        entry = folio.swap
        swap_duplicate(entry)
        pt.ptes[i] = entry         # still a non-none entry: pt.nr unchanged
        mm.rss_stat[MM_ANONPAGES].add(-1)
        mm.rss_stat[MM_SWAPENTS].add(1)
    else:
        pt.nr -= 1
        mm.rss_stat[mm_counter(folio)].add(-1)
    folio_remove_rmap_pte(k, folio, vma)
    pt.ptl.unlock()
    folio_put(folio, k)
    return True


def _rmap_mlock(kernel, folio, flags, vma):
    """The mlock try_to_unmap_one does for a VM_LOCKED mapping.  Reclaim's
    folio is isolated, and an isolated folio's mlock_count is not touched
    (__mlock_folio: "nothing more we can do while it's off LRU"): only
    PG_mlocked is set (mlock_vma_page).  The munlock walk recounts: exit's
    munlock zeroed mlock_count, and each VM_LOCKED mapping it finds adds one."""
    mlock_vma_page(kernel, folio, vma, count=bool(flags & TTU_MUNLOCK))


def try_to_unmap(folio, flags=0):
    """Unmap ``folio`` everywhere (reclaim).  Context: folio locked; the
    caller holds no anon_vma reference, so the anon_vma is locked through
    folio_lock_anon_vma_read."""
    rmap_walk(folio, RmapWalkControl(try_to_unmap_one, arg=flags, done=folio_not_mapped,
                                     anon_lock=folio_lock_anon_vma_read),
              bool(flags & TTU_RMAP_LOCKED))


def try_to_munlock(folio):
    """After munlock cleared PG_mlocked, mlock the folio again for every VMA
    that still maps it VM_LOCKED (the <= 5.17 munlock; exit_mmap's munlock
    phases use it).  Context: folio locked and isolated."""
    rmap_walk(folio, RmapWalkControl(try_to_unmap_one, arg=TTU_MUNLOCK, done=folio_not_mapped,
                                     anon_lock=folio_lock_anon_vma_read))


def remove_migration_pte(folio, vma, address, src):
    """Map the new ``folio`` where a migration entry for ``src`` sits."""
    if folio.flags & PG_hugetlb:
        return hugetlb_ops.hugetlb_remove_migration_pte(folio, vma, address, src)
    k = vma.vm_mm.kernel
    # PVMW_SYNC | PVMW_MIGRATION, as mainline: a migration entry must not be
    # missed (it would outlive src), so no lockless peek here
    pt, i = page_vma_mapped_walk(src, vma, address, migration=True, flags=PVMW_SYNC)
    if pt is None:
        return True
    e = pt.ptes[i]
    folio_get(folio)
    if folio.flags & PG_anon:
        folio_add_anon_rmap_pte(k, folio, vma, address)
    else:
        folio_add_file_rmap_pte(k, folio, vma)
    pt.ptes[i] = folio
    pt.bits[i] = ((_PAGE_RW | _PAGE_DIRTY) if e.writable else 0) | \
        (0 if vma.vm_flags & VM_ACCESS_FLAGS else _PAGE_PROTNONE)
    pt.ptl.unlock()
    return True


RMP_LOCKED = 1


def remove_migration_ptes(src, dst, flags=0):
    """Replace every migration entry for ``src`` with a mapping of ``dst``
    (dst == src restores a failed migration).  The walk goes over dst's rmap,
    which the migration copied from src."""
    rmap_walk(dst, RmapWalkControl(remove_migration_pte, arg=src), bool(flags & RMP_LOCKED))


internal.define(__name__, globals())   # callers across a cycle use these through internal
