"""Unit tests of the validator beyond the kernel's selftest: trylock edges,
downgrade re-validation, subclasses, the chain cache, wait context, the
assertion helpers, report text, inversions across threads, de-duplication,
reset, raise_on_report, thread exit and return to user space.

Every test starts from an empty graph (``lockdep.reset()``) and uses lock
class names of its own, so classes shared by name across tests cannot leak
dependencies into each other.
"""
import json
import re
import threading

import pytest

from pymm.locking.lockdep_report import thread_label

from pymm.errors import LockdepError, LockUsageError
from pymm.locking import Mutex, RwLock, RwSemaphore, SpinLock, lockdep


@pytest.fixture(autouse=True)
def clean():
    was = lockdep.is_enabled()
    lockdep.enable()
    lockdep.reset()
    prev = lockdep.configure(raise_on_report=False, stacks=True)
    yield
    for r in lockdep.reports():     # every report's data is JSON-ready
        assert json.loads(json.dumps(r.data))["kind"] == r.kind
    lockdep.configure(**prev)
    left = lockdep.held_locks()
    lockdep.reset()
    if not was:
        lockdep.disable()
    assert not left, f"test left locks held: {left}"


def kinds():
    return [r.kind for r in lockdep.reports()]


def deps():
    return {(a, b): t for a, b, t in lockdep.dependencies()}


def run_thread(fn, name=None):
    """Run ``fn`` in a thread to completion, re-raising its exception."""
    err = []

    def body():
        try:
            fn()
        except BaseException as e:   # handed to the test thread
            err.append(e)

    t = threading.Thread(target=body, name=name)
    t.start()
    t.join(10)
    assert not t.is_alive(), "thread did not finish"
    if err:
        raise err[0]


# -- trylock ----------------------------------------------------------------------------------

def test_trylock_adds_no_edge_into_the_trylocked_lock():
    a, b = Mutex("try.A"), Mutex("try.B")
    a.lock()
    assert b.trylock()
    b.unlock()
    a.unlock()
    assert ("try.A", "try.B") not in deps()
    assert kinds() == []


def test_blocking_lock_after_trylocks_gets_edges_from_each_trylock_and_the_first_blocking_entry():
    x, a, b, c = Mutex("try2.X"), Mutex("try2.A"), Mutex("try2.B"), Mutex("try2.C")
    x.lock()
    a.lock()
    assert b.trylock()
    c.lock()
    d = deps()
    assert d[("try2.B", "try2.C")] == {"EN"}    # out of the trylocked entry
    assert d[("try2.A", "try2.C")] == {"EN"}    # and the first blocking one below it
    assert ("try2.X", "try2.C") not in d        # the walk stops there
    assert ("try2.A", "try2.B") not in d        # nothing into the trylock
    for lk in (c, b, a, x):
        lk.unlock()


def test_edge_out_of_a_trylocked_lock_closes_a_cycle():
    a, b = Mutex("try3.A"), Mutex("try3.B")
    assert a.trylock()
    b.lock()            # A -> B although A was trylocked
    b.unlock()
    a.unlock()
    b.lock()
    a.lock()            # B -> A: circular
    a.unlock()
    b.unlock()
    assert kinds() == ["circular"]


def test_failed_trylock_records_nothing():
    a, b, c = Mutex("try4.A"), Mutex("try4.B"), Mutex("try4.C")
    held, done = threading.Event(), threading.Event()

    def holder():
        b.lock()
        held.set()
        done.wait(10)
        b.unlock()

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(10)
        a.lock()
        assert not b.trylock()
        assert [h.name for h in lockdep.held_locks()] == ["try4.A"]
        c.lock()
        c.unlock()
        a.unlock()
    finally:
        done.set()
        t.join(10)
    assert set(deps()) == {("try4.A", "try4.C")}


