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

Imports nothing.
"""

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


def _undefined(name):
    def fn(*args, **kwargs):
        raise RuntimeError(f"{name}: pymm.mm.hugetlb has not been imported")
    fn.__name__ = name
    return fn


for _name in DECLARED:
    globals()[_name] = _undefined(_name)


def define(namespace):
    """Called once by pymm.mm.hugetlb with its globals: every declared name
    gets its definition."""
    g = globals()
    for name in DECLARED:
        g[name] = namespace[name]
