"""lib/locking-selftest.c, ported: the kernel's own verdicts for lockdep.

Each kernel case is a short script over the selftest's lock macros
(``L(x)`` spin_lock, ``WL``/``RL`` write_lock/read_lock, ``ML`` mutex_lock,
``WSL``/``RSL`` down_write/down_read, ...), written here in the same macro
language so a case reads line for line beside the C.  ``LOCK``/``UNLOCK``/
``RLOCK``/``WLOCK`` expand per lock type exactly as the
``locking-selftest-{spin,wlock,rlock,mutex,wsem,rsem}.h`` headers define
them, and ``LOCK_UNLOCK_2(x, y)`` is the kernel's macro.

The kernel's dotest(fn, expected, ...) runs a case and compares
``debug_locks`` with SUCCESS/FAILURE.  Here: run until the first report
(``raise_on_report=True``, so a real A-A self-deadlock raises before it
blocks), release what is held, and require ``lockdep.reports()`` to be empty
(SUCCESS) or to start with the report kind the kernel's splat would have
(FAILURE).  Test ids are ``<case>/<lock type>[/<permutation>]``, after the
kernel's ``<case>_<type>[_<perm>]`` function names.

Lock naming follows the selftest: ``lock_A``..``lock_D``, ``rwlock_*``,
``mutex_*``, ``rwsem_*`` are four classes per lock type; ``X1``/``X2``,
``Y1``/``Y2``, ``Z1``/``Z2`` are two instances each of the classes X, Y, Z
(init_shared_classes()), so "AA" takes two different locks of one class and
never really deadlocks.

Not ported, because pymm has no counterpart:
- every irq-context family (irqsafe1..4, irqsafe2A/2B, irq_inversion,
  irq_read_recursion #1..#3, the queued_read_lock hardirq tests, local_lock
  inversion 2/3A/3B, hardirq_unsafe_softirq_safe): pymm has no interrupts,
  so there is no irq-safe/irq-unsafe state to invert;
- ww_mutex (the wound/wait tests) and rt_mutex (the ``_rtmutex`` column):
  pymm has neither lock type.  The two ww tests that only use plain
  spinlocks with a nest lock are ported (``nest_lock/...``);
- init_held (``LOCK(A); INIT(A)``): a pymm lock cannot be re-initialised in
  place; constructing a lock always makes a new, unheld object;
- fs_reclaim (no reclaim annotations), the RCU and raw_spinlock columns of
  the wait-context matrix (no RCU read-side lockdep map, and raw_spinlock_t
  vs spinlock_t differ only under PREEMPT_RT), and
  lockdep_set_subclass_name (no lockdep_set_subclass()).

Cases marked "derived" are not in the kernel file: the same scripts on the
other rw lock type, or pymm's subclass API; their verdicts follow from
lockdep.c's rules and say why where they are defined.
"""
import re
from collections import namedtuple

import pytest

from pymm.locking import lockdep, Mutex, RwLock, RwSemaphore, SpinLock

from .selftest_helpers import clean_lockdep, run_in_threads, run_until_report  # noqa: F401

pytestmark = pytest.mark.usefixtures("clean_lockdep")

SUCCESS = None          # dotest(..., SUCCESS): no report at all
ANY = "any"             # FAILURE, kind not pinned (no matching pymm kind)

# -- the macro language ---------------------------------------------------------

# lock family -> (pymm type, class-name prefix), as the selftest names its locks
FAMILIES = {
    "lock": (SpinLock, "lock_"),
    "rwlock": (RwLock, "rwlock_"),
    "mutex": (Mutex, "mutex_"),
    "rwsem": (RwSemaphore, "rwsem_"),
}

# "Shortcuts for lock/unlock API variants" at the top of locking-selftest.c
MACROS = {
    "L": ("lock", "lock"), "U": ("lock", "unlock"),
    "WL": ("rwlock", "write_lock"), "WU": ("rwlock", "write_unlock"),
    "RL": ("rwlock", "read_lock"), "RU": ("rwlock", "read_unlock"),
    "ML": ("mutex", "lock"), "MU": ("mutex", "unlock"),
    "WSL": ("rwsem", "down_write"), "WSU": ("rwsem", "up_write"),
    "RSL": ("rwsem", "down_read"), "RSU": ("rwsem", "up_read"),
}

