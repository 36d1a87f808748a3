"""Reclaim, swap, kswapd, the unevictable LRU and SCENARIOS.md section E
(variant "rmap-mlock").

Semantics: ``k.reclaim`` swaps anonymous pages out and faults bring the exact
bytes back (through the swap cache, so PTEs sharing an entry share the page
again); mlocked pages are never reclaimed and the Mlocked/Unevictable/NR_MLOCK
accounting returns to zero after munlock, munmap and exit; shmem is not
reclaimed; swap slots are freed by munmap, MADV_DONTNEED, truncation (COW
copies) and exit; kswapd wakes below its low watermark, reclaims to the high
one, and stops without leaving a thread behind.

Variants, under the controlled scheduler:

- race 1, exit vs reclaim: the owner mlocks a page it shares (read-only)
  with a forked witness, then exits; exit's munlock takes no mmap_lock, so
  reclaim's mmap_read_trylock succeeds and its mlock can land after exit's
  phase 1 cleared PG_mlocked: the witness is left mapping an mlocked page in
  no VM_LOCKED VMA.  (Reclaim only meets a VM_LOCKED mapping of a page it
  isolated before mlock(2) reached it, so this one needs five orderings; a
  fixed seed finds it.)
- race 1 as in 4.3, exit vs exit: two processes mlock a page a witness also
  maps; the first one's munlock phase 2 (try_to_munlock) runs the same
  try_to_unmap_one against the second one's exit.
- race 2, truncation vs reclaim: the owner mlocks its private COW copy of a
  file page and truncates the file; the zap unmaps and munlocks the copy
  while reclaim, having dropped the ptl, mlocks it: freed with PG_mlocked,
  "BUG: Bad page state".

``mmap-trylock`` is caught with the expected kind and replays to the same;
``pte-lock`` runs clean over every schedule tried.
"""
import threading

import pytest

import pymm
from pymm import (MADV_DONTNEED, MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, MCL_CURRENT,
                  MLOCK_ONFAULT, PAGE_SIZE, PROT_READ, PROT_WRITE)
from pymm.mm.mm_types import MM_ANONPAGES, MM_SWAPENTS, PG_mlocked, Folio
from pymm.mm.pgtable import pte_index, pte_offset
from pymm.mm.swap_state import SwapEntry
from pymm.sched import explore, replay

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def pattern(i):
    return bytes((i * 7 + j) & 0xFF for j in range(64)) + b"page%d" % i


def pte(p, addr):
    pt = pte_offset(p.mm, addr)
    return None if pt is None else pt.ptes[pte_index(addr)]


def fill(p, addr, n):
    for i in range(n):
        p.store(addr + i * P, pattern(i))


def verify(p, addr, n):
    for i in range(n):
        assert p.load(addr + i * P, len(pattern(i))) == pattern(i), f"page {i}"


def clean(k):
    assert k.check() == []
    assert k.findings() == [], k.findings()[0].text


def all_free(k):
    m = k.meminfo()
    assert m["MemFree"] == m["MemTotal"]
    assert m["SwapFree"] == m["SwapTotal"]
    assert m["SwapCached"] == 0
    assert m["Mlocked"] == 0 and m["Unevictable"] == 0 and m["AnonPages"] == 0


@pytest.fixture
def k():
    return pymm.Kernel(nodes=2, pages_per_node=128)


# -- swap out, swap in ----------------------------------------------------------------------

def test_reclaim_swaps_out_and_faults_bring_the_exact_bytes_back(k):
    p = k.spawn("a")
    a = p.mmap(0, 8 * P, RW, ANON)
    fill(p, a, 8)
    m0 = k.meminfo()
    assert k.reclaim(5) == 5
    m = k.meminfo()
    assert m["MemFree"] == m0["MemFree"] + 5 * 4
    assert m["SwapFree"] == m["SwapTotal"] - 5 * 4
    assert m["AnonPages"] == m0["AnonPages"] - 5 * 4
    swapped = [i for i in range(8) if type(pte(p, a + i * P)) is SwapEntry]
    assert len(swapped) == 5
    assert p.mm.get_mm_counter(MM_SWAPENTS) == 5 and p.mm.get_mm_counter(MM_ANONPAGES) == 3
    clean(k)
    verify(p, a, 8)
    assert all(isinstance(pte(p, a + i * P), Folio) for i in range(8))
    m = k.meminfo()
    assert m["SwapFree"] == m["SwapTotal"] and m["SwapCached"] == 0
    assert p.mm.get_mm_counter(MM_SWAPENTS) == 0
    clean(k)
    p.exit()
    all_free(k)
    clean(k)


