"""Page faults, zapping and fork's page-table copy (mm/memory.c)."""
import errno

from .atomic import set_bits
from ..context import current
from ..locking import SINGLE_DEPTH_NESTING
from ..rcu import rcu_read_lock, rcu_read_unlock
from ..sched import charge, point
from ..sched.vtime import span_begin, span_end
from . import filemap, hugetlb_ops
from .mm_types import (MM_ANONPAGES, PG_anon, PG_dirty, VM_HUGETLB, VM_MAYWRITE, VM_PFNMAP, VM_SHARED,
                       Folio, mm_counter)
# vm_fault_t and enum fault_flag live in mm_types (include/linux/mm_types.h): callers
# below memory.c (swap_state, swapops) need them too; imported here for everyone else.
from .mm_types import (  # noqa: F401
    VM_FAULT_OOM, VM_FAULT_SIGBUS, VM_FAULT_MAJOR, VM_FAULT_HWPOISON, VM_FAULT_SIGSEGV,
    VM_FAULT_NOPAGE, VM_FAULT_LOCKED, VM_FAULT_RETRY, VM_FAULT_FALLBACK, VM_FAULT_DONE_COW,
    VM_FAULT_COMPLETED, VM_FAULT_ERROR, FAULT_FLAG_WRITE, FAULT_FLAG_MKWRITE,
    FAULT_FLAG_ALLOW_RETRY, FAULT_FLAG_RETRY_NOWAIT, FAULT_FLAG_KILLABLE, FAULT_FLAG_TRIED,
    FAULT_FLAG_USER, FAULT_FLAG_REMOTE, FAULT_FLAG_UNSHARE, FAULT_FLAG_VMA_LOCK)
from .mmap_lock import (mmap_assert_locked, mmap_read_trylock, mmap_read_unlock,  # noqa: F401
                        release_fault_lock, vma_assert_locked, vma_end_read, vma_start_read)
from .page_alloc import folio_get, folio_put
from .pgtable import _PAGE_DIRTY, _PAGE_RW, _PAGE_SPECIAL, pte_alloc, pte_index, pte_ranges
from .rmap import (anon_vma_prepare, flush_tlb_batched_pending, folio_add_anon_rmap_pte,
                   folio_add_file_rmap_pte, folio_add_new_anon_rmap, folio_remove_rmap_pte)
from .swap import folio_add_lru
from .util import folio_copy
from .tlb import flush_tlb_page
from .mmu_gather import __tlb_remove_folio, tlb_finish_mmu, tlb_flush_pte_range, tlb_gather_mmu
from .swap_state import folio_free_swap, free_swap_cache


def fault_why(why):
    """Say why the fault in progress fails: the text the SIGBUS (or the
    ENOMEM of VM_FAULT_OOM) it turns into gives (pymm's own: the kernel's
    siginfo carries only the address and si_code, and dmesg the rest).
    ``do_user_addr_fault`` clears it when a fault starts.  Context: the
    faulting task's."""
    t = current()
    if t is not None:
        t.fault_why = why


def vm_fault_sigbus(why):
    """``VM_FAULT_SIGBUS``, and why (see fault_why)."""
    fault_why(f"VM_FAULT_SIGBUS: {why}")
    return VM_FAULT_SIGBUS


def vm_fault_oom(why):
    """``VM_FAULT_OOM``, and why (see fault_why)."""
    fault_why(f"VM_FAULT_OOM: {why}")
    return VM_FAULT_OOM


class VmFault:
    """``struct vm_fault``."""

    __slots__ = ("vma", "address", "flags", "pgoff", "pt", "idx", "folio", "cow_folio", "kernel")

    def __init__(self, vma, address, flags):
        self.vma = vma
        self.address = address & ~0xFFF
        self.flags = flags
        self.pgoff = ((address - vma.vm_start) >> 12) + vma.vm_pgoff    # linear_page_index
        self.pt = None
        self.idx = (address >> 12) & 511                                # pte_index
        self.folio = None
        self.cow_folio = None
        self.kernel = vma.vm_mm.kernel


