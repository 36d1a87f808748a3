"""Page tables: real table pages at two levels below a PUD directory.

mm.pgd (a dict standing in for the PGD/P4D/PUD levels, indexed by addr >> 30)
holds PMD tables; a PMD table's 512 entries hold PTE tables (or, part 2,
hugetlb entries); a PTE table's 512 entries hold a folio (present), a
migration entry, or None.  Each table page has its own spinlock (split ptl)
and is freed -- poisoned -- when the range it covers has no VMA left
(free_pgtables; through the mmu_gather: after the TLB flush and an RCU grace
period, as CONFIG_MMU_GATHER_RCU_TABLE_FREE does), so a walker that kept a
table pointer across a lock drop, or a lockless walker outside its
interrupts-off region, reports a use-after-free of the table or its lock.

PTE bits live in a bytearray beside the entries (one byte per PTE).
"""
from ..debug.kasan import KasanObject, kasan_poison
from ..debug.report import pymm_checks, pymm_only_title, report, report_pymm_check
from ..locking import SpinLock
from ..debug.fault_inject import should_fail
from ..sched import point
from .gfp import GFP_PGTABLE_USER, might_alloc
from .mmu_gather import tlb_remove_table

PTRS_PER_TABLE = 512
PMD_SHIFT = 21
PMD_SIZE = 1 << PMD_SHIFT
PUD_SHIFT = 30
PUD_SIZE = 1 << PUD_SHIFT

# PTE bits
_PAGE_RW = 0x1
_PAGE_DIRTY = 0x2
_PAGE_ACCESSED = 0x4
_PAGE_SPECIAL = 0x8      # the zero page: no refcount, no rmap
_PAGE_PROTNONE = 0x10    # PROT_NONE: the hardware treats the PTE as not present


class PteTable(KasanObject):
    """A PTE table page.  Entries and bits are protected by ``ptl``."""

    KASAN_CACHE = "page table (pte)"
    KASAN_LOCKS = ("ptl",)      # ptlock_free with the table: debug_check_no_locks_freed
    __slots__ = ("ptes", "bits", "ptl", "nr", "addr")

    def __init__(self, addr):
        self.kasan_alloc(3)
        self.ptes = [None] * PTRS_PER_TABLE
        self.bits = bytearray(PTRS_PER_TABLE)
        self.ptl = SpinLock("ptlock_ptr(ptdesc)")
        self.nr = 0          # non-none entries; ptl
        self.addr = addr     # first address covered


class PmdTable(KasanObject):
    """A PMD table page.  ``entries`` installed under mm->page_table_lock;
    ``ptl`` is the split PMD lock (huge_pte_lock for PMD-sized hugetlb);
    ``pt_share_count`` counts extra sharers (hugetlb PMD sharing, part 2);
    ``bits`` holds the PTE bits of hugetlb entries (ptl), as PteTable.bits."""

    KASAN_CACHE = "page table (pmd)"
    KASAN_LOCKS = ("ptl",)
    __slots__ = ("entries", "bits", "ptl", "pt_share_count", "addr")

    def __init__(self, addr):
        self.kasan_alloc(3)
        self.entries = [None] * PTRS_PER_TABLE
        self.bits = bytearray(PTRS_PER_TABLE)
        self.ptl = SpinLock("&pmd->ptl")
        self.pt_share_count = 0
        self.addr = addr


def pmd_index(addr):
    return (addr >> PMD_SHIFT) & (PTRS_PER_TABLE - 1)


def pte_index(addr):
    return (addr >> 12) & (PTRS_PER_TABLE - 1)


def pte_offset(mm, addr):
    """The PTE table covering addr, or None.  Context: mmap_lock held."""
    pmd = mm.pgd.get(addr >> PUD_SHIFT)
    if pmd is None:
        return None
    pt = pmd.entries[pmd_index(addr)]
    return pt if isinstance(pt, PteTable) else None


def pte_ranges(mm, start, end):
    """Yield (table, addr, next) for every existing PTE table covering part of
    [start, end): the table maps [addr, next).  The one walk loop that zap,
    fork, mlock and mprotect share.  Context: mmap_lock (or the rmap lock)
    keeps the tables alive."""
    addr = start
    while addr < end:
        nxt = min((addr & ~(PMD_SIZE - 1)) + PMD_SIZE, end)
        pt = pte_offset(mm, addr)
        if pt is not None:
            yield pt, addr, nxt
        addr = nxt


def pmd_alloc(mm, addr, gfp=GFP_PGTABLE_USER):
    """The PMD table covering addr, allocated and installed in the PUD entry
    if needed (__pmd_alloc); None when the table page cannot be allocated
    (fault injection).  Context: mmap_lock held; takes page_table_lock."""
    key = addr >> PUD_SHIFT
    pmd = mm.pgd.get(key)
    if pmd is None:
        might_alloc(gfp)                        # pmd_alloc_one
        if should_fail(mm.kernel, "pgtable-alloc", 4096):
            return None
        new = PmdTable(addr & ~(PUD_SIZE - 1))
        mm.page_table_lock.lock()
        pmd = mm.pgd.get(key)
        if pmd is None:
            mm.pgd[key] = pmd = new
            mm.pgtables_bytes.add(4096)
            new = None
        mm.page_table_lock.unlock()
        if new is not None:
            kasan_poison(new)
    return pmd


