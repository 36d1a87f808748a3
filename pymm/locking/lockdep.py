"""The lock validator: the kernel's lockdep, for pymm's real locks.

It listens on the lock-event choke point (``pymm.locking.events``), first
in line, and is on as soon as ``pymm.locking`` is imported.  What it checks
is shared/docs/LOCKDEP.md; how, follows kernel/locking/lockdep.c so the two
read side by side (``check_deadlock``, ``check_prevs_add``,
``check_prev_add``, ``check_noncircular``, ``lookup_chain_cache``...).

The problem
-----------
Every acquisition must be checked against every order ever observed, by any
thread, between lock *classes* -- and a stress run takes millions of locks.
A full check is a breadth-first search of the dependency graph per held
lock, far too slow to run on every acquisition.

What does not work
------------------
Caching per lock pair misses the trylock and read-kind subtleties (the
kernel's "chain cached mixed R-L/L-W ABBA" selftest); caching per class
misses the context the lock is taken in.

The solution (the kernel's)
---------------------------
A thread's *chain* is the sequence of (class, read kind) of the locks it
holds, extended by one step per acquisition.  A chain seen before was
validated before, with the same verdict.  The kernel hashes the chain into
a key and looks it up; here the cache is the trie those keys describe (see
``_Chain``), so the hot path is one dict probe with an int key, takes no
lock and allocates only the held entry.  Only a new chain runs the checks,
under one internal graph lock (a raw ``threading.Lock``: the validator must
never validate itself):

- invalid context: a sleeping lock (blocking) while a non-sleeping one is
  held (a trylock cannot sleep: ``check_wait_context()`` skips it too);
- ``check_deadlock``: the same class already held ("recursive");
- ``check_prevs_add``: an edge from every held lock walking down through
  consecutive trylocked entries to the first blocking one, each edge typed
  ER/EN/SR/SN and each new edge first searched for a *strong* cycle
  (``check_noncircular``).

Two deliberate refinements of the kernel, both strictly more precise:
a chain step also tells trylocks and nest-locked acquisitions apart (the
kernel's hlock_id does not, so a chain first seen with a blocking lock
hides the edges the trylocked variant must add), and the strong-path search keeps a
node's "only_xr" state as part of what was visited (the kernel marks a
class visited once, so a class first reached through -(xR)-> is never
re-entered through a stronger -(xN)->).  Unlike the kernel, the validator
does not switch itself off after a report: reports are de-duplicated by
signature and it keeps going, so one run lists every distinct problem.

Context: listener methods run in the thread doing the lock operation, before
(``acquire``, ``release``) or after (``acquired``, ``downgrade``) the real
lock operation.  Reports are built and handed to subscribers outside the
graph lock.
"""
import sys
import threading
import weakref
from collections import deque
from threading import get_ident

from loguru import logger

from ..errors import LockdepError, LockUsageError
from . import events as _ev
from ._base import EXCLUSIVE, MAX_LOCKDEP_SUBCLASSES, SHARED, all_class_keys
from ..stacktrace import stack_site
from .lockdep_report import (_LOCKING_DIR, HeldLock, Report, capture_stack, caller_site,
                             dump_stack, format_held, format_stack, lock_addr, lock_desc, reset_labels,
                             thread_label, thread_name)

__all__ = ["enable", "disable", "is_enabled", "reset", "reports", "configure",
           "subscribe", "unsubscribe", "held_locks", "lockdep_assert_held",
           "lockdep_assert_held_read", "lockdep_assert_held_write",
           "lockdep_assert_not_held", "lock_is_held", "lockdep_sys_exit", "thread_exit",
           "set_cmp_fn", "dependencies", "record_report", "stats", "Report", "HeldLock",
           "debug_check_no_locks_freed",
           "LockdepUsageError"]


class LockdepUsageError(LockdepError, LockUsageError):
    """Raised by the validator instead of the lock's ``LockUsageError`` for a
    bad unlock when ``configure(raise_on_report=True)``: code catching either
    the report (``LockdepError``) or the misuse (``LockUsageError``) sees it."""


# -- dependency types (the kernel's DEP_*_BIT) -----------------------------------
# bit 0: prev is exclusive (E, not S); bit 1: next is not a recursive read (N, not R)
DEP_SR, DEP_ER, DEP_SN, DEP_EN = 1, 2, 4, 8
_S_MASK = DEP_SR | DEP_SN       # edges starting with a shared holder
_N_MASK = DEP_SN | DEP_EN       # edges ending in a non-recursive acquisition
_DEP_NAMES = ((DEP_ER, "ER"), (DEP_EN, "EN"), (DEP_SR, "SR"), (DEP_SN, "SN"))


def _dep(prev_read, next_read):
    """``calc_dep()``: the type bit of the edge prev -> next."""
    return 1 << ((prev_read == 0) + ((next_read != 2) << 1))


def _dep_names(mask):
    return [n for bit, n in _DEP_NAMES if mask & bit]


# -- classes and edges ----------------------------------------------------------------

class _Class:
    """A lock class: (LockClassKey, subclass).  ``after`` maps each class
    taken while this one was held to the edge (protected by _graph_lock;
    read without it only by ``dependencies()``, which copies)."""

    __slots__ = ("key", "subclass", "name", "id", "tok0", "sleeping", "after", "cmp_fn")

    def __init__(self, key, subclass, id):
        self.key = key
        self.subclass = subclass
        self.name = key.name if subclass == 0 else f"{key.name}/{subclass}"
        self.id = id
        self.tok0 = id << 4     # + read (0..2) + 4 trylock + 8 nest: see _token()
        self.sleeping = key.sleeping
        self.after = {}
        self.cmp_fn = _cmp_fns.get(key.name)

    def __repr__(self):
        return f"<lockdep class {self.name}>"


