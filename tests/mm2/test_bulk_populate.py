"""Populate a table of PTEs at a time (gup.populate_anon_ptes) and free what
a zap gathered a folio_batch at a time (folios_put_refs): the same pages,
counters, LRU and KASAN tracks as page by page, and the same virtual cost
per page."""
import pytest

from pymm import constants as C
from pymm.mm import gup
from pymm.mm.mm_types import MM_ANONPAGES, PG_anon, PG_lru
from pymm.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from pymm.mm.pgtable import pte_index, pte_offset
from pymm.mm.swap import LRU_ANON
from pymm.sched import vtime
from pymm.sched.cost_model import CostModel

P = C.PAGE_SIZE
RW = C.PROT_READ | C.PROT_WRITE
ANON = C.MAP_PRIVATE | C.MAP_ANONYMOUS


def pte_folio(p, addr):
    """The folio mapped at ``addr`` (a peek without locks: the test's own
    threads are quiescent)."""
    pt = pte_offset(p.mm, addr)
    return None if pt is None else pt.ptes[pte_index(addr)]


def section(text, head):
    """The lines of a report section, from the line starting with ``head``
    to the next blank line."""
    lines = text.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith(head))
    out = []
    for ln in lines[i + 1:]:
        if not ln.strip():
            break
        out.append(ln.strip())
    return out


def only(k, kind):
    found = [f for f in k.findings() if f.kind == kind]
    assert len(found) == 1, found
    return found[0]


def free_pages(k):
    return sum(n.nr_free for n in k.nodes)


def anon_lru(k):
    return sum(n.lruvec.lists[LRU_ANON].count for n in k.nodes)


@pytest.fixture
def bulk_calls(monkeypatch):
    """The pages each call of the bulk path mapped."""
    done = []
    real = gup.populate_anon_ptes

    def spy(*a):
        n = real(*a)
        done.append(n)
        return n
    monkeypatch.setattr(gup, "populate_anon_ptes", spy)
    return done


def test_map_populate_maps_every_page_and_munmap_frees_them(kernel, bulk_calls):
    k = kernel
    p = k.spawn("p")
    n = 1100                                        # more than two PTE tables
    free0, lru0 = free_pages(k), anon_lru(k)
    a = p.mmap(0, n * P, RW, ANON | C.MAP_POPULATE)
    assert sum(bulk_calls) >= 512 and set(bulk_calls) <= {0, 512}   # whole tables only
    assert p.mm.get_mm_counter(MM_ANONPAGES) == n
    folios = [pte_folio(p, a + i * P) for i in range(n)]
    assert len({id(f) for f in folios}) == n
    mmap_read_lock(p.mm)
    vma = p.mm.mm_mt.vma_lookup(a)
    mmap_read_unlock(p.mm)
    for i, f in enumerate(folios):
        assert f._mapcount == 1 and f._refcount == 1
        assert f.flags & PG_anon and f.flags & PG_lru
        assert f.mapping is vma.anon_vma and f.index == vma.linear_page_index(a + i * P)
    assert anon_lru(k) == lru0 + n
    assert free_pages(k) < free0 - n + 8           # n pages and a few page tables
    p.store(a + 700 * P, b"kept")
    assert p.load(a + 700 * P, 4) == b"kept"
    p.munmap(a, n * P)
    assert p.mm.get_mm_counter(MM_ANONPAGES) == 0
    assert anon_lru(k) == lru0