# lib/locking-selftest-<type>.h
LOCK_TYPES = {
    "spin": {"LOCK": "L", "UNLOCK": "U"},
    "wlock": {"LOCK": "WL", "UNLOCK": "WU", "RLOCK": "RL", "WLOCK": "WL"},
    "rlock": {"LOCK": "RL", "UNLOCK": "RU", "RLOCK": "RL", "WLOCK": "WL"},
    "mutex": {"LOCK": "ML", "UNLOCK": "MU"},
    "wsem": {"LOCK": "WSL", "UNLOCK": "WSU", "RLOCK": "RSL", "WLOCK": "WSL"},
    "rsem": {"LOCK": "RSL", "UNLOCK": "RSU", "RLOCK": "RSL", "WLOCK": "WSL"},
}
SIX = ("spin", "wlock", "rlock", "mutex", "wsem", "rsem")

_CALL = re.compile(r"(\w+)\(([^()]*)\)")


def expand(script, locktype=None):
    """Macro-expand a case body into ``[(family, method, lock name)]``."""
    steps = []
    for macro, args in _CALL.findall(script):
        args = [a.strip() for a in args.split(",")]
        if macro == "LOCK_UNLOCK_2":
            x, y = args
            steps += expand(f"LOCK({x}) LOCK({y}) UNLOCK({y}) UNLOCK({x})", locktype)
            continue
        if locktype is not None:
            macro = LOCK_TYPES[locktype].get(macro, macro)
        family, method = MACROS[macro]      # KeyError: a macro this type lacks
        steps.append((family, method, args[0]))
    return steps


class Locks:
    """The selftest's static locks, made on first use.  ``X1`` and ``X2``
    share the class ``<prefix>X``; ``A`` is alone in ``<prefix>A``."""

    def __init__(self):
        self._made = {}

    def get(self, family, x):
        lock = self._made.get((family, x))
        if lock is None:
            cls, prefix = FAMILIES[family]
            lock = self._made[(family, x)] = cls(prefix + x[0])
        return lock

    # shorthands for the hand-written cases
    def spin(self, x): return self.get("lock", x)
    def mutex(self, x): return self.get("mutex", x)
    def rwsem(self, x): return self.get("rwsem", x)


def interpret(steps, locks):
    for family, method, x in steps:
        getattr(locks.get(family, x), method)()


Case = namedtuple("Case", "id body expect")     # body: steps list or callable(locks)
CASES = []


def case(id, body, expect, locktype=None):
    if isinstance(body, str):
        body = expand(body, locktype)
    CASES.append(Case(id, body, expect))


# dotest() verdicts per lock type: DO_TESTCASE_6R ("read variant: rlocks must
# not trigger") and DO_TESTCASE_6 (every type fails)
def do_testcase_6r(name, script, kind):
    for t in SIX:
        case(f"{name}/{t}", script, SUCCESS if t == "rlock" else kind, t)


def do_testcase_6(name, script, kind):
    for t in SIX:
        case(f"{name}/{t}", script, kind, t)


PERMS = ("123", "132", "213", "231", "312", "321")


def permutations_3(name, label, e1, e2, e3, expect):
    """GENERATE_PERMUTATIONS_3_EVENTS: the three events in all six orders
    (the events name their macros explicitly; ``label`` is for the id)."""
    events = {"1": e1, "2": e2, "3": e3}
    for p in PERMS:
        case(f"{name}/{label}/{p}", " ".join(events[c] for c in p), expect)


# -- "A-A deadlock" ... "A-B-C-D-B-C-D-A deadlock" -------------------------------

do_testcase_6r("AA", "LOCK(X1) LOCK(X2)", "recursive")     # X2: "this one should fail"
do_testcase_6r("ABBA", "LOCK_UNLOCK_2(A, B) LOCK_UNLOCK_2(B, A)", "circular")
do_testcase_6r("ABBCCA", "LOCK_UNLOCK_2(A, B) LOCK_UNLOCK_2(B, C) LOCK_UNLOCK_2(C, A)",
               "circular")
do_testcase_6r("ABCABC", "LOCK_UNLOCK_2(A, B) LOCK_UNLOCK_2(C, A) LOCK_UNLOCK_2(B, C)",
               "circular")
