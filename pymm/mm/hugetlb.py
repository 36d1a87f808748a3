"""Huge pages (mm/hugetlb.c): the pool, reservations, hugetlb faults, PMD
sharing, the hugetlb vma_lock, unmapping, fork and migration.

Locking, as the top of mm/rmap.c has it for hugetlbfs folios::

  hugetlb_fault_mutex (FM, hashed by file and index)
    vma_lock (VL: &vma_lock->rw_sema for VM_MAYSHARE VMAs,
              &resv_map->rw_sema for private VMAs that own a reservation map)
      mapping->i_mmap_rwsem (IMAP: the hugetlbfs class)
        folio_lock (PL)
          the huge pte lock (&pmd->ptl of the PMD table holding the entry)
            hugetlb_lock

The problem: PMD sharing
------------------------
Processes that map the same 1 GiB-aligned range of a hugetlbfs file
MAP_SHARED share one PMD table (``huge_pmd_share``): every huge PTE of that
range lives in one table page that several mms' PUD entries point to, with
``pt_share_count`` counting the extra users.  Anyone who changes a mapping
of that range in *one* process (munmap, mprotect, truncation, hole punch,
rmap unmap or migration) must first take it out of the shared table
(``huge_pmd_unshare``: clear this mm's PUD entry, drop the count); the last
user frees the table.

What does not work: a fault that found its PTE pointer (``huge_pte_alloc``)
holding no lock -- the pointer may be unshared away from it, into another
process's table, or freed under it together with the lock it then takes
(SCENARIOS.md D, variant ``no-vma-lock``).  i_mmap_rwsem alone keeps the
table alive but does not stop an unshare, and it cannot be held across the
fault (it ranks below the folio lock).

The solution (40549ba8f8e0): a per-VMA rwsem, the vma_lock.  Faults hold it
for read from before ``huge_pte_alloc`` until they are done with the PTE;
unsharers hold it for write.  Paths that already hold i_mmap_rwsem (rmap,
truncation) can only *try* it, because it ranks above; when the trylock
fails they skip (rmap: the unmap fails and migration retries) or drop
i_mmap_rwsem and take both in order (``hugetlb_unmap_file_folio``).
``hugetlb_walk`` checks the rule: walking a shareable VMA's page tables needs
the vma_lock or i_mmap_rwsem.

A "ptep" in pymm is the pair (PMD table, index): huge PTEs live in
``PmdTable.entries`` (a Folio when present, a ``MigrationEntry`` during
migration, None) with their bits in ``PmdTable.bits``.

Pool: each node has ``hugepages_per_node`` huge pages.  Like base pages, a
free huge page is a count; a Folio(order=9, PG_hugetlb) exists while the
page is in use and is poisoned when it returns to the pool.  Its contents are
a 2 MiB bytearray allocated at the first store.
"""
import errno
import itertools
import threading
import weakref

from ..debug import stackdepot
from ..debug.fault_inject import should_fail
from ..debug.kasan import KasanObject, kasan_poison
from ..debug.report import pymm_checks, pymm_only_title, report, report_pymm_check
from ..locking import Mutex, RwSemaphore, SpinLock, lockdep
from ..locking.lockdep_report import thread_name
from ..sched import charge, point
from . import hugetlb_ops, internal
from .atomic import atomic_add_return, clear_bits, set_bits
from .filemap import (FOLIO_LOCK_ANON, FOLIO_LOCK_HUGETLBFS, __folio_set_locked, filemap_get_folio,
                      folio_lock, folio_lock_class, folio_trylock, folio_unlock, folio_wait_locked,
                      folio_waitqueue)
from .migrate import MIGRATE_SYNC
from .mm_types import (PAGE_FLAGS_CHECK_AT_FREE, PAGE_FLAG_NAMES, PG_anon, PG_dirty, PG_hugetlb,
                       PG_isolated, PG_swapbacked, PG_uptodate, VM_HUGETLB, VM_LOCKED_MASK,
                       VM_MAYSHARE, VM_NORESERVE, VM_SHARED, VM_WRITE, Folio, flag_names)
from .rmap import (RMP_LOCKED, TTU_RMAP_LOCKED, anon_vma_lock_read, anon_vma_prepare,
                   anon_vma_unlock_read, folio_anon_vma, folio_get_anon_vma,
                   i_mmap_assert_write_locked, i_mmap_lock_read, i_mmap_lock_write,
                   i_mmap_trylock_write, i_mmap_unlock_read, i_mmap_unlock_write, put_anon_vma,
                   remove_migration_ptes, try_to_migrate)
from .util import folio_copy
from .gfp import (__GFP_NOWARN, GFP_HIGHUSER_MOVABLE, GFP_KERNEL, GFP_NOWAIT, GFP_PGTABLE_USER,
                  might_alloc)
from .memory import (FAULT_FLAG_WRITE, VM_FAULT_SIGBUS, fault_why, is_cow_mapping,
                     vm_fault_oom, vm_fault_sigbus)
from .page_alloc import bad_page, folio_get, folio_put
from .pgtable import (_PAGE_DIRTY, _PAGE_RW, PMD_SHIFT, PTRS_PER_TABLE, PUD_SHIFT, PteTable,
                      pmd_alloc)
from .swapops import MigrationEntry
from ..constants import MPOL_PREFERRED_MANY

HPAGE_SHIFT = PMD_SHIFT
HPAGE_SIZE = 1 << HPAGE_SHIFT
HPAGE_MASK = ~(HPAGE_SIZE - 1)
HUGETLB_PAGE_ORDER = HPAGE_SHIFT - 12
PAGES_PER_HUGE_PAGE = 1 << HUGETLB_PAGE_ORDER
PUD_SIZE = 1 << PUD_SHIFT
PUD_MASK = ~(PUD_SIZE - 1)
NUM_FAULT_MUTEXES = 64          # a power of two, as the kernel's table
LONG_MAX = (1 << 63) - 1

# hugetlb folio state (the kernel keeps these in folio->private)
HPG_restore_reserve = 1 << 24   # allocated from a reservation: give it back when freed unused

# vm_private_data flags of private hugetlb VMAs (HPAGE_RESV_*)
HPAGE_RESV_OWNER = 1 << 0       # this VMA made (and owns) the reservation
HPAGE_RESV_UNMAPPED = 1 << 1    # the owner took a page away from us: faults SIGBUS

MIGRATEPAGE_SUCCESS = 0


# -- the pool ------------------------------------------------------------------------

class Hstate:
    """``struct hstate`` for the one huge page size (2 MiB).

    Counters are protected by ``hugetlb_lock`` (a SpinLock, as in the
    kernel).  ``resv_huge_pages`` counts reservations made and not yet
    consumed: at any time resv_huge_pages <= free_huge_pages, so a fault
    that has a reservation always finds a page.  ``fault_mutex_table`` is
    the hugetlb fault mutex table (one lockdep class)."""

    __slots__ = ("nr_huge_pages_node", "free_huge_pages_node", "resv_huge_pages",
                 "surplus_huge_pages", "hugetlb_lock", "hugetlb_fault_mutex_table",
                 "inodes", "_file_keys", "__weakref__")

    def __init__(self, nr_nodes, per_node):
        self.nr_huge_pages_node = [per_node] * nr_nodes      # fixed: no surplus pages
        self.free_huge_pages_node = [per_node] * nr_nodes    # hugetlb_lock
        self.resv_huge_pages = 0                             # hugetlb_lock
        self.surplus_huge_pages = 0
        self.hugetlb_lock = SpinLock("hugetlb_lock")
        self.hugetlb_fault_mutex_table = LockTable(NUM_FAULT_MUTEXES,
                                                   lambda: Mutex("hugetlb_fault_mutex"))
        self.inodes = weakref.WeakSet()      # live hugetlbfs files (for the checks)
        self._file_keys = itertools.count(1)

    @property
    def nr_huge_pages(self):
        return sum(self.nr_huge_pages_node)

    @property
    def free_huge_pages(self):
        return sum(self.free_huge_pages_node)

    def new_file_key(self):
        return next(self._file_keys)

    def meminfo(self):
        """/proc/meminfo's HugePages_* lines (hugetlb_report_meminfo)."""
        return {"HugePages_Total": self.nr_huge_pages, "HugePages_Free": self.free_huge_pages,
                "HugePages_Rsvd": self.resv_huge_pages, "HugePages_Surp": self.surplus_huge_pages,
                "Hugepagesize": HPAGE_SIZE >> 10,
                "Hugetlb": self.nr_huge_pages * (HPAGE_SIZE >> 10)}

    def __repr__(self):
        return (f"<hstate 2048kB total {self.nr_huge_pages} free {self.free_huge_pages} "
                f"resv {self.resv_huge_pages}>")


class LockTable:
    """A fixed-size table of locks, each built on its first use.  The kernel
    allocates hugetlb_fault_mutex_table at boot; building 64 pymm mutexes in
    every Kernel() was most of a small scenario's setup, and a schedule
    touches one or two of them.  Building is serialised by a plain lock (not
    a pymm lock: no scheduling point, never held across one), so every user
    of a slot sees the same mutex."""

    __slots__ = ("_locks", "_make", "_build")

    def __init__(self, n, make):
        self._locks = [None] * n
        self._make = make
        self._build = threading.Lock()

    def __getitem__(self, i):
        lk = self._locks[i]
        if lk is None:
            with self._build:
                lk = self._locks[i]
                if lk is None:
                    lk = self._locks[i] = self._make()
        return lk

    def __len__(self):
        return len(self._locks)

    def built(self):
        """The locks built so far."""
        return [lk for lk in self._locks if lk is not None]


def hugetlb_fault_mutex_hash(file, idx):
    """The fault mutex for huge page ``idx`` of ``file``.  The kernel hashes
    the address_space pointer; pymm hashes the file's per-kernel number so
    that the hashing (and so which faults collide) replays identically."""
    key = file.fault_key
    return ((key * 0x9E3779B1) ^ (idx * 0x85EBCA6B) ^ (idx >> 7)) & (NUM_FAULT_MUTEXES - 1)


def hugetlb_fault_mutex(kernel, file, idx):
    return kernel.hstate.hugetlb_fault_mutex_table[hugetlb_fault_mutex_hash(file, idx)]


def _dequeue_hugetlb_folio(h, nid, nodemask):
    """Take a free huge page, preferring ``nid``.  Context: hugetlb_lock held."""
    nodes = [nid] + [n for n in range(len(h.free_huge_pages_node)) if n != nid]
    for n in nodes:
        if nodemask is not None and n not in nodemask:
            continue
        if h.free_huge_pages_node[n] > 0:
            h.free_huge_pages_node[n] -= 1
            folio = Folio(n, HUGETLB_PAGE_ORDER)
            folio.flags = PG_hugetlb | PG_uptodate     # not visible to anyone yet
            return folio
    return None


def huge_node(vma, address):
    """Where a huge page for ``address`` may come from, by the VMA's (else
    the task's) NUMA policy: (preferred nid, nodemask or None, the policy,
    whether the caller must mpol_put it).  Context: mmap_lock held."""
    pol, ilx, ref = internal.get_vma_policy(vma, address, HUGETLB_PAGE_ORDER)
    nodemask, nid = internal.policy_nodemask(pol, ilx, internal.numa_node_id(vma.vm_mm.kernel))
    return nid, nodemask, pol, ref


