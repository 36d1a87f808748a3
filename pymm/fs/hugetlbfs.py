"""hugetlbfs (fs/hugetlbfs/inode.c): files of huge pages, their mmap,
truncation, hole punching and preallocation; and the anonymous hugetlb
files behind MAP_HUGETLB.

Truncation and hole punch must leave no process mapping a removed page, and
must never fail because of lock contention.  The order for hugetlbfs folios
is FM -> VL -> IMAP -> folio_lock, so:

1. inode lock, IMAP (write), ``hugetlb_vmdelete_list``: for every VMA,
   *try* its vma_lock (it ranks above IMAP) and unmap the range, or skip
   the VMA when a fault holds it;
2. ``remove_inode_hugepages``: per folio, the fault mutex (no new
   mappings), then ``remove_inode_single_folio``: if the folio is still
   mapped (a skipped VMA, or a fault that came in after step 1),
   ``hugetlb_unmap_file_folio`` unmaps it again, dropping IMAP and taking
   the vma_lock first when the trylock fails; then the folio leaves the page
   cache.

Whether "still mapped" is tested before or after taking the folio lock is
the ``hugetlb-truncate`` variant (SCENARIOS.md D): without the lock, a
migration that has replaced the PTEs by migration entries makes the folio
look unmapped, then restores them (its copy fails on our reference) -- and
the folio is deleted from the page cache mapped ("Bad page cache").
"""
import errno

from ..constants import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE
from ..debug import stackdepot
from ..debug.report import current_kernel, pymm_checks, report
from ..locking import RwSemaphore, lockdep
from ..mm import hugetlb as H
from ..mm import internal
from ..mm.atomic import atomic_add_return, clear_bits
from ..mm.filemap import filemap_get_folio, folio_lock, folio_lock_nested, folio_unlock
from ..mm.mm_types import PG_dirty, PG_uptodate, VM_HUGETLB, VM_MAYSHARE, VM_SHARED, VM_WRITE
from ..mm.page_alloc import _pfn, folio_put
from ..mm.rmap import i_mmap_lock_write, i_mmap_unlock_write
from ..sched import point
from .shmem import MAX_LFS_FILESIZE, File

HPAGE_SIZE = H.HPAGE_SIZE
LLONG_MAX = (1 << 63) - 1
ULONG_MAX = (1 << 64) - 1


class HugetlbFile(File):
    """A hugetlbfs file (or the unlinked one behind an anonymous MAP_HUGETLB
    mapping: ``anon``).  ``resv_map`` is the inode's reservation map;
    ``fault_key`` numbers the file for the fault mutex hash."""

    def __init__(self, kernel, name, size, anon=False):
        super().__init__(kernel, name, size, hugetlb=True)
        # each filesystem type has its own i_rwsem class (lockdep prints
        # "&sb->s_type->i_mutex_key#N"); hugetlbfs takes it under mmap_lock
        # in mmap, which tmpfs never does
        self.inode.i_rwsem = RwSemaphore("&sb->s_type->i_mutex_key#hugetlbfs")
        self.anon = anon
        self.resv_map = H.ResvMap()
        self.fault_key = kernel.hstate.new_file_key()
        kernel.hstate.inodes.add(self)

    # -- user API ----------------------------------------------------------------------
    def ftruncate(self, size):
        if type(size) is not int or size < 0 or size > MAX_LFS_FILESIZE:
            raise OSError(errno.EINVAL, f"ftruncate: invalid size {size!r}")
        if size & (HPAGE_SIZE - 1):
            raise OSError(errno.EINVAL, "ftruncate: a hugetlbfs size must be a multiple of 2 MiB")
        err = self.kernel.run_syscall(self.hugetlbfs_setattr, size)
        if err:
            raise OSError(-err, f"ftruncate: {errno.errorcode.get(-err, err)}")
        return 0

    def shmem_setattr(self, size):
        return self.hugetlbfs_setattr(size)

    def vfs_fallocate(self, mode, offset, length):
        return hugetlbfs_fallocate(self, mode, offset, length)

    def fault(self, vmf):
        raise AssertionError("hugetlb_vm_op_fault: hugetlb VMAs fault through hugetlb_fault")

    # -- inside the kernel -----------------------------------------------------------------
    def hugetlbfs_setattr(self, size):
        """Context: takes the inode lock (write)."""
        inode = self.inode
        inode.i_rwsem.down_write()
        try:
            # whatever the old size: pages fallocated beyond the new EOF go
            hugetlb_vmtruncate(self, size)
        finally:
            inode.i_rwsem.up_write()
        return 0


