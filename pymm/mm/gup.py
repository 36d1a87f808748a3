"""get_user_pages and populate (mm/gup.c), with the ``locked`` protocol.

``locked`` is the kernel's ``int *locked``: a one-element list.  Callers that
pass it hold mmap_lock *for read* with locked[0] == 1; any fault on the way
may drop the lock, set locked[0] = 0 and return early.  From then on every
VMA pointer the caller holds is stale.
"""
import errno

from ..debug.report import report
from ..locking import lockdep
from ..context import current
from ..sched import charge, point
from .hugetlb import hugetlb_follow_page_mask
from . import internal
from .memory import (FAULT_FLAG_ALLOW_RETRY, FAULT_FLAG_KILLABLE, FAULT_FLAG_RETRY_NOWAIT,
                     FAULT_FLAG_TRIED, FAULT_FLAG_WRITE, VM_FAULT_COMPLETED, VM_FAULT_ERROR,
                     VM_FAULT_OOM, VM_FAULT_RETRY, VM_FAULT_SIGBUS, VM_FAULT_SIGSEGV,
                     handle_mm_fault)
from .mm_types import (MM_ANONPAGES, VM_ACCESS_FLAGS, VM_HUGETLB, VM_IO, VM_LOCKED, VM_LOCKONFAULT,
                       VM_MAYREAD, VM_MAYWRITE, VM_PFNMAP, VM_READ, VM_SHARED, VM_WRITE, Folio)
from .mmap_lock import (mmap_assert_locked, mmap_read_lock, mmap_read_unlock, mmap_write_downgrade,
                        mmap_write_unlock)
from .atomic import atomic_inc_not_zero
from .page_alloc import alloc_pages_bulk, folio_get, folio_put, folios_put_refs
from .pgtable import (PMD_SHIFT, PMD_SIZE, PTRS_PER_TABLE, PUD_SHIFT, PteTable, _PAGE_DIRTY,
                      _PAGE_PROTNONE, _PAGE_RW, _PAGE_SPECIAL, pte_alloc, pte_index, pte_offset)
from .rmap import folio_add_new_anon_rmap
from .swap import folios_add_lru
from .tlb import local_irq_disable, local_irq_enable, this_cpu

FOLL_WRITE = 0x01
FOLL_GET = 0x02
FOLL_FORCE = 0x10
FOLL_NOWAIT = 0x20
FOLL_TOUCH = 0x1000
FOLL_TRIED = 0x2000
FOLL_UNLOCKABLE = 0x4000
FOLL_MADV_POPULATE = 0x8000

PAGE_SIZE = 4096


def check_vma_flags(vma, gup_flags):
    """May gup access ``vma`` as asked?  FOLL_FORCE (ptrace, and populate
    for any accessible VMA) reads what VM_MAYREAD allows and writes private
    (COW) mappings without VM_WRITE, never hugetlb ones."""
    vm_flags = vma.vm_flags
    if vm_flags & (VM_IO | VM_PFNMAP):
        return -errno.EFAULT
    if gup_flags & FOLL_WRITE:
        if not vm_flags & VM_WRITE:
            if not gup_flags & FOLL_FORCE or vm_flags & VM_HUGETLB or \
                    (vm_flags & (VM_SHARED | VM_MAYWRITE)) != VM_MAYWRITE:
                return -errno.EFAULT
    elif not vm_flags & VM_READ:
        if not gup_flags & FOLL_FORCE or not vm_flags & VM_MAYREAD:
            return -errno.EFAULT
    return 0


def follow_page_pte(vma, address, gup_flags):
    """Is the page present with the access gup wants?  Context: mmap_lock held."""
    if vma.vm_flags & VM_HUGETLB:
        return hugetlb_follow_page_mask(vma, address, bool(gup_flags & FOLL_WRITE))
    pt = pte_offset(vma.vm_mm, address)
    if pt is None:
        return False
    i = pte_index(address)
    pt.ptl.lock()
    entry = pt.ptes[i]
    ok = isinstance(entry, Folio) and \
        (not gup_flags & FOLL_WRITE or pt.bits[i] & _PAGE_RW)
    pt.ptl.unlock()
    return ok