def dequeue_hugetlb_folio_vma(h, nid, nodemask, pol):
    """A free huge page by policy: MPOL_PREFERRED_MANY tries its nodes
    first, then anywhere.  Context: hugetlb_lock held."""
    folio = None
    if pol.mode == MPOL_PREFERRED_MANY:
        folio = _dequeue_hugetlb_folio(h, nid, nodemask)
        nodemask = None
    return folio or _dequeue_hugetlb_folio(h, nid, nodemask)


def alloc_hugetlb_folio(vma, addr, cow_from_owner):
    """Allocate the huge folio for ``addr`` in ``vma``, consuming the
    reservation that covers it if there is one (and ``cow_from_owner`` does
    not forbid it).  Returns the folio with one reference, or None when the
    pool has no page for it (the caller turns that into SIGBUS).
    Context: hugetlb fault mutex held for (file, index); takes hugetlb_lock."""
    k = vma.vm_mm.kernel
    h = k.hstate
    idx = vma_hugecache_offset(vma, addr)
    # map_chg == 0: a reservation exists for idx (MAP_CHG_REUSE in the kernel)
    map_chg = 1 if cow_from_owner else vma_needs_reservation(vma, idx)
    # the policy is read before hugetlb_lock (pymm's task policy read takes
    # task_lock); reservations are per pool, not per node, as in the kernel
    nid, nodemask, pol, ref = huge_node(vma, addr)
    injected = should_fail(k, "hugetlb-dequeue", HPAGE_SIZE)
    h.hugetlb_lock.lock()
    if injected:
        folio = None                      # fault injection: the pool "is empty" this time
    elif map_chg == 0:
        folio = dequeue_hugetlb_folio_vma(h, nid, nodemask, pol)
        if folio is not None:
            h.resv_huge_pages -= 1
            folio.flags |= HPG_restore_reserve
    elif h.free_huge_pages - h.resv_huge_pages > 0:
        folio = dequeue_hugetlb_folio_vma(h, nid, nodemask, pol)
    else:
        folio = None
    pool = (h.free_huge_pages, h.resv_huge_pages)
    h.hugetlb_lock.unlock()
    if ref:
        pol.put()
    if folio is None:
        # vmf_error(-ENOSPC): the fault's SIGBUS says why
        fault_why("VM_FAULT_SIGBUS: no huge page for the fault (alloc_hugetlb_folio: -ENOSPC, " + (
            "fault injection at hugetlb-dequeue" if injected else
            f"{'none of the free pages on the allowed nodes' if map_chg == 0 else 'no unreserved page'}"
            f" in the pool: HugePages_Free {pool[0]}, HugePages_Rsvd {pool[1]}") + ")")
        return None
    if not cow_from_owner:
        map_commit = vma_commit_reservation(vma, idx)
        if map_chg > map_commit:
            # The entry was added between vma_needs_reservation and now: a
            # race with hugetlb_reserve_pages (another mmap of the shared
            # range), which reserved a page for idx -- the one we just
            # allocated without a reservation.  That reservation no longer
            # applies: give it back (alloc_hugetlb_folio's rsv_adjust).
            hugetlb_acct_memory(h, -1)
    point("alloc_hugetlb_folio")
    return folio


def alloc_hugetlb_folio_nodemask(kernel, nid, nmask):
    """A migration target on ``nid`` (or another node of ``nmask``), never
    from reserved pages.  Context: takes hugetlb_lock."""
    h = kernel.hstate
    injected = should_fail(kernel, "hugetlb-dequeue", HPAGE_SIZE)
    h.hugetlb_lock.lock()
    folio = None
    if h.free_huge_pages - h.resv_huge_pages > 0 and not injected:
        folio = _dequeue_hugetlb_folio(h, nid, nmask)
    h.hugetlb_lock.unlock()
    if folio is None:
        # the kernel falls back to a fresh page from the buddy allocator
        # (alloc_migrate_hugetlb_folio, htlb_alloc_mask); pymm's pool has
        # no surplus pages, but lockdep hears of the allocation
        might_alloc(GFP_HIGHUSER_MOVABLE)
    return folio


def free_huge_folio(kernel, folio):
    """The last reference went: back to the pool (free_huge_folio), with the
    checks the kernel makes (a folio freed mapped, locked or on an LRU is a
    bug).  A folio that consumed a reservation and was never used gives the
    reservation back."""
    # the kernel's free_huge_folio checks only the refcount and the mapcount
    # (VM_BUG_ON_FOLIO); the flags check is pymm's own, as free_pages_check
    # would make it for a buddy page
    bad = folio.flags & PAGE_FLAGS_CHECK_AT_FREE if pymm_checks(kernel) else 0
    if bad or folio._mapcount != 0:
        reason = []
        if bad:
            reason.append(f"hugetlb folio freed with {flag_names(bad, PAGE_FLAG_NAMES)} set")
        if folio._mapcount != 0:
            reason.append(f"hugetlb folio freed still mapped (mapcount {folio._mapcount})")
        bad_page(folio, "; ".join(reason), kernel, pymm_only=folio._mapcount == 0)
    h = kernel.hstate
    h.hugetlb_lock.lock()
    if folio.flags & HPG_restore_reserve:
        h.resv_huge_pages += 1
    h.free_huge_pages_node[folio.node] += 1
    h.hugetlb_lock.unlock()
    kasan_poison(folio, skip=3)


def folio_isolate_hugetlb(kernel, folio, lst=None):
    """Isolate an in-use huge folio for migration, with a reference.
    Returns False if it is being freed or already isolated."""
    h = kernel.hstate
    h.hugetlb_lock.lock()
    ok = bool(folio.flags & PG_hugetlb) and not folio.flags & PG_isolated and folio._refcount > 0
    if ok:
        atomic_add_return(folio, "_refcount", 1)
        set_bits(folio, "flags", PG_isolated)
    h.hugetlb_lock.unlock()
    if ok and lst is not None:
        lst.append(folio)
    return ok


isolate_hugetlb = folio_isolate_hugetlb


def folio_putback_hugetlb(kernel, folio):
    """Undo folio_isolate_hugetlb: drop the isolation mark and reference."""
    h = kernel.hstate
    h.hugetlb_lock.lock()
    clear_bits(folio, "flags", PG_isolated)
    h.hugetlb_lock.unlock()
    folio_put(folio, kernel)


# -- reservations --------------------------------------------------------------------

class ResvMap:
    """``struct resv_map``: a set of huge page indices.  For a file (shared
    mappings) an index is in the map while it has a reservation or a page;
    for a private mapping the map records the reservations its owner
    consumed.  ``lock`` protects ``regions``; ``rw_sema`` is the vma_lock of
    private owner VMAs (&resv_map->rw_sema).  Split VMAs share the map."""

    __slots__ = ("regions", "lock", "rw_sema", "refs", "region_cache_count")

    def __init__(self):
        self.regions = set()
        self.lock = SpinLock("&resv_map->lock")
        self.rw_sema = RwSemaphore("&resv_map->rw_sema")
        self.refs = 1
        self.region_cache_count = 0      # preallocated file_region entries; lock

    def region_chg(self, f, t, gfp=None):
        """How many indices of [f, t) are not in the map.

        The kernel's region_chg first makes sure file_region descriptors
        are cached for the region_add/region_del to come
        (allocate_file_region_entries: kmalloc(GFP_KERNEL) with resv->lock
        dropped) -- whenever its cache runs short, which depends on a
        history pymm does not keep (pymm's map is a set).  Simplification:
        only a caller that passes ``gfp`` is modelled as allocating: the
        zap's reservation restore (df7a6d1f6405), where syzbot's trace
        shows the allocation.  It takes an entry from the cache if one was
        preallocated (``region_cache_prealloc``), else allocates with
        ``gfp``.  Left out: the same allocation in faults, under the
        hugetlb fault mutex (README: the open 2025 report).
        Context: may sleep for a blocking ``gfp``; takes resv->lock."""
        self.lock.lock()
        n = (t - f) - sum(1 for i in self.regions if f <= i < t)
        cached = gfp is not None and self.region_cache_count > 0
        if cached:
            self.region_cache_count -= 1
        self.lock.unlock()
        if gfp is not None and not cached:
            might_alloc(gfp)
        return n

    def region_cache_prealloc(self, nr, gfp=GFP_KERNEL):
        """Put ``nr`` file_region entries in the cache now (the
        ``hugetlb-zap-alloc`` fix: before the zap takes its locks).
        Context: may sleep; no lock held."""
        if nr <= 0:
            return
        might_alloc(gfp)
        self.lock.lock()
        self.region_cache_count += nr
        self.lock.unlock()

    def region_add(self, f, t):
        self.lock.lock()
        n = 0
        for i in range(f, t):
            if i not in self.regions:
                self.regions.add(i)
                n += 1
        self.lock.unlock()
        return n

    def region_del(self, f, t):
        self.lock.lock()
        gone = [i for i in self.regions if f <= i < t]
        self.regions.difference_update(gone)
        self.lock.unlock()
        return len(gone)

    def region_count(self, f, t):
        self.lock.lock()
        n = sum(1 for i in self.regions if f <= i < t)
        self.lock.unlock()
        return n


class HugetlbPrivate:
    """What ``vm_private_data`` of a private hugetlb VMA holds: the kernel
    packs the reservation map pointer and the HPAGE_RESV_* flags into one
    word.  ``resv_map`` is None for VMAs without a reservation (MAP_NORESERVE,
    fork children)."""

    __slots__ = ("resv_map", "flags")

    def __init__(self, resv_map=None, flags=0):
        self.resv_map = resv_map
        self.flags = flags


def vma_hugecache_offset(vma, address):
    """The huge page index in the file of ``address``."""
    return ((address - vma.vm_start) >> HPAGE_SHIFT) + (vma.vm_pgoff >> HUGETLB_PAGE_ORDER)


def _priv(vma):
    d = vma.vm_private_data
    return d if isinstance(d, HugetlbPrivate) else None


def is_vma_resv_set(vma, flag):
    p = _priv(vma)
    return bool(p is not None and p.flags & flag)


def set_vma_resv_flags(vma, flag):
    p = _priv(vma)
    if p is not None:
        p.flags |= flag


def vma_resv_map(vma):
    if vma.vm_flags & VM_MAYSHARE:
        return vma.vm_file.resv_map
    p = _priv(vma)
    return p.resv_map if p is not None else None


def vma_needs_reservation(vma, idx, gfp=None):
    """0 if a reservation covers ``idx`` for this VMA, 1 if not.
    Context: may allocate with ``gfp`` (see ResvMap.region_chg)."""
    if vma.vm_flags & VM_MAYSHARE:
        return vma.vm_file.resv_map.region_chg(idx, idx + 1, gfp)
    if not is_vma_resv_set(vma, HPAGE_RESV_OWNER):
        return 1
    # private owner: the map holds the consumed reservations
    return 1 - vma_resv_map(vma).region_chg(idx, idx + 1, gfp)


def vma_commit_reservation(vma, idx):
    """Record that ``idx`` now has its page (shared) or consumed its
    reservation (private owner).  Returns what vma_needs_reservation would
    have said, as __vma_reservation_common(VMA_COMMIT_RESV) does: for a
    shared mapping the entries added (1, or 0 if somebody added it since);
    for a private owner the opposite (the map records consumption); 1 for a
    private VMA without a map."""
    resv = vma_resv_map(vma)
    if resv is None:
        return 1
    added = resv.region_add(idx, idx + 1)
    if vma.vm_flags & VM_MAYSHARE:
        return added
    return 0 if added else 1