def test_reclaim_takes_only_what_is_there(k):
    p = k.spawn("a")
    a = p.mmap(0, 6 * P, RW, ANON)
    fill(p, a, 6)
    p.load(a + 6 * P - 8, 8)                  # reads map the zero page: nothing to reclaim
    assert k.reclaim(1000) == 6
    assert k.reclaim(1000) == 0
    verify(p, a, 6)
    clean(k)


def test_written_again_after_swap_in(k):
    p = k.spawn("a")
    a = p.mmap(0, 2 * P, RW, ANON)
    fill(p, a, 2)
    assert k.reclaim(2) == 2
    p.store(a + 100, b"new bytes")             # a write fault on a swap entry
    assert p.load(a + 100, 9) == b"new bytes"
    assert p.load(a, 64) == pattern(0)[:64]
    assert k.reclaim(2) == 1                   # page 0 again (page 1 is still out), new bytes
    assert p.load(a + 100, 9) == b"new bytes"
    assert p.load(a + P, len(pattern(1))) == pattern(1)
    clean(k)


def test_swap_entries_shared_by_fork_swap_in_to_one_folio(k):
    p = k.spawn("parent")
    a = p.mmap(0, 4 * P, RW, ANON)
    fill(p, a, 4)
    c = p.fork()
    assert k.reclaim(100) == 4                 # each page: both PTEs become one swap entry
    e = pte(p, a)
    assert type(e) is SwapEntry and pte(c, a) is e
    assert k.swap_info.swap_count(e) == 2
    verify(c, a, 4)                            # child swaps in: the folio stays in the swap cache
    assert k.meminfo()["SwapCached"] == 4 * 4
    verify(p, a, 4)                            # parent finds it there: one folio, two PTEs
    assert pte(p, a) is pte(c, a) and pte(p, a)._mapcount == 2
    m = k.meminfo()
    assert m["SwapCached"] == 0 and m["SwapFree"] == m["SwapTotal"]
    c.store(a, b"child's own")                 # COW as usual
    assert p.load(a, 64) == pattern(0)[:64]
    assert c.load(a, 11) == b"child's own"
    clean(k)
    c.exit()
    p.exit()
    all_free(k)
    clean(k)


def test_fork_of_swapped_out_pages_and_exit_free_the_slots(k):
    p = k.spawn("parent")
    a = p.mmap(0, 3 * P, RW, ANON)
    fill(p, a, 3)
    assert k.reclaim(3) == 3
    c = p.fork()                               # copy_nonpresent_pte: swap_duplicate
    assert k.swap_info.swap_count(pte(p, a)) == 2
    clean(k)
    p.exit()
    assert k.meminfo()["SwapFree"] == k.meminfo()["SwapTotal"] - 3 * 4
    verify(c, a, 3)
    clean(k)
    c.exit()
    all_free(k)


def test_munmap_and_madv_dontneed_free_swap_slots(k):
    p = k.spawn("a")
    a = p.mmap(0, 4 * P, RW, ANON)
    fill(p, a, 4)
    assert k.reclaim(4) == 4
    p.madvise(a, 2 * P, MADV_DONTNEED)
    assert k.meminfo()["SwapFree"] == k.meminfo()["SwapTotal"] - 2 * 4
    assert p.load(a, 8) == bytes(8)            # DONTNEED: zeros again
    p.munmap(a + 2 * P, 2 * P)
    m = k.meminfo()
    assert m["SwapFree"] == m["SwapTotal"]
    assert p.mm.get_mm_counter(MM_SWAPENTS) == 0
    clean(k)


