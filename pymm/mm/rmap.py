"""Reverse mapping (mm/rmap.c): anon_vma chains, file i_mmap, mapcounts.

Lock ordering in mm (as at the top of mm/rmap.c, current kernels):

  inode->i_rwsem                          (while writing or truncating)
    mm->mmap_lock
      mapping->invalidate_lock            (in filemap_fault)
        folio_lock
          hugetlbfs_i_mmap_rwsem_key      (in huge_pmd_share, see hugetlbfs below)
            vma_start_write
              mapping->i_mmap_rwsem
                anon_vma->rwsem
                  mm->page_table_lock or pte_lock
                    lruvec->lru_lock      (in folio_lruvec_lock_irq)
                    zone->lock            (within the page allocator)
                    mapping->i_pages lock (widely used)

hugetlbfs PageHuge() take locks in this order:
  hugetlb_fault_mutex (hugetlbfs specific page fault mutex)
    vma_lock (hugetlb specific lock for pmd_sharing)
      mapping->i_mmap_rwsem
        folio_lock

``LOCK_ORDER`` below is the same order as data (pymm lockdep class names):
a test and ``pymm lockdep-graph`` compare it with what lockdep observes.
"""
from ..debug.kasan import kasan_poison
from ..locking import lockdep
from .atomic import atomic_add_return, set_bits
from .mm_types import (PG_anon, PG_swapbacked, VM_LOCKED, AnonVma, AnonVmaChain)

# (outer, inner) pairs that the documented order allows, as lockdep class names.
LOCK_ORDER_TREE = [
    ("&sb->s_type->i_mutex_key", [
        ("&mm->mmap_lock", [
            ("&mapping->invalidate_lock", [
                ("folio_lock", [
                    ("&hugetlbfs_i_mmap_rwsem_key", [
                        ("&mapping->i_mmap_rwsem", [
                            ("&anon_vma->rwsem", [
                                ("&mm->page_table_lock", [
                                    ("&lruvec->lru_lock", []), ("&zone->lock", []),
                                    ("&xa->xa_lock", [])]),
                                ("ptlock_ptr(ptdesc)", [
                                    ("&lruvec->lru_lock", []), ("&zone->lock", []),
                                    ("&xa->xa_lock", [])]),
                            ])])])])])])]),
]
HUGETLB_LOCK_ORDER = ["hugetlb_fault_mutex", "&resv_map->rw_sema",
                      "&hugetlbfs_i_mmap_rwsem_key", "folio_lock"]


def lock_order_pairs():
    """Every (outer, inner) class pair the documented order implies."""
    pairs = set()

    def walk(node, ancestors):
        name, children = node
        for a in ancestors:
            pairs.add((a, name))
        for c in children:
            walk(c, ancestors + [name])
    for root in LOCK_ORDER_TREE:
        walk(root, [])
    h = HUGETLB_LOCK_ORDER
    pairs.update((h[i], h[j]) for i in range(len(h)) for j in range(i + 1, len(h)))
    return pairs


# -- anon_vma locking ------------------------------------------------------------

def anon_vma_lock_write(anon_vma):
    anon_vma.root.rwsem.down_write()


def anon_vma_unlock_write(anon_vma):
    anon_vma.root.rwsem.up_write()


def anon_vma_lock_read(anon_vma):
    anon_vma.root.rwsem.down_read()


def anon_vma_trylock_read(anon_vma):
    return anon_vma.root.rwsem.down_read_trylock()


def anon_vma_unlock_read(anon_vma):
    anon_vma.root.rwsem.up_read()


def anon_vma_assert_locked(anon_vma):
    lockdep.lockdep_assert_held(anon_vma.root.rwsem)


def get_anon_vma(anon_vma):
    atomic_add_return(anon_vma, "refcount", 1)


def put_anon_vma(anon_vma):
    if atomic_add_return(anon_vma, "refcount", -1) == 0:
        root = anon_vma.root
        kasan_poison(anon_vma)
        if root is not anon_vma:
            put_anon_vma(root)


def anon_vma_chain_link(vma, avc, anon_vma):
    """Context: anon_vma root rwsem held for write."""
    vma.anon_vma_chain.append(avc)
    start, last = avc.interval()
    anon_vma.rb_root.insert(avc, start, last)


def anon_vma_prepare(vma):
    """Give the VMA an anon_vma before its first anonymous page (__anon_vma_prepare).
    Context: mmap_lock held (read is enough); takes anon_vma->rwsem then
    mm->page_table_lock."""
    if vma.anon_vma is not None:
        return 0
    mm = vma.vm_mm
    anon_vma = AnonVma()
    avc = AnonVmaChain(vma, anon_vma)
    anon_vma_lock_write(anon_vma)
    mm.page_table_lock.lock()
    if vma.anon_vma is None:
        vma.anon_vma = anon_vma
        anon_vma_chain_link(vma, avc, anon_vma)
        anon_vma.num_active_vmas += 1
        anon_vma, avc = None, None
    mm.page_table_lock.unlock()
    if anon_vma is not None:
        anon_vma_unlock_write(anon_vma)
        kasan_poison(avc)
        put_anon_vma(anon_vma)
    else:
        anon_vma_unlock_write(vma.anon_vma)
    return 0


def anon_vma_clone(dst, src):
    """Attach dst to every anon_vma src is attached to (split, fork).
    Context: mmap_lock held for write."""
    for pavc in reversed(src.anon_vma_chain):
        anon_vma = pavc.anon_vma
        avc = AnonVmaChain(dst, anon_vma)
        anon_vma_lock_write(anon_vma)
        anon_vma_chain_link(dst, avc, anon_vma)
        get_anon_vma(anon_vma)
        anon_vma_unlock_write(anon_vma)
    dst.anon_vma = src.anon_vma
    if dst.anon_vma is not None:
        dst.anon_vma.num_active_vmas += 1
    return 0


