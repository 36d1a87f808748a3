"""What every pymm lock shares: its lockdep class key, holder bookkeeping,
statistics and repr, and the exclusive-lock body that SpinLock and Mutex are
configurations of.

Holder bookkeeping is kept by the lock itself (not by lockdep) because it must
work with the validator off: releasing a lock this thread does not hold raises
``LockUsageError`` *before* the underlying primitive is touched, and the
scheduler and hung-task watchdog need "who holds it" (rwsem readers included)
to print wait-for cycles.
"""
import threading
from threading import get_ident

from ..errors import LockUsageError
from . import events as _ev

MAX_LOCKDEP_SUBCLASSES = 8
SINGLE_DEPTH_NESTING = 1

# read kinds, as lockdep numbers them
EXCLUSIVE, SHARED, SHARED_RECURSIVE = 0, 1, 2


class LockClassKey:
    """The static key of a lock class (``struct lock_class_key``): all locks
    built with the same name and kind share one.  Lockdep hangs its per-class
    data off ``lockdep`` (a list indexed by subclass, filled lazily)."""

    __slots__ = ("name", "kind", "sleeping", "id", "lockdep", "__weakref__")

    def __init__(self, name, kind, sleeping, id):
        self.name = name
        self.kind = kind
        self.sleeping = sleeping
        self.id = id
        self.lockdep = None

    def __repr__(self):
        return f"<lock class {self.name!r} ({self.kind})>"


_keys = {}
_keys_lock = threading.Lock()   # registration only


def class_key(name, kind, sleeping):
    """The shared key for (name, kind).  Different lock types never share a
    class, as in the kernel where each lock declaration has its own key."""
    if not isinstance(name, str) or not name:
        raise LockUsageError(f"a lock needs a non-empty class name, got {name!r}")
    k = _keys.get((kind, name))
    if k is None:
        with _keys_lock:
            k = _keys.get((kind, name))
            if k is None:
                k = _keys[(kind, name)] = LockClassKey(name, kind, sleeping, len(_keys))
    return k


def all_class_keys():
    return list(_keys.values())


def check_subclass(subclass):
    if type(subclass) is not int or not 0 <= subclass < MAX_LOCKDEP_SUBCLASSES:
        raise LockUsageError(
            f"lockdep subclass must be an int in 0..{MAX_LOCKDEP_SUBCLASSES - 1}, got {subclass!r}")
    return subclass


def _thread_name(tid):
    for t in threading.enumerate():
        if t.ident == tid:
            return t.name
    return f"thread-{tid}"


class LockBase:
    """Fields common to every lock.  ``owner`` is the thread id of an
    exclusive holder; ``readers`` maps thread id -> read depth (rw locks)."""

    KIND = "?"
    SLEEPING = True
    __slots__ = ("name", "key", "owner", "readers", "acquisitions", "contentions",
                 "waiters", "backend", "__weakref__")

    def __init__(self, name):
        self.key = class_key(name, self.KIND, self.SLEEPING)
        self.name = name
        self.owner = None
        self.readers = None
        self.acquisitions = 0
        self.contentions = 0
        self.waiters = 0
        self.backend = _ev.backend()

    # -- introspection ------------------------------------------------------
    def holders(self):
        """Thread ids holding the lock, in any mode."""
        if self.owner is not None:
            return [self.owner]
        return list(self.readers) if self.readers else []

    def held_by_current(self, read=None):
        """Does the calling thread hold it (read=None any mode, 0 write, 1 read)?"""
        tid = get_ident()
        if read != SHARED and self.owner == tid:
            return True
        return read != EXCLUSIVE and bool(self.readers) and tid in self.readers

    def is_locked(self):
        return self.owner is not None or bool(self.readers)

    def statistics(self):
        """A snapshot: who holds it, how many wait, lifetime counts."""
        return {
            "name": self.name,
            "kind": self.KIND,
            "locked": self.is_locked(),
            "owner": None if self.owner is None else _thread_name(self.owner),
            "readers": {_thread_name(t): n for t, n in (self.readers or {}).copy().items()},
            "waiters": self.waiters,
            "acquisitions": self.acquisitions,   # counted while watched
            "contentions": self.contentions,     # counted while watched
        }

    def __repr__(self):
        if self.owner is not None:
            state = f"held by {_thread_name(self.owner)}"
        elif self.readers:
            state = "read-held by " + ", ".join(
                f"{_thread_name(t)}x{n}" if n > 1 else _thread_name(t)
                for t, n in self.readers.copy().items())
        else:
            state = "unlocked"
        w = f", {self.waiters} waiting" if self.waiters else ""
        return f"<{type(self).__name__} {self.name!r} {state}{w} at {id(self):#x}>"

    # -- slow paths shared by every lock --------------------------------------
    def _wait(self, attempt, read):
        """The first try failed: count it, tell the listeners, then block in
        ``attempt(True)`` (the backend decides what blocking means)."""
        self.contentions += 1
        self.waiters += 1
        try:
            if _ev.on:
                _ev.contended(self, read)
            attempt(True)
        except BaseException:
            if _ev.on:
                _ev.aborted(self, read)
            raise
        finally:
            self.waiters -= 1

    def _bad_unlock(self, read, what):
        if _ev.on:
            _ev.bad_unlock(self, read)
        raise LockUsageError(
            f"{what} of {self!r} by {threading.current_thread().name}, which does not hold it"
            + (" for read" if read else "" if read is None else ""))


class ExclusiveLock(LockBase):
    """A non-recursive exclusive lock; SpinLock and Mutex configure it."""

    __slots__ = ("_raw",)

    def __init__(self, name):
        super().__init__(name)
        self._raw = self.backend.lock_factory()

    def lock_nested(self, subclass):
        """``spin_lock_nested`` / ``mutex_lock_nested``."""
        self._lock(check_subclass(subclass), None)

    def lock_nest_lock(self, nest_lock):
        """``spin_lock_nest_lock`` / ``mutex_lock_nest_lock``: many locks of
        this class may nest under the held ``nest_lock``."""
        self._lock(0, nest_lock)

    def _lock(self, subclass=0, nest_lock=None):
        raw = self._raw
        if _ev.on:
            _ev.acquire(self, 0, False, subclass, nest_lock)
            if not raw.acquire(False):
                self._wait(raw.acquire, 0)
            self.owner = get_ident()
            self.acquisitions += 1
            _ev.acquired(self, 0, False, subclass, nest_lock)
        else:
            raw.acquire()
            self.owner = get_ident()

    lock = _lock    # the body itself: no extra frame on the hot path

    def trylock(self):
        if _ev.on:
            _ev.acquire(self, 0, True, 0, None)
        if self._raw.acquire(False):
            self.owner = get_ident()
            self.acquisitions += 1
            if _ev.on:
                _ev.acquired(self, 0, True, 0, None)
            return True
        if _ev.on:
            _ev.trylock_failed(self, 0)
        return False

    def unlock(self):
        if self.owner != get_ident():
            self._bad_unlock(0, "unlock")
        if _ev.on:
            _ev.release(self, 0)
            self.owner = None
            self._raw.release()
            _ev.released(self, 0)
        else:
            self.owner = None
            self._raw.release()

    def __enter__(self):
        self._lock(0, None)
        return self

    def __exit__(self, *exc):
        self.unlock()
