"""madvise(2) (mm/madvise.c): DONTNEED, FREE (lazy free), REMOVE,
POPULATE_(READ|WRITE), COLD/PAGEOUT, DONTFORK/DOFORK, WIPEONFORK/KEEPONFORK,
and the advice that needs no work."""
import errno

from ..constants import (FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, HPAGE_MASK, MADV_COLD,
                         MADV_DOFORK, MADV_DONTFORK, MADV_DONTNEED, MADV_FREE, MADV_KEEPONFORK,
                         MADV_NORMAL, MADV_PAGEOUT, MADV_POPULATE_READ, MADV_POPULATE_WRITE,
                         MADV_RANDOM, MADV_REMOVE, MADV_SEQUENTIAL, MADV_WILLNEED, MADV_WIPEONFORK)
from .filemap import folio_trylock, folio_unlock
from .atomic import clear_bits
from .gup import faultin_page_range
from .tlb import flush_tlb_range
from .pgtable import _PAGE_DIRTY, pte_index, pte_ranges
from .swap_state import SwapEntry, folio_free_swap, free_swap_and_cache
from .memory import zap_page_range_single
from .mm_types import (Folio, MM_SWAPENTS, PG_anon, PG_dirty, PG_mlocked, PG_reserved,
                       PG_swapbacked, VM_DONTCOPY, VM_HUGETLB, VM_IO, VM_LOCKED, VM_MAYWRITE,
                       VM_PFNMAP, VM_READ, VM_SHARED, VM_WIPEONFORK, VM_WRITE)
from .mmap import vma_modify_flags, vma_splits_ok, vmas_may_split
from .mmap_lock import mmap_read_lock, mmap_read_unlock, mmap_write_lock, mmap_write_unlock
from .mempolicy import folio_isolate
from .rmap import flush_tlb_batched_pending
from .swap import folio_deactivate
from .vmscan import ScanControl, shrink_folio_list

NOOP_ADVICE = (MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED)
VALID_ADVICE = NOOP_ADVICE + (MADV_DONTNEED, MADV_FREE, MADV_REMOVE, MADV_DONTFORK, MADV_DOFORK,
                              MADV_POPULATE_READ, MADV_POPULATE_WRITE, MADV_COLD, MADV_PAGEOUT,
                              MADV_WIPEONFORK, MADV_KEEPONFORK)


def _vmas_covering(mm, start, end):
    vmas = mm.mm_mt.range(start, end)
    pos = start
    for v in vmas:
        if v.vm_start > pos:
            return None
        pos = v.vm_end
    return vmas if vmas and pos >= end else None