def anon_vma_fork(vma, pvma):
    """Fork: attach the child VMA to the parent's anon_vmas, then give it its
    own anon_vma under the same root (so COW pages the child creates are found
    from the child only)."""
    if pvma.anon_vma is None:
        return 0
    vma.anon_vma = None
    for pavc in reversed(pvma.anon_vma_chain):
        anon_vma = pavc.anon_vma
        avc = AnonVmaChain(vma, anon_vma)
        anon_vma_lock_write(anon_vma)
        anon_vma_chain_link(vma, avc, anon_vma)
        get_anon_vma(anon_vma)
        anon_vma_unlock_write(anon_vma)
    anon_vma = AnonVma(root=pvma.anon_vma.root)
    anon_vma.parent = pvma.anon_vma
    get_anon_vma(anon_vma.root)
    avc = AnonVmaChain(vma, anon_vma)
    vma.anon_vma = anon_vma
    anon_vma_lock_write(anon_vma)
    anon_vma_chain_link(vma, avc, anon_vma)
    anon_vma.parent.num_children += 1
    anon_vma.num_active_vmas += 1
    anon_vma_unlock_write(anon_vma)
    return 0


def unlink_anon_vmas(vma):
    """Detach a dying VMA from its anon_vmas; chain nodes are freed (poisoned)
    and anon_vmas left with no chains are put.  Context: mmap_lock held for
    write; takes each anon_vma's root rwsem for write."""
    chains = vma.anon_vma_chain
    vma.anon_vma_chain = []
    if vma.anon_vma is not None:
        vma.anon_vma.num_active_vmas -= 1      # before the puts below may free it
    for avc in reversed(chains):
        anon_vma = avc.anon_vma
        anon_vma_lock_write(anon_vma)
        anon_vma.rb_root.remove(avc)
        anon_vma_unlock_write(anon_vma)
        kasan_poison(avc)
        put_anon_vma(anon_vma)


# -- file rmap ---------------------------------------------------------------------

def i_mmap_lock_write(mapping):
    mapping.i_mmap_rwsem.down_write()


def i_mmap_trylock_write(mapping):
    return mapping.i_mmap_rwsem.down_write_trylock()


def i_mmap_unlock_write(mapping):
    mapping.i_mmap_rwsem.up_write()


def i_mmap_lock_read(mapping):
    mapping.i_mmap_rwsem.down_read()


def i_mmap_trylock_read(mapping):
    return mapping.i_mmap_rwsem.down_read_trylock()


def i_mmap_unlock_read(mapping):
    mapping.i_mmap_rwsem.up_read()


def i_mmap_assert_locked(mapping):
    lockdep.lockdep_assert_held(mapping.i_mmap_rwsem)


def i_mmap_assert_write_locked(mapping):
    lockdep.lockdep_assert_held_write(mapping.i_mmap_rwsem)


def vma_interval_tree_insert(vma, mapping):
    mapping.i_mmap.insert(vma, vma.vm_pgoff, vma.vm_pgoff + vma.vma_pages() - 1)


def vma_interval_tree_remove(vma, mapping):
    mapping.i_mmap.remove(vma)


def vma_link_file(vma):
    """Context: mmap_lock held for write; takes i_mmap_rwsem for write."""
    f = vma.vm_file
    if f is not None:
        mapping = f.mapping
        i_mmap_lock_write(mapping)
        vma_interval_tree_insert(vma, mapping)
        i_mmap_unlock_write(mapping)


def unlink_file_vma(vma):
    f = vma.vm_file
    if f is not None:
        mapping = f.mapping
        i_mmap_lock_write(mapping)
        vma_interval_tree_remove(vma, mapping)
        i_mmap_unlock_write(mapping)


# -- mapcounts ---------------------------------------------------------------------

def folio_add_new_anon_rmap(kernel, folio, vma, address):
    """A brand-new anon folio gets its first mapping.  Context: ptl held."""
    set_bits(folio, 'flags', PG_anon | PG_swapbacked)
    folio.mapping = vma.anon_vma
    folio.index = vma.linear_page_index(address)
    atomic_add_return(folio, "_mapcount", 1)
    kernel.nodes[folio.node].vm_stat["NR_ANON_MAPPED"].add(folio.nr_pages())
    mlock_on_map(kernel, folio, vma)


def folio_add_anon_rmap_pte(kernel, folio, vma, address):
    """Another PTE maps an existing anon folio (fork).  Context: ptl held."""
    atomic_add_return(folio, "_mapcount", 1)
    mlock_on_map(kernel, folio, vma)


def folio_add_file_rmap_pte(kernel, folio, vma):
    """Context: ptl held, folio locked or its page-cache reference held."""
    atomic_add_return(folio, "_mapcount", 1)
    mlock_on_map(kernel, folio, vma)


def folio_remove_rmap_pte(kernel, folio, vma):
    """A PTE mapping the folio was cleared.  Context: ptl held."""
    n = atomic_add_return(folio, "_mapcount", -1)
    if n == 0 and folio.flags & PG_anon:
        kernel.nodes[folio.node].vm_stat["NR_ANON_MAPPED"].add(-folio.nr_pages())
    if vma.vm_flags & VM_LOCKED:
        from .mlock import munlock_vma_folio
        munlock_vma_folio(kernel, folio, vma)


def mlock_on_map(kernel, folio, vma):
    if vma.vm_flags & VM_LOCKED:
        from .mlock import mlock_vma_folio
        mlock_vma_folio(kernel, folio, vma)
