"""mincore(2) (mm/mincore.c): which pages of a range are resident.

A byte per page, bit 0 set when the page is in memory: a present PTE (the
zero page included), a migration entry (the page is in memory, being moved),
a swap entry whose page is still in the swap cache, or -- where no PTE maps
it -- a page of the mapped file in the page cache.  Anonymous memory never
touched is not resident.  For hugetlb every base page of a huge page that
has any entry is resident (mincore_hugetlb)."""
import errno

from ..constants import PAGE_SIZE, TASK_SIZE
from .filemap import filemap_get_folio
from .mm_types import VM_HUGETLB, Folio
from .mmap_lock import mmap_read_lock, mmap_read_unlock
from .page_alloc import folio_put
from .pgtable import pte_index, pte_offset
from .swapops import MigrationEntry
from . import hugetlb_ops
from .swap_state import SwpEntry, swap_cache_get_folio


def mincore_page(vma, addr):
    """No PTE maps ``addr``: is the file's page cached?  (anon: no)."""
    f = vma.vm_file
    if f is None:
        return 0
    folio = filemap_get_folio(f.mapping, vma.linear_page_index(addr))
    if folio is None:
        return 0
    folio_put(folio, vma.vm_mm.kernel)
    return 1


def mincore_pte(vma, entry, addr):
    """Is the page behind PTE value ``entry`` resident?  Context: mmap_lock
    held (the entry was read under the ptl)."""
    if entry is None:
        return mincore_page(vma, addr)
    if isinstance(entry, (Folio, MigrationEntry)):
        return 1
    if isinstance(entry, SwpEntry):
        folio = swap_cache_get_folio(entry.si, entry)
        if folio is None:
            return 0
        folio_put(folio, vma.vm_mm.kernel)
        return 1
    return 1            # another kind of non-swap entry: the kernel counts it as present


def mincore_hugetlb(vma, start, end, vec):
    hugetlb_vma_lock_read = hugetlb_ops.hugetlb_vma_lock_read
    hugetlb_vma_unlock_read = hugetlb_ops.hugetlb_vma_unlock_read
    hugetlb_walk = hugetlb_ops.hugetlb_walk
    hugetlb_vma_lock_read(vma)
    addr = start
    while addr < end:
        ptep = hugetlb_walk(vma, addr)
        present = 0
        if ptep is not None:
            table, i = ptep
            table.ptl.lock()
            present = 1 if table.entries[i] is not None else 0
            table.ptl.unlock()
        nxt = min(end, (addr | (2 << 20) - 1) + 1)
        vec.extend([present] * ((nxt - addr) // PAGE_SIZE))
        addr = nxt
    hugetlb_vma_unlock_read(vma)


def do_mincore(mm, start, end, vec):
    """Fill ``vec`` for [start, end) of the VMA covering ``start``; returns
    the address reached, or -ENOMEM if ``start`` is in a hole.
    Context: mmap_lock held for read."""
    vma = mm.mm_mt.vma_lookup(start)
    if vma is None:
        return -errno.ENOMEM
    end = min(end, vma.vm_end)
    if vma.vm_flags & VM_HUGETLB:
        mincore_hugetlb(vma, start, end, vec)
        return end
    addr = start
    while addr < end:
        pt = pte_offset(mm, addr)
        nxt = min(end, (addr | (2 << 20) - 1) + 1)
        if pt is None:
            vec.extend(mincore_page(vma, a) for a in range(addr, nxt, PAGE_SIZE))
        else:
            pt.ptl.lock()
            entries = [pt.ptes[pte_index(a)] for a in range(addr, nxt, PAGE_SIZE)]
            pt.ptl.unlock()
            # page-cache and swap-cache lookups take their xa_lock: pymm does
            # them after dropping the ptl (the kernel's are RCU lookups)
            vec.extend(mincore_pte(vma, e, a) for e, a in zip(entries, range(addr, nxt, PAGE_SIZE)))
        addr = nxt
    return end


def sys_mincore(mm, start, length):
    """mincore(2): returns the vector as bytes.  EINVAL: ``start`` not page
    aligned; ENOMEM: the range leaves the address space or has a hole (the
    kernel then has filled the vector up to the hole; pymm returns nothing)."""
    if start & (PAGE_SIZE - 1):
        return -errno.EINVAL
    if length < 0 or start + length > TASK_SIZE:
        return -errno.ENOMEM            # !access_ok
    pages = (length + PAGE_SIZE - 1) // PAGE_SIZE
    vec = bytearray()
    end = start + pages * PAGE_SIZE
    while start < end:
        mmap_read_lock(mm)
        r = do_mincore(mm, start, end, vec)
        mmap_read_unlock(mm)
        if r < 0:
            return r
        start = r
    return bytes(vec)