def test_chain_key_tells_a_trylocked_entry_from_a_blocking_one():
    # Refinement over the kernel, whose hlock_id has no trylock bit: after
    # X A B (edges X->A, A->B), X A(try) B must still add X->B.
    x, a, b = Mutex("try5.X"), Mutex("try5.A"), Mutex("try5.B")
    for lk in (x, a, b):
        lk.lock()
    for lk in (b, a, x):
        lk.unlock()
    assert ("try5.X", "try5.B") not in deps()
    x.lock()
    assert a.trylock()
    b.lock()
    for lk in (b, a, x):
        lk.unlock()
    assert ("try5.X", "try5.B") in deps()


# -- downgrade ------------------------------------------------------------------------------

def test_downgrade_changes_the_entry_in_place_and_revalidates_above_it():
    s, m = RwSemaphore("dg.S"), Mutex("dg.M")
    s.down_write()
    m.lock()
    assert deps()[("dg.S", "dg.M")] == {"EN"}
    s.downgrade_write()
    held = lockdep.held_locks()
    assert [(h.name, h.read) for h in held] == [("dg.S", 1), ("dg.M", 0)]
    assert deps()[("dg.S", "dg.M")] == {"EN", "SN"}     # re-validated: S is now shared
    m.unlock()
    s.up_read()
    assert kinds() == []


def test_locks_taken_after_a_downgrade_depend_on_a_shared_holder():
    s, m = RwSemaphore("dg2.S"), Mutex("dg2.M")
    s.down_write()
    s.downgrade_write()
    m.lock()            # the chain key now has S as a read: a new chain, an S edge
    m.unlock()
    s.up_read()
    assert deps() == {("dg2.S", "dg2.M"): {"SN"}}
    assert kinds() == []


def test_downgrade_of_a_read_held_rwsem_is_reported():
    s = RwSemaphore("dg3.S")
    s.down_read()
    with pytest.raises(LockUsageError):
        s.downgrade_write()
    assert kinds() == ["bad-downgrade"]
    assert lockdep.reports()[0].title == "WARNING: downgrading a read lock"
    s.up_read()


def test_downgrade_of_an_unheld_rwsem_is_a_bad_unlock():
    s = RwSemaphore("dg4.S")
    with pytest.raises(LockUsageError):
        s.downgrade_write()
    assert kinds() == ["bad-unlock"]
    s.down_write()      # the lock is still usable
    s.up_write()


# -- subclasses ------------------------------------------------------------------------------

def test_same_class_nesting_needs_a_subclass():
    a, b = RwSemaphore("sub.inode"), RwSemaphore("sub.inode")
    a.down_write()
    b.down_write_nested(1)
    b.up_write()
    a.up_write()
    assert kinds() == []
    assert deps() == {("sub.inode", "sub.inode/1"): {"EN"}}
    with pytest.raises(LockdepError):
        lockdep.configure(raise_on_report=True)
        try:
            a.down_write()
            b.down_write()      # same class, no annotation
        finally:
            lockdep.configure(raise_on_report=False)
            a.up_write()
    assert kinds() == ["recursive"]
    assert "sub.inode" in lockdep.reports()[0].text


def test_subclass_inversion_is_circular_and_printed_with_its_subclass():
    a, b = Mutex("sub2.m"), Mutex("sub2.m")
    a.lock()
    b.lock_nested(1)    # m -> m/1
    b.unlock()
    a.unlock()
    b.lock_nested(1)
    a.lock()            # m/1 -> m
    a.unlock()
    b.unlock()
    assert kinds() == ["circular"]
    text = lockdep.reports()[0].text
    assert "(sub2.m/1)" in text and "(sub2.m)" in text


def test_subclass_out_of_range_is_refused_by_the_lock():
    with pytest.raises(LockUsageError, match="subclass"):
        Mutex("sub3.m").lock_nested(8)
    assert lockdep.held_locks() == []


# -- chain cache -------------------------------------------------------------------------------

def test_chain_cache_hit_skips_validation():
    a, b = Mutex("cc.A"), RwSemaphore("cc.B")
    for _ in range(50):
        a.lock()
        b.down_read()
        b.up_read()
        a.unlock()
    assert lockdep.stats()["validations"] == 2      # [A] and [A, B(read)]
    a.lock()
    b.down_write()      # same classes, other read kind: a new chain
    b.up_write()
    a.unlock()
    assert lockdep.stats()["validations"] == 3


