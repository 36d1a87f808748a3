"""munmap's downgrade against a growing stack (dd2283f2605e, 5.8, 8d7071af8907).

History.  dd2283f2605e (4.20) made munmap detach the VMAs under mmap_lock
held for write and then downgrade to read for the zap and the page-table
free: nobody can reach a detached range.  Except a stack: expand_stack ran
under the *read* lock, so a fault just below a VM_GROWSDOWN VMA could grow
it into the range munmap was tearing down -- its new page is zapped by
munmap (a lost write), or installed in a page table that munmap then frees
(free_pgtables computed the gap from the neighbours it saw before the
downgrade): a non-empty page table freed, its page leaked, the rss counters
wrong at exit.  Jann Horn reported it; 5.8 stopped downgrading next to a
VM_GROWSDOWN/VM_GROWSUP neighbour ("mm/mmap.c: close race between munmap()
and expand_upwards()/downwards()").  8d7071af8907 (6.5) made stack expansion
take the write lock, and munmap went back to downgrading always.

Workload.  A process has a VM_GROWSDOWN stack whose start is 2 MiB aligned
and, just below it, a 2 MiB mapping whose top GAP_TOUCH pages are populated
(so one PTE table covers the whole mapping and nothing else).  ``unmap``
munmaps it (and whatever the stack grew into it) and maps and populates it
again.  ``grow`` stores to two pages of it that nothing populates: into
the mapping when it is there (an ordinary fault), else a fault that grows
the stack.  ``touch`` stores to the stack itself.

Why ``grow`` stores where nothing was populated.  A load or store of a
present page takes no lock and raises no fault (the TLB, or a hardware
walk that finds the PTE).  The race needs a *fault* below the stack while
munmap works under the downgraded lock, so the store must find no PTE:
either munmap's zap has already cleared it -- too late in practice: the
storing CPU keeps its TLB entry until tlb_finish_mmu flushes it, after
free_pgtables -- or the page was never populated (in the kernel as in
pymm, only a fault grows a stack, and only a missing PTE faults).  Such a
fault finds the detached VMA gone, waits for mmap_lock (held for write while the
VMAs are detached) and gets it, for read, at the downgrade: the window.
(The scenario used to store to a populated page; once loads and stores
became lock-free it reached the window in ~0.2% of schedules, and it ran
with ``Kernel(tlb=False)`` meanwhile.)

``downgrade-always`` is caught (the stack grows into the gap of the
downgraded munmap) as "BUG: page table freed under a live VMA": pymm's own
check in free_pgd_range (pymm.mm.pgtable.check_pgtable_unused), at the
free of a table the grown stack's VMA covers.  That is the point of
corruption, before every consequence: a fault can use a table only for an
address its VMA covers, so the stack grew before the fault took the table,
hence before munmap freed it.  With pymm's checks off (``--no-pymm-checks``)
what the kernel itself would show is left, reached by different
interleavings: "BUG: non-empty page table freed" (the grown page's PTE in
the freed table), KASAN use-after-free in do_anonymous_page or set_pte (the
fault writes the freed table), a Bad rss-counter state at exit (the page
leaked with the table), or the grown stack's bytes lost (zapped by munmap).
A controlled campaign used to list those as four crashes of one bug.  The
three fixed values run clean.
"""
from types import SimpleNamespace

from .. import constants as C
from ..kernel import Kernel
from . import register
from .base import Scenario

P = C.PAGE_SIZE
RW = C.PROT_READ | C.PROT_WRITE
STACK = 0x7E00_0000_0000           # the stack's original start (2 MiB aligned)
STACK_PAGES = 4
GAP = 0x20_0000                    # the mapping below the stack: one whole PTE table
GAP_TOUCH = 4                      # pages of it populated (the top ones, next to the stack)
GROW = (STACK - (GAP_TOUCH + 2) * P, STACK - (GAP_TOUCH + 3) * P)   # where ``grow`` stores


@register
class MunmapStackScenario(Scenario):
    name = "munmap-stack"
    variant_key = "munmap-downgrade"
    caught_kinds = frozenset({"assertion", "rss-counter", "bad-page-state", "use-after-free",
                              "data-corruption"})
    controlled_steps = 1

    def setup(self, variant, seed):
        k = Kernel(nodes=1, pages_per_node=1024, variants={"munmap-downgrade": variant}, seed=seed)
        p = k.spawn("stack")
        p.mmap(STACK, STACK_PAGES * P, RW,
               C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED | C.MAP_GROWSDOWN)
        p.store(STACK, b"stack")
        st = SimpleNamespace(kernel=k, p=p)
        self._map_gap(st)
        return st

    @staticmethod
    def _map_gap(st):
        p = st.p
        p.mmap(STACK - GAP, GAP, RW, C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED)
        for i in range(1, GAP_TOUCH + 1):
            p.store(STACK - i * P, b"gap %d" % i)

    def unmap(self, st, rng):
        """munmap the mapping below the stack (with anything the stack grew
        into it), then map it again."""
        st.p.munmap(STACK - GAP, GAP)
        self._map_gap(st)

    def grow(self, st, rng):
        """Stores below the stack's start, into pages the mapping never
        populated: with the mapping there, ordinary faults; with it gone, the
        fault grows the stack.  Each is read back."""
        data = b"grown %d" % rng.randrange(1000)
        for a in GROW:
            try:
                st.p.store(a, data)
                st.p.load(a, len(data))     # the data-integrity check compares
            except OSError:
                return                      # SIGSEGV: unmapped again meanwhile

    def touch(self, st, rng):
        st.p.store(STACK + P, b"top")
        st.p.load(STACK, 5)

    roles = (("unmap", unmap), ("grow", grow), ("touch", touch))

    def teardown(self, st):
        st.p.exit()

    def check(self, st):
        m = st.kernel.meminfo()
        assert m["MemFree"] == m["MemTotal"], f"MemFree {m['MemFree']} kB of {m['MemTotal']} kB"
