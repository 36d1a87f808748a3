"""mprotect(2) (mm/mprotect.c)."""
import errno

from ..constants import PROT_EXEC, PROT_READ, PROT_WRITE
from .mm_types import (VM_ACCESS_FLAGS, VM_EXEC, VM_HUGETLB, VM_LOCKED, VM_MAYEXEC, VM_MAYREAD, VM_MAYWRITE, VM_READ,
                       VM_SHARED, VM_WRITE, Folio)
from .gup import populate_vma_page_range
from .mmap import vma_modify_flags, vmas_may_split
from .mmap_lock import mmap_write_lock, mmap_write_unlock
from .pgtable import _PAGE_RW, pte_index, pte_ranges


def calc_vm_prot_bits(prot):
    return ((VM_READ if prot & PROT_READ else 0) | (VM_WRITE if prot & PROT_WRITE else 0) |
            (VM_EXEC if prot & PROT_EXEC else 0))


def change_protection(vma, start, end, newflags):
    """Write-protect the PTEs when write permission goes away.  (Gaining write
    leaves PTEs read-only: the next write faults and do_wp_page decides.)"""
    if vma.vm_flags & VM_HUGETLB:
        from .hugetlb import hugetlb_change_protection
        hugetlb_change_protection(vma, start, end, newflags)
        return
    if newflags & VM_WRITE:
        return
    for pt, addr, nxt in pte_ranges(vma.vm_mm, start, end):
        pt.ptl.lock()
        for i in range(pte_index(addr), pte_index(nxt - 1) + 1):
            if isinstance(pt.ptes[i], Folio):
                pt.bits[i] &= ~_PAGE_RW
        pt.ptl.unlock()


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
        from .mmap import vma_splits_ok
        if not vma_splits_ok(mm, start, end):
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