def test_chain_cache_includes_the_read_kind():
    # lib/locking-selftest.c "chain cached mixed R-L/L-W ABBA"
    x, y = RwLock("cc2.X"), SpinLock("cc2.Y")
    x.read_lock(); y.lock(); y.unlock(); x.read_unlock()
    y.lock(); x.read_lock(); x.read_unlock(); y.unlock()
    assert kinds() == []            # read-read recursion does not deadlock
    x.write_lock(); y.lock(); y.unlock(); x.write_unlock()
    assert kinds() == ["circular"]


def test_reset_forgets_graph_chains_and_reports_but_keeps_held_stacks():
    a, b = Mutex("rs.A"), Mutex("rs.B")
    a.lock(); b.lock(); b.unlock(); a.unlock()
    b.lock(); a.lock(); a.unlock(); b.unlock()
    assert kinds() == ["circular"]
    a.lock()
    lockdep.reset()
    assert lockdep.reports() == [] and lockdep.dependencies() == []
    assert lockdep.stats()["validations"] == 0 and lockdep.stats()["chains"] == 0
    assert [h.name for h in lockdep.held_locks()] == ["rs.A"]
    b.lock()            # validated again: A -> B
    b.unlock()
    a.unlock()
    assert deps() == {("rs.A", "rs.B"): {"EN"}}


# -- read kinds and the strong-cycle rule ----------------------------------------------------

def test_rwsem_read_read_abba_is_a_deadlock_but_rwlock_read_read_is_not():
    s1, s2 = RwSemaphore("rr.S1"), RwSemaphore("rr.S2")
    s1.down_read(); s2.down_read(); s2.up_read(); s1.up_read()
    s2.down_read(); s1.down_read(); s1.up_read(); s2.up_read()
    assert kinds() == ["circular"]
    lockdep.reset()
    r1, r2 = RwLock("rr.R1"), RwLock("rr.R2")
    r1.read_lock(); r2.read_lock(); r2.read_unlock(); r1.read_unlock()
    r2.read_lock(); r1.read_lock(); r1.read_unlock(); r2.read_unlock()
    assert kinds() == []
    assert deps()[("rr.R1", "rr.R2")] == {"SR"}


def test_strong_path_search_reenters_a_class_reached_first_through_a_recursive_read():
    # Refinement over the kernel's BFS, which marks a class visited once:
    # N -ER-> X is found before N -EN-> Y -EN-> X, and X -SN-> P may only
    # follow an edge ending in N.  The cycle P -> N -> Y -> X -> P is strong.
    n, y, p, x = SpinLock("bfs.N"), SpinLock("bfs.Y"), SpinLock("bfs.P"), RwLock("bfs.X")
    n.lock(); x.read_lock(); x.read_unlock(); n.unlock()        # N -ER-> X (first edge of N)
    n.lock(); y.lock(); y.unlock(); n.unlock()                  # N -EN-> Y
    y.lock(); x.write_lock(); x.write_unlock(); y.unlock()      # Y -EN-> X
    x.read_lock(); p.lock(); p.unlock(); x.read_unlock()        # X -SN-> P
    assert kinds() == []
    p.lock(); n.lock(); n.unlock(); p.unlock()                  # P -EN-> N
    assert kinds() == ["circular"]
    assert lockdep.reports()[0].data["classes"] == ["bfs.N", "bfs.Y", "bfs.X", "bfs.P"]


def test_out_of_order_release_revalidates_the_locks_above():
    a, b, c = Mutex("ooo.A"), Mutex("ooo.B"), Mutex("ooo.C")
    a.lock(); b.lock(); c.lock()
    assert ("ooo.A", "ooo.C") not in deps()
    b.unlock()          # now [A, C]: the kernel's reacquire_held_locks validates A -> C
    assert [h.name for h in lockdep.held_locks()] == ["ooo.A", "ooo.C"]
    assert deps()[("ooo.A", "ooo.C")] == {"EN"}
    c.unlock(); a.unlock()


