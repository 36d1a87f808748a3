"""mmu_gather (mm/mmu_gather.c, include/asm-generic/tlb.h): unmap first,
flush the TLBs, free last.

Zapping clears PTEs under the page-table lock, but another CPU may still hold
a translation to the page in its TLB and go on reading and writing it until
the flush IPI reaches it.  So the zap does not free what it unmapped: it
gathers the folios (``__tlb_remove_folio``) and the page-table pages
(``tlb_remove_table``), records the range to flush (``tlb_flush_pte_range``)
and, in ``tlb_finish_mmu``: flushes the TLBs of the range
(``tlb_flush_mmu_tlbonly``), then drops the folios' references
(``tlb_batch_pages_flush``), then hands the tables to RCU
(``tlb_table_flush``: CONFIG_MMU_GATHER_RCU_TABLE_FREE), because lockless
walkers -- the hardware walk, gup_fast -- may still be reading them with
interrupts off; an RCU grace period waits for those regions.

Simplification: pymm's batches never fill up (no ``force_flush`` when the
batch page is full, no tlb_remove_table_sync_one fallback), and the flush
range is one [start, end) per gather, as the kernel's for one VMA at a time.
"""
from ..debug.kasan import kasan_poison, kasan_save_track
from ..rcu import call_rcu
from . import internal
from .tlb import TLB_FLUSH_ALL, flush_tlb_mm_range


class MmuGather:
    """``struct mmu_gather`` for one mm (tlb_gather_mmu / tlb_gather_mmu_fullmm)."""

    __slots__ = ("mm", "fullmm", "start", "end", "pages", "tables", "freed_tables", "kernel")

    def __init__(self, mm, fullmm=False):
        self.mm = mm
        self.kernel = mm.kernel
        self.fullmm = fullmm
        self.start = None        # the range to flush, or None
        self.end = 0
        self.pages = []          # folios whose references drop after the flush
        self.tables = []         # page-table pages freed after the flush and a grace period
        self.freed_tables = False

    def __repr__(self):
        return (f"<mmu_gather {self.mm!r} range {self.start or 0:#x}-{self.end:#x} "
                f"{len(self.pages)} pages {len(self.tables)} tables>")


def tlb_gather_mmu(mm):
    return MmuGather(mm)


def tlb_gather_mmu_fullmm(mm):
    """exit_mmap's gather: the whole address space goes."""
    return MmuGather(mm, fullmm=True)


def tlb_flush_pte_range(tlb, addr, size):
    """__tlb_adjust_range: remember that [addr, addr + size) needs a flush."""
    if tlb.start is None or addr < tlb.start:
        tlb.start = addr
    if addr + size > tlb.end:
        tlb.end = addr + size


def __tlb_remove_folio(tlb, folio):
    """Drop ``folio``'s reference after the flush (the PTE held it)."""
    tlb.pages.append(folio)


def tlb_remove_table(tlb, table, addr, size):
    """Free a page-table page after the flush and an RCU grace period
    (pte_free_tlb / pmd_free_tlb).  Context: the table is unhooked."""
    tlb_flush_pte_range(tlb, addr, size)
    tlb.freed_tables = True
    tlb.tables.append((table, kasan_save_track()))


def tlb_flush_mmu_tlbonly(tlb):
    if tlb.start is None:
        return
    start, end = tlb.start, tlb.end
    tlb.start, tlb.end = None, 0
    flush_tlb_mm_range(tlb.mm, start, TLB_FLUSH_ALL if tlb.fullmm else end)


def tlb_batch_pages_flush(tlb):
    """Drop the gathered folios' references (free_pages_and_swap_cache)."""
    pages, tlb.pages = tlb.pages, []
    if pages:
        internal.free_pages_and_swap_cache(tlb.kernel, pages)


def tlb_remove_table_rcu(tables):
    """The RCU callback: free the tables (their KASAN free stack is where
    they were handed to the gather)."""
    for t, stack in tables:
        kasan_poison(t, stack=stack)


def tlb_table_flush(tlb):
    tables, tlb.tables = tlb.tables, []
    if tables:
        call_rcu(lambda: tlb_remove_table_rcu(tables))


def tlb_flush_mmu(tlb):
    """Flush the TLBs, then free what the flush made unreachable."""
    tlb_flush_mmu_tlbonly(tlb)
    tlb_batch_pages_flush(tlb)
    tlb_table_flush(tlb)


def tlb_finish_mmu(tlb):
    tlb_flush_mmu(tlb)
