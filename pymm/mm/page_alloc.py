"""Per-node page pools (mm/page_alloc.c) and the folio refcount lifecycle.

Each node has a fixed number of base pages and of PMD-sized huge pages.  A
free page is only a count (``nr_free``, under the zone lock); a Folio object
exists while the page is allocated and is poisoned when it is freed.  The
free-time check is the kernel's free_page_is_bad(): a folio freed with
PAGE_FLAGS_CHECK_AT_FREE bits set or still mapped is "BUG: Bad page state".
"""
from ..debug import stackdepot
from ..debug.fault_inject import should_fail
from ..debug.kasan import kasan_poison, kasan_save_track
from ..debug.report import current_kernel, report
from ..locking import SpinLock
from ..sched import charge
from .atomic import PerCpuCounter, atomic_add_return
from .gfp import GFP_HIGHUSER_MOVABLE, might_alloc
from .mm_types import (PAGE_FLAG_NAMES, PAGE_FLAGS_CHECK_AT_FREE, PG_hugetlb, PG_lru, PG_reserved,
                       Folio, flag_names)
from .swap import LruVec, folio_lruvec_relock, lruvec_del_folio_locked
from . import hugetlb_ops


class PgData:
    """``pg_data_t`` with its one zone."""

    __slots__ = ("node_id", "present_pages", "nr_free", "lock", "lruvec", "vm_stat")

    def __init__(self, node_id, pages):
        self.node_id = node_id
        self.present_pages = pages
        self.nr_free = pages            # zone lock
        self.lock = SpinLock("&zone->lock")
        self.lruvec = LruVec(self)
        self.vm_stat = {k: PerCpuCounter() for k in NODE_STAT_ITEMS}


NODE_STAT_ITEMS = ("NR_ANON_MAPPED", "NR_FILE_PAGES", "NR_SHMEM", "NR_MLOCK", "NR_UNEVICTABLE")


def node_stat_add(kernel, folio, item, n):
    kernel.nodes[folio.node].vm_stat[item].add(n)


def __alloc_pages(kernel, order, preferred_nid, nodemask=None, gfp=GFP_HIGHUSER_MOVABLE):
    """Allocate a folio of ``order`` on ``preferred_nid``, falling back to the
    other allowed nodes in order (the zonelist).  Returns None when all are
    empty (or when fault injection fails it: should_fail_alloc_page):
    pymm's allocator does not reclaim by itself (direct reclaim is
    ``Kernel.reclaim``, kswapd runs in the background), but every allocation
    tells lockdep it may (``might_alloc(gfp)``, gfp.py).
    Context: may sleep if ``gfp`` allows it (the zone lock is a spinlock
    held briefly)."""
    might_alloc(gfp)
    if should_fail(kernel, "page-alloc", 4096 << order):
        return None
    charge("page_alloc")
    nodes = kernel.nodes
    for nid in _zonelist(preferred_nid, len(nodes)):
        if nodemask is not None and nid not in nodemask:
            continue
        pgdat = nodes[nid]
        pgdat.lock.lock()
        ok = pgdat.nr_free >= (1 << order)
        if ok:
            pgdat.nr_free -= 1 << order
        pgdat.lock.unlock()
        if kernel.kswapd is not None:
            kernel.kswapd[nid].wakeup()      # wakeup_kswapd: if below its low watermark
        if ok:
            return Folio(nid, order)
    return None


_zonelists = {}         # (preferred node, number of nodes) -> the fallback order


def _zonelist(preferred_nid, n):
    """The node order of an allocation that prefers ``preferred_nid``: it,
    then the others in order (built once per pair: on every allocation)."""
    z = _zonelists.get((preferred_nid, n))
    if z is None:
        z = _zonelists[(preferred_nid, n)] = (preferred_nid,) + tuple(
            i for i in range(n) if i != preferred_nid)
    return z


def alloc_pages_bulk(kernel, nid, nr, gfp=GFP_HIGHUSER_MOVABLE):
    """Allocate up to ``nr`` order-0 folios, local node ``nid`` first, then
    the others (alloc_pages_bulk_noprof: one allocation-context setup and
    one pcp-lock hold for the batch).  Returns the list, possibly shorter
    than ``nr`` (empty when memory or fault injection says no).  Every
    folio of the batch records the same allocation stack: it is the same
    call site.  Context: may sleep if ``gfp`` allows it."""
    might_alloc(gfp)
    if should_fail(kernel, "page-alloc", 4096 * nr):
        return []
    got = []
    nodes = kernel.nodes
    for n in _zonelist(nid, len(nodes)):
        want = nr - len(got)
        if not want:
            break
        pgdat = nodes[n]
        pgdat.lock.lock()
        take = min(want, pgdat.nr_free)
        pgdat.nr_free -= take
        pgdat.lock.unlock()
        if kernel.kswapd is not None:
            kernel.kswapd[n].wakeup()
        if take:
            track = kasan_save_track(2)     # from our caller, as Folio() records
            got.extend(Folio(n, 0, track) for _ in range(take))
    charge("page_alloc", len(got))
    return got


def folio_get(folio):
    atomic_add_return(folio, "_refcount", 1)