do_testcase_6r("ABBCCDDA", "LOCK_UNLOCK_2(A, B) LOCK_UNLOCK_2(B, C) LOCK_UNLOCK_2(C, D)"
               " LOCK_UNLOCK_2(D, A)", "circular")
do_testcase_6r("ABCDBDDA", "LOCK_UNLOCK_2(A, B) LOCK_UNLOCK_2(C, D) LOCK_UNLOCK_2(B, D)"
               " LOCK_UNLOCK_2(D, A)", "circular")
do_testcase_6r("ABCDBCDA", "LOCK_UNLOCK_2(A, B) LOCK_UNLOCK_2(C, D) LOCK_UNLOCK_2(B, C)"
               " LOCK_UNLOCK_2(D, A)", "circular")

# -- "double unlock" ----------------------------------------------------------------

do_testcase_6("double_unlock", "LOCK(A) UNLOCK(A) UNLOCK(A)", "bad-unlock")

# Derived: "bad unlock order".  Old selftests had LOCK(A) LOCK(B) UNLOCK(A)
# UNLOCK(B) as FAILURE for every type; the case was dropped when lockdep
# stopped checking unlock order, and today's __lock_release() takes an entry
# from the middle of the held stack and re-validates the ones above it.
for _t in SIX:
    case(f"bad_unlock_order/{_t}", "LOCK(A) LOCK(B) UNLOCK(A) UNLOCK(B)", SUCCESS, _t)

# -- "recursive read-lock", "#2", "mixed read-write-lock", "mixed write-read-lock"

case("AA1/rlock", "RL(X1) RL(X1)", SUCCESS)          # rlock_AA1: should NOT fail
case("AA1/rsem", "RSL(X1) RSL(X1)", "recursive")     # rsem_AA1: should fail
case("AA1B/rlock", "RL(X1) RL(X2)", SUCCESS)         # rlock_AA1B
case("AA1B/rsem", "RSL(X1) RSL(X2)", "recursive")    # rsem_AA1B
case("AA2/rlock", "RL(X1) WL(X2)", "recursive")      # rlock_AA2
case("AA2/rsem", "RSL(X1) WSL(X2)", "recursive")     # rsem_AA2
case("AA3/rlock", "WL(X1) RL(X2)", "recursive")      # rlock_AA3
case("AA3/rsem", "WSL(X1) RSL(X2)", "recursive")     # rsem_AA3

# -- "mixed read-lock/lock-write ABBA" ... "chain cached mixed R-L/L-W ABBA" --------

case("ABBA1/rlock", "RL(X1) L(Y1) U(Y1) RU(X1)   L(Y1) WL(X1) WU(X1) U(Y1)", "circular")
case("ABBA1/rwsem", "RSL(X1) ML(Y1) MU(Y1) RSU(X1)   ML(Y1) WSL(X1) WSU(X1) MU(Y1)",
     "circular")
case("ABBA2/rlock", "RL(X1) L(Y1) U(Y1) RU(X1)   L(Y1) RL(X1) RU(X1) U(Y1)", SUCCESS)
case("ABBA2/rwsem", "RSL(X1) ML(Y1) MU(Y1) RSU(X1)   ML(Y1) RSL(X1) RSU(X1) MU(Y1)",
     "circular")
case("ABBA3/rlock", "WL(X1) L(Y1) U(Y1) WU(X1)   L(Y1) WL(X1) WU(X1) U(Y1)", "circular")
case("ABBA3/rwsem", "WSL(X1) ML(Y1) MU(Y1) WSU(X1)   ML(Y1) WSL(X1) WSU(X1) MU(Y1)",
     "circular")
# Y1 -> read X1 is cached first; Y1 -> write X1 must not hit that cache entry.
case("chaincache_ABBA1/rlock", "RL(X1) L(Y1) U(Y1) RU(X1)   L(Y1) RL(X1) RU(X1) U(Y1)"
     "   L(Y1) WL(X1) WU(X1) U(Y1)", "circular")

# -- "rlock W1R2/W2R3/W3R1" ... "rlock W1R2/R2R3/W3W1" ---------------------------------

