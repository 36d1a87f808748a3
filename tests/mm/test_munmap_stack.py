"""munmap's downgrade, exit_mmap's read-locked zap, and stack growth
(MAP_GROWSDOWN, expand_downwards, the fault path that grows the stack)."""
import errno

import pytest

import pymm
from pymm import MAP_ANONYMOUS, MAP_FIXED, MAP_GROWSDOWN, MAP_PRIVATE, MAP_SHARED, PAGE_SIZE as P
from pymm import PROT_READ, PROT_WRITE
from pymm.mm import mmap as mmap_mod

RW = PROT_READ | PROT_WRITE
STACK = 0x7E00_0000_0000


def _lock_mode_during_zap(monkeypatch, k, fn):
    """Run fn(); return how mmap_lock was held while unmap_vmas ran."""
    seen = []
    real = mmap_mod.unmap_vmas

    def spy(vmas, start, end, tlb=None):
        lk = vmas[0].vm_mm.mmap_lock
        seen.append("write" if lk.held_by_current(0) else "read" if lk.held_by_current(1) else "none")
        return real(vmas, start, end, tlb)
    monkeypatch.setattr(mmap_mod, "unmap_vmas", spy)
    fn()
    return seen


@pytest.mark.parametrize("variant,growsdown_above,mode", [
    ("write-locked", False, "write"),
    ("downgrade-always", True, "read"),
    ("unless-growsdown", False, "read"),
    ("unless-growsdown", True, "write"),
    ("stack-write-locked", True, "read"),
])
def test_munmap_downgrades_as_the_variant_says(monkeypatch, variant, growsdown_above, mode):
    k = pymm.Kernel(variants={"munmap-downgrade": variant})
    p = k.spawn("a")
    flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
    p.mmap(STACK, 4 * P, RW, flags | (MAP_GROWSDOWN if growsdown_above else 0))
    p.mmap(STACK - 8 * P, 8 * P, PROT_READ, flags)
    p.store(STACK, b"x")
    assert _lock_mode_during_zap(monkeypatch, k, lambda: p.munmap(STACK - 8 * P, 8 * P)) == [mode]
    assert not p.mm.mmap_lock.is_locked()
    p.exit()
    assert k.check() == [] and k.findings() == []