def restore_reserve_on_error(vma, address, folio):
    """A folio allocated for ``address`` is being freed unused: undo what the
    allocation recorded so the reservation accounting stays exact."""
    idx = vma_hugecache_offset(vma, address)
    resv = vma_resv_map(vma)
    if resv is None:
        return
    if folio.flags & HPG_restore_reserve:
        # the free gives resv_huge_pages back; a private owner un-consumes it
        if not vma.vm_flags & VM_MAYSHARE:
            resv.region_del(idx, idx + 1)
    elif vma.vm_flags & VM_MAYSHARE:
        resv.region_del(idx, idx + 1)        # commit added it without a reservation


def hugetlb_acct_memory(h, delta):
    """Reserve (delta > 0) or unreserve pages.  Returns 0 or -ENOMEM.
    Context: takes hugetlb_lock."""
    if not delta:
        return 0
    h.hugetlb_lock.lock()
    try:
        if delta > 0 and h.resv_huge_pages + delta > h.free_huge_pages:
            return -errno.ENOMEM       # gather_surplus_pages: no overcommit in pymm
        h.resv_huge_pages += delta
        return 0
    finally:
        h.hugetlb_lock.unlock()


def hugetlb_reserve_pages(file, f, t, vm_flags):
    """Reserve huge pages [f, t) of ``file`` for a new mapping.  Returns
    (0 or -ENOMEM, the private reservation map or None).  Context: inode lock
    held."""
    h = file.kernel.hstate
    if vm_flags & VM_NORESERVE:
        return 0, None
    if should_fail(file.kernel, "hugetlb-reserve", (t - f) * HPAGE_SIZE):
        return -errno.ENOMEM, None
    if vm_flags & VM_MAYSHARE:
        chg = file.resv_map.region_chg(f, t)
        if hugetlb_acct_memory(h, chg):
            return -errno.ENOMEM, None
        added = file.resv_map.region_add(f, t)
        if added < chg:                  # raced with an allocation: give the difference back
            hugetlb_acct_memory(h, added - chg)
        return 0, None
    might_alloc(GFP_KERNEL)                  # resv_map_alloc: kmalloc(GFP_KERNEL)
    if hugetlb_acct_memory(h, t - f):
        return -errno.ENOMEM, None
    return 0, ResvMap()


def hugetlb_unreserve_pages(file, start, end, freed):
    """Pages [start, end) of ``file`` were removed (``freed`` of them had a
    page): drop their reservation-map entries and the reservations that were
    never used."""
    chg = file.resv_map.region_del(start, end)
    hugetlb_acct_memory(file.kernel.hstate, -(chg - freed))


# -- the vma_lock ------------------------------------------------------------------------

class HugetlbVmaLock(KasanObject):
    """``struct hugetlb_vma_lock``: hangs off a VM_MAYSHARE hugetlb VMA
    (vm_private_data) and points back to it; refcounted, because
    hugetlb_unmap_file_folio must wait for it after dropping i_mmap_rwsem,
    when the VMA may go away.  ``vma`` is cleared (under the rwsem, write)
    when the VMA goes: a waiter then sees None and retries."""

    KASAN_CACHE = "hugetlb_vma_lock"
    KASAN_LOCKS = ("rw_sema",)
    __slots__ = ("refs", "rw_sema", "vma")

    def __init__(self, vma):
        self.kasan_alloc(3)
        self.refs = 1
        self.rw_sema = RwSemaphore("&vma_lock->rw_sema")
        self.vma = vma          # rw_sema (write) to clear


def __vma_shareable_lock(vma):
    return bool(vma.vm_flags & VM_MAYSHARE) and isinstance(vma.vm_private_data, HugetlbVmaLock)


def __vma_private_lock(vma):
    p = _priv(vma)
    return (not vma.vm_flags & VM_MAYSHARE and p is not None and p.resv_map is not None
            and bool(p.flags & HPAGE_RESV_OWNER))


def _vma_lock_sem(vma):
    """The rwsem hugetlb_vma_lock_* take for ``vma``, or None."""
    if __vma_shareable_lock(vma):
        return vma.vm_private_data.rw_sema
    if __vma_private_lock(vma):
        return vma.vm_private_data.resv_map.rw_sema
    return None


def hugetlb_vma_lock_read(vma):
    """Context: may sleep; FM may be held, i_mmap_rwsem and folio locks must not be."""
    if __vma_shareable_lock(vma):
        vma_lock = vma.vm_private_data
        vma_lock.rw_sema.down_read()
        # down_read records its owner in the semaphore, inside the vma_lock:
        # if the lock was freed while we waited (hugetlb-dontneed final-zap),
        # that is a write to freed memory -- KASAN sees this access
        _rwsem_set_reader_owned(vma_lock)
        return
    s = _vma_lock_sem(vma)
    if s is not None:
        s.down_read()


def _rwsem_set_reader_owned(vma_lock):
    vma_lock.rw_sema = vma_lock.rw_sema


def hugetlb_vma_trylock_read(vma):
    """True when the lock was taken for read -- or when the VMA has none."""
    s = _vma_lock_sem(vma)
    return True if s is None else s.down_read_trylock()


def hugetlb_vma_unlock_read(vma):
    s = _vma_lock_sem(vma)
    if s is not None:
        s.up_read()


def hugetlb_vma_lock_write(vma):
    s = _vma_lock_sem(vma)
    if s is not None:
        s.down_write()


def hugetlb_vma_unlock_write(vma):
    s = _vma_lock_sem(vma)
    if s is not None:
        s.up_write()


def hugetlb_vma_trylock_write(vma):
    """True when the lock was taken -- or when the VMA has none."""
    s = _vma_lock_sem(vma)
    return True if s is None else s.down_write_trylock()


def hugetlb_vma_assert_locked(vma):
    s = _vma_lock_sem(vma)
    if s is not None:
        lockdep.lockdep_assert_held(s, name="hugetlb_vma_assert_locked")


def hugetlb_vma_lock_alloc(vma):
    """Give a VM_MAYSHARE hugetlb VMA its vma_lock."""
    if vma.vm_flags & VM_MAYSHARE and vma.vm_private_data is None:
        might_alloc(GFP_KERNEL)              # kmalloc(sizeof(*vma_lock), GFP_KERNEL)
        vma.vm_private_data = HugetlbVmaLock(vma)


def hugetlb_vma_lock_release(vma_lock):
    """kref_put: the last reference frees the lock object."""
    if atomic_add_return(vma_lock, "refs", -1) == 0:
        kasan_poison(vma_lock, skip=3)


def __hugetlb_vma_unlock_write_put(vma_lock):
    """Detach the lock from its VMA (write-held), unlock, drop the VMA's
    reference."""
    vma = vma_lock.vma
    vma_lock.vma = None
    vma.vm_private_data = None
    vma_lock.rw_sema.up_write()
    hugetlb_vma_lock_release(vma_lock)


def __hugetlb_vma_unlock_write_free(vma):
    if __vma_shareable_lock(vma):
        __hugetlb_vma_unlock_write_put(vma.vm_private_data)
    elif __vma_private_lock(vma):
        vma.vm_private_data.resv_map.rw_sema.up_write()


def hugetlb_vma_lock_free(vma):
    """The VMA goes away: detach its vma_lock (waiters see vma None)."""
    if __vma_shareable_lock(vma):
        vma_lock = vma.vm_private_data
        vma_lock.rw_sema.down_write()
        __hugetlb_vma_unlock_write_put(vma_lock)


# -- vm_operations ---------------------------------------------------------------------

def hugetlb_vm_op_open(vma, src=None):
    """A hugetlb VMA was duplicated (split: ``src`` is the original; fork:
    ``src`` is None).  pymm's vm_area_dup does not copy vm_private_data, so
    this sets it: a new vma_lock for shareable VMAs (never the original's);
    for a private split part, the original's reservation map and flags; a
    fork child owns no reservation."""
    if vma.vm_flags & VM_MAYSHARE:
        vma.vm_private_data = None
        hugetlb_vma_lock_alloc(vma)
        return
    p = _priv(src) if src is not None else None
    if p is not None and p.resv_map is not None:
        atomic_add_return(p.resv_map, "refs", 1)
        vma.vm_private_data = HugetlbPrivate(p.resv_map, p.flags)
    else:
        vma.vm_private_data = HugetlbPrivate(None, p.flags & ~HPAGE_RESV_OWNER if p else 0)


def hugetlb_vm_op_close(vma):
    """The VMA is being freed: detach the vma_lock, return a private owner's
    unused reservations, and evict an anonymous hugetlb file nobody maps."""
    hugetlb_vma_lock_free(vma)
    file = vma.vm_file
    if __vma_private_lock(vma):
        resv = vma.vm_private_data.resv_map
        start = vma_hugecache_offset(vma, vma.vm_start)
        end = vma_hugecache_offset(vma, vma.vm_end)
        reserve = (end - start) - resv.region_count(start, end)
        if reserve:
            hugetlb_acct_memory(vma.vm_mm.kernel.hstate, -reserve)
        atomic_add_return(resv, "refs", -1)
    if file is not None and file.anon and not file.mapping.i_mmap:
        internal.hugetlbfs_evict_inode(file)


def hugetlb_vm_op_split(vma, addr):
    """May ``vma`` be split at ``addr``?  Only at a huge page boundary.
    Splitting loses the PUD alignment PMD sharing needs, so the PMDs around
    addr must be unshared.  ``hugetlb-split``: ``unshare-before-split``
    ("hugetlb: unshare some PMDs when splitting VMAs", 2023 .. 2025) does
    it here, taking the locks, before
    __split_vma takes the rmap locks -- another process's fault can share
    the table again (huge_pmd_share finds this VMA still covering the PUD)
    before the split; ``unshare-in-split`` (081056dc00a2, CVE-2025-38084)
    leaves it to hugetlb_split, under them.
    Returns 0 or -EINVAL.  Context: mmap_lock held for write."""
    if addr & ~HPAGE_MASK:
        return -errno.EINVAL
    if vma.vm_mm.kernel.variant("hugetlb-split") == "unshare-before-split":
        _unshare_around(vma, addr, True)
        point("hugetlb_vm_op_split")
    return 0


def _unshare_around(vma, addr, take_locks):
    if addr & ~PUD_MASK:
        floor = addr & PUD_MASK
        ceil = floor + PUD_SIZE
        if floor >= vma.vm_start and ceil <= vma.vm_end:
            hugetlb_unshare_pmds(vma, floor, ceil, take_locks)


def hugetlb_split(vma, addr):
    """081056dc00a2: unshare the PMDs around ``addr`` in the middle of the
    split, with the VMA's range not yet changed and i_mmap_rwsem held for
    write by the caller -- no fault can share them again before the new
    boundaries are visible.  The vma_lock cannot be taken under
    i_mmap_rwsem, and is not needed: mmap_lock (write) and the rmap lock
    exclude every page-table walker.  Context: mmap_lock and i_mmap_rwsem
    held for write."""
    if vma.vm_mm.kernel.variant("hugetlb-split") == "unshare-in-split":
        i_mmap_assert_write_locked(vma.vm_file.mapping)
        _unshare_around(vma, addr, False)