def pte_alloc(mm, addr):
    """Return the PTE table for addr, allocating the PMD and PTE tables as
    needed (__pmd_alloc / __pte_alloc).  New tables are allocated before
    taking page_table_lock and dropped if another thread installed one first.
    Returns None when a table page cannot be allocated (the caller says
    VM_FAULT_OOM or -ENOMEM).  Context: mmap_lock held; may sleep."""
    pmd = mm.pgd.get(addr >> PUD_SHIFT)             # pmd_alloc's common case, inline
    if pmd is None:
        pmd = pmd_alloc(mm, addr)
        if pmd is None:
            return None
    i = (addr >> PMD_SHIFT) & (PTRS_PER_TABLE - 1)  # pmd_index
    pt = pmd.entries[i]
    if pt is None:
        might_alloc(GFP_PGTABLE_USER)           # pte_alloc_one
        if should_fail(mm.kernel, "pgtable-alloc", 4096):
            return None
        new = PteTable(addr & ~(PMD_SIZE - 1))
        mm.page_table_lock.lock()
        pt = pmd.entries[i]
        if pt is None:
            pmd.entries[i] = pt = new
            mm.pgtables_bytes.add(4096)
            new = None
        mm.page_table_lock.unlock()
        if new is not None:
            kasan_poison(new)
        point("pte_alloc")
    return pt


# The ceiling for "no VMA above": the top of the page-table tree, not
# TASK_SIZE (one page short of 2^47, so the last PTE and PMD tables would
# never lie wholly below it).  The kernel passes USER_PGTABLES_CEILING (0,
# meaning the top) for the same reason.
USER_PGTABLES_CEILING = 1 << 47


PGTABLE_IN_USE_TITLE = pymm_only_title("BUG: page table freed under a live VMA")


def check_pgtable_unused(mm, table, lo, hi, floor, ceiling):
    """pymm's own check (the kernel has none): a page table is freed only
    where no VMA is left, so its span [lo, hi) must intersect no VMA still
    in the tree.  free_pgd_range frees only tables lying wholly in
    [floor, ceiling): the gap between the unmapped range's neighbours, which
    the caller took from the tree when it detached the range, under the
    write lock.  A correct kernel changes no VMA in that gap before the
    free (the write lock is held throughout, or the downgraded read lock
    excludes every VMA change; exit_mmap has emptied the tree), so a hit is
    a VMA that moved into the gap after the neighbours were taken -- a stack
    grown under the read lock (``munmap-downgrade``) -- and the table about
    to be freed may already be in its faults' hands.  It fires at the free,
    before whatever that table's later users do (a page leaked with it, a
    write to the freed table, a non-empty table freed): a fault uses a
    table only for an address its VMA covers, so in every such interleaving
    the VMA grew before its fault reached the table, hence before the free.
    It reports the race, not one of its outcomes: a fault that reaches the
    address only after the table is unhooked allocates a fresh one, and that
    interleaving would have ended without harm (as lockdep reports an
    inversion that has not deadlocked yet).  Off with pymm_checks.
    Context: mmap_lock held (the tree is read as find_vma does)."""
    if not pymm_checks(mm.kernel):
        return
    vma = mm.mm_mt.find_vma_intersection(lo, hi)
    if vma is None:
        return
    title = PGTABLE_IN_USE_TITLE
    kind = "PTE" if isinstance(table, PteTable) else "PMD"
    report_pymm_check("assertion", title,
                      [f"{kind} table for {lo:#x}-{hi:#x} freed (free_pgd_range floor {floor:#x}, "
                       f"ceiling {ceiling:#x}), but {vma!r} still maps part of that range:",
                       "the VMA moved into the unmapped gap after munmap took its neighbours, and a",
                       "fault in it may hold the table, or take it, while munmap frees it."],
                      kernel=mm.kernel)


def free_pgd_range(tlb, start, end, floor, ceiling):
    """Free the page tables covering [start, end) whose whole span lies in
    [floor, ceiling) -- the gap left between the neighbouring VMAs -- as
    free_pgd_range does.  The tables are unhooked here and freed by the
    gather (tlb_remove_table): after the TLB flush and an RCU grace period,
    since the hardware walk and gup_fast read them with no lock.
    Context: mmap_lock held, the range's VMAs detached and unlinked from
    rmap and every PTE in the range already zapped."""
    mm = tlb.mm
    for key in sorted(k for k in list(mm.pgd) if (k << PUD_SHIFT) < end and ((k + 1) << PUD_SHIFT) > start):
        pmd = mm.pgd[key]
        base = key << PUD_SHIFT
        for i in range(PTRS_PER_TABLE):
            pt = pmd.entries[i]
            if pt is None or not isinstance(pt, PteTable):
                continue
            lo = base + (i << PMD_SHIFT)
            hi = lo + PMD_SIZE
            if hi <= start or lo >= end or lo < floor or hi > ceiling:
                continue
            check_pgtable_unused(mm, pt, lo, hi, floor, ceiling)
            if pt.nr:
                report("bad-page-state", "BUG: non-empty page table freed",
                       f"BUG: PTE table at {lo:#x} freed with {pt.nr} entries still set")
            pmd.entries[i] = None
            mm.pgtables_bytes.add(-4096)
            tlb_remove_table(tlb, pt, lo, PMD_SIZE)      # pte_free_tlb
        if (base >= floor and base + PUD_SIZE <= ceiling and
                pmd.pt_share_count == 0 and all(e is None for e in pmd.entries)):
            check_pgtable_unused(mm, pmd, base, base + PUD_SIZE, floor, ceiling)
            del mm.pgd[key]
            mm.pgtables_bytes.add(-4096)
            tlb_remove_table(tlb, pmd, base, PUD_SIZE)   # pmd_free_tlb
