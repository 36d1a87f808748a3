"""include/linux/mmap_lock.h: the mmap_lock wrapper API and its asserts.
mm code never touches ``mm.mmap_lock`` directly."""
from ..locking import lockdep


def mmap_read_lock(mm):
    mm.mmap_lock.down_read()


def mmap_read_trylock(mm):
    """Context: never blocks; returns True when the read lock was taken."""
    return mm.mmap_lock.down_read_trylock()


def mmap_read_unlock(mm):
    mm.mmap_lock.up_read()


def mmap_write_lock(mm):
    mm.mmap_lock.down_write()


def mmap_write_lock_nested(mm, subclass):
    mm.mmap_lock.down_write_nested(subclass)


def mmap_write_lock_killable(mm):
    """Returns 0 (pymm tasks are never killed while waiting)."""
    mm.mmap_lock.down_write()
    return 0


def mmap_write_trylock(mm):
    return mm.mmap_lock.down_write_trylock()


def mmap_write_unlock(mm):
    mm.mmap_lock.up_write()


def mmap_write_downgrade(mm):
    """Write -> read atomically (there is no upgrade)."""
    mm.mmap_lock.downgrade_write()


def mmap_assert_locked(mm):
    lockdep.lockdep_assert_held(mm.mmap_lock)


def mmap_assert_write_locked(mm):
    lockdep.lockdep_assert_held_write(mm.mmap_lock)


def mmap_lock_is_held(mm):
    """lockdep_is_held(&mm->mmap_lock); True when the validator is off (the
    holder bookkeeping it relies on is kept only while locks are watched)."""
    if not lockdep.is_enabled():
        return True
    return mm.mmap_lock.held_by_current()
