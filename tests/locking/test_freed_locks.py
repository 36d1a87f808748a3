"""debug_check_no_locks_freed: freeing an object (kasan_poison, pymm's
kfree) whose embedded lock is still held.  The freeing task's own held
lock is the kernel's "WARNING: held lock freed!"; a lock another task holds
or is acquiring is pymm's own extension, off with pymm's checks."""
import pytest

from pymm.debug import report as R
from pymm.debug.kasan import KasanObject, kasan_poison
from pymm.locking import RwSemaphore, lockdep


class Box(KasanObject):
    """A slab object with a lock in it."""

    KASAN_CACHE = "test_box"
    KASAN_LOCKS = ("sem",)
    __slots__ = ("sem",)

    def __init__(self, name):
        self.kasan_alloc()
        self.sem = RwSemaphore(name)


class TypesafeBox(Box):
    KASAN_TYPESAFE_BY_RCU = True
    __slots__ = ()


def kernel(pymm_checks=True):
    """A Kernel: the one frees outside any task are accounted to (and whose
    pymm_checks option they follow)."""
    from pymm import Kernel
    return Kernel(nodes=1, pages_per_node=8, pymm_checks=pymm_checks)


@pytest.fixture(autouse=True)
def clean():
    k = kernel()        # noqa: F841 (kept alive: the default kernel of this test)
    was = lockdep.is_enabled()
    lockdep.enable()
    lockdep.reset()
    prev = lockdep.configure(raise_on_report=False, stacks=True)
    yield
    lockdep.configure(**prev)
    lockdep.reset()
    if not was:
        lockdep.disable()


def titles():
    return [r.title for r in lockdep.reports()]


def test_freeing_a_lock_the_freer_holds_is_the_kernels_report():
    b = Box("freed-lock-own")
    b.sem.down_write()
    kasan_poison(b)
    (r,) = lockdep.reports()
    assert r.title == "WARNING: held lock freed!" and r.kind == "freed-held"
    assert "with a lock still held there!" in r.text and "freed-lock-own" in r.text
    assert "test_freeing_a_lock_the_freer_holds" in r.text        # the freeing stack
    assert not r.data["pymm_only"]
    object.__getattribute__(b, "sem").up_write()


def test_a_released_lock_frees_silently():
    b = Box("freed-lock-released")
    b.sem.down_read()
    b.sem.up_read()
    kasan_poison(b)
    assert titles() == []


def test_a_lock_another_task_holds(cpu1):
    b = Box("freed-lock-other")
    sem = b.sem
    cpu1(sem.down_read)
    try:
        kasan_poison(b)
    finally:
        cpu1(sem.up_read)
    (r,) = lockdep.reports()
    assert r.title == "WARNING: lock freed while another task holds it!" and r.kind == "freed-other"
    assert "cpu1" in r.text and " holds!" in r.text and r.data["pymm_only"]
    assert R.is_pymm_only(r.title)


def test_a_lock_another_task_is_acquiring():
    """lockdep counts the lock from lock_acquire on, before the attempt and
    any wait: a thread preempted there (or waiting) is reported too -- it
    goes on to take, or wake up in, freed memory."""
    from pymm.sched import replay

    def setup():
        return Box("freed-lock-acquiring")

    def free(b):
        kasan_poison(b)

    def take(b):
        b.sem.down_read()
        b.sem.up_read()

    # T1 first, preempted at its down_read's acquire; then T0 frees the box
    f = replay(setup, [free, take], [1, 0, 0, 0], lambda b: None)
    assert f is not None and f.kind == "lockdep", f and f.message
    assert "lock freed while another task holds it!" in f.message
    assert "is acquiring!" in f.message


def test_a_failed_trylock_leaves_nothing_behind(cpu1):
    """The entry parked at acquire goes when the trylock fails: a lock the
    thread merely tried once is not reported when freed later."""
    b = Box("freed-lock-trylock")
    b.sem.down_write()
    assert cpu1(b.sem.down_read_trylock) is False
    b.sem.up_write()
    kasan_poison(b)
    assert titles() == []


def test_others_are_pymm_only_and_skip_typesafe_caches(cpu1):
    for box, checks in ((Box("freed-lock-off"), False), (TypesafeBox("freed-lock-rcu"), True)):
        k = kernel(checks)      # noqa: F841 (the default kernel while it lives)
        sem = box.sem
        cpu1(sem.down_read)
        try:
            kasan_poison(box)
        finally:
            cpu1(sem.up_read)
    assert titles() == []


def test_a_page_table_freed_under_its_ptl(cpu1):
    """Page tables declare their split lock: ptlock_free runs with the
    table's free (pymm frees the two together)."""
    from pymm.mm.pgtable import PmdTable, PteTable
    for table in (PteTable(0), PmdTable(0)):
        lockdep.reset()
        ptl = table.ptl
        cpu1(ptl.lock)
        try:
            kasan_poison(table)
        finally:
            cpu1(ptl.unlock)
        (r,) = lockdep.reports()
        assert r.kind == "freed-other" and "page table" in r.text, r.text


def test_a_failed_trylock_on_a_thread_without_lockdep_state():
    """The listener that drops the parked entry copes with a thread lockdep
    has no state for (the validator switched on between its acquire and
    the failure)."""
    import threading
    out = []
    t = threading.Thread(target=lambda: out.append(lockdep._not_acquired(object(), 0)))
    t.start()
    t.join(10)
    assert out == [None]