def test_compare_function_orders_same_class_nesting():
    locks = [SpinLock("cmp.pte") for _ in range(3)]
    order = {id(lk): i for i, lk in enumerate(locks)}
    lockdep.set_cmp_fn("cmp.pte", lambda a, b: order[id(a)] - order[id(b)])
    try:
        for lk in locks:            # ascending: allowed
            lk.lock()
        for lk in reversed(locks):
            lk.unlock()
        assert kinds() == []
        locks[2].lock()
        lockdep.configure(raise_on_report=True)
        with pytest.raises(LockdepError):
            locks[0].lock()         # descending: recursive
        lockdep.configure(raise_on_report=False)
        locks[2].unlock()
        assert kinds() == ["recursive"]
        assert "comparison function returns 2" in lockdep.reports()[0].text
    finally:
        lockdep.set_cmp_fn("cmp.pte", None)


def test_nest_lock_that_is_not_held_is_reported():
    outer, av = Mutex("nest2.all"), RwSemaphore("nest2.anon_vma")
    av.down_write_nest_lock(outer)
    av.up_write()
    (r,) = lockdep.reports()
    assert r.kind == "assertion"
    assert r.title == "WARNING: lockdep_assert_held(nest2.all) failed"
    assert "Nested lock was not taken" in r.text


def test_nest_lock_allows_same_class_nesting_under_it():
    outer = Mutex("nest.all")
    avs = [RwSemaphore("nest.anon_vma") for _ in range(4)]
    outer.lock()
    for s in avs:
        s.down_write_nest_lock(outer)
    for s in avs:
        s.up_write()
    outer.unlock()
    assert kinds() == []


# -- wait context -------------------------------------------------------------------------------

@pytest.mark.parametrize("atomic_kind", ["spinlock", "rwlock-read", "rwlock-write"])
@pytest.mark.parametrize("how", ["lock", "down_read", "trylock"])
def test_sleeping_lock_under_a_non_sleeping_lock(atomic_kind, how):
    if atomic_kind == "spinlock":
        outer = SpinLock("wc.spin")
        take, drop = outer.lock, outer.unlock
    else:
        outer = RwLock("wc.rw")
        take, drop = ((outer.read_lock, outer.read_unlock) if atomic_kind == "rwlock-read"
                      else (outer.write_lock, outer.write_unlock))
    m, sem = Mutex("wc.mutex"), RwSemaphore("wc.sem")
    take()
    if how == "lock":
        m.lock()
        m.unlock()
    elif how == "down_read":
        sem.down_read()
        sem.up_read()
    else:
        assert m.trylock()
        m.unlock()
    drop()
    if how == "trylock":    # cannot sleep: legal, as check_wait_context() says
        assert kinds() == []
        return
    assert kinds() == ["invalid-context"]
    r = lockdep.reports()[0]
    assert r.title == "BUG: sleeping function called from invalid context"
    # the kernel's first line names the file:line of the sleeping call (__might_sleep's file:line)
    first = r.text.splitlines()[0]
    assert re.fullmatch(r"BUG: sleeping function called from invalid context at "
                        r"tests/locking/test_lockdep_unit.py:\d+", first), first


def test_non_sleeping_lock_under_a_sleeping_one_is_fine():
    m, s, sem = Mutex("wc2.mutex"), SpinLock("wc2.spin"), RwSemaphore("wc2.sem")
    sem.down_read(); m.lock(); s.lock(); s.unlock(); m.unlock(); sem.up_read()
    assert kinds() == []


# -- assertions ----------------------------------------------------------------------------------

def test_assertion_helpers():
    s = RwSemaphore("as.S")
    lockdep.lockdep_assert_not_held(s)
    lockdep.lockdep_assert_held(s)
    assert kinds() == ["assertion"]
    assert lockdep.reports()[0].title == "WARNING: lockdep_assert_held(as.S) failed"
    s.down_read()
    lockdep.lockdep_assert_held(s)
    lockdep.lockdep_assert_held_read(s)
    lockdep.lockdep_assert_held_write(s)        # held for read only
    lockdep.lockdep_assert_not_held(s)          # but it is held
    s.up_read()
    s.down_write()
    lockdep.lockdep_assert_held_write(s)
    lockdep.lockdep_assert_held_read(s)         # held for write only
    s.up_write()
    titles = [r.title for r in lockdep.reports()]
    assert titles == ["WARNING: lockdep_assert_held(as.S) failed",
                      "WARNING: lockdep_assert_held_write(as.S) failed",
                      "WARNING: lockdep_assert_not_held(as.S) failed",
                      "WARNING: lockdep_assert_held_read(as.S) failed"]


