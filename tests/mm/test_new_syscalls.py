"""mincore(2), msync(2), get_mempolicy(2), RLIMIT_MEMLOCK, vm.max_map_count,
MADV_COLD/MADV_PAGEOUT and MADV_WIPEONFORK/KEEPONFORK: the man pages' and
LTP's semantics (testcases/kernel/syscalls/{mincore,msync,get_mempolicy,
madvise,mlock}), bad input with its errno, and nothing leaked (the
``kernel`` fixture fails a test on any finding; each test ends with
k.check())."""
import errno

import pytest

import pymm
from pymm import (MADV_COLD, MADV_DONTNEED, MADV_KEEPONFORK, MADV_PAGEOUT, MADV_WIPEONFORK,
                  MAP_ANONYMOUS, MAP_FIXED, MAP_HUGETLB, MAP_LOCKED, MAP_PRIVATE, MAP_SHARED,
                  MCL_CURRENT, MPOL_BIND, MPOL_DEFAULT, MPOL_F_ADDR, MPOL_F_MEMS_ALLOWED,
                  MPOL_F_NODE, MPOL_INTERLEAVE, MPOL_PREFERRED, MS_ASYNC, MS_INVALIDATE, MS_SYNC,
                  PAGE_SIZE, PROT_READ, PROT_WRITE, RLIMIT_MEMLOCK)

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
HP = 2 << 20


def _errno(fn, *a, **kw):
    with pytest.raises(OSError) as e:
        fn(*a, **kw)
    return e.value.errno


# -- mincore(2) ------------------------------------------------------------------------------

def test_mincore_anon(kernel):
    p = kernel.spawn("a")
    a = p.mmap(0, 4 * P, RW, ANON)
    assert p.mincore(a, 4 * P) == bytes(4)          # never touched: not resident
    p.store(a, b"x")
    p.load(a + 2 * P, 1)                            # the zero page counts as resident
    assert p.mincore(a, 4 * P) == bytes([1, 0, 1, 0])
    assert p.mincore(a, 1) == b"\x01"               # a partial page is a page
    assert p.mincore(a, 0) == b""
    p.madvise(a, P, MADV_DONTNEED)
    assert p.mincore(a, P) == b"\x00"
    p.mlock(a, 4 * P)                               # LTP mincore02: locked pages are resident
    assert p.mincore(a, 4 * P) == bytes([1] * 4)
    kernel.check()


def test_mincore_file_pages_cached_by_another_process(kernel):
    """LTP mincore04: pages another process brought into the page cache are
    resident in a mapping that never touched them."""
    f = kernel.create_file("f", 4 * P)
    a, b = kernel.spawn("a"), kernel.spawn("b")
    ma = a.mmap(0, 4 * P, RW, MAP_SHARED, fd=f)
    mb = b.mmap(0, 4 * P, PROT_READ, MAP_SHARED, fd=f)
    a.store(ma + P, b"y")
    assert b.mincore(mb, 4 * P) == bytes([0, 1, 0, 0])
    a.exit()
    b.exit()
    f.ftruncate(0)
    kernel.check()


def test_mincore_hugetlb(kernel):
    p = kernel.spawn("a")
    h = p.mmap(0, HP, RW, ANON | MAP_HUGETLB)
    assert p.mincore(h, HP) == bytes(512)
    p.store(h + 5 * P, b"h")
    assert p.mincore(h, HP) == bytes([1] * 512)
    kernel.check()


def test_mincore_bad_input(kernel):
    p = kernel.spawn("a")
    a = p.mmap(0, 2 * P, RW, ANON)
    assert _errno(p.mincore, a + 1, P) == errno.EINVAL          # LTP mincore01
    assert _errno(p.mincore, a, 3 * P) == errno.ENOMEM          # runs past the mapping
    p.munmap(a, 2 * P)
    assert _errno(p.mincore, a, P) == errno.ENOMEM              # unmapped
    assert _errno(p.mincore, pymm.TASK_SIZE - P, 2 * P) == errno.ENOMEM
    assert _errno(p.mincore, a, "x") == errno.EINVAL


# -- msync(2) -----------------------------------------------------------------------------------

