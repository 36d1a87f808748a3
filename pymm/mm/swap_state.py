"""A minimal swap device and its swap cache (mm/swapfile.c, mm/swap_state.c,
and do_swap_page from mm/memory.c) -- enough for reclaim to free anonymous
folios and for faults to bring their exact bytes back.

One device per Kernel (``kernel.swap_info``), as many slots as the machine
has pages.  Its state:

- ``swap_map[offset]``: how many PTEs hold the entry, plus ``SWAP_HAS_CACHE``
  while a folio for it sits in the swap cache.  A slot is free when that is 0.
  Protected by ``si->lock``.
- the swap cache (``swapper_spaces``' i_pages): offset -> folio, with a
  reference; ``folio.swap`` is the entry.  Protected by its xa_lock, and
  changed only with ``si->lock`` held too (so "HAS_CACHE set" and "a folio is
  in the cache" change together, and swap-in needs no -EEXIST retry loop).
  A folio enters and leaves the swap cache only under its folio lock.
- ``data[offset]``: what was written to the device (bytes, or None for a page
  that was never written to -- all zeros).  Written by reclaim under the folio
  lock after the folio is unmapped; read by swap-in into a new locked folio.

Lock order: ptl -> si->lock -> swap cache xa_lock (swap_duplicate and
free_swap_and_cache run under the ptl); the folio lock is above all of them,
and taken under a ptl only by trylock (free_swap_and_cache).

Only anonymous folios are swapped.  shmem folios are not reclaimed: the kernel
would write them to swap through shmem_writepage and leave swap entries in
the page cache, which pymm does not model.
"""
from ..locking import SpinLock
from ..sched import point
from . import internal
from .atomic import atomic_add_return, clear_bits, set_bits
from .filemap import FOLIO_LOCK_ANON, __folio_set_locked, folio_lock_or_retry, folio_trylock, folio_unlock
from .mm_types import (FAULT_FLAG_WRITE, MM_ANONPAGES, MM_SWAPENTS, PG_anon, PG_dirty, PG_uptodate,
                       VM_FAULT_OOM, VM_WRITE)
from .page_alloc import FOLIO_BATCH_SIZE, folio_put, folios_put_refs
from .pgtable import _PAGE_DIRTY, _PAGE_RW
from .swap import folio_add_lru
from .swapops import SwpEntry

SWAP_HAS_CACHE = 0x40        # include/linux/swap.h: a folio for the entry is in the swap cache


class SwapEntry(SwpEntry):
    """``swp_entry_t`` of a swapped-out anonymous page: (device, offset).

    One object per allocated slot; every PTE holding the entry holds this same
    object (pte_same() is identity: a slot freed and allocated again gets a new
    object, so a stale PTE never matches)."""

    __slots__ = ("si", "offset")

    def __init__(self, si, offset):
        self.si = si
        self.offset = offset

    def __repr__(self):
        return f"<swap entry {self.offset:#x}>"

    def fault(self, vmf):
        return do_swap_page(vmf, self)

    def zap(self, vma, pt, i, details):
        """zap_nonpresent_ptes: a swap entry is an anonymous (COW) page, so it
        is spared when the caller does not zap COW copies (hole punch,
        unmap_mapping_folio).  Context: ptl held."""
        if details is not None and (details.single_folio is not None or not details.even_cows):
            return False
        pt.ptes[i] = None
        pt.bits[i] = 0
        pt.nr -= 1
        vma.vm_mm.rss_stat[MM_SWAPENTS].add(-1)
        free_swap_and_cache(self)
        return True

    def copy(self, dst_vma, src_pt, dst_pt, i, cow):
        """copy_nonpresent_pte: the child gets the same entry.  Context: both
        ptls held."""
        swap_duplicate(self)
        dst_pt.ptes[i] = self
        dst_pt.bits[i] = 0
        dst_pt.nr += 1
        dst_vma.vm_mm.rss_stat[MM_SWAPENTS].add(1)


def is_swap_entry(e):
    return type(e) is SwapEntry