def test_assertion_names_the_wrapper_and_checks_this_thread_only():
    s = RwSemaphore("as2.mmap_lock")
    held, done = threading.Event(), threading.Event()

    def holder():
        s.down_write()
        held.set()
        done.wait(10)
        s.up_write()

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(10)
        lockdep.lockdep_assert_held(s, name="mmap_assert_locked")   # another thread holds it
    finally:
        done.set()
        t.join(10)
    assert [r.title for r in lockdep.reports()] == [
        "WARNING: mmap_assert_locked(as2.mmap_lock) failed"]


def test_assertions_pass_silently_when_the_validator_is_off():
    s = Mutex("as3.M")
    lockdep.disable()
    try:
        lockdep.lockdep_assert_held(s)
        lockdep.lockdep_assert_held_read(s)
        lockdep.lockdep_assert_held_write(s)
        s.lock()
        lockdep.lockdep_assert_not_held(s)
        s.unlock()
    finally:
        lockdep.enable()
    assert kinds() == []


# -- report text ------------------------------------------------------------------------------------

def take_outer_then_inner(outer, inner):
    outer.lock()
    inner.lock()
    inner.unlock()
    outer.unlock()


def test_circular_report_has_the_kernel_skeleton():
    a, b = Mutex("txt.A"), Mutex("txt.B")
    take_outer_then_inner(a, b)
    b.lock()
    a.lock()
    a.unlock()
    b.unlock()
    (r,) = lockdep.reports()
    lines = r.text.splitlines()
    title = "WARNING: possible circular locking dependency detected"
    assert lines[:3] == ["=" * len(title), title, "-" * len(title)]
    assert r.title == title
    # tasks print as comm/N, N the thread's ordinal since the last reset (stable across replays)
    tid = thread_label("MainThread", threading.get_ident()).split("/")[1]
    assert lines[3] == f"MainThread/{tid} is trying to acquire lock:"
    assert "(txt.A){mutex}, at: " in lines[4] and "test_circular_report_has_the_kernel_skeleton" in lines[4]
    order = ["but task is already holding lock:", "which lock already depends on the new lock.",
             "the existing dependency chain (in reverse order) is:", "-> #1 (txt.B):",
             "-> #0 (txt.A):", "other info that might help us debug this:",
             " Possible unsafe locking scenario:", "       CPU0                    CPU1",
             "       ----                    ----", "  lock(txt.B);",
             "                               lock(txt.A);",
             "                               lock(txt.B);", "  lock(txt.A);",
             " *** DEADLOCK ***", f"1 lock held by MainThread/{tid}:", "stack backtrace:"]
    idx = [lines.index(x) for x in order]
    assert idx == sorted(idx)
    # #1 shows the stack saved when A -> B was first recorded
    chain = lines[lines.index("-> #1 (txt.B):") + 1]
    assert chain.startswith("      take_outer_then_inner+0x0/0x0 tests/locking/test_lockdep_unit.py:")
    assert lines[lines.index(f"1 lock held by MainThread/{tid}:") + 1].startswith(" #0: ")
    assert "Chain exists of:" not in lines     # a direct inversion
    # structured data, JSON-ready
    d = json.loads(json.dumps(r.data))
    assert d["kind"] == "circular" and d["title"] == title
    assert d["thread"] == {"name": "MainThread", "tid": threading.get_ident()}   # the data keeps the real id
    assert d["classes"] == ["txt.A", "txt.B"]
    assert [(e["from"], e["to"], e["types"]) for e in d["edges"]] == [
        ("txt.B", "txt.A", ["EN"]), ("txt.A", "txt.B", ["EN"])]
    assert d["edges"][1]["stack"][0].startswith("take_outer_then_inner+0x0/0x0 ")
    assert r.signature == ("circular", "txt.A", "txt.B")


