"""Truncation and hole punching of the page cache (mm/truncate.c, and
unmap_mapping_range from mm/memory.c)."""
from ..sched import point
from .filemap import filemap_get_folio, filemap_remove_folio, folio_lock, folio_unlock
from .memory import ZapDetails, zap_page_range_single
from .page_alloc import folio_put
from .rmap import i_mmap_lock_read, i_mmap_unlock_read

ULONG_MAX = (1 << 64) - 1


def unmap_mapping_pages(mapping, first, nr, even_cows, single_folio=None):
    """Zap every PTE mapping file pages [first, first+nr) in every process.
    Context: takes i_mmap_rwsem for read, then each table's ptl."""
    last = ULONG_MAX if nr == 0 else first + nr - 1
    details = ZapDetails(even_cows, single_folio)
    i_mmap_lock_read(mapping)
    for vma in mapping.i_mmap.iter(first, last):
        vba = vma.vm_pgoff
        vea = vba + vma.vma_pages() - 1
        zba, zea = max(first, vba), min(last, vea)
        zap_page_range_single(vma, ((zba - vba) << 12) + vma.vm_start, (zea - zba + 1) << 12, details)
    i_mmap_unlock_read(mapping)


def unmap_mapping_range(mapping, holebegin, holelen, even_cows):
    first = holebegin >> 12
    nr = 0 if holelen == 0 else (holelen + 4095) >> 12
    unmap_mapping_pages(mapping, first, nr, even_cows)


def truncate_inode_folio(kernel, mapping, folio):
    """Context: folio locked.  Unmap it if still mapped, then delete it from the
    page cache and drop the cache's reference."""
    if folio.folio_mapped():
        unmap_mapping_pages(mapping, folio.index, 1, False, single_folio=folio)
    filemap_remove_folio(kernel, folio)
    folio_put(folio, kernel)


def truncate_inode_pages_range(kernel, mapping, lstart, lend):
    """Remove page-cache folios fully inside [lstart, lend] (bytes, inclusive);
    zero the partial pages at the edges."""
    start = (lstart + 4095) >> 12
    end = (lend + 1) >> 12 if lend != ULONG_MAX else ULONG_MAX
    for index in sorted(i for i in list(mapping.i_pages) if start <= i < end):
        folio = filemap_get_folio(mapping, index)
        if folio is None:
            continue
        folio_lock(folio)
        point("truncate_inode_folio")
        if folio.mapping is mapping:
            truncate_inode_folio(kernel, mapping, folio)
        folio_unlock(folio)
        folio_put(folio, kernel)
    _zero_partial(kernel, mapping, lstart, lend)


def _zero_partial(kernel, mapping, lstart, lend):
    """Zero the parts of the edge pages that lie in [lstart, lend]."""
    ranges = []
    hs = lstart >> 12
    if lstart & 4095:
        he = 4096 if lend == ULONG_MAX or lend >> 12 != hs else (lend & 4095) + 1
        ranges.append((hs, lstart & 4095, he))
    if lend != ULONG_MAX and (lend + 1) & 4095 and (lend >> 12 != hs or not lstart & 4095):
        ranges.append((lend >> 12, 0, (lend & 4095) + 1))
    for index, lo, hi in ranges:
        folio = filemap_get_folio(mapping, index)
        if folio is None:
            continue
        folio_lock(folio)
        if folio.mapping is mapping and folio.data is not None:
            folio.write_bytes(lo, bytes(hi - lo))
        folio_unlock(folio)
        folio_put(folio, kernel)


def truncate_pagecache(kernel, inode, newsize):
    """After i_size went down: unmap (COW copies too), drop the cache, unmap again
    for faults that raced in."""
    mapping = inode.i_mapping
    holebegin = (newsize + 4095) & ~4095
    unmap_mapping_range(mapping, holebegin, 0, True)
    truncate_inode_pages_range(kernel, mapping, newsize, ULONG_MAX)
    unmap_mapping_range(mapping, holebegin, 0, True)