class SwapInfo:
    """``struct swap_info_struct``: one swap device of ``nr_slots`` pages."""

    def __init__(self, kernel, nr_slots):
        self.kernel = kernel
        self.max = nr_slots
        self.lock = SpinLock("&si->lock")
        self.swap_map = {}            # offset -> count | SWAP_HAS_CACHE; si->lock
        self.entries = {}             # offset -> the SwapEntry of the allocated slot; si->lock
        self._freed = []              # free offsets below _next; si->lock
        self._next = 0
        self.inuse_pages = 0          # si->lock
        self.data = {}                # offset -> bytes | None; the device's contents
        self.cache_lock = SpinLock("&xa->xa_lock")
        self.cache = {}               # offset -> folio (the swap cache); cache_lock (+ si->lock to change)
        self.bdev = None              # a block device swap I/O goes through (drivers/nbd.py), or None

    def __repr__(self):
        return f"<swap device {self.inuse_pages}/{self.max} slots used, {len(self.cache)} cached>"

    # -- slots (si->lock held) -----------------------------------------------------
    def _alloc_slot_locked(self):
        if self._freed:
            off = self._freed.pop()
        elif self._next < self.max:
            off = self._next
            self._next += 1
        else:
            return None
        self.inuse_pages += 1
        entry = SwapEntry(self, off)
        self.entries[off] = entry
        return entry

    def _free_slot_locked(self, off):
        del self.swap_map[off]
        del self.entries[off]
        self.data.pop(off, None)
        self._freed.append(off)
        self.inuse_pages -= 1

    def _valid_locked(self, entry):
        return self.entries.get(entry.offset) is entry

    def swap_count(self, entry):
        """How many PTEs hold ``entry`` (__swap_count).  Context: any (a racy read)."""
        return self.swap_map.get(entry.offset, 0) & ~SWAP_HAS_CACHE

    def nr_cached(self):
        return len(self.cache)

    def cached_folios(self):
        """Context: quiescent (the invariant checks)."""
        return list(self.cache.values())


# -- swap counts ------------------------------------------------------------------

def swap_duplicate(entry):
    """One more PTE holds ``entry`` (fork, try_to_unmap_one).  Context: ptl held."""
    si = entry.si
    si.lock.lock()
    if not si._valid_locked(entry):
        si.lock.unlock()
        raise AssertionError(f"swap_duplicate: bad swap entry {entry!r}")
    si.swap_map[entry.offset] += 1
    si.lock.unlock()


def swap_free(entry):
    """A PTE no longer holds ``entry`` (swap-in mapped it).  Returns the
    remaining PTE count.  Context: ptl held."""
    si = entry.si
    si.lock.lock()
    v = si.swap_map[entry.offset] - 1
    if v == 0:
        si._free_slot_locked(entry.offset)
    else:
        si.swap_map[entry.offset] = v
    si.lock.unlock()
    return v & ~SWAP_HAS_CACHE


def free_swap_and_cache(entry):
    """A PTE holding ``entry`` was zapped.  If that was the last one and the
    swap cache still holds a folio for it, try to free that folio too
    (__try_to_reclaim_swap with TTRS_UNMAPPED).  Context: ptl held."""
    si = entry.si
    si.lock.lock()
    v = si.swap_map[entry.offset] - 1
    if v == 0:
        si._free_slot_locked(entry.offset)
    else:
        si.swap_map[entry.offset] = v
    si.lock.unlock()
    if v == SWAP_HAS_CACHE:
        __try_to_reclaim_swap(si, entry, False)


def __try_to_reclaim_swap(si, entry, anyway):
    """mm/swapfile.c __try_to_reclaim_swap: if the swap cache holds a folio
    for ``entry`` and no PTE holds the entry, take the folio out of the swap
    cache (freeing it, if the cache's was the last reference) -- with
    ``anyway`` (TTRS_ANYWAY) even if the folio is still mapped, else
    (TTRS_UNMAPPED) only if it is not.  The folio lock is only *tried*
    (callers may hold a ptl): if somebody holds it, the folio stays in the
    swap cache with its slot, and nothing else will free it but reclaim
    (shrink_folio_list) or the swap allocator's own reclaim of cache-only
    slots: Linux's lazy freeing of the swap cache.  Returns True if it freed
    the slot.  Context: any, no folio lock held; takes the swap cache lock."""
    folio = swap_cache_get_folio(si, entry)
    if folio is None:
        return False
    done = False
    if folio_trylock(folio):
        if folio.swap is entry and (anyway or not folio.folio_mapped()):
            done = folio_free_swap(folio)       # checks the slot holds only the cache
        folio_unlock(folio)
    folio_put(folio, si.kernel)
    return done


