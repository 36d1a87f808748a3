"""04ada095dcfc "hugetlb: don't delete vma_lock in hugetlb MADV_DONTNEED
processing" (syzbot ca56f14c500045350f93, Nov 2022).

40549ba8f8e0 (6.1) frees a shareable VMA's vma_lock in the final hugetlb
zap (__unmap_hugepage_range_final: the VMA is going away, so no new user
of its PMD tables may appear).  But MADV_DONTNEED zapped through the same
final path, for a VMA that stays: the vma_lock was freed under a fault
waiting for it (MADV_DONTNEED holds mmap_lock only for read), and the VMA
lived on without one, faulting with no PMD-sharing protection at all.
syzbot saw lockdep's lock class in use after free.

Workload: one process maps a hugetlbfs file MAP_SHARED; a thread
MADV_DONTNEEDs it while another faults it.  ``non-final-zap``
(04ada095dcfc) keeps the lock.  ``final-zap`` frees it under a fault that
is acquiring it (waiting for the zap's write lock, or preempted inside its
down_read) or holds it (a trylock just before the zap detached it).  What
that fault does next depends on the interleaving: it wakes up in the freed
lock (KASAN use-after-free in _rwsem_set_reader_owned), or its unlock finds
no vma_lock on the VMA and skips, so it returns to user space holding the
lock ("lock held when returning to user space!") or takes the fault mutex
under it on its retry ("possible circular locking dependency": fault mutex
-> vma_lock everywhere else; syzbot's report, with mmap_lock, is the same
leaked lock).  All of them follow the free, which is reported first, in
every interleaving: lockdep's debug_check_no_locks_freed, which pymm runs
when a hugetlb_vma_lock is freed, extended to the locks other tasks hold or
are acquiring ("lock freed while another task holds it!", pymm's own: the
kernel looks only at the freeing task's locks).  With pymm's checks off
the later reports are what is left.
"""
from .. import constants as C
from ..errors import SegmentationFault
from . import register
from .base import Scenario
from .hugetlb_common import HS, RW, hugetlb_kernel, shared_file_page


@register
class HugetlbDontneedScenario(Scenario):
    name = "hugetlb-dontneed"
    variant_key = "hugetlb-dontneed"
    caught_kinds = frozenset({"use-after-free", "lockdep"})
    controlled_steps = 1

    def setup(self, variant, seed):
        return shared_file_page(hugetlb_kernel(self.variant_key, variant, seed), "dontneed", b"d")

    def dontneed(self, st, rng):
        """DONTNEED, then map the file there afresh (MAP_FIXED): a new VMA,
        with a new vma_lock, for the next round."""
        st.p.madvise(st.a, HS, C.MADV_DONTNEED)
        st.p.mmap(st.a, HS, RW, C.MAP_SHARED | C.MAP_FIXED, fd=st.f)

    def fault(self, st, rng):
        try:
            data = st.p.load(st.a, 1)
        except SegmentationFault:
            return                       # between the old VMA and the new one
        if data != b"d":
            raise AssertionError("the shared page lost its contents")

    roles = (("dontneed", dontneed), ("fault", fault))

    def teardown(self, st):
        st.p.exit()
