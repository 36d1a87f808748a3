"""A merge's dup_anon_vma against a page fault under the per-VMA lock
(d8ab9f7b644a "mm: lock VMA in dup_anon_vma() before setting ->anon_vma",
Jann Horn, 6.5-rc4 / 6.4.8).

History.  When two VMAs merge and only the one that goes away (``src``)
has an anon_vma, the one that stays (``dst``) takes it: dup_anon_vma sets
``dst->anon_vma = src->anon_vma`` and then anon_vma_clone links dst into
src's anon_vmas.  In 6.4 (per-VMA locks) dst was write-locked only later,
in vma_prepare, so between the two a page fault under dst's per-VMA lock
could see dst->anon_vma set -- vmf_anon_prepare needs no mmap_lock then --
and map a new anonymous page in dst that points to that anon_vma, with dst
not yet on its interval tree.  If anon_vma_clone then fails (ENOMEM, an
order-0 GFP_KERNEL slab allocation) it resets dst->anon_vma to NULL and
the merge is given up: the page stays mapped in dst, whose VMA is tied to
no anon_vma; when src goes, so does the anon_vma, and the next rmap walk
of the page (reclaim's folio_lock_anon_vma_read) reads a freed anon_vma:

    CPU0 (mprotect: merge A <- B)        CPU1 (store to A)
    vma_merge -> dup_anon_vma(A, B):
      A->anon_vma = B->anon_vma
                                         fault: lock_vma_under_rcu(A) ok
                                         vmf_anon_prepare: A has one
                                         do_anonymous_page: new page,
                                           folio->mapping = B's anon_vma
      anon_vma_clone(A, B) -> -ENOMEM:
        A->anon_vma = NULL
    (merge given up)
    munmap(B): B's anon_vma freed
    reclaim: folio_lock_anon_vma_read(page) -> use-after-free

The fix write-locks dst in dup_anon_vma before setting ->anon_vma, so the
fault falls back to mmap_lock and waits for mprotect.

Workload.  ``A`` (read-write, never written: no anon_vma) and, just
above it, ``B`` (read-only, with a page and so an anon_vma).  Slab
allocations fail with probability SLAB_FAIL_PERCENT (fault injection, site
``slab``, armed by the scenario: an allocation failure is the bug's
precondition, as in Jann Horn's kernel-assisted reproducer; it also keeps
the faulters' own anon_vma_prepare failing, so A stays without an anon_vma
until a merge gives it one).  Roles: ``merger`` mprotects B read-write (A
and B merge, or the merge is given up) and read-only again (a split),
twice, then unmaps B (and, if A did not take it, B's anon_vma), pages A out
(MADV_PAGEOUT: an rmap walk of A's page) and maps A and B afresh with
fault injection off meanwhile; ``faulter`` and ``faulter2`` store to A
until one store works (a fault) and read it back.  Teardown unmaps B,
reclaims every page (an rmap walk of each mapped anonymous page) and exits.
"""
from types import SimpleNamespace

from .. import constants as C
from ..kernel import Kernel
from . import register
from .base import Scenario

P = C.PAGE_SIZE
RW = C.PROT_READ | C.PROT_WRITE
A = 0x4000_0000                     # no anon_vma until it is written
B = A + P                           # has an anon_vma; merges with A when read-write
ANON_FIXED = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED
SLAB_FAIL_PERCENT = 90              # the injected ENOMEM of anon_vma_clone (and of others)
MERGES = 2                          # merge attempts per merger step
FAULTER_TRIES = 16                  # stores to A until one succeeds


@register
class VmaLockAnonVmaScenario(Scenario):
    name = "vma-lock-anon-vma"
    variant_key = "dup-anon-vma-lock"
    caught_kinds = frozenset({"use-after-free"})
    controlled_steps = 1

    def setup(self, variant, seed):
        k = Kernel(nodes=1, pages_per_node=256, variants={"dup-anon-vma-lock": variant}, seed=seed)
        st = SimpleNamespace(kernel=k, p=k.spawn("merge"))
        self._map(st)
        return st

    @staticmethod
    def _map(st):
        """B (read-only, with a page: an anon_vma) and A just below it
        (read-write, no anon_vma), then memory gets tight again."""
        p, k = st.p, st.kernel
        k.fail("slab", probability=0)
        p.mmap(B, P, RW, ANON_FIXED)
        p.store(B, b"B")
        p.mprotect(B, P, C.PROT_READ)
        p.mmap(A, P, RW, ANON_FIXED)    # not merged with B: other flags
        k.fail("slab", probability=SLAB_FAIL_PERCENT)

    def merger(self, st, rng):
        """mprotect B read-write (a merge with A, or ENOMEM and no merge) and
        read-only again, a few times; then unmap B (with it, if A did not
        take it, B's anon_vma), page A out (an rmap walk of its page) and
        start over with a fresh A and B."""
        p = st.p
        for _ in range(MERGES):
            p.mprotect(B, P, RW)
            p.mprotect(B, P, C.PROT_READ)
        p.munmap(B, P)
        p.madvise(A, P, C.MADV_PAGEOUT)
        self._map(st)

    def faulter(self, st, rng):
        """Store to A until it works (a fault: ENOMEM while anon_vma_prepare
        fails), and read it back."""
        data = b"A %d" % rng.randrange(1000)
        for _ in range(FAULTER_TRIES):
            try:
                st.p.store(A, data)
            except OSError:
                continue
            st.p.load(A, len(data))
            return

    roles = (("merger", merger), ("faulter", faulter), ("faulter2", faulter))

    def teardown(self, st):
        k = st.kernel
        k.fail("slab", probability=0)
        st.p.munmap(B, P)               # B's part goes; so may its anon_vma
        k.reclaim(sum(n.present_pages for n in k.nodes))
        st.p.exit()

    def check(self, st):
        m = st.kernel.meminfo()
        assert m["MemFree"] == m["MemTotal"], f"MemFree {m['MemFree']} kB of {m['MemTotal']} kB"