def swap_reclaim_cache(si):
    """Take every folio that only the swap cache holds a slot for out of it:
    what Linux's swap allocator does when the device fills up
    (swap_reclaim_full_clusters -> __try_to_reclaim_swap(TTRS_ANYWAY) for
    each slot with only SWAP_HAS_CACHE) and what reclaim does to such a folio
    on the LRU.  This is the state a process leaves when it exits while
    somebody holds the folio lock of one of its swapped-in pages (see
    __try_to_reclaim_swap).  Returns the number of slots freed.
    Context: no locks held."""
    si.lock.lock()
    only_cache = [si.entries[off] for off, v in si.swap_map.items() if v == SWAP_HAS_CACHE]
    si.lock.unlock()
    return sum(__try_to_reclaim_swap(si, e, True) for e in only_cache)


# -- the swap cache -----------------------------------------------------------------

def add_to_swap(kernel, folio):
    """Give an anonymous folio a swap slot and put it in the swap cache
    (folio_alloc_swap + add_to_swap_cache); it is marked dirty so that
    reclaim writes it out.  Returns False when the device is full.
    Context: folio locked (reclaim)."""
    si = kernel.swap_info
    si.lock.lock()
    entry = si._alloc_slot_locked()
    if entry is None:
        si.lock.unlock()
        return False
    si.swap_map[entry.offset] = SWAP_HAS_CACHE
    si.cache_lock.lock()
    si.cache[entry.offset] = folio
    folio.swap = entry
    atomic_add_return(folio, "_refcount", 1)       # the swap cache's reference
    si.cache_lock.unlock()
    si.lock.unlock()
    set_bits(folio, "flags", PG_dirty)
    return True


def swap_cache_get_folio(si, entry):
    """Look ``entry`` up in the swap cache; returns the folio with a reference,
    or None.  Context: any; takes the swap cache's xa_lock."""
    si.cache_lock.lock()
    folio = si.cache.get(entry.offset)
    if folio is not None and folio.swap is entry:
        atomic_add_return(folio, "_refcount", 1)
    else:
        folio = None
    si.cache_lock.unlock()
    return folio


def _delete_from_swap_cache_locked(si, folio):
    """Context: folio locked, si->lock and the swap cache lock held.  The
    caller drops the cache's reference once the locks are released."""
    entry = folio.swap
    del si.cache[entry.offset]
    folio.swap = None
    v = si.swap_map[entry.offset] & ~SWAP_HAS_CACHE
    if v == 0:
        si._free_slot_locked(entry.offset)
    else:
        si.swap_map[entry.offset] = v


def folio_free_swap(folio):
    """Take a folio out of the swap cache when no PTE holds its entry any
    more; it keeps its contents (now only in memory, hence dirty).  Returns
    True if it did.  Context: folio locked."""
    entry = folio.swap
    si = entry.si
    si.lock.lock()
    if si.swap_map.get(entry.offset, 0) != SWAP_HAS_CACHE or si.entries.get(entry.offset) is not entry:
        si.lock.unlock()
        return False
    si.cache_lock.lock()
    _delete_from_swap_cache_locked(si, folio)
    si.cache_lock.unlock()
    si.lock.unlock()
    set_bits(folio, "flags", PG_dirty)
    folio_put(folio, si.kernel)                     # the swap cache's reference
    return True


def free_swap_cache(folio):
    """A zap dropped a mapping of a swap-cache folio: if that was the last and
    no PTE holds its entry, the slot is useless -- free it now rather than
    leave it to reclaim (trylock only: a holder of the folio lock decides).
    Context: the caller holds a reference; no ptl."""
    if folio.swap is not None and not folio.folio_mapped() and folio_trylock(folio):
        if folio.swap is not None and not folio.folio_mapped():
            folio_free_swap(folio)
        folio_unlock(folio)


def free_pages_and_swap_cache(kernel, folios):
    """Drop the references a zap gathered (mm/swap_state.c): free_swap_cache
    on each, then folios_put_refs a folio_batch at a time.  Context: no ptl."""
    for i in range(0, len(folios), FOLIO_BATCH_SIZE):
        batch = folios[i:i + FOLIO_BATCH_SIZE]
        for folio in batch:
            if folio.swap is not None:
                free_swap_cache(folio)
        folios_put_refs(kernel, batch)


