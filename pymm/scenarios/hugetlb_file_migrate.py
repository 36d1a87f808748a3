"""C2. File hugetlb migration against hole punch: folio_lock -> i_mmap_rwsem.

Workload: a process maps a hugetlbfs file MAP_SHARED; its huge page is
migrated to the other node and back, looked up through the page cache (as
compaction or memory failure find it), while the process keeps reading it
(faults wait on the migration entries).  Racer: a hole punch of a partial
range inside that page -- inode lock, i_mmap_rwsem for write, then
hugetlbfs_zero_partial_page takes the folio lock.

``relock-under-folio`` (336bf30eb765) releases i_mmap_rwsem right after
try_to_migrate and lets remove_migration_ptes take it again, for read,
while the folio is locked: folio_lock -> i_mmap_rwsem against the punch's
i_mmap_rwsem -> folio_lock -- lockdep's circular report, and the syzbot
hang "task hung in hugetlbfs_zero_partial_page" under the right schedule.
``keep-imap`` (b7880cb166ab) keeps i_mmap_rwsem across
remove_migration_ptes(RMP_LOCKED).
"""
from .. import constants as C
from . import register
from .base import Scenario
from .hugetlb_common import hugetlb_kernel, migrate_file_page, shared_file_page

P = C.PAGE_SIZE


@register
class HugetlbFileMigrateScenario(Scenario):
    name = "hugetlb-file-migrate"
    variant_key = "hugetlb-file-migrate"
    caught_kinds = frozenset({"lockdep", "deadlock", "hung-task"})
    controlled_steps = 1

    def setup(self, variant, seed):
        return shared_file_page(hugetlb_kernel(self.variant_key, variant, seed, nodes=2),
                                "file-migrate", b"file")

    def migrate(self, st, rng):
        migrate_file_page(st.kernel, st.f, 0)

    def punch(self, st, rng):
        """Punch [4 KiB, 8 KiB): no whole huge page, only the zeroing of a
        partial one, under i_mmap_rwsem."""
        st.f.fallocate(C.FALLOC_FL_PUNCH_HOLE | C.FALLOC_FL_KEEP_SIZE, P, P)

    def read(self, st, rng):
        got = st.p.load(st.a, 4)
        if got != b"file":
            raise AssertionError(f"the mapped huge page reads {got!r}, not b'file'")

    roles = (("migrate", migrate), ("punch", punch), ("read", read))

    def teardown(self, st):
        st.p.exit()