class _Edge:
    """A dependency ``prev -> next``: its type bits and the stack that first
    recorded it (innermost first; None when stacks are off)."""

    __slots__ = ("mask", "stack")

    def __init__(self, mask, stack):
        self.mask = mask
        self.stack = stack


# -- the chain cache ---------------------------------------------------------------
# The kernel hashes a chain key per step (iterate_chain_key) and looks it up
# in a hash table.  Here the cache is the trie those keys describe: one node
# per chain, its children keyed by a step's token -- an int per (class, read
# kind, trylock, nest-lock flag).  A thread's chain is the node of its
# innermost held entry; extending it is one dict probe with an int key, and
# two chains never collide.

class _Chain(dict):
    """A chain of held locks (``struct lock_chain``); as a dict, its
    children by step token.  ``ok``: validated, with a verdict that depends
    only on the chain (set under _graph_lock, read lock-free); ``site``:
    where it was first validated ("file:line function"; "" when stacks are
    off)."""

    __slots__ = ("ok", "site")

    def __init__(self):
        super().__init__()
        self.ok = False
        self.site = None

    __hash__ = object.__hash__      # a node, not a value
    __eq__ = object.__eq__


_root = _Chain()        # the empty chain
_nchains = 0            # validated chains (protected by _graph_lock)


def _token(c, read, trylock, nest_lock):
    """A step's key: ``hlock_id()`` plus the trylock and nest-lock flags."""
    return c.tok0 + read + 4 * trylock + (8 if nest_lock is not None else 0)


def _chain_of(held):
    return held[-1][H_CHAIN] if held else _root


def _clear_chains():
    """Forget every validated chain.  Chains still referenced by held
    entries survive as orphans with no children: extending them validates
    afresh.  Context: caller holds _graph_lock."""
    global _nchains
    todo = [_root]
    while todo:
        n = todo.pop()
        todo.extend(n.values())
        n.clear()
        n.ok = False
    _nchains = 0


# -- held entries ---------------------------------------------------------------------
# A held entry is a plain tuple (the hot path allocates nothing else):
#   (lock, read, trylock, subclass, class, chain ending in it, nest_lock)
H_LOCK, H_READ, H_TRY, H_SUB, H_CLASS, H_CHAIN, H_NEST = range(7)


def _site(e):
    return e[H_CHAIN].site or None


def _snapshot(e, site=None):
    return HeldLock(e[H_LOCK], e[H_READ], e[H_TRY], e[H_SUB], e[H_CLASS].name,
                    site or _site(e), e[H_NEST])


class _ThreadState:
    """A thread's held-lock stack (with the chain keys).  Only its own thread
    changes it; others (``held_locks(tid)``, the hung-task watchdog) copy
    ``held``, a list, which is atomic under the GIL.

    It lives in a ``threading.local``: CPython drops a thread's locals when
    the thread finishes, before ``join()`` returns, so ``__del__`` sees the
    locks a thread still held when it exited -- no cooperation needed."""

    __slots__ = ("tid", "name", "held", "pending", "exit_checked", "__weakref__")

    def __init__(self, tid, name):
        self.tid = tid
        self.name = name
        self.held = []              # entries, outermost first; the last one's key is the chain's
        self.pending = None         # entry validated at acquire, pushed at acquired
        self.exit_checked = False

    def __del__(self):
        try:
            ref = _states.get(self.tid)
            if ref is not None and ref() in (self, None):   # ours (or dead)
                del _states[self.tid]
            if self.held and not self.exit_checked and _enabled and not sys.is_finalizing():
                _check_exit(self, may_raise=False)
        except Exception:   # a destructor must not raise (nor complain at interpreter exit)
            pass


class _LockdepLocal(threading.local):
    st = None               # the thread's _ThreadState (a class default: no AttributeError)


_tls = _LockdepLocal()
# tid -> weakref to the thread's _ThreadState, for other threads to read.
# One-step dict operations only (atomic under the GIL); readers copy it.
_states = {}


def _new_state():
    st = _ThreadState(get_ident(), threading.current_thread().name)
    _tls.st = st
    _states[st.tid] = weakref.ref(st)
    return st


def _live_states():
    out = []
    for tid, ref in _states.copy().items():
        st = ref()
        if st is not None:
            out.append((tid, st))
    return out


def _state():
    st = _tls.st
    return st if st is not None else _new_state()


# -- global state ----------------------------------------------------------------------
_graph_lock = threading.Lock()  # lockdep_lock: classes' edges, the chain cache, counters
_classes = []                   # every _Class, in creation order (protected by _graph_lock)
_cmp_fns = {}                   # class name -> cmp_fn (lock_set_cmp_fn)
_validations = 0                # chain-cache misses validated (tests count them)

_reports_lock = threading.Lock()
_reports = []
_seen = {}                      # signature -> first report
_subscribers = ()

_enabled = False
_raise_on_report = False
_stacks = True


def _class_of(lock, subclass):
    """The class of ``lock`` taken with ``subclass`` (``register_lock_class``)."""
    key = lock.key
    cl = key.lockdep
    if cl is not None:
        c = cl[subclass]
        if c is not None:
            return c
    with _graph_lock:
        if key.lockdep is None:
            key.lockdep = [None] * MAX_LOCKDEP_SUBCLASSES
        c = key.lockdep[subclass]
        if c is None:
            c = key.lockdep[subclass] = _Class(key, subclass, len(_classes) + 1)
            _classes.append(c)
    return c


# -- the listener: hot paths ----------------------------------------------------------

