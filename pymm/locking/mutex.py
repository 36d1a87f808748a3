"""struct mutex: a sleeping exclusive lock."""
from ._base import ExclusiveLock


class Mutex(ExclusiveLock):
    """``mutex_lock`` = lock(), ``mutex_unlock`` = unlock(), ``mutex_trylock`` = trylock()."""

    KIND = "mutex"
    SLEEPING = True
    __slots__ = ()
