"""The mm's data structures (include/linux/mm_types.h).  Field comments say
which lock protects each field, as the kernel's headers do.

Every structure that the kernel frees with kfree/kmem_cache_free derives from
``KasanObject``: freeing it poisons it, and a later access reports a
use-after-free.
"""
import threading
import itertools

from ..debug.kasan import KasanObject
from ..locking import RwSemaphore, SpinLock
from . import internal
from .atomic import PerCpuCounter
from .interval_tree import IntervalTree

# -- vm_flags (include/linux/mm.h) ---------------------------------------------
VM_NONE = 0x0
VM_READ = 0x1
VM_WRITE = 0x2
VM_EXEC = 0x4
VM_SHARED = 0x8
VM_MAYREAD = 0x10
VM_MAYWRITE = 0x20
VM_MAYEXEC = 0x40
VM_MAYSHARE = 0x80
VM_GROWSDOWN = 0x100
VM_PFNMAP = 0x400
VM_LOCKED = 0x2000
VM_IO = 0x4000
VM_DONTCOPY = 0x20000
VM_DONTEXPAND = 0x40000
VM_LOCKONFAULT = 0x80000
VM_ACCOUNT = 0x100000
VM_NORESERVE = 0x200000
VM_HUGETLB = 0x400000
VM_WIPEONFORK = 0x2000000
VM_LOCKED_MASK = VM_LOCKED | VM_LOCKONFAULT
VM_ACCESS_FLAGS = VM_READ | VM_WRITE | VM_EXEC

VM_FLAG_NAMES = {VM_READ: "read", VM_WRITE: "write", VM_EXEC: "exec", VM_SHARED: "shared",
                 VM_MAYSHARE: "mayshare", VM_GROWSDOWN: "growsdown", VM_PFNMAP: "pfnmap",
                 VM_LOCKED: "locked", VM_IO: "io", VM_DONTCOPY: "dontcopy",
                 VM_LOCKONFAULT: "lockonfault", VM_HUGETLB: "hugetlb", VM_NORESERVE: "noreserve",
                 VM_WIPEONFORK: "wipeonfork"}

# rss counter types
MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES = range(4)


# vm_fault_t (include/linux/mm_types.h)
VM_FAULT_OOM = 0x000001
VM_FAULT_SIGBUS = 0x000002
VM_FAULT_MAJOR = 0x000004
VM_FAULT_HWPOISON = 0x000010
VM_FAULT_SIGSEGV = 0x000040
VM_FAULT_NOPAGE = 0x000100
VM_FAULT_LOCKED = 0x000200
VM_FAULT_RETRY = 0x000400
VM_FAULT_FALLBACK = 0x000800
VM_FAULT_DONE_COW = 0x001000
VM_FAULT_COMPLETED = 0x004000
VM_FAULT_ERROR = VM_FAULT_OOM | VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV | VM_FAULT_HWPOISON

# enum fault_flag
FAULT_FLAG_WRITE = 1 << 0
FAULT_FLAG_MKWRITE = 1 << 1
FAULT_FLAG_ALLOW_RETRY = 1 << 2
FAULT_FLAG_RETRY_NOWAIT = 1 << 3
FAULT_FLAG_KILLABLE = 1 << 4
FAULT_FLAG_TRIED = 1 << 5
FAULT_FLAG_USER = 1 << 6
FAULT_FLAG_REMOTE = 1 << 7
FAULT_FLAG_UNSHARE = 1 << 10
FAULT_FLAG_VMA_LOCK = 1 << 12       # the fault holds the VMA's read lock, not mmap_lock

RSS_NAMES = ("MM_FILEPAGES", "MM_ANONPAGES", "MM_SWAPENTS", "MM_SHMEMPAGES")

# -- folio flags (include/linux/page-flags.h) -------------------------------------
PG_locked = 1 << 0
PG_referenced = 1 << 1
PG_uptodate = 1 << 2
PG_dirty = 1 << 3
PG_lru = 1 << 4
PG_active = 1 << 5
PG_unevictable = 1 << 6
PG_mlocked = 1 << 7
PG_anon = 1 << 8          # the kernel keeps this in folio->mapping's low bit
PG_hugetlb = 1 << 9
PG_isolated = 1 << 10
PG_reserved = 1 << 11     # the zero page
PG_swapbacked = 1 << 12

