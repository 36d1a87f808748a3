"""The path syzbot actually reported for b7880cb166ab (1c6e77303b6fae1f5957,
2d9c96466c978346b55f): mbind(MPOL_MF_MOVE) migrating a shared hugetlbfs
folio against madvise(MADV_REMOVE) punching part of it.

Same bug as hugetlb-file-migrate (key reused): ``relock-under-folio``
(336bf30eb765) retakes i_mmap_rwsem for read in remove_migration_ptes
under the folio lock, against the punch's i_mmap_rwsem (write) ->
hugetlbfs_zero_partial_page's folio lock; ``keep-imap`` (b7880cb166ab)
holds it across.  Here the migration is mbind's, from the process that
maps the page, and the punch is that process's MADV_REMOVE of a range
inside the page.

How mbind migrates is the ``mbind`` key: ``mpol-alloc`` (72e315f7a750,
6.7) migrates after dropping mmap_lock; ``hold-mmap-lock`` (before)
migrates under mmap_lock for write, which every MADV_REMOVE of the same
process waits for (madvise takes it for read) -- the folio lock and
i_mmap_rwsem then never meet there.  ``MBIND`` below picks it (the
README's detection figure runs both).
"""
from .. import constants as C
from . import register
from .base import Scenario
from .hugetlb_common import HS, hugetlb_kernel, shared_file_page

P = C.PAGE_SIZE


@register
class HugetlbMbindPunchScenario(Scenario):
    name = "hugetlb-mbind-punch"
    variant_key = "hugetlb-file-migrate"
    caught_kinds = frozenset({"lockdep", "deadlock", "hung-task"})
    controlled_steps = 1
    MBIND = "mpol-alloc"

    def setup(self, variant, seed):
        st = shared_file_page(hugetlb_kernel(self.variant_key, variant, seed, nodes=2,
                                             variants={"mbind": self.MBIND}),
                              "mbind-punch", b"file")
        # the page sits on the mapper's local node (huge_node): mbind moves it away
        st.node = [st.p.pid % 2]
        return st

    def mbind(self, st, rng):
        """Bind the page to the other node and move it there."""
        st.node[0] = 1 - st.node[0]
        st.p.mbind(st.a, HS, C.MPOL_BIND, {st.node[0]}, C.MPOL_MF_MOVE)

    def remove(self, st, rng):
        """MADV_REMOVE [4 KiB, 8 KiB) of the page: a hole punch that only
        zeroes part of the huge page, under i_mmap_rwsem."""
        st.p.madvise(st.a + P, P, C.MADV_REMOVE)

    roles = (("mbind", mbind), ("remove", remove))

    def teardown(self, st):
        st.p.exit()