def test_circular_report_through_a_chain_uses_rlock_for_reads():
    a, b, c = RwSemaphore("txt2.A"), Mutex("txt2.B"), Mutex("txt2.C")
    a.down_read(); b.lock(); b.unlock(); a.up_read()     # A -> B
    b.lock(); c.lock(); c.unlock(); b.unlock()           # B -> C
    c.lock(); a.down_read(); a.up_read(); c.unlock()     # C -> A: cycle A B C
    (r,) = lockdep.reports()
    lines = r.text.splitlines()
    assert "Chain exists of:" in lines
    assert lines[lines.index("Chain exists of:") + 1] == "  txt2.A --> txt2.B --> txt2.C"
    assert "  lock(txt2.C);" in lines and "  rlock(txt2.A);" in lines
    assert [x for x in lines if x.startswith("-> #")] == [
        "-> #2 (txt2.C):", "-> #1 (txt2.B):", "-> #0 (txt2.A):"]


def test_reports_are_logged_with_loguru_when_the_app_enables_it():
    from loguru import logger
    seen = []
    logger.enable("pymm")
    hid = logger.add(lambda m: seen.append(str(m)), level="WARNING")
    try:
        a = Mutex("log.A")
        a.lock()
        lockdep.lockdep_sys_exit()
        a.unlock()
    finally:
        logger.remove(hid)
        logger.disable("pymm")
    assert any("lock held when returning to user space" in s for s in seen)


# -- across threads, de-duplication, subscribers ---------------------------------------------

def first_a_then_b(a, b):
    a.lock()
    b.lock()
    b.unlock()
    a.unlock()


def test_inversion_observed_across_two_threads_run_one_after_the_other():
    a, b = Mutex("mt.A"), Mutex("mt.B")
    run_thread(lambda: first_a_then_b(a, b), name="cpu0")
    run_thread(lambda: first_a_then_b(b, a), name="cpu1")
    (r,) = lockdep.reports()
    assert r.kind == "circular"
    assert r.data["thread"]["name"] == "cpu1"
    assert "-> #1 (mt.B):" in r.text
    assert r.data["edges"][1]["stack"][0].startswith("first_a_then_b+0x0/0x0 ")


def test_reports_are_deduplicated_and_the_validator_keeps_going():
    a, b, c, outer = Mutex("dd.A"), Mutex("dd.B"), Mutex("dd.C"), Mutex("dd.outer")
    first_a_then_b(a, b)
    first_a_then_b(b, a)
    outer.lock()
    first_a_then_b(b, a)        # another chain, the same cycle: not reported again
    outer.unlock()
    first_a_then_b(b, c)
    first_a_then_b(c, b)        # a different cycle: reported
    assert kinds() == ["circular", "circular"]
    assert [r.signature for r in lockdep.reports()] == [
        ("circular", "dd.A", "dd.B"), ("circular", "dd.B", "dd.C")]


def test_subscribers_see_each_new_report_in_the_reporting_thread():
    got = []
    fn = lambda r: got.append((r.kind, threading.current_thread().name))
    lockdep.subscribe(fn)
    try:
        a, b = Mutex("sb.A"), Mutex("sb.B")
        run_thread(lambda: first_a_then_b(a, b), name="t0")
        run_thread(lambda: first_a_then_b(b, a), name="t1")
        run_thread(lambda: first_a_then_b(b, a), name="t2")    # duplicate: not delivered
    finally:
        lockdep.unsubscribe(fn)
    assert got == [("circular", "t1")]


# -- raise_on_report -----------------------------------------------------------------------------

def test_raise_on_report_raises_before_the_real_lock_is_taken():
    m = Mutex("rr.M")
    prev = lockdep.configure(raise_on_report=True)
    assert prev == {"raise_on_report": False, "stacks": True}
    try:
        m.lock()
        for _ in range(2):      # every time: a reported chain is not cached
            with pytest.raises(LockdepError) as ei:
                m.lock()        # would self-deadlock for real
            assert ei.value.report.kind == "recursive"
        assert m.owner == threading.get_ident()
        assert [h.name for h in lockdep.held_locks()] == ["rr.M"]
        m.unlock()
        assert not m.is_locked()
    finally:
        assert lockdep.configure(**prev) == {"raise_on_report": True, "stacks": True}
    assert kinds() == ["recursive"]