PAGE_FLAG_NAMES = {PG_locked: "locked", PG_referenced: "referenced", PG_uptodate: "uptodate",
                   PG_dirty: "dirty", PG_lru: "lru", PG_active: "active",
                   PG_unevictable: "unevictable", PG_mlocked: "mlocked", PG_anon: "anon",
                   PG_hugetlb: "hugetlb", PG_isolated: "isolated", PG_reserved: "reserved",
                   PG_swapbacked: "swapbacked"}
# flags that must be clear when a page is freed (PAGE_FLAGS_CHECK_AT_FREE)
PAGE_FLAGS_CHECK_AT_FREE = PG_locked | PG_lru | PG_mlocked | PG_unevictable | PG_active


def flag_names(flags, names):
    return "|".join(n for b, n in names.items() if flags & b) or "none"


_ids = itertools.count(1)


# user_shadow values besides a bytearray (followed) and None (not followed)
SHADOW_DISCARDING = "discarding"       # being discarded: loads unchecked
SHADOW_WINDOW_STORE = "window store"   # a store landed while being discarded
SHADOW_LAZYFREE = "lazyfree"           # MADV_FREE'd: the old bytes or zeros until a store,
                                       # whose fault takes the page's bytes as they are


class MmStruct(KasanObject):
    """``struct mm_struct``."""

    KASAN_CACHE = "mm_struct"
    __slots__ = (
        "kernel", "id", "owner_pid",
        "mmap_lock",        # RwSemaphore "&mm->mmap_lock": protects the VMA tree, def_flags, brk
        "mm_mt",            # VmaTree; lookups need mmap_lock or an RCU read section
        "page_table_lock",  # SpinLock "&mm->page_table_lock": installing page-table pages
        "pgd",              # dict pud index -> PmdTable; entries installed under page_table_lock
        "def_flags",        # VM_LOCKED etc. for new VMAs; mmap_lock (write)
        "start_brk", "brk",  # mmap_lock (write)
        "mmap_base",
        "locked_vm",        # pages in VM_LOCKED VMAs; mmap_lock (write)
        "map_count",        # number of VMAs; mmap_lock (write)
        "rss_stat",         # list of PerCpuCounter, one per MM_* type
        "pgtables_bytes",   # PerCpuCounter
        "mm_users",         # atomic
        "mm_lock_seq",      # per-VMA locks: bumped by mmap_write_unlock/downgrade; mmap_lock (write)
        "dead",
        "cpumask",          # mm_cpumask: set of tlb.Cpu that may cache translations
        "tlb_flush_pending", "tlb_flush_flushed",  # batched reclaim flushes (rmap.py); atomic
        # Not kernel state: the data-integrity checker's model of what user
        # space stored in private anonymous memory (page address -> bytearray of
        # the written extent, zeros beyond it,
        # or None for a page of a mapping the checker does not follow).
        # Dropped wherever the kernel legitimately discards such memory
        # (do_vmi_munmap, MADV_DONTNEED) once no CPU can reach the old pages
        # (after the TLB flush).  ``shadow_lock`` (the checker's own raw lock,
        # innermost, never held across a scheduling point) makes a user copy
        # and its shadow update or comparison one step.  ``shadow_stale``:
        # the (page address, folio) pairs reclaim unmapped with its TLB flush
        # still pending (user_shadow_stale_begin); shadow_lock.
        "user_shadow", "shadow_lock", "shadow_stale",
        # Not kernel state either: the hugetlb faults of this mm in progress
        # (thread id -> HugetlbFault) that hold a ptep into a PMD table, for
        # the check that no table is unshared from under them (hugetlb.py,
        # hugetlb_fault_pte_get).
        "hugetlb_faults",
    )

    def __init__(self, kernel, owner_pid):
        self.kasan_alloc()
        self.kernel = kernel
        self.id = next(_ids)
        self.owner_pid = owner_pid
        self.mmap_lock = RwSemaphore("&mm->mmap_lock")
        self.mm_mt = internal.VmaTree(self)
        self.page_table_lock = SpinLock("&mm->page_table_lock")
        self.pgd = {}
        self.def_flags = 0
        self.start_brk = self.brk = 0
        self.mmap_base = 0x7F00_0000_0000
        self.locked_vm = 0
        self.map_count = 0
        self.rss_stat = [PerCpuCounter() for _ in RSS_NAMES]
        self.pgtables_bytes = PerCpuCounter()
        self.mm_users = 1
        self.mm_lock_seq = 0
        self.dead = False
        self.cpumask = set()
        self.tlb_flush_pending = self.tlb_flush_flushed = 0
        self.user_shadow = {}
        self.shadow_lock = threading.Lock()
        self.shadow_stale = set()
        self.hugetlb_faults = {}

    def user_shadow_stale_begin(self, page, folio):
        """Reclaim unmapped ``folio`` from ``page`` with its TLB flush batched
        (TTU_BATCH_FLUSH): until that flush, a CPU that cached the translation
        may still read the old folio (the kernel promises only that a write
        through a clean entry faults, that a dirty one is flushed before
        writeback, and that the folio is not freed before the flush: Mel
        Gorman's 72b252aed506).  Meanwhile the page may come back as another
        folio (a swap-in, once the clean old one left the swap cache) and be
        written: a load through the stale entry then reads the old bytes,
        which is not corruption (see uaccess._stale_read).  Context: the
        PTE lock of ``page`` held (the record exists before anyone can map
        the page again)."""
        with self.shadow_lock:
            self.shadow_stale.add((page, folio))

    def user_shadow_stale_end(self, page, folio):
        """The batched flush is done: no CPU reaches ``folio`` at ``page``."""
        with self.shadow_lock:
            self.shadow_stale.discard((page, folio))

    def _stale_forget(self, start, end):
        """munmap, MADV_DONTNEED/FREE and mremap flush every CPU before they
        return (flush_tlb_batched_pending, 3ea277194daa): from then on a load
        through an older entry of [start, end) is checked again -- a stale
        entry that survived them is the bug of ``no-pending-flush``.
        Context: shadow_lock held."""
        if self.shadow_stale:
            self.shadow_stale -= {(a, f) for a, f in self.shadow_stale if start <= a < end}

    def user_shadow_discard_begin(self, start, end):
        """The kernel starts discarding [start, end) (munmap, MADV_DONTNEED):
        until the discard is over, loads there may legitimately see the old
        bytes or zeros, and stores are not followed (SHADOW_DISCARDING; a
        store turns it into SHADOW_WINDOW_STORE)."""
        sh = self.user_shadow
        with self.shadow_lock:
            for a in [a for a in sh if start <= a < end and sh[a] is not None]:
                sh[a] = SHADOW_DISCARDING

    def user_shadow_discard_end(self, start, end, zeroed):
        """The discard is over (the TLBs are flushed: no CPU reaches the old
        pages).  ``zeroed`` (MADV_DONTNEED): the pages now read as zeros,
        unless a store landed during the discard (then they are no longer
        followed); else (munmap) the checker forgets the range."""
        sh = self.user_shadow
        with self.shadow_lock:
            self._stale_forget(start, end)
            for a in [a for a in sh if start <= a < end]:
                if zeroed and sh[a] is SHADOW_DISCARDING:
                    sh[a] = bytearray()         # zeros (the shadow keeps the written extent)
                elif not zeroed or sh[a] is SHADOW_WINDOW_STORE:
                    del sh[a]

    def user_shadow_lazyfree_end(self, start, end):
        """MADV_FREE is over (the PTEs are clean, the TLBs flushed): each
        followed page reads its old bytes until reclaim frees it, zeros after
        that -- and a store cancels the free of a page reclaim has not taken.
        So loads are unchecked and the next store, which faults (the PTE is
        clean), starts the shadow again from the bytes of the page then
        mapped (SHADOW_LAZYFREE).  A page a store reached during the discard
        is no longer followed."""
        sh = self.user_shadow
        with self.shadow_lock:
            self._stale_forget(start, end)
            for a in [a for a in sh if start <= a < end]:
                if sh[a] is SHADOW_DISCARDING:
                    sh[a] = SHADOW_LAZYFREE
                else:
                    del sh[a]

    def user_shadow_move(self, old_start, new_start, length):
        """mremap moved the pages of [old_start, old_start + length) to
        new_start, and every CPU's TLB has been flushed of the old addresses
        (move_ptes flushes before it drops the PTE lock).  What the checker
        knows about each page moves with it.  Until then, stores through a
        stale TLB entry of the old address landed in the moved page and were
        recorded under the old address (moved here with the rest); loads at
        the new address found no shadow (unchecked), and a first store there
        took the fault path, which waits for mremap's mmap_lock."""
        sh = self.user_shadow
        delta = new_start - old_start
        with self.shadow_lock:
            self._stale_forget(old_start, old_start + length)
            for a in [a for a in sh if new_start <= a < new_start + length]:
                del sh[a]
            moved = [(a, sh.pop(a)) for a in [a for a in sh if old_start <= a < old_start + length]]
            for a, v in moved:
                sh[a + delta] = v

    def user_shadow_drop(self, start, end):
        """Forget [start, end) at once (nothing can be accessing it)."""
        self.user_shadow_discard_end(start, end, False)

    def get_mm_counter(self, member):
        return self.rss_stat[member].sum()

    def __repr__(self):
        return f"<mm of pid {self.owner_pid}>"


