"""The detectors, each shown to fire on a deliberately injected bug with the
kernel-style headline of SCENARIOS.md's table, and to stay quiet on the
correct version of the same code."""
import re

import pytest

import pymm
from pymm import MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE
from pymm.mm.mm_types import MM_ANONPAGES
from pymm.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from pymm.mm.pgtable import pte_offset
from pymm.mm.vma import vm_area_dup, vm_area_free
from pymm.rcu import rcu_read

from .test_syscalls import pte_folio

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def section(text, head):
    """The lines of a report section (the line starting with ``head``:
    "Call Trace:", "Allocated by task", ...) up to the next blank line."""
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


# -- KASAN -------------------------------------------------------------------------------

def read_freed_vma(vma):
    return vma.vm_start


def write_freed_vma(vma):
    vma.vm_flags = 0


def duplicate_and_free(mm, addr):
    mmap_read_lock(mm)
    copy = vm_area_dup(mm.mm_mt.vma_lookup(addr))   # a detached copy: freeing it is harmless
    mmap_read_unlock(mm)
    vm_area_free(copy)
    return copy


@pytest.mark.pymm_expect("use-after-free")
def test_kasan_vma_use_after_free_with_stacks(kernel):
    k = kernel
    p = k.spawn("p")
    a = p.mmap(0, 4 * P, RW, ANON)
    freed = k.run_syscall(duplicate_and_free, p.mm, a)
    assert k.findings() == []                        # allocating and freeing is fine
    assert k.run_syscall(read_freed_vma, freed) == a  # the stale value is still there, as in C
    f = only(k, "use-after-free")
    assert f.title == "BUG: KASAN: use-after-free in read_freed_vma"
    # the kernel's lines (syzkaller titles this "KASAN: use-after-free Read in read_freed_vma")
    assert re.search(r"^BUG: KASAN: use-after-free in read_freed_vma\+0x0/0x0 tests/mm/test_detectors.py:\d+$",
                     f.text, re.M)
    assert re.search(rf"^Read of size 8 at addr [0-9a-f]{{16}} by task MainThread/\d+$", f.text, re.M)
    assert re.search(r"^Allocated by task \d+:$", f.text, re.M)
    assert re.search(r"^Freed by task \d+:$", f.text, re.M)
    assert "field 'vm_start' of the object" in f.text and "the cache vm_area_struct" in f.text
    call, alloc, free = (section(f.text, h) for h in ("Call Trace:", "Allocated by task", "Freed by task"))
    assert call[0].startswith("read_freed_vma+0x0/0x0 tests/mm/test_detectors.py:")
    assert "vm_area_dup" in alloc[0]
    # both stacks run through duplicate_and_free: at the dup line and at the free line
    site = lambda stack: next(ln for ln in stack if ln.startswith("duplicate_and_free+0x0/0x0 "))
    assert site(alloc) != site(free)
    assert "read_freed_vma" not in "".join(alloc + free)
    k.run_syscall(write_freed_vma, freed)
    w = [x for x in k.findings() if x.title == "BUG: KASAN: use-after-free in write_freed_vma"]
    assert len(w) == 1 and "Write of size 8" in w[0].text and "field 'vm_flags'" in w[0].text
    k.run_syscall(vm_area_free, freed)
    assert "BUG: KASAN: double-free in vm_area_free" in [x.title for x in k.findings()]
    assert k.check() == []


def folio_flags_after(folio):
    return folio.flags


@pytest.mark.pymm_expect("use-after-free")
def test_kasan_folio_and_page_table_kept_across_munmap(kernel):
    """A pointer to a folio or a page table kept across munmap is stale: both
    are freed (and poisoned) when the mapping goes away."""
    k = kernel
    p = k.spawn("p")
    a = p.mmap(0, 512 * P, RW, ANON)                 # one whole PTE table
    p.store(a, b"x")
    folio = pte_folio(p, a)
    table = k.run_syscall(lambda: (mmap_read_lock(p.mm), pte_offset(p.mm, a), mmap_read_unlock(p.mm))[1])
    p.munmap(a, 512 * P)
    assert k.findings() == []
    k.run_syscall(folio_flags_after, folio)
    f = only(k, "use-after-free")
    assert f.title == "BUG: KASAN: use-after-free in folio_flags_after"
    assert "belongs to the cache page\n" in f.text
    assert any(fn in ln for ln in section(f.text, "Freed by task")
               for fn in ("zap_pte_range", "folio_put", "folios_put_refs"))
    k.clear_findings()
    k.run_syscall(lambda: table.ptl)
    f = only(k, "use-after-free")
    assert "belongs to the cache page table (pte)\n" in f.text
    assert any("free_pgd_range" in ln for ln in section(f.text, "Freed by task"))
    assert k.check() == []


# -- RCU: VMA-tree walks need mmap_lock or rcu_read_lock --------------------------------------

@pytest.mark.pymm_expect("rcu")
def test_vma_tree_walk_without_lock_is_suspicious_rcu_usage(kernel, lockdep):
    k = kernel
    p = k.spawn("p")
    a = p.mmap(0, 4 * P, RW, ANON)
    mm = p.mm

    def under_rcu():
        with rcu_read():
            return mm.mm_mt.find_vma(a)

    def under_mmap_lock():
        mmap_read_lock(mm)
        try:
            return mm.mm_mt.find_vma(a)
        finally:
            mmap_read_unlock(mm)

    assert k.run_syscall(under_rcu).vm_start == a
    assert k.run_syscall(under_mmap_lock).vm_start == a
    assert k.findings() == []
    assert k.run_syscall(mm.mm_mt.find_vma, a).vm_start == a      # no lock at all
    f = only(k, "rcu")
    assert f.title == "WARNING: suspicious RCU usage"
    assert "suspicious rcu_dereference_check() usage" in f.text
    assert "0 locks held" in f.text
    assert k.check() == []