def hugetlb_check_pmd_share_coverage(vma, why):
    """pymm's own check (the kernel has none): a shareable VMA that does not
    cover a whole PUD range must not sit on a shared PMD table there --
    unsharing it, zapping through it or freeing it would act on the other
    sharers' entries.  Context: mmap_lock held."""
    if not vma.vm_flags & VM_MAYSHARE or not pymm_checks(vma.vm_mm.kernel):
        return
    mm = vma.vm_mm
    for key in range(vma.vm_start >> PUD_SHIFT, ((vma.vm_end - 1) >> PUD_SHIFT) + 1):
        table = mm.pgd.get(key)
        floor = key << PUD_SHIFT
        if table is None or not table.pt_share_count:
            continue
        if vma.vm_start <= floor and floor + PUD_SIZE <= vma.vm_end:
            continue
        title = "BUG: shared hugetlb PMD table in a VMA that does not cover its PUD range"
        report("assertion", title,
               "\n".join([title,
                          f"{vma!r} ({why}) maps part of PUD range {floor:#x}-{floor + PUD_SIZE:#x}, and",
                          f"its PMD table there is shared ({table.pt_share_count} other user(s)): an unmap",
                          "or unshare through this VMA acts on the other processes' entries, and its",
                          "last user can free the table while they still use it (CVE-2025-38084).",
                          "Call Trace:", stackdepot.format(stackdepot.save(3), "  ")]),
               data={"signature": ("pmd-share-coverage", why), "pymm_only": True})
        return


# -- page tables ----------------------------------------------------------------------

def pmd_index(addr):
    return (addr >> PMD_SHIFT) & (PTRS_PER_TABLE - 1)


def huge_pte_offset(mm, addr):
    """The ptep (PMD table, index) for ``addr``, or None if no PMD table."""
    pmd = mm.pgd.get(addr >> PUD_SHIFT)
    if pmd is None:
        return None
    return pmd, pmd_index(addr)


def hugetlb_walk(vma, addr):
    """huge_pte_offset with the locking rule of include/linux/hugetlb.h:
    walking a shareable VMA's tables needs its vma_lock (which keeps the
    PTE stable) or i_mmap_rwsem (which keeps the PMD table alive).
    Private VMAs need only mmap_lock."""
    if __vma_shareable_lock(vma) and lockdep.is_enabled():
        vl = lockdep.lock_is_held(vma.vm_private_data.rw_sema)
        im = lockdep.lock_is_held(vma.vm_file.mapping.i_mmap_rwsem)
        if not vl and not im:
            _walk_rule_violated(vma, addr)
    return huge_pte_offset(vma.vm_mm, addr)


def _walk_rule_violated(vma, addr):
    t = threading.current_thread()
    held = lockdep.held_locks()
    title = "WARNING: hugetlb_walk without vma_lock or i_mmap_rwsem"
    lines = ["------------[ cut here ]------------", title,
             f"{t.name}/{t.native_id} walks the page tables of shareable {vma!r} at {addr:#x}",
             "holding neither its hugetlb vma_lock nor the file's i_mmap_rwsem: the PMD table",
             "may be unshared (or freed) under it.",
             f"{len(held)} lock{'s' if len(held) != 1 else ''} held:"]
    lines += [f" #{i}: {hl.name}" for i, hl in enumerate(held)]
    lines += ["", "Call Trace:", stackdepot.format(stackdepot.save(3), "  ")]
    report("assertion", title, "\n".join(lines),
           data={"signature": ("hugetlb_walk",) + tuple(stackdepot.current(3)[:4])})


def _pmd_alloc(mm, addr, gfp=GFP_PGTABLE_USER):
    """pmd_alloc for a hugetlb address: the PMD table, allocated if needed.
    Returns the ptep, or None when the table cannot be allocated.
    Context: mmap_lock held; takes page_table_lock."""
    pmd = pmd_alloc(mm, addr, gfp)
    if pmd is None:
        return None
    i = pmd_index(addr)
    if isinstance(pmd.entries[i], PteTable):
        report("assertion", "kernel BUG at mm/hugetlb.c: BUG_ON(pte_present(pteval) && !pte_huge(pteval))",
               f"huge_pte_alloc({addr:#x}): a PTE table sits where a huge PTE belongs")
    return pmd, i


def want_pmd_share(vma, addr):
    start = addr & PUD_MASK
    return (bool(vma.vm_flags & VM_MAYSHARE) and isinstance(vma.vm_private_data, HugetlbVmaLock)
            and vma.vm_start <= start and start + PUD_SIZE <= vma.vm_end)


def page_table_shareable(svma, vma, addr, idx):
    """The address in ``svma`` whose PMD table ``vma`` may share, or 0."""
    saddr = ((idx - svma.vm_pgoff) << 12) + svma.vm_start
    sbase = saddr & PUD_MASK
    if (pmd_index(addr) != pmd_index(saddr) or
            (vma.vm_flags & ~VM_LOCKED_MASK) != (svma.vm_flags & ~VM_LOCKED_MASK) or
            not (svma.vm_start <= sbase and sbase + PUD_SIZE <= svma.vm_end) or
            not isinstance(svma.vm_private_data, HugetlbVmaLock)):
        return 0
    return saddr


def huge_pmd_share(mm, vma, addr):
    """Find a sibling VMA mapping the same file range with a PMD table and
    share it (pt_share_count++), else allocate one.  Returns the ptep.
    Context: VL held for read (see the module essay); takes i_mmap_rwsem for
    read, then page_table_lock."""
    mapping = vma.vm_file.mapping
    idx = ((addr - vma.vm_start) >> 12) + vma.vm_pgoff
    key = addr >> PUD_SHIFT
    spte = None
    i_mmap_lock_read(mapping)
    for svma in mapping.i_mmap.iter(idx, idx):
        if svma is vma:
            continue
        saddr = page_table_shareable(svma, vma, addr, idx)
        if saddr:
            p = hugetlb_walk(svma, saddr)
            if p is not None:
                spte = p[0]
                atomic_add_return(spte, "pt_share_count", 1)
                break
    if spte is not None:
        point("huge_pmd_share")
        mm.page_table_lock.lock()
        if mm.pgd.get(key) is None:
            mm.pgd[key] = spte
            mm.pgtables_bytes.add(4096)
        else:
            atomic_add_return(spte, "pt_share_count", -1)
        mm.page_table_lock.unlock()
    # under the vma_lock and i_mmap_rwsem: with ``alloc-before-locks`` the
    # fault allocated the table before its locks (pymm models that
    # preallocated table as an allocation that cannot reclaim)
    gfp = (GFP_NOWAIT | __GFP_NOWARN if vma.vm_mm.kernel.variant("hugetlb-zap-alloc") ==
           "alloc-before-locks" else GFP_PGTABLE_USER)
    ptep = _pmd_alloc(mm, addr, gfp)
    hugetlb_fault_pte_get(mm, ptep)      # before i_mmap_rwsem goes: see there
    i_mmap_unlock_read(mapping)
    return ptep


def huge_pte_alloc(mm, vma, addr):
    """The ptep for ``addr``, allocating (or sharing) the PMD table.
    Context: mmap_lock held; for shareable VMAs the vma_lock held (read) by
    the caller, who keeps using the ptep."""
    if want_pmd_share(vma, addr) and mm.pgd.get(addr >> PUD_SHIFT) is None:
        return huge_pmd_share(mm, vma, addr)
    return _pmd_alloc(mm, addr)


def huge_pmd_unshare(vma, addr, ptep, vma_locked=True):
    """If the PMD table of ``ptep`` is shared, take it out of this mm (clear
    the PUD entry, drop the share count) and return True.
    Context: the huge pte lock, i_mmap_rwsem (write) and the vma_lock held
    (``vma_locked`` False: hugetlb_split, whose caller excludes walkers)."""
    table = ptep[0]
    if table.pt_share_count == 0:
        return False
    i_mmap_assert_write_locked(vma.vm_file.mapping)
    if vma_locked:
        hugetlb_vma_assert_locked(vma)
    mm = vma.vm_mm
    key = addr >> PUD_SHIFT
    if mm.pgd.get(key) is table:
        _check_unshare_under_fault(mm, table, addr)
        del mm.pgd[key]                     # pud_clear
        mm.pgtables_bytes.add(-4096)
    atomic_add_return(table, "pt_share_count", -1)
    point("huge_pmd_unshare")
    return True


UNSHARE_UNDER_FAULT_TITLE = pymm_only_title("BUG: hugetlb PMD table unshared under a fault using it")


def _check_unshare_under_fault(mm, table, addr):
    """pymm's own check (the kernel has none): the PMD table being unshared
    from ``mm`` (its PUD entry cleared) must not be in the hands of a fault
    of ``mm`` -- one that read its ptep (huge_pte_alloc) and has not yet
    released the vma_lock that protects it (hugetlb_fault_pte_get/put).
    Such a fault goes on to lock the table's ptl and set its entry in a
    table ``mm`` no longer maps: the other sharer's (its page is then
    mapped there, and nowhere in ``mm``) or, once that sharer unmaps it, a
    freed one.  With the vma_lock (``hugetlb-pmd-share`` ``vma-lock``) every
    unsharer holds it for write (or has trylocked it, or excludes faults by
    mmap_lock), so this never fires; without it (``no-vma-lock``) it fires
    at the unshare, before whatever the fault does next, which depends on
    the interleaving (a use-after-free of the table, a wrong map count, the
    other mm's page-table bytes).  Context: i_mmap_rwsem (write) and the
    table's ptl held."""
    if not pymm_checks(mm.kernel):
        return
    for tid, vmf in list(mm.hugetlb_faults.items()):
        ptep = vmf.pte
        if ptep is None or ptep[0] is not table:
            continue
        title = UNSHARE_UNDER_FAULT_TITLE
        report_pymm_check("assertion", title,
                          [f"{threading.current_thread().name} unshares the PMD table at "
                           f"{addr & PUD_MASK:#x} from the mm of pid {mm.owner_pid} (shared by "
                           f"{table.pt_share_count} other mm(s)),",
                           f"while a fault of that mm at {vmf.real_address:#x} (thread "
                           f"{thread_name(tid)}) holds a ptep into it without the vma_lock:",
                           "the fault will set its entry in a table its mm no longer maps (the "
                           "other", "sharer's, or a freed one)."], kernel=mm.kernel)
        return


def hugetlb_unshare_pmds(vma, start, end, take_locks):
    """Unshare every shared PMD table of ``vma`` in [start, end) (PUD aligned).
    With ``take_locks`` takes the vma_lock and i_mmap_rwsem (write), else
    the caller holds i_mmap_rwsem for write."""
    if not vma.vm_flags & VM_MAYSHARE or start >= end:
        return
    mapping = vma.vm_file.mapping
    if take_locks:
        hugetlb_vma_lock_write(vma)
        i_mmap_lock_write(mapping)
    else:
        i_mmap_assert_write_locked(mapping)
    for address in range(start, end, PUD_SIZE):
        ptep = hugetlb_walk(vma, address)
        if ptep is None:
            continue
        ptep[0].ptl.lock()
        huge_pmd_unshare(vma, address, ptep, take_locks)
        ptep[0].ptl.unlock()
    if take_locks:
        i_mmap_unlock_write(mapping)
        hugetlb_vma_unlock_write(vma)


def hugetlb_unshare_all_pmds(vma):
    hugetlb_unshare_pmds(vma, (vma.vm_start + PUD_SIZE - 1) & PUD_MASK, vma.vm_end & PUD_MASK, True)


# -- rmap for huge folios ---------------------------------------------------------------