def _acquire(lock, read, trylock, subclass, nest_lock):
    """Before every attempt: validate a new chain, then park the entry
    until ``acquired``.  A cache hit is one dict probe with an int key."""
    st = _tls.st
    if st is None:
        st = _new_state()
    held = st.held
    cl = lock.key.lockdep
    c = cl[subclass] if cl is not None else None
    if c is None:
        c = _class_of(lock, subclass)
    tok = c.tok0 + read                     # _token(), inlined
    if trylock:
        tok += 4
    if nest_lock is not None:
        tok += 8
    chain = (held[-1][5] if held else _root).get(tok)
    if chain is None or not chain.ok:
        chain = _validate_acquire(st, lock, read, trylock, subclass, nest_lock, c, tok)
    st.pending = (lock, read, trylock, subclass, c, chain, nest_lock)


def _acquired(lock, read, trylock, subclass, nest_lock):
    """The thread now holds it: push the entry validated at ``acquire``."""
    st = _tls.st
    if st is None:
        st, e = _new_state(), None
    else:
        e = st.pending
    if e is None or e[0] is not lock:
        # enabled between acquire and acquired: validate now, never raise
        # (the lock is already held)
        c = _class_of(lock, subclass)
        tok = _token(c, read, trylock, nest_lock)
        chain = _chain_of(st.held).get(tok)
        if chain is None or not chain.ok:
            chain = _validate_acquire(st, lock, read, trylock, subclass, nest_lock, c, tok,
                                      may_raise=False)
        e = (lock, read, trylock, subclass, c, chain, nest_lock)
    st.pending = None
    st.held.append(e)


def _release(lock, read):
    """Before the real release: pop the entry (the innermost usually)."""
    st = _tls.st
    if st is None:
        st = _new_state()
    held = st.held
    if held and held[-1][0] is lock:
        del held[-1]
    else:
        _release_slow(st, lock, read)


def _downgrade(lock):
    """After ``downgrade_write``: the entry turns from exclusive to a
    non-recursive read in place, and the locks above it are re-validated
    (``__lock_downgrade`` + ``reacquire_held_locks``)."""
    st = _state()
    held = st.held
    for i in range(len(held) - 1, -1, -1):
        e = held[i]
        if e[0] is lock:
            if e[1] != 0:   # cannot happen through RwSemaphore, which checks the owner first
                _report_bad_unlock(st, lock, e[1], downgrade=True)
                return
            held[i] = (lock, 1) + e[2:]
            _reacquire(st, i, may_raise=True)
            return
    if not lock.held_by_current():
        _report_bad_unlock(st, lock, 0, downgrade=True)
    # else: taken while the validator was off; nothing to update


def _bad_unlock(lock, read):
    """A lock refused a release (or downgrade) by a thread not holding it;
    the lock raises ``LockUsageError`` right after, unless we raise first."""
    _report_bad_unlock(_state(), lock, read, downgrade=_in_downgrade())


def _not_acquired(lock, read):
    """A trylock failed, or a wait was aborted: the entry parked at
    ``acquire`` is dropped (the kernel never pushes a failed trylock, and
    pops an aborted wait), so that ``debug_check_no_locks_freed`` does not
    take it for an acquisition in progress."""
    st = _tls.st
    if st is None:
        return
    e = st.pending
    if e is not None and e[0] is lock:
        st.pending = None


class _Listener:
    """What ``events.register`` sees: plain functions, so dispatch does not
    even bind ``self``."""

    acquire = staticmethod(_acquire)
    acquired = staticmethod(_acquired)
    release = staticmethod(_release)
    downgrade = staticmethod(_downgrade)
    bad_unlock = staticmethod(_bad_unlock)
    trylock_failed = staticmethod(_not_acquired)
    aborted = staticmethod(_not_acquired)

    def __repr__(self):
        return "<lockdep validator>"


_listener = _Listener()


# -- validation (chain-cache misses) -----------------------------------------------------

def _validate_acquire(st, lock, read, trylock, subclass, nest_lock, c, tok, may_raise=True):
    """``lookup_chain_cache_add`` + ``validate_chain`` for a new chain: run
    the checks, cache the chain, then record what was found.  Returns the
    chain node for the held entry."""
    stack = capture_stack() if _stacks else None
    found = []
    with _graph_lock:
        chain = _step(_chain_of(st.held), tok, stack)
        if chain.ok:                    # another thread validated it meanwhile
            return chain
        e = (lock, read, trylock, subclass, c, chain, nest_lock)
        _check_chain(st.held, e, stack, found)
    _emit(st, found, stack, may_raise)
    return chain


def _step(parent, tok, stack):
    """The child chain of ``parent`` for step ``tok``, created if new.
    Context: caller holds _graph_lock."""
    chain = parent.get(tok)
    if chain is None:
        chain = _Chain()
        chain.site = stack_site(stack) or ""
        parent[tok] = chain
    return chain


def _check_chain(below, e, stack, found):
    """Validate entry ``e`` on top of ``below`` and mark its chain validated
    when the verdict may be cached -- not when it depends on instances, and
    not a chain that reported while reports raise: taking it again must
    raise again, not walk into the real deadlock.
    Context: caller holds _graph_lock."""
    global _nchains
    n = len(found)
    if _validate_chain(below, e, stack, found) and not (len(found) > n and _raise_on_report):
        e[H_CHAIN].ok = True
        _nchains += 1