RW_FAMILIES = {
    # name: (E1, E2, E3, verdict for rwlock_t readers)
    # write-read / write-read / write-read: a deadlock even if read is recursive
    "W1R2_W2R3_W3R1": ("WL(X1) RL(Y1) RU(Y1) WU(X1)", "WL(Y1) RL(Z1) RU(Z1) WU(Y1)",
                       "WL(Z1) RL(X1) RU(X1) WU(Z1)", "circular"),
    # write-write / read-read / write-read: a deadlock even if read is recursive
    "W1W2_R2R3_W3R1": ("WL(X1) WL(Y1) WU(Y1) WU(X1)", "RL(Y1) RL(Z1) RU(Z1) RU(Y1)",
                       "WL(Z1) RL(X1) RU(X1) WU(Z1)", "circular"),
    # write-write / read-read / read-write: not a deadlock when read is recursive
    "W1W2_R2R3_R3W1": ("WL(X1) WL(Y1) WU(Y1) WU(X1)", "RL(Y1) RL(Z1) RU(Z1) RU(Y1)",
                       "RL(Z1) WL(X1) WU(X1) RU(Z1)", SUCCESS),
    # write-read / read-read / write-write: not a deadlock when read is recursive
    "W1R2_R2R3_W3W1": ("WL(X1) RL(Y1) RU(Y1) WU(X1)", "RL(Y1) RL(Z1) RU(Z1) RU(Y1)",
                       "WL(Z1) WL(X1) WU(X1) WU(Z1)", SUCCESS),
}
_TO_RWSEM = {"WL": "WSL", "WU": "WSU", "RL": "RSL", "RU": "RSU"}


def _rwsem_script(script):
    return _CALL.sub(lambda m: f"{_TO_RWSEM[m.group(1)]}({m.group(2)})", script)


for _name, (_e1, _e2, _e3, _verdict) in RW_FAMILIES.items():
    permutations_3(_name, "rlock", _e1, _e2, _e3, _verdict)
    # Derived: the same events on rw_semaphores.  down_read is a
    # non-recursive reader, so every edge ends in N, no -(xR)-> -(Sx)-> pair
    # exists, and each 3-cycle is strong: all four families deadlock.
    permutations_3(_name, "rwsem", *map(_rwsem_script, (_e1, _e2, _e3)), "circular")

# -- wait context (wait_context_tests, the SPINLOCK and MUTEX rows) ----------------
# The kernel's guard() pairs: outer taken first, released last.

case("wait_context/spinlock_in_spinlock", "L(A) L(B) U(B) U(A)", SUCCESS)
case("wait_context/mutex_in_spinlock", "L(A) ML(B) MU(B) U(A)", "invalid-context")
case("wait_context/spinlock_in_mutex", "ML(A) L(B) U(B) MU(A)", SUCCESS)
case("wait_context/mutex_in_mutex", "ML(A) ML(B) MU(B) MU(A)", SUCCESS)
# Derived: rw_semaphores sleep like mutexes, and rwlock_t has spinlock_t's
# wait type (LD_WAIT_CONFIG), so the same rule holds for them.
case("wait_context/rsem_in_spinlock", "L(A) RSL(B) RSU(B) U(A)", "invalid-context")
case("wait_context/wsem_in_spinlock", "L(A) WSL(B) WSU(B) U(A)", "invalid-context")
case("wait_context/mutex_in_rlock", "RL(A) ML(B) MU(B) RU(A)", "invalid-context")
case("wait_context/mutex_in_wlock", "WL(A) ML(B) MU(B) WU(A)", "invalid-context")
case("wait_context/spinlock_in_rsem", "RSL(A) L(B) U(B) RSU(A)", SUCCESS)


# -- nest_lock (the two ww_tests that use plain spinlocks) -------------------------

def ww_test_spin_nest_lock(k):
    """Not a deadlock: X1 serialises Y1 and Y2 (and A between them)."""
    x1, y1, y2, a = k.spin("X1"), k.spin("Y1"), k.spin("Y2"), k.spin("A")
    x1.lock()
    y1.lock_nest_lock(x1)
    a.lock()
    y2.lock_nest_lock(x1)
    a.unlock()          # out of order, as in the kernel: Y2 is above A
    y2.unlock()
    y1.unlock()
    x1.unlock()