def hugetlb_add_new_anon_rmap(folio, vma, address):
    """A new anon huge folio gets its first mapping.  Context: huge pte lock."""
    set_bits(folio, "flags", PG_anon | PG_swapbacked)
    clear_bits(folio, "flags", HPG_restore_reserve)
    folio.mapping = vma.anon_vma
    folio.index = vma.linear_page_index(address & HPAGE_MASK)
    atomic_add_return(folio, "_mapcount", 1)


def hugetlb_add_file_rmap(folio):
    atomic_add_return(folio, "_mapcount", 1)


def hugetlb_add_anon_rmap(folio):
    """Another mapping of an existing anon huge folio (fork, migration)."""
    atomic_add_return(folio, "_mapcount", 1)


def hugetlb_remove_rmap(folio):
    atomic_add_return(folio, "_mapcount", -1)


# -- faults -------------------------------------------------------------------------------

class HugetlbFault:
    """``struct vm_fault`` as hugetlb uses it.  ``pte`` is the ptep;
    ``orig_pte`` the (entry, bits) read locklessly.  ``vma_locked`` says
    whether this fault took the vma_lock (the ``hugetlb-pmd-share``
    variant); ``locked`` lists the folio locks it holds, so that paths
    dropping locks know what to release."""

    __slots__ = ("vma", "address", "real_address", "flags", "pgoff", "pte", "orig_pte",
                 "kernel", "file", "fault_mutex", "vma_locked", "locked")

    def __init__(self, vma, address, flags):
        self.vma = vma
        self.address = address & HPAGE_MASK
        self.real_address = address
        self.flags = flags
        self.pgoff = vma_hugecache_offset(vma, self.address)
        self.pte = None
        self.orig_pte = None
        self.kernel = vma.vm_mm.kernel
        self.file = vma.vm_file
        self.fault_mutex = hugetlb_fault_mutex(self.kernel, self.file, self.pgoff)
        self.vma_locked = False
        self.locked = []

    def lock_folio(self, folio, trylock=False):
        if trylock:
            if not folio_trylock(folio):
                return False
        else:
            folio_lock(folio)
        self.locked.append(folio)
        return True

    def unlock_folio(self, folio):
        self.locked.remove(folio)
        folio_unlock(folio)

    def unlock_all_folios(self):
        while self.locked:
            folio_unlock(self.locked.pop())


def fault_i_mmap_era(kernel):
    """The 5.7-5.18 fault path (c0d0381ade79 .. 188a39725ad7): i_mmap_rwsem
    for read across the whole fault, taken before the fault mutex, and no
    vma_lock (it did not exist).  Selected per Kernel by the scenario that
    replays that era (``kernel.hugetlb_fault_i_mmap``, hugetlb-cow-imap);
    every other path is today's."""
    return getattr(kernel, "hugetlb_fault_i_mmap", False)


def _fault_vma_lock_read(vmf):
    """Take the vma_lock for read before huge_pte_alloc -- unless the
    ``hugetlb-pmd-share`` variant is the pre-40549ba8f8e0 ``no-vma-lock``
    (or the fault is the 5.7 era's, which had none)."""
    vmf.vma_locked = (vmf.kernel.variant("hugetlb-pmd-share") == "vma-lock"
                      and not fault_i_mmap_era(vmf.kernel))
    if vmf.vma_locked:
        hugetlb_vma_lock_read(vmf.vma)


def _fault_vma_unlock_read(vmf):
    hugetlb_fault_pte_put(vmf)
    if vmf.vma_locked:
        hugetlb_vma_unlock_read(vmf.vma)


def _fault_vma_relock_read(vmf):
    if vmf.vma_locked:
        hugetlb_vma_lock_read(vmf.vma)
    _fault_pte_hold(vmf)


# pymm's bookkeeping for _check_unshare_under_fault (not kernel state): from
# the moment a fault reads its ptep until it releases the vma_lock (where
# the kernel's fault stops using the ptep), the fault is in its mm's
# ``hugetlb_faults``.  The ptep is published by huge_pmd_share while it still
# holds i_mmap_rwsem (no unsharer can run before: they hold it for write),
# or by _hugetlb_fault when huge_pte_alloc returns a table without
# scheduling (the table was already there).

def _fault_pte_hold(vmf):
    vmf.vma.vm_mm.hugetlb_faults[threading.get_ident()] = vmf


def hugetlb_fault_pte_get(mm, ptep):
    """The current thread's fault in ``mm`` (if any) now holds ``ptep``."""
    vmf = mm.hugetlb_faults.get(threading.get_ident())
    if vmf is not None:
        vmf.pte = ptep


def hugetlb_fault_pte_put(vmf):
    vmf.vma.vm_mm.hugetlb_faults.pop(threading.get_ident(), None)


def huge_pte_same(ptep, orig):
    table, i = ptep
    return table.entries[i] is orig[0] and table.bits[i] == orig[1]


def filemap_lock_hugetlb_folio(file, idx):
    """The page-cache folio of huge page ``idx``, locked and referenced, or
    None.  Context: may sleep on the folio lock."""
    mapping = file.mapping
    while True:
        folio = filemap_get_folio(mapping, idx << HUGETLB_PAGE_ORDER)
        if folio is None:
            return None
        folio_lock(folio)
        if folio.mapping is mapping:
            return folio
        folio_unlock(folio)              # truncated while we waited
        folio_put(folio)


def hugetlb_add_to_page_cache(folio, file, idx):
    """Insert a new huge folio at huge index ``idx``, locked.  Returns 0 or
    -EEXIST.  Context: hugetlb fault mutex held for (file, idx)."""
    mapping = file.mapping
    __folio_set_locked(folio, FOLIO_LOCK_HUGETLBFS)
    mapping.xa_lock.lock()
    index = idx << HUGETLB_PAGE_ORDER
    if mapping.i_pages.get(index) is not None:
        mapping.xa_lock.unlock()
        folio_unlock(folio)
        return -errno.EEXIST
    folio.mapping = mapping
    folio.index = index
    atomic_add_return(folio, "_refcount", 1)          # the page cache's reference
    mapping.i_pages[index] = folio
    mapping.nrpages += 1
    mapping.xa_lock.unlock()
    clear_bits(folio, "flags", HPG_restore_reserve)
    set_bits(folio, "flags", PG_dirty)                # never written back, never dropped
    point("hugetlb_add_to_page_cache")
    return 0


def hugetlb_fault(mm, vma, address, flags):
    """hugetlb_fault; in the 5.7 era (fault_i_mmap_era) inside
    i_mmap_lock_read/i_mmap_unlock_read of the file's mapping."""
    try:
        if fault_i_mmap_era(vma.vm_mm.kernel):
            mapping = vma.vm_file.mapping
            i_mmap_lock_read(mapping)
            try:
                return _hugetlb_fault(mm, vma, address, flags)
            finally:
                i_mmap_unlock_read(mapping)
        return _hugetlb_fault(mm, vma, address, flags)
    finally:
        mm.hugetlb_faults.pop(threading.get_ident(), None)     # an aborted fault's too


def _hugetlb_fault(mm, vma, address, flags):
    """Resolve a fault in a hugetlb VMA.

    FM (hugetlb_fault_mutex for the file and index) serialises faults on the
    same huge page; then the vma_lock for read (``hugetlb-pmd-share``:
    ``vma-lock``) keeps the ptep from huge_pte_alloc valid until the fault
    is done with it.  A write to a read-only PTE of a private mapping goes
    to hugetlb_wp (COW).

    Context: mmap_lock held for read; returns with FM and VL released.
    """
    vmf = HugetlbFault(vma, address, flags)
    if vmf.kernel.variant("hugetlb-zap-alloc") == "alloc-before-locks":
        _fault_alloc_before_locks(mm, vma, vmf.address)
    vmf.fault_mutex.lock()
    _fault_vma_lock_read(vmf)
    _fault_pte_hold(vmf)
    vmf.pte = huge_pte_alloc(mm, vma, vmf.address)
    if vmf.pte is None:                           # no page-table page: VM_FAULT_OOM
        return _no_page_out(vmf, vm_fault_oom("huge_pte_alloc: no page-table page"))
    point("hugetlb_fault")
    table, i = vmf.pte
    entry = table.entries[i]                      # an unlocked peek, rechecked under ptl
    vmf.orig_pte = (entry, table.bits[i])
    if entry is None:
        return hugetlb_no_page(vmf)
    if type(entry) is MigrationEntry:
        # drop FM, keep VL: migration_entry_wait_huge takes the ptl under it
        vmf.fault_mutex.unlock()
        migration_entry_wait_huge(vmf)
        return 0
    ret = 0
    need_wait = None
    pagecache_folio = None
    to_put = []
    write = flags & FAULT_FLAG_WRITE
    # hugetlb-wp: until 2ae1ab9934c7 (2025) the page-cache folio was locked
    # for the COW here, and the mapped folio trylocked whatever it was;
    # since, only an anon folio is trylocked (hugetlb_wp may reuse it)
    old_locking = vmf.kernel.variant("hugetlb-wp") != "folio-trylock"
    if old_locking and write and not vma.vm_flags & VM_MAYSHARE and not vmf.orig_pte[1] & _PAGE_RW:
        pagecache_folio = filemap_lock_hugetlb_folio(vmf.file, vmf.pgoff)
        if pagecache_folio is not None:
            vmf.locked.append(pagecache_folio)
            to_put.append(pagecache_folio)
    table.ptl.lock()
    if huge_pte_same(vmf.pte, vmf.orig_pte):
        if write and not vmf.orig_pte[1] & _PAGE_RW:
            folio = entry
            folio_get(folio)
            to_put.append(folio)
            lock_it = folio is not pagecache_folio and (old_locking or folio.flags & PG_anon)
            if lock_it and not vmf.lock_folio(folio, trylock=True):
                # someone holds it (maybe dropping FM in hugetlb_wp): do not
                # wait under FM -- back out, and wait once everything is unlocked
                need_wait = folio
            else:
                ret = hugetlb_wp(vmf)
        elif write:
            table.bits[i] |= _PAGE_DIRTY
    table.ptl.unlock()
    vmf.unlock_all_folios()
    _fault_vma_unlock_read(vmf)
    vmf.fault_mutex.unlock()
    if need_wait is not None:
        folio_wait_locked(need_wait)
    for f in to_put:
        folio_put(f, vmf.kernel)
    return ret


def _fault_alloc_before_locks(mm, vma, address):
    """``hugetlb-zap-alloc`` ``alloc-before-locks``, the fault's half: what
    mainline allocates under the fault mutex and the vma_lock
    (__vmf_anon_prepare's anon_vma, huge_pte_alloc's PMD table), allocated
    first, under mmap_lock alone, as do_anonymous_page does.  A PMD table a
    VMA may share must be installed by huge_pmd_share under the vma_lock:
    it is allocated here and handed over (pymm models the hand-over as
    huge_pmd_share allocating without reclaim).  Context: mmap_lock held."""
    if not vma.vm_flags & VM_MAYSHARE:
        anon_vma_prepare(vma)
    if mm.pgd.get(address >> PUD_SHIFT) is None:
        if want_pmd_share(vma, address):
            might_alloc(GFP_PGTABLE_USER)    # the table huge_pmd_share may need
        else:
            pmd_alloc(mm, address)


