"""D (2025). Truncation's "still mapped?" check without the folio lock.

Workload: a process maps a one-huge-page hugetlbfs file MAP_SHARED and keeps
faulting it in; the page is migrated to the other node and back through
the page cache.  Racer: hole punch of the whole page -- hugetlb_vmdelete_list
unmaps it, then remove_inode_hugepages, per folio under the fault mutex,
unmaps it again if a fault mapped it meanwhile, and deletes it from the page
cache.

``mapped-check-unlocked`` tests folio_mapped() before taking the folio lock.
A migration that has replaced the PTEs with migration entries makes the
folio look unmapped; the punch then waits for the folio lock, the
migration fails (the punch holds a reference), restores the PTEs and
unlocks -- and the punch deletes a mapped folio: "BUG: Bad page cache ...
still mapped when deleted" (7b7387650dcf).  ``lock-folio-first`` checks
under the folio lock, which the migration holds for as long as its entries
are in place.
"""
from .. import constants as C
from . import register
from .base import Scenario
from .hugetlb_common import HS, hugetlb_kernel, migrate_file_page, shared_file_page


@register
class HugetlbTruncateScenario(Scenario):
    name = "hugetlb-truncate"
    variant_key = "hugetlb-truncate"
    caught_kinds = frozenset({"bad-page-state"})
    controlled_steps = 1

    def setup(self, variant, seed):
        return shared_file_page(hugetlb_kernel(self.variant_key, variant, seed, nodes=2),
                                "truncate", b"t")

    def fault(self, st, rng):
        """Fault the page in (again), after the punch unmapped it."""
        st.p.store(st.a, b"t")

    def migrate(self, st, rng):
        migrate_file_page(st.kernel, st.f, 0)

    def punch(self, st, rng):
        st.f.fallocate(C.FALLOC_FL_PUNCH_HOLE | C.FALLOC_FL_KEEP_SIZE, 0, HS)

    roles = (("fault", fault), ("migrate", migrate), ("punch", punch))

    def teardown(self, st):
        st.p.exit()
