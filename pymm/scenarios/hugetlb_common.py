"""Helpers shared by the hugetlb scenario modules (C, C2, D): sizes, and
migrating one huge folio the way move_pages(2) does for a hugetlb page
(isolate it, then migrate_pages to a node)."""
from .. import constants as C
from types import SimpleNamespace

from ..kernel import Kernel
from ..mm import hugetlb as H
from ..mm.filemap import filemap_get_folio
from ..mm.migrate import (MIGRATE_SYNC, MR_SYSCALL, MigrationTargetControl, alloc_migration_target,
                          migrate_pages)
from ..mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from ..mm.page_alloc import folio_put

HS = C.HPAGE_SIZE
RW = C.PROT_READ | C.PROT_WRITE


def hugetlb_kernel(key, value, seed, nodes=1, hugepages=2, variants=None, **kw):
    """The Kernel of a hugetlb scenario: ``nodes`` nodes of 64 base pages
    and ``hugepages`` huge pages each, variant ``key`` set to ``value``
    (and any other ``variants``)."""
    return Kernel(nodes=nodes, pages_per_node=64, hugepages_per_node=hugepages,
                  variants={key: value, **(variants or {})}, seed=seed, **kw)


def hugetlbfs_file(k, name, pages, populate=True):
    """A hugetlbfs file of ``pages`` huge pages, each in the page cache
    (fallocated) if ``populate``."""
    f = k.create_file(name, pages * HS, hugetlb=True)
    if populate:
        f.fallocate(0, 0, pages * HS)
    return f


def shared_file_page(k, name, data):
    """A one-huge-page hugetlbfs file ``name`` that a process "mapper" maps
    MAP_SHARED and has written ``data`` to: the scenario state (kernel, f,
    p, a)."""
    f = k.create_file(name, HS, hugetlb=True)
    p = k.spawn("mapper")
    a = p.mmap(0, HS, RW, C.MAP_SHARED, fd=f)
    p.store(a, data)
    return SimpleNamespace(kernel=k, f=f, p=p, a=a)


def private_cow_owner(k, name):
    """A one-huge-page hugetlbfs file ``name`` (in the page cache) that an
    "owner" maps MAP_PRIVATE (reserving a page), reads, and writes (a COW
    into that page: the pool is empty now): the state (kernel, f, o, a)."""
    f = hugetlbfs_file(k, name, 1)
    o = k.spawn("owner")
    a = o.mmap(0, HS, RW, C.MAP_PRIVATE, fd=f)
    o.load(a, 1)
    o.store(a, b"O")
    return SimpleNamespace(kernel=k, f=f, o=o, a=a)


class OwnerCowRole:
    """The owner role of the scenarios built on private_cow_owner: fork,
    then write -- a COW with no free page, as the reservation owner, which
    takes the page away from the child (unmap_ref_private).  ``others``
    names the state's other processes, exited at teardown."""
    others = ()

    def owner(self, st, rng):
        child = st.o.fork()
        try:
            st.o.store(st.a, b"O")
        finally:
            child.exit()

    def teardown(self, st):
        data = st.o.load(st.a, 1)
        st.o.exit()
        for name in self.others:
            getattr(st, name).exit()
        if data != b"O":
            raise AssertionError(f"the owner's private huge page lost its contents: {data!r}")


def private_huge_page(k, name, data):
    """A process ``name`` with one private anonymous MAP_HUGETLB page
    holding ``data``: the scenario state (kernel, p, a)."""
    p = k.spawn(name)
    a = p.mmap(0, HS, RW, C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_HUGETLB)
    p.store(a, data)
    return SimpleNamespace(kernel=k, p=p, a=a)


def migrate_folio_to(kernel, folio, nid):
    """Isolate ``folio`` (a referenced huge folio) and migrate it to node
    ``nid``; returns the number of folios that could not be moved (0 or 1),
    or None if it could not be isolated.  Context: no lock held; drops the
    caller's reference."""
    ok = H.folio_isolate_hugetlb(kernel, folio)
    folio_put(folio, kernel)
    if not ok:
        return None
    mtc = MigrationTargetControl(nid, {nid})
    return migrate_pages(kernel, [folio], lambda src, priv: alloc_migration_target(kernel, src, priv),
                         None, mtc, MIGRATE_SYNC, MR_SYSCALL)


def migrate_file_page(kernel, file, idx):
    """Move huge page ``idx`` of ``file`` to the other node (compaction and
    memory failure find folios this way, by page rather than by address)."""
    def body():
        folio = filemap_get_folio(file.mapping, idx << H.HUGETLB_PAGE_ORDER)
        if folio is None:
            return None
        return migrate_folio_to(kernel, folio, 1 - folio.node)
    return kernel.run_syscall(body)


def migrate_mapped_page(p, addr):
    """Move the huge page ``p`` maps at ``addr`` to the other node, as
    move_pages(2) would: the folio is looked up under mmap_lock."""
    k = p.kernel

    def body():
        mmap_read_lock(p.mm)
        folio = H.hugetlb_folio_at(p.mm, addr)
        mmap_read_unlock(p.mm)
        if folio is None:
            return None
        return migrate_folio_to(k, folio, 1 - folio.node)
    return k.run_syscall(body)