def migration_entry_wait_huge(vmf):
    """Wait for the migration that installed the entry at vmf.pte (it holds
    the folio lock throughout).  Context: VL held for read (if taken); it is
    released here, after the ptl that it guards."""
    table, i = vmf.pte
    table.ptl.lock()
    e = table.entries[i]
    if type(e) is not MigrationEntry:
        table.ptl.unlock()
        _fault_vma_unlock_read(vmf)
        return
    wq = folio_waitqueue(e.folio)        # migration_entry_wait_on_locked: no reference
    table.ptl.unlock()
    _fault_vma_unlock_read(vmf)
    point("migration_entry_wait_huge")
    wq.lock()
    wq.unlock()


def hugetlb_no_page(vmf):
    """Map the page-cache folio (shared) or a new anon folio (private) at a
    none PTE; a private write fault then COWs at once.  SIGBUS beyond i_size
    or when the pool has no page for us.
    Context: FM and (variant) VL held; both released here."""
    vma, k = vmf.vma, vmf.kernel
    file = vmf.file
    ret = VM_FAULT_SIGBUS
    table, i = vmf.pte
    if is_vma_resv_set(vma, HPAGE_RESV_UNMAPPED):
        # the owner of this private mapping took the page back on a failed COW
        return _no_page_out(vmf, vm_fault_sigbus(
            "the owner of this private hugetlb mapping took its pages back for a copy on "
            "write the pool had no page for (unmap_ref_private: HPAGE_RESV_UNMAPPED; the "
            f"kernel logs \"PID {vma.vm_mm.owner_pid} killed due to inadequate hugepage pool\")"))
    new_anon = False
    folio = filemap_lock_hugetlb_folio(file, vmf.pgoff)
    if folio is not None:
        vmf.locked.append(folio)
    else:
        if vmf.pgoff >= file.inode.i_size >> HPAGE_SHIFT:
            return _no_page_out(vmf, vm_fault_sigbus(
                f"access beyond end of file (hugetlb_no_page: huge page {vmf.pgoff} of a "
                f"file of {file.inode.i_size} bytes)"))
        if not vma.vm_flags & VM_MAYSHARE and anon_vma_prepare(vma):
            return _no_page_out(vmf, vm_fault_oom("hugetlb_no_page: anon_vma_prepare failed"))
        folio = alloc_hugetlb_folio(vma, vmf.address, False)
        if folio is None:
            return _no_page_out(vmf, VM_FAULT_SIGBUS)        # -ENOSPC (fault_why said why)
        charge("clear_huge_page")                             # folio_zero_user
        if vma.vm_flags & VM_MAYSHARE:
            if hugetlb_add_to_page_cache(folio, file, vmf.pgoff):
                restore_reserve_on_error(vma, vmf.address, folio)
                folio_put(folio, k)
                return _no_page_out(vmf, vm_fault_sigbus(
                    "hugetlb_add_to_page_cache: -EEXIST (hugetlb_no_page)"))
            vmf.locked.append(folio)
        else:
            new_anon = True
            # folio_lock() in the kernel; nobody else can reach the folio yet
            __folio_set_locked(folio, FOLIO_LOCK_ANON)
            vmf.locked.append(folio)
    point("hugetlb_no_page")
    table.ptl.lock()
    if not huge_pte_same(vmf.pte, vmf.orig_pte):
        table.ptl.unlock()
        if new_anon:
            restore_reserve_on_error(vma, vmf.address, folio)
        vmf.unlock_folio(folio)
        folio_put(folio, k)
        return _no_page_out(vmf, 0)
    if new_anon:
        hugetlb_add_new_anon_rmap(folio, vma, vmf.address)
    else:
        hugetlb_add_file_rmap(folio)
    # the reference we hold (allocation or page-cache lookup) is the PTE's now
    held = _no_page_hold_new_anon(vmf, folio) if new_anon else None
    table.entries[i] = folio
    table.bits[i] = (_PAGE_RW | _PAGE_DIRTY) if (vma.vm_flags & (VM_SHARED | VM_WRITE)) == \
        (VM_SHARED | VM_WRITE) else 0
    ret = 0
    if vmf.flags & FAULT_FLAG_WRITE and not vma.vm_flags & VM_SHARED:
        if not new_anon:
            vmf.unlock_folio(folio)      # no need to keep a file folio locked for the COW
        ret = hugetlb_wp(vmf)
    table.ptl.unlock()
    point("hugetlb_no_page_mapped")
    vmf.unlock_all_folios()
    if held is not None:
        folio_put(held, k)
    return _no_page_out(vmf, ret)


def _no_page_hold_new_anon(vmf, folio):
    """``hugetlb-no-page-ref``: once the PTE is set, the new anon folio's only
    reference is the PTE's, and the fault still has the folio locked until
    after the ptl is dropped.  A zap that the fault does not exclude can
    clear the PTE and free the folio in between: the fault then unlocks a
    folio that is back in the pool (locked while free).  The fault excludes
    the zap through the vma_lock only where there is one: a shareable VMA
    (and its page cache holds a reference anyway) or, since 2820b0f09be9 and
    bf4916922c60 (6.7), a private VMA that owns its resv_map.  A fork
    child's private VMA (vm_private_data cleared by hugetlb_dup_vma_private)
    or a MAP_NORESERVE one has none, and MADV_DONTNEED takes mmap_lock only
    for read.

    - ``unlock-unreferenced`` (mainline): no extra reference;
    - ``ref-across-unlock`` (pymm's proposed fix, the default): take a
      reference before the PTE is published and drop it after folio_unlock,
      as hugetlb_fault does around hugetlb_wp.

    Returns the folio to put after the unlock, or None."""
    if vmf.kernel.variant("hugetlb-no-page-ref") == "ref-across-unlock":
        folio_get(folio)
        return folio
    return None


def _no_page_out(vmf, ret):
    vmf.unlock_all_folios()
    _fault_vma_unlock_read(vmf)
    vmf.fault_mutex.unlock()
    return ret


def _wp_drop_folio_locks(vmf):
    """Before hugetlb_wp drops the fault mutex to unmap the page from the
    other processes, the ``hugetlb-wp`` variant decides what happens to the
    folio locks:

    - ``fault-mutex-under-folio`` (40549ba8f8e0, 6.1): the page-cache folio
      and the old page stay locked across the mutex drop-and-retake
      (FM -> PL, then PL -> FM: an AB-BA against any other fault on this
      index, which takes FM then the page-cache folio's lock);
    - ``unlock-folio-first`` (Gavin Guo's v1-v3, 2025, not merged): they are
      unlocked first;
    - ``folio-trylock`` (2ae1ab9934c7, mainline): only the old anon folio is
      held, trylocked by hugetlb_fault; it stays locked across the drop.
      Another fault on this index only trylocks it and waits after
      dropping the mutex, so anon folio -> FM is never closed into a cycle."""
    if vmf.kernel.variant("hugetlb-wp") == "unlock-folio-first":
        vmf.unlock_all_folios()


def hugetlb_wp(vmf):
    """COW of a huge page in a private mapping (or make a shared PTE
    writable).  Reuses the folio when we are its only mapper.
    Context: FM, (variant) VL and the huge pte lock held; returns with the
    ptl held (it may have been dropped and retaken).  On the
    cow_from_owner path FM and VL are dropped and retaken too."""
    vma, k = vmf.vma, vmf.kernel
    mm = vma.vm_mm
    table, i = vmf.pte
    if vma.vm_flags & VM_MAYSHARE:
        table.bits[i] |= _PAGE_RW | _PAGE_DIRTY
        return 0
    pte = (table.entries[i], table.bits[i])
    old = pte[0]
    while True:                                            # retry_avoidcopy
        if old._mapcount == 1 and old.flags & PG_anon:
            if vma.vm_flags & VM_WRITE:
                table.bits[i] |= _PAGE_RW | _PAGE_DIRTY
            return 0
        cow_from_owner = is_vma_resv_set(vma, HPAGE_RESV_OWNER) and bool(old.flags & PG_anon)
        folio_get(old)
        table.ptl.unlock()
        new = alloc_hugetlb_folio(vma, vmf.address, cow_from_owner)
        if new is not None:
            break
        if not cow_from_owner:
            folio_put(old, k)
            table.ptl.lock()
            return VM_FAULT_SIGBUS       # fault_why: alloc_hugetlb_folio's -ENOSPC
        # The owner must get its page: take it away from the children (they
        # SIGBUS on their next fault).  Unmapping needs VL for write, so drop
        # VL and FM, and retake them in order afterwards.
        folio_put(old, k)
        era = fault_i_mmap_era(k)
        if era and k.variant("hugetlb-fault-imap") == "imap-held-in-cow":
            # 5.7-5.10 (c0d0381ade79): unmap with FM and i_mmap_rwsem (read)
            # still held; unmap_ref_private takes i_mmap_rwsem for write
            point("hugetlb_wp_unmap_ref_private")
            unmap_ref_private(mm, vma, old, vmf.address)
        else:
            _wp_drop_folio_locks(vmf)
            _fault_vma_unlock_read(vmf)
            vmf.fault_mutex.unlock()
            if era:                      # e7dd91c456a8: i_mmap_rwsem (read) goes too
                i_mmap_unlock_read(vma.vm_file.mapping)
            point("hugetlb_wp_unmap_ref_private")
            unmap_ref_private(mm, vma, old, vmf.address)
            if era:
                i_mmap_lock_read(vma.vm_file.mapping)
            vmf.fault_mutex.lock()
            _fault_vma_relock_read(vmf)
        table.ptl.lock()
        ptep = hugetlb_walk(vma, vmf.address)
        if ptep is None or ptep != vmf.pte or not huge_pte_same(ptep, pte):
            return 0                     # raced: our job is done
    if anon_vma_prepare(vma):                          # out_release_all
        restore_reserve_on_error(vma, vmf.address, new)
        folio_put(new, k)
        folio_put(old, k)
        table.ptl.lock()
        return vm_fault_oom("hugetlb_wp: anon_vma_prepare failed")
    folio_copy(new, old)
    point("hugetlb_wp_copy")
    table.ptl.lock()
    ptep = hugetlb_walk(vma, vmf.address)
    if ptep == vmf.pte and huge_pte_same(ptep, pte):
        table.entries[i] = None
        hugetlb_remove_rmap(old)
        hugetlb_add_new_anon_rmap(new, vma, vmf.address)
        table.entries[i] = new
        table.bits[i] = _PAGE_RW | _PAGE_DIRTY
        new = old                        # so the put below drops the old PTE's reference
    table.ptl.unlock()
    if new is not old:
        restore_reserve_on_error(vma, vmf.address, new)
    folio_put(new, k)
    folio_put(old, k)
    table.ptl.lock()
    return 0


def unmap_ref_private(mm, vma, folio, address):
    """The owner of a private mapping failed to COW: unmap ``folio`` from the
    other private mappings without a reservation of their own (fork
    children), which are marked to SIGBUS on their next fault.
    Context: FM and VL not held; takes i_mmap_rwsem for write."""
    mapping = vma.vm_file.mapping
    address &= HPAGE_MASK
    pgoff = ((address - vma.vm_start) >> 12) + vma.vm_pgoff
    i_mmap_lock_write(mapping)
    for iter_vma in mapping.i_mmap.iter(pgoff, pgoff):
        if iter_vma is vma or iter_vma.vm_flags & VM_MAYSHARE:
            continue
        if not is_vma_resv_set(iter_vma, HPAGE_RESV_OWNER):
            unmap_hugepage_range(iter_vma, address, address + HPAGE_SIZE, folio)
    i_mmap_unlock_write(mapping)


# -- unmapping ----------------------------------------------------------------------------