def vm_fault_to_errno(ret, foll_flags):
    if ret & VM_FAULT_OOM:
        return -errno.ENOMEM
    if ret & (VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV):
        return -errno.EFAULT
    return 0


def faultin_page(vma, address, gup_flags, locked):
    """Fault one page in for gup.  Returns 0, -EBUSY when the fault dropped
    mmap_lock (locked[0] is then 0), -EAGAIN when it completed with the lock
    dropped, or -errno."""
    fault_flags = 0
    if gup_flags & FOLL_WRITE:
        fault_flags |= FAULT_FLAG_WRITE
    if locked is not None:
        fault_flags |= FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_KILLABLE
    if gup_flags & FOLL_NOWAIT:
        fault_flags |= FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_RETRY_NOWAIT
    if gup_flags & FOLL_TRIED:
        fault_flags |= FAULT_FLAG_TRIED
    ret = handle_mm_fault(vma, address, fault_flags)
    if ret & VM_FAULT_COMPLETED:
        locked[0] = 0
        return -errno.EAGAIN
    if ret & VM_FAULT_ERROR:
        return vm_fault_to_errno(ret, gup_flags)
    if ret & VM_FAULT_RETRY:
        if not fault_flags & FAULT_FLAG_RETRY_NOWAIT:
            locked[0] = 0
        return -errno.EBUSY
    return 0


# The per-page lock operations one populated page costs the kernel: gup's
# follow_page_pte takes the ptl before and after the fault, the fault takes
# it to set the PTE, the allocation takes the pcp lock: 4 lock/unlock pairs.
POPULATE_LOCK_OPS = 8


def populate_anon_ptes(vma, start, nr_pages, gup_flags):
    """pymm's own bulk path for a write populate (MAP_POPULATE, mlock-free
    MADV_POPULATE_WRITE, brk) of a private anonymous VMA: when the populate
    covers a whole PTE table whose entries are all empty (the range a
    PMD-sized THP would fill), map it in one step, an order-0 folio per
    page, instead of one follow_page_pte + handle_mm_fault per page.
    Returns the pages mapped; 0 leaves the page to the per-page path, which
    handles everything else (partial tables, the VMA's first fault and its
    anon_vma, NUMA policies, mlocked VMAs, hugetlb and file mappings,
    present or swapped entries, failed allocations).

    Why: populating 1 GiB page by page takes pymm minutes of wall time.
    The kernel fills such a table in one fault too -- a THP, or an mTHP
    folio mapped with set_ptes under one ptl hold -- but pymm keeps order-0
    folios.  Virtual time is charged per page as the per-page path would
    be: a fault, an allocation, a clear, a PTE, and the lock operations
    the kernel's per-page populate takes (POPULATE_LOCK_OPS); the real
    locks are taken once per table (ptl, zone lock, lru_lock), so the
    scheduler has no point between two pages of one table.  Only whole
    tables take this path, so the small populates of the scenarios keep
    every scheduling point of the per-page path (bug finding explores them
    as before).  Context: mmap_lock held (read or write)."""
    vm_flags = vma.vm_flags
    if not gup_flags & FOLL_WRITE or vma.vm_file is not None or vma.anon_vma is None or \
            vm_flags & (VM_SHARED | VM_HUGETLB | VM_LOCKED | VM_IO | VM_PFNMAP) or \
            not vm_flags & VM_WRITE or vma.vm_policy is not None:
        return 0
    t = current()
    if t is not None and t.mempolicy is not None:
        return 0
    mm = vma.vm_mm
    k = mm.kernel
    if pte_index(start) or nr_pages < PTRS_PER_TABLE or vma.vm_end - start < PTRS_PER_TABLE << 12:
        return 0                             # not a whole table
    pt = pte_alloc(mm, start)                # as the fault would (handle_mm_fault)
    if pt is None or pt.nr:                  # unlocked peek, rechecked under the ptl
        return 0
    i0 = 0
    ptes = pt.ptes
    n = PTRS_PER_TABLE
    folios = alloc_pages_bulk(k, k.local_node(), n)
    if len(folios) < n:
        if folios:
            folios_put_refs(k, folios)
        return 0
    charge("fault", n)
    charge("clear_page", n)
    charge("lock", POPULATE_LOCK_OPS * n)
    point("populate_anon_ptes")
    bits = pt.bits
    done = 0
    pt.ptl.lock()
    for folio in folios:
        idx = i0 + done
        if ptes[idx] is not None:           # a racing fault got there first
            break
        folio_add_new_anon_rmap(k, folio, vma, start + (done << 12))
        ptes[idx] = folio
        bits[idx] = _PAGE_RW | _PAGE_DIRTY
        done += 1
    folios_add_lru(k, folios[:done])
    pt.nr += done
    mm.rss_stat[MM_ANONPAGES].add(done)
    charge("pte", done)
    pt.ptl.unlock()
    if done < n:
        folios_put_refs(k, folios[done:])
    return done