def test_raise_on_report_for_a_circular_dependency_leaves_the_new_lock_untaken():
    a, b = Mutex("rr2.A"), Mutex("rr2.B")
    first_a_then_b(a, b)
    lockdep.configure(raise_on_report=True)
    b.lock()
    with pytest.raises(LockdepError) as ei:
        a.lock()
    lockdep.configure(raise_on_report=False)
    assert ei.value.report.kind == "circular"
    assert not a.is_locked()
    b.unlock()


def test_cached_bad_chain_raises_again_once_raising_is_turned_on():
    a, b = Mutex("rr3.A"), Mutex("rr3.B")
    first_a_then_b(a, b)
    first_a_then_b(b, a)        # reported, not raised; the chain is cached
    lockdep.configure(raise_on_report=True)
    try:
        b.lock()
        with pytest.raises(LockdepError):
            a.lock()
        b.unlock()
    finally:
        lockdep.configure(raise_on_report=False)


# -- bad unlock ----------------------------------------------------------------------------------

def test_bad_unlock_is_reported_raises_and_leaves_the_lock_usable():
    m = Mutex("bu.M")
    with pytest.raises(LockUsageError, match="does not hold it"):
        m.unlock()
    assert kinds() == ["bad-unlock"]
    r = lockdep.reports()[0]
    assert r.title == "WARNING: bad unlock balance detected!"
    assert "but there are no more locks to release!" in r.text
    m.lock()
    m.unlock()


def test_up_read_of_a_rwsem_read_held_by_another_thread():
    s = RwSemaphore("bu2.S")
    s.down_read()
    err = []

    def other():
        try:
            s.up_read()
        except LockUsageError as e:
            err.append(e)

    run_thread(other)
    assert err and kinds() == ["bad-unlock"]
    assert s.readers == {threading.get_ident(): 1}
    s.up_read()
    assert not s.is_locked()


def test_bad_unlock_with_raise_on_report_raises_an_error_of_both_kinds():
    m = Mutex("bu3.M")
    lockdep.configure(raise_on_report=True)
    try:
        with pytest.raises(LockdepError) as ei:
            m.unlock()
    finally:
        lockdep.configure(raise_on_report=False)
    assert isinstance(ei.value, LockUsageError)
    assert ei.value.report.kind == "bad-unlock"


# -- thread exit and return to user space ---------------------------------------------------------

def test_lock_held_when_a_thread_exits_is_reported_without_its_cooperation():
    m = Mutex("te.M")
    run_thread(m.lock, name="leaker")
    (r,) = lockdep.reports()
    assert r.kind == "thread-exit"
    assert r.title == "WARNING: lock held when thread exited!"
    assert "leaker/" in r.text and "(te.M){mutex}" in r.text
    assert r.data["classes"] == ["te.M"]


def test_thread_that_releases_everything_is_not_reported():
    m = Mutex("te2.M")
    run_thread(lambda: (m.lock(), m.unlock()))
    assert kinds() == []


def test_explicit_thread_exit_reports_once():
    m = Mutex("te3.M")
    checked, go = threading.Event(), threading.Event()

    def body():
        m.lock()
        lockdep.thread_exit()
        checked.set()
        go.wait(10)

    t = threading.Thread(target=body, name="managed")
    t.start()
    assert checked.wait(10)
    assert kinds() == ["thread-exit"]
    lockdep.reset()     # the destructor would now report again if it did not know
    go.set()
    t.join(10)
    assert kinds() == []


def test_lock_held_when_returning_to_user_space():
    a, b = Mutex("ur.A"), RwSemaphore("ur.B")
    lockdep.lockdep_sys_exit()
    assert kinds() == []
    a.lock()
    b.down_read()
    lockdep.lockdep_sys_exit()
    b.up_read()
    a.unlock()
    (r,) = lockdep.reports()
    assert r.kind == "user-return"
    assert r.title == "WARNING: lock held when returning to user space!"
    assert "is leaving the kernel with locks still held!" in r.text
    assert "2 locks held by MainThread" in r.text and "(ur.B){rwsem:read}" in r.text


