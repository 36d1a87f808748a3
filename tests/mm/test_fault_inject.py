"""Faults on purpose (pymm.debug.fault_inject): every allocation site fails
the way Linux reports it -- ENOMEM from system calls, SIGBUS or ENOMEM
(VM_FAULT_OOM) from faults -- with nothing leaked (meminfo back to its
baseline once every process exits, k.check() clean) and no lock held (the
return-to-user lockdep check would report it)."""
import errno

import pytest

import pymm
from pymm import (MAP_ANONYMOUS, MAP_HUGETLB, MAP_PRIVATE, MAP_SHARED, PAGE_SIZE, PROT_READ,
                  PROT_WRITE)
from pymm.debug import fault_inject
from pymm.errors import BusError
from pymm.locking import lockdep
from pymm.sched import explore, replay

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
HP = 2 << 20


def _kernel(**kw):
    lockdep.reset()
    return pymm.Kernel(nodes=2, pages_per_node=256, hugepages_per_node=2, seed=1, **kw)


def _clean(k, base):
    """Every process exited: meminfo is back to ``base`` and no detector spoke."""
    for p in k.processes():
        p.exit()
    assert k.check() == []
    assert k.findings() == []
    assert lockdep.reports() == []
    assert k.meminfo() == base


def test_page_alloc_failure_is_enomem_from_a_fault():
    k = _kernel()
    base = k.meminfo()
    p = k.spawn("a")
    a = p.mmap(0, 4 * P, RW, ANON)
    k.fail("page-alloc", probability=100)
    with pytest.raises(OSError) as e:
        p.store(a, b"x")
    assert e.value.errno == errno.ENOMEM
    assert k.fault_stats()["page-alloc"]["failures"] == 1
    k.fail("page-alloc", probability=0)
    p.store(a, b"y")                       # the next try works: nothing was left half done
    assert p.load(a, 1) == b"y"
    _clean(k, base)


def test_pgtable_failure_in_fault_and_fork():
    k = _kernel()
    base = k.meminfo()
    p = k.spawn("a")
    a = p.mmap(0, 4 * P, RW, ANON)
    k.fail("pgtable-alloc", probability=100, times=1)
    with pytest.raises(OSError) as e:
        p.store(a, b"x")
    assert e.value.errno == errno.ENOMEM
    p.store(a, b"x")                       # times=1: only the first failed
    k.fail("pgtable-alloc", probability=100, times=-1)
    with pytest.raises(OSError) as e:
        p.fork()                           # copy_page_range's pte_alloc: the child is torn down
    assert e.value.errno == errno.ENOMEM
    assert len(k.processes()) == 1
    k.fail("pgtable-alloc", probability=0)
    c = p.fork()
    c.store(a, b"c")
    assert p.load(a, 1) == b"x"
    _clean(k, base)


@pytest.mark.parametrize("nth", range(1, 7))
def test_slab_failure_in_fork_at_each_vma(nth):
    """vm_area_dup or anon_vma_fork (two slab allocations per VMA) failing
    at the nth allocation: fork says ENOMEM and the half-copied child leaks
    nothing."""
    k = _kernel()
    base = k.meminfo()
    p = k.spawn("a")
    for i in range(3):
        a = p.mmap(0x1000_0000 + i * 0x100_0000, 2 * P, RW, ANON | pymm.MAP_FIXED)
        p.store(a, bytes([i + 1]))
    k.fail("slab", probability=100, space=nth - 1, times=1)
    with pytest.raises(OSError) as e:
        p.fork()
    assert e.value.errno == errno.ENOMEM
    assert k.fault_stats()["slab"]["failures"] == 1
    _clean(k, base)


def test_slab_failure_in_mmap_brk_and_anon_vma_prepare():
    k = _kernel()
    base = k.meminfo()
    p = k.spawn("a")
    keep = p.mmap(0, P, RW, ANON)
    k.fail("slab", probability=100)
    with pytest.raises(OSError) as e:
        p.mmap(0, P, RW, ANON)
    assert e.value.errno == errno.ENOMEM
    with pytest.raises(OSError) as e:      # MAP_FIXED over a mapping: the old one stays
        p.mmap(keep, P, RW, ANON | pymm.MAP_FIXED)
    assert e.value.errno == errno.ENOMEM
    b0 = p.brk(0)
    assert p.brk(b0 + P) == b0            # brk(2) returns the old break on failure
    with pytest.raises(OSError) as e:      # the first anonymous fault needs an anon_vma
        p.store(keep, b"z")
    assert e.value.errno == errno.ENOMEM
    k.fail("slab", probability=0)
    p.store(keep, b"z")
    assert p.load(keep, 1) == b"z"
    _clean(k, base)


