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
from types import SimpleNamespace

from .. import constants as C
from ..kernel import Kernel
from . import register
from .base import Scenario
from .hugetlb_common import HS, RW


@register
class HugetlbWpScenario(Scenario):
    name = "hugetlb-wp"
    variant_key = "hugetlb-wp"
    caught_kinds = frozenset({"lockdep", "deadlock", "hung-task"})
    controlled_steps = 1

    def setup(self, variant, seed):
        k = Kernel(nodes=1, pages_per_node=64, hugepages_per_node=2,
                   variants={"hugetlb-wp": variant}, seed=seed)
        f = k.create_file("wp", HS, hugetlb=True)
        f.fallocate(0, 0, HS)                        # the page-cache page
        o = k.spawn("owner")
        a = o.mmap(0, HS, RW, C.MAP_PRIVATE, fd=f)   # reserves the other page
        o.load(a, 1)
        o.store(a, b"O")                             # COW: the pool is empty now
        r = k.spawn("other")
        ra = r.mmap(0, HS, RW, C.MAP_SHARED, fd=f)
        return SimpleNamespace(kernel=k, f=f, o=o, a=a, r=r, ra=ra)

    def owner(self, st, rng):
        """Fork, then write: a COW with no free page, as the owner."""
        child = st.o.fork()
        try:
            st.o.store(st.a, b"O")
        finally:
            child.exit()

    def other(self, st, rng):
        """Fault the page-cache page through a shared mapping (FM, then its
        folio lock), and drop the mapping for the next round."""
        st.r.load(st.ra, 1)
        st.r.madvise(st.ra, HS, C.MADV_DONTNEED)

    roles = (("owner", owner), ("other", other))

    def teardown(self, st):
        data = st.o.load(st.a, 1)
        st.o.exit()
        st.r.exit()
        if data != b"O":
            raise AssertionError(f"the owner's private huge page lost its contents: {data!r}")
