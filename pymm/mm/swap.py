"""LRU lists (mm/swap.c, include/linux/mm_inline.h).

Per node: anon, file and unevictable lists (the kernel's active/inactive
split is not modelled: pymm's reclaim does not age pages), each an intrusive
doubly linked list through folio.lru_prev/lru_next.  Everything here is
protected by ``lruvec.lru_lock``; PG_lru says the folio is on a list.
"""
from .atomic import clear_bits, set_bits
from ..locking import SpinLock
from .mm_types import PG_anon, PG_lru, PG_mlocked, PG_unevictable

LRU_ANON, LRU_FILE, LRU_UNEVICTABLE = range(3)
LRU_NAMES = ("anon", "file", "unevictable")


class LruList:
    __slots__ = ("head", "tail", "count")

    def __init__(self):
        self.head = self.tail = None
        self.count = 0

    def add(self, folio):           # at the head (most recent)
        folio.lru_prev = None
        folio.lru_next = self.head
        if self.head is not None:
            self.head.lru_prev = folio
        else:
            self.tail = folio
        self.head = folio
        self.count += 1

    def add_tail(self, folio):      # at the tail (oldest: reclaimed first)
        folio.lru_next = None
        folio.lru_prev = self.tail
        if self.tail is not None:
            self.tail.lru_next = folio
        else:
            self.head = folio
        self.tail = folio
        self.count += 1

    def remove(self, folio):
        p, n = folio.lru_prev, folio.lru_next
        if p is not None:
            p.lru_next = n
        else:
            self.head = n
        if n is not None:
            n.lru_prev = p
        else:
            self.tail = p
        folio.lru_prev = folio.lru_next = None
        self.count -= 1

    def __iter__(self):             # from the tail (oldest first); caller holds lru_lock
        f = self.tail
        while f is not None:
            prev = f.lru_prev
            yield f
            f = prev


class LruVec:
    __slots__ = ("pgdat", "lru_lock", "lists")

    def __init__(self, pgdat):
        self.pgdat = pgdat
        self.lru_lock = SpinLock("&lruvec->lru_lock")
        self.lists = [LruList() for _ in LRU_NAMES]


def folio_lru_list(folio):
    if folio.flags & (PG_unevictable | PG_mlocked):
        return LRU_UNEVICTABLE
    return LRU_ANON if folio.flags & PG_anon else LRU_FILE


def lruvec_add_folio_locked(lruvec, folio):
    """Context: lru_lock held; the folio is not on an LRU."""
    lru = folio_lru_list(folio)
    if lru == LRU_UNEVICTABLE:
        set_bits(folio, 'flags', PG_unevictable)
        lruvec.pgdat.vm_stat["NR_UNEVICTABLE"].add(folio.nr_pages())
    lruvec.lists[lru].add(folio)
    set_bits(folio, 'flags', PG_lru)


def lruvec_del_folio_locked(lruvec, folio):
    """Context: lru_lock held; PG_lru set.  Clears the LRU flags
    (__folio_clear_lru_flags) -- PG_mlocked stays, so a folio freed while still
    mlocked is caught by the free-time check."""
    if folio.flags & PG_unevictable:
        lruvec.lists[LRU_UNEVICTABLE].remove(folio)
        lruvec.pgdat.vm_stat["NR_UNEVICTABLE"].add(-folio.nr_pages())
    else:   # the evictable list it was added to (PG_mlocked may be newer than that)
        lruvec.lists[LRU_ANON if folio.flags & PG_anon else LRU_FILE].remove(folio)
    clear_bits(folio, 'flags', (PG_lru | PG_unevictable))


def folio_add_lru(kernel, folio):
    """Put a new folio on its node's LRU (the kernel batches through a per-CPU
    folio_batch; pymm adds directly)."""
    lruvec = kernel.nodes[folio.node].lruvec
    lruvec.lru_lock.lock()
    if not folio.flags & PG_lru:
        lruvec_add_folio_locked(lruvec, folio)
    lruvec.lru_lock.unlock()


def folio_lruvec_relock(kernel, folio, locked):
    """``folio_lruvec_relock_irqsave`` (include/linux/memcontrol.h): the
    folio's lruvec with its lru_lock held, keeping ``locked`` (the lruvec
    already held, or None) when it is the same one, else dropping it and
    taking the folio's.  Batches take one lru_lock hold per run of folios
    of one node."""
    lv = kernel.nodes[folio.node].lruvec
    if lv is not locked:
        if locked is not None:
            locked.lru_lock.unlock()
        lv.lru_lock.lock()
    return lv


def folios_add_lru(kernel, folios):
    """Put new folios on their nodes' LRUs with one lru_lock hold per run of
    one node: what the kernel's per-CPU folio_batch does when it drains
    (folio_batch_move_lru).  Context: may be called under a ptl."""
    lruvec = None
    for folio in folios:
        lruvec = folio_lruvec_relock(kernel, folio, lruvec)
        if not folio.flags & PG_lru:
            lruvec_add_folio_locked(lruvec, folio)
    if lruvec is not None:
        lruvec.lru_lock.unlock()


def folio_deactivate(kernel, folio):
    """MADV_COLD: age the folio so reclaim takes it first (the kernel moves it
    to the inactive list; pymm's lists have no active/inactive split, so it
    goes to the list's oldest end).  Context: takes lru_lock."""
    lruvec = kernel.nodes[folio.node].lruvec
    lruvec.lru_lock.lock()
    if folio.flags & PG_lru and not folio.flags & PG_unevictable:
        lst = lruvec.lists[LRU_ANON if folio.flags & PG_anon else LRU_FILE]
        lst.remove(folio)
        lst.add_tail(folio)
    lruvec.lru_lock.unlock()


def folio_move_lru_locked(lruvec, folio):
    """Re-file a folio whose evictability changed (mlock/munlock).  Context: lru_lock held."""
    if folio.flags & PG_lru:
        lruvec_del_folio_locked(lruvec, folio)
        lruvec_add_folio_locked(lruvec, folio)
