"""081056dc00a2 "mm/hugetlb: unshare page tables during VMA split, not
before" (Jann Horn, CVE-2025-38084).

A VMA that covers a whole 1 GiB (PUD) range of a hugetlbfs file may share
its PMD table with other processes mapping the same range.  Splitting it
off a PUD boundary ends that: __split_vma asked vm_ops->may_split, which
unshared the PMD tables around the split address -- before __split_vma
took the rmap locks.  In between, another process's fault runs
huge_pmd_share, finds this VMA still covering the PUD range and shares
its table again; then the split completes, and a VMA that covers part of
a PUD range sits on a shared PMD table.  Unmapping part of it unshares or
zaps through it, acting on the other processes' entries; its last user can
free the table under them.

Workload: A and B map the same gigabyte of a file MAP_SHARED|MAP_NORESERVE
at the same 1 GiB-aligned address; A has faulted (its PMD table exists),
B has not.  A mprotects one huge page in the middle (two splits); B faults.
pymm's check (``hugetlb_check_pmd_share_coverage``, its own: the kernel
has none) reports the bad state at the end of the split.
``unshare-in-split`` unshares inside the split under i_mmap_rwsem (write),
which huge_pmd_share needs for read: clean.
"""
from types import SimpleNamespace

from .. import constants as C
from . import register
from .base import Scenario
from .hugetlb_common import HS, RW, hugetlb_kernel

G = C.PUD_SIZE
BASE = 64 * G
FLAGS = C.MAP_SHARED | C.MAP_NORESERVE | C.MAP_FIXED


@register
class HugetlbSplitScenario(Scenario):
    name = "hugetlb-split"
    variant_key = "hugetlb-split"
    caught_kinds = frozenset({"assertion"})
    controlled_steps = 1

    def setup(self, variant, seed):
        k = hugetlb_kernel(self.variant_key, variant, seed, hugepages=4)
        f = k.create_file("split", G, hugetlb=True)
        a = k.spawn("A")
        a.mmap(BASE, G, RW, FLAGS, fd=f)
        a.store(BASE, b"a")                         # A's PMD table
        b = k.spawn("B")
        b.mmap(BASE, G, RW, FLAGS, fd=f)
        return SimpleNamespace(kernel=k, f=f, a=a, b=b)

    def split(self, st, rng):
        """Split A's VMA off the PUD boundaries (one huge page read-only),
        then map the gigabyte afresh for the next round."""
        st.a.mprotect(BASE + 4 * HS, HS, C.PROT_READ)
        st.a.mmap(BASE, G, RW, FLAGS, fd=st.f)
        st.a.store(BASE, b"a")

    def fault(self, st, rng):
        """B faults in the same gigabyte (huge_pmd_share looks for a table to
        share), then drops its mapping of it (unsharing) for the next round."""
        if st.b.load(BASE, 1) != b"a":
            raise AssertionError("B does not see A's write through the shared file")
        st.b.madvise(BASE, HS, C.MADV_DONTNEED)

    roles = (("split", split), ("fault", fault))

    def teardown(self, st):
        st.a.exit()
        st.b.exit()
