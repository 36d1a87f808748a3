"""struct rw_semaphore: sleeping, writer-fair (a queued writer blocks new
readers, so read-read ABBA deadlocks once a writer queues), with an atomic
``downgrade_write``.  Built on readerwriterlock's RWLockFairD: a blocking
writer holds its ``c_lock_read`` while it waits for the readers to drain,
which is exactly the kernel's "waiting writer blocks new readers".  (Not
RWLockReadD: its downgrade spawns a helper thread and busy-waits.)

Simplification: ``down_read_trylock`` may fail spuriously when another
reader is inside its own acquire at that instant; kernel trylocks may also
fail for reasons the caller cannot see, and every caller copes.
"""
from threading import get_ident

from readerwriterlock.rwlock import RWLockFairD

from ..errors import LockUsageError
from . import events as _ev
from ._base import SHARED, check_subclass
from ._rw import RwBase


def _try_read(r):
    """``RWLockFairD._aReader.acquire(blocking=False)`` without the deadline
    arithmetic: the same inner locks in the same order, each tried once."""
    rw = r.c_rw_lock
    if not rw.c_lock_read.acquire(False):   # held by a writer, or one queued
        return False
    if not rw.c_lock_read_count.acquire(False):
        rw.c_lock_read.release()
        return False
    rw.v_read_count += 1
    if rw.v_read_count == 1 and not rw.c_lock_write.acquire(False):
        rw.v_read_count -= 1
        rw.c_lock_read_count.release()
        rw.c_lock_read.release()
        return False
    rw.c_lock_read_count.release()
    rw.c_lock_read.release()
    r.v_locked = True
    return True


def _try_write(w):
    """``RWLockFairD._aWriter.acquire(blocking=False)``, likewise."""
    rw = w.c_rw_lock
    if not rw.c_lock_read.acquire(False):
        return False
    if not rw.c_lock_write.acquire(False):
        rw.c_lock_read.release()
        return False
    w.v_locked = True
    return True


class RwSemaphore(RwBase):
    KIND = "rwsem"
    SLEEPING = True
    RWLOCK_CLASS = RWLockFairD
    READ_KIND = SHARED
    READ_UNLOCK, WRITE_UNLOCK = "up_read", "up_write"
    _try_read = staticmethod(_try_read)
    _try_write = staticmethod(_try_write)
    __slots__ = ()

    # The plain entry points are the shared bodies themselves (no extra frame
    # on the hot path); the annotated ones validate and forward.
    down_read = RwBase._read_lock
    up_read = RwBase._read_unlock
    down_write = RwBase._write_lock
    up_write = RwBase._write_unlock

    def down_read_nested(self, subclass):
        self._read_lock(check_subclass(subclass), None)

    def down_read_trylock(self):
        return self._read_trylock()

    def down_write_nested(self, subclass):
        self._write_lock(check_subclass(subclass), None)

    def down_write_nest_lock(self, nest_lock):
        """Many rwsems of this class under the held ``nest_lock`` (mm_take_all_locks)."""
        self._write_lock(0, nest_lock)

    def down_write_trylock(self):
        return self._write_trylock()

    def downgrade_write(self):
        """Write -> read atomically: no writer can get in between, and readers
        already queued behind us may enter."""
        tid = get_ident()
        if self.owner != tid:
            if _ev.on:
                _ev.bad_unlock(self, 0)
            raise LockUsageError(
                f"downgrade_write of {self!r}: the calling thread does not hold it for write")
        r = self._w.downgrade()
        self.owner = None
        self._rd.append(r)
        if _ev.on:      # per-thread readers are kept only while watched, as up_read drops them
            self.readers[tid] = self.readers.get(tid, 0) + 1
            _ev.downgrade(self)