def _validate_chain(below, e, stack, found):
    """The checks for entry ``e`` taken on top of the held entries ``below``.
    Appends (builder, args) for each problem to ``found``; returns whether
    the verdict depends only on the chain (so it may be cached).

    Context: caller holds _graph_lock."""
    global _validations
    _validations += 1
    c = e[H_CLASS]
    if e[H_TRY]:
        # A trylock never waits: no wait-context check (check_wait_context()
        # skips trylocks; folio_trylock() under a pte lock is legal), no
        # deadlock check, no edges into it.
        return True
    # Wait context: a sleeping lock under a spinlock/rwlock_t (might_sleep()).
    if c.sleeping:
        atomic = [h for h in below if not h[H_CLASS].sleeping]
        if atomic:
            found.append((_build_invalid_context, (below, e, atomic)))
    cacheable = True
    nest_lock = e[H_NEST]
    if nest_lock is not None and not any(h[H_LOCK] is nest_lock for h in below):
        # the annotation promises the nest lock is held: it is not
        # (print_lock_nested_lock_not_held); verdict depends on the instance
        found.append((_build_nest_not_held, (below, e)))
        cacheable = False
    ret, ok = _check_deadlock(below, e, found)
    cacheable &= ok
    if ret == 0 or ret == 2:
        return cacheable    # recursive (reported), or nested under its nest lock: no edges
    # check_prevs_add: all consecutive trylocks and the first blocking entry
    for prev in reversed(below):
        cacheable &= _check_prev_add(below, prev, e, stack, found)
        if not prev[H_TRY]:
            break
    return cacheable


def _check_deadlock(below, e, found):
    """Same class already held?  Returns (0 reported, 1 fine, 2 nest-lock
    nesting) and whether the verdict may be cached (a compare function
    looks at instances, not classes)."""
    c = e[H_CLASS]
    nest = None
    cacheable = True
    for prev in below:
        if prev[H_LOCK] is e[H_NEST] and e[H_NEST] is not None:
            nest = prev
        if prev[H_CLASS] is not c:
            continue
        if e[H_READ] == 2 and prev[H_READ]:
            continue        # read-after-read recursion (read_lock + read_lock)
        if c.cmp_fn is not None:
            cacheable = False
            if c.cmp_fn(prev[H_LOCK], e[H_LOCK]) < 0:
                continue
        if nest is not None:
            return 2, cacheable
        found.append((_build_recursive, (below, prev, e)))
        return 0, cacheable
    return 1, cacheable


def _check_prev_add(below, prev, e, stack, found):
    """Add ``prev -> next`` unless it closes a strong cycle (which is
    reported; the edge is still recorded, it was observed).  Returns
    whether the verdict may be cached."""
    pc, nc = prev[H_CLASS], e[H_CLASS]
    if pc is nc and pc.cmp_fn is not None:
        if pc.cmp_fn(prev[H_LOCK], e[H_LOCK]) < 0:
            return False
    path = _find_strong_path(nc, e[H_READ], pc, prev[H_READ])
    if path is not None:
        if len(path) == 1:  # next's own class reached at the root: same class
            found.append((_build_recursive, (below, prev, e)))
        else:
            found.append((_build_circular, (below, prev, e, path)))
    bit = _dep(prev[H_READ], e[H_READ])
    edge = pc.after.get(nc)
    if edge is None:
        pc.after[nc] = _Edge(bit, stack)
    else:
        edge.mask |= bit
    return True


def _find_strong_path(src, src_read, dst, dst_read):
    """``check_noncircular()``: is there a strong path src -> ... -> dst such
    that adding dst -> src closes a strong cycle?

    A path is strong when no -(xR)-> is directly followed by -(Sx)->.  The
    search state is (class, only_xr): only_xr says every way into the class
    along this path ends in a recursive read, so the next hop may not start
    with a shared holder.  (class, False) dominates (class, True).  The root
    starts only_xr when next is a recursive read (its incoming edge from
    prev ends in R); dst matches when prev is exclusive (the closing edge
    starts with E) or the path arrives with an N.

    Returns [(class, edge into it), ...] from src to dst (src's edge None),
    or None.  Context: caller holds _graph_lock."""
    root = (src, src_read == 2)
    if src is dst and (dst_read == 0 or not root[1]):
        return [(src, None)]
    parent = {root: None}
    queue = deque((root,))
    while queue:
        state = queue.popleft()
        u, xr = state
        for v, edge in u.after.items():
            dep = edge.mask & ~_S_MASK if xr else edge.mask
            if not dep:
                continue
            vxr = not (dep & _N_MASK)
            s = (v, vxr)
            if s in parent or (vxr and (v, False) in parent):
                continue
            parent[s] = (state, edge)
            if v is dst and (dst_read == 0 or not vxr):
                path = []
                while s is not None:
                    p = parent[s]
                    path.append((s[0], p[1] if p else None))
                    s = p[0] if p else None
                path.reverse()
                return path
            queue.append(s)
    return None


def _reacquire(st, i, may_raise):
    """``reacquire_held_locks()``: the entries from ``i`` up get new chains
    (an entry below them left or changed), and each new chain is validated
    as if the entry were taken again now."""
    held = st.held
    found = []
    stack = None
    with _graph_lock:
        chain = _chain_of(held[:i])
        for j in range(i, len(held)):
            e = held[j]
            tok = _token(e[H_CLASS], e[H_READ], e[H_TRY], e[H_NEST])
            nxt = chain.get(tok)
            if (nxt is None or not nxt.ok) and stack is None and _stacks:
                stack = capture_stack()     # only when something is validated
            chain = _step(chain, tok, stack)
            e = held[j] = e[:H_CHAIN] + (chain,) + e[H_CHAIN + 1:]
            if not chain.ok:
                _check_chain(held[:j], e, stack, found)
    _emit(st, found, stack, may_raise)


def _release_slow(st, lock, read):
    """Out-of-order release, or a release with no held entry."""
    held = st.held
    for i in range(len(held) - 1, -1, -1):
        if held[i][H_LOCK] is lock:
            del held[i]
            # Raising now would leave the lock held but forgotten: reports
            # from re-validating the entries above are recorded, not raised.
            _reacquire(st, i, may_raise=False)
            return
    if lock.held_by_current():
        return      # taken while the validator was off: nothing to pop
    rep = _report_bad_unlock(st, lock, read, downgrade=False, may_raise=False)
    if _raise_on_report:
        raise LockdepUsageError(rep)
    raise LockUsageError(
        f"release of {lock!r} by {threading.current_thread().name}: lockdep has no held "
        f"entry for it in this thread")


