"""User-space loads and stores, and the user page-fault path
(arch/x86/mm/fault.c do_user_addr_fault).

Simplification: pymm's page tables are freed immediately, not after an RCU
grace period, so the hardware's lock-free page walk is not modelled.  A user
access takes the lock a page fault would take -- the VMA's per-VMA lock
(6.4+), else mmap_lock for read -- as if every access were a fault, and
copies under the PTE lock.

Data integrity: stores to private anonymous memory are remembered per
process; a load that finds other bytes there reports "data corruption".  (The
check assumes one writer at a time per byte, as the workloads arrange.)
"""
import errno
import threading

from ..debug import stackdepot
from ..debug.report import report
from ..errors import BusError, SegmentationFault
from .hugetlb import hugetlb_user_copy
from .memory import (FAULT_FLAG_ALLOW_RETRY, FAULT_FLAG_KILLABLE, FAULT_FLAG_TRIED,
                     FAULT_FLAG_USER, FAULT_FLAG_VMA_LOCK, FAULT_FLAG_WRITE, VM_FAULT_OOM,
                     VM_FAULT_RETRY, VM_FAULT_SIGBUS, VM_FAULT_SIGSEGV, handle_mm_fault,
                     lock_vma_under_rcu)
from .mm_types import VM_ACCESS_FLAGS, VM_HUGETLB, VM_SHARED, VM_WRITE, Folio
from .mmap import expand_stack_for_fault
from .mmap_lock import (mmap_read_lock, mmap_read_trylock, mmap_read_unlock, per_vma_lock_enabled,
                        vma_end_read)
from .pgtable import _PAGE_DIRTY, _PAGE_RW, pte_index, pte_offset

PAGE_SIZE = 4096


def user_access(task, addr, length, write, data, carefully=False):
    """Copy to (write) or from user memory.  Raises SegmentationFault outside a
    mapping or against its protection, BusError beyond the end of a file.
    ``carefully``: a copy_from_user/copy_to_user inside a system call, which
    may hold kernel locks: mmap_lock is tried first, as the fault path's
    lock_mm_and_find_vma does (get_mmap_lock_carefully), so an uncontended
    copy adds no dependency on it (pymm has no might_fault annotation).

    The locking is do_user_addr_fault's: with per-VMA locks (6.4+) the page's
    VMA is read-locked under RCU (lock_vma_under_rcu) and the copy, or the
    fault, happens under that lock alone; when that is not possible (no VMA
    found, a writer owns it, an unsupported VMA) or the fault asks for it
    (VM_FAULT_RETRY: no anon_vma yet and mmap_lock busy), mmap_lock is taken
    for read, as before 6.4, and kept for the rest of this access.  The VMA
    lock is kept while the access stays inside its VMA."""
    mm = task.mm
    out = None if write else bytearray(length)
    pos, end = addr, addr + length
    fault_flags = FAULT_FLAG_USER | FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_KILLABLE
    if write:
        fault_flags |= FAULT_FLAG_WRITE
    per_vma = per_vma_lock_enabled(mm)
    vma_locked = None       # the VMA we hold the read lock of
    locked = False          # mmap_lock held for read
    try:
        while pos < end:
            if vma_locked is not None and not vma_locked.vm_start <= pos < vma_locked.vm_end:
                vma_end_read(vma_locked)
                vma_locked = None
            if vma_locked is None and not locked:
                if per_vma:
                    vma_locked = lock_vma_under_rcu(mm, pos)
                if vma_locked is None:          # lock_mmap
                    if not carefully or not mmap_read_trylock(mm):
                        mmap_read_lock(mm)
                    locked = True
            vma = vma_locked if vma_locked is not None else mm.mm_mt.vma_lookup(pos)
            if vma is None:
                vma = expand_stack_for_fault(mm, pos)       # a VM_GROWSDOWN VMA above?
            if vma is None:
                raise SegmentationFault(pos, "no mapping")
            # x86 (access_error): a load needs the VMA accessible at all, so a
            # PROT_WRITE-only (or PROT_EXEC-only) mapping is readable
            if not vma.vm_flags & (VM_WRITE if write else VM_ACCESS_FLAGS):
                raise SegmentationFault(pos, "access against the mapping's protection")
            n = min(end, (pos & ~(PAGE_SIZE - 1)) + PAGE_SIZE) - pos
            off = pos - addr
            # the integrity shadow is pymm's own check (off with pymm_checks=False)
            shadow = (mm.user_shadow if vma.vm_file is None and not vma.vm_flags & VM_SHARED
                      and mm.kernel.pymm_checks else None)
            if vma.vm_flags & VM_HUGETLB:
                done, bad = hugetlb_user_copy(vma, pos, n, write, data, off, out), None
            else:
                done, bad = _copy_pte(mm, pos, n, write, data, off, out, shadow)
            if done:
                if bad is not None:
                    _report_corruption(task, pos, *bad)
                pos += n
                continue
            if vma_locked is not None:
                ret = handle_mm_fault(vma, pos, fault_flags | FAULT_FLAG_VMA_LOCK)
                if ret & VM_FAULT_RETRY:
                    # The fault released the VMA lock: retry under mmap_lock.
                    vma_locked = None
                    mmap_read_lock(mm)
                    locked = True
                    continue
            else:
                ret = handle_mm_fault(vma, pos, fault_flags)
                if ret & VM_FAULT_RETRY:
                    # mmap_lock was dropped by the fault; take it again and retry.
                    locked = False
                    mmap_read_lock(mm)
                    locked = True
                    fault_flags |= FAULT_FLAG_TRIED
                    continue
            if ret & VM_FAULT_SIGBUS:
                raise BusError(pos)
            if ret & VM_FAULT_SIGSEGV:
                raise SegmentationFault(pos, "fault returned SIGSEGV")
            if ret & VM_FAULT_OOM:
                raise OSError(errno.ENOMEM, f"out of memory faulting {pos:#x}")
    finally:
        if vma_locked is not None:
            vma_end_read(vma_locked)
        if locked:
            mmap_read_unlock(mm)
    return None if write else bytes(out)