def remove_swap_mapping(kernel, folio):
    """The swap half of __remove_mapping: if nobody but the swap cache and the
    isolating reclaimer holds the folio, take it out of the swap cache (the
    kernel freezes the refcount; pymm checks it under the swap cache lock,
    where every lookup takes its reference).  On success the folio holds only
    the caller's reference.  Context: folio locked, isolated, unmapped."""
    entry = folio.swap
    si = entry.si
    si.lock.lock()
    si.cache_lock.lock()
    if folio._refcount != 2 or folio.folio_mapped():
        si.cache_lock.unlock()
        si.lock.unlock()
        return False
    _delete_from_swap_cache_locked(si, folio)
    si.cache_lock.unlock()
    si.lock.unlock()
    atomic_add_return(folio, "_refcount", -1)       # the swap cache's reference (not the last)
    return True


def swap_writepage(folio):
    """pageout() to the device: store the folio's exact bytes.  Context: folio
    locked, in the swap cache, unmapped (nobody can write to it)."""
    si = folio.swap.si
    si.data[folio.swap.offset] = None if folio.data is None else bytes(folio.data)
    if si.bdev is not None:                      # swap_writepage_bdev_sync: submit_bio
        si.bdev.submit_bio(1, si.data[folio.swap.offset] or b"")
    clear_bits(folio, "flags", PG_dirty)


def swap_read_folio(folio, entry):
    """Read the slot into a new folio.  Context: the folio locked, in the swap
    cache for ``entry``."""
    d = entry.si.data.get(entry.offset)
    if d is not None:
        folio.write_bytes(0, d)
    set_bits(folio, "flags", PG_uptodate)


def read_swap_cache_async(kernel, si, entry, new):
    """Find ``entry``'s folio in the swap cache, or insert ``new`` (a freshly
    allocated folio, which gets locked) and read the slot into it.  Returns
    (folio, fresh): the folio referenced (and, if fresh, locked), or
    (None, False) when the entry was freed meanwhile (its PTE changed).
    ``new`` is released unless it was used.  Context: may sleep; takes the
    new folio's lock, then si->lock and the swap cache lock."""
    __folio_set_locked(new, FOLIO_LOCK_ANON)     # nobody else can see it yet
    si.lock.lock()
    if not si._valid_locked(entry):
        si.lock.unlock()
        folio_unlock(new)
        folio_put(new, kernel)
        return None, False
    if si.swap_map[entry.offset] & SWAP_HAS_CACHE:
        si.cache_lock.lock()
        cur = si.cache[entry.offset]
        atomic_add_return(cur, "_refcount", 1)
        si.cache_lock.unlock()
        si.lock.unlock()
        folio_unlock(new)
        folio_put(new, kernel)
        return cur, False
    si.swap_map[entry.offset] |= SWAP_HAS_CACHE
    si.cache_lock.lock()
    si.cache[entry.offset] = new
    new.swap = entry
    atomic_add_return(new, "_refcount", 1)          # the swap cache's reference
    si.cache_lock.unlock()
    si.lock.unlock()
    swap_read_folio(new, entry)
    return new, True


# -- swap-in -------------------------------------------------------------------------