def _in_downgrade():
    """Is the bad unlock coming from ``RwSemaphore.downgrade_write``?"""
    f = sys._getframe(1)
    while f is not None:
        co = f.f_code
        if co.co_name == "downgrade_write" and co.co_filename.startswith(_LOCKING_DIR):
            return True
        f = f.f_back
    return False


# -- recording and dispatching reports ----------------------------------------------------

def record_report(rep, may_raise=False):
    """Record a report (unless its signature was seen since the last
    reset), log it, hand it to subscribers; with ``may_raise`` and
    ``raise_on_report`` set, raise ``LockdepError`` -- duplicates too, so a
    check that fails never lets the thread walk into the real deadlock.
    Returns the recorded (or first) report.  Other detectors (the hung-task
    watchdog) record theirs here too."""
    with _reports_lock:
        first = _seen.get(rep.signature)
        if first is None:
            _seen[rep.signature] = rep
            _reports.append(rep)
    if first is None:
        logger.opt(depth=1).warning("lockdep: {}\n{}", rep.title, rep.text)
        err = None
        for fn in _subscribers:
            try:
                fn(rep)
            except BaseException as exc:    # every subscriber runs; the first error wins
                err = err or exc
        if err is not None:
            raise err
    else:
        rep = first
    if may_raise and _raise_on_report:
        raise LockdepUsageError(rep) if rep.kind == "bad-unlock" else LockdepError(rep)
    return rep


def _emit(st, found, stack, may_raise):
    """Build and record the problems a validation found (outside _graph_lock)."""
    if not found:
        return
    if stack is None:
        stack = capture_stack() if _stacks else None
    first = None
    for build, args in found:
        rep = record_report(build(st, stack, *args))
        first = first or rep
    if may_raise and _raise_on_report:
        raise LockdepError(first)


# -- report builders --------------------------------------------------------------------------

def _name(st):
    return thread_name(st.tid, st.name)     # the live name: threads get renamed


def _label(st):
    return thread_label(_name(st), st.tid)


def _held_lines(st, held):
    return format_held(_name(st), st.tid, [_snapshot(h) for h in held])


def _desc(e):
    return lock_desc(e[H_LOCK], e[H_CLASS].name, e[H_READ], _site(e))


def _thread(st):
    return {"name": _name(st), "tid": st.tid}


def _entry_data(e, site=None):
    return _snapshot(e, site).as_dict()


def _lk(e, cpu_read=True):
    """``lock(name)`` or ``rlock(name)`` for the scenario tables."""
    return f"{'rlock' if cpu_read and e[H_READ] else 'lock'}({e[H_CLASS].name});"


def _build_circular(st, stack, below, prev, e, path):
    """``print_circular_bug()``.  ``path`` runs next -> ... -> prev."""
    title = "WARNING: possible circular locking dependency detected"
    label = _label(st)
    nc, pc = e[H_CLASS], prev[H_CLASS]
    new_site = stack_site(stack)
    body = [f"{label} is trying to acquire lock:",
            lock_desc(e[H_LOCK], nc.name, e[H_READ], new_site), "",
            "but task is already holding lock:", _desc(prev), "",
            "which lock already depends on the new lock.", "",
            "the existing dependency chain (in reverse order) is:"]
    # #depth is prev (the edge into it was recorded last on the path), down
    # to #0: next, whose "edge" is this acquisition, with the current stack.
    depth = len(path) - 1
    for k in range(depth, -1, -1):
        cls, edge = path[k]
        s = stack if k == 0 else edge.stack
        body += ["", f"-> #{k} ({cls.name}):"]
        body += format_stack(s, "      ")
    parent = path[-2][0]
    body += ["", "other info that might help us debug this:", ""]
    if parent is not nc:
        body += ["Chain exists of:", f"  {nc.name} --> {parent.name} --> {pc.name}", ""]
    body += [" Possible unsafe locking scenario:", "",
             "       CPU0                    CPU1",
             "       ----                    ----",
             f"  {_lk(prev)}",
             f"                               lock({parent.name});",
             f"                               lock({pc.name});",
             f"  {_lk(e)}", "", " *** DEADLOCK ***", ""]
    body += _held_lines(st, below)
    body += ["", "stack backtrace:"] + dump_stack(stack)
    cycle = [pc.name] + [cls.name for cls, _ in path]     # prev -> next -> ... -> (prev)
    cycle = cycle[:-1]
    r = cycle.index(min(cycle))
    edges = [{"from": pc.name, "to": nc.name, "types": _dep_names(_dep(prev[H_READ], e[H_READ])),
              "stack": stack}]
    for k in range(1, len(path)):
        edges.append({"from": path[k - 1][0].name, "to": path[k][0].name,
                      "types": _dep_names(path[k][1].mask), "stack": path[k][1].stack})
    data = {"thread": _thread(st), "classes": [cls.name for cls, _ in path],
            "lock": _entry_data(e, new_site),
            "held_lock": _entry_data(prev), "edges": edges,
            "held": [_entry_data(h) for h in below], "stack": stack}
    return Report("circular", title, body, data, ("circular",) + tuple(cycle[r:] + cycle[:r]))