def hugetlb_file_setup(kernel, size):
    """The unlinked hugetlbfs file behind an anonymous MAP_HUGETLB mapping."""
    return HugetlbFile(kernel, "anon_hugepage", size, anon=True)


def hugetlbfs_evict_inode(file):
    """The last mapping of an anonymous hugetlb file went: free its pages and
    reservations."""
    remove_inode_hugepages(file, 0, LLONG_MAX)
    file.kernel.hstate.inodes.discard(file)


# -- mmap ------------------------------------------------------------------------------------

def hugetlbfs_file_mmap_prepare(file, pgoff, length, vm_flags):
    """Check and reserve for a new mapping of ``length`` bytes at page offset
    ``pgoff``: returns (0 or -errno, the private reservation map or None).
    A writable mapping beyond i_size grows the file.  Context: mmap_lock
    held for write; takes the inode lock."""
    if pgoff & (H.PAGES_PER_HUGE_PAGE - 1):
        return -errno.EINVAL, None
    inode = file.inode
    inode.i_rwsem.down_write()
    try:
        f = pgoff >> H.HUGETLB_PAGE_ORDER
        err, resv = H.hugetlb_reserve_pages(file, f, f + (length >> H.HPAGE_SHIFT), vm_flags)
        if err:
            return err, None
        end = length + (pgoff << 12)
        if vm_flags & VM_WRITE and inode.i_size < end:
            inode.i_size = end
        return 0, resv
    finally:
        inode.i_rwsem.up_write()


def hugetlbfs_file_mmap(vma, resv):
    """Finish a new hugetlb VMA: its vma_lock (shared) or its reservation map
    and ownership (private)."""
    if vma.vm_flags & VM_MAYSHARE:
        H.hugetlb_vma_lock_alloc(vma)
    else:
        vma.vm_private_data = H.HugetlbPrivate(resv, H.HPAGE_RESV_OWNER if resv is not None else 0)


# -- the page cache ------------------------------------------------------------------------------

def hugetlb_delete_from_page_cache(kernel, folio):
    """Take a locked folio out of the page cache and drop the cache's
    reference.  Deleting a folio that is still mapped is the kernel's
    filemap_unaccount_folio "Bad page cache" bug.  Context: folio locked."""
    if folio.folio_mapped():
        _bad_page_cache(kernel, folio)
    clear_bits(folio, "flags", PG_dirty | PG_uptodate)
    mapping = folio.mapping
    mapping.xa_lock.lock()
    if mapping.i_pages.get(folio.index) is folio:
        del mapping.i_pages[folio.index]
        mapping.nrpages -= 1
    folio.mapping = None
    mapping.xa_lock.unlock()
    folio_put(folio, kernel)


def _bad_page_cache(kernel, folio):
    import threading
    t = threading.current_thread()
    title = "BUG: Bad page cache"
    text = "\n".join([
        f"BUG: Bad page cache in process {t.name}  pfn:{_pfn(kernel, folio):05x}",
        f"page: refcount:{folio._refcount} mapcount:{folio._mapcount} index:{folio.index:#x} "
        f"node:{folio.node} order:{folio.order}",
        "page dumped because: still mapped when deleted",
        "Likely cause: the mapped check raced with a migration that had the folio's PTEs",
        "replaced by migration entries and restored them afterwards.",
        "Call Trace:", stackdepot.format(stackdepot.save(3), "  ")])
    report("bad-page-state", title, text, kernel=kernel, data={"reason": "still mapped when deleted"})


def hugetlbfs_migrate_folio(kernel, dst, src):
    """Move the page-cache slot from ``src`` to ``dst`` (migrate_huge_page_move_mapping).
    Returns 0 or -EAGAIN.  Context: both folios locked, src unmapped."""
    mapping = src.mapping
    mapping.xa_lock.lock()
    if mapping.i_pages.get(src.index) is not src or src._refcount != 2:
        mapping.xa_lock.unlock()
        return -errno.EAGAIN
    mapping.i_pages[src.index] = dst
    atomic_add_return(dst, "_refcount", 1)       # the page cache's reference moves
    atomic_add_return(src, "_refcount", -1)
    mapping.xa_lock.unlock()
    return 0