def is_cow_mapping(flags):
    return (flags & (VM_SHARED | VM_MAYWRITE)) == VM_MAYWRITE


def lock_vma_under_rcu(mm, address):
    """Find the VMA containing ``address`` and read-lock it, without
    mmap_lock (mm/memory.c; mm/mmap_lock.c since 6.15).  Returns the locked
    VMA, or None: no VMA there, a writer owns it, or it is unsupported --
    the caller then takes mmap_lock (do_user_addr_fault's lock_mmap).

    The VMA is found under RCU only, so it may be detached, freed, or
    (SLAB_TYPESAFE_BY_RCU) reused for another range or another mm by the time
    it is locked: after vma_start_read it is revalidated -- still attached,
    still this mm (vma_start_read), still covering ``address``.  A finder that
    skipped this would use a VMA it does not own; if that VMA was freed, the
    first access after rcu_read_unlock is reported by KASAN.
    Context: no mmap_lock needed; takes rcu_read_lock and the VMA's lock."""
    rcu_read_lock()
    try:
        while True:
            vma = mm.mm_mt.lookup_rcu(address)
            if vma is None:
                return None
            # pymm's simplification: hugetlb faults expect mmap_lock (pymm's
            # hugetlb_fault), so hugetlb VMAs are unsupported here, as every
            # non-anonymous VMA was in 6.4.
            if vma.vm_flags & VM_HUGETLB:
                return None
            if not vma_start_read(mm, vma):
                return None
            if vma.detached:            # isolated after we found it: look again (VMA_LOCK_MISS)
                vma_end_read(vma)
                continue
            if not vma.vm_start <= address < vma.vm_end:    # changed before we locked it
                vma_end_read(vma)
                return None
            return vma
    finally:
        rcu_read_unlock()


def vmf_anon_prepare(vmf):
    """Make sure the VMA has an anon_vma before an anonymous page goes in
    (mm/internal.h vmf_anon_prepare, 6.10+).  Under the per-VMA lock,
    anon_vma_prepare looks at neighbouring VMAs (which are not locked), so it
    needs mmap_lock: tried, and if that fails the VMA lock is dropped and the
    fault retried under mmap_lock (VM_FAULT_RETRY).  Returns 0,
    VM_FAULT_RETRY or VM_FAULT_OOM."""
    vma = vmf.vma
    if vma.anon_vma is not None:
        return 0
    if vmf.flags & FAULT_FLAG_VMA_LOCK:
        if not mmap_read_trylock(vma.vm_mm):
            vma_end_read(vma)
            return VM_FAULT_RETRY
    ret = VM_FAULT_OOM if anon_vma_prepare(vma) else 0
    if vmf.flags & FAULT_FLAG_VMA_LOCK:
        mmap_read_unlock(vma.vm_mm)
    return ret


def handle_mm_fault(vma, address, flags):
    """Resolve a fault at ``address`` in ``vma``.

    Context: mmap_lock held (read or write), or with FAULT_FLAG_VMA_LOCK the
    VMA's read lock (lock_vma_under_rcu).  With FAULT_FLAG_ALLOW_RETRY the
    fault may drop mmap_lock and return VM_FAULT_RETRY; the caller must then
    consider ``vma`` stale and not touch it again.  Under the VMA lock, a
    VM_FAULT_RETRY return means the VMA lock was released (the caller retries
    under mmap_lock); any other return leaves it held.
    """
    mm = vma.vm_mm
    if flags & FAULT_FLAG_VMA_LOCK:
        vma_assert_locked(vma)
    else:
        mmap_assert_locked(mm)
    charge("fault")
    span = span_begin("handle_mm_fault", "fault")
    point("handle_mm_fault")
    try:
        if vma.vm_flags & VM_HUGETLB:
            return hugetlb_ops.hugetlb_fault(mm, vma, address, flags)
        vmf = VmFault(vma, address, flags)
        vmf.pt = pte_alloc(mm, vmf.address)
        if vmf.pt is None:
            return VM_FAULT_OOM
        return handle_pte_fault(vmf)
    finally:
        span_end(span)