def test_msync(kernel):
    f = kernel.create_file("f", 4 * P)
    p = kernel.spawn("a")
    m = p.mmap(0, 4 * P, RW, MAP_SHARED, fd=f)
    a = p.mmap(0, 2 * P, RW, ANON)
    p.store(m, b"s")
    for flags in (MS_ASYNC, MS_SYNC, MS_INVALIDATE, MS_SYNC | MS_INVALIDATE):
        assert p.msync(m, 4 * P, flags) == 0
    assert p.msync(a, 2 * P, MS_SYNC) == 0
    assert p.msync(m, 0, MS_SYNC) == 0
    p.exit()
    f.ftruncate(0)
    kernel.check()


def test_msync_bad_input(kernel):
    """LTP msync03: EINVAL, ENOMEM; msync04 and the man page: EBUSY."""
    p = kernel.spawn("a")
    a = p.mmap(0x2000_0000, 2 * P, RW, ANON | MAP_FIXED)
    p.mmap(0x2000_0000 + 3 * P, P, RW, ANON | MAP_FIXED)      # a hole at +2 pages
    assert _errno(p.msync, a + 1, P, MS_SYNC) == errno.EINVAL
    assert _errno(p.msync, a, P, 0x10) == errno.EINVAL
    assert _errno(p.msync, a, P, MS_ASYNC | MS_SYNC) == errno.EINVAL
    assert _errno(p.msync, a, 4 * P, MS_SYNC) == errno.ENOMEM   # the hole
    assert _errno(p.msync, a, 4 * P, MS_ASYNC) == errno.ENOMEM
    assert _errno(p.msync, 0x7000_0000, P, MS_SYNC) == errno.ENOMEM
    assert _errno(p.msync, a, -P, MS_SYNC) == errno.ENOMEM
    p.mlock(a, P)
    assert _errno(p.msync, a, P, MS_INVALIDATE) == errno.EBUSY
    assert p.msync(a, P, MS_SYNC) == 0
    kernel.check()


# -- get_mempolicy(2) ----------------------------------------------------------------------------

def test_get_mempolicy_task_and_vma(kernel):
    """LTP get_mempolicy01: what set_mempolicy and mbind set is what
    get_mempolicy reports."""
    p = kernel.spawn("a")
    assert p.get_mempolicy() == (MPOL_DEFAULT, frozenset())
    p.set_mempolicy(MPOL_BIND, [1])
    assert p.get_mempolicy() == (MPOL_BIND, frozenset({1}))
    a = p.mmap(0, 4 * P, RW, ANON)
    assert p.get_mempolicy(a, MPOL_F_ADDR) == (MPOL_DEFAULT, frozenset())   # no VMA policy
    p.mbind(a, 2 * P, MPOL_INTERLEAVE, [0, 1])
    assert p.get_mempolicy(a, MPOL_F_ADDR) == (MPOL_INTERLEAVE, frozenset({0, 1}))
    p.mbind(a + 2 * P, 2 * P, MPOL_PREFERRED, [1])
    assert p.get_mempolicy(a + 3 * P, MPOL_F_ADDR) == (MPOL_PREFERRED, frozenset({1}))
    p.mbind(a + 3 * P, P, MPOL_BIND, [0])
    p.store(a + 3 * P, b"n")
    assert p.get_mempolicy(a + 3 * P, MPOL_F_ADDR | MPOL_F_NODE)[0] == 0
    p.store(a + 2 * P, b"n")
    assert p.get_mempolicy(a + 2 * P, MPOL_F_ADDR | MPOL_F_NODE)[0] == 1
    assert p.get_mempolicy(flags=MPOL_F_MEMS_ALLOWED) == (0, frozenset({0, 1}))
    p.set_mempolicy(MPOL_INTERLEAVE, [0, 1])
    assert p.get_mempolicy(flags=MPOL_F_NODE)[0] == 0            # the next interleave node
    kernel.check()


def test_get_mempolicy_faults_the_page_in(kernel):
    p = kernel.spawn("a")
    a = p.mmap(0, P, RW, ANON)
    assert p.get_mempolicy(a, MPOL_F_ADDR | MPOL_F_NODE)[0] in (0, 1)
    assert p.mincore(a, P) == b"\x01"
    kernel.check()


