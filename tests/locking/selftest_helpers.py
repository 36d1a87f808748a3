"""Shared by the lockdep selftest port and the lockdep property tests.

The kernel's lib/locking-selftest.c runs every case on one CPU, lets lockdep
complain (which clears ``debug_locks``), then compares ``debug_locks`` with
the case's expected verdict and re-initialises every lock.  Here the same
three steps are:

1. ``lockdep.reset()`` and ``configure(raise_on_report=True)`` (the
   ``clean_lockdep`` fixture), so the first report raises ``LockdepError``
   *before* the offending lock is really attempted: a true self-deadlock
   (A-A on one lock) can never block the test;
2. run the case, catching that first report (the kernel's "debug_locks = 0");
3. ``release_held()``: give back whatever the thread still holds, asking
   lockdep what that is -- the kernel's ``reset_locks()``.

The verdict is then ``lockdep.reports()``: empty means SUCCESS.
"""
import threading

import pytest

from pymm.errors import LockdepError, LockUsageError
from pymm.locking import lockdep, Mutex, RwLock, RwSemaphore, SpinLock

__all__ = ["clean_lockdep", "release", "release_held", "run_until_report",
           "run_in_threads"]


def release(lock, read):
    """Release ``lock`` in the mode lockdep's held entry says (read 0: the
    exclusive/write side; 1, 2: the read side)."""
    if isinstance(lock, (SpinLock, Mutex)):
        lock.unlock()
    elif isinstance(lock, RwSemaphore):
        lock.up_read() if read else lock.up_write()
    elif isinstance(lock, RwLock):
        lock.read_unlock() if read else lock.write_unlock()
    else:   # a test bug, not a validator bug: say so
        raise TypeError(f"release(): not a pymm lock: {lock!r}")


def release_held():
    """Release, innermost first, every lock lockdep says this thread holds.

    Context: call with raise_on_report off -- releasing is not supposed to
    report, and if it does the test should see the report, not an exception
    from a ``finally``.  Returns the locks that could not be released (the
    lock itself refused: lockdep's held stack and the lock disagree)."""
    stuck = []
    for h in reversed(lockdep.held_locks()):
        try:
            release(h.lock, h.read)
        except LockUsageError:
            stuck.append(h)
    return stuck


@pytest.fixture
def clean_lockdep():
    """Every case starts from an empty dependency graph, with lockdep on and
    raising on the first report; afterwards the previous settings return and
    the thread must hold nothing (a leaked held entry would poison the next
    case, since held stacks are per thread, not per test)."""
    was_enabled = lockdep.is_enabled()
    lockdep.enable()
    lockdep.reset()
    prev = lockdep.configure(raise_on_report=True)
    try:
        yield
    finally:
        lockdep.configure(**prev)
        stuck = release_held()
        left = lockdep.held_locks()
        lockdep.reset()
        if not was_enabled:
            lockdep.disable()
        assert not stuck and not left, (
            f"the case left locks held: lockdep says {left!r}, unreleasable {stuck!r}")


def run_until_report(body, *args):
    """Run ``body(*args)`` the way dotest() does: stop at the first report.

    Returns ``(reports, error)``: the validator's reports and the
    ``LockUsageError`` a lock raised, if any (double unlock raises one after
    reporting; with raise_on_report the report usually comes first).
    Held locks are released before returning, with reporting set back to
    not raising so the clean-up itself cannot throw."""
    error = None
    try:
        body(*args)
    except LockdepError:
        pass    # the kernel's "debug_locks = 0": the case is over
    except LockUsageError as e:
        error = e
    finally:
        prev = lockdep.configure(raise_on_report=False)
        try:
            release_held()
        finally:
            lockdep.configure(**prev)
    return lockdep.reports(), error


def run_in_threads(*bodies, timeout=10.0):
    """Run each body in its own real thread, strictly one after the other
    (the next starts only when the previous has finished), the way two CPUs
    would if the scheduler happened to serialise them.  An exception in a
    body is re-raised here; a body that does not finish fails the test
    instead of hanging it."""
    for i, body in enumerate(bodies):
        err = []

        def target(body=body):
            try:
                body()
            except BaseException as e:     # reported to the test thread below
                err.append(e)

        t = threading.Thread(target=target, name=f"selftest-cpu{i}")
        t.start()
        t.join(timeout)
        if t.is_alive():
            pytest.fail(f"thread {t.name} did not finish in {timeout}s: a real deadlock?")
        if err:
            raise err[0]