def handle_pte_fault(vmf):
    pt, i = vmf.pt, vmf.idx
    entry = pt.ptes[i]                   # vmf->orig_pte: an unlocked peek, rechecked under ptl
    if entry is None:
        if vmf.vma.vm_file is None:
            return do_anonymous_page(vmf)
        return do_fault(vmf)
    if not isinstance(entry, Folio):   # a swap-type entry: migration, swap (do_swap_page)
        return entry.fault(vmf)
    pt.ptl.lock()
    if pt.ptes[i] is not entry:
        pt.ptl.unlock()
        return 0
    if vmf.flags & FAULT_FLAG_WRITE:
        if not pt.bits[i] & _PAGE_RW:
            return do_wp_page(vmf, entry)     # releases ptl
        pt.bits[i] |= _PAGE_DIRTY             # pte_mkdirty + ptep_set_access_flags
    pt.ptl.unlock()
    return 0


def set_pte(vmf, folio, bits):
    """Install a present PTE.  Context: ptl held, the entry none."""
    pt, i = vmf.pt, vmf.idx
    charge("pte")
    pt.ptes[i] = folio
    pt.bits[i] = bits
    pt.nr += 1


def do_anonymous_page(vmf):
    vma, pt, i, k = vmf.vma, vmf.pt, vmf.idx, vmf.kernel
    mm = vma.vm_mm
    if not vmf.flags & FAULT_FLAG_WRITE:
        pt.ptl.lock()
        if pt.ptes[i] is None:
            set_pte(vmf, k.zero_page, _PAGE_SPECIAL)
        pt.ptl.unlock()
        return 0
    ret = vmf_anon_prepare(vmf)
    if ret:
        return ret
    folio = k.vma_alloc_folio(vma, vmf.address)
    if folio is None:
        return VM_FAULT_OOM
    charge("clear_page")                 # vma_alloc_zeroed_movable_folio
    point("do_anonymous_page")
    pt.ptl.lock()
    if pt.ptes[i] is not None:
        pt.ptl.unlock()
        folio_put(folio, k)
        return 0
    folio_add_new_anon_rmap(k, folio, vma, vmf.address)
    folio_add_lru(k, folio)
    set_pte(vmf, folio, _PAGE_RW | _PAGE_DIRTY)
    mm.rss_stat[MM_ANONPAGES].add(1)
    pt.ptl.unlock()
    return 0


def do_fault(vmf):
    if not vmf.flags & FAULT_FLAG_WRITE:
        return do_read_fault(vmf)
    if not vmf.vma.vm_flags & VM_SHARED:
        return do_cow_fault(vmf)
    return do_shared_fault(vmf)


def __do_fault(vmf):
    """Get the page-cache folio, locked and referenced, into vmf.folio."""
    return vmf.vma.vm_file.fault(vmf)


def finish_fault(vmf, folio, bits, new_anon=False):
    """Map ``folio`` at the fault address: a page-cache folio, or (COW) a new
    anon folio.  Returns 0, or VM_FAULT_NOPAGE when a racing fault got there
    first.  Context: the page-cache folio is locked."""
    vma, pt, i, k = vmf.vma, vmf.pt, vmf.idx, vmf.kernel
    pt.ptl.lock()
    if pt.ptes[i] is not None:
        pt.ptl.unlock()
        return VM_FAULT_NOPAGE
    if new_anon:
        folio_add_new_anon_rmap(k, folio, vma, vmf.address)
        folio_add_lru(k, folio)
    else:
        folio_get(folio)
        folio_add_file_rmap_pte(k, folio, vma)
    set_pte(vmf, folio, bits)
    vma.vm_mm.rss_stat[mm_counter(folio)].add(1)
    pt.ptl.unlock()
    return 0


