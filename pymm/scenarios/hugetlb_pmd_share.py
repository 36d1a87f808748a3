"""D. hugetlb PMD sharing: the fault's PTE pointer and the vma_lock.

Workload: two processes map the same 1 GiB-aligned range of a hugetlbfs file
MAP_SHARED (MAP_NORESERVE, so a small pool does), which makes their PMD
tables shareable.  A faulted index 0 in setup and owns the PMD table; B
faults index 1: huge_pte_alloc finds A's table and shares it
(huge_pmd_share), and B's fault then maps its page through that pointer.

Racers: a hole punch of index 0 -- hugetlb_vmdelete_list unshares B's PMD
(huge_pmd_unshare: B's PUD entry cleared) -- and A's munmap of the whole
range, which, A being the table's last user, zaps it and frees it.  Without
the vma_lock (``no-vma-lock``) B's fault keeps using the table it no longer
maps: its PTE lands in A's table (caught when A's mm is torn down with a
page table it cannot free: "non-zero pgtables_bytes", or "Bad page map
count") or, once A freed the table, B takes a freed table's lock or reads
its entry ("KASAN: use-after-free in hugetlb_no_page / huge_pte_same").
Every one of those follows the same event, the punch's huge_pmd_unshare
clearing the PUD entry of a fault's mm while that fault holds a ptep into
the table (B's, or A's when A's refault in the unmap role shared B's table;
the zaps of A's munmap and B's MADV_DONTNEED unshare only their own mm's
entry, and run in the same thread as that mm's faults), and pymm's own
check reports it there first: "hugetlb PMD table unshared under a fault
using it".  With pymm's checks off the
later reports are what is left.  With the vma_lock (``vma-lock``) the punch
skips B's VMA while B faults, and the per-folio pass waits for B in order.
"""
from types import SimpleNamespace

from .. import constants as C
from . import register
from .base import Scenario
from .hugetlb_common import HS, RW, hugetlb_kernel

G = C.PUD_SIZE
BASE = 64 * G                  # B's mapping; A's are at BASE + n GiB, n = 1..SLOTS
SLOTS = 1000


@register
class HugetlbPmdShareScenario(Scenario):
    name = "hugetlb-pmd-share"
    variant_key = "hugetlb-pmd-share"
    caught_kinds = frozenset({"use-after-free", "rss-counter", "bad-page-state", "assertion"})
    controlled_steps = 1

    def setup(self, variant, seed):
        k = hugetlb_kernel(self.variant_key, variant, seed, hugepages=8)
        f = k.create_file("pmd-share", G, hugetlb=True)
        st = SimpleNamespace(kernel=k, f=f, a=k.spawn("a"), b=k.spawn("b"))
        st.a_slot, st.a_at = 0, BASE + G
        self._map(st.a, st.a_at)
        self._map(st.b, BASE)
        st.a.store(st.a_at, b"a0")
        return st

    @staticmethod
    def _map(p, addr):
        p.mmap(addr, G, RW, C.MAP_SHARED | C.MAP_NORESERVE | C.MAP_FIXED, fd=p.kernel.files["pmd-share"])

    def fault(self, st, rng):
        """B faults index 1 through the (shared) PMD table, then drops it
        again so that the next fault shares once more."""
        st.b.store(BASE + HS, b"b1")
        st.b.madvise(BASE + HS, HS, C.MADV_DONTNEED)

    def punch(self, st, rng):
        """Hole punch of index 0: unshares every other user's PMD table."""
        st.f.fallocate(C.FALLOC_FL_PUNCH_HOLE | C.FALLOC_FL_KEEP_SIZE, 0, HS)

    def unmap(self, st, rng):
        """A unmaps the range (freeing the table if it is its last user);
        the next step maps it again at a fresh 1 GiB slot (PMD sharing needs
        the same alignment, not the same address) and faults it -- so a
        table A could not free stays where A maps nothing, for the checks."""
        if st.a_at is not None:
            st.a.munmap(st.a_at, G)
            st.a_at = None
        else:
            st.a_slot = (st.a_slot + 1) % SLOTS
            st.a_at = BASE + (1 + st.a_slot) * G
            self._map(st.a, st.a_at)
            st.a.store(st.a_at, b"a0")

    roles = (("fault", fault), ("punch", punch), ("unmap", unmap))

    def teardown(self, st):
        st.a.exit()
        st.b.exit()