def test_get_mempolicy_bad_input(kernel):
    """LTP get_mempolicy02."""
    p = kernel.spawn("a")
    a = p.mmap(0, P, RW, ANON)
    p.munmap(a, P)
    assert _errno(p.get_mempolicy, a, MPOL_F_ADDR) == errno.EFAULT
    assert _errno(p.get_mempolicy, 0, 0x100) == errno.EINVAL
    assert _errno(p.get_mempolicy, a, 0) == errno.EINVAL           # addr without MPOL_F_ADDR
    assert _errno(p.get_mempolicy, 0, MPOL_F_NODE) == errno.EINVAL  # not interleaving
    assert _errno(p.get_mempolicy, 0, MPOL_F_MEMS_ALLOWED | MPOL_F_NODE) == errno.EINVAL
    assert _errno(p.get_mempolicy, 0, 0, maxnode=1) == errno.EINVAL
    assert p.get_mempolicy(0, 0, maxnode=2) == (MPOL_DEFAULT, frozenset())


# -- RLIMIT_MEMLOCK ---------------------------------------------------------------------------------

def test_rlimit_memlock(kernel):
    """LTP mlock02/mlock201..203 as user nobody: without CAP_IPC_LOCK,
    mlock beyond the limit is ENOMEM (pages already locked count once),
    MAP_LOCKED beyond it EAGAIN, and a zero limit is EPERM."""
    p = kernel.spawn("a")
    assert p.getrlimit(RLIMIT_MEMLOCK) == (pymm.MLOCK_LIMIT, pymm.MLOCK_LIMIT)
    a = p.mmap(0, 3 * P, RW, ANON)
    p.capabilities.discard("CAP_IPC_LOCK")
    p.setrlimit(RLIMIT_MEMLOCK, (2 * P, 2 * P))
    assert _errno(p.mlock, a, 3 * P) == errno.ENOMEM
    p.mlock(a, 2 * P)
    p.mlock(a, 2 * P)                       # already locked: counted once
    assert _errno(p.mlock2, a, 3 * P) == errno.ENOMEM
    assert _errno(p.mmap, 0, P, RW, ANON | MAP_LOCKED) == errno.EAGAIN
    assert _errno(p.mlockall, MCL_CURRENT) == errno.ENOMEM
    p.munlock(a, 2 * P)
    p.mlock(a + P, 2 * P)
    assert p.mm.locked_vm == 2
    p.setrlimit(RLIMIT_MEMLOCK, (0, 2 * P))
    assert _errno(p.mlock, a, P) == errno.EPERM
    assert _errno(p.mmap, 0, P, RW, ANON | MAP_LOCKED) == errno.EPERM
    c = p.fork()
    assert c.getrlimit(RLIMIT_MEMLOCK) == (0, 2 * P) and "CAP_IPC_LOCK" not in c.capabilities
    p.capabilities.add("CAP_IPC_LOCK")      # privileged again: no limit
    p.mlock(a, 3 * P)
    kernel.check()


def test_setrlimit_bad_input(kernel):
    p = kernel.spawn("a")
    assert _errno(p.setrlimit, RLIMIT_MEMLOCK, (2 * P, P)) == errno.EINVAL
    assert _errno(p.setrlimit, 99, (P, P)) == errno.EINVAL
    assert _errno(p.getrlimit, 99) == errno.EINVAL
    assert _errno(p.setrlimit, RLIMIT_MEMLOCK, (P,)) == errno.EINVAL
    assert _errno(p.setrlimit, RLIMIT_MEMLOCK, (-1, P)) == errno.EINVAL
    p.capabilities.discard("CAP_SYS_RESOURCE")
    assert _errno(p.setrlimit, RLIMIT_MEMLOCK, (P, pymm.RLIM_INFINITY)) == errno.EPERM
    p.setrlimit(RLIMIT_MEMLOCK, (P, P))                        # lowering is fine
    assert p.getrlimit(RLIMIT_MEMLOCK) == (P, P)