# -- truncation and hole punch ------------------------------------------------------------------

def vma_offset_start(vma, start):
    offset = (start - vma.vm_pgoff) << 12 if vma.vm_pgoff < start else 0
    return vma.vm_start + offset


def vma_offset_end(vma, end):
    if not end:
        return vma.vm_end
    return min(((end - vma.vm_pgoff) << 12) + vma.vm_start, vma.vm_end)


def hugetlb_vmdelete_list(mapping, start, end):
    """Unmap page offsets [start, end) (end 0: to the end) from every VMA,
    skipping VMAs whose vma_lock is held (a fault in progress): the
    per-folio pass will catch what they map.  Context: i_mmap_rwsem held
    for write."""
    for vma in mapping.i_mmap.iter(start, end - 1 if end else ULONG_MAX):
        if not H.hugetlb_vma_trylock_write(vma):
            continue
        point("hugetlb_vmdelete_list")
        H.unmap_hugepage_range(vma, vma_offset_start(vma, start), vma_offset_end(vma, end))
        H.hugetlb_vma_unlock_write(vma)


def hugetlb_vma_maps_pfn(vma, addr, folio):
    """Does ``vma`` map ``folio`` at ``addr``?  Context: i_mmap_rwsem held."""
    ptep = H.hugetlb_walk(vma, addr)
    return ptep is not None and ptep[0].entries[ptep[1]] is folio


def hugetlb_unmap_file_folio(file, folio, index):
    """Unmap ``folio`` (huge index ``index``) from every VMA, whatever
    contention: i_mmap_rwsem (write) and, per VMA mapping it, a vma_lock
    trylock; when that fails, pin the vma_lock, drop i_mmap_rwsem, take the
    vma_lock then i_mmap_rwsem in order, and unmap if the VMA (still there)
    still maps the folio; then look again.
    Context: the hugetlb fault mutex for (file, index) held, so no new
    mapping of the folio can appear; no folio lock held."""
    mapping = file.mapping
    start = index * H.PAGES_PER_HUGE_PAGE
    end = start + H.PAGES_PER_HUGE_PAGE
    i_mmap_lock_write(mapping)
    while True:                                              # retry
        wait_for = None
        for vma in mapping.i_mmap.iter(start, end - 1):
            v_start = vma_offset_start(vma, start)
            if not hugetlb_vma_maps_pfn(vma, v_start, folio):
                continue
            if not H.hugetlb_vma_trylock_write(vma):
                wait_for = vma.vm_private_data
                if isinstance(wait_for, H.HugetlbVmaLock):
                    atomic_add_return(wait_for, "refs", 1)   # kref_get: it outlives the VMA
                else:
                    wait_for = _private_vma_lock(wait_for)
                break
            H.unmap_hugepage_range(vma, v_start, vma_offset_end(vma, end))
            H.hugetlb_vma_unlock_write(vma)
        i_mmap_unlock_write(mapping)
        if wait_for is None:
            return
        point("hugetlb_unmap_file_folio")
        if isinstance(wait_for, H.HugetlbVmaLock):
            # open-coded: the lock may no longer be attached to a VMA
            vma_lock = wait_for
            vma_lock.rw_sema.down_write()
            i_mmap_lock_write(mapping)
            vma = vma_lock.vma
            if vma is None:                # the VMA went away while we waited
                vma_lock.rw_sema.up_write()
                H.hugetlb_vma_lock_release(vma_lock)
                continue
            v_start = vma_offset_start(vma, start)
            if hugetlb_vma_maps_pfn(vma, v_start, folio):
                H.unmap_hugepage_range(vma, v_start, vma_offset_end(vma, end))
            H.hugetlb_vma_lock_release(vma_lock)
            H.hugetlb_vma_unlock_write(vma)
        else:
            # a private owner's reservation-map lock (hugetlb-unmap-private):
            # the resv_map has no way back to the VMA, so wait for the
            # holder with the map pinned, then look again
            if isinstance(wait_for, ResvMapAsVmaLock):
                wait_for.down_write()            # mainline: the overlay's rwsem
            resv_map = wait_for.resv_map
            sem = resv_map.rw_sema
            sem.down_write()
            sem.up_write()
            atomic_add_return(resv_map, "refs", -1)      # kref_put(&resv_map->refs, ...)
            i_mmap_lock_write(mapping)