def test_truncate_zaps_swapped_cow_copies_hole_punch_keeps_them(k):
    f = k.create_file("f", 2 * P)
    p = k.spawn("a")
    a = p.mmap(0, 2 * P, RW, MAP_PRIVATE, fd=f)
    p.store(a, b"private 0")
    p.store(a + P, b"private 1")
    assert k.reclaim(10) == 2                  # only the anon COW copies; tmpfs pages stay
    f.fallocate(pymm.FALLOC_FL_PUNCH_HOLE | pymm.FALLOC_FL_KEEP_SIZE, 0, P)
    assert p.load(a, 9) == b"private 0"        # hole punch spares COW copies
    assert k.reclaim(10) == 1
    f.ftruncate(0)                             # truncation does not
    m = k.meminfo()
    assert m["SwapFree"] == m["SwapTotal"]
    with pytest.raises(pymm.BusError):
        p.load(a, 1)
    clean(k)
    p.exit()
    all_free(k)


def test_shmem_is_not_reclaimed(k):
    f = k.create_file("shm", 4 * P)
    p = k.spawn("a")
    a = p.mmap(0, 4 * P, RW, MAP_SHARED, fd=f)
    fill(p, a, 4)
    b = p.mmap(0, 4 * P, RW, MAP_SHARED | MAP_ANONYMOUS)     # shared anon is shmem too
    fill(p, b, 4)
    assert k.reclaim(100) == 0
    verify(p, a, 4)
    clean(k)


def test_swap_full_keeps_the_pages():
    k = pymm.Kernel(nodes=1, pages_per_node=16)               # and 16 swap slots
    p = k.spawn("a")
    a = p.mmap(0, 12 * P, RW, ANON)
    fill(p, a, 12)
    assert k.reclaim(12) == 12
    b = p.mmap(0, 8 * P, RW, ANON)
    fill(p, b, 8)
    assert k.reclaim(8) == 4                   # 4 slots left
    assert k.meminfo()["SwapFree"] == 0
    assert k.reclaim(8) == 0
    verify(p, b, 8)                            # 4 swapped in: their slots are free again
    clean(k)
    p.munmap(b, 8 * P)                         # room for a (pymm has no direct reclaim)
    verify(p, a, 12)
    clean(k)
    p.exit()
    all_free(k)


# -- mlock and the unevictable LRU -----------------------------------------------------------

def test_mlocked_pages_are_never_reclaimed(k):
    p = k.spawn("a")
    a = p.mmap(0, 6 * P, RW, ANON)
    fill(p, a, 6)
    p.mlock(a, 4 * P)
    m = k.meminfo()
    assert m["Mlocked"] == 4 * 4 and m["Unevictable"] == 4 * 4
    assert k.reclaim(100) == 2
    assert all(isinstance(pte(p, a + i * P), Folio) for i in range(4))
    assert all(pte(p, a + i * P).flags & PG_mlocked for i in range(4))
    clean(k)
    p.munlock(a, 4 * P)
    m = k.meminfo()
    assert m["Mlocked"] == 0 and m["Unevictable"] == 0
    assert k.reclaim(100) == 4
    verify(p, a, 6)
    clean(k)


def test_mlock_counters_return_to_zero_after_munmap_and_exit(k):
    p = k.spawn("a")
    a = p.mmap(0, 4 * P, RW, ANON)
    fill(p, a, 4)
    p.mlock(a, 4 * P)
    p.munmap(a, 2 * P)
    assert k.meminfo()["Mlocked"] == 2 * 4
    clean(k)
    b = p.mmap(0, 2 * P, RW, ANON)
    p.mlock2(b, 2 * P, MLOCK_ONFAULT)
    p.store(b, b"locked on fault")
    p.mlockall(MCL_CURRENT)
    assert k.reclaim(100) == 0
    clean(k)
    p.exit()
    all_free(k)
    clean(k)


