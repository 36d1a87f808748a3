"""F. Reclaim's batched TLB flush vs mprotect/munmap/madvise (seed: 3ea277194daa, 4.12).

Reclaim unmaps a page with TTU_BATCH_FLUSH: try_to_unmap_one clears the PTE
(here: replaces it with the swap entry) and only records that the CPUs of the
mm must be flushed; the flush (try_to_unmap_flush_dirty before writeback,
try_to_unmap_flush before freeing) comes later.  Meanwhile other CPUs still
hold the translation in their TLBs.  Nadav Amit's race, as the commit tells it:

    CPU0 (reclaim)                  CPU1
                                    user accesses A: the PTE cached in its TLB
    try_to_unmap_one:
      PTE cleared, flush pending
                                    mprotect / munmap / madvise(A)
                                    -> PTE not present: nothing to flush
                                    returns
                                    user accesses A through the stale entry
    try_to_unmap_flush()

After madvise(DONTNEED) returned, CPU1 still reads the old page (which must
read as zeros now) and its stores land in a page about to be freed: they are
lost.  After mprotect(PROT_READ) its stores still succeed, and after munmap
+ mmap they land outside the new mapping.  3ea277194daa added
flush_tlb_batched_pending(mm), called under the ptl by every path that
changes PTEs and relies on what it sees there (zap_pte_range,
change_pte_range, move_ptes, madvise_free_pte_range): if a batched flush of
this mm is pending, flush now.

Roles: ``user`` (a thread of the process: load the page, change its PTE --
in turn madvise(DONTNEED), munmap + mmap, madvise, mprotect read-only -- load
it again, sometimes store; after its own madvise the page must read as
zeros, which the data-integrity shadow checks), ``kswapd`` (reclaim: swaps
ADDR and then OTHER out in one batch with the batched flush).  Setup leaves
both pages clean and read-only (swapped out and read back), so reclaim needs
no flush before writeback and the flush of ADDR stays pending while OTHER is
reclaimed.  A VMA in the same PTE table keeps the table alive across the
munmap (freeing the table would flush the range anyway).  ``reader``: another
CPU reading the pages (after the user's madvise it must read zeros too; its
reads also bring swapped-out pages back clean, which reopens the window).

Caught: ``no-pending-flush`` as data corruption (a load after madvise
returns the old bytes, or a store is lost), or as a use-after-free through
a stale TLB entry if the page was freed first; ``flush-pending`` runs clean.
"""
from types import SimpleNamespace

from .. import constants as C
from ..kernel import Kernel
from . import register
from .base import Scenario

P = C.PAGE_SIZE
RW = C.PROT_READ | C.PROT_WRITE
ADDR = 0x4000_0000                 # the page the user changes
OTHER = ADDR + P                   # reclaimed in the same batch, after ADDR
GUARD = ADDR + 16 * P              # a VMA in the same PTE table, never touched
ANON_FIXED = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED
USER_OPS = (0, 1, 0, 2)            # madvise, munmap + mmap, madvise, mprotect
STORE = 0.5                        # chance that a user step ends with a store


@register
class TlbBatchFlushScenario(Scenario):
    name = "tlb-batch-flush"
    variant_key = "tlb-batched-pending"
    caught_kinds = frozenset({"data-corruption", "use-after-free"})
    controlled_steps = 3

    def setup(self, variant, seed):
        k = Kernel(nodes=1, pages_per_node=256, variants={"tlb-batched-pending": variant}, seed=seed)
        p = k.spawn("tlb")
        p.mmap(ADDR, 2 * P, RW, ANON_FIXED)
        p.mmap(GUARD, P, C.PROT_READ, ANON_FIXED)
        p.store(ADDR, b"setup A")
        p.store(OTHER, b"setup B")
        # Swapped out and read back in: clean read-only PTEs.  Reclaim then
        # unmaps them without a flush before writeback (only a dirty PTE can
        # leave a TLB entry that writes), so the batched flush of ADDR stays
        # pending while OTHER is reclaimed, until the end of shrink_folio_list.
        k.reclaim(2)
        p.load(ADDR, 8)
        p.load(OTHER, 8)
        return SimpleNamespace(kernel=k, p=p, r=0)

    def user(self, st, rng):
        """One thread that reads the page, changes its PTE -- in turn by
        madvise, munmap + mmap, madvise, mprotect -- and reads it again: after
        its own madvise(DONTNEED) the page must read as zeros, even if this
        CPU read it before (3ea277194daa's race has CPU1 change the PTE and
        then use its own stale TLB entry)."""
        p = st.p
        op = USER_OPS[st.r % len(USER_OPS)]
        st.r += 1
        try:
            p.load(ADDR, 16)
        except OSError:
            pass
        if op == 0:
            p.madvise(ADDR, P, C.MADV_DONTNEED)
        elif op == 1:
            p.munmap(ADDR, P)
            p.mmap(ADDR, P, RW, ANON_FIXED)
        else:
            p.mprotect(ADDR, P, C.PROT_READ)
        p.load(ADDR, 16)
        if op == 2:
            p.mprotect(ADDR, P, RW)
        if rng.random() < STORE:
            p.store(ADDR, b"user %d" % st.r)

    def reader(self, st, rng):
        """Another CPU that reads the page: after the user's madvise returned,
        it must read zeros too."""
        for a in (ADDR, ADDR, OTHER):
            try:
                st.p.load(a, 16)
            except OSError:
                pass

    def kswapd(self, st, rng):
        st.kernel.reclaim(2)

    roles = (("user", user), ("kswapd", kswapd), ("reader", reader))

    def teardown(self, st):
        st.p.exit()

    def check(self, st):
        k = st.kernel
        k.reclaim(sum(n.present_pages for n in k.nodes))
        m = k.meminfo()
        for a, b in (("MemFree", "MemTotal"), ("SwapFree", "SwapTotal")):
            assert m[a] == m[b], f"{a} {m[a]} kB of {m[b]} kB after teardown"