# -- rss counters at exit ---------------------------------------------------------------------

@pytest.mark.pymm_expect("rss-counter")
def test_rss_counter_corruption_reported_at_exit(kernel):
    k = kernel
    p = k.spawn("p")
    a = p.mmap(0, 4 * P, RW, ANON)
    p.store(a, b"x" * 3 * P)
    assert p.mm.get_mm_counter(MM_ANONPAGES) == 3
    p.mm.rss_stat[MM_ANONPAGES].add(1)              # the injected bug: one increment too many
    new = k.check()
    assert [f.kind for f in new] == ["rss-counter"] and "counter 4 but 3 PTEs" in new[0].text
    p.exit()
    at_exit = [f for f in k.findings() if "type:MM_ANONPAGES val:1" in f.text]
    assert len(at_exit) == 1 and at_exit[0].title == "BUG: Bad rss-counter state"
    assert k.meminfo()["MemFree"] == k.meminfo()["MemTotal"]


def test_clean_exit_reports_no_rss_counter(kernel):
    p = kernel.spawn("p")
    a = p.mmap(0, 4 * P, RW, ANON)
    p.store(a, b"x" * 3 * P)
    p.fork().exit()
    p.exit()
    assert kernel.findings() == [] and kernel.check() == []


# -- bad page state --------------------------------------------------------------------------

def mlock_after_last_unmap(k, p, addr):
    """The injected bug (SCENARIOS.md E, race 2): something holding a reference
    mlocks the folio after its last mapping is gone, then lets go of it."""
    from pymm.mm.mlock import mlock_folio
    from pymm.mm.page_alloc import folio_get, folio_put
    folio = pte_folio(p, addr)
    folio_get(folio)                                 # e.g. reclaim's isolation reference
    p.munmap(addr, P)                                # the last unmap (clears any mlock)
    k.run_syscall(mlock_folio, k, folio)             # ... and now it is mlocked again
    k.run_syscall(folio_put, folio)                  # the last reference: freed mlocked


@pytest.mark.pymm_expect("bad-page-state")
def test_folio_freed_mlocked_is_bad_page_state(kernel):
    k = kernel
    p = k.spawn("p")
    a = p.mmap(0, P, RW, ANON)
    p.store(a, b"x")
    mlock_after_last_unmap(k, p, a)
    bad = [f for f in k.findings() if f.title == "BUG: Bad page state"]
    assert bad, k.findings()
    assert "mlocked" in bad[0].text and "PAGE_FLAGS_CHECK_AT_FREE" in bad[0].text
    assert "page dumped because" in bad[0].text
    assert k.meminfo()["MemFree"] == k.meminfo()["MemTotal"]   # the page was still returned
    assert any("NR_MLOCK" in f.title for f in k.check())       # and the counter stayed wrong


# -- data integrity ---------------------------------------------------------------------------

@pytest.mark.pymm_expect("data-corruption")
def test_bytes_changed_behind_the_process_are_data_corruption(kernel):
    k = kernel
    p = k.spawn("p")
    a = p.mmap(0, 2 * P, RW, ANON)
    p.store(a + P, b"precious")
    assert p.load(a + P, 8) == b"precious" and k.findings() == []
    pte_folio(p, a + P).write_bytes(2, b"X")        # the injected bug: a stray write
    assert p.load(a + P, 8) == b"prXcious"
    f = only(k, "data-corruption")
    assert f.title == f"data corruption at {a + P + 2:#x}"
    assert "expected 65" in f.text and "found 58" in f.text
    assert k.check() == []


@pytest.mark.pymm_expect("data-corruption")
def test_the_shadow_keeps_the_written_extent_and_still_sees_bytes_beyond_it(kernel):
    """The checker's shadow of a page holds only the bytes up to the last
    one stored (a 4 KiB bytearray per touched page was 4 KB of RSS per
    page): the rest must read as zeros, and a stray write there is still
    corruption."""
    k = kernel
    p = k.spawn("p")
    a = p.mmap(0, 2 * P, RW, ANON)
    p.store(a + 100, b"ab")
    assert len(p.mm.user_shadow[a]) == 102
    p.store(a + 3000, bytes(16))                     # zeros past the extent: nothing to keep
    assert len(p.mm.user_shadow[a]) == 102
    assert p.load(a, 200) == bytes(100) + b"ab" + bytes(98) and k.findings() == []
    p.store(a + 200, b"c")                           # the extent grows, zero-filled between
    assert p.load(a + 98, 104) == bytes(2) + b"ab" + bytes(98) + b"c" + bytes(1)
    assert k.findings() == []
    pte_folio(p, a).write_bytes(4000, b"X")          # a stray write beyond the extent
    assert p.load(a + 3990, 16)[10] == ord("X")
    f = only(k, "data-corruption")
    assert f.title == f"data corruption at {a + 4000:#x}"


def test_rss_counter_report_names_the_mm_by_a_stable_address():
    """The same run prints the same report: the mm is not named by id()
    (two replays of munmap-stack's downgrade-always finding differed in
    'mm:0x7fa5a1618220')."""
    import pymm
    from pymm.mm.mmap import check_mm
    from pymm.mm.mm_types import MM_ANONPAGES
    k = pymm.Kernel(nodes=1, pages_per_node=64)
    p = k.spawn("leak")
    p.mm.rss_stat[MM_ANONPAGES].add(1)
    check_mm(p.mm)
    [f] = [f for f in k.findings() if f.kind == "rss-counter"]
    assert f"{id(p.mm):#x}" not in f.text and f"{id(p.mm):x}" not in f.text
