"""Bad input for every system call (Hypothesis).

Each test builds one process with a fixed layout (below), then lets
Hypothesis generate calls that have exactly one thing wrong with them.  For
every generated call: it raises OSError with the errno the man page gives,
the state is unchanged (VMAs, page tables, folio contents, counters,
/proc/meminfo, file sizes and page caches, findings), and ``k.check()``
finds nothing.

Hypothesis is kept deterministic: derandomize=True, no example database.
The examples share one kernel on purpose -- a failed call must leave it as it
found it, so the next example starts from the same state; the snapshot
comparison checks exactly that.

The cases that once disagreed with Linux are also pinned one by one at the
end of this module (test_linux_errno_regressions).
"""
import errno

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pymm
from pymm import (FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, MADV_DONTNEED, MADV_NORMAL,
                  MADV_POPULATE_READ, MADV_POPULATE_WRITE, MADV_REMOVE, MAP_ANONYMOUS, MAP_FIXED,
                  MAP_FIXED_NOREPLACE, MAP_LOCKED, MAP_NORESERVE, MAP_POPULATE, MAP_PRIVATE,
                  MAP_SHARED, MAP_SHARED_VALIDATE, MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT,
                  MLOCK_ONFAULT, MMAP_MIN_ADDR, PAGE_SIZE, PROT_EXEC, PROT_NONE, PROT_READ,
                  PROT_WRITE, TASK_SIZE)
from pymm.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from pymm.mm.pgtable import PteTable

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
MAX_LFS_FILESIZE = (1 << 63) - 1