class ResvMapAsVmaLock:
    """``(struct hugetlb_vma_lock *)vma->vm_private_data`` of a private VMA
    that owns its reservation: the pointer is ``resv_map | HPAGE_RESV_OWNER``
    (bit 0), and mainline's hugetlb_unmap_file_folio uses it as a vma_lock
    (``hugetlb-unmap-private`` ``resv-map-as-vma-lock``).  What each access
    does on x86-64, with ``struct hugetlb_vma_lock { struct kref refs;
    struct rw_semaphore rw_sema; ...}`` laid over ``struct resv_map { struct
    kref refs; spinlock_t lock; struct list_head regions; ...}`` one byte in:

    - ``kref_get(&vma_lock->refs)`` is refcount_inc() of the 4 bytes at
      resv_map+1: the upper three bytes of resv_map->refs and the first
      (the locked) byte of resv_map->lock.  With fewer than 256 VMAs
      sharing the map and its lock free, it reads 0: "refcount_t: addition
      on 0; use-after-free." and the saturation value written back sets the
      spinlock's locked byte (the next region_* call on this map spins for
      ever).  KASAN cannot see the access (it is in bounds): pymm reports
      the overlay itself as its own check (``pymm_only``);
    - ``down_write(&vma_lock->rw_sema)`` works on resv_map bytes 9-: a lock
      lockdep never registered ("INFO: trying to register non-static
      key."), whose count overlaps the regions list's pointers (non-zero:
      the writer sleeps for ever in the kernel).

    Simplification: pymm reports both, then does what its fix does (pins
    the map, waits for the holder of the real &resv_map->rw_sema, looks
    again) instead of corrupting the map and hanging."""

    __slots__ = ("resv_map",)

    def __init__(self, resv_map):
        self.resv_map = resv_map

    def kref_get(self, kernel):
        rm = self.resv_map
        if pymm_checks(kernel):
            report("data-corruption",
                   "BUG: kref_get() of a hugetlb_vma_lock that is a tagged resv_map pointer",
                   "hugetlb_unmap_file_folio: vma->vm_private_data of a private VMA is "
                   "resv_map|HPAGE_RESV_OWNER, not a struct hugetlb_vma_lock: the increment "
                   "lands at resv_map+1 (resv_map->refs, resv_map->lock), in bounds, "
                   "where KASAN cannot see it",
                   kernel=kernel, data={"pymm_only": True})
        if (rm.refs >> 8) == 0 and rm.lock.owner is None:
            report("use-after-free", "refcount_t: addition on 0; use-after-free.",
                   "WARNING: lib/refcount.c refcount_warn_saturate\n"
                   "kref_get() in hugetlb_unmap_file_folio read 0 at resv_map+1 "
                   f"(resv_map->refs = {rm.refs}, resv_map->lock free)",
                   kernel=kernel)

    def down_write(self):
        lockdep.register_non_static_key("&vma_lock->rw_sema at resv_map+9 (a tagged resv_map)")


def _private_vma_lock(priv):
    """What hugetlb_unmap_file_folio pins and waits on when the vma_lock
    trylock of a private VMA that owns its resv_map fails
    (``hugetlb-unmap-private``):

    - ``resv-map-as-vma-lock`` (mainline since bf4916922c60, 6.7, which
      made hugetlb_vma_trylock_write try &resv_map->rw_sema for such VMAs;
      the failure path still takes vm_private_data for a vma_lock):
      the tagged pointer as a vma_lock (``ResvMapAsVmaLock``);
    - ``wait-on-resv-map`` (pymm's proposed fix, the default): pin the
      resv_map itself (kref_get(&resv_map->refs)), then wait on its
      rw_sema; the map cannot lead back to the VMA, so look again after.
    Context: i_mmap_rwsem held for write."""
    rm = priv.resv_map
    kernel = current_kernel()
    if kernel.variant("hugetlb-unmap-private") == "resv-map-as-vma-lock":
        overlay = ResvMapAsVmaLock(rm)
        overlay.kref_get(kernel)
        atomic_add_return(rm, "refs", 1)     # the kref the fixed path drops after the wait
        return overlay
    atomic_add_return(rm, "refs", 1)         # kref_get(&resv_map->refs)
    return priv