# -- vm.max_map_count ------------------------------------------------------------------------------

def test_max_map_count(kernel):
    """LTP mem/tunable/max_map_count: mmap fails with ENOMEM once the
    process has more than vm.max_map_count mappings; splits that would go
    beyond it fail too."""
    assert kernel.sysctl("vm.max_map_count") == pymm.DEFAULT_MAX_MAP_COUNT
    kernel.sysctl("vm.max_map_count", 6)
    p = kernel.spawn("a")
    got = []
    with pytest.raises(OSError) as e:
        for i in range(20):    # alternate protections so neighbours never merge
            got.append(p.mmap(0, 3 * P, PROT_READ if i % 2 else RW, ANON))
    assert e.value.errno == errno.ENOMEM
    assert p.mm.map_count == 7 == len(got)         # do_mmap refuses once map_count > max
    b0 = p.brk(0)
    assert p.brk(b0 + P) == b0                     # brk cannot add a VMA either
    a = got[0]
    assert _errno(p.mprotect, a + P, P, PROT_READ) == errno.ENOMEM
    assert _errno(p.munmap, a + P, P) == errno.ENOMEM
    assert _errno(p.mlock, a + P, P) == errno.ENOMEM
    assert _errno(p.madvise, a + P, P, pymm.MADV_DONTFORK) == errno.ENOMEM
    p.munmap(a, P)                                 # an edge: no new VMA, allowed
    p.munmap(got[1], 3 * P)
    assert p.mm.map_count == 6
    assert _errno(p.mprotect, a + P, P, PROT_READ) == errno.ENOMEM   # map_count >= max
    p.munmap(got[2], 3 * P)
    p.mprotect(a + P, P, PROT_READ)                # room for one split now
    assert p.mm.map_count == 6
    kernel.check()


def test_max_map_count_mbind_and_splits_that_change_nothing(kernel):
    """Issue 16: mbind's splits (vma_modify_policy) are refused with ENOMEM
    at vm.max_map_count too, before anything changes; a call that leaves a
    VMA as it is (same policy, same protection, already locked, already
    DONTFORK) does not split it, so it succeeds at the limit, as in Linux
    (mbind_range's mpol_equal, mprotect_fixup's and mlock_fixup's
    newflags == oldflags, madvise_update_vma)."""
    p = kernel.spawn("a")
    a = p.mmap(0, 3 * P, RW, ANON)
    b = p.mmap(0, 3 * P, PROT_READ, ANON)
    kernel.sysctl("vm.max_map_count", p.mm.map_count)
    n = p.mm.map_count
    assert _errno(p.mbind, a + P, P, MPOL_BIND, [0]) == errno.ENOMEM
    assert _errno(p.mbind, a, P, MPOL_BIND, [0]) == errno.ENOMEM        # one split: map_count >= max
    assert p.mm.map_count == n and p.get_mempolicy(a + P, MPOL_F_ADDR)[0] == MPOL_DEFAULT
    p.mbind(a + P, P, MPOL_DEFAULT, None)             # the policy it has: nothing to split
    p.mprotect(a + P, P, RW)                          # the protection it has
    p.mprotect(b + P, P, PROT_READ)
    p.madvise(a + P, P, pymm.MADV_DOFORK)             # not DONTFORK: nothing to clear
    p.munlock(a + P, P)                               # not locked: nothing to unlock
    assert p.mm.map_count == n
    kernel.sysctl("vm.max_map_count", n + 2)
    p.mbind(a + P, P, MPOL_BIND, [0])                 # two splits: allowed now
    assert p.mm.map_count == n + 2
    assert p.get_mempolicy(a + P, MPOL_F_ADDR) == (MPOL_BIND, {0})
    kernel.check()


def test_sysctl_bad_input(kernel):
    with pytest.raises(ValueError, match="unknown name"):
        kernel.sysctl("vm.nope")
    assert _errno(kernel.sysctl, "vm.max_map_count", -1) == errno.EINVAL
    assert kernel.sysctl("vm.max_map_count") == pymm.DEFAULT_MAX_MAP_COUNT