def folio_put(folio, kernel=None):
    """Drop a reference; the last one frees the folio (__folio_put: off the LRU,
    then free_unref_folio with its bad-page check).  Folios carry no kernel
    pointer (pymm models a million of them): the calling task's kernel owns it."""
    if folio.flags & PG_reserved:
        return
    v = atomic_add_return(folio, "_refcount", -1)
    if v == 0:
        __folio_put(folio, kernel)
    elif v < 0:
        bad_page(folio, "page refcount underflow (put of a freed or unowned page)", kernel)


def __folio_put(folio, kernel=None):
    kernel = kernel or current_kernel()
    if folio.flags & PG_hugetlb:            # back to the huge page pool, not the buddy
        hugetlb_ops.free_huge_folio(kernel, folio)
        return
    if folio.flags & PG_lru:
        lruvec = kernel.nodes[folio.node].lruvec
        lruvec.lru_lock.lock()
        if folio.flags & PG_lru:
            lruvec_del_folio_locked(lruvec, folio)
        lruvec.lru_lock.unlock()
    free_folio(kernel, folio)


FOLIO_BATCH_SIZE = 31     # PAGEVEC_SIZE: a struct folio_batch's capacity


def folios_put_refs(kernel, folios):
    """Drop one reference on each of ``folios`` (mm/swap.c folios_put_refs,
    what free_pages_and_swap_cache calls per folio_batch): the folios whose
    last reference it was come off their LRU under one lru_lock hold for a
    run of folios of the same node (folio_lruvec_relock_irqsave), then are
    freed together (free_unref_folios).  Context: no spinlock held."""
    kernel = kernel or current_kernel()
    lruvec = None
    free = []
    for folio in folios:
        if folio.flags & PG_reserved:
            continue
        v = atomic_add_return(folio, "_refcount", -1)
        if v:
            if v < 0:
                bad_page(folio, "page refcount underflow (put of a freed or unowned page)", kernel)
            continue
        if folio.flags & PG_hugetlb:
            if lruvec is not None:
                lruvec.lru_lock.unlock()
                lruvec = None
            hugetlb_ops.free_huge_folio(kernel, folio)
            continue
        if folio.flags & PG_lru:
            lruvec = folio_lruvec_relock(kernel, folio, lruvec)
            if folio.flags & PG_lru:
                lruvec_del_folio_locked(lruvec, folio)
        free.append(folio)
    if lruvec is not None:
        lruvec.lru_lock.unlock()
    if free:
        free_unref_folios(kernel, free, kasan_save_track(1))


def free_unref_folios(kernel, folios, track):
    """Free a batch (mm/page_alloc.c): the free-time check on each, then
    back to their nodes under one zone-lock hold per run of one node (the
    kernel's pcp lock, relocked when the zone changes).  ``track``: the
    free stack every folio of the batch records."""
    pgdat = None
    for folio in folios:
        _free_check(folio, kernel)
        pg = kernel.nodes[folio.node]
        if pg is not pgdat:
            if pgdat is not None:
                pgdat.lock.unlock()
            pgdat = pg
            pg.lock.lock()
        pg.nr_free += 1 << folio.order
    if pgdat is not None:
        pgdat.lock.unlock()
    for folio in folios:
        kasan_poison(folio, stack=track)


def _free_check(folio, kernel):
    bad = folio.flags & PAGE_FLAGS_CHECK_AT_FREE
    if bad or folio._mapcount != 0:
        reason = []
        if bad:
            reason.append(f"PAGE_FLAGS_CHECK_AT_FREE flag(s) set: {flag_names(bad, PAGE_FLAG_NAMES)}")
        if folio._mapcount != 0:
            reason.append(f"nonzero mapcount {folio._mapcount}")
        bad_page(folio, "; ".join(reason), kernel)


def free_folio(kernel, folio):
    """Return a folio's pages to its node.  The checks here are what turns a
    locking bug elsewhere into "BUG: Bad page state"."""
    _free_check(folio, kernel)
    pgdat = kernel.nodes[folio.node]
    pgdat.lock.lock()
    pgdat.nr_free += 1 << folio.order
    pgdat.lock.unlock()
    kasan_poison(folio, skip=3)


def bad_page(folio, reason, kernel=None, pymm_only=False):
    import threading
    t = threading.current_thread()
    mapping = folio.mapping
    # a pymm-only check has a title of its own (titles label findings, see
    # debug/report.py)
    title = "BUG: Bad page state: hugetlb folio freed with flags set" if pymm_only else \
        "BUG: Bad page state"
    text = "\n".join(([title] if pymm_only else []) + [
        f"BUG: Bad page state in process {t.name}  pfn:{_pfn(kernel, folio):05x}",
        f"page: refcount:{folio._refcount} mapcount:{folio._mapcount} mapping:{type(mapping).__name__ if mapping is not None else '0000000000000000'} index:{folio.index:#x} node:{folio.node} order:{folio.order}",
        f"flags: {flag_names(folio.flags, PAGE_FLAG_NAMES)}",
        f"page dumped because: {reason}",
        "Call Trace:",
        stackdepot.format(stackdepot.save(2), "  "),
    ])
    report("bad-page-state", title, text, kernel=kernel,
           data={"reason": reason, "flags": flag_names(folio.flags, PAGE_FLAG_NAMES),
                 **({"pymm_only": True} if pymm_only else {})})


def _pfn(kernel, folio):
    """A stable pseudo page-frame number for reports (see Kernel.kasan_address)."""
    kernel = kernel or current_kernel()
    return ((kernel.kasan_address(folio) >> 9) & 0xFFFFF) if kernel is not None else 0