def test_exit_zaps_under_the_read_lock(monkeypatch):
    k = pymm.Kernel()
    p = k.spawn("a")
    a = p.mmap(0, 4 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.store(a, b"x")
    assert _lock_mode_during_zap(monkeypatch, k, p.exit) == ["read"]
    assert k.check() == [] and k.findings() == []


@pytest.mark.parametrize("variant", ["downgrade-always", "stack-write-locked"])
def test_a_fault_below_the_stack_grows_it(variant):
    k = pymm.Kernel(variants={"munmap-downgrade": variant})
    p = k.spawn("a")
    p.mmap(STACK, 4 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_GROWSDOWN)
    p.store(STACK - 3 * P + 5, b"deeper")
    v = p.mm.mm_mt.lookup_unchecked(STACK)
    assert v.vm_start == STACK - 3 * P and v.vm_end == STACK + 4 * P
    assert v.vm_pgoff == (STACK - 3 * P) >> 12            # anon pgoff follows vm_start
    assert p.load(STACK - 3 * P + 5, 6) == b"deeper"
    assert p.load(STACK - 2 * P, 4) == bytes(4)            # grown, never touched: zeros
    p.exit()
    assert k.check() == [] and k.findings() == []


def test_stack_keeps_the_guard_gap():
    k = pymm.Kernel()
    p = k.spawn("a")
    p.mmap(STACK, 4 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_GROWSDOWN)
    below = STACK - 300 * P
    p.mmap(below, P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    p.store(STACK - 40 * P, b"ok")                         # 260 pages above it: fine
    with pytest.raises(pymm.SegmentationFault):
        p.store(below + 200 * P, b"no")                    # within 256 pages of it: SIGSEGV
    with pytest.raises(pymm.SegmentationFault):
        p.store(STACK + 8 * P, b"no")                      # above the stack: no VMA grows up
    p.exit()
    assert k.check() == []


def test_growsdown_shared_anonymous_is_einval():
    k = pymm.Kernel()
    p = k.spawn("a")
    with pytest.raises(OSError) as e:
        p.mmap(0, P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_GROWSDOWN)
    assert e.value.errno == errno.EINVAL
    assert len(p.mm.mm_mt) == 0


@pytest.mark.parametrize("variant,mode", [("write-locked", "write"), ("stack-write-locked", "read")])
def test_brk_shrink_zaps_as_munmap_does(monkeypatch, variant, mode):
    """Shrinking brk unmaps with do_vmi_align_munmap(..., unlock=true):
    downgraded as munmap is (85a06835f6f1, 4.20); mm->brk is set first."""
    k = pymm.Kernel(variants={"munmap-downgrade": variant})
    p = k.spawn("a")
    base = p.brk(0)
    top = p.brk(base + 8 * P)
    p.store(base + 4 * P, b"heap")
    assert _lock_mode_during_zap(monkeypatch, k, lambda: p.brk(base + 2 * P)) == [mode]
    assert p.brk(0) == base + 2 * P and top == base + 8 * P
    assert not p.mm.mmap_lock.is_locked()
    p.exit()
    assert k.check() == [] and k.findings() == []


def test_map_fixed_over_a_mapping_zaps_under_the_write_lock(monkeypatch):
    """mmap(MAP_FIXED) over an existing mapping unmaps it without
    downgrading (mmap_region keeps the write lock: the new VMA goes in next)."""
    k = pymm.Kernel()
    p = k.spawn("a")
    a = p.mmap(0, 4 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.store(a, b"old")
    fixed = lambda: p.mmap(a, 4 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)  # noqa: E731
    assert _lock_mode_during_zap(monkeypatch, k, fixed) == ["write"]
    assert p.load(a, 3) == bytes(3)
    p.exit()
    assert k.check() == [] and k.findings() == []


# -- the page-table free check (pymm's own) ----------------------------------------------

@pytest.fixture
def pymm_checks_restored():
    from pymm.debug import report as R
    from pymm.locking import lockdep
    yield R
    R.set_pymm_checks_default(True)
    lockdep.reset()


def test_table_freed_under_the_grown_stack_is_reported_at_the_free(pymm_checks_restored):
    """downgrade-always is one bug, reported at the point of corruption:
    every seed's first finding is the free of a page table the stack grew
    into, before its faults write the freed table (KASAN), leak a page with
    it (Bad rss-counter state) or leave an entry in it (non-empty table
    freed) -- the four crashes a campaign used to list for it."""
    from pymm import stress
    from pymm.debug.report import is_pymm_only
    from pymm.mm.pgtable import PGTABLE_IN_USE_TITLE
    for seed in range(4):
        r = stress.run_controlled("munmap-stack", "downgrade-always", seed=seed, schedules=200)
        assert r.findings, seed
        f = r.findings[0]
        assert (f["kind"], f["title"]) == ("assertion", PGTABLE_IN_USE_TITLE), f["text"]
        assert f["pymm_only"] and is_pymm_only(f["title"])
        assert "free_pgd_range+" in f["text"] and "growsdown" in f["text"]
        again = stress.run_replay(f["replay"].split()[-1])
        assert again.findings and again.findings[0]["title"] == PGTABLE_IN_USE_TITLE


def test_with_pymm_checks_off_the_race_is_still_caught_by_the_kernels_own(pymm_checks_restored):
    """The check adds an earlier report, it replaces no detector: without it
    downgrade-always is caught as before (KASAN, rss counters, the non-empty
    table)."""
    from pymm import stress
    pymm_checks_restored.set_pymm_checks_default(False)
    r = stress.run_controlled("munmap-stack", "downgrade-always", seed=0)
    assert r.findings and r.caught, r.findings
    assert r.findings[0]["kind"] in ("use-after-free", "rss-counter", "bad-page-state")


@pytest.mark.parametrize("variant", ["write-locked", "unless-growsdown", "stack-write-locked"])
def test_fixed_variants_free_no_table_under_a_vma(variant):
    from pymm import stress
    r = stress.run_controlled("munmap-stack", variant, seed=0, schedules=150)
    assert not r.findings, r.findings


def test_unmapping_next_to_vmas_and_exit_free_tables_cleanly():
    """munmap inside a table its neighbours still use, of a whole table next
    to a neighbour, and exit (every VMA gone): the check stays quiet."""
    from pymm.mm.pgtable import pte_offset
    k = pymm.Kernel()
    p = k.spawn("a")
    flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
    base = 0x4000_0000
    p.mmap(base, 1024 * P, RW, flags)                       # two PTE tables' worth
    for i in range(0, 1024, 64):
        p.store(base + i * P, b"x")
    p.munmap(base + 8 * P, 8 * P)                           # inside one table: nothing freed
    p.munmap(base + 512 * P, 512 * P)                       # the whole second table: freed
    assert pte_offset(p.mm, base + 512 * P) is None
    assert pte_offset(p.mm, base) is not None
    p.exit()
    assert k.check() == [] and k.findings() == []