def __get_user_pages(mm, start, nr_pages, gup_flags, locked):
    """Fault in ``nr_pages`` from ``start``.  Returns the number of pages done,
    or -errno if none.  Context: mmap_lock held; if ``locked`` is given it may
    be dropped (then locked[0] == 0 on return)."""
    mmap_assert_locked(mm)
    i = 0
    ret = 0
    vma = None
    while nr_pages:
        if vma is None or start >= vma.vm_end:
            vma = mm.mm_mt.vma_lookup(start)
            if gup_flags & FOLL_MADV_POPULATE:      # its own lookup and error reporting
                if vma is None:
                    ret = -errno.ENOMEM
                    break
                if check_vma_flags(vma, gup_flags):
                    ret = -errno.EINVAL             # incompatible mapping or permissions
                    break
            if vma is None:
                ret = -errno.EFAULT
                break
            ret = check_vma_flags(vma, gup_flags)
            if ret:
                break
        point("__get_user_pages")
        done = populate_anon_ptes(vma, start, nr_pages, gup_flags)
        if done:
            i += done
            start += done * PAGE_SIZE
            nr_pages -= done
            continue
        if not follow_page_pte(vma, start, gup_flags):
            ret = faultin_page(vma, start, gup_flags, locked)
            if ret == 0:
                continue
            if ret in (-errno.EBUSY, -errno.EAGAIN):
                ret = 0
            break
        i += 1
        start += PAGE_SIZE
        nr_pages -= 1
    return i if i else ret


def populate_vma_page_range(vma, start, end, locked):
    """Fault in [start, end) of ``vma``.

    Context: caller holds mmap_lock; with ``locked`` it must be held *for read*
    (a fault may drop it, setting locked[0] = 0).  Returns pages populated or -errno.
    """
    mm = vma.vm_mm
    nr_pages = (end - start) >> 12
    if start & 0xFFF or end & 0xFFF or start < vma.vm_start or end > vma.vm_end:
        report("assertion", "kernel BUG at mm/gup.c: VM_BUG_ON_VMA(start < vma->vm_start || end > vma->vm_end)",
               f"populate_vma_page_range({start:#x}, {end:#x}) outside {vma!r}")
        return -errno.EINVAL
    mmap_assert_locked(mm)
    if locked is not None and lockdep.is_enabled() and mm.mmap_lock.held_by_current(0):
        # faultin_page may mmap_read_unlock(): with the lock held for write that
        # is an unbalanced up_read -- the caller should have downgraded.
        report("assertion", "WARNING: populate_vma_page_range with &locked under mmap_write_lock",
               "populate_vma_page_range() called with locked != NULL while mmap_lock is held "
               "for write; a fault that drops the lock would up_read() a write-held rwsem.\n"
               "Likely cause: a caller that should mmap_write_downgrade() first.")
    if vma.vm_flags & VM_LOCKONFAULT:
        return nr_pages
    gup_flags = FOLL_TOUCH
    if (vma.vm_flags & (VM_WRITE | VM_SHARED)) == VM_WRITE:
        gup_flags |= FOLL_WRITE
    if vma.vm_flags & VM_ACCESS_FLAGS:  # vma_is_accessible: mlock succeeds for all but PROT_NONE (fdf4c587a793)
        gup_flags |= FOLL_FORCE
    if locked is not None:
        gup_flags |= FOLL_UNLOCKABLE
    return __get_user_pages(mm, start, nr_pages, gup_flags, locked)


