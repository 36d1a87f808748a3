"""mprotect(2) (mm/mprotect.c)."""
import errno

from ..constants import PROT_EXEC, PROT_READ, PROT_WRITE
from .mm_types import (VM_ACCESS_FLAGS, VM_EXEC, VM_HUGETLB, VM_LOCKED, VM_MAYEXEC, VM_MAYREAD, VM_MAYWRITE, VM_READ,
                       VM_SHARED, VM_WRITE, Folio)
from .gup import populate_vma_page_range
from .mmap import vma_modify_flags, vma_splits_ok, vmas_may_split
from .mmap_lock import mmap_write_lock, mmap_write_unlock
from .pgtable import _PAGE_PROTNONE, _PAGE_RW, pte_index, pte_ranges
from . import hugetlb_ops
from .rmap import flush_tlb_batched_pending
from .swapops import MigrationEntry
from .tlb import flush_tlb_range


def calc_vm_prot_bits(prot):
    return ((VM_READ if prot & PROT_READ else 0) | (VM_WRITE if prot & PROT_WRITE else 0) |
            (VM_EXEC if prot & PROT_EXEC else 0))


def change_protection(vma, start, end, newflags):
    """Rewrite the present PTEs of [start, end) for ``newflags``: write
    permission goes away (a write then faults and do_wp_page decides, also
    when write permission comes back), PROT_NONE makes them not present to
    the hardware (_PAGE_PROTNONE) and access coming back clears that.  Then,
    when permissions were reduced, flush the TLBs of the range before
    returning (change_protection's flush_tlb_range): no CPU may use an old
    entry once mprotect has returned.  A pending batched flush of reclaim is
    done first, under the ptl (flush_tlb_batched_pending, 3ea277194daa):
    reclaim may have cleared a PTE -- which this walk then does not see --
    without flushing yet.  Context: mmap_lock held for write."""
    if vma.vm_flags & VM_HUGETLB:
        hugetlb_ops.hugetlb_change_protection(vma, start, end, newflags)
        return
    mm = vma.vm_mm
    none = not newflags & VM_ACCESS_FLAGS
    reduced = False
    for pt, addr, nxt in pte_ranges(mm, start, end):
        pt.ptl.lock()
        flush_tlb_batched_pending(mm)
        for i in range(pte_index(addr), pte_index(nxt - 1) + 1):
            e = pt.ptes[i]
            if isinstance(e, Folio):
                old = pt.bits[i]
                new = old & ~_PAGE_RW
                new = new | _PAGE_PROTNONE if none else new & ~_PAGE_PROTNONE
                if new != old:
                    pt.bits[i] = new
                    reduced = reduced or bool(old & _PAGE_RW or none)
            elif type(e) is MigrationEntry and e.writable:
                # change_pte_range: "A protection check is difficult so just
                # be safe and disable write" -- a migration in flight would
                # otherwise map the page writable again (remove_migration_pte)
                # in a VMA that no longer is (the fuzzer: a store to a page
                # mprotected read-only succeeded)
                pt.ptes[i] = MigrationEntry(e.folio, False)
        pt.ptl.unlock()
    if reduced:
        flush_tlb_range(vma, start, end)


def do_mprotect_pkey(mm, start, length, prot):
    """Context: mmap_lock not held.  The range is checked for holes and
    permissions before anything changes (Linux applies VMA by VMA and can fail
    half-way; pymm's "bad input changes nothing" rule is stricter)."""
    end = start + length
    want = calc_vm_prot_bits(prot)
    mmap_write_lock(mm)
    try:
        vmas = mm.mm_mt.range(start, end)
        pos = start
        for v in vmas:
            if v.vm_start > pos:
                return -errno.ENOMEM
            pos = v.vm_end
            mayflags = ((VM_READ if v.vm_flags & VM_MAYREAD else 0) |
                        (VM_WRITE if v.vm_flags & VM_MAYWRITE else 0) |
                        (VM_EXEC if v.vm_flags & VM_MAYEXEC else 0))
            if want & ~mayflags:
                return -errno.EACCES
        if not vmas or pos < end:
            return -errno.ENOMEM
        err = vmas_may_split(mm, start, end)    # decided under the write lock we split with
        if err:
            return err
        if not vma_splits_ok(mm, start, end,
                             lambda v: (v.vm_flags & ~VM_ACCESS_FLAGS) | want != v.vm_flags):
            return -errno.ENOMEM            # vm.max_map_count
        pos = start
        while pos < end:
            cur = mm.mm_mt.vma_lookup(pos)
            e = min(end, cur.vm_end)
            oldflags = cur.vm_flags
            newflags = (oldflags & ~VM_ACCESS_FLAGS) | want
            if newflags != oldflags:
                cur = vma_modify_flags(cur, pos, e, newflags)
                change_protection(cur, pos, e, newflags)
                # mprotect_fixup: a private VM_LOCKED VMA becoming writable
                # breaks COW now, so the locked pages are its own
                if (oldflags & (VM_WRITE | VM_SHARED | VM_LOCKED)) == VM_LOCKED and \
                        newflags & VM_WRITE:
                    populate_vma_page_range(cur, pos, e, None)
            pos = e
        return 0
    finally:
        mmap_write_unlock(mm)