def test_exit_munlock_recounts_pages_still_locked_elsewhere(k):
    """Exit's phase 1 clears PG_mlocked and mlock_count; phase 2
    (try_to_munlock) mlocks again for each VMA still VM_LOCKED."""
    p = k.spawn("parent")
    a = p.mmap(0, 3 * P, RW, ANON)
    fill(p, a, 3)
    p.mprotect(a, 3 * P, PROT_READ)            # stay shared: no COW on mlock's populate
    c1, c2 = p.fork(), p.fork()
    for q in (p, c1, c2):
        q.mlock(a, 3 * P)
    f = pte(p, a)
    assert f.mlock_count == 3
    p.exit()
    assert f.flags & PG_mlocked and f.mlock_count == 2
    assert k.reclaim(100) == 0
    clean(k)
    c1.munlock(a, 3 * P)
    assert f.flags & PG_mlocked                 # c2 still has it locked
    clean(k)
    c2.exit()
    assert k.meminfo()["Mlocked"] == 0
    clean(k)
    assert k.reclaim(100) == 3
    verify(c1, a, 3)
    c1.exit()
    all_free(k)


def test_locked_sharer_keeps_the_page_from_reclaim(k):
    p = k.spawn("parent")
    a = p.mmap(0, 2 * P, RW, ANON)
    fill(p, a, 2)
    p.mprotect(a, 2 * P, PROT_READ)
    c = p.fork()
    c.mlock(a, 2 * P)
    assert k.reclaim(100) == 0                 # mlocked: never scanned
    c.munlock(a, 2 * P)
    assert k.reclaim(100) == 2                 # both PTEs become the swap entry
    assert type(pte(p, a)) is SwapEntry and pte(c, a) is pte(p, a)
    c.mlock(a, 2 * P)                          # populate swaps in, mlocked on map
    assert isinstance(pte(c, a), Folio) and pte(c, a).flags & PG_mlocked
    clean(k)
    verify(p, a, 2)
    clean(k)


# -- kswapd ---------------------------------------------------------------------------------

def kswapd_threads():
    return [t for t in threading.enumerate() if t.name.startswith("kswapd")]


def test_kswapd_reclaims_below_the_low_watermark_and_stops():
    k = pymm.Kernel(nodes=1, pages_per_node=64)
    assert kswapd_threads() == []
    k.start_kswapd(low=16, high=32)
    try:
        assert len(kswapd_threads()) == 1
        p = k.spawn("hog")
        a = p.mmap(0, 56 * P, RW, ANON)
        fill(p, a, 56)                         # 8 free pages left: below low
        ks = k.kswapd[0]
        assert ks.wait_idle(10)            # the wakeup the allocations made has been served
        assert ks.runs >= 1 and ks.reclaimed >= 8
        assert k.nodes[0].nr_free >= 16    # at least low: below it kswapd would be awake
        assert k.meminfo()["SwapFree"] < k.meminfo()["SwapTotal"]
        verify(p, a, 56)                       # faults back in (and may wake kswapd again)
        assert ks.wait_idle(10)
    finally:
        assert k.stop_kswapd() is True
    assert kswapd_threads() == []
    assert k.kswapd is None and k.stop_kswapd() is False
    clean(k)
    p.exit()
    all_free(k)


def test_kswapd_gives_up_on_a_hopeless_node():
    k = pymm.Kernel(nodes=1, pages_per_node=32)
    k.start_kswapd(low=8, high=16)
    try:
        p = k.spawn("locked")
        a = p.mmap(0, 28 * P, RW, ANON)
        p.mlock(a, 28 * P)                     # nothing reclaimable
        ks = k.kswapd[0]
        assert ks.wait_idle(10)
        assert ks.reclaimed == 0 and ks.failures >= 1
    finally:
        k.stop_kswapd()
    assert kswapd_threads() == []
    clean(k)


def test_kswapd_bad_input():
    k = pymm.Kernel(nodes=1, pages_per_node=64)
    for kw in ({"low": -1}, {"low": 1.5}, {"high": 65}, {"low": "4"}, {"low": 20, "high": 10}):
        with pytest.raises(ValueError):
            k.start_kswapd(**kw)
    assert k.kswapd is None and kswapd_threads() == []
    k.start_kswapd()
    try:
        with pytest.raises(ValueError):
            k.start_kswapd()
    finally:
        k.stop_kswapd()
    assert kswapd_threads() == []