def do_swap_page(vmf, entry):
    """A fault met a swap entry: bring the page back through the swap cache,
    so that every PTE sharing the entry maps the same folio.

    The faulting PTE is mapped writable only for a write fault on a page no
    other PTE holds (then the swap slot is freed and the folio leaves the
    swap cache); otherwise read-only, and a write COWs later as usual.
    Context: mmap_lock held (read), or the VMA's read lock; takes the folio
    lock (or releases the fault's lock and returns VM_FAULT_RETRY: see
    folio_lock_or_retry), then the ptl."""
    vma, pt, i, k = vmf.vma, vmf.pt, vmf.idx, vmf.kernel
    si = entry.si
    folio = swap_cache_get_folio(si, entry)
    if folio is None:
        new = k.vma_alloc_folio(vma, vmf.address)
        if new is None:
            return VM_FAULT_OOM
        folio, fresh = read_swap_cache_async(k, si, entry, new)
        if folio is None:
            return 0                     # the entry is gone: the PTE changed, refault
    else:
        fresh = False
    if not fresh:
        ret = folio_lock_or_retry(folio, vmf)
        if ret:                          # the fault's lock was released: retry
            folio_put(folio, k)
            return ret
    point("do_swap_page")
    if folio.swap is not entry:          # left the swap cache while we waited
        folio_unlock(folio)
        folio_put(folio, k)
        return 0
    pt.ptl.lock()
    if pt.ptes[i] is not entry:          # !pte_same: someone else mapped or zapped it
        pt.ptl.unlock()
        if si.swap_count(entry) == 0 and not folio.folio_mapped():
            folio_free_swap(folio)       # nobody else will: do not strand it in the cache
        folio_unlock(folio)
        folio_put(folio, k)
        return 0
    left = swap_free(entry)              # this PTE no longer holds the entry
    # Exclusive only if no other PTE holds the entry AND none maps the folio
    # (a sharer that swapped it in first maps it read-only): the kernel's
    # PageAnonExclusive / reuse_swap_page rule.  Mapping a page another
    # process still maps writable would break COW isolation.
    exclusive = left == 0 and not folio.folio_mapped()
    if not folio.flags & PG_anon:        # first mapping since it was read in
        internal.folio_add_new_anon_rmap(k, folio, vma, vmf.address)
        if not exclusive:                # other PTEs, maybe in other mms: the oldest anon_vma
            folio.mapping = vma.anon_vma.root
        folio_add_lru(k, folio)
    else:
        internal.folio_add_anon_rmap_pte(k, folio, vma, vmf.address)
    bits = 0
    if exclusive and vmf.flags & FAULT_FLAG_WRITE and vma.vm_flags & VM_WRITE:
        bits = _PAGE_RW | _PAGE_DIRTY
    if left == 0:
        # The slot is no longer needed (the folio may still be shared).  As the kernel does, leave the swap
        # cache BEFORE the PTE is set: once it is, a racing zap may drop the
        # PTE's reference, and the swap cache's must not be the last one put.
        folio_free_swap(folio)
    pt.ptes[i] = folio                   # our reference becomes the PTE's
    pt.bits[i] = bits
    mm = vma.vm_mm
    mm.rss_stat[MM_SWAPENTS].add(-1)
    mm.rss_stat[MM_ANONPAGES].add(1)
    folio_unlock(folio)                  # still under the ptl: a zap cannot free it yet
    pt.ptl.unlock()
    return 0


def check_swap(si, swap_ptes):
    """The swap part of the invariant checks: every slot's count is the number
    of PTEs holding its entry (``swap_ptes``: entry -> PTEs, from the page-table
    walk), SWAP_HAS_CACHE is set exactly for the slots with a swap-cache folio,
    and no PTE holds a freed entry.  Returns (kind, title, line) problems.
    Context: quiescent."""
    out = []
    for entry, n in swap_ptes.items():
        if si.entries.get(entry.offset) is not entry:
            out.append(("bad-page-state", "BUG: stale swap entry in a PTE",
                        f"{n} PTE(s) hold {entry!r}, whose slot is free or reused"))
    for off, v in list(si.swap_map.items()):
        entry = si.entries[off]
        want = swap_ptes.get(entry, 0)
        if v & ~SWAP_HAS_CACHE != want:
            out.append(("bad-page-state", "BUG: Bad swap count",
                        f"swap slot {off:#x}: count {v & ~SWAP_HAS_CACHE} but {want} PTEs hold it"))
        folio = si.cache.get(off)
        if bool(v & SWAP_HAS_CACHE) != (folio is not None) or \
                (folio is not None and folio.swap is not entry):
            out.append(("bad-page-state", "BUG: swap cache out of sync",
                        f"swap slot {off:#x}: HAS_CACHE {bool(v & SWAP_HAS_CACHE)}, cached {folio!r}"))
        if v == 0:
            out.append(("bad-page-state", "BUG: Bad swap count",
                        f"swap slot {off:#x} allocated with count 0 and no cache"))
    if si.inuse_pages != len(si.swap_map):
        out.append(("bad-page-state", "BUG: swap accounting",
                    f"inuse_pages {si.inuse_pages} but {len(si.swap_map)} slots in use"))
    return out


internal.define(__name__, globals())   # callers across a cycle use these through internal
