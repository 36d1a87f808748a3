"""spinlock_t.  Holding one is atomic context: lockdep reports a sleeping lock
(mutex, rwsem, page lock) taken under it.  Waiters block rather than spin --
under the GIL spinning would only starve the holder."""
from ._base import ExclusiveLock


class SpinLock(ExclusiveLock):
    """``spin_lock`` = lock(), ``spin_unlock`` = unlock(), ``spin_trylock`` = trylock()."""

    KIND = "spinlock"
    SLEEPING = False
    __slots__ = ()
