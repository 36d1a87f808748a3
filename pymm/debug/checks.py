"""Invariant checks that can run any time the system is quiescent (no system
call in flight): page accounting per node, mapcounts and refcounts, mlock
accounting, rss counters, the VMA tree, page-table entry counts.  Every
violation becomes a finding."""
from ..mm.hugetlb import HPAGE_RESV_OWNER, HugetlbPrivate, vma_hugecache_offset
from ..mm.mm_types import (MM_SWAPENTS, PG_anon, PG_hugetlb, PG_mlocked, VM_HUGETLB, VM_LOCKED, Folio,
                           RSS_NAMES)
from ..mm.mm_types import mm_counter
from ..mm.page_alloc import NODE_STAT_ITEMS
from ..mm.pgtable import PteTable
from ..mm.swap_state import SwapEntry, check_swap
from .report import report


def _walk_ptes(mm):
    """Yield (addr, table, index, entry) for every non-none PTE of ``mm``."""
    for key, pmd in list(mm.pgd.items()):
        for i, pt in enumerate(pmd.entries):
            if isinstance(pt, PteTable):
                base = (key << 30) + (i << 21)
                for j, e in enumerate(pt.ptes):
                    if e is not None:
                        yield base + (j << 12), pt, j, e


def run_checks(k):
    before = len(k.findings())
    problems = []       # (kind, title, line)
    zero = k.zero_page
    maps = {}           # id(folio) -> [folio, mappings, locked mappings]
    swap_ptes = {}      # SwapEntry -> PTEs holding it
    live = [p for p in k.processes() if p.mm is not None and not p.mm.dead]
    for p in live:
        mm = p.mm
        errs = mm.mm_mt.check()
        problems += [("assertion", "BUG: VMA tree corrupted", f"{p!r}: {e}") for e in errs]
        rss = [0] * len(RSS_NAMES)
        locked_vm = sum(v.vma_pages() for v in mm.mm_mt.all_unchecked() if v.vm_flags & VM_LOCKED)
        if locked_vm != mm.locked_vm:
            problems.append(("bad-page-state", "BUG: locked_vm accounting",
                             f"{p!r}: locked_vm {mm.locked_vm} != {locked_vm} pages in VM_LOCKED VMAs"))
        for key, pmd in list(mm.pgd.items()):
            for pt in pmd.entries:
                if isinstance(pt, PteTable):
                    n = sum(e is not None for e in pt.ptes)
                    if n != pt.nr:
                        problems.append(("assertion", "BUG: page table entry count",
                                         f"{p!r}: PTE table at {pt.addr:#x} has {n} entries, nr={pt.nr}"))
        for addr, pt, j, e in _walk_ptes(mm):
            v = _vma_at(mm, addr)
            if v is None:
                problems.append(("bad-page-state", "BUG: PTE outside any VMA",
                                 f"{p!r}: PTE at {addr:#x} maps {e!r} but no VMA covers it"))
            if type(e) is SwapEntry:
                rss[MM_SWAPENTS] += 1
                swap_ptes[e] = swap_ptes.get(e, 0) + 1
                continue
            if not isinstance(e, Folio) or e is zero:
                continue
            rss[mm_counter(e)] += 1
            ent = maps.setdefault(id(e), [e, 0, 0])
            ent[1] += 1
            if v is not None and v.vm_flags & VM_LOCKED:
                ent[2] += 1
        for i, name in enumerate(RSS_NAMES):
            if rss[i] != mm.get_mm_counter(i):
                problems.append(("rss-counter", "BUG: Bad rss-counter state",
                                 f"{p!r}: {name} counter {mm.get_mm_counter(i)} but {rss[i]} PTEs"))
    cached = {}
    for f in list(k.files.values()):
        for idx, folio in list(f.mapping.i_pages.items()):
            if not folio.flags & PG_hugetlb:     # huge pages: check_hugetlb
                cached[id(folio)] = folio
    for folio in k.swap_info.cached_folios():      # the swap cache holds a reference too
        cached[id(folio)] = folio
    problems += check_swap(k.swap_info, swap_ptes)
    mlocked_pages = [0] * len(k.nodes)
    in_use = [0] * len(k.nodes)
    for fid, (folio, nmap, nlocked) in maps.items():
        cached_ref = 1 if fid in cached else 0
        if folio._mapcount != nmap:
            problems.append(("bad-page-state", "BUG: Bad page map count",
                             f"{folio!r}: _mapcount {folio._mapcount} but {nmap} PTEs map it"))
        if folio._refcount != nmap + cached_ref:
            problems.append(("bad-page-state", "BUG: Bad page refcount",
                             f"{folio!r}: _refcount {folio._refcount}, expected {nmap} mappings "
                             f"+ {cached_ref} page-cache reference"))
        # The converse -- mapped in a VM_LOCKED VMA but not PG_mlocked -- is
        # legal: mlock is "semi-accurate" and reclaim mlocks such a page lazily
        # when try_to_unmap_one meets the VM_LOCKED VMA (mm/mlock.c, and
        # mlock_count "too low" in Documentation/mm/unevictable-lru.rst).  A
        # 10-minute mix run met it when an exit's munlock phases raced a
        # sharer's mlock(2).
        if folio.flags & PG_mlocked and not nlocked:
            problems.append(("bad-page-state", "BUG: mlocked page in no VM_LOCKED VMA",
                             f"{folio!r}: PG_mlocked set but no VM_LOCKED VMA maps it"))
    for fid, folio in cached.items():
        if fid not in maps and folio._refcount != 1:
            problems.append(("bad-page-state", "BUG: Bad page refcount",
                             f"{folio!r}: unmapped page-cache folio with _refcount {folio._refcount}"))
        if fid not in maps and folio.flags & PG_mlocked:
            problems.append(("bad-page-state", "BUG: mlocked page in no VM_LOCKED VMA",
                             f"{folio!r}: unmapped page-cache folio still PG_mlocked"))
    anon_mapped = [0] * len(k.nodes)
    for folio, nmap, _ in maps.values():
        if folio.flags & PG_anon:
            anon_mapped[folio.node] += folio.nr_pages()
    seen = dict(maps)
    seen.update({fid: (f, 0, 0) for fid, f in cached.items() if fid not in maps})
    for fid, v in seen.items():
        folio = v[0]
        in_use[folio.node] += folio.nr_pages()
        if folio.flags & PG_mlocked:
            mlocked_pages[folio.node] += folio.nr_pages()
    for n, pg in enumerate(k.nodes):
        used = pg.present_pages - pg.nr_free
        if used != in_use[n]:
            problems.append(("bad-page-state", "BUG: page accounting",
                             f"node {n}: {pg.present_pages} pages, {pg.nr_free} free, so {used} in use, "
                             f"but {in_use[n]} pages are reachable (mapped or cached)"
                             + (" -- leaked pages" if used > in_use[n] else " -- pages in use twice")))
        for item in NODE_STAT_ITEMS:
            if pg.vm_stat[item].sum() < 0:
                problems.append(("bad-page-state", f"BUG: negative {item}",
                                 f"node {n}: {item} is {pg.vm_stat[item].sum()}"))
        if pg.vm_stat["NR_ANON_MAPPED"].sum() != anon_mapped[n]:
            problems.append(("bad-page-state", "BUG: NR_ANON_MAPPED accounting",
                             f"node {n}: NR_ANON_MAPPED {pg.vm_stat['NR_ANON_MAPPED'].sum()} but "
                             f"{anon_mapped[n]} mapped anonymous pages"))
        nr_mlock = pg.vm_stat["NR_MLOCK"].sum()
        if nr_mlock != mlocked_pages[n]:
            problems.append(("bad-page-state", "BUG: NR_MLOCK accounting",
                             f"node {n}: NR_MLOCK {nr_mlock} but {mlocked_pages[n]} mlocked pages"))
    problems += check_hugetlb(k, live)
    for kind, title, line in problems:
        report(kind, title, f"{title}\n{line}", kernel=k, data={"signature": line})
    return k.findings()[before:]


