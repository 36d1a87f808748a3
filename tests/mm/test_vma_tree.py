"""The VMA tree against a brute-force model, through real system calls, with
enough VMAs that its chunks split and empty (LOAD = 64 per chunk)."""
import random

import pytest

from pymm import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PAGE_SIZE as P, PROT_READ, PROT_WRITE
from pymm.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from pymm.mm.vma import LOAD

BASE = 0x10_0000_0000
SLOTS = 6 * LOAD


def test_tree_matches_a_model_through_splits_and_merges(kernel):
    k = kernel
    p = k.spawn("tree")
    rng = random.Random(7)
    mapped = set()                      # slot numbers: page BASE + 2*slot*P (gaps keep them apart)
    prots = {}
    for step in range(4 * SLOTS):
        s = rng.randrange(SLOTS)
        addr = BASE + 2 * s * P
        if s in mapped and rng.random() < 0.4:
            p.munmap(addr, P)
            mapped.discard(s)
        elif s in mapped:
            prot = rng.choice((PROT_READ, PROT_READ | PROT_WRITE))
            p.mprotect(addr, P, prot)
            prots[s] = prot
        else:
            p.mmap(addr, P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
            mapped.add(s)
            prots[s] = PROT_READ | PROT_WRITE
        if step % 97 == 0 or step == 4 * SLOTS - 1:
            _compare(p, mapped)
    assert len(p.mm.mm_mt) == len(mapped) > 2 * LOAD      # chunks really split
    p.munmap(BASE, 2 * SLOTS * P)                          # ... and all empty again
    _compare(p, set())
    assert k.check() == []


def _compare(p, mapped):
    mm = p.mm
    mmap_read_lock(mm)
    try:
        assert mm.mm_mt.check() == []
        got = [v.vm_start for v in mm.mm_mt.all() if BASE <= v.vm_start < BASE + 2 * SLOTS * P]
        assert got == sorted(BASE + 2 * s * P for s in mapped)
        for s in range(0, SLOTS, 5):
            addr = BASE + 2 * s * P
            v = mm.mm_mt.vma_lookup(addr + 5)
            assert (v is not None and v.vm_start == addr) == (s in mapped)
            assert mm.mm_mt.vma_lookup(addr + P) is None                 # the gap
            nxt = mm.mm_mt.find_vma(addr + P)
            later = [t for t in mapped if t > s]
            if later:
                assert nxt.vm_start == BASE + 2 * min(later) * P
    finally:
        mmap_read_unlock(mm)


@pytest.mark.parametrize("n", [1, LOAD, 2 * LOAD + 1, 5 * LOAD])
def test_range_and_neighbours(kernel, n):
    p = kernel.spawn("r")
    for s in range(n):
        p.mmap(BASE + 2 * s * P, P, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    mm = p.mm
    mmap_read_lock(mm)
    try:
        got = mm.mm_mt.range(BASE + P, BASE + 2 * n * P)
        assert [v.vm_start for v in got] == [BASE + 2 * s * P for s in range(1, n)]
        prev, nxt = mm.mm_mt.neighbours(BASE + P, BASE + 2 * P)
        assert prev.vm_start == BASE and (nxt is None if n == 1 else nxt.vm_start == BASE + 2 * P)
    finally:
        mmap_read_unlock(mm)
