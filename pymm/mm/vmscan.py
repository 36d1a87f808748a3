"""Page reclaim (mm/vmscan.c): isolate folios from the tail of the LRU, unmap
them through the rmap, write anonymous ones to swap, free them.

Entry points: ``try_to_free_pages(kernel, nr_to_reclaim)`` (what
``Kernel.reclaim`` runs; direct reclaim in the kernel) and one ``kswapd``
thread per node (``Kernel.start_kswapd``), woken by the page allocator when a
node's free pages drop below its low watermark, reclaiming until they reach
the high one.

What is reclaimed: anonymous folios only (to the swap device in
pymm.mm.swap_state).  shmem folios -- every pymm file is tmpfs -- are never
reclaimed: the kernel would swap them out through shmem_writepage, which pymm
does not model, and pymm has no clean page cache that could simply be dropped.
So only the anon LRU is scanned.

Mlock: an mlocked folio lives on the unevictable LRU, which is never
scanned.  A folio reclaim took from an evictable list can still turn out to
be mapped in a VM_LOCKED VMA (mlock(2) sets VM_LOCKED before it reaches the
pages); try_to_unmap_one then mlocks it and stops (SCENARIOS.md section E,
variant "rmap-mlock"), and the folio goes back -- to the unevictable LRU.
"""
import threading
import traceback
from itertools import islice

from loguru import logger

from ..context import Task, _KernelContext
from ..sched import point
from .atomic import atomic_inc_not_zero, clear_bits, set_bits
from .filemap import folio_trylock, folio_unlock
from .gfp import __fs_reclaim_acquire as raw_fs_reclaim_acquire   # (no mangling in methods)
from .gfp import __fs_reclaim_release as raw_fs_reclaim_release
from .gfp import (fs_reclaim_acquire, fs_reclaim_release, memalloc_noreclaim_restore,
                  memalloc_noreclaim_save)
from .migrate import folio_putback_lru
from .mm_types import PG_anon, PG_dirty, PG_isolated, PG_mlocked, PG_swapbacked
from .page_alloc import folio_put
from .rmap import TTU_BATCH_FLUSH, try_to_unmap, try_to_unmap_flush, try_to_unmap_flush_dirty
from .swap import LRU_ANON, lruvec_del_folio_locked
from .swap_state import add_to_swap, folio_free_swap, remove_swap_mapping, swap_writepage

SWAP_CLUSTER_MAX = 32          # folios isolated per batch
MAX_RECLAIM_RETRIES = 16       # kswapd runs without progress before a node is "hopeless"


class ScanControl:
    """``struct scan_control``."""

    __slots__ = ("nr_to_reclaim", "nr_reclaimed", "nr_scanned", "nr_unmap_fail", "nr_mlocked")

    def __init__(self, nr_to_reclaim):
        self.nr_to_reclaim = nr_to_reclaim
        self.nr_reclaimed = 0
        self.nr_scanned = 0
        self.nr_unmap_fail = 0
        self.nr_mlocked = 0


def folio_evictable(folio):
    """Not mlocked (mapping_unevictable -- ramfs, SHM_LOCK -- is not modelled)."""
    return not folio.flags & PG_mlocked


def isolate_lru_folios(lruvec, lru, nr_to_scan, dst):
    """Take up to ``nr_to_scan`` folios from the tail (the oldest end) of list
    ``lru`` onto ``dst``, each with a reference.  Returns how many were looked
    at.  Context: takes lruvec->lru_lock."""
    lruvec.lru_lock.lock()
    scanned = 0
    for folio in islice(lruvec.lists[lru], nr_to_scan):
        scanned += 1
        # folio_try_get: the lru_lock does not stop the last folio_put, which
        # drops the count to 0 before it takes the lru_lock to unlink the folio
        if not atomic_inc_not_zero(folio, "_refcount"):
            continue
        lruvec_del_folio_locked(lruvec, folio)
        set_bits(folio, "flags", PG_isolated)
        dst.append(folio)
    lruvec.lru_lock.unlock()
    return scanned