def _next_pud(addr):
    return (addr & PUD_MASK) + PUD_SIZE


def __unmap_hugepage_range(vma, start, end, ref_folio=None):
    """Clear the huge PTEs of ``vma`` in [start, end) (only those mapping
    ``ref_folio`` if given), unsharing shared PMD tables instead of clearing
    them.  Context: the vma_lock (write) and i_mmap_rwsem (write) held, or
    the caller otherwise excludes page-table walkers of shareable VMAs."""
    mm = vma.vm_mm
    k = mm.kernel
    address = start
    while address < end:
        ptep = hugetlb_walk(vma, address)
        if ptep is None:
            address = _next_pud(address)
            continue
        table, i = ptep
        if table.pt_share_count:
            hugetlb_check_pmd_share_coverage(vma, "zap")
        elif table.entries[i] is None:
            # an unlocked peek at an empty, unshared entry: the kernel takes
            # the ptl to find it none and moves on, which comes to the same
            # (and keeps a 1 GiB zap from taking 512 locks for nothing)
            address += HPAGE_SIZE
            continue
        table.ptl.lock()
        if huge_pmd_unshare(vma, address, ptep):
            table.ptl.unlock()
            address = _next_pud(address)
            continue
        entry = table.entries[i]
        if entry is None:
            table.ptl.unlock()
            address += HPAGE_SIZE
            continue
        if not isinstance(entry, Folio):
            # a migration entry: the page is already unmapped and unreferenced
            table.entries[i] = None
            table.bits[i] = 0
            table.ptl.unlock()
            address += HPAGE_SIZE
            continue
        if ref_folio is not None:
            if entry is not ref_folio:
                table.ptl.unlock()
                address += HPAGE_SIZE
                continue
            set_vma_resv_flags(vma, HPAGE_RESV_UNMAPPED)
        if table.bits[i] & _PAGE_DIRTY:
            set_bits(entry, "flags", PG_dirty)
        # df7a6d1f6405: a private owner's anon page gives its reservation
        # back, or another mapping could take the page and the owner gets
        # SIGBUS on its next fault (pymm: only on its last mapping, so that
        # HugePages_Rsvd stays exact: a COW-shared page keeps it consumed)
        adjust_reservation = (ref_folio is None and __vma_private_lock(vma)
                              and entry.flags & PG_anon and entry._mapcount == 1)
        table.entries[i] = None
        table.bits[i] = 0
        hugetlb_remove_rmap(entry)
        table.ptl.unlock()
        if adjust_reservation:
            # after the spin lock, as the kernel does: vma_needs_reservation
            # may allocate (region_chg) -- under the vma_lock and
            # i_mmap_rwsem the zap holds: the ``hugetlb-zap-alloc`` question
            idx = vma_hugecache_offset(vma, address)
            if vma_needs_reservation(vma, idx, _zap_region_gfp(k)) == 1:
                set_bits(entry, "flags", HPG_restore_reserve)
                vma_resv_map(vma).region_del(idx, idx + 1)     # vma_add_reservation (private)
        folio_put(entry, k)              # the PTE's reference (the mmu_gather batch)
        if ref_folio is not None:
            break
        address += HPAGE_SIZE


def unmap_hugepage_range(vma, start, end, ref_folio=None):
    __unmap_hugepage_range(vma, start, end, ref_folio)


def _zap_region_gfp(kernel):
    """The GFP of the zap's reservation-restore allocation (``hugetlb-zap-alloc``):
    GFP_KERNEL in mainline (df7a6d1f6405: it may reclaim under the
    vma_lock and i_mmap_rwsem -- syzbot 3f5f9a0d292454409ca6);
    ``alloc-before-locks`` (pymm's proposed fix) preallocates before the
    locks and only tops up without reclaim under them."""
    if kernel.variant("hugetlb-zap-alloc") == "alloc-before-locks":
        return GFP_NOWAIT | __GFP_NOWARN
    return GFP_KERNEL


def _zap_restore_candidates(vma, start, end):
    """How many anon pages of private owner ``vma`` are mapped in
    [start, end): an upper bound of the reservations the zap may restore.
    Context: mmap_lock held (enough for a private VMA's page tables)."""
    n = 0
    for address in range(start, end, HPAGE_SIZE):
        ptep = huge_pte_offset(vma.vm_mm, address)
        if ptep is not None:
            e = ptep[0].entries[ptep[1]]
            if isinstance(e, Folio) and e.flags & PG_anon:
                n += 1
    return n


def __hugetlb_zap_begin(vma, start=None, end=None):
    """Take the zap's locks: the vma_lock (write), then i_mmap_rwsem (write).

    ``hugetlb-zap-alloc``:

    - ``alloc-under-locks`` (mainline since df7a6d1f6405): the
      reservation restore in __unmap_hugepage_range allocates (GFP_KERNEL,
      region_chg) under both: i_mmap_rwsem -> fs_reclaim, and with
      vma_lock -> i_mmap_rwsem here and hugetlb_fault_mutex -> vma_lock in
      every fault, reclaim waiting on anything that faults on hugetlb
      memory closes a cycle (syzbot 3f5f9a0d292454409ca6);
    - ``imap-before-vma-lock`` (the reorder posted upstream, Nov 2025):
      i_mmap_rwsem first -- against hugetlb_change_protection,
      hugetlb_unshare_pmds, hugetlb_unmap_file_folio and
      move_hugetlb_page_tables, which take the vma_lock first;
    - ``alloc-before-locks`` (pymm's proposed fix): keep the documented
      order; before taking the locks, fill the resv_map's file_region
      cache (GFP_KERNEL, nothing held) with one entry per anon page of a
      private owner VMA in the range (the most the zap can restore), and
      let the zap's region_chg top up only with GFP_NOWAIT (no reclaim; a
      failure takes the kernel's existing "act as if we consumed the
      reservation" path)."""
    k = vma.vm_mm.kernel
    v = k.variant("hugetlb-zap-alloc")
    if v == "alloc-before-locks" and start is not None and __vma_private_lock(vma):
        vma.vm_private_data.resv_map.region_cache_prealloc(
            _zap_restore_candidates(vma, start, end), GFP_KERNEL)
    if v == "imap-before-vma-lock":
        i_mmap_lock_write(vma.vm_file.mapping)
        hugetlb_vma_lock_write(vma)
    else:
        hugetlb_vma_lock_write(vma)
        i_mmap_lock_write(vma.vm_file.mapping)


def __hugetlb_zap_end(vma, final):
    """Unlock; on the final unmap (munmap, exit) free the vma_lock before
    i_mmap_rwsem goes, so no huge_pmd_share can pick this VMA's tables
    while they are being freed."""
    if final:
        __hugetlb_vma_unlock_write_free(vma)
    else:
        hugetlb_vma_unlock_write(vma)
    i_mmap_unlock_write(vma.vm_file.mapping)


def hugetlb_zap_range(vma, start, end, final):
    """unmap_single_vma for a hugetlb VMA between hugetlb_zap_begin/end.
    The range is widened to huge page boundaries.  Context: mmap_lock held."""
    start &= HPAGE_MASK
    end = (end + HPAGE_SIZE - 1) & HPAGE_MASK
    __hugetlb_zap_begin(vma, start, end)
    __unmap_hugepage_range(vma, start, end, None)
    __hugetlb_zap_end(vma, final)


def hugetlb_change_protection(vma, start, end, newflags):
    """mprotect of a hugetlb range: write-protect its huge PTEs when write
    permission goes (gaining it leaves them read-only: the next write
    faults), unsharing shared PMD tables in the range instead.  Returns the
    number of huge pages changed.  Context: mmap_lock held for write; takes
    the vma_lock (write) then i_mmap_rwsem (write), the documented order."""
    mapping = vma.vm_file.mapping
    pages = 0
    hugetlb_vma_lock_write(vma)
    i_mmap_lock_write(mapping)
    address = start & HPAGE_MASK
    while address < end:
        ptep = hugetlb_walk(vma, address)
        if ptep is None:
            address = _next_pud(address)
            continue
        table, i = ptep
        if not table.pt_share_count and table.entries[i] is None:
            address += HPAGE_SIZE        # nothing to change (see __unmap_hugepage_range)
            continue
        table.ptl.lock()
        if huge_pmd_unshare(vma, address, ptep):
            table.ptl.unlock()
            pages += 1
            address = _next_pud(address)
            continue
        if not newflags & VM_WRITE and isinstance(table.entries[i], Folio) and \
                table.bits[i] & _PAGE_RW:
            table.bits[i] &= ~_PAGE_RW
            pages += 1
        elif type(table.entries[i]) is MigrationEntry and not newflags & VM_WRITE and \
                table.entries[i].writable:
            table.entries[i] = MigrationEntry(table.entries[i].folio, False)
        table.ptl.unlock()
        address += HPAGE_SIZE
    i_mmap_unlock_write(mapping)
    hugetlb_vma_unlock_write(vma)
    return pages


# -- fork ------------------------------------------------------------------------------------

def copy_hugetlb_page_range(dst_vma, src_vma):
    """fork: copy the huge PTEs; COW mappings write-protect both sides.
    A shared PMD table (the child shared the parent's) needs no copy.
    Context: both mmap_locks held for write; for shared mappings takes the
    source's vma_lock for read (hugetlb_walk's rule)."""
    dst_mm = dst_vma.vm_mm
    cow = is_cow_mapping(src_vma.vm_flags)
    if not cow:
        hugetlb_vma_lock_read(src_vma)
    addr = src_vma.vm_start
    while addr < src_vma.vm_end:
        sptep = hugetlb_walk(src_vma, addr)
        if sptep is None:
            addr = _next_pud(addr)
            continue
        dptep = huge_pte_alloc(dst_mm, dst_vma, addr)
        if dptep is None:                         # copy_hugetlb_page_range: -ENOMEM
            if not cow:
                hugetlb_vma_unlock_read(src_vma)
            return -errno.ENOMEM
        if dptep[0].pt_share_count:
            addr = _next_pud(addr)
            continue
        stable, i = sptep
        dtable = dptep[0]
        dtable.ptl.lock()
        stable.ptl.lock_nested(1)
        entry = stable.entries[i]
        if entry is not None and dtable is not stable:
            bits = stable.bits[i]
            if type(entry) is MigrationEntry:
                if entry.writable and cow:
                    entry = MigrationEntry(entry.folio, False)
                    stable.entries[i] = entry
                dtable.entries[i] = entry
                dtable.bits[i] = 0
            else:
                folio_get(entry)
                if entry.flags & PG_anon:
                    hugetlb_add_anon_rmap(entry)        # hugetlb_try_dup_anon_rmap: no pins in pymm
                else:
                    hugetlb_add_file_rmap(entry)
                if cow:
                    stable.bits[i] &= ~_PAGE_RW
                    bits &= ~_PAGE_RW
                dtable.entries[i] = entry
                dtable.bits[i] = bits
        stable.ptl.unlock()
        dtable.ptl.unlock()
        addr += HPAGE_SIZE
    if not cow:
        hugetlb_vma_unlock_read(src_vma)
    return 0


# -- user accesses and gup ------------------------------------------------------------------

def _huge_pte_present(vma, address, write):
    """(table, index) of a present huge PTE allowing the access, with the
    ptl held, or None.  Context: VL held for read."""
    ptep = hugetlb_walk(vma, address)
    if ptep is None:
        return None
    table, i = ptep
    table.ptl.lock()
    e = table.entries[i]
    if isinstance(e, Folio) and (not write or table.bits[i] & _PAGE_RW):
        return ptep
    table.ptl.unlock()
    return None