def __mm_populate(mm, start, length, ignore_errors):
    """Populate [start, start+len), re-finding the VMA by address after every
    (re)lock -- the mainline way: a VMA pointer never outlives a lock drop."""
    end = start + length
    locked = [0]
    ret = 0
    vma = None
    nstart = start
    while nstart < end:
        if not locked[0]:
            locked[0] = 1
            mmap_read_lock(mm)
            vma = mm.mm_mt.find_vma_intersection(nstart, end)
        elif nstart >= vma.vm_end:
            vma = mm.mm_mt.find_vma_intersection(vma.vm_end, end)
        if vma is None:
            break
        nend = min(end, vma.vm_end)
        if vma.vm_flags & (VM_IO | VM_PFNMAP):
            nstart = nend
            continue
        if nstart < vma.vm_start:
            nstart = vma.vm_start
        ret = populate_vma_page_range(vma, nstart, nend, locked)
        if ret < 0:
            if ignore_errors:
                ret = 0
                nstart = nend
                continue
            break
        nstart = nstart + ret * PAGE_SIZE
        ret = 0
    if locked[0]:
        mmap_read_unlock(mm)
    return ret


def mm_populate(mm, addr, length):
    """Context: mmap_lock not held."""
    return __mm_populate(mm, addr, length, True)


def mm_populate_vma(mm, vma, start, end):
    """Populate a VMA the caller found *before* it dropped mmap_write_lock (the
    2021 maple-tree series, patch 38/94).  Nothing revalidates ``vma`` after
    mmap_read_lock: a racer that unmapped it in between leaves a freed VMA."""
    locked = [1]
    mmap_read_lock(mm)
    populate_vma_page_range(vma, start, end, locked)
    if locked[0]:
        mmap_read_unlock(mm)


def mm_populate_after_write(mm, vma, start, end):
    """Populate what a caller just mapped under mmap_write_lock, and release
    the lock -- in the way the ``populate`` variant selects:

    - ``drop-retake`` (buggy): mmap_write_unlock, then mm_populate_vma(vma)
      with the pointer found under the write lock;
    - ``downgrade``: mmap_write_downgrade, then populate the same VMA under the
      read lock it now holds, so no writer can free it in between;
    - ``revalidate`` (mainline): mmap_write_unlock, then mm_populate(start, len),
      which looks the VMAs up again.

    Context: mmap_lock held for write on entry, not held on return."""
    variant = mm.kernel.variant("populate")
    if variant == "downgrade":
        mmap_write_downgrade(mm)
        locked = [1]
        populate_vma_page_range(vma, start, end, locked)
        if locked[0]:
            mmap_read_unlock(mm)
        return
    mmap_write_unlock(mm)
    if variant == "drop-retake":
        mm_populate_vma(mm, vma, start, end)
    else:
        mm_populate(mm, start, end - start)


def faultin_page_range(mm, start, end, write, locked):
    """MADV_POPULATE_(READ|WRITE): fault in [start, end) like a user access
    would.  Returns pages done or -errno.  Context: mmap_lock held for read."""
    gup_flags = FOLL_MADV_POPULATE | FOLL_TOUCH | FOLL_UNLOCKABLE
    if write:
        gup_flags |= FOLL_WRITE
    return __get_user_pages(mm, start, (end - start) >> 12, gup_flags, locked)


# -- gup_fast: lockless get_user_pages ---------------------------------------------------

def gup_fast_pte_range(mm, pt, addr, end, write, pages):
    """Grab the folios mapped at [addr, end) of one PTE table, stopping at
    the first that cannot be had locklessly.  For each PTE: read it without
    the ptl (ptep_get_lockless), refuse PROT_NONE, special (the zero page),
    or a write without write permission, take a reference only if the folio
    is not being freed (try_grab_folio_fast: folio_try_get), then re-read the
    PTE: if it changed meanwhile (a zap, a migration), give the reference
    back and stop.  Returns False at the first refusal.
    Context: interrupts off (the table cannot be freed: RCU; no TLB flush
    can complete: the IPI waits for us)."""
    while addr < end:
        i = pte_index(addr)
        folio = pt.ptes[i]
        bits = pt.bits[i]
        if not isinstance(folio, Folio) or bits & (_PAGE_PROTNONE | _PAGE_SPECIAL):
            return False
        if write and not bits & _PAGE_RW:
            return False
        if not atomic_inc_not_zero(folio, "_refcount"):
            return False
        if pt.ptes[i] is not folio or pt.bits[i] != bits:
            folio_put(folio, mm.kernel)
            return False
        pages.append(folio)
        addr += PAGE_SIZE
    return True