def move_folios_to_lru(kernel, folios):
    """Put back what could not be reclaimed (mlocked ones go to the
    unevictable list) and drop the isolation references."""
    for folio in folios:
        folio_putback_lru(kernel, folio)


def __remove_mapping(kernel, folio):
    """Detach a fully unmapped folio from the swap cache if nobody else holds
    a reference (see swap_state.remove_swap_mapping).  Context: folio locked."""
    return remove_swap_mapping(kernel, folio)


def pageout(folio):
    """Write a dirty swap-cache folio to its slot (swap_writepage; pymm's
    device write completes at once).  Context: folio locked and unmapped."""
    swap_writepage(folio)


def shrink_folio_list(kernel, folio_list, sc):
    """Try to free each isolated folio of ``folio_list``; put the others back.
    Returns the number of pages reclaimed.

    Per folio: trylock; an unevictable (mlocked) one goes back at once;
    non-anonymous (shmem) ones are kept; an anonymous one gets a swap slot
    (add_to_swap), is unmapped everywhere (try_to_unmap: each PTE becomes the
    swap entry), written out if dirty, taken out of the swap cache and freed.
    If a mapping cannot be removed -- a VM_LOCKED VMA mlocks it -- the folio
    goes back; an mlocked one also gives up its swap slot if no PTE holds it.
    Context: no locks held; the folios are isolated, each with a reference."""
    nr_reclaimed = 0
    ret_folios = []
    free_folios = []
    for folio in folio_list:
        point("shrink_folio_list")
        sc.nr_scanned += folio.nr_pages()
        if not folio_trylock(folio):
            ret_folios.append(folio)
            continue
        nr = folio.nr_pages()
        if _shrink_locked_folio(kernel, folio, sc):
            nr_reclaimed += nr
            free_folios.append(folio)
        else:
            folio_unlock(folio)
            ret_folios.append(folio)
    # The folios were unmapped with TTU_BATCH_FLUSH: no CPU may reach them
    # through its TLB once they are freed or back on the LRU.
    try_to_unmap_flush()
    for folio in free_folios:
        folio_put(folio, kernel)              # the isolation reference, the last one: freed
    move_folios_to_lru(kernel, ret_folios)
    return nr_reclaimed


def _shrink_locked_folio(kernel, folio, sc):
    """The body of shrink_folio_list for one locked folio.  Returns True if it
    can be freed (it is unlocked, the caller drops the last reference after
    the TLB flush); False to keep it (still locked)."""
    if not folio_evictable(folio):
        return _activate_locked(folio, sc)
    if not folio.flags & PG_anon:
        return False                      # shmem: not reclaimed (see the module docstring)
    lazyfree = not folio.flags & PG_swapbacked          # MADV_FREE'd: no swap needed
    if not lazyfree and folio.swap is None and not add_to_swap(kernel, folio):
        return _activate_locked(folio, sc)     # the swap device is full
    if folio.folio_mapped():
        try_to_unmap(folio, TTU_BATCH_FLUSH)
        if folio.folio_mapped() or not folio_evictable(folio):
            sc.nr_unmap_fail += folio.nr_pages()
            return _activate_locked(folio, sc)
    if lazyfree:
        # the __remove_mapping of a lazyfree folio: only our reference, clean
        if folio._refcount != 1 or folio.flags & PG_dirty or folio.flags & PG_swapbacked:
            return False
        folio_unlock(folio)
        clear_bits(folio, "flags", PG_isolated)
        return True                       # freed by the caller, after the TLB flush
    if folio.flags & PG_dirty:
        # A CPU may still write through a dirty writable TLB entry: flush
        # before the writeback copies the folio.
        try_to_unmap_flush_dirty()
        pageout(folio)
    point("shrink_folio_list_remove")
    if not __remove_mapping(kernel, folio):
        return False                      # someone holds a reference: keep it
    folio_unlock(folio)
    clear_bits(folio, "flags", PG_isolated)
    return True


