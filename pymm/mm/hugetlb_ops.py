"""The hugetlb functions the core mm calls (include/linux/hugetlb.h).

In C, mm/memory.c, rmap.c, migrate.c, page_alloc.c ... call functions that
hugetlb.h declares and mm/hugetlb.c defines, and no file needs another's
definitions to be built first.  pymm.mm.hugetlb builds on memory, rmap,
page_alloc and migrate, so those importing it back would be an import
cycle (it used to be broken by imports inside the functions, paid on
every call).  The declarations live here instead, below all of them, and
``pymm.mm.hugetlb`` defines them when it is imported -- which it always is
before any hugetlb VMA or folio exists (``pymm.kernel`` and
``pymm.fs.hugetlbfs`` import it).  Callers look the function up at call
time: ``hugetlb_ops.hugetlb_fault(mm, vma, address, flags)``.

Imports only the declaration mechanism of ``internal`` (which imports
nothing).
"""
from .internal import declare, define_in


DECLARED = (
    # faults, zap, fork, mprotect (mm/memory.c, mm/mprotect.c)
    "hugetlb_fault", "hugetlb_zap_range", "copy_hugetlb_page_range", "hugetlb_change_protection",
    # rmap (mm/rmap.c's folio_test_hugetlb branches)
    "hugetlb_try_to_unmap_one", "hugetlb_remove_migration_pte",
    # the folio's destructor and migration (mm/page_alloc.c, mm/migrate.c)
    "free_huge_folio", "folio_putback_hugetlb", "alloc_hugetlb_folio_nodemask",
    "unmap_and_move_huge_page",
    # page-table walks and VMA splits (mm/mincore.c, mm/vma.c)
    "hugetlb_vma_lock_read", "hugetlb_vma_unlock_read", "hugetlb_walk", "hugetlb_split",
    "hugetlb_check_pmd_share_coverage",
)


declare(globals(), {"pymm.mm.hugetlb": DECLARED})


def define(namespace):
    """Called once by pymm.mm.hugetlb with its globals: every declared name
    gets its definition."""
    define_in(globals(), DECLARED, namespace)