def do_read_fault(vmf):
    ret = __do_fault(vmf)
    if ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE | VM_FAULT_RETRY):
        return ret
    folio = vmf.folio
    ret |= finish_fault(vmf, folio, 0)
    filemap.folio_unlock(folio)
    folio_put(folio, vmf.kernel)
    return ret & ~(VM_FAULT_LOCKED | VM_FAULT_NOPAGE)


def do_cow_fault(vmf):
    vma, k = vmf.vma, vmf.kernel
    ret = vmf_anon_prepare(vmf)
    if ret:
        return ret
    new = k.vma_alloc_folio(vma, vmf.address)
    if new is None:
        return VM_FAULT_OOM
    ret = __do_fault(vmf)
    if ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE | VM_FAULT_RETRY):
        folio_put(new, k)
        return ret
    folio = vmf.folio
    folio_copy(new, folio)
    r = finish_fault(vmf, new, _PAGE_RW | _PAGE_DIRTY, new_anon=True)
    filemap.folio_unlock(folio)
    folio_put(folio, k)
    if r:
        folio_put(new, k)
    return 0


def do_shared_fault(vmf):
    ret = __do_fault(vmf)
    if ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE | VM_FAULT_RETRY):
        return ret
    folio = vmf.folio
    set_bits(folio, 'flags', PG_dirty)
    finish_fault(vmf, folio, _PAGE_RW | _PAGE_DIRTY)
    filemap.folio_unlock(folio)
    folio_put(folio, vmf.kernel)
    return 0


def do_wp_page(vmf, old):
    """Write fault on a present read-only PTE.  Context: ptl held; released here."""
    vma, pt, i = vmf.vma, vmf.pt, vmf.idx
    special = pt.bits[i] & _PAGE_SPECIAL
    if not special and vma.vm_flags & VM_SHARED:
        set_bits(old, 'flags', PG_dirty)                       # wp_page_shared
        pt.bits[i] |= _PAGE_RW | _PAGE_DIRTY
        pt.ptl.unlock()
        return 0
    if not special and old.flags & PG_anon and wp_can_reuse_anon_folio(old):
        pt.bits[i] |= _PAGE_RW | _PAGE_DIRTY          # wp_page_reuse: we are the only user
        pt.ptl.unlock()
        return 0
    if not special:
        folio_get(old)
    pt.ptl.unlock()
    return wp_page_copy(vmf, old, special)


def wp_can_reuse_anon_folio(folio):
    """Are we the only user of this anon folio?  Only our PTE may hold it,
    plus the swap cache if no other PTE holds its swap entry: then it leaves
    the swap cache (trylock only: we hold the ptl) and is reused, as the
    kernel's wp_can_reuse_anon_folio does.  Context: ptl held."""
    if folio._mapcount != 1 or folio._refcount > 1 + (folio.swap is not None):
        return False
    if folio.swap is not None:
        if not filemap.folio_trylock(folio):
            return False
        if folio.swap is not None:
            folio_free_swap(folio)
        filemap.folio_unlock(folio)
    return folio._refcount == 1