def _build_recursive(st, stack, below, prev, e):
    """``print_deadlock_bug()``."""
    title = "WARNING: possible recursive locking detected"
    c = e[H_CLASS]
    new_site = stack_site(stack)
    body = [f"{_label(st)} is trying to acquire lock:",
            lock_desc(e[H_LOCK], c.name, e[H_READ], new_site), "",
            "but task is already holding lock:", _desc(prev)]
    if c.cmp_fn is not None:
        body.append(f"and the lock comparison function returns "
                    f"{c.cmp_fn(prev[H_LOCK], e[H_LOCK])}:")
    body += ["", "other info that might help us debug this:",
             " Possible unsafe locking scenario:", "", "       CPU0", "       ----",
             f"  {_lk(prev)}", f"  {_lk(e)}", "", " *** DEADLOCK ***", "",
             " May be due to missing lock nesting notation", ""]
    body += _held_lines(st, below)
    body += ["", "stack backtrace:"] + dump_stack(stack)
    data = {"thread": _thread(st), "classes": [c.name],
            "lock": _entry_data(e, new_site),
            "held_lock": _entry_data(prev), "held": [_entry_data(h) for h in below],
            "stack": stack}
    return Report("recursive", title, body, data, ("recursive", c.name))


def _build_invalid_context(st, stack, below, e, atomic):
    """``__might_resched()``: a sleeping lock taken in atomic context."""
    title = "BUG: sleeping function called from invalid context"
    c = e[H_CLASS]
    site = stack_site(stack)
    where = site.split(" ", 1)[-1] if site else "?"     # the kernel prints file:line here
    body = [f"in_atomic(): 1, irqs_disabled(): 0, non_block: 0, pid: {st.tid}, name: {_name(st)}",
            f"{_label(st)} is trying to acquire a sleeping lock:",
            lock_desc(e[H_LOCK], c.name, e[H_READ], site),
            "while holding non-sleeping lock" + ("s" if len(atomic) > 1 else "") + ": "
            + ", ".join(h[H_CLASS].name for h in atomic), ""]
    body += _held_lines(st, below)
    body += ["", "stack backtrace:"] + dump_stack(stack)
    data = {"thread": _thread(st), "classes": [c.name] + [h[H_CLASS].name for h in atomic],
            "lock": _entry_data(e), "held": [_entry_data(h) for h in below], "stack": stack}
    sig = ("invalid-context", c.name, tuple(h[H_CLASS].name for h in atomic), site)
    return Report("invalid-context", title, body, data, sig, framed=False,
                  headline=f"{title} at {where}")


def _build_nest_not_held(st, stack, below, e):
    """``print_lock_nested_lock_not_held()``: reported as a failed assertion
    (the nest-lock annotation asserts the nest lock is held)."""
    nest = e[H_NEST]
    label = f"lockdep_assert_held({nest.key.name})"
    title = f"WARNING: {label} failed"
    site = stack_site(stack)
    body = ["WARNING: Nested lock was not taken",
            f"{_label(st)} is trying to lock:",
            lock_desc(e[H_LOCK], e[H_CLASS].name, e[H_READ], site), "",
            "but this task is not holding:", f"{id(nest):#x} ({nest.key.name}){{{nest.KIND}}}",
            "", "other info that might help us debug this:"]
    body += _held_lines(st, below)
    body += ["", "stack backtrace:"] + dump_stack(stack)
    data = {"thread": _thread(st), "classes": [e[H_CLASS].name, nest.key.name],
            "assertion": "nest_lock", "lock": _entry_data(e),
            "held": [_entry_data(h) for h in below], "stack": stack}
    return Report("assertion", title, body, data,
                  ("assertion", "nest_lock", e[H_CLASS].name, nest.key.name, site))


def _report_bad_unlock(st, lock, read, downgrade, may_raise=True):
    """``print_unlock_imbalance_bug()`` (or the downgrade-of-a-read-lock WARN)."""
    stack = capture_stack()
    site = stack_site(stack) or "?"
    name = lock.key.name
    held = list(st.held)
    if downgrade and any(h[H_LOCK] is lock and h[H_READ] for h in held):
        kind, title = "bad-downgrade", "WARNING: downgrading a read lock"
        body = [f"{_label(st)} is trying to downgrade lock ({name}) at:",
                site, "but it holds the lock for read, not for write!"]
    else:
        kind, title = "bad-unlock", "WARNING: bad unlock balance detected!"
        what = "downgrade" if downgrade else "release"
        # print_ip_sym(): "[<ip>] func+off/size"; Python has no ip, pymm prints zero
        body = [f"{_label(st)} is trying to {what} lock ({name}) at:",
                f"[<0000000000000000>] {site}", "but there are no more locks to release!"]
    body += ["", "other info that might help us debug this:"] + _held_lines(st, held)
    body += ["", "stack backtrace:"] + dump_stack(stack)
    data = {"thread": _thread(st), "classes": [name], "lock": lock_addr(lock),
            "read": read, "held": [_entry_data(h) for h in held], "stack": stack}
    return record_report(Report(kind, title, body, data, (kind, name, site)), may_raise)


def register_non_static_key(what, may_raise=True):
    """``register_lock_class()`` meeting a lock whose key is not a static
    object: memory used as a lock that was never initialised as one (its
    ``dep_map`` holds whatever bytes were there).  The kernel prints "INFO:
    trying to register non-static key." and turns the validator off
    (``debug_locks_off``); pymm records the report (``what`` names the
    memory) and keeps validating.  pymm's typed locks always have a
    registered key, so only code that models a mistyped pointer calls this.
    Returns the report, or None with the validator off."""
    if not _enabled:
        return None
    st = _state()
    stack = capture_stack() if _stacks else None
    site = stack_site(stack) or "?"
    title = "INFO: trying to register non-static key."
    body = ["The code is fine but needs lockdep annotation, or maybe",
            "you didn't initialize this object before use?",
            "turning off the locking correctness validator.",
            f"(the lock: {what})", "", "stack backtrace:"] + dump_stack(stack)
    data = {"thread": _thread(st), "lock": what, "stack": stack}
    return record_report(Report("non-static-key", title, body, data,
                                ("non-static-key", what, site), framed=False), may_raise)


FREED_HELD_TITLE = "WARNING: held lock freed!"
FREED_OTHER_TITLE = "WARNING: lock freed while another task holds it!"