def test_kswapd_refuses_the_controlled_scheduler():
    seen = []

    def setup():
        return pymm.Kernel(nodes=1, pages_per_node=16)

    def body(k):
        with pytest.raises(ValueError):
            k.start_kswapd()
        seen.append(k.kswapd)

    r = explore(setup, [body], max_schedules=1)
    assert r.failure is None and seen == [None]


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True, None, [1]])
def test_reclaim_bad_input(k, bad):
    with pytest.raises(ValueError):
        k.reclaim(bad)


def test_reclaim_zero(k):
    p = k.spawn("a")
    a = p.mmap(0, P, RW, ANON)
    p.store(a, b"x")
    assert k.reclaim(0) == 0
    assert isinstance(pte(p, a), Folio)


def test_free_mode_kswapd_with_faulting_threads_is_clean():
    """Real threads store and load their pages while kswapd swaps them out
    underneath; every load sees the bytes the thread stored."""
    from pymm.sched import free_mode
    k = pymm.Kernel(nodes=1, pages_per_node=96)
    procs = [k.spawn(f"w{i}") for i in range(3)]
    addrs = [q.mmap(0, 24 * P, RW, ANON) for q in procs]
    errors = []

    def work(q, a, seed):
        try:
            for r in range(12):
                for i in range(24):
                    q.store(a + i * P, b"%d-%d-%d" % (seed, r, i))
                for i in range(24):
                    assert q.load(a + i * P, 16).rstrip(b"\0") == b"%d-%d-%d" % (seed, r, i)
        except BaseException as e:             # surfaced below
            errors.append(e)

    k.start_kswapd(low=30, high=48)
    kswapds = k.kswapd
    try:
        with free_mode(1, probability=0.05, max_sleep=1e-4):
            ths = [threading.Thread(target=work, args=(q, a, n)) for n, (q, a) in
                   enumerate(zip(procs, addrs))]
            for t in ths:
                t.start()
            for t in ths:
                t.join(60)
        assert not any(t.is_alive() for t in ths)
        assert kswapds[0].wait_idle(10)
    finally:
        k.stop_kswapd()
    assert errors == []
    assert kswapds[0].reclaimed > 0
    clean(k)
    for q in procs:
        q.exit()
    all_free(k)
    clean(k)


# -- SCENARIOS.md section E under the controlled scheduler -------------------------------------

LEFT_MLOCKED = "BUG: mlocked page in no VM_LOCKED VMA"
BAD_PAGE = "BUG: Bad page state"


def _check(st):
    k, witness = st[0], st[-1]
    k.check()
    witness.exit()
    k.check()
    f = k.findings()
    assert not f, f[0].text


def exit_vs_reclaim(variant):
    """Race 1: the owner mlocks a page it shares read-only with a forked
    witness and exits; kswapd reclaims meanwhile."""
    def setup():
        k = pymm.Kernel(nodes=1, pages_per_node=64, variants={"rmap-mlock": variant})
        p = k.spawn("owner")
        a = p.mmap(0, P, RW, ANON)
        p.store(a, b"shared")
        p.mprotect(a, P, PROT_READ)
        return k, p, a, p.fork()

    def owner(st):
        k, p, a, w = st
        p.mlock(a, P)
        p.exit()

    def kswapd(st):
        st[0].reclaim(1)

    return setup, [owner, kswapd], _check


def exit_vs_exit(variant):
    """Race 1 as in 4.3: two lockers of a page a witness also maps exit
    together; the first one's try_to_munlock meets the second one's exit."""
    def setup():
        k = pymm.Kernel(nodes=1, pages_per_node=64, variants={"rmap-mlock": variant})
        w = k.spawn("witness")
        a = w.mmap(0, P, RW, ANON)
        w.store(a, b"shared")
        w.mprotect(a, P, PROT_READ)
        l1, l2 = w.fork(), w.fork()
        l1.mlock(a, P)
        l2.mlock(a, P)
        return k, l1, l2, w

    return setup, [lambda st: st[1].exit(), lambda st: st[2].exit()], _check