def ww_test_spin_nest_unlocked(k):
    """spin_lock_nest_lock() under a nest lock that is not held."""
    o = k.mutex("o")    # the kernel uses the ww_mutex's base mutex, unheld
    a = k.spin("A")
    a.lock_nest_lock(o)
    a.unlock()


case("nest_lock/spin_nest_lock", ww_test_spin_nest_lock, SUCCESS)
case("nest_lock/spin_nest_unlocked", ww_test_spin_nest_unlocked, ANY)


# -- derived: subclasses (spin_lock_nested & co.) -----------------------------------
# Each subclass is its own class to lockdep, so same-class nesting annotated
# with distinct subclasses is fine, the same subclass twice is recursion, and
# an inversion between subclasses is an ordinary ABBA.

NESTED_OPS = {   # lock type -> (lock, lock_nested(sub), unlock) on a lock
    "spin": (lambda k, x: k.spin(x).lock(), lambda k, x, s: k.spin(x).lock_nested(s),
             lambda k, x: k.spin(x).unlock()),
    "mutex": (lambda k, x: k.mutex(x).lock(), lambda k, x, s: k.mutex(x).lock_nested(s),
              lambda k, x: k.mutex(x).unlock()),
    "wsem": (lambda k, x: k.rwsem(x).down_write(),
             lambda k, x, s: k.rwsem(x).down_write_nested(s),
             lambda k, x: k.rwsem(x).up_write()),
    "rsem": (lambda k, x: k.rwsem(x).down_read(),
             lambda k, x, s: k.rwsem(x).down_read_nested(s),
             lambda k, x: k.rwsem(x).up_read()),
}


def _nested_cases():
    for t, (lock, nested, unlock) in NESTED_OPS.items():
        def aa_nested(k, lock=lock, nested=nested, unlock=unlock):
            lock(k, "X1")
            nested(k, "X2", 1)      # SINGLE_DEPTH_NESTING
            unlock(k, "X2")
            unlock(k, "X1")

        def aa_same_subclass(k, nested=nested):
            nested(k, "X1", 1)
            nested(k, "X2", 1)

        def abba_nested(k, lock=lock, nested=nested, unlock=unlock):
            lock(k, "X1")
            nested(k, "X2", 1)      # X/0 -> X/1
            unlock(k, "X2")
            unlock(k, "X1")
            nested(k, "X2", 1)
            lock(k, "X1")           # X/1 -> X/0
            unlock(k, "X1")
            unlock(k, "X2")

        case(f"AA_nested/{t}", aa_nested, SUCCESS)
        case(f"AA_same_subclass/{t}", aa_same_subclass, "recursive")
        case(f"ABBA_nested/{t}", abba_nested, "circular")


_nested_cases()


# -- the runner --------------------------------------------------------------------

@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_selftest(c):
    k = Locks()
    body = c.body if callable(c.body) else (lambda k: interpret(c.body, k))
    reports, error = run_until_report(body, k)
    kinds = [r.kind for r in reports]
    if c.expect is SUCCESS:
        assert not kinds, f"expected no report, got {kinds}:\n{reports[0].text}"
        assert error is None, f"lock misuse without a report: {error}"
    else:
        assert kinds, "expected a report (the kernel's dotest() says FAILURE), got none"
        if c.expect != ANY:
            assert kinds[0] == c.expect, (
                f"expected a {c.expect!r} report first, got {kinds}:\n{reports[0].text}")


def test_case_table_is_complete():
    """The port keeps every kernel case it claims: 6 types x 8 families
    (AA .. double unlock), the 14 rwlock/rwsem pairs, and 4 families x 6
    permutations of the read-recursion cycles."""
    ids = {c.id for c in CASES}
    assert len(ids) == len(CASES), "duplicate case ids"
    for fam in ("AA", "ABBA", "ABBCCA", "ABCABC", "ABBCCDDA", "ABCDBDDA", "ABCDBCDA",
                "double_unlock"):
        assert {f"{fam}/{t}" for t in SIX} <= ids
    for fam in RW_FAMILIES:
        assert {f"{fam}/rlock/{p}" for p in PERMS} <= ids
    assert {"AA1/rlock", "AA1/rsem", "AA1B/rlock", "AA1B/rsem", "AA2/rlock", "AA2/rsem",
            "AA3/rlock", "AA3/rsem", "ABBA1/rlock", "ABBA1/rwsem", "ABBA2/rlock",
            "ABBA2/rwsem", "ABBA3/rlock", "ABBA3/rwsem", "chaincache_ABBA1/rlock"} <= ids


