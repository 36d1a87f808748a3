"""The populate variants of SCENARIOS.md section A, under the controlled
scheduler.

Three programs, each a populating thread and a racer in the same mm with
VM_LOCKED in def_flags (mlockall(MCL_FUTURE)):

- brk: the grower extends the heap (do_brk_flags, then populate); the racer
  shrinks it back (brk shrink frees the VMA under mmap_write_lock).
- mmap: the mapper creates a VM_LOCKED mapping at a fixed address (populated
  because of def_flags); the racer munmaps it.
- split: the grower extends the heap; the racer mprotects one page of it,
  splitting the VMA (the populating thread's pointer survives but now covers
  less than the range it populates).

``drop-retake`` must be caught by a seeded exploration -- a use-after-free of
the VMA in populate_vma_page_range for brk and mmap, the VM_BUG_ON_VMA range
assertion for the split -- and replaying the failing schedule must give the
same failure.  ``downgrade`` and ``revalidate`` must run clean over many
schedules, with every invariant check passing after each.
"""
import errno

import pytest

import pymm
from pymm import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MCL_FUTURE, PAGE_SIZE, PROT_READ, PROT_WRITE
from pymm.mm.mm_types import VM_LOCKED
from pymm.mm.mmap_lock import mmap_read_unlock, mmap_write_lock, mmap_write_unlock
from pymm.sched import explore, replay

from .test_syscalls import pte_folio, vmas

P = PAGE_SIZE
FIXED_A = 0x2000_0000
UAF_TITLE = "BUG: KASAN: use-after-free in populate_vma_page_range"
CLEAN_SCHEDULES = 200


def brk_program(variant):
    def setup():
        k = pymm.Kernel(nodes=1, pages_per_node=256, variants={"populate": variant})
        p = k.spawn("heap")
        p.mlockall(MCL_FUTURE)
        return k, p, p.brk(0)

    def grower(st):
        k, p, base = st
        assert p.brk(base + 4 * P) == base + 4 * P

    def shrinker(st):
        k, p, base = st
        assert p.brk(base) == base

    return setup, [grower, shrinker]


def mmap_program(variant):
    def setup():
        k = pymm.Kernel(nodes=1, pages_per_node=256, variants={"populate": variant})
        p = k.spawn("mapper")
        p.mlockall(MCL_FUTURE)
        return k, p, FIXED_A

    def mapper(st):
        k, p, a = st
        assert p.mmap(a, 4 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED) == a

    def unmapper(st):
        k, p, a = st
        p.munmap(a, 4 * P)

    return setup, [mapper, unmapper]


def split_program(variant):
    setup, (grower, _) = brk_program(variant)

    def splitter(st):
        k, p, base = st
        try:
            p.mprotect(base + P, P, PROT_READ)
        except OSError as e:             # ran before the heap grew: nothing mapped there
            assert e.errno == errno.ENOMEM

    return setup, [grower, splitter]


def check(st):
    """After both threads: the invariants hold (mlock accounting included),
    nothing was reported, every page of a VM_LOCKED VMA is populated, and
    exit returns every page."""
    k, p, _ = st
    assert k.check() == []
    assert k.findings() == []
    for s, e, fl in vmas(p):
        if fl & VM_LOCKED:
            for a in range(s, e, P):
                assert pte_folio(p, a) is not None, f"{a:#x} in a VM_LOCKED VMA is not populated"
    p.exit()
    assert k.meminfo()["MemFree"] == k.meminfo()["MemTotal"]
    assert k.findings() == []


