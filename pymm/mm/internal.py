"""Functions the mm and fs files call across an import cycle, declared as
C's headers declare them (mm/internal.h, mm/vma.h, include/linux/mm.h,
rmap.h, swap.h, mempolicy.h, maple_tree.h, fs.h).

In C, mm/mlock.c calls vma_modify_flags and __mm_populate, the swap-in
fault (mm/memory.c's do_swap_page, in pymm's swap_state.py) calls
folio_add_anon_rmap_pte, mm/mmu_gather.c calls free_pages_and_swap_cache
..., and no file needs another's definitions to be built first: the header
declares, one .c file defines.  In pymm each of these callers is imported
by the module that defines the function, directly or not (mmap imports
mlock, rmap imports swap_state, swap_state reaches mmu_gather ...), so
importing the definition back would be an import cycle (it used to be
broken by imports inside the functions, paid on every call).  The
declarations live here instead, below all of them, and each owner module
defines its names when it is imported (``internal.define(__name__,
globals())`` at its end) -- which it always is before any mm exists
(importing pymm imports them all, through ``pymm.kernel``).  Callers look
the function up at call time: ``internal.mm_populate(mm, 0, TASK_SIZE)``.
The hugetlb functions the core mm calls are declared the same way in
``hugetlb_ops`` (include/linux/hugetlb.h).

Imports nothing.
"""

DECLARED = {
    # the VMA tree MmStruct starts with (include/linux/maple_tree.h: mt_init_flags,
    # which kernel/fork.c's mm_init calls); vma.py builds VMAs from mm_types
    "pymm.mm.vma": ("VmaTree",),
    # splitting, merging and the map-count check of a range whose flags change
    # (mm/vma.h, mm/internal.h): mlock_fixup and apply_vma_lock_flags
    "pymm.mm.mmap": ("vma_split_range", "vma_try_merge", "vma_splits_ok"),
    # population after mlock (include/linux/mm.h)
    "pymm.mm.gup": ("__mm_populate", "mm_populate"),
    # munlock's second phase (include/linux/rmap.h until 5.17) and the swap-in
    # fault's mapping of the folio (include/linux/rmap.h)
    "pymm.mm.rmap": ("try_to_munlock", "folio_add_anon_rmap_pte", "folio_add_new_anon_rmap"),
    # the TLB gather's freeing of what it gathered (include/linux/swap.h)
    "pymm.mm.swap_state": ("free_pages_and_swap_cache",),
    # hugetlb's allocation policy and tmpfs's shared policy (include/linux/mempolicy.h;
    # numa_node_id is include/linux/topology.h's)
    "pymm.mm.mempolicy": ("get_vma_policy", "policy_nodemask", "numa_node_id", "SharedPolicy"),
    # hugetlbfs's inode eviction and folio migration (fs/hugetlbfs/inode.c), which C
    # reaches through the inode's super_operations and address_space_operations
    # (include/linux/fs.h); pymm's hugetlb calls them directly
    "pymm.fs.hugetlbfs": ("hugetlbfs_evict_inode", "hugetlbfs_migrate_folio"),
}


def _undefined(owner, name):
    def fn(*args, **kwargs):
        raise RuntimeError(f"{name}: {owner} has not been imported")
    fn.__name__ = name
    return fn


def declare(header, declared):
    """Declare in the module namespace ``header`` every name of ``declared``
    ({owner module: names}): each raises until its owner defines it.  The
    one mechanism of this file and of hugetlb_ops (hugetlb.h)."""
    for owner, names in declared.items():
        for name in names:
            header[name] = _undefined(owner, name)


def define_in(header, names, namespace):
    """Give each of ``names`` in ``header`` its definition from the owner's
    ``namespace`` (its globals)."""
    for name in names:
        header[name] = namespace[name]


declare(globals(), DECLARED)


def define(owner, namespace):
    """Called once by each owner module with its ``__name__`` and globals:
    every name it declares here gets its definition."""
    define_in(globals(), DECLARED[owner], namespace)