def _held_in(st, locks, acquiring):
    """(st, entry, is it an acquisition in progress) for the first entry of
    ``st`` (held, or with ``acquiring`` the one parked at acquire) that is
    one of ``locks``; else None."""
    for e in list(st.held):
        if any(e[H_LOCK] is lk for lk in locks):
            return st, e, False
    e = st.pending
    if acquiring and e is not None and any(e[H_LOCK] is lk for lk in locks):
        return st, e, True
    return None


def debug_check_no_locks_freed(what, locks, others=False, frame=None):
    """``debug_check_no_locks_freed()``, which the kernel's slab and page
    allocators run on every block they free: a lock inside the freed memory
    that the freeing task still holds is reported "held lock freed!".
    ``what`` names the object, ``locks`` are the locks embedded in it,
    ``frame`` is where the stack trace starts (the freeing function).

    ``others`` -- pymm's own extension (the kernel looks only at current's
    held locks): a lock of the freed object held by *another* task, or that
    another task is acquiring (lockdep counts a lock from ``lock_acquire``
    on, before the attempt and any wait: the entry parked at ``acquire``),
    is reported at the free, "lock freed while another task holds it!".
    That task then takes, owns or releases freed memory, or keeps a lock
    nobody can release any more; whatever it does next is a later symptom
    of this free, and depends on the interleaving.  Returns the report, or
    None (validator off, nothing held)."""
    if not _enabled:
        return None
    cur = _state()
    found = _held_in(cur, locks, False)             # the kernel's check
    if found is None and others:
        for tid, st in _live_states():
            if st is not cur:
                found = _held_in(st, locks, True)
                if found is not None:
                    break
    if found is None:
        return None
    holder, e, acquiring = found
    stack = capture_stack(frame=frame) if _stacks else None
    site = stack_site(stack) or "?"
    name = e[H_CLASS].name
    if holder is cur:
        kind, title = "freed-held", FREED_HELD_TITLE
        body = [f"{_label(cur)} is freeing memory {what}, with a lock still held there!",
                _desc(e)] + _held_lines(cur, list(cur.held))
    else:
        kind, title = "freed-other", FREED_OTHER_TITLE
        how = "is acquiring" if acquiring else "holds"
        body = [f"{_label(cur)} is freeing memory {what}, with a lock there that "
                f"{_label(holder)} {how}!",
                f" {_desc(e)}",
                "(pymm's own check: the kernel's looks only at the freeing task's locks;",
                " lockdep counts a lock as held from lock_acquire, before any wait)", ""]
        body += _held_lines(holder, list(holder.held)) + [""] + _held_lines(cur, list(cur.held))
    body += ["", "stack backtrace:"] + dump_stack(stack)
    data = {"thread": _thread(cur), "holder": _thread(holder), "classes": [name],
            "lock": lock_addr(e[H_LOCK]), "object": what, "stack": stack,
            "pymm_only": kind == "freed-other"}
    return record_report(Report(kind, title, body, data, (kind, name, site)), True)


def _check_exit(st, may_raise):
    """Locks still held when a thread finishes."""
    st.exit_checked = True
    held = list(st.held)
    if not held:
        return None
    title = "WARNING: lock held when thread exited!"
    body = [f"{_label(st)} is exiting with locks still held!"]
    body += _held_lines(st, held)
    data = {"thread": _thread(st), "classes": [h[H_CLASS].name for h in held],
            "held": [_entry_data(h) for h in held]}
    sig = ("thread-exit",) + tuple((h[H_CLASS].name, _site(h)) for h in held)
    return record_report(Report("thread-exit", title, body, data, sig), may_raise)


# -- public API ---------------------------------------------------------------------------------

def enable():
    """Register the validator first on the choke point.  Toggle only while
    no lock is held: locks taken while it was off are not on its stacks."""
    global _enabled
    _enabled = True
    _ev.register(_listener, first=True)


def disable():
    """Unregister: locks take their fast path again (if nothing else listens)."""
    global _enabled
    _enabled = False
    _ev.unregister(_listener)


def is_enabled():
    return _enabled


def reset():
    """Forget the dependency graph (every class's edges), the chain cache
    and the reports.  Classes and threads' held stacks are kept."""
    global _validations
    with _graph_lock:
        for c in _classes:
            c.after.clear()
        _clear_chains()
        _validations = 0
    with _reports_lock:
        _reports.clear()
        _seen.clear()
    reset_labels()


def reports():
    """The reports recorded since the last ``reset()``, in order."""
    with _reports_lock:
        return list(_reports)


def configure(*, raise_on_report=None, stacks=None):
    """Set options (None leaves one unchanged); returns the previous
    settings as a dict, so ``configure(**prev)`` restores them.

    raise_on_report: after recording a report, raise ``LockdepError`` in the
      thread that triggered it; acquire-time reports raise before the real
      lock is attempted.  Not raised: reports found while re-validating
      after an out-of-order release (the release must complete), thread-exit
      reports found by the destructor, the hung-task watchdog's reports.
    stacks: capture a Python stack for each new dependency and report
      (chain-cache misses only).  Off, reports print no stacks."""
    global _raise_on_report, _stacks
    prev = {"raise_on_report": _raise_on_report, "stacks": _stacks}
    if raise_on_report is not None and bool(raise_on_report) != _raise_on_report:
        with _graph_lock:
            _raise_on_report = bool(raise_on_report)
            # cached chains include ones that reported: they must be checked
            # (and raise) again rather than be skipped into a real deadlock
            _clear_chains()
    if stacks is not None:
        _stacks = bool(stacks)
    return prev


def subscribe(fn):
    """Call ``fn(report)`` right after each new report is recorded, in the
    reporting thread."""
    global _subscribers
    with _reports_lock:
        if fn not in _subscribers:
            _subscribers = _subscribers + (fn,)