def test_macro_expansion_matches_the_headers():
    """LOCK_UNLOCK_2 and the per-type headers expand as in the C."""
    assert expand("LOCK_UNLOCK_2(A, B)", "rsem") == [
        ("rwsem", "down_read", "A"), ("rwsem", "down_read", "B"),
        ("rwsem", "up_read", "B"), ("rwsem", "up_read", "A")]
    assert expand("LOCK(X1) WLOCK(X2)", "wlock") == [
        ("rwlock", "write_lock", "X1"), ("rwlock", "write_lock", "X2")]
    with pytest.raises(KeyError):
        expand("RLOCK(A)", "mutex")     # mutex.h #undefs RLOCK


# -- the two "CPUs" as real threads ------------------------------------------------
# The selftest plays both CPUs in one context.  Here each CPU is a real
# thread; they run one after the other (no real deadlock can happen), and
# the inversion must still be caught: dependencies belong to classes, not to
# the thread that recorded them.

THREAD_LOCKS = {   # type -> (make(name), take(lock), drop(lock))
    "spin": (SpinLock, SpinLock.lock, SpinLock.unlock),
    "mutex": (Mutex, Mutex.lock, Mutex.unlock),
    "wsem": (RwSemaphore, RwSemaphore.down_write, RwSemaphore.up_write),
    "rsem": (RwSemaphore, RwSemaphore.down_read, RwSemaphore.up_read),
    "wlock": (RwLock, RwLock.write_lock, RwLock.write_unlock),
    "rlock": (RwLock, RwLock.read_lock, RwLock.read_unlock),
}


def _nest(take, drop, *locks):
    def body():
        for l in locks:
            take(l)
        for l in reversed(locks):
            drop(l)
    return body


@pytest.mark.parametrize("t", list(THREAD_LOCKS))
def test_abba_across_threads(t):
    """cpu0: A then B, and exits.  cpu1: B then A.  rwlock_t readers are
    recursive, so read/read ABBA is fine; every other type is reported."""
    make, take, drop = THREAD_LOCKS[t]
    a, b = make(f"threads_{t}_A"), make(f"threads_{t}_B")
    lockdep.configure(raise_on_report=False)    # cpu1 must really finish
    run_in_threads(_nest(take, drop, a, b), _nest(take, drop, b, a))
    reports = lockdep.reports()
    if t == "rlock":
        assert reports == []
        return
    assert [r.kind for r in reports] == ["circular"]
    text = reports[0].text
    assert "possible circular locking dependency detected" in text
    assert a.name in text and b.name in text
    assert "selftest-cpu1" in text      # the thread that closed the cycle


def test_abbcca_across_three_threads():
    """Three CPUs, each recording one edge of A -> B -> C -> A."""
    a, b, c = Mutex("threads3_A"), Mutex("threads3_B"), Mutex("threads3_C")
    lockdep.configure(raise_on_report=False)
    run_in_threads(_nest(Mutex.lock, Mutex.unlock, a, b),
                   _nest(Mutex.lock, Mutex.unlock, b, c),
                   _nest(Mutex.lock, Mutex.unlock, c, a))
    assert [r.kind for r in lockdep.reports()] == ["circular"]


def test_chaincache_abba_across_threads():
    """rlock_chaincache_ABBA1 spread over three threads: the read-side chain
    Y -> read X cached by cpu1 must not hide cpu2's Y -> write X."""
    x, y = RwLock("threads_cc_X"), SpinLock("threads_cc_Y")

    def cpu0():
        x.read_lock(); y.lock(); y.unlock(); x.read_unlock()

    def cpu1():
        y.lock(); x.read_lock(); x.read_unlock(); y.unlock()

    def cpu2():
        y.lock(); x.write_lock(); x.write_unlock(); y.unlock()

    lockdep.configure(raise_on_report=False)
    run_in_threads(cpu0, cpu1)
    assert lockdep.reports() == []          # rlock_ABBA2: not a deadlock
    run_in_threads(cpu2)
    assert [r.kind for r in lockdep.reports()] == ["circular"]
