"""A fork child's hugetlb fault against its own MADV_DONTNEED (an open
window in mainline: README "hugetlb_no_page and a fork child's
MADV_DONTNEED").

hugetlb_no_page maps a new anon folio and unlocks it only after dropping
the page-table lock; from the moment the PTE is set, the PTE's is the
folio's only reference.  2820b0f09be9 ("hugetlbfs: close race between
MADV_DONTNEED and page fault") and bf4916922c60 (6.7) keep such a zap
out with the vma_lock -- for private VMAs that own their resv_map.  A fork
child's private VMA has no resv_map (hugetlb_dup_vma_private), so its
vma_lock calls do nothing, and madvise(MADV_DONTNEED) holds mmap_lock only
for read, as the fault does.

Workload: a process writes a private MAP_HUGETLB page and forks.  In the
child, one thread drops the page (MADV_DONTNEED, so that the next write
faults a new anon page through hugetlb_no_page) and writes it; another
thread MADV_DONTNEEDs it.  ``unlock-unreferenced`` (mainline): the zap
clears the PTE and frees the folio between the fault's ptl unlock and its
folio_unlock -- "Bad page state: hugetlb folio freed with locked set"
(pymm's check: the kernel's free_huge_folio checks only refcount and
mapcount) and KASAN use-after-free in folio_unlock.
``ref-across-unlock`` (pymm's proposed fix): the fault holds a reference
until it has unlocked the folio.
"""
from .. import constants as C
from . import register
from .base import Scenario
from .hugetlb_common import HS, hugetlb_kernel, private_huge_page


@register
class HugetlbForkDontneedScenario(Scenario):
    name = "hugetlb-fork-dontneed"
    variant_key = "hugetlb-no-page-ref"
    caught_kinds = frozenset({"bad-page-state", "use-after-free"})
    # the window is one scheduling point of the fault (after the ptl unlock)
    # against a whole zap: four rounds of each role give the random walk
    # enough tries (one round: none in 500 schedules; four: 10-150)
    controlled_steps = 4

    def setup(self, variant, seed):
        st = private_huge_page(hugetlb_kernel(self.variant_key, variant, seed, hugepages=2),
                               "parent", b"P")
        st.c = st.p.fork()               # the child maps the parent's page, no resv_map
        return st

    def fault(self, st, rng):
        """Drop the page and write it again: hugetlb_no_page, a new anon folio."""
        st.c.madvise(st.a, HS, C.MADV_DONTNEED)
        st.c.store(st.a, b"C")

    def dontneed(self, st, rng):
        st.c.madvise(st.a, HS, C.MADV_DONTNEED)

    roles = (("fault", fault), ("dontneed", dontneed))

    def teardown(self, st):
        st.c.exit()
        data = st.p.load(st.a, 1)
        st.p.exit()
        if data != b"P":
            raise AssertionError(f"the parent's private huge page changed under the child: {data!r}")