def test_populate_keeps_pages_already_there(kernel, bulk_calls):
    """A table with a page already present is left to the per-page path
    (follow_page_pte keeps the page); MADV_POPULATE_WRITE over three
    tables' worth of a half-faulted range."""
    k = kernel
    p = k.spawn("p")
    n = 3 * 512
    a = p.mmap(0, n * P, RW, ANON)
    first = (-(a // P)) % 512                        # the first whole table's first page
    mid = first + 512 + 10                           # a page of the second whole table... if any
    p.store(a + first * P + 10 * P, b"ten")
    ten = pte_folio(p, a + first * P + 10 * P)
    assert p.madvise(a, n * P, C.MADV_POPULATE_WRITE) == 0
    assert pte_folio(p, a + first * P + 10 * P) is ten
    assert p.load(a + first * P + 10 * P, 3) == b"ten"
    assert all(pte_folio(p, a + i * P) is not None for i in range(n))
    assert p.mm.get_mm_counter(MM_ANONPAGES) == n
    whole = (n - first) // 512                       # whole tables in the range
    assert sum(bulk_calls) == 512 * (whole - 1) and mid < n   # all but the one with "ten"


def test_small_populates_keep_the_per_page_path(kernel, bulk_calls):
    """Populates smaller than a page table (the scenarios') fault page by
    page: every scheduling point of the per-page path stays."""
    p = kernel.spawn("p")
    a = p.mmap(0, 64 * P, RW, ANON | C.MAP_POPULATE)
    assert p.mm.get_mm_counter(MM_ANONPAGES) == 64 and pte_folio(p, a + 63 * P) is not None
    assert not any(bulk_calls)


def test_bulk_path_leaves_mempolicy_and_mlock_to_the_per_page_path(kernel, bulk_calls):
    k = kernel
    p = k.spawn("p")
    a = p.mmap(0, 32 * P, RW, ANON)
    p.mbind(a, 32 * P, C.MPOL_BIND, [1], 0)
    assert p.madvise(a, 32 * P, C.MADV_POPULATE_WRITE) == 0
    assert {pte_folio(p, a + i * P).node for i in range(32)} == {1}
    b = p.mmap(0, 32 * P, RW, ANON | C.MAP_LOCKED)
    assert p.mm.get_mm_counter(MM_ANONPAGES) == 64
    assert pte_folio(p, b + 31 * P) is not None
    assert not any(bulk_calls)


@pytest.mark.pymm_expect("use-after-free")
def test_bulk_allocated_folio_records_populate_and_the_batched_free(kernel):
    """KASAN's tracks of a folio the bulk path allocated and folios_put_refs
    freed: one saved stack per batch, the batch's own call sites."""
    k = kernel
    p = k.spawn("p")
    a = p.mmap(0, 1536 * P, RW, ANON | C.MAP_POPULATE)
    first = (-(a // P)) % 512                        # the first whole table's first page
    folio = pte_folio(p, a + (first + 512 + 300) * P)   # in the second (the VMA's first
    p.munmap(a, 1536 * P)                               # fault made its anon_vma before)
    k.run_syscall(lambda: folio.flags)
    f = only(k, "use-after-free")
    alloc, freed = section(f.text, "Allocated by task"), section(f.text, "Freed by task")
    assert any("populate_anon_ptes" in ln for ln in alloc), alloc
    assert any("folios_put_refs" in ln for ln in freed) and \
        any("tlb_finish_mmu" in ln for ln in freed), freed


def test_bulk_populate_charges_each_page_in_virtual_time():
    """The bulk path skips no virtual cost: a populate of N pages costs at
    least N times a fault, an allocation, a clear, a PTE and the per-page
    lock operations, as the per-page path charges."""
    from pymm.kernel import Kernel
    n = 2048
    out = {}

    def setup():
        k = Kernel()
        return k, k.spawn("p")

    def populate(state):
        k, p = state
        t0 = vtime.now_ns()
        p.mmap(0, n * P, RW, ANON | C.MAP_POPULATE)
        out["ns"] = vtime.now_ns() - t0
    run, vc = vtime.simulate(setup, [populate])
    assert run.failure is None
    c = CostModel().ns
    per_page = c["fault"] + c["page_alloc"] + c["clear_page"] + c["pte"] + \
        gup.POPULATE_LOCK_OPS * c["lock"]
    assert n * per_page <= out["ns"] < n * per_page * 1.1