def truncate_vs_reclaim(variant):
    """Race 2: the owner mlocks its private COW copy of a file page and
    truncates the file (unmap_mapping_range even_cows); kswapd reclaims."""
    def setup():
        k = pymm.Kernel(nodes=1, pages_per_node=64, variants={"rmap-mlock": variant})
        f = k.create_file("f", P)
        p = k.spawn("owner")
        a = p.mmap(0, P, RW, MAP_PRIVATE, fd=f)
        p.store(a, b"cow")
        return k, p, a, f, k.spawn("witness")

    def owner(st):
        k, p, a, f, _ = st
        p.mlock(a, P)
        f.ftruncate(0)

    def kswapd(st):
        st[0].reclaim(1)

    def check(st):
        k, p, a, f, w = st
        p.munlock(a, P)
        p.exit()
        _check(st)

    return setup, [owner, kswapd], check


RACES = {
    # program, strategy, seed, schedules (the buggy run stops at the first finding), title
    "exit-vs-reclaim": (exit_vs_reclaim, "random", 0, 400, LEFT_MLOCKED),
    "exit-vs-exit": (exit_vs_exit, "pct", 0, 400, LEFT_MLOCKED),
    "truncate-vs-reclaim": (truncate_vs_reclaim, "random", 0, 400, BAD_PAGE),
}


@pytest.fixture
def pymm_checks_off():
    from pymm.debug import report as R
    R.set_pymm_checks_default(False)
    yield
    R.set_pymm_checks_default(True)


@pytest.mark.parametrize("race", list(RACES))
def test_mmap_trylock_is_caught_and_replays(race, pymm_checks_off):
    """With pymm's own checks off, each race is seen by its outcome: the
    invariant check (race 1) or the free-time Bad page state (race 2)."""
    prog, strategy, seed, budget, title = RACES[race]
    setup, threads, check = prog("mmap-trylock")
    r = explore(setup, threads, check, strategy=strategy, seed=seed, max_schedules=budget)
    assert r.failure is not None, f"{race}: not caught in {r.schedules_run} schedules"
    assert r.failure.kind == "bad-page-state", r.failure.message
    assert r.failure.message.splitlines()[0] == title, r.failure.message
    again = replay(setup, threads, r.failure.schedule, check)
    assert again is not None and again.kind == "bad-page-state"
    assert again.message.splitlines()[0] == title, again.message


@pytest.mark.parametrize("race", list(RACES))
def test_mmap_trylock_is_reported_at_the_mlock(race):
    """pymm's own check (mlock.check_rmap_mlock) reports every race at the
    stale mlock itself, one title for both races and both rmap callers
    (reclaim, try_to_munlock), before their outcomes; it replays."""
    from pymm.debug.report import is_pymm_only
    from pymm.mm.mlock import RMAP_MLOCK_TITLE
    prog, strategy, seed, budget, _ = RACES[race]
    setup, threads, check = prog("mmap-trylock")
    r = explore(setup, threads, check, strategy=strategy, seed=seed, max_schedules=budget)
    assert r.failure is not None, f"{race}: not caught in {r.schedules_run} schedules"
    assert r.failure.kind == "bad-page-state", r.failure.message
    assert r.failure.message.splitlines()[0] == RMAP_MLOCK_TITLE, r.failure.message
    assert is_pymm_only(RMAP_MLOCK_TITLE)
    assert "mlock_vma_page+" in r.failure.message and "try_to_unmap_one+" in r.failure.message
    again = replay(setup, threads, r.failure.schedule, check)
    assert again is not None and again.message.splitlines()[0] == RMAP_MLOCK_TITLE


@pytest.mark.parametrize("strategy", ["random", "pct"])
@pytest.mark.parametrize("race", list(RACES))
def test_pte_lock_is_clean(race, strategy):
    prog = RACES[race][0]
    setup, threads, check = prog("pte-lock")
    r = explore(setup, threads, check, strategy=strategy, seed=1, max_schedules=150)
    assert r.failure is None, r.failure.message
    assert r.schedules_run == 150
