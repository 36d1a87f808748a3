"""``vma-lock-fork`` (key ``fork-vma-lock``, fb49c455323f): a per-VMA-lock
write fault of the parent while dup_mmap has write-protected its PTEs but
not yet flushed its TLBs; another CPU's store through its stale writable
entry lands in the child's page and is lost to the parent."""
import threading

import pytest

import pymm
from pymm import stress
from pymm.locking import lockdep
from pymm.mm import fork as fork_mod, memory
from pymm.mm.memory import lock_vma_under_rcu
from pymm.mm.mmap_lock import vma_end_read

P = pymm.PAGE_SIZE
RW = pymm.PROT_READ | pymm.PROT_WRITE
A = 0x4000_0000


def _kernel(variant):
    lockdep.reset()
    k = pymm.Kernel(nodes=1, pages_per_node=64, variants={"fork-vma-lock": variant})
    p = k.spawn("go")
    p.mmap(A, P, RW, pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS | pymm.MAP_FIXED)
    p.store(A, b"w0")
    return k, p


def _before_fork_flush(monkeypatch, fn):
    """Run fn() in dup_mm after the page tables are copied, just before the
    parent's TLB flush (mmap_lock still held for write)."""
    real = fork_mod.flush_tlb_mm

    def hook(mm):
        fn()
        real(mm)
    monkeypatch.setattr(fork_mod, "flush_tlb_mm", hook)


@pytest.mark.parametrize("variant,lockable", [("unlocked", True), ("vma-start-write", False)])
def test_dup_mmap_write_locks_the_parent_vmas(monkeypatch, cpus, variant, lockable):
    """During fork, lock_vma_under_rcu on the parent's VMA fails once
    dup_mmap has reached it (fb49c455323f), and only then."""
    k, p = _kernel(variant)
    other = cpus("cpu1")
    seen = []

    def probe():
        vma = lock_vma_under_rcu(p.mm, A)
        seen.append(vma is not None)
        if vma is not None:
            vma_end_read(vma)
    _before_fork_flush(monkeypatch, lambda: other(probe))
    p.fork().exit()
    assert seen == [lockable]
    p.exit()
    assert k.check() == []


def test_unlocked_fork_loses_a_store_through_a_stale_tlb(monkeypatch, cpus):
    """The sequence of bugzilla 217624, forced: the writer's CPU caches a
    writable translation; fork write-protects the PTE; before fork's flush
    the faulter's store faults under the VMA lock and wp_page_copy copies
    the page; between the copy and its flush the writer stores through its
    stale entry into the old page, which only the child maps now.  The
    parent's next load misses the store: data corruption."""
    k, p = _kernel("unlocked")
    writer, faulter = cpus("writer"), cpus("faulter")
    writer(lambda: p.store(A, b"w1"))              # a writable, dirty TLB entry
    real_point = memory.point
    raced = []

    def point(name):
        if name == "wp_page_copy" and threading.current_thread() is faulter.t:
            writer(lambda: p.store(A, b"w2"))      # through the stale entry
            raced.append(name)
        real_point(name)
    monkeypatch.setattr(memory, "point", point)
    _before_fork_flush(monkeypatch, lambda: faulter(lambda: p.store(A + P // 2, b"f")))
    child = p.fork()
    monkeypatch.setattr(memory, "point", real_point)
    assert raced == ["wp_page_copy"]               # the fault copied the page during fork
    assert child.load(A, 2) == b"w2"              # the parent's store is in the child's page
    assert p.load(A, 2) == b"w1"                  # ... and not in the parent's
    f = [x for x in k.findings() if x.kind == "data-corruption"]
    assert f and f[0].title == f"data corruption at {A + 1:#x}"     # "w2" vs "w1"
    child.exit()
    p.exit()


def test_fixed_fork_makes_the_fault_wait(monkeypatch, cpus):
    """With vma-start-write the same store from another CPU during fork
    cannot take the VMA lock: it falls back to mmap_lock and waits for
    fork; the stale entry is flushed first, and nothing is lost."""
    k, p = _kernel("vma-start-write")
    writer, faulter = cpus("writer"), cpus("faulter")
    writer(lambda: p.store(A, b"w1"))

    def fault_during_fork():
        faulter.q.put(lambda: p.store(A + P // 2, b"f"))    # waits for mmap_lock
        writer(lambda: p.store(A, b"w2"))           # through the stale entry, before the flush
    _before_fork_flush(monkeypatch, fault_during_fork)
    child = p.fork()
    ok, v = faulter.r.get(timeout=30)
    assert ok, v
    assert p.load(A, 2) == b"w2" and p.load(A + P // 2, 1) == b"f"
    assert child.load(A, 2) == b"w2" and child.load(A + P // 2, 1) == b"\0"
    child.exit()
    p.exit()
    assert k.check() == [] and k.findings() == []


@pytest.mark.parametrize("variant", ["unlocked", "vma-start-write"])
def test_vma_lock_fork_controlled(variant):
    r = stress.run_controlled("vma-lock-fork", variant, seed=0)
    if variant == "unlocked":
        assert r.caught and r.findings[0]["kind"] == "data-corruption"
        assert stress.replay(r.findings[0]["replay"].split()[-1]) is not None
    else:
        assert r.findings == [] and r.schedules == stress.DEFAULT_SCHEDULES
