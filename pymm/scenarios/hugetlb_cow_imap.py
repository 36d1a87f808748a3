"""e7dd91c456a8 (Dec 2020, Fixes: c0d0381ade79): COW with an empty pool
under the 5.7 fault's i_mmap_rwsem.

c0d0381ade79 (5.7) made hugetlb_fault take the file's i_mmap_rwsem for
read, before the fault mutex, and hold it across the fault (it kept the
ptep from huge_pte_alloc valid against PMD unsharing).  A COW by the
owner of a private mapping that finds the pool empty takes the page away
from its fork children: unmap_ref_private, which takes i_mmap_rwsem for
*write* -- under the read hold of the same task: a self-deadlock
(rwsems are not recursive).  ``imap-held-in-cow`` is that code: lockdep
says "possible recursive locking", and in free mode the owner hangs for
good.  ``drop-imap-in-cow`` is e7dd91c456a8: hugetlb_cow drops the fault
mutex and i_mmap_rwsem before unmap_ref_private and retakes both after.

Workload: hugetlb-wp's owner (a MAP_PRIVATE hugetlbfs page, written: the
pool is empty) forks and writes again, on a kernel whose fault path is
the era's (``fault_i_mmap_era``).  The era's fault orders i_mmap_rwsem
before the fault mutex, against today's documented order, so the scenario
stays out of ``mix``.
"""
from . import register
from .base import Scenario
from .hugetlb_common import OwnerCowRole, hugetlb_kernel, private_cow_owner


@register
class HugetlbCowImapScenario(OwnerCowRole, Scenario):
    name = "hugetlb-cow-imap"
    variant_key = "hugetlb-fault-imap"
    caught_kinds = frozenset({"lockdep", "deadlock", "hung-task"})
    controlled_steps = 1
    in_mix = False

    def setup(self, variant, seed):
        k = hugetlb_kernel(self.variant_key, variant, seed)
        k.hugetlb_fault_i_mmap = True            # the 5.7-5.18 fault path
        return private_cow_owner(k, "cow")

    def reader(self, st, rng):
        """Another fault on the file (the era's i_mmap_rwsem, then FM)."""
        st.o.load(st.a, 1)

    roles = (("owner", OwnerCowRole.owner), ("reader", reader))