PROGRAMS = {"brk": brk_program, "mmap": mmap_program, "split": split_program}
# what drop-retake is caught as, per program
CAUGHT_AS = {"brk": ("use-after-free", UAF_TITLE), "mmap": ("use-after-free", UAF_TITLE),
             "split": ("assertion", "kernel BUG at mm/gup.c: VM_BUG_ON_VMA")}


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_drop_retake_is_caught_and_replays(program):
    setup, threads = PROGRAMS[program]("drop-retake")
    res = explore(setup, threads, check, strategy="random", seed=0, max_schedules=200)
    f = res.failure
    kind, title = CAUGHT_AS[program]
    assert f is not None, f"drop-retake ran {res.schedules_run} schedules without a finding"
    assert f.kind == kind, f.message
    assert f.message.startswith(title), f.message
    if kind == "use-after-free":
        assert "vm_area_struct" in f.message and "Freed by task " in f.message
    assert f.schedule and f.token
    again = replay(setup, threads, f.schedule, check)
    assert again is not None, "replaying the failing schedule ran clean"
    assert (again.kind, again.message.splitlines()[0]) == (f.kind, f.message.splitlines()[0])
    assert replay(setup, threads, f.token, check).kind == f.kind     # the token form too


@pytest.mark.parametrize("variant", ["downgrade", "revalidate"])
@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_fixed_variants_run_clean(program, variant):
    setup, threads = PROGRAMS[program](variant)
    res = explore(setup, threads, check, strategy="random", seed=0, max_schedules=CLEAN_SCHEDULES)
    assert res.failure is None, res.failure.message
    assert res.schedules_run == CLEAN_SCHEDULES


@pytest.mark.parametrize("variant", ["downgrade", "revalidate"])
def test_fixed_variants_clean_under_pct(variant):
    setup, threads = brk_program(variant)
    res = explore(setup, threads, check, strategy="pct", seed=1, max_schedules=100)
    assert res.failure is None, res.failure.message


# -- the validator and the downgrade variant ----------------------------------------------------

def _populate_everything(k):
    p = k.spawn("p")
    p.mlockall(MCL_FUTURE)
    base = p.brk(0)
    p.brk(base + 8 * P)
    a = p.mmap(0, 8 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    p.mmap(0, 4 * P, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS)
    f = k.create_file("f", 4 * P)
    p.mmap(0, 4 * P, PROT_READ | PROT_WRITE, pymm.MAP_SHARED, fd=f)
    p.store(a, b"x")
    assert k.meminfo()["Mlocked"] == 4 * (8 + 8 + 4)
    return p


@pytest.mark.parametrize("variant", ["drop-retake", "downgrade", "revalidate"])
def test_validator_quiet_for_populate_variants(lockdep, variant):
    """Single-threaded, every variant is correct, and the validator must agree:
    in particular ``downgrade`` populates with &locked under the *read* lock it
    got from mmap_write_downgrade, which is what populate_vma_page_range
    requires."""
    k = pymm.Kernel(variants={"populate": variant})
    p = _populate_everything(k)
    p.exit()
    assert k.check() == []
    assert k.findings() == [] and lockdep.reports() == []


@pytest.mark.pymm_expect("assertion")
def test_validator_flags_populate_with_locked_under_write_lock(kernel, lockdep):
    """The rule the downgrade variant satisfies, shown to bite: populating
    with &locked while mmap_lock is held for *write* is reported."""
    from pymm.mm.gup import populate_vma_page_range
    k = kernel
    p = k.spawn("p")
    a = p.mmap(0, 4 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)

    def bad_caller():
        mm = p.mm
        mmap_write_lock(mm)
        vma = mm.mm_mt.vma_lookup(a)
        locked = [1]
        populate_vma_page_range(vma, a, a + 4 * P, locked)
        if locked[0]:
            mmap_write_unlock(mm)
        else:                                        # pragma: no cover - anon faults do not retry
            mmap_read_unlock(mm)
    k.run_syscall(bad_caller)
    found = [f for f in k.findings() if f.kind == "assertion"]
    assert len(found) == 1
    assert "populate_vma_page_range with &locked under mmap_write_lock" in found[0].title
    assert "mmap_write_downgrade" in found[0].text
    assert k.check() == []