def do_madvise(mm, start, end, advice):
    """Context: mmap_lock not held.  Returns 0 or -errno."""
    if advice in NOOP_ADVICE:
        mmap_read_lock(mm)
        ok = _vmas_covering(mm, start, end) is not None
        mmap_read_unlock(mm)
        return 0 if ok else -errno.ENOMEM
    if advice in (MADV_POPULATE_READ, MADV_POPULATE_WRITE):
        return madvise_populate(mm, start, end, advice == MADV_POPULATE_WRITE)
    if advice in (MADV_COLD, MADV_PAGEOUT):
        return madvise_cold_or_pageout(mm, start, end, advice == MADV_PAGEOUT)
    if advice in (MADV_DONTFORK, MADV_DOFORK, MADV_WIPEONFORK, MADV_KEEPONFORK):
        mmap_write_lock(mm)
        try:
            vmas = _vmas_covering(mm, start, end)
            if vmas is None:
                return -errno.ENOMEM
            err = vmas_may_split(mm, start, end)
            if err:
                return err
            if advice == MADV_WIPEONFORK and any(v.vm_file is not None or v.vm_flags & VM_SHARED
                                                 for v in vmas):
                return -errno.EINVAL       # only private anonymous memory can be wiped
            bit, setting = {MADV_DONTFORK: (VM_DONTCOPY, True), MADV_DOFORK: (VM_DONTCOPY, False),
                            MADV_WIPEONFORK: (VM_WIPEONFORK, True),
                            MADV_KEEPONFORK: (VM_WIPEONFORK, False)}[advice]
            if not vma_splits_ok(mm, start, end, lambda v: bool(v.vm_flags & bit) != setting):
                return -errno.ENOMEM       # vm.max_map_count (madvise_update_vma skips the same)
            pos = start
            while pos < end:
                cur = mm.mm_mt.vma_lookup(pos)
                e = min(end, cur.vm_end)
                nf = cur.vm_flags | bit if setting else cur.vm_flags & ~bit
                if nf != cur.vm_flags:
                    vma_modify_flags(cur, pos, e, nf)
                pos = e
            return 0
        finally:
            mmap_write_unlock(mm)
    if advice == MADV_REMOVE:
        return madvise_remove(mm, start, end)
    # MADV_DONTNEED / MADV_FREE
    mmap_read_lock(mm)
    try:
        vmas = _vmas_covering(mm, start, end)
        if vmas is None:
            return -errno.ENOMEM
        ranges = []
        for v in vmas:           # all checked first: a refused call changes nothing
            s, e = max(start, v.vm_start), min(end, v.vm_end)
            if not v.vm_flags & VM_HUGETLB:
                if v.vm_flags & (VM_LOCKED | VM_PFNMAP):
                    return -errno.EINVAL
                if advice == MADV_FREE and (v.vm_file is not None or v.vm_flags & VM_SHARED):
                    return -errno.EINVAL       # madvise_free_single_vma: anonymous VMAs only
            else:
                # madvise_dontneed_free_valid_vma: DONTNEED only, from a huge
                # page boundary; the end is rounded DOWN so that a huge page
                # only partly in the range keeps its data
                if advice != MADV_DONTNEED or s & ~HPAGE_MASK:
                    return -errno.EINVAL
                e &= HPAGE_MASK
            if s < e:
                ranges.append((v, s, e))
        mm.user_shadow_discard_begin(start, end)
        for v, s, e in ranges:
            if advice == MADV_FREE:
                madvise_free_single_vma(v, s, e)
                flush_tlb_range(v, s, e)     # the PTEs lost their dirty and write bits
            else:
                zap_page_range_single(v, s, e - s)
        if advice != MADV_FREE:
            mm.user_shadow_discard_end(start, end, True)    # the TLBs are flushed: zero-fill now
        else:
            mm.user_shadow_lazyfree_end(start, end)         # lazily freed: may read old or zeros
        return 0
    finally:
        mmap_read_unlock(mm)


def madvise_free_single_vma(vma, start, end):
    """MADV_FREE: the pages may be freed lazily.  Swap entries go now; each
    folio mapped only here leaves the swap cache, becomes clean with a clean
    PTE and loses PG_swapbacked (folio_mark_lazyfree).  Reclaim then frees it
    instead of swapping it out -- unless a store dirtied its PTE again, which
    cancels the lazy free (try_to_unmap_one).  Context: mmap_lock held for
    read; the ptl per table, folio locks by trylock only."""
    mm = vma.vm_mm
    k = mm.kernel
    for pt, addr, nxt in pte_ranges(mm, start, end):
        pt.ptl.lock()
        flush_tlb_batched_pending(mm)    # madvise_free_pte_range (3ea277194daa)
        for i in range(pte_index(addr), pte_index(nxt - 1) + 1):
            e = pt.ptes[i]
            if e is None or e is k.zero_page:
                continue
            if type(e) is SwapEntry:
                pt.ptes[i] = None
                pt.bits[i] = 0
                pt.nr -= 1
                mm.rss_stat[MM_SWAPENTS].add(-1)
                free_swap_and_cache(e)
                a = addr + ((i - pte_index(addr)) << 12)
                mm.user_shadow_drop(a, a + 4096)      # it reads zeros now
                continue
            if not isinstance(e, Folio) or e._mapcount != 1 or not e.flags & PG_anon:
                continue                 # a migration entry, or shared: skip it
            if e.swap is not None or e.flags & PG_dirty:
                if not folio_trylock(e):
                    continue
                if e.swap is not None and not folio_free_swap(e):
                    folio_unlock(e)
                    continue
                clear_bits(e, "flags", PG_dirty)
                folio_unlock(e)
            pt.bits[i] &= ~_PAGE_DIRTY
            if not e.flags & PG_mlocked:
                clear_bits(e, "flags", PG_swapbacked)      # folio_mark_lazyfree
        pt.ptl.unlock()