class VmAreaStruct(KasanObject):
    """``struct vm_area_struct``.  vm_start/vm_end/vm_pgoff change only under
    mmap_lock (write) *and* the rmap locks (i_mmap_rwsem for file VMAs,
    anon_vma->rwsem for anon), because rmap walkers read them under those.
    Every change also write-locks the VMA (vma_start_write), because page
    faults under the per-VMA lock hold neither mmap_lock nor the rmap locks.

    The cache is SLAB_TYPESAFE_BY_RCU, as vm_area_cachep is in mainline: a
    reader that found the VMA under rcu_read_lock may still read a freed VMA
    (KASAN stays quiet inside the RCU section), so it must lock the VMA and
    then revalidate it (detached? same mm? address still inside?) before use;
    a use after the RCU section of a VMA that was freed meanwhile is a
    use-after-free, reported."""

    KASAN_CACHE = "vm_area_struct"
    KASAN_TYPESAFE_BY_RCU = True
    __slots__ = (
        "vm_start", "vm_end", "vm_pgoff",
        "vm_flags",         # mmap_lock (write)
        "vm_mm",
        "vm_file",          # a File (inode + address_space) or None
        "anon_vma",         # set once under mm->page_table_lock (anon_vma_prepare)
        "anon_vma_chain",   # list of AnonVmaChain; mmap_lock + anon_vma lock
        "vm_policy",        # Mempolicy or None (part 2); mmap_lock (write)
        "vm_private_data",  # hugetlb vma_lock (part 2)
        "detached",         # not in the VMA tree; set under the VMA write lock (vma_mark_detached)
        "vm_lock",          # RwSemaphore "vm_lock", created on first use (mmap_lock._vma_lock)
        "vm_lock_seq",      # == mm.mm_lock_seq while write-locked; the VMA write lock
        "munlock_passed",   # pymm's own: the folios exit's munlock of it has passed (mlock.py)
    )

    def __init__(self, mm, start, end, flags, pgoff, file=None):
        self.kasan_alloc(3)
        self.vm_mm = mm
        self.vm_start = start
        self.vm_end = end
        self.vm_flags = flags
        self.vm_pgoff = pgoff
        self.vm_file = file
        self.anon_vma = None
        self.anon_vma_chain = []
        self.vm_policy = None
        self.vm_private_data = None
        self.detached = True
        self.vm_lock = None
        self.vm_lock_seq = -1
        self.munlock_passed = None

    def vma_pages(self):
        return (self.vm_end - self.vm_start) >> 12

    def linear_page_index(self, address):
        return ((address - self.vm_start) >> 12) + self.vm_pgoff

    def is_anonymous(self):
        return self.vm_file is None

    def dump_vma(self):
        """The VMA as text (the kernel's dump_vma: on a freed VMA, KASAN says so)."""
        return (f"<vma {self.vm_start:#x}-{self.vm_end:#x} "
                f"{flag_names(self.vm_flags, VM_FLAG_NAMES)} pgoff {self.vm_pgoff:#x}"
                f"{' file ' + self.vm_file.name if self.vm_file else ''}>")

    __repr__ = dump_vma


