"""Real kernel-style locks, and everything that watches them.

Every lock takes ``name``, its lockdep class: locks built with the same name
(and kind) share one class.  Every lock event passes through
``pymm.locking.events``; the validator (``lockdep``), ``lock_stat``, the
hung-task watchdog and the controlled scheduler listen there.
"""
from ..errors import LockUsageError
from ._base import (EXCLUSIVE, MAX_LOCKDEP_SUBCLASSES, SHARED, SHARED_RECURSIVE,
                    SINGLE_DEPTH_NESTING)
from .mutex import Mutex
from .rwlock import RwLock
from .rwsem import RwSemaphore
from .spinlock import SpinLock
from . import lockdep   # noqa: E402  registers the validator first on the choke point

LOCK_KINDS = {"spinlock": SpinLock, "mutex": Mutex, "rwsem": RwSemaphore, "rwlock": RwLock}


def new_lock(kind, name):
    """Build a lock by kind name ("spinlock", "mutex", "rwsem", "rwlock")."""
    try:
        cls = LOCK_KINDS[kind]
    except (KeyError, TypeError):
        raise LockUsageError(
            f"unknown lock kind {kind!r}; expected one of {', '.join(LOCK_KINDS)}") from None
    return cls(name)


__all__ = ["SpinLock", "Mutex", "RwSemaphore", "RwLock", "new_lock", "LOCK_KINDS",
           "SINGLE_DEPTH_NESTING", "MAX_LOCKDEP_SUBCLASSES", "EXCLUSIVE", "SHARED",
           "SHARED_RECURSIVE", "LockUsageError", "lockdep"]