def _activate_locked(folio, sc):
    """activate_locked: the folio stays.  An mlocked folio needs no swap slot
    (folio_free_swap does nothing while PTEs still hold the entry)."""
    if not folio_evictable(folio):
        sc.nr_mlocked += folio.nr_pages()
        if folio.swap is not None:
            folio_free_swap(folio)
    return False


def shrink_node(kernel, pgdat, sc):
    """Reclaim from one node's anon LRU until ``sc.nr_to_reclaim`` pages are
    reclaimed or every folio that was on the list has been tried once.
    Context: may sleep; no locks held."""
    lruvec = pgdat.lruvec
    budget = lruvec.lists[LRU_ANON].count       # folios put back go to the head: try each once
    while budget > 0 and sc.nr_reclaimed < sc.nr_to_reclaim:
        batch = []
        want = min(SWAP_CLUSTER_MAX, budget, sc.nr_to_reclaim - sc.nr_reclaimed)
        n = isolate_lru_folios(lruvec, LRU_ANON, want, batch)
        if n == 0:
            break
        budget -= n
        sc.nr_reclaimed += shrink_folio_list(kernel, batch, sc)
    return sc.nr_reclaimed


def try_to_free_pages(kernel, nr_to_reclaim, nodes=None):
    """Reclaim up to ``nr_to_reclaim`` pages from ``nodes`` (all by default),
    in node order.  Returns the number of pages reclaimed.  A node where
    something was reclaimed is no longer hopeless for its kswapd.
    Context: may sleep; no locks held."""
    sc = ScanControl(nr_to_reclaim)
    for pgdat in (kernel.nodes if nodes is None else [kernel.nodes[n] for n in nodes]):
        if sc.nr_reclaimed >= nr_to_reclaim:
            break
        before = sc.nr_reclaimed
        shrink_node(kernel, pgdat, sc)
        if sc.nr_reclaimed > before and kernel.kswapd is not None:
            kernel.kswapd[pgdat.node_id].failures = 0
    logger.debug("reclaim: {} of {} pages (scanned {}, unmap failed {}, mlocked {})",
                 sc.nr_reclaimed, nr_to_reclaim, sc.nr_scanned, sc.nr_unmap_fail, sc.nr_mlocked)
    return sc.nr_reclaimed


def __perform_reclaim(kernel, gfp, nr_to_reclaim, nodes=None):
    """Direct reclaim by an allocation that may wait (mm/page_alloc.c):
    lockdep's fs_reclaim is held across it, and the task's own allocations
    meanwhile never recurse into reclaim (memalloc_noreclaim_save: the
    PF_MEMALLOC scope).  Returns the pages reclaimed.  Context: may sleep;
    whatever locks the allocating caller holds."""
    fs_reclaim_acquire(gfp)
    noreclaim = memalloc_noreclaim_save()
    try:
        return try_to_free_pages(kernel, nr_to_reclaim, nodes)
    finally:
        memalloc_noreclaim_restore(noreclaim)
        fs_reclaim_release(gfp)


direct_reclaim = __perform_reclaim      # for callers inside classes (name mangling)


# -- kswapd -------------------------------------------------------------------------------