def hugetlb_unmap_file_page(file, page, index):
    """The 6.1 name (40549ba8f8e0, "hugetlb: use new vma_lock for pmd
    sharing synchronization") of hugetlb_unmap_file_folio, which the folio
    conversion renamed in 6.2: the 6.1-era truncation and hole punch
    (``hugetlb-truncate`` ``mapped-check-unlocked``) call it by that name.
    pymm has no tail pages, so the page is its folio."""
    hugetlb_unmap_file_folio(file, page, index)


def remove_inode_single_folio(file, folio, index, truncate_op):
    """Remove one folio from the file; returns True.

    ``hugetlb-truncate``:

    - ``mapped-check-unlocked`` (4aae8d1c051e .. 2025) reads the mapcount
      without the folio lock, then unmaps;
    - ``lock-folio-first`` (pymm's earlier fix) decides "still mapped?" with
      the folio locked, but unlocks it around the unmap and checks again;
    - ``lock-folio-across-unmap`` (7b7387650dcf, mainline) locks the folio
      before the check and keeps it across hugetlb_unmap_file_folio.

    A migration holds the folio lock for as long as the folio's PTEs are
    migration entries, so under the lock the answer cannot be a transient
    zero.  7b7387650dcf nests i_mmap_rwsem and the vma_lock *inside* the
    folio lock, against the hugetlbfs order (FM -> vma_lock -> i_mmap_rwsem
    -> folio_lock).  It is safe: every path that takes i_mmap_rwsem before
    a hugetlbfs folio lock (hole punch's partial-page zeroing) holds the
    inode lock, which we hold, and every fault that holds a vma_lock and
    waits for *this* folio holds the fault mutex of its index, which we
    hold.  pymm tells lockdep so by taking the folio in subclass 1
    (``folio_lock#hugetlbfs/1``): a lock in a role no path of the other
    order can meet -- what ``mutex_lock_nested(&inode->i_rwsem,
    I_MUTEX_PARENT)`` does for directories.  The pair is listed in
    rmap.LOCK_ORDER_EXCEPTIONS.
    Context: the fault mutex for (file, index) and the inode lock held."""
    k = file.kernel
    v = k.variant("hugetlb-truncate")
    if v == "lock-folio-across-unmap":
        folio_lock_nested(folio, 1)
        if folio.folio_mapped():
            hugetlb_unmap_file_folio(file, folio, index)
    elif v == "lock-folio-first":
        folio_lock(folio)
        while folio.folio_mapped():
            folio_unlock(folio)
            hugetlb_unmap_file_folio(file, folio, index)
            folio_lock(folio)
    else:
        point("remove_inode_single_folio")
        if folio.folio_mapped():
            hugetlb_unmap_file_page(file, folio, index)      # the 6.1 code: its name then
        folio_lock(folio)
    hugetlb_delete_from_page_cache(k, folio)
    if not truncate_op:
        H.hugetlb_unreserve_pages(file, index, index + 1, 1)
    folio_unlock(folio)
    return True


def remove_inode_hugepages(file, lstart, lend):
    """Remove the page-cache folios in byte range [lstart, lend) (lend
    LLONG_MAX: truncation, which then drops the reservations beyond lstart
    too; otherwise a hole punch).  Context: the inode lock held (or the file
    unreachable); takes each folio's fault mutex."""
    k = file.kernel
    mapping = file.mapping
    truncate_op = lend == LLONG_MAX
    first, last = lstart >> 12, lend >> 12
    freed = 0
    for idx in sorted(i for i in list(mapping.i_pages) if first <= i < last):
        folio = filemap_get_folio(mapping, idx)          # the batch's reference
        if folio is None:
            continue
        hidx = folio.index >> H.HUGETLB_PAGE_ORDER
        fm = H.hugetlb_fault_mutex(k, file, hidx)
        fm.lock()
        if folio.mapping is mapping and remove_inode_single_folio(file, folio, hidx, truncate_op):
            freed += 1
        fm.unlock()
        folio_put(folio, k)
    if truncate_op:
        H.hugetlb_unreserve_pages(file, lstart >> H.HPAGE_SHIFT, H.LONG_MAX, freed)