def check_hugetlb(k, live):
    """The huge page pool: every huge PTE inside a hugetlb VMA; PMD share
    counts equal to the number of extra mms pointing at the table; each huge
    folio's mapcount and refcount against its mappings and page-cache slot
    (a shared PMD table's entries count once); per node, pages in use equal
    folios reachable; HugePages_Rsvd equal to the reservations not yet
    consumed (file reservation maps minus their cached pages, plus private
    owners' unconsumed ranges)."""
    h = k.hstate
    problems = []
    maps = {}           # id(folio) -> [folio, mappings]
    users = {}          # id(pmd table) -> [table, mms pointing at it]
    expected_resv = 0
    for p in live:
        mm = p.mm
        for key, pmd in list(mm.pgd.items()):
            ent = users.setdefault(id(pmd), [pmd, 0])
            ent[1] += 1
            for i, e in enumerate(pmd.entries):
                if e is None or isinstance(e, PteTable):
                    continue
                addr = (key << 30) + (i << 21)
                v = _vma_at(mm, addr)
                if v is None or not v.vm_flags & VM_HUGETLB:
                    problems.append(("bad-page-state", "BUG: huge PTE outside any hugetlb VMA",
                                     f"{p!r}: huge PTE at {addr:#x} maps {e!r} but no hugetlb VMA "
                                     f"covers it"))
                if ent[1] == 1 and isinstance(e, Folio):
                    maps.setdefault(id(e), [e, 0])[1] += 1
        for v in mm.mm_mt.all_unchecked():
            d = v.vm_private_data
            if v.vm_flags & VM_HUGETLB and isinstance(d, HugetlbPrivate) and d.resv_map is not None \
                    and d.flags & HPAGE_RESV_OWNER:
                f, t = vma_hugecache_offset(v, v.vm_start), vma_hugecache_offset(v, v.vm_end)
                expected_resv += (t - f) - d.resv_map.region_count(f, t)
    for table, n in users.values():
        if table.pt_share_count != n - 1:
            problems.append(("bad-page-state", "BUG: hugetlb PMD share count",
                             f"PMD table at {table.addr:#x}: pt_share_count {table.pt_share_count} "
                             f"but {n} mms point at it"))
    cached = {}
    for f in list(h.inodes):
        idxs = set()
        for folio in list(f.mapping.i_pages.values()):
            cached[id(folio)] = folio
            idxs.add(folio.index >> 9)
        expected_resv += len(f.resv_map.regions - idxs)
    in_use = [0] * len(h.nr_huge_pages_node)
    for fid, folio in {**cached, **{i: e[0] for i, e in maps.items()}}.items():
        nmap = maps[fid][1] if fid in maps else 0
        cached_ref = 1 if fid in cached else 0
        in_use[folio.node] += 1
        if folio._mapcount != nmap:
            problems.append(("bad-page-state", "BUG: Bad page map count",
                             f"{folio!r}: _mapcount {folio._mapcount} but {nmap} huge PTEs map it"))
        if folio._refcount != nmap + cached_ref:
            problems.append(("bad-page-state", "BUG: Bad page refcount",
                             f"{folio!r}: _refcount {folio._refcount}, expected {nmap} mappings "
                             f"+ {cached_ref} page-cache reference"))
    for n, total in enumerate(h.nr_huge_pages_node):
        used = total - h.free_huge_pages_node[n]
        if used != in_use[n]:
            problems.append(("bad-page-state", "BUG: hugetlb page accounting",
                             f"node {n}: {total} huge pages, {h.free_huge_pages_node[n]} free, so "
                             f"{used} in use, but {in_use[n]} are reachable (mapped or cached)"))
    if h.resv_huge_pages != expected_resv or h.resv_huge_pages > h.free_huge_pages:
        problems.append(("bad-page-state", "BUG: hugetlb reservation accounting",
                         f"HugePages_Rsvd {h.resv_huge_pages} but {expected_resv} reservations "
                         f"outstanding ({h.free_huge_pages} pages free)"))
    return problems


def _vma_at(mm, addr):
    return mm.mm_mt.lookup_unchecked(addr)