# -- introspection --------------------------------------------------------------------------------

def test_held_locks_of_another_thread():
    s, m = RwSemaphore("hl.S"), Mutex("hl.M")
    ready, done = threading.Event(), threading.Event()
    tid = []

    def body():
        tid.append(threading.get_ident())
        s.down_read()
        assert m.trylock()
        ready.set()
        done.wait(10)
        m.unlock()
        s.up_read()

    t = threading.Thread(target=body)
    t.start()
    try:
        assert ready.wait(10)
        held = lockdep.held_locks(tid[0])
        assert [(h.lock, h.read, h.trylock, h.subclass, h.name) for h in held] == [
            (s, 1, False, 0, "hl.S"), (m, 0, True, 0, "hl.M")]
        assert lockdep.held_locks() == []
    finally:
        done.set()
        t.join(10)


def test_disable_makes_locks_take_their_fast_path():
    from pymm.locking import events
    lockdep.disable()
    try:
        assert not lockdep.is_enabled()
        if not events.listeners():
            assert events.on is False
        m = Mutex("off.M")
        m.lock()
        assert lockdep.held_locks() == []
        m.unlock()
    finally:
        lockdep.enable()
    assert events.listeners()[0] is lockdep._listener


def test_stacks_off_records_edges_and_reports_without_stacks():
    lockdep.configure(stacks=False)
    a, b = Mutex("ns.A"), Mutex("ns.B")
    first_a_then_b(a, b)
    first_a_then_b(b, a)
    (r,) = lockdep.reports()
    assert r.kind == "circular" and r.data["stack"] is None
    assert "<stack not recorded" in r.text
    assert all(e["stack"] is None for e in r.data["edges"])
    assert lockdep.held_locks() == []


def test_dependencies_lists_every_observed_edge_with_its_types():
    s, r, m = RwSemaphore("dep.S"), RwLock("dep.R"), Mutex("dep.M")
    s.down_read(); m.lock(); m.unlock(); s.up_read()
    s.down_write(); m.lock(); m.unlock(); s.up_write()
    m.lock(); r.read_lock(); r.read_unlock(); m.unlock()
    r.write_lock(); r.write_unlock()
    assert deps() == {("dep.S", "dep.M"): {"SN", "EN"}, ("dep.M", "dep.R"): {"ER"}}


def test_thread_exit_is_seen_for_a_bare_thread_too():
    import _thread
    m = Mutex("te4.M")
    seen = threading.Event()
    got = []

    def sub(r):
        if r.kind == "thread-exit":
            got.append(r)
            seen.set()

    lockdep.subscribe(sub)
    try:
        _thread.start_new_thread(m.lock, ())
        assert seen.wait(10), "no thread-exit report for a _thread thread"
    finally:
        lockdep.unsubscribe(sub)
    assert got[0].data["classes"] == ["te4.M"]


def test_concurrent_threads_in_one_lock_order_report_nothing():
    import random
    locks = [Mutex(f"cc3.L{i}") for i in range(4)] + [RwSemaphore(f"cc3.S{i}") for i in range(2)]
    start = threading.Barrier(4)

    def worker(seed):
        rnd = random.Random(seed)
        start.wait(10)
        for _ in range(300):
            chosen = sorted(rnd.sample(range(len(locks)), rnd.randint(1, 4)))
            taken = []
            for i in chosen:
                lk = locks[i]
                if isinstance(lk, RwSemaphore) and rnd.random() < 0.5:
                    lk.down_read()
                    taken.append(lk.up_read)
                elif isinstance(lk, RwSemaphore):
                    lk.down_write()
                    taken.append(lk.up_write)
                else:
                    lk.lock()
                    taken.append(lk.unlock)
            for drop in reversed(taken):
                drop()

    ts = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not any(t.is_alive() for t in ts)
    assert kinds() == []
    names = [lk.key.name for lk in locks]
    for a, b in deps():
        assert names.index(a) < names.index(b)      # only forward edges were seen