def hugetlb_user_copy(vma, pos, n, write, data, off, out):
    """Copy to or from a huge page if its PTE is present with the right
    access (uaccess's _copy_pte for hugetlb VMAs).  Like a fault it holds
    the vma_lock for read around the walk and copies under the ptl -- but
    only tries it: the kernel's copy walks the page tables in hardware and
    takes no lock, so the copy must add no lock dependency (a copy under a
    socket lock would otherwise order that lock before the vma_lock).  If
    the trylock fails, the access faults, as a hardware walk that meets a
    PTE being changed would.  Returns False when the caller must fault
    first.  Context: mmap_lock held."""
    if not hugetlb_vma_trylock_read(vma):
        return False
    try:
        ptep = _huge_pte_present(vma, pos, write)
        if ptep is None:
            return False
        table, i = ptep
        folio = table.entries[i]
        poff = pos & (HPAGE_SIZE - 1)
        if write:
            folio.write_bytes(poff, data[off:off + n])
            table.bits[i] |= _PAGE_DIRTY
        else:
            out[off:off + n] = folio.read_bytes(poff, n)
        table.ptl.unlock()
        return True
    finally:
        hugetlb_vma_unlock_read(vma)


def hugetlb_follow_page_mask(vma, address, write):
    """gup: is the huge page present with the access wanted?"""
    hugetlb_vma_lock_read(vma)
    try:
        ptep = _huge_pte_present(vma, address, write)
        if ptep is None:
            return False
        ptep[0].ptl.unlock()
        return True
    finally:
        hugetlb_vma_unlock_read(vma)


def hugetlb_folio_at(mm, addr):
    """The huge folio mapped at ``addr`` in ``mm`` with a reference taken
    under the ptl (drop it with folio_put), or None -- what move_pages(2)'s
    lookup does.  Context: mmap_lock held; takes VL and the ptl."""
    vma = mm.mm_mt.vma_lookup(addr)
    if vma is None or not vma.vm_flags & VM_HUGETLB:
        return None
    hugetlb_vma_lock_read(vma)
    try:
        ptep = _huge_pte_present(vma, addr, False)
        if ptep is None:
            return None
        f = ptep[0].entries[ptep[1]]
        folio_get(f)
        ptep[0].ptl.unlock()
        return f
    finally:
        hugetlb_vma_unlock_read(vma)


# -- rmap: the folio_test_hugetlb branches of try_to_migrate_one / try_to_unmap_one ---------

def hugetlb_try_to_unmap_one(folio, vma, address, flags, migration):
    """Unmap one mapping of a huge folio, leaving a migration entry if
    ``migration``.  For a file folio the caller holds i_mmap_rwsem for write
    (TTU_RMAP_LOCKED); the vma_lock ranks above it, so it is only tried: on
    failure the walk stops (returns False) and the folio stays mapped --
    migration then fails with -EAGAIN and retries.  A shared PMD table is
    unshared instead (the other sharer's walk unmaps the page).
    Context: folio locked; the rmap lock held."""
    k = vma.vm_mm.kernel
    address &= HPAGE_MASK
    ptep = hugetlb_walk(vma, address)
    if ptep is None:
        return True
    table, i = ptep
    table.ptl.lock()
    if table.entries[i] is not folio:
        table.ptl.unlock()
        return True
    if not folio.flags & PG_anon:
        if not flags & TTU_RMAP_LOCKED:
            report("assertion", "kernel BUG at mm/rmap.c: VM_BUG_ON(!(flags & TTU_RMAP_LOCKED))",
                   f"unmapping file hugetlb {folio!r} without i_mmap_rwsem held for write by "
                   f"the caller: huge_pmd_unshare needs it")
        if not hugetlb_vma_trylock_write(vma):
            table.ptl.unlock()
            return False
        if huge_pmd_unshare(vma, address, ptep):
            hugetlb_vma_unlock_write(vma)
            table.ptl.unlock()
            return True
        hugetlb_vma_unlock_write(vma)
    bits = table.bits[i]
    if bits & _PAGE_DIRTY:
        set_bits(folio, "flags", PG_dirty)
    table.entries[i] = MigrationEntry(folio, bool(bits & _PAGE_RW)) if migration else None
    table.bits[i] = 0
    hugetlb_remove_rmap(folio)
    table.ptl.unlock()
    folio_put(folio, k)                  # the reference the PTE held
    return True


def hugetlb_remove_migration_pte(folio, vma, address, src):
    """Map ``folio`` where a migration entry for ``src`` sits (the hugetlb
    branch of remove_migration_pte)."""
    address &= HPAGE_MASK
    ptep = hugetlb_walk(vma, address)
    if ptep is None:
        return True
    table, i = ptep
    table.ptl.lock()
    e = table.entries[i]
    if type(e) is MigrationEntry and e.folio is src:
        folio_get(folio)
        if folio.flags & PG_anon:
            hugetlb_add_anon_rmap(folio)
        else:
            hugetlb_add_file_rmap(folio)
        table.entries[i] = folio
        table.bits[i] = (_PAGE_RW | _PAGE_DIRTY) if e.writable else 0
    table.ptl.unlock()
    return True


# -- migration -----------------------------------------------------------------------------

def hugetlb_folio_mapping_lock_write(folio):
    """i_mmap_rwsem (write) of a file folio's mapping, trylocked: the
    caller holds the folio lock, which ranks below it.  None on failure."""
    mapping = folio.mapping
    if mapping is None:
        return None
    return mapping if i_mmap_trylock_write(mapping) else None


def hugetlb_page_mapping_lock_write(folio):
    """The 5.7 helper (c0d0381ade79) for *anon* huge pages: derive "a"
    mapping from the file of the first VMA in the anon_vma tree and
    trylock its i_mmap_rwsem for write.  It locks a file's i_mmap tree --
    nothing that protects the anon_vma tree the rmap walk then reads."""
    anon_vma = folio_anon_vma(folio)
    if anon_vma is None:
        return None
    mapping = None
    anon_vma_lock_read(anon_vma)
    start = folio.index
    for avc in anon_vma.rb_root.iter(start, start + folio.nr_pages() - 1):
        if avc.vma.vm_file is not None:
            mapping = avc.vma.vm_file.mapping
            break
    anon_vma_unlock_read(anon_vma)
    if mapping is None or not i_mmap_trylock_write(mapping):
        return None
    return mapping


def move_to_new_hugetlb_folio(kernel, dst, src):
    """Copy a huge folio's contents, flags and page-cache slot (the
    hugetlbfs_migrate_folio / migrate_folio step).  Returns 0 or -EAGAIN if
    someone else holds a reference.  Context: both folios locked, src
    unmapped."""
    anon = bool(src.flags & PG_anon)
    expected = 1 if anon else 2            # the isolation reference (+ the page cache's)
    if src._refcount != expected:
        return -errno.EAGAIN
    if not anon:
        rc = internal.hugetlbfs_migrate_folio(kernel, dst, src)
        if rc:
            return rc
    charge("migrate_page")
    folio_copy(dst, src)
    set_bits(dst, "flags", src.flags & (PG_anon | PG_swapbacked | PG_dirty))
    dst.mapping = src.mapping
    dst.index = src.index
    if anon:
        src.mapping = None
    point("move_to_new_hugetlb_folio")
    return MIGRATEPAGE_SUCCESS


def _migrate_rmap_lock(kernel, src):
    """Which rmap lock the unmap takes itself and which the caller holds:
    returns (mapping held or None, ttu flags), or (None, None) when the
    trylock failed.  File folios: i_mmap_rwsem (write), trylocked.  Anon
    folios: the ``hugetlb-anon-migrate`` variant -- ``anon-vma-lock`` (5.10)
    takes nothing here (the walk takes anon_vma->rwsem itself);
    ``rmap-locked`` (5.7-5.9) takes the file-derived i_mmap_rwsem and tells
    the walk the rmap lock is held (TTU_RMAP_LOCKED)."""
    if not src.flags & PG_anon:
        mapping = hugetlb_folio_mapping_lock_write(src)
        return (mapping, TTU_RMAP_LOCKED) if mapping is not None else (None, None)
    if kernel.variant("hugetlb-anon-migrate") == "rmap-locked":
        mapping = hugetlb_page_mapping_lock_write(src)
        return (mapping, TTU_RMAP_LOCKED) if mapping is not None else (None, None)
    return None, 0


def unmap_and_move_huge_page(kernel, src, get_new_folio, private, mode):
    """Migrate one isolated huge folio (mm/migrate.c).  Returns (rc, dst).

    PL(src); anon: pin the anon_vma; TryPL(dst); if mapped: the rmap lock
    (see _migrate_rmap_lock), try_to_migrate; move; remove_migration_ptes;
    release the rmap lock; unlock.  Where i_mmap_rwsem is released for a
    file folio is the ``hugetlb-file-migrate`` variant: ``keep-imap``
    (b7880cb166ab) holds it across remove_migration_ptes(RMP_LOCKED);
    ``relock-under-folio`` releases it right after try_to_migrate and lets
    remove_migration_ptes take it again for read under the folio lock --
    folio_lock -> i_mmap_rwsem, the reverse of the hugetlbfs order.
    Context: no lock held."""
    if src._refcount == 1:
        return MIGRATEPAGE_SUCCESS, None        # freed under us: only our isolation ref is left
    dst = get_new_folio(src, private)
    if dst is None:
        return -errno.ENOMEM, None
    rc = -errno.EAGAIN
    if not folio_trylock(src):
        if mode != MIGRATE_SYNC:
            folio_put(dst, kernel)
            return rc, None
        folio_lock(src)
    anon_vma = None
    if not src.flags & PG_anon and src.mapping is None:
        rc = -errno.EBUSY                       # truncated: being freed
    else:
        if src.flags & PG_anon:
            # an unmapped folio's anon_vma may be freed already (munmap while
            # it sat isolated): pin it only while the folio is still mapped
            anon_vma = folio_get_anon_vma(src)
        if folio_trylock(dst, folio_lock_class(src)):
            mapping, ttu = None, 0
            was_mapped = False
            if src.folio_mapped():
                mapping, ttu = _migrate_rmap_lock(kernel, src)
                if ttu is not None:
                    try_to_migrate(src, ttu)
                    was_mapped = True
                    if mapping is not None and not src.flags & PG_anon and \
                            kernel.variant("hugetlb-file-migrate") == "relock-under-folio":
                        i_mmap_unlock_write(mapping)
                        mapping, ttu = None, 0
            if ttu is not None:
                if not src.folio_mapped():
                    rc = move_to_new_hugetlb_folio(kernel, dst, src)
                if was_mapped:
                    remove_migration_ptes(src, dst if rc == MIGRATEPAGE_SUCCESS else src,
                                          RMP_LOCKED if ttu & TTU_RMAP_LOCKED else 0)
                if mapping is not None:
                    i_mmap_unlock_write(mapping)
            folio_unlock(dst)
        if anon_vma is not None:
            put_anon_vma(anon_vma)
    folio_unlock(src)
    folio_put(dst, kernel)        # the allocation reference: dst lives on in its mappings
    return rc, (dst if rc == MIGRATEPAGE_SUCCESS else None)


hugetlb_ops.define(globals())      # the core mm calls these through hugetlb_ops (no import cycle)