def hugetlb_wait_for_faults(file, old_size, offset):
    """``hugetlb-fault-truncate`` ``wait-for-faults`` (pymm's proposed fix,
    not mainline): wait for every fault in flight on the indices being
    truncated by taking and releasing each one's fault mutex.

    A fault checks i_size once, under its fault mutex, before it allocates
    (hugetlb_no_page; the second check under the PTE lock went with
    fa27759af4a6), and remove_inode_hugepages takes a fault mutex only for
    the folios it finds.  So a fault that passed the check and found its
    index reserved (alloc_hugetlb_folio's map_chg 0) may still be allocating
    when hugetlb_unreserve_pages deletes the entry and gives the reservation
    back: it then dequeues a reserved page anyway (resv_huge_pages counted
    down twice) and vma_commit_reservation adds the entry back, with the
    folio beyond the new i_size.  Called after i_size_write: a fault holding
    one of these mutexes finishes first (its folio is in the page cache and
    remove_inode_hugepages removes it, counted in ``freed``); one that takes
    it after us reads the new i_size and gets SIGBUS.

    Which indices: those a fault can have passed the i_size check for,
    [offset, old_size) -- i_size only grew since the last shrink, which
    waited for the faults before it.  Bounded by the table: a range as long
    as the table takes and releases each of its mutexes once.  Order: inode
    lock -> fault mutex, as remove_inode_hugepages and fallocate take them;
    the mutexes one at a time, no other lock held.
    Context: inode lock held (write)."""
    k = file.kernel
    table = k.hstate.hugetlb_fault_mutex_table
    start = offset >> H.HPAGE_SHIFT
    end = (old_size + HPAGE_SIZE - 1) >> H.HPAGE_SHIFT
    if end <= start:
        return
    if end - start >= len(table):
        slots = range(len(table))
    else:
        slots = sorted({H.hugetlb_fault_mutex_hash(file, i) for i in range(start, end)})
    for slot in slots:
        table[slot].lock()
        table[slot].unlock()


def hugetlb_vmtruncate(file, offset):
    """Shrink to ``offset`` (huge aligned).  ``hugetlb-fault-truncate``:
    ``unsynced`` (mainline since 188a39725ad7 and fa27759af4a6, 6.1) does
    not wait for faults in flight on the range; ``wait-for-faults`` (pymm's
    proposed fix) does (hugetlb_wait_for_faults).
    Context: inode lock held (write)."""
    inode, mapping = file.inode, file.mapping
    pgoff = offset >> 12
    old_size = inode.i_size
    inode.i_size = offset
    i_mmap_lock_write(mapping)
    if mapping.i_mmap:
        hugetlb_vmdelete_list(mapping, pgoff, 0)
    i_mmap_unlock_write(mapping)
    if file.kernel.variant("hugetlb-fault-truncate") == "wait-for-faults":
        hugetlb_wait_for_faults(file, old_size, offset)
    remove_inode_hugepages(file, offset, LLONG_MAX)


def hugetlbfs_zero_partial_page(file, start, end):
    """Zero [start, end) within one huge page, under its folio lock.
    Context: i_mmap_rwsem held for write (hole punch): IMAP -> folio_lock."""
    folio = H.filemap_lock_hugetlb_folio(file, start >> H.HPAGE_SHIFT)
    if folio is None:
        return
    s = start & (HPAGE_SIZE - 1)
    e = end & (HPAGE_SIZE - 1) or HPAGE_SIZE
    if folio.data is not None:
        folio.write_bytes(s, bytes(e - s))
    folio_unlock(folio)
    folio_put(folio, file.kernel)