def madvise_remove(mm, start, end):
    """Punch a hole in the file behind a shared mapping; the fallocate runs
    after mmap_lock is dropped (it takes i_rwsem, which orders before mmap_lock)."""
    mmap_read_lock(mm)
    vma = mm.mm_mt.vma_lookup(start)
    if vma is None or _vmas_covering(mm, start, end) is None:
        mmap_read_unlock(mm)
        return -errno.ENOMEM
    if vma.vm_flags & VM_LOCKED or vma.vm_file is None or end > vma.vm_end:
        mmap_read_unlock(mm)
        return -errno.EINVAL
    if not vma.vm_flags & VM_SHARED or not vma.vm_flags & VM_MAYWRITE:
        mmap_read_unlock(mm)
        return -errno.EACCES           # not a shared writable mapping
    f = vma.vm_file
    offset = ((start - vma.vm_start) >> 12) + vma.vm_pgoff
    mmap_read_unlock(mm)
    return f.vfs_fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset << 12, end - start)


def madvise_populate(mm, start, end, write):
    """Fault the range in as loads or stores would; -ENOMEM for holes, -EINVAL
    for incompatible mappings or permissions, -EFAULT where an access would
    get SIGBUS/SIGSEGV."""
    mmap_read_lock(mm)
    vmas = _vmas_covering(mm, start, end)
    if vmas is None:
        mmap_read_unlock(mm)
        return -errno.ENOMEM
    for v in vmas:
        if v.vm_flags & (VM_IO | VM_PFNMAP) or (write and not v.vm_flags & VM_WRITE) or \
                not v.vm_flags & (VM_WRITE | VM_READ):
            mmap_read_unlock(mm)
            return -errno.EINVAL
    locked = [1]
    while start < end:
        if not locked[0]:
            mmap_read_lock(mm)
            locked[0] = 1
            if _vmas_covering(mm, start, end) is None:
                mmap_read_unlock(mm)
                return -errno.ENOMEM
        pages = faultin_page_range(mm, start, end, write, locked)
        if pages < 0:
            if locked[0]:
                mmap_read_unlock(mm)
            return -errno.EFAULT if pages == -errno.EFAULT else pages
        start += pages << 12
    if locked[0]:
        mmap_read_unlock(mm)
    return 0


def madvise_cold_or_pageout(mm, start, end, pageout):
    """MADV_COLD: age the range's pages so reclaim takes them first;
    MADV_PAGEOUT: reclaim them now (anonymous pages go to swap; page cache of
    tmpfs stays, as pymm's reclaim keeps shmem).  Pages mapped by more than
    one PTE are left alone (folio_maybe_mapped_shared).  EINVAL for locked,
    PFN-mapped and hugetlb VMAs (can_madv_lru_vma), ENOMEM for holes.
    Context: takes mmap_lock for read, each PTE lock, then reclaims with
    mmap_lock still held (as madvise_cold_or_pageout_pte_range does)."""
    k = mm.kernel
    mmap_read_lock(mm)
    try:
        vmas = _vmas_covering(mm, start, end)
        if vmas is None:
            return -errno.ENOMEM
        if any(v.vm_flags & (VM_LOCKED | VM_PFNMAP | VM_HUGETLB) for v in vmas):
            return -errno.EINVAL
        isolated = []
        for v in vmas:
            s, e = max(start, v.vm_start), min(end, v.vm_end)
            for pt, addr, nxt in pte_ranges(mm, s, e):
                pt.ptl.lock()
                found = []
                for i in range(pte_index(addr), pte_index(nxt - 1) + 1):
                    f = pt.ptes[i]
                    if isinstance(f, Folio) and not f.flags & PG_reserved and f._mapcount == 1:
                        found.append(f)
                for f in found:
                    if pageout:
                        folio_isolate(k, f, isolated)
                    else:
                        folio_deactivate(k, f)
                pt.ptl.unlock()
        if isolated:
            shrink_folio_list(k, isolated, ScanControl(len(isolated)))
        return 0
    finally:
        mmap_read_unlock(mm)