# -- MADV_COLD / MADV_PAGEOUT -------------------------------------------------------------------------

def test_madv_pageout_swaps_private_pages_out(kernel):
    """LTP madvise11-ish: MADV_PAGEOUT reclaims the range now; the data comes
    back from swap; a page another process maps too is left alone."""
    p = kernel.spawn("a")
    a = p.mmap(0, 3 * P, RW, ANON)
    for i in range(3):
        p.store(a + i * P, bytes([i + 1]) * 8)
    c = p.fork()
    p.store(a + P, b"\x09" * 8)            # page 1 is the parent's own again (COW)
    m0 = kernel.meminfo()
    assert p.madvise(a, 3 * P, MADV_PAGEOUT) == 0
    m1 = kernel.meminfo()
    assert m0["SwapFree"] - m1["SwapFree"] == 4          # only page 1 went to swap
    assert p.mincore(a, 3 * P) == bytes([1, 0, 1])
    assert p.load(a + P, 8) == b"\x09" * 8 and c.load(a + P, 8) == b"\x02" * 8
    c.exit()
    kernel.check()


def test_madv_cold_makes_pages_reclaim_first(kernel):
    p = kernel.spawn("a")
    a = p.mmap(0, 8 * P, RW, ANON)
    for i in range(8):
        p.store(a + i * P, b"c")
    assert p.madvise(a + 5 * P, P, MADV_COLD) == 0
    assert kernel.reclaim(1) == 1
    assert p.mincore(a, 8 * P) == bytes([1, 1, 1, 1, 1, 0, 1, 1])
    assert p.load(a + 5 * P, 1) == b"c"
    kernel.check()


def test_madv_cold_pageout_bad_input(kernel):
    p = kernel.spawn("a")
    a = p.mmap(0, 2 * P, RW, ANON)
    h = p.mmap(0, HP, RW, ANON | MAP_HUGETLB)
    p.mlock(a, P)
    for adv in (MADV_COLD, MADV_PAGEOUT):
        assert _errno(p.madvise, a, P, adv) == errno.EINVAL       # can_madv_lru_vma: locked
        assert _errno(p.madvise, h, HP, adv) == errno.EINVAL      # hugetlb
        assert _errno(p.madvise, a + P, 4 * P, adv) == errno.ENOMEM
    kernel.check()


# -- MADV_WIPEONFORK / MADV_KEEPONFORK ------------------------------------------------------------

def test_wipeonfork(kernel):
    """LTP madvise08-ish and the man page: the child sees zeros in a
    WIPEONFORK range (and so does its child: the flag is inherited); the
    parent keeps its data; KEEPONFORK undoes it."""
    p = kernel.spawn("a")
    a = p.mmap(0, 4 * P, RW, ANON)
    for i in range(4):
        p.store(a + i * P, b"w" * 8)
    assert p.madvise(a + P, 2 * P, MADV_WIPEONFORK) == 0
    c = p.fork()
    assert [c.load(a + i * P, 8) for i in range(4)] == [b"w" * 8, bytes(8), bytes(8), b"w" * 8]
    c.store(a + P, b"c")
    assert p.load(a + P, 8) == b"w" * 8
    g = c.fork()
    assert g.load(a + P, 1) == b"\x00"
    assert p.madvise(a, 4 * P, MADV_KEEPONFORK) == 0
    c2 = p.fork()
    assert c2.load(a + P, 8) == b"w" * 8
    for t in (c, g, c2):
        t.exit()
    kernel.check()


def test_wipeonfork_bad_input(kernel):
    f = kernel.create_file("f", P)
    p = kernel.spawn("a")
    s = p.mmap(0, P, RW, MAP_SHARED | MAP_ANONYMOUS)
    m = p.mmap(0, P, RW, MAP_PRIVATE, fd=f)
    h = p.mmap(0, HP, RW, ANON | MAP_HUGETLB)
    for addr, n in ((s, P), (m, P), (h, HP)):
        assert _errno(p.madvise, addr, n, MADV_WIPEONFORK) == errno.EINVAL
    assert p.madvise(s, P, MADV_KEEPONFORK) == 0
    p.exit()
    kernel.check()