class AnonVma(KasanObject):
    """``struct anon_vma``.  The rwsem lives in the root; ``rb_root`` is the
    interval tree of AnonVmaChain nodes, modified under the root's rwsem (write)
    and walked under it (read)."""

    KASAN_CACHE = "anon_vma"
    __slots__ = ("root", "rwsem", "refcount", "degree", "rb_root", "parent", "num_children",
                 "num_active_vmas")

    def __init__(self, root=None):
        self.kasan_alloc(3)
        self.root = root if root is not None else self
        self.rwsem = RwSemaphore("&anon_vma->rwsem") if root is None else None
        self.refcount = 1
        self.degree = 1
        self.rb_root = IntervalTree()
        self.parent = self
        self.num_children = 0
        self.num_active_vmas = 0


class AnonVmaChain(KasanObject):
    """``struct anon_vma_chain``: links a VMA and an anon_vma; a node of the
    anon_vma's interval tree keyed by the VMA's page offsets."""

    KASAN_CACHE = "anon_vma_chain"
    __slots__ = ("vma", "anon_vma")

    def __init__(self, vma, anon_vma):
        self.kasan_alloc(3)
        self.vma = vma
        self.anon_vma = anon_vma

    def interval(self):
        v = self.vma
        return v.vm_pgoff, v.vm_pgoff + v.vma_pages() - 1