def gup_fast(mm, start, end, write, pages):
    """The lockless walk of get_user_pages_fast: PGD -> PMD table -> PTE
    table with interrupts disabled (local_irq_save), which keeps page tables
    from being freed under it (they are freed after an RCU grace period, and
    an interrupts-off region is a read-side section) and holds off TLB-flush
    IPIs, so a zap cannot finish freeing a page between our PTE read and our
    reference.  Hugetlb and anything not present stop the walk.  Returns the
    number of pages grabbed (appended to ``pages``).  Context: no lock."""
    cpu = this_cpu()
    n0 = len(pages)
    local_irq_disable(cpu)
    try:
        addr = start
        while addr < end:
            pmd = mm.pgd.get(addr >> PUD_SHIFT)
            if pmd is None:
                break
            pt = pmd.entries[(addr >> PMD_SHIFT) & 511]
            if not isinstance(pt, PteTable):
                break
            nxt = min((addr & ~(PMD_SIZE - 1)) + PMD_SIZE, end)
            if not gup_fast_pte_range(mm, pt, addr, nxt, write, pages):
                break
            addr = nxt
    finally:
        local_irq_enable(cpu)
    return len(pages) - n0


def follow_page_get(vma, address, write):
    """follow_page_pte with FOLL_GET: the folio mapped at ``address`` with a
    reference, or None.  Context: mmap_lock held; takes the ptl."""
    pt = pte_offset(vma.vm_mm, address)
    if pt is None:
        return None
    i = pte_index(address)
    pt.ptl.lock()
    try:
        folio = pt.ptes[i]
        bits = pt.bits[i]
        if not isinstance(folio, Folio) or bits & _PAGE_PROTNONE:
            return None
        if write and not bits & _PAGE_RW:
            return None
        if not bits & _PAGE_SPECIAL:      # the zero page is reserved: no reference to take
            folio_get(folio)
        return folio
    finally:
        pt.ptl.unlock()


def get_user_pages_fast(mm, start, nr_pages, write):
    """get_user_pages_fast / pin_user_pages_fast: the folios backing
    [start, start + nr_pages pages), each with a reference the caller drops
    with folio_put.  First the lockless walk (gup_fast); the rest under
    mmap_lock for read, faulting pages in as __get_user_pages does (a read
    of an untouched anonymous page gets the zero page, which the lockless
    walk leaves to this slow path, as pte_special does).  Returns the list
    (shorter than asked at an unmapped or forbidden address; an OSError
    EFAULT if not even the first page can be had).  Hugetlb VMAs are not
    supported by pymm's gup (EFAULT).  Context: no lock held."""
    pages = []
    end = start + nr_pages * PAGE_SIZE
    gup_fast(mm, start, end, write, pages)
    addr = start + len(pages) * PAGE_SIZE
    if addr < end:
        gup_flags = FOLL_GET | (FOLL_WRITE if write else 0)
        mmap_read_lock(mm)
        try:
            while addr < end:
                vma = mm.mm_mt.vma_lookup(addr)
                if vma is None or vma.vm_flags & VM_HUGETLB or check_vma_flags(vma, gup_flags):
                    break
                point("get_user_pages")
                folio = follow_page_get(vma, addr, write)
                if folio is None:
                    if faultin_page(vma, addr, gup_flags, None):
                        break
                    folio = follow_page_get(vma, addr, write)
                    if folio is None:
                        break
                pages.append(folio)
                addr += PAGE_SIZE
        finally:
            mmap_read_unlock(mm)
    if not pages:
        raise OSError(errno.EFAULT, f"get_user_pages_fast: nothing at {start:#x}")
    return pages


internal.define(__name__, globals())   # callers across a cycle use these through internal