def wp_page_copy(vmf, old, special):
    """Break COW: copy into a new anon folio and replace the PTE if it did not change."""
    vma, pt, i, k = vmf.vma, vmf.pt, vmf.idx, vmf.kernel
    mm = vma.vm_mm
    ret = vmf_anon_prepare(vmf)
    if ret:
        if not special:
            folio_put(old, k)
        return ret
    new = k.vma_alloc_folio(vma, vmf.address)
    if new is None:
        if not special:
            folio_put(old, k)
        return VM_FAULT_OOM
    if special:
        charge("clear_page")            # the zero page: __wp_page_copy_user clears
    else:
        folio_copy(new, old)
    point("wp_page_copy")
    pt.ptl.lock()
    if pt.ptes[i] is old:
        if not special:
            mm.rss_stat[mm_counter(old)].add(-1)
            folio_remove_rmap_pte(k, old, vma)
        # ptep_clear_flush: no CPU may still read the old page through its
        # TLB once the new one is mapped (nor write it once it is freed)
        pt.ptes[i] = None
        pt.bits[i] = 0
        pt.nr -= 1
        flush_tlb_page(vma, vmf.address)
        folio_add_new_anon_rmap(k, new, vma, vmf.address)
        folio_add_lru(k, new)
        set_pte(vmf, new, _PAGE_RW | _PAGE_DIRTY)
        mm.rss_stat[MM_ANONPAGES].add(1)
        pt.ptl.unlock()
        if not special:
            if old.swap is not None:   # copied away from a swap-cache folio: free it if unused
                free_swap_cache(old)
            folio_put(old, k)          # the reference the PTE held
    else:
        pt.ptl.unlock()
        folio_put(new, k)
    if not special:
        folio_put(old, k)              # our own reference
    return 0


# -- zapping -------------------------------------------------------------------------

class ZapDetails:
    """``struct zap_details``: even_cows=False spares anon COW copies (hole punch)."""
    __slots__ = ("even_cows", "single_folio")

    def __init__(self, even_cows=True, single_folio=None):
        self.even_cows = even_cows
        self.single_folio = single_folio


def zap_pte_range(tlb, vma, pt, start, end, details=None):
    """Clear the PTEs of one table in [start, end).  The folios are gathered
    in ``tlb`` and their references dropped only after the TLB flush
    (tlb_finish_mmu): another CPU may still reach them through its TLB until
    then.  A pending batched flush of reclaim is done first
    (flush_tlb_batched_pending).  As the kernel's, the rss counters are
    summed in a local vector and added once per table (add_mm_rss_vec), and
    the range to flush grows once per table.  Context: mmap_lock or the rmap
    lock keeps the table alive; takes the ptl."""
    mm = vma.vm_mm
    k = mm.kernel
    zero = k.zero_page
    ptes, bits = pt.ptes, pt.bits
    gathered = len(tlb.pages)
    rss = [0] * len(mm.rss_stat)
    first = last = None                  # the cleared entries' span, to flush
    pt.ptl.lock()
    flush_tlb_batched_pending(mm)
    for i in range(pte_index(start), pte_index(end - 1) + 1):
        entry = ptes[i]
        if entry is None:
            continue
        if entry is zero:
            ptes[i] = None
            bits[i] = 0
            pt.nr -= 1
        elif not isinstance(entry, Folio):        # non-present: migration/swap entry
            entry.zap(vma, pt, i, details)
            continue
        else:
            if details is not None:
                if details.single_folio is not None and entry is not details.single_folio:
                    continue
                if not details.even_cows and entry.flags & PG_anon:
                    continue
            if bits[i] & _PAGE_DIRTY:
                set_bits(entry, 'flags', PG_dirty)
            ptes[i] = None
            bits[i] = 0
            pt.nr -= 1
            rss[mm_counter(entry)] -= 1
            folio_remove_rmap_pte(k, entry, vma)
            __tlb_remove_folio(tlb, entry)
        if first is None:
            first = i
        last = i
    if first is not None:
        tlb_flush_pte_range(tlb, pt.addr + (first << 12), (last + 1 - first) << 12)
    for member, n in enumerate(rss):
        if n:
            mm.rss_stat[member].add(n)
    pt.ptl.unlock()
    charge("zap_page", len(tlb.pages) - gathered)