class Kswapd:
    """One node's kswapd: a real thread that sleeps on its wait queue
    (pgdat->kswapd_wait, a condition variable: not a lock) until the
    allocator wakes it, then runs balance_pgdat.

    Free mode only: a controlled run switches only between its managed
    threads, so there kswapd's work is done by calling ``k.reclaim`` from a
    managed thread instead."""

    def __init__(self, kernel, pgdat, low, high):
        self.kernel = kernel
        self.pgdat = pgdat
        self.low = low                  # wake below this many free pages
        self.high = high                # reclaim up to this many
        self.failures = 0               # pgdat->kswapd_failures
        self.runs = 0
        self.reclaimed = 0
        self.error = None               # (exception, traceback text) if the thread died
        self.task = Task(kernel, f"kswapd{pgdat.node_id}")
        self._wait = threading.Condition()
        self._pending = False
        self._stop = False
        self.thread = threading.Thread(target=self._main, name=f"kswapd{pgdat.node_id}", daemon=True)

    def __repr__(self):
        return (f"<kswapd{self.pgdat.node_id} low {self.low} high {self.high} runs {self.runs} "
                f"reclaimed {self.reclaimed}{' hopeless' if self.hopeless() else ''}>")

    def hopeless(self):
        return self.failures >= MAX_RECLAIM_RETRIES

    def wakeup(self):
        """wakeup_kswapd for this node: only below the low watermark, and not
        for a hopeless node.  A wakeup while a run is in progress is absorbed
        by it.  Context: any (the allocator)."""
        if self._pending or self.hopeless() or self.pgdat.nr_free >= self.low:
            return
        with self._wait:
            self._pending = True
            self._wait.notify_all()

    def wait_idle(self, timeout):
        """Wait until no wakeup is pending (the run it asked for is done).
        Returns False on timeout.  For tests and benchmarks."""
        with self._wait:
            return self._wait.wait_for(lambda: not self._pending or self.error is not None
                                       or not self.thread.is_alive(), timeout)

    def _main(self):
        memalloc_noreclaim_save()        # tsk->flags |= PF_MEMALLOC | PF_KSWAPD, for good
        with _KernelContext(self.task):
            while True:
                with self._wait:
                    self._wait.wait_for(lambda: self._pending or self._stop)
                    if self._stop:
                        return
                try:
                    self.balance_pgdat()
                except BaseException as e:    # a crash in emulated kernel code: keep it for stop()
                    self.error = (e, traceback.format_exc())
                    logger.error("kswapd{} died: {!r}", self.pgdat.node_id, e)
                    return
                finally:
                    with self._wait:
                        self._pending = False
                        self._wait.notify_all()

    def balance_pgdat(self):
        """Reclaim on this node until it has ``high`` free pages (allocations
        may go on meanwhile) or a pass reclaims nothing.  Context: the kswapd
        thread; no locks held."""
        self.runs += 1
        got = 0
        raw_fs_reclaim_acquire()         # __fs_reclaim_acquire: kswapd is reclaim, held throughout
        try:
            while True:
                want = self.high - self.pgdat.nr_free
                if want <= 0:
                    break
                n = try_to_free_pages(self.kernel, want, nodes=[self.pgdat.node_id])
                got += n
                if n == 0:
                    break
        finally:
            raw_fs_reclaim_release()
        self.reclaimed += got
        self.failures = 0 if got else self.failures + 1

    def start(self):
        self.thread.start()

    def stop(self, timeout):
        with self._wait:
            self._stop = True
            self._wait.notify()
        self.thread.join(timeout)
        return not self.thread.is_alive()


def wakeup_kswapd(kernel, pgdat):
    """Called by the page allocator after it took pages from ``pgdat``."""
    ks = kernel.kswapd
    if ks is not None:
        ks[pgdat.node_id].wakeup()


def kswapd_run(kernel, low, high):
    """Start one kswapd per node.  Returns the list (kernel.kswapd)."""
    ks = [Kswapd(kernel, pgdat, low, high) for pgdat in kernel.nodes]
    kernel.kswapd = ks
    for k in ks:
        k.start()
    logger.debug("kswapd started on {} nodes (low {}, high {})", len(ks), low, high)
    for k in ks:                     # memory may already be short
        k.wakeup()
    return ks


def kswapd_stop(kernel, timeout=10.0):
    """Stop every kswapd thread and wait for it.  A thread that does not
    finish within ``timeout`` seconds is stuck (on a lock: a hang), which is
    an error; so is a thread that died of an exception."""
    ks = kernel.kswapd
    if ks is None:
        return False
    kernel.kswapd = None             # no more wakeups
    stuck = [k for k in ks if not k.stop(timeout)]
    if stuck:
        raise RuntimeError(f"kswapd did not stop within {timeout}s (blocked?): {stuck}")
    for k in ks:
        if k.error is not None:
            e, tb = k.error
            raise RuntimeError(f"kswapd{k.pgdat.node_id} died:\n{tb}") from e
    return True
