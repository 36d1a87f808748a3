"""The body shared by the reader-writer locks.  RwSemaphore and RwLock are
configurations of it: which readerwriterlock class sits underneath and which
lockdep read kind a read acquisition has.

readerwriterlock hands out one reader object per acquisition (each carries
its own ``v_locked``); we keep the locked reader objects on a stack and
release any one of them -- they are interchangeable, what matters is the
shared count inside the rwlock.
"""
from threading import get_ident

from . import events as _ev
from ._base import LockBase


def _api_try(lockable):
    return lockable.acquire(blocking=False)


class RwBase(LockBase):
    RWLOCK_CLASS = None     # a readerwriterlock class
    READ_KIND = 1           # lockdep read kind of a read acquisition
    READ_UNLOCK = WRITE_UNLOCK = "unlock"   # names for error messages
    # One non-blocking try of a reader / the writer object.  readerwriterlock's
    # own acquire(blocking=False) computes a deadline from time_source around
    # every inner lock (4 clock reads for a reader): it made the watched
    # path's first try cost more than the whole blocking acquire.  The
    # subclasses replace these with the same steps as plain try-locks, which
    # are cheaper than even its blocking acquire's prelude: both paths try
    # first and block only when that fails.
    _try_read = staticmethod(_api_try)
    _try_write = staticmethod(_api_try)

    __slots__ = ("_rw", "_w", "_rd")

    def __init__(self, name):
        super().__init__(name)
        b = self.backend
        self._rw = self.RWLOCK_CLASS(lock_factory=b.lock_factory, time_source=b.time_source)
        self._w = self._rw.gen_wlock()
        self._rd = []           # locked reader objects
        self.readers = {}

    # -- read side ------------------------------------------------------------
    # Two paths.  Watched (some listener registered -- the validator is on by
    # default): a non-blocking probe first so contention is seen, and
    # per-thread reader bookkeeping.  Unwatched: the bare readerwriterlock
    # calls plus a reader stack, so a lock costs about what readerwriterlock
    # costs; releasing an unheld lock is still refused when the lock is not
    # read-held at all, but "held by another thread" is only caught when
    # watched (lockdep checks the thread's held stack).  Turn the validator
    # on or off only while no lock is held.
    def _read_lock(self, subclass=0, nest_lock=None):
        r = self._rw.gen_rlock()
        if _ev.on:
            rk = self.READ_KIND
            _ev.acquire(self, rk, False, subclass, nest_lock)
            if not self._try_read(r):
                self._wait(lambda blocking: r.acquire(blocking=blocking), rk)
            self._add_reader(r)
            _ev.acquired(self, rk, False, subclass, nest_lock)
        else:
            if not self._try_read(r):
                r.acquire()
            self._rd.append(r)

    def _read_trylock(self):
        rk = self.READ_KIND
        if _ev.on:
            _ev.acquire(self, rk, True, 0, None)
        r = self._rw.gen_rlock()
        if self._try_read(r):
            if _ev.on:
                self._add_reader(r)
                _ev.acquired(self, rk, True, 0, None)
            else:       # unwatched: no per-thread readers (up_read will not drop one)
                self._rd.append(r)
            return True
        if _ev.on:
            _ev.trylock_failed(self, rk)
        return False

    def _add_reader(self, r):
        tid = get_ident()
        readers = self.readers
        readers[tid] = readers.get(tid, 0) + 1
        self._rd.append(r)
        self.acquisitions += 1

    def _read_unlock(self, what=None):
        rd = self._rd
        if _ev.on:
            tid = get_ident()
            readers = self.readers
            n = readers.get(tid)
            if not n:
                self._bad_unlock(self.READ_KIND, what or self.READ_UNLOCK)
            _ev.release(self, self.READ_KIND)
            if n == 1:
                del readers[tid]
            else:
                readers[tid] = n - 1
            rd.pop().release()
            _ev.released(self, self.READ_KIND)
        elif rd:
            rd.pop().release()
        else:
            self._bad_unlock(self.READ_KIND, what or self.READ_UNLOCK)

    # -- write side -----------------------------------------------------------
    def _write_lock(self, subclass=0, nest_lock=None):
        w = self._w
        if _ev.on:
            _ev.acquire(self, 0, False, subclass, nest_lock)
            if not self._try_write(w):
                self._wait(lambda blocking: w.acquire(blocking=blocking), 0)
            self.owner = get_ident()
            self.acquisitions += 1
            _ev.acquired(self, 0, False, subclass, nest_lock)
        else:
            if not self._try_write(w):
                w.acquire()
            self.owner = get_ident()

    def _write_trylock(self):
        if _ev.on:
            _ev.acquire(self, 0, True, 0, None)
        if self._try_write(self._w):
            self.owner = get_ident()
            self.acquisitions += 1
            if _ev.on:
                _ev.acquired(self, 0, True, 0, None)
            return True
        if _ev.on:
            _ev.trylock_failed(self, 0)
        return False

    def _write_unlock(self, what=None):
        if self.owner != get_ident():
            self._bad_unlock(0, what or self.WRITE_UNLOCK)
        if _ev.on:
            _ev.release(self, 0)
            self.owner = None
            self._w.release()
            _ev.released(self, 0)
        else:
            self.owner = None
            self._w.release()

    # -- guards ------------------------------------------------------------------
    def read(self):
        """``with sem.read():`` -- take for read, release on exit."""
        return _Guard(self, self._read_lock, lambda: self._read_unlock("read unlock"))

    def write(self):
        """``with sem.write():`` -- take for write, release on exit."""
        return _Guard(self, self._write_lock, lambda: self._write_unlock("write unlock"))


class _Guard:
    __slots__ = ("lock", "take", "drop")

    def __init__(self, lock, take, drop):
        self.lock, self.take, self.drop = lock, take, drop

    def __enter__(self):
        self.take(0, None)
        return self.lock

    def __exit__(self, *exc):
        self.drop()