def unmap_page_range(tlb, vma, start, end, details=None, final=False):
    if vma.vm_flags & VM_HUGETLB:       # unmap_single_vma's is_vm_hugetlb_page branch
        return hugetlb_ops.hugetlb_zap_range(vma, start, end, final)
    for pt, addr, nxt in pte_ranges(vma.vm_mm, start, end):
        zap_pte_range(tlb, vma, pt, addr, nxt, details)


def unmap_vmas(vmas, start, end, tlb=None):
    """Zap every VMA's part of [start, end).  With ``tlb`` the caller's
    gather collects what was unmapped (it frees the page tables next and
    finishes the gather); without, a gather of its own is finished here."""
    own = tlb is None and vmas
    if own:
        tlb = tlb_gather_mmu(vmas[0].vm_mm)
    for vma in vmas:
        s, e = max(start, vma.vm_start), min(end, vma.vm_end)
        if s < e:
            unmap_page_range(tlb, vma, s, e, final=True)
    if own:
        tlb_finish_mmu(tlb)


def zap_page_range_single(vma, start, size, details=None):
    """Zap part of one VMA that stays (MADV_DONTNEED, truncation of a
    mapping), with a gather of its own: when it returns, no CPU reaches the
    pages through its TLB and their references are dropped.
    ``hugetlb-dontneed``: ``final-zap`` is 6.1's zap_page_range, which ran
    the hugetlb zap as final -- freeing the vma_lock of a VMA that stays
    (syzbot ca56f14c500045350f93); ``non-final-zap`` is 04ada095dcfc."""
    final = bool(vma.vm_flags & VM_HUGETLB) and \
        vma.vm_mm.kernel.variant("hugetlb-dontneed") == "final-zap"
    tlb = tlb_gather_mmu(vma.vm_mm)
    unmap_page_range(tlb, vma, start, min(start + size, vma.vm_end), details, final=final)
    tlb_finish_mmu(tlb)


# -- fork ------------------------------------------------------------------------------

def copy_page_range(dst_vma, src_vma):
    """Copy the parent's PTEs into the child (copy_pte_range): COW mappings get
    both PTEs write-protected and share the folio.  Context: both mmap_locks
    held for write; takes the child's ptl, then the parent's nested."""
    src_mm, dst_mm = src_vma.vm_mm, dst_vma.vm_mm
    if not src_vma.anon_vma and not src_vma.vm_flags & VM_PFNMAP:   # vma_needs_copy: file pages refault
        return 0
    if src_vma.vm_flags & VM_HUGETLB:
        return hugetlb_ops.copy_hugetlb_page_range(dst_vma, src_vma)
    k = src_mm.kernel
    cow = is_cow_mapping(src_vma.vm_flags)
    for spt, addr, nxt in pte_ranges(src_mm, src_vma.vm_start, src_vma.vm_end):
        if spt.nr:
            dpt = pte_alloc(dst_mm, addr)
            if dpt is None:
                return -errno.ENOMEM
            dpt.ptl.lock()
            spt.ptl.lock_nested(SINGLE_DEPTH_NESTING)
            for i in range(pte_index(addr), pte_index(nxt - 1) + 1):
                entry = spt.ptes[i]
                if entry is None:
                    continue
                bits = spt.bits[i]
                if not isinstance(entry, Folio):
                    entry.copy(dst_vma, spt, dpt, i, cow)
                    continue
                if entry is not k.zero_page:
                    folio_get(entry)
                    if entry.flags & PG_anon:
                        folio_add_anon_rmap_pte(k, entry, dst_vma, addr)
                    else:
                        folio_add_file_rmap_pte(k, entry, dst_vma)
                    dst_mm.rss_stat[mm_counter(entry)].add(1)
                    if cow:
                        bits &= ~_PAGE_RW
                        spt.bits[i] &= ~_PAGE_RW
                dpt.ptes[i] = entry
                dpt.bits[i] = bits
                dpt.nr += 1
            spt.ptl.unlock()
            dpt.ptl.unlock()
    return 0