def _copy_pte(mm, pos, n, write, data, off, out, shadow):
    """Copy under the PTE lock if the page is present with the right access.
    The shadow is updated (store) or compared (load) under the same lock, so
    a load and a store of the same page are atomic with respect to each other.
    Returns (done, mismatch) where mismatch is (index, expected, found) or None."""
    pt = pte_offset(mm, pos)
    if pt is None:
        return False, None
    i = pte_index(pos)
    pt.ptl.lock()
    try:
        folio = pt.ptes[i]
        if not isinstance(folio, Folio):
            return False, None
        bits = pt.bits[i]
        if write and not bits & _PAGE_RW:
            return False, None
        poff = pos & (PAGE_SIZE - 1)
        page = pos - poff
        if write:
            folio.write_bytes(poff, data[off:off + n])
            pt.bits[i] = bits | _PAGE_DIRTY
            if shadow is not None:
                buf = shadow.get(page)
                if buf is None:
                    buf = shadow[page] = bytearray()    # sparse: up to the last byte stored
                if len(buf) < poff + n:
                    buf.extend(bytes(poff + n - len(buf)))
                buf[poff:poff + n] = data[off:off + n]
            return True, None
        got = folio.read_bytes(poff, n)
        out[off:off + n] = got
        buf = shadow.get(page) if shadow is not None else None
        if buf is not None:
            want = bytes(buf[poff:poff + n])
            if len(want) < n:
                want += bytes(n - len(want))
            if want != got:
                j = next(j for j in range(n) if want[j] != got[j])
                return True, (j, want, got)
        return True, None
    finally:
        pt.ptl.unlock()


def _report_corruption(task, pos, i, want, got):
    t = threading.current_thread()
    bad = pos + i
    title = f"data corruption at {bad:#x}"
    # pymm's own check (the kernel has no such report), printed as a BUG: splat
    report("data-corruption", title,
           f"BUG: {title}\nexpected {want[i:i + 16].hex()}, found {got[i:i + 16].hex()}\n"
           f"process {task.comm}[{task.pid}], thread {t.name}: the page's contents changed "
           f"behind the process's back (a lost COW, a lost migration copy, or a page freed "
           f"and reused while mapped).\nCall Trace:\n" + stackdepot.format(stackdepot.save(2), " "),
           data={"addr": bad, "pymm_only": True})
