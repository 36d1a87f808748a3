"""C. Anonymous hugetlb migration under the wrong rmap lock (c0d0381ade79 ->
336bf30eb765).

Workload: a process with a private anonymous MAP_HUGETLB page migrates it
to the other node and back (move_pages-style: look up, isolate,
migrate_pages).  Racer: the process forks and the child exits -- fork links
the child's VMA into the page's anon_vma tree (anon_vma_fork), exit unlinks
and frees its chain nodes (unlink_anon_vmas), both under anon_vma->rwsem.

``rmap-locked`` (5.7-5.9) takes i_mmap_rwsem of a file derived from the
anon_vma's first VMA and walks the anon_vma tree with TTU_RMAP_LOCKED, i.e.
without anon_vma->rwsem: rmap_walk_anon's lock assertion fires, and with the
validator off the walk reads chain nodes the child's exit frees
(use-after-free).  ``anon-vma-lock`` (5.10) lets the walk take
anon_vma->rwsem itself.
"""
from . import register
from .base import Scenario
from .hugetlb_common import hugetlb_kernel, migrate_mapped_page, private_huge_page


NR_CHILDREN = 3


@register
class HugetlbAnonMigrateScenario(Scenario):
    name = "hugetlb-anon-migrate"
    variant_key = "hugetlb-anon-migrate"
    caught_kinds = frozenset({"assertion", "use-after-free"})
    # two rounds: the page goes to the other node and back while the fork
    # role runs two rounds of forks and exits.  The historical crash (the
    # walk reading a chain node a child's exit freed, what is left with
    # pymm's own checks off) needs a walk that takes i_mmap_rwsem between a
    # child's zap and its unlink_anon_vmas and reads that child's node after
    # the unlink; with one round the single migration had mostly finished
    # while the children were still being forked (0.4% of schedules, one
    # seed in eight missed 1,000), with two the second walk meets the exits
    # (seeds 0-19: median 8 schedules, worst 29)
    controlled_steps = 2

    def setup(self, variant, seed):
        return private_huge_page(hugetlb_kernel(self.variant_key, variant, seed, nodes=2,
                                                hugepages=3), "anon", b"anon")

    def migrate(self, st, rng):
        migrate_mapped_page(st.p, st.a)

    def fork(self, st, rng):
        """Edit the page's anon_vma tree: children are linked in, then exit
        (their chain nodes are freed, while a walk may be going through the
        tree)."""
        children = [st.p.fork() for _ in range(NR_CHILDREN)]
        for c in children:
            c.exit()

    roles = (("migrate", migrate), ("fork", fork))

    def teardown(self, st):
        data = st.p.load(st.a, 4)
        st.p.exit()
        if data != b"anon":
            raise AssertionError(f"migration lost the page's contents: {data!r}")
