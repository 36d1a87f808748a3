"""rwlock_t: a spinning reader-writer lock whose readers are recursive (a
reader may re-enter even while a writer waits).  Built on readerwriterlock's
reader-preferring RWLockRead, which gives exactly that."""
from readerwriterlock.rwlock import RWLockRead

from ._base import SHARED_RECURSIVE
from ._rw import RwBase


class _Writer(RWLockRead._aWriter):
    """RWLockRead's writer object records a *failed* try as ``v_locked =
    False`` -- on the one writer object this lock shares between threads, so
    a write_trylock (or a contended write_lock's first try) by one thread
    made the holder's write_unlock raise "release unlocked lock".  Record
    successes only."""

    def acquire(self, blocking=True, timeout=-1):
        if self.c_rw_lock.c_resource.acquire(blocking, timeout):
            self.v_locked = True
            return True
        return False


def _try_read(r):
    """``RWLockRead._aReader.acquire(blocking=False)`` without the deadline
    arithmetic (see RwBase._try_read)."""
    rw = r.c_rw_lock
    if not rw.c_lock_read_count.acquire(False):
        return False
    rw.v_read_count += 1
    if rw.v_read_count == 1 and not rw.c_resource.acquire(False):
        rw.v_read_count -= 1
        rw.c_lock_read_count.release()
        return False
    rw.c_lock_read_count.release()
    r.v_locked = True
    return True


class RwLock(RwBase):
    KIND = "rwlock"
    SLEEPING = False
    RWLOCK_CLASS = RWLockRead
    READ_KIND = SHARED_RECURSIVE
    READ_UNLOCK, WRITE_UNLOCK = "read_unlock", "write_unlock"
    _try_read = staticmethod(_try_read)
    _try_write = staticmethod(lambda w: w.acquire(False))
    __slots__ = ()

    def __init__(self, name):
        super().__init__(name)
        self._w = _Writer(self._rw)

    read_lock = RwBase._read_lock
    read_unlock = RwBase._read_unlock
    write_lock = RwBase._write_lock
    write_unlock = RwBase._write_unlock

    def read_trylock(self):
        return self._read_trylock()

    def write_trylock(self):
        return self._write_trylock()

