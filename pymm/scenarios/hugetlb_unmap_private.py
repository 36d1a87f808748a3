"""The private-mapping branch of hugetlb_unmap_file_folio (mainline since
bf4916922c60, 6.7; README "The private-mapping branch of
hugetlb_unmap_file_folio").

A MAP_PRIVATE mapping of a hugetlbfs file maps the page-cache folio
read-only until it COWs, so a hole punch that finds the folio still mapped
(its first pass, hugetlb_vmdelete_list, skips a VMA whose vma_lock it
cannot try-lock) walks that VMA in hugetlb_unmap_file_folio.  For a private
VMA that owns its reservation the "vma_lock" is &resv_map->rw_sema, which
a fault on *another* page of the VMA holds for read (the fault mutex is per
page, the lock per VMA).  When the trylock fails, mainline takes
``vma->vm_private_data`` -- resv_map|HPAGE_RESV_OWNER -- for a struct
hugetlb_vma_lock: kref_get() at resv_map+1, down_write() on resv_map bytes.

Workload: an owner maps a two-page hugetlbfs file MAP_PRIVATE.  One thread
reads page 1 (a fault holding the resv_map lock for read) and drops it
again (MADV_DONTNEED); another reads page 0 (maps the page-cache folio),
punches it out of the file and fallocates it back.
``resv-map-as-vma-lock`` (mainline): pymm's check of the kref landing in
resv_map memory (pymm-only), "refcount_t: addition on 0; use-after-free."
and lockdep's "INFO: trying to register non-static key.";
``wait-on-resv-map`` (pymm's proposed fix): pin the resv_map, wait on its
rw_sema, look again.
"""
from types import SimpleNamespace

from .. import constants as C
from . import register
from .base import Scenario
from .hugetlb_common import HS, RW, hugetlb_kernel, hugetlbfs_file

PUNCH = C.FALLOC_FL_PUNCH_HOLE | C.FALLOC_FL_KEEP_SIZE


@register
class HugetlbUnmapPrivateScenario(Scenario):
    name = "hugetlb-unmap-private"
    variant_key = "hugetlb-unmap-private"
    caught_kinds = frozenset({"data-corruption", "use-after-free", "lockdep"})
    controlled_steps = 2

    def setup(self, variant, seed):
        # two page-cache pages, two reserved for the private owner's COWs
        k = hugetlb_kernel(self.variant_key, variant, seed, hugepages=4)
        f = hugetlbfs_file(k, "private", 2)
        p = k.spawn("owner")
        a = p.mmap(0, 2 * HS, RW, C.MAP_PRIVATE, fd=f)
        return SimpleNamespace(kernel=k, f=f, p=p, a=a)

    def fault(self, st, rng):
        """Fault page 1 in (read: the page-cache folio, read-only) and drop it."""
        st.p.load(st.a + HS, 1)
        st.p.madvise(st.a + HS, HS, C.MADV_DONTNEED)

    def punch(self, st, rng):
        """Map page 0, punch it out of the file, and put a page back."""
        st.p.load(st.a, 1)
        st.f.fallocate(PUNCH, 0, HS)
        st.f.fallocate(0, 0, HS)

    roles = (("fault", fault), ("punch", punch))

    def teardown(self, st):
        st.p.exit()
