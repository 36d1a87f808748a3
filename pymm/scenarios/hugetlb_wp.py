"""D (2025). hugetlb_wp dropping the fault mutex under the folio lock.

Workload: a hugetlbfs file with its one huge page in the page cache; the
owner maps it MAP_PRIVATE (owning the reservation), reads it and writes it
(COW into an anon page), so the pool is empty.  Each owner step forks a
child -- both now map the anon page read-only -- and writes again: the COW
finds no free page, and as the reservation owner it takes the page away
from the child (unmap_ref_private), which needs the vma_lock for write, so
hugetlb_wp drops the vma_lock and the fault mutex and retakes them.

Racer: another process maps the file MAP_SHARED and faults the same index:
fault mutex, then the page-cache folio's lock.

``fault-mutex-under-folio`` keeps the page-cache folio (and the old page)
locked across the mutex drop and retake: FM -> folio_lock, then
folio_lock -> FM -- lockdep's circular report, and a real AB-BA hang when
the other fault takes the mutex in between.  ``unlock-folio-first`` drops
the folio locks first.
"""
from .. import constants as C
from . import register
from .base import Scenario
from .hugetlb_common import HS, RW, OwnerCowRole, hugetlb_kernel, private_cow_owner


@register
class HugetlbWpScenario(OwnerCowRole, Scenario):
    name = "hugetlb-wp"
    variant_key = "hugetlb-wp"
    caught_kinds = frozenset({"lockdep", "deadlock", "hung-task"})
    controlled_steps = 1
    others = ("r",)

    def setup(self, variant, seed):
        st = private_cow_owner(hugetlb_kernel(self.variant_key, variant, seed), "wp")
        st.r = st.kernel.spawn("other")
        st.ra = st.r.mmap(0, HS, RW, C.MAP_SHARED, fd=st.f)
        return st

    def other(self, st, rng):
        """Fault the page-cache page through a shared mapping (FM, then its
        folio lock), and drop the mapping for the next round."""
        st.r.load(st.ra, 1)
        st.r.madvise(st.ra, HS, C.MADV_DONTNEED)

    roles = (("owner", OwnerCowRole.owner), ("other", other))