SETTINGS = settings(derandomize=True, max_examples=50, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

# -- the fixed layout ----------------------------------------------------------------------
BASE = 0x1000_0000
RW_A = BASE                # 8 pages RW private anon, written
HOLE_A = BASE + 8 * P      # 8 pages never mapped
RO_A = BASE + 16 * P       # 4 pages PROT_READ private anon
LK_A = BASE + 20 * P       # 4 pages RW private anon, mlocked
SH_A = BASE + 24 * P       # 4 pages MAP_SHARED of file "f", written
PF_A = BASE + 28 * P       # 4 pages MAP_PRIVATE of file "f"
NONE_A = BASE + 32 * P     # 2 pages PROT_NONE
END_A = BASE + 34 * P      # unmapped above
MAPPED = (RW_A, RO_A, LK_A, SH_A, PF_A, NONE_A)


class World:
    def __init__(self, k):
        self.k = k
        self.f = k.create_file("f", 8 * P)
        p = self.p = k.spawn("victim")
        fixed = ANON | MAP_FIXED
        p.mmap(RW_A, 8 * P, RW, fixed)
        p.store(RW_A, bytes(range(256)) * (8 * P // 256))
        p.mmap(RO_A, 4 * P, PROT_READ, fixed)
        p.load(RO_A, 4 * P)
        p.mmap(LK_A, 4 * P, RW, fixed)
        p.mlock(LK_A, 4 * P)
        p.mmap(SH_A, 4 * P, RW, MAP_SHARED | MAP_FIXED, fd=self.f)
        p.store(SH_A, b"shared" * 1000)
        p.mmap(PF_A, 4 * P, RW, MAP_PRIVATE | MAP_FIXED, fd=self.f, offset=4 * P)
        p.store(PF_A + P, b"private copy")
        p.mmap(NONE_A, 2 * P, PROT_NONE, fixed)
        p.brk(p.brk(0) + 2 * P)
        p.store(p.brk(0) - P, b"heap")
        assert k.check() == [] and k.findings() == []


def snapshot(w):
    """Everything a failed call must leave alone."""
    k, p = w.k, w.p
    mm = p.mm
    mmap_read_lock(mm)
    try:
        vmas = [(v.vm_start, v.vm_end, v.vm_flags, v.vm_pgoff, id(v.vm_file), id(v.anon_vma))
                for v in mm.mm_mt.all()]
        ptes = []
        for key, pmd in sorted(mm.pgd.items()):
            for i, pt in enumerate(pmd.entries):
                if isinstance(pt, PteTable):
                    base = (key << 30) + (i << 21)
                    for j, e in enumerate(pt.ptes):
                        if e is not None:
                            ptes.append((base + (j << 12), id(e), pt.bits[j], e._refcount,
                                         e._mapcount, e.flags, bytes(e.data or b"")))
    finally:
        mmap_read_unlock(mm)
    files = [(f.name, f.size, sorted((i, id(fo)) for i, fo in f.mapping.i_pages.items()))
             for f in k.files.values()]
    return {
        "vmas": vmas, "ptes": ptes, "files": files, "meminfo": k.meminfo(),
        "mm": (mm.brk, mm.start_brk, mm.def_flags, mm.locked_vm, mm.map_count,
               [mm.get_mm_counter(i) for i in range(4)], mm.pgtables_bytes.sum()),
        "findings": len(k.findings()), "processes": [x.pid for x in k.processes()],
    }


w_file = object()      # in a case's arguments: stands for the world's file


def expect_failure(w, case):
    """Run one bad call; it must fail with the case's errno and change nothing."""
    label, target, name, args, want = case
    obj = w.p if target == "p" else w.f
    args = tuple(w.f if a is w_file else a for a in args)
    before = snapshot(w)
    with pytest.raises(OSError) as ei:
        getattr(obj, name)(*args)
    assert ei.value.errno == want, (
        f"{label}: {name}{args!r} failed with {errno.errorcode.get(ei.value.errno)}, "
        f"expected {errno.errorcode[want]}")
    assert not isinstance(ei.value, (pymm.SegmentationFault, pymm.BusError))
    after = snapshot(w)
    for key in before:
        assert after[key] == before[key], f"{label}: {name}{args!r} changed {key}"
    assert w.k.check() == []


def run_cases(kernel, cases):
    w = World(kernel)

    @SETTINGS
    @given(cases)
    def run(case):
        expect_failure(w, case)
    run()


# -- building blocks ---------------------------------------------------------------------

def C(label, name, want, *args, target="p"):
    return (label, target, name, tuple(args), want)


not_int = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=3),
                    st.none(), st.booleans(), st.just(b"\x00"), st.just([4096]))
mapped = st.sampled_from(MAPPED)
page_count = st.integers(1, 8)
unaligned = st.tuples(mapped, st.integers(1, P - 1)).map(sum)
neg = st.integers(-(1 << 64), -1)
neg_pages = st.integers(1, 1 << 40).map(lambda n: -n * P)
known_prot = st.sampled_from([PROT_NONE, PROT_READ, RW, PROT_READ | PROT_EXEC])
bad_prot = st.tuples(known_prot, st.integers(3, 31).map(lambda b: 1 << b)).map(lambda t: t[0] | t[1])
# ranges that contain a hole: partly mapped, or not mapped at all
holey = st.sampled_from([(RW_A + 6 * P, 4 * P), (HOLE_A, P), (HOLE_A - P, 9 * P),
                         (NONE_A, 4 * P), (END_A, 16 * P), (RW_A, 34 * P), (P * 16, P)])
past_task = st.tuples(mapped, st.integers(TASK_SIZE, 1 << 64)).map(lambda t: (t[0], t[1]))
# madvise values Linux does not define at all
bad_advice = st.one_of(st.sampled_from([5, 6, 7]), st.integers(26, 99), st.integers(104, 1 << 31),
                       st.integers(-(1 << 31), -1))
bad_type = st.sampled_from([0] + list(range(4, 16)))
# flag bits Linux does not define on x86-64 (0x40 is MAP_32BIT, 0x80 MAP_ABOVE4G):
# MAP_SHARED_VALIDATE must refuse them
unknown_map_flag = st.sampled_from([0x200, 0x400, 0x200000, 0x400000, 0x800000, 0x1000000,
                                    0x2000000])
other_map_flags = st.sampled_from([0, MAP_POPULATE, MAP_NORESERVE, MAP_LOCKED, MAP_POPULATE | MAP_LOCKED])


def mmap_cases():
    fn = "mmap"
    return st.one_of(
        st.builds(lambda a: C("length 0", fn, errno.EINVAL, a, 0, RW, ANON), st.sampled_from([0, HOLE_A])),
        st.builds(lambda n: C("negative length", fn, errno.EINVAL, 0, n, RW, ANON), neg),
        st.builds(lambda n: C("length beyond TASK_SIZE", fn, errno.ENOMEM, 0, n, RW, ANON),
                  st.integers(TASK_SIZE + 1, 1 << 64)),
        st.builds(lambda t, o: C("no MAP_SHARED/PRIVATE type", fn, errno.EINVAL, 0, P, RW,
                                 t | o | MAP_ANONYMOUS), bad_type, other_map_flags),
        st.builds(lambda pr: C("unknown prot bits", fn, errno.EINVAL, 0, P, pr, ANON), bad_prot),
        st.builds(lambda a: C("MAP_FIXED unaligned", fn, errno.EINVAL, a, P, RW, ANON | MAP_FIXED),
                  st.tuples(st.sampled_from([HOLE_A, END_A]), st.integers(1, P - 1)).map(sum)),
        st.builds(lambda a: C("MAP_FIXED below mmap_min_addr", fn, errno.EPERM, a, P, RW,
                              ANON | MAP_FIXED), st.integers(0, MMAP_MIN_ADDR // P - 1).map(lambda i: i * P)),
        st.builds(lambda a: C("MAP_FIXED beyond TASK_SIZE", fn, errno.ENOMEM, a, 4 * P, RW,
                              ANON | MAP_FIXED), st.integers(1, 3).map(lambda i: TASK_SIZE - i * P)),
        st.builds(lambda an, fx: C("MAP_FIXED_NOREPLACE over a mapping", fn, errno.EEXIST, an[0],
                                   an[1] * P, RW, ANON | MAP_FIXED_NOREPLACE | fx),
                  st.one_of(st.tuples(st.sampled_from([RW_A, RO_A + P, NONE_A + P]), page_count),
                            st.tuples(st.just(HOLE_A + 7 * P), st.integers(2, 8))),  # reaches RO_A
                  st.sampled_from([0, MAP_FIXED])),          # NOREPLACE wins over MAP_FIXED
        st.builds(lambda b: C("MAP_SHARED_VALIDATE with an unknown flag", fn, errno.EOPNOTSUPP, 0, P,
                              RW, MAP_SHARED_VALIDATE | b, w_file), unknown_map_flag),
        st.builds(lambda o: C("unaligned offset", fn, errno.EINVAL, 0, P, RW, MAP_SHARED, w_file, o),
                  st.integers(1, 64 * P).filter(lambda o: o % P)),
        st.builds(lambda o: C("negative offset", fn, errno.EINVAL, 0, P, RW, ANON, None, o), neg),
        st.builds(lambda fd: C("file mapping without a file", fn, errno.EBADF, 0, P, RW, MAP_SHARED, fd),
                  st.sampled_from([None, 3, "f"])),
        st.builds(lambda i, v: C(f"non-int argument {i}", fn, errno.EINVAL,
                                 *[v if j == i else x for j, x in enumerate((0, P, RW, ANON))]),
                  st.integers(0, 3), not_int),
        st.builds(lambda v: C("non-int offset", fn, errno.EINVAL, 0, P, RW, ANON, None, v), not_int),
    )


def test_mmap_bad_input(kernel):
    run_cases(kernel, mmap_cases())


def range_cases(fn, *, align_required, negative_errno, zero_is_ok=True, extra=()):
    """Cases shared by the calls that take (addr, length, ...) plus ``extra``
    trailing arguments that are valid."""
    ex = tuple(extra)
    cases = [
        st.builds(lambda v: C("non-int addr", fn, errno.EINVAL, v, P, *ex), not_int),
        st.builds(lambda v: C("non-int length", fn, errno.EINVAL, RW_A, v, *ex), not_int),
        st.builds(lambda a, n: C("negative length", fn, negative_errno, a, n, *ex), mapped, neg_pages),
    ]
    if align_required:
        cases.append(st.builds(lambda a, n: C("unaligned addr", fn, errno.EINVAL, a, n * P, *ex),
                               unaligned, page_count))
    return cases


def test_munmap_bad_input(kernel):
    fn = "munmap"
    run_cases(kernel, st.one_of(
        *range_cases(fn, align_required=True, negative_errno=errno.EINVAL),
        st.builds(lambda t: C("range beyond TASK_SIZE", fn, errno.EINVAL, *t), past_task),
        st.builds(lambda a: C("negative addr", fn, errno.EINVAL, a, P), neg_pages),
        st.builds(lambda a: C("length 0", fn, errno.EINVAL, a, 0), st.sampled_from(MAPPED + (HOLE_A,))),
    ))


def test_mprotect_bad_input(kernel):
    fn = "mprotect"
    run_cases(kernel, st.one_of(
        # a negative length is a huge size_t: end <= start, which mprotect reports as ENOMEM
        *range_cases(fn, align_required=True, negative_errno=errno.ENOMEM, extra=(PROT_READ,)),
        st.builds(lambda a, pr: C("unknown prot bits", fn, errno.EINVAL, a, P, pr), mapped, bad_prot),
        st.builds(lambda v: C("non-int prot", fn, errno.EINVAL, RW_A, P, v), not_int),
        st.builds(lambda r, pr: C("range with a hole", fn, errno.ENOMEM, *r, pr), holey, known_prot),
        st.builds(lambda t: C("range beyond TASK_SIZE", fn, errno.ENOMEM, *t, PROT_READ), past_task),
    ))


@pytest.mark.parametrize("fn,extra", [("mlock", ()), ("munlock", ()), ("mlock2", (0,)),
                                      ("mlock2", (MLOCK_ONFAULT,))])
def test_mlock_family_bad_input(kernel, fn, extra):
    cases = range_cases(fn, align_required=False, negative_errno=errno.EINVAL, extra=extra) + [
        st.builds(lambda r: C("range with a hole", fn, errno.ENOMEM, *r, *extra), holey),
        st.builds(lambda t: C("range beyond TASK_SIZE", fn, errno.ENOMEM, *t, *extra), past_task),
    ]
    if fn == "mlock2":
        cases += [
            st.builds(lambda a, fl: C("unknown mlock2 flags", fn, errno.EINVAL, a, P, fl), mapped,
                      st.integers(1, 31).map(lambda b: 1 << b)),
            st.builds(lambda v: C("non-int flags", fn, errno.EINVAL, RW_A, P, v), not_int),
        ]
    run_cases(kernel, st.one_of(*cases))


def test_mlockall_bad_input(kernel):
    fn = "mlockall"
    valid = MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT
    run_cases(kernel, st.one_of(
        st.just(C("no flags", fn, errno.EINVAL, 0)),
        st.just(C("MCL_ONFAULT alone", fn, errno.EINVAL, MCL_ONFAULT)),
        st.builds(lambda b, ok: C("unknown bits", fn, errno.EINVAL, (1 << b) | ok),
                  st.integers(3, 40), st.integers(0, valid)),
        st.builds(lambda v: C("negative", fn, errno.EINVAL, v), neg),
        st.builds(lambda v: C("non-int flags", fn, errno.EINVAL, v), not_int),
    ))


def test_madvise_bad_input(kernel):
    fn = "madvise"
    any_advice = st.sampled_from([MADV_NORMAL, MADV_DONTNEED, MADV_POPULATE_READ,
                                  MADV_POPULATE_WRITE, pymm.MADV_WILLNEED])
    run_cases(kernel, st.one_of(
        *range_cases(fn, align_required=True, negative_errno=errno.EINVAL, extra=(MADV_NORMAL,)),
        st.builds(lambda a, adv: C("unknown advice", fn, errno.EINVAL, a, P, adv), mapped, bad_advice),
        st.builds(lambda v: C("non-int advice", fn, errno.EINVAL, RW_A, P, v), not_int),
        st.builds(lambda r, adv: C("range with a hole", fn, errno.ENOMEM, *r, adv), holey, any_advice),
        st.builds(lambda n: C("MADV_DONTNEED on mlocked pages", fn, errno.EINVAL, LK_A, n * P,
                              MADV_DONTNEED), st.integers(1, 4)),
        st.builds(lambda a: C("MADV_POPULATE_WRITE without write permission", fn, errno.EINVAL,
                              a, P, MADV_POPULATE_WRITE), st.sampled_from([RO_A, NONE_A])),
        st.just(C("MADV_POPULATE_READ on PROT_NONE", fn, errno.EINVAL, NONE_A, P, MADV_POPULATE_READ)),
        st.builds(lambda a: C("MADV_REMOVE on anonymous memory", fn, errno.EINVAL, a, P, MADV_REMOVE),
                  st.sampled_from([RW_A, RO_A])),
        st.just(C("MADV_REMOVE on mlocked memory", fn, errno.EINVAL, LK_A, P, MADV_REMOVE)),
        st.builds(lambda n: C("MADV_REMOVE on a MAP_PRIVATE file mapping", fn, errno.EACCES, PF_A,
                              n * P, MADV_REMOVE), st.integers(1, 4)),
    ))


def test_file_bad_input(kernel):
    run_cases(kernel, st.one_of(
        st.builds(lambda n: C("negative size", "ftruncate", errno.EINVAL, n, target="f"), neg),
        st.builds(lambda v: C("non-int size", "ftruncate", errno.EINVAL, v, target="f"), not_int),
        st.builds(lambda o, n: C("negative offset", "fallocate", errno.EINVAL, 0, o, n, target="f"),
                  neg, st.integers(1, 8 * P)),
        st.builds(lambda n: C("length <= 0", "fallocate", errno.EINVAL, 0, 0, n, target="f"),
                  st.integers(-(1 << 64), 0)),
        st.builds(lambda m: C("unsupported mode", "fallocate", errno.EOPNOTSUPP, m, 0, P, target="f"),
                  st.integers(2, 31).map(lambda b: 1 << b).filter(lambda m: m != FALLOC_FL_PUNCH_HOLE)),
        st.just(C("PUNCH_HOLE without KEEP_SIZE", "fallocate", errno.EOPNOTSUPP,
                  FALLOC_FL_PUNCH_HOLE, 0, P, target="f")),
        st.builds(lambda o, m: C("offset+len beyond the maximum file size", "fallocate", errno.EFBIG,
                                 m, o, MAX_LFS_FILESIZE - o + 1, target="f"),
                  st.integers(0, MAX_LFS_FILESIZE), st.sampled_from([0, FALLOC_FL_KEEP_SIZE,
                                                                     FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE])),
        st.builds(lambda i, v: C(f"non-int fallocate argument {i}", "fallocate", errno.EINVAL,
                                 *[v if j == i else x for j, x in enumerate((FALLOC_FL_KEEP_SIZE, 0, P))],
                                 target="f"), st.integers(0, 2), not_int),
    ))


def test_brk_bad_values_fail_and_change_nothing(kernel):
    """brk(2) the system call does not fail with an errno: it returns the
    current break unchanged.  Non-int values are rejected with EINVAL."""
    w = World(kernel)
    p = w.p
    cur = p.brk(0)
    start = p.mm.start_brk
    guard = (cur + 5 * P) & ~(P - 1)            # a mapping the heap would run into
    p.mmap(guard, P, PROT_READ, ANON | MAP_FIXED)

    @SETTINGS
    @given(st.one_of(st.integers(-(1 << 64), start - 1),           # below the heap's start
                     st.integers(TASK_SIZE + 1, 1 << 65),           # beyond user space
                     st.integers(guard - P + 1, TASK_SIZE)))        # into the guard mapping
    def run(v):
        before = snapshot(w)
        assert p.brk(v) == cur
        assert snapshot(w) == before
        assert w.k.check() == []
    run()

    @SETTINGS
    @given(not_int)
    def run_types(v):
        expect_failure(w, ("non-int brk", "p", "brk", (v,), errno.EINVAL))
    run_types()


def test_calls_after_exit_fail_with_esrch(kernel):
    w = World(kernel)
    w.p.exit()
    for name, args in (("mmap", (0, P, RW, ANON)), ("munmap", (RW_A, P)), ("brk", (0,)),
                       ("mlockall", (MCL_CURRENT,)), ("fork", ()), ("exit", ()),
                       ("load", (RW_A, 1)), ("store", (RW_A, b"x"))):
        with pytest.raises(OSError) as ei:
            getattr(w.p, name)(*args)
        assert ei.value.errno == errno.ESRCH, name
    assert kernel.check() == []


# -- pinned: cases where pymm once disagreed with Linux ------------------------------------------

REGRESSIONS = [
    C("munmap length 0 (munmap(2): EINVAL since 2.6.12)", "munmap", errno.EINVAL, RW_A, 0),
    C("mprotect negative length (end <= start: ENOMEM)", "mprotect", errno.ENOMEM, RW_A, -P, PROT_READ),
    C("MAP_SHARED_VALIDATE + unknown flag (EOPNOTSUPP)", "mmap", errno.EOPNOTSUPP,
      0, P, RW, MAP_SHARED_VALIDATE | 0x800000, w_file),
    C("MAP_FIXED | MAP_FIXED_NOREPLACE over a mapping (EEXIST)", "mmap", errno.EEXIST,
      RW_A, P, RW, ANON | MAP_FIXED | MAP_FIXED_NOREPLACE),
    C("fallocate offset+len > MAX_LFS_FILESIZE (EFBIG)", "fallocate", errno.EFBIG,
      0, MAX_LFS_FILESIZE - P, 2 * P, target="f"),
    C("MADV_REMOVE on a MAP_PRIVATE file mapping (EACCES)", "madvise", errno.EACCES, PF_A, P, MADV_REMOVE),
]


@pytest.mark.parametrize("case", REGRESSIONS, ids=[c[0].split(" (")[0] for c in REGRESSIONS])
def test_linux_errno_regressions(kernel, case):
    expect_failure(World(kernel), case)


# -- bugs found by these tests, since fixed -----------------------------------------------------

@pytest.mark.parametrize("extra", [0, 0x800000], ids=["known flags", "unknown flag"])
def test_map_shared_validate_anonymous_is_einval(kernel, extra):
    expect_failure(World(kernel), C("MAP_SHARED|MAP_PRIVATE anonymous", "mmap", errno.EINVAL,
                                    0, P, RW, MAP_SHARED | MAP_PRIVATE | MAP_ANONYMOUS | extra))


def test_map_sync_on_tmpfs_is_eopnotsupp(kernel):
    expect_failure(World(kernel), C("MAP_SHARED_VALIDATE|MAP_SYNC on tmpfs", "mmap", errno.EOPNOTSUPP,
                                    0, P, RW, MAP_SHARED_VALIDATE | pymm.MAP_SYNC, w_file))
