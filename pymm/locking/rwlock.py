"""rwlock_t: a spinning reader-writer lock whose readers are recursive (a
reader may re-enter even while a writer waits).  Built on readerwriterlock's
reader-preferring RWLockRead, which gives exactly that."""
from readerwriterlock.rwlock import RWLockRead

from ._base import SHARED_RECURSIVE
from ._rw import RwBase


class RwLock(RwBase):
    KIND = "rwlock"
    SLEEPING = False
    RWLOCK_CLASS = RWLockRead
    READ_KIND = SHARED_RECURSIVE
    READ_UNLOCK, WRITE_UNLOCK = "read_unlock", "write_unlock"
    __slots__ = ()

    read_lock = RwBase._read_lock
    read_unlock = RwBase._read_unlock
    write_lock = RwBase._write_lock
    write_unlock = RwBase._write_unlock

    def read_trylock(self):
        return self._read_trylock()

    def write_trylock(self):
        return self._write_trylock()