def hugetlbfs_punch_hole(file, offset, length):
    """FALLOC_FL_PUNCH_HOLE: zero the partial huge pages at the edges, remove
    the whole ones.  Returns 0.  Context: takes the inode lock, then
    i_mmap_rwsem (write)."""
    inode, mapping = file.inode, file.mapping
    hole_start = (offset + HPAGE_SIZE - 1) & H.HPAGE_MASK
    hole_end = (offset + length) & H.HPAGE_MASK
    inode.i_rwsem.down_write()
    try:
        i_mmap_lock_write(mapping)
        if offset < hole_start:
            hugetlbfs_zero_partial_page(file, offset, min(offset + length, hole_start))
        if hole_end > hole_start and mapping.i_mmap:
            hugetlb_vmdelete_list(mapping, hole_start >> 12, hole_end >> 12)
        if offset + length > hole_end and offset + length > hole_start:
            hugetlbfs_zero_partial_page(file, hole_end, offset + length)
        i_mmap_unlock_write(mapping)
        if hole_end > hole_start:
            remove_inode_hugepages(file, hole_start, hole_end)
    finally:
        inode.i_rwsem.up_write()
    return 0


class _PseudoVma:
    """The pseudo VMA hugetlbfs_fallocate allocates through."""

    __slots__ = ("vm_mm", "vm_file", "vm_flags", "vm_start", "vm_end", "vm_pgoff",
                 "vm_private_data", "vm_policy")

    def __init__(self, kernel, file):
        class _Mm:
            __slots__ = ("kernel",)
        self.vm_mm = _Mm()
        self.vm_mm.kernel = kernel
        self.vm_file = file
        self.vm_flags = VM_HUGETLB | VM_MAYSHARE | VM_SHARED
        self.vm_start = 0
        self.vm_end = H.LONG_MAX
        self.vm_pgoff = 0
        self.vm_private_data = None
        # hugetlb_set_vma_policy: the kernel looks the inode's shared policy
        # up (SysV shm); pymm's hugetlbfs files have none: the task policy
        self.vm_policy = None


def hugetlbfs_fallocate(file, mode, offset, length):
    """fallocate(2) on hugetlbfs: punch a hole, or preallocate huge pages
    (consuming the file's reservations).  Returns 0 or -errno (-ENOSPC when
    the pool runs out; pages allocated so far stay)."""
    if mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE):
        return -errno.EOPNOTSUPP
    if mode & FALLOC_FL_PUNCH_HOLE:
        return hugetlbfs_punch_hole(file, offset, length)
    k, inode, mapping = file.kernel, file.inode, file.mapping
    start = offset >> H.HPAGE_SHIFT
    end = (offset + length + HPAGE_SIZE - 1) >> H.HPAGE_SHIFT
    pseudo = _PseudoVma(k, file)
    inode.i_rwsem.down_write()
    try:
        for index in range(start, end):
            fm = H.hugetlb_fault_mutex(k, file, index)
            fm.lock()
            folio = filemap_get_folio(mapping, index << H.HUGETLB_PAGE_ORDER)
            if folio is not None:
                folio_put(folio, k)
                fm.unlock()
                continue
            folio = H.alloc_hugetlb_folio(pseudo, index << H.HPAGE_SHIFT, False)
            if folio is None:
                fm.unlock()
                return -errno.ENOSPC
            if H.hugetlb_add_to_page_cache(folio, file, index):
                H.restore_reserve_on_error(pseudo, index << H.HPAGE_SHIFT, folio)
                folio_put(folio, k)
                fm.unlock()
                return -errno.EEXIST
            fm.unlock()
            folio_unlock(folio)
            folio_put(folio, k)          # the allocation reference; the cache keeps its own
        if not mode & FALLOC_FL_KEEP_SIZE and offset + length > inode.i_size:
            inode.i_size = offset + length
        return 0
    finally:
        inode.i_rwsem.up_write()


def hugetlb_split_check(mm, start, end):
    """munmap/mprotect of [start, end) would split a hugetlb VMA at a
    boundary that is not huge-page aligned (hugetlb_vm_op_split says
    -EINVAL).  Returns 0 or -EINVAL.  Context: mmap_lock held."""
    for vma in mm.mm_mt.range(start, end):
        if not vma.vm_flags & VM_HUGETLB:
            continue
        for b in (start, end):
            if vma.vm_start < b < vma.vm_end and b & (HPAGE_SIZE - 1):
                return -errno.EINVAL
    return 0


internal.define(__name__, globals())   # callers across a cycle use these through internal
