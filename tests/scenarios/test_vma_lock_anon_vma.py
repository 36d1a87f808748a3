"""``vma-lock-anon-vma`` (key ``dup-anon-vma-lock``, d8ab9f7b644a): a page
fault under the per-VMA lock of a merge's ``dst`` between dup_anon_vma
setting dst->anon_vma and anon_vma_clone failing with ENOMEM."""

import pytest

import pymm
from pymm import stress
from pymm.locking import lockdep
from pymm.mm import mmap as mmap_mod
from pymm.mm.memory import lock_vma_under_rcu
from pymm.mm.mmap_lock import vma_end_read

P = pymm.PAGE_SIZE
RW = pymm.PROT_READ | pymm.PROT_WRITE
A = 0x4000_0000
B = A + P
FIXED = pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS | pymm.MAP_FIXED


@pytest.fixture
def cpu(cpus):
    return cpus("faulter")


def _setup(variant):
    """B read-only with a page (an anon_vma), A below it read-write with none."""
    lockdep.reset()
    k = pymm.Kernel(nodes=1, pages_per_node=64, variants={"dup-anon-vma-lock": variant})
    p = k.spawn("merge")
    p.mmap(B, P, RW, FIXED)
    p.store(B, b"B")
    p.mprotect(B, P, pymm.PROT_READ)
    p.mmap(A, P, RW, FIXED)
    return k, p


def _during_dup_anon_vma(monkeypatch, fn):
    """Run fn() in dup_anon_vma between setting dst->anon_vma and anon_vma_clone."""
    real = mmap_mod.point

    def point(name):
        if name == "dup_anon_vma":
            fn()
        real(name)
    monkeypatch.setattr(mmap_mod, "point", point)


def test_failed_clone_gives_up_the_merge():
    """anon_vma_clone's ENOMEM (enomem_failure): dst is left with no
    anon_vma and no chain, the merge is given up, mprotect still succeeds."""
    k, p = _setup("vma-start-write")
    k.fail("slab", probability=100, times=1)
    p.mprotect(B, P, RW)
    va, vb = p.mm.mm_mt.lookup_unchecked(A), p.mm.mm_mt.lookup_unchecked(B)
    assert va is not vb and va.anon_vma is None and va.anon_vma_chain == []
    assert vb.anon_vma is not None and vb.vm_flags == va.vm_flags
    p.mprotect(B, P, pymm.PROT_READ)
    p.mprotect(B, P, RW)                           # no failure now: they merge
    assert p.mm.mm_mt.lookup_unchecked(A) is p.mm.mm_mt.lookup_unchecked(B)
    assert p.load(B, 1) == b"B"
    p.exit()
    assert k.check() == [] and k.findings() == []


@pytest.mark.parametrize("variant,lockable", [("unlocked", True), ("vma-start-write", False)])
def test_dup_anon_vma_write_locks_dst_first(monkeypatch, cpu, variant, lockable):
    """With dst->anon_vma already set, a per-VMA-lock fault can take dst
    only with the buggy value (d8ab9f7b644a write-locks dst first)."""
    k, p = _setup(variant)
    seen = []

    def probe():
        vma = lock_vma_under_rcu(p.mm, A)
        seen.append(vma is not None)
        if vma is not None:
            vma_end_read(vma)
    _during_dup_anon_vma(monkeypatch, lambda: cpu(probe))
    p.mprotect(B, P, RW)
    assert seen == [lockable]
    p.exit()
    assert k.check() == []


def test_unlocked_fault_in_the_window_then_enomem_is_a_use_after_free(monkeypatch, cpu):
    """Jann Horn's sequence, forced: the fault maps a page in A under B's
    anon_vma; anon_vma_clone fails; A is tied to no anon_vma; munmap(B)
    frees the anon_vma; paging A out walks the page's anon_vma: KASAN."""
    k, p = _setup("unlocked")
    _during_dup_anon_vma(monkeypatch, lambda: cpu(lambda: p.store(A, b"A")))
    k.fail("slab", probability=100, times=1)       # the clone's anon_vma_chain_alloc
    p.mprotect(B, P, RW)
    va = p.mm.mm_mt.lookup_unchecked(A)
    assert va.anon_vma is None and va is not p.mm.mm_mt.lookup_unchecked(B)
    p.munmap(B, P)
    assert k.findings() == []
    p.madvise(A, P, pymm.MADV_PAGEOUT)
    f = k.findings()
    assert f and f[0].kind == "use-after-free"
    assert f[0].title == "BUG: KASAN: use-after-free in folio_lock_anon_vma_read"


@pytest.mark.parametrize("variant", ["unlocked", "vma-start-write"])
def test_vma_lock_anon_vma_controlled(variant):
    r = stress.run_controlled("vma-lock-anon-vma", variant, seed=0)
    if variant == "unlocked":
        assert r.caught and r.findings[0]["kind"] == "use-after-free"
        assert stress.replay(r.findings[0]["replay"].split()[-1]) is not None
    else:
        assert r.findings == [] and r.schedules == stress.DEFAULT_SCHEDULES