def unsubscribe(fn):
    global _subscribers
    with _reports_lock:
        _subscribers = tuple(f for f in _subscribers if f is not fn and f != fn)



def held_locks(tid=None):
    """The held-lock stack of thread ``tid`` (default: the caller),
    outermost first, as ``HeldLock`` snapshots."""
    if tid is None or tid == get_ident():
        st = _state()
    else:
        ref = _states.get(tid)
        st = ref() if ref is not None else None
        if st is None:
            return []
    return [_snapshot(e) for e in list(st.held)]


def holds_locks():
    """Does the calling thread hold any lock (what ``held_locks()`` would
    list), without building the snapshots?"""
    st = _tls.st
    return st is not None and bool(st.held)


def all_held_locks():
    """{(thread name, tid): [HeldLock, ...]} for every thread holding a lock
    (``debug_show_all_locks``)."""
    out = {}
    for tid, st in _live_states():
        held = list(st.held)
        if held:
            out[(thread_name(tid, st.name), tid)] = [_snapshot(e) for e in held]
    return out


def lock_is_held(lock, read=None):
    """``lock_is_held_type()``: does the calling thread hold ``lock``
    (read=None any mode, False/0 for write, True/1 for read)?  None when the
    validator is off (unknown)."""
    if not _enabled:
        return None
    held_by = getattr(lock, "held_by_current", None)
    if held_by is not None:     # O(1): the lock's own owner / readers
        return held_by(None if read is None else SHARED if read else EXCLUSIVE)
    for e in reversed(_state().held):       # a lockdep map (no holders of its own)
        if e[H_LOCK] is lock:
            return read is None or bool(e[H_READ]) == bool(read)
    return False


def _assert(lock, ok, what, why, name):
    if ok:
        return None
    st = _state()
    held = list(st.held)
    stack = capture_stack()
    site = stack_site(stack) or "?"
    label = f"{name or what}({lock.key.name})"
    title = f"WARNING: {label} failed"
    body = [f"{_label(st)} at {site}:",
            f"{lock_addr(lock)} ({lock.key.name}){{{lock.KIND}}} {why}", ""]
    body += _held_lines(st, held)
    body += ["", "stack backtrace:"] + dump_stack(stack)
    data = {"thread": _thread(st), "classes": [lock.key.name], "assertion": name or what,
            "lock": lock_addr(lock), "held": [_entry_data(h) for h in held], "stack": stack}
    return record_report(Report("assertion", title, body, data,
                                ("assertion", name or what, lock.key.name, site)), True)


def lockdep_assert_held(lock, *, name=None):
    """Report "assertion" unless the calling thread holds ``lock`` (any
    mode).  Passes silently when the validator is off.  ``name`` is the
    wrapper's name to print (e.g. "mmap_assert_locked")."""
    h = lock_is_held(lock)
    return _assert(lock, h is not False, "lockdep_assert_held", "is not held", name)


def lockdep_assert_held_read(lock, *, name=None):
    h = lock_is_held(lock, read=True)
    return _assert(lock, h is not False, "lockdep_assert_held_read",
                   "is not held for read", name)


def lockdep_assert_held_write(lock, *, name=None):
    h = lock_is_held(lock, read=False)
    return _assert(lock, h is not False, "lockdep_assert_held_write",
                   "is not held for write", name)


def lockdep_assert_not_held(lock, *, name=None):
    h = lock_is_held(lock)
    return _assert(lock, h is not True, "lockdep_assert_not_held", "is held", name)


def lockdep_sys_exit():
    """The syscall layer calls this on every return to user space."""
    if not _enabled:
        return None
    st = _state()
    held = list(st.held)
    if not held:
        return None
    title = "WARNING: lock held when returning to user space!"
    site = caller_site()
    body = [f"{_label(st)} is leaving the kernel with locks still held!"]
    body += _held_lines(st, held)
    data = {"thread": _thread(st), "classes": [h[H_CLASS].name for h in held],
            "held": [_entry_data(h) for h in held], "site": site}
    sig = ("user-return", site) + tuple(h[H_CLASS].name for h in held)
    return record_report(Report("user-return", title, body, data, sig), True)


def thread_exit():
    """Report the locks the calling thread still holds as it finishes.  The
    scheduler's managed threads call it; plain threads are checked anyway
    when their thread-locals are dropped."""
    if not _enabled:
        return None
    return _check_exit(_state(), may_raise=True)


def set_cmp_fn(lock_or_class_name, fn):
    """``lock_set_cmp_fn()``: same-class nesting is allowed when
    ``fn(held_lock, new_lock) < 0`` (address-ordered locks, e.g. pte locks).
    Applies to every lock kind with that class name, now and later."""
    name = lock_or_class_name if isinstance(lock_or_class_name, str) else lock_or_class_name.key.name
    if fn is not None and not callable(fn):
        raise LockUsageError(f"set_cmp_fn: {fn!r} is not callable")
    with _graph_lock:
        _cmp_fns[name] = fn
        for key in all_class_keys():
            if key.name == name and key.lockdep is not None:
                for c in key.lockdep:
                    if c is not None:
                        c.cmp_fn = fn
        _clear_chains()     # cached verdicts were made without it


def dependencies():
    """The observed graph: [(from class, to class, {"ER","EN","SR","SN"...})]."""
    with _graph_lock:
        return [(c.name, n.name, set(_dep_names(e.mask)))
                for c in _classes for n, e in list(c.after.items())]


def stats():
    """Counters: classes, edges, cached chains, validations (cache misses)."""
    with _graph_lock:
        return {"classes": len(_classes), "edges": sum(len(c.after) for c in _classes),
                "chains": _nchains, "validations": _validations}


enable()