def test_hugetlb_reserve_is_enomem_and_dequeue_is_sigbus():
    k = _kernel()
    base = k.meminfo()
    p = k.spawn("a")
    k.fail("hugetlb-reserve", probability=100, times=1)
    with pytest.raises(OSError) as e:
        p.mmap(0, HP, RW, ANON | MAP_HUGETLB)
    assert e.value.errno == errno.ENOMEM
    h = p.mmap(0, HP, RW, ANON | MAP_HUGETLB)
    k.fail("hugetlb-dequeue", probability=100)
    with pytest.raises(BusError):
        p.store(h, b"h")
    k.fail("hugetlb-dequeue", probability=0)
    p.store(h, b"h")
    f = k.create_file("hf", HP, hugetlb=True)
    s = p.mmap(0, HP, RW, MAP_SHARED, fd=f)
    k.fail("hugetlb-dequeue", probability=100)
    with pytest.raises(BusError):
        p.store(s, b"s")
    k.fail("hugetlb-dequeue", probability=0)
    k.fail("pgtable-alloc", probability=100)
    with pytest.raises(OSError) as e:
        p.fork()                          # copy_hugetlb_page_range's huge_pte_alloc
    assert e.value.errno == errno.ENOMEM
    k.fail("pgtable-alloc", probability=0)
    p.munmap(s, HP)
    f.ftruncate(0)
    _clean(k, base)


def test_interval_times_and_task_filter():
    k = _kernel()
    a = k.fail("page-alloc", probability=100, interval=3)
    p = k.spawn("a")
    m = p.mmap(0, 9 * P, RW, ANON)
    failed = []
    for i in range(9):
        try:
            p.store(m + i * P, b"x")
        except OSError:
            failed.append(i)
    assert failed == [2, 5, 8] and a.failures == 3
    k.fail("page-alloc", interval=1, task_filter=True)
    q = k.spawn("q")
    n = q.mmap(0, P, RW, ANON)
    q.store(n, b"q")                      # q is not marked: never fails
    q.make_it_fail = True
    n2 = q.mmap(0, P, RW, ANON)
    with pytest.raises(OSError):
        q.store(n2, b"q")
    assert q.fork().make_it_fail          # inherited, as the task_struct copy does


def test_same_seed_same_failures():
    def run():
        k = _kernel()
        k.fail("page-alloc", probability=30)
        p = k.spawn("a")
        m = p.mmap(0, 32 * P, RW, ANON)
        out = []
        for i in range(32):
            try:
                p.store(m + i * P, b"x")
                out.append(0)
            except OSError:
                out.append(1)
        return out
    a, b = run(), run()
    assert a == b and 0 < sum(a) < 32


def test_controlled_replay_reproduces_injected_failures():
    """Two threads fault under 50% injection; the failure a schedule ends
    with replays from its token, injected failures included."""
    def setup():
        k = pymm.Kernel(nodes=1, pages_per_node=64, seed=7)
        p = k.spawn("a")
        m = p.mmap(0, 8 * P, RW, ANON)
        k.fail("page-alloc", probability=50)
        return (k, p, m, [])

    def t(i):
        def body(st):
            k, p, m, log = st
            for j in range(4):
                try:
                    p.store(m + (i * 4 + j) * P, b"x")
                    log.append((i, j, "ok"))
                except OSError:
                    log.append((i, j, "ENOMEM"))
        return body

    def check(st):
        k, p, m, log = st
        if log[0][0] == 1 and log[1][0] == 0:
            raise AssertionError(repr(log))

    r = explore(setup, [t(0), t(1)], check, seed=3, max_schedules=200)
    assert r.failure is not None and "ENOMEM" in r.failure.detail and "'ok'" in r.failure.detail
    f2 = replay(setup, [t(0), t(1)], r.failure.schedule, check)
    assert f2 is not None and f2.detail == r.failure.detail


def test_bad_input():
    k = _kernel()
    for kw, msg in (({"probability": 101}, "percentage"), ({"interval": 0}, "interval"),
                    ({"times": -2}, "times"), ({"bogus": 1}, "unknown knob"),
                    ({"task_filter": 1}, "True or False")):
        with pytest.raises(ValueError, match=msg):
            k.fail("page-alloc", **kw)
    with pytest.raises(ValueError, match="unknown site"):
        k.fail("nope", probability=1)
    with pytest.raises(ValueError, match="dict"):
        pymm.Kernel(fail=["page-alloc"])
    assert pymm.Kernel(fail={"slab": {"probability": 5}}).fault_stats()["slab"]["probability"] == 5


def test_spec_parsing():
    assert fault_inject.parse_spec("slab:5") == {"slab": {"probability": 5.0}}
    spec = fault_inject.parse_spec("all:probability=2,interval=3,times=4")
    assert set(spec) == set(fault_inject.SITES) and spec["page-alloc"]["interval"] == 3
    tok = fault_inject.format_spec(spec)
    assert ":" not in tok and fault_inject.parse_token_spec(tok) == spec
    for bad in ("", "x:1", "slab:probability=x", "slab:prob=1", "slab:200"):
        with pytest.raises(ValueError):
            fault_inject.parse_spec(bad)