class Folio(KasanObject):
    """``struct folio``.  Kept small (pymm models a million of them): contents
    are allocated at the first store; the page lock object is created at the
    first folio_lock (see filemap.folio_lock)."""

    KASAN_CACHE = "page"
    __slots__ = (
        "flags",        # PG_* bits; PG_locked is set only while the lock is held
        "_refcount",    # atomic
        "_mapcount",    # atomic; number of PTEs mapping it
        "mlock_count",  # PTE mappings in VM_LOCKED VMAs; lruvec lru_lock
        "mapping",      # AddressSpace (file) or AnonVma (anon), or None
        "index",        # page index in the file, or linear index for anon
        "node",
        "order",
        "data",         # bytearray of the bytes up to the last one written, or None;
                        # the rest of the folio reads as zeros (sparse contents)
        "lru_prev", "lru_next",   # intrusive LRU list; lruvec lru_lock
        "lock",         # the page lock (FolioLock), created lazily
        "swap",         # SwapEntry while in the swap cache (folio->swap); folio lock to change
    )

    def __init__(self, node, order=0, track=None):
        if track is None:
            self.kasan_alloc(4)
        else:                   # a bulk allocation: one saved track for the batch
            self._kasan_alloc = track
            self._kasan_free = 0
        self.flags = 0
        self._refcount = 1
        self._mapcount = 0
        self.mlock_count = 0
        self.mapping = None
        self.index = 0
        self.node = node
        self.order = order
        self.data = None
        self.lru_prev = self.lru_next = None
        self.lock = None
        self.swap = None

    def nr_pages(self):
        return 1 << self.order

    def folio_test_anon(self):
        return bool(self.flags & PG_anon)

    def folio_mapped(self):
        return self._mapcount > 0

    def read_bytes(self, off, n):
        d = self.data
        if d is None:
            return bytes(n)
        got = bytes(d[off:off + n])
        return got if len(got) == n else got + bytes(n - len(got))

    def write_bytes(self, off, b):
        """Store ``b`` at ``off``.  Only the written extent (from offset 0 to
        the last byte ever written) is kept, so a page touched by one store
        costs bytes, not 4 KiB (or 2 MiB for a huge page); zeros stored
        beyond the extent change nothing and are not kept."""
        d = self.data
        end = off + len(b)
        if d is None or end > len(d):
            have = 0 if d is None else len(d)
            if off >= have and not any(b):
                return
            if d is None:
                d = self.data = bytearray(end)
            else:
                d.extend(bytes(end - have))
        d[off:end] = b

    def __repr__(self):
        return (f"<folio node {self.node} order {self.order} idx {self.index:#x} "
                f"ref {self._refcount} map {self._mapcount} "
                f"{flag_names(self.flags, PAGE_FLAG_NAMES)}>")


def mm_counter(folio):
    """The rss counter a folio's mapping counts in (include/linux/mm.h)."""
    if folio.flags & PG_anon:
        return MM_ANONPAGES
    return MM_SHMEMPAGES if folio.flags & PG_swapbacked else MM_FILEPAGES
