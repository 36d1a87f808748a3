"""A fault on a shared hugetlb mapping against ftruncate of the file: the
reservation of the truncated index is given back and consumed again (an
open window in mainline: README "Truncation and a fault in flight:
hugetlb-fault-truncate").  Found by the ``fuzz`` scenario as
"HugePages_Rsvd 0 -> -1" at quiescence.

hugetlb_no_page checks i_size once, under the fault mutex, before
alloc_hugetlb_folio (188a39725ad7 made truncation take the fault mutex
only per folio it finds; fa27759af4a6 dropped the second check under the
PTE lock, both 6.1).  hugetlb_vmtruncate writes the new i_size, skips the
VMA whose vma_lock the fault holds, finds no folio at the index (the fault
has not added it yet) and hugetlb_unreserve_pages gives the index's
reservation back.  The fault, which saw the reservation (map_chg 0), then
dequeues a reserved page -- resv_huge_pages counted down a second time --
and vma_commit_reservation adds the entry back, with the folio beyond the
new EOF.  The next truncation frees that folio against the entry:
HugePages_Rsvd ends one below zero.

Workload: a file of two huge pages, page 0 in the page cache, mapped
MAP_SHARED (page 1 reserved); one thread stores to page 1 and maps the file
again (reserving page 1 anew for the next round), another fallocates page 0
(there already) and ftruncates the file to one huge page.  At quiescence
(the process exits, the file is truncated to 0) the reservation count must
be back to its value before the mapping: ``check_hugetlb``'s accounting
(HugePages_Rsvd against the reservation maps) and the fuzzer's meminfo
baseline.  ``unsynced`` (mainline) is caught; ``wait-for-faults`` (pymm's
proposed fix: the truncation waits on the fault mutexes of the range after
writing i_size) is clean.
"""
from types import SimpleNamespace

from .. import constants as C
from ..errors import BusError
from . import register
from .base import Scenario
from .fuzz import check_quiescent
from .hugetlb_common import HS, RW, hugetlb_kernel

PAGES = 2


def reserve(st):
    """Map the whole file MAP_SHARED and unmap it again: the mmap reserves
    the indices that have neither a reservation nor a page (a shared
    mapping's reservations are the file's: munmap keeps them), and a
    writable shared mapping regrows the file to its length."""
    b = st.p.mmap(0, PAGES * HS, RW, C.MAP_SHARED, fd=st.f)
    st.p.munmap(b, PAGES * HS)


@register
class HugetlbFaultTruncateScenario(Scenario):
    name = "hugetlb-fault-truncate"
    variant_key = "hugetlb-fault-truncate"
    caught_kinds = frozenset({"bad-page-state", "assertion"})
    controlled_steps = 1

    def setup(self, variant, seed):
        k = hugetlb_kernel(self.variant_key, variant, seed, hugepages=PAGES)
        st = SimpleNamespace(kernel=k, f=k.create_file("fault-truncate", PAGES * HS, hugetlb=True))
        st.baseline = k.meminfo()
        st.f.fallocate(0, 0, HS)        # page 0 in the page cache: the page that stays
        st.p = k.spawn("mapper")
        st.a = st.p.mmap(0, PAGES * HS, RW, C.MAP_SHARED, fd=st.f)
        return st

    def fault(self, st, rng):
        """Store to page 1 (hugetlb_no_page: a reserved index, no folio
        yet), then reserve it again for the next round (free mode loops)."""
        try:
            st.p.store(st.a + HS, b"F")
        except BusError:
            pass                    # the truncation came first: beyond EOF
        reserve(st)

    def truncate(self, st, rng):
        """Make sure page 0 is allocated (fallocate finds it in the page
        cache), then truncate the file to it.  The fallocate is the workload's
        shape for the controlled scheduler: it lines the truncation up with
        the fault's path through hugetlb_no_page (a random walk hits the
        window in about one schedule in 20, against one in 65 after a fault
        on page 0 and none in 1,000 with the truncation alone)."""
        st.f.fallocate(0, 0, HS)
        st.f.ftruncate(HS)

    roles = (("fault", fault), ("truncate", truncate))

    def teardown(self, st):
        st.p.exit()
        st.f.ftruncate(0)

    def check(self, st):
        """The fuzzer's quiescence check: meminfo back to what it was before
        the file was mapped ("HugePages_Rsvd 0 -> -1" when the race hit)."""
        check_quiescent(st)
