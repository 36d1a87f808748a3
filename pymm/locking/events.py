"""The one choke point every lock event passes through.

Every pymm lock reports five events here -- acquire requested, contended,
acquired, released, downgraded -- and nothing else in pymm watches locks any
other way.  Lockdep, lock_stat, the hung-task watchdog, free-mode delay
injection and the controlled scheduler are *listeners* registered here.

Cost when nobody listens: the lock checks the module flag ``on`` (one global
load) and skips the calls.  With listeners, each event is one Python call per
listener; listeners are kept in a tuple rebuilt only when the set changes, and
an event with a single listener is bound straight to it (no dispatch loop).

The underlying primitives come from the *backend*: ``lock_factory()`` returns
a raw mutual-exclusion lock (``acquire(blocking=True, timeout=-1)``,
``release()``), and ``time_source()`` is the clock readerwriterlock uses for
timeouts.  The default is ``threading.Lock`` and ``time.perf_counter``; the
controlled scheduler installs its own factory (locks whose blocking acquire is
a loop of scheduling point + non-blocking try) for the locks built inside a
controlled run.  A lock binds its backend when it is constructed.

Listener protocol (all methods optional; ``lock`` is the pymm lock, ``read``
is 0 exclusive, 1 shared non-recursive, 2 shared recursive)::

    acquire(lock, read, trylock, subclass, nest_lock)  # before every attempt,
                                                       # trylocks included
    contended(lock, read)      # the first attempt failed; the thread will wait
    acquired(lock, read, trylock, subclass, nest_lock) # the thread now holds it
    aborted(lock, read)        # a wait ended by an exception (scheduler abort)
    bad_unlock(lock, read)     # release of a lock this thread does not hold
    release(lock, read)        # about to release (lock still held)
    released(lock, read)       # released; waiters may run
    downgrade(lock)            # write -> read, in place
    trylock_failed(lock, read) # a trylock did not get the lock
"""
import threading
import time

__all__ = ["register", "unregister", "listeners", "backend", "use_backend"]

EVENTS = ("acquire", "contended", "acquired", "aborted", "bad_unlock",
          "release", "released", "downgrade", "trylock_failed")

on = False          # any listener registered (read by every lock op)
_listeners = ()     # registration order is dispatch order
# Per-event tuples of bound methods, so dispatch does no getattr.
_acquire = _contended = _acquired = _aborted = _bad_unlock = ()
_release = _released = _downgrade = _trylock_failed = ()
_reg_lock = threading.Lock()   # protects registration only, never taken on lock paths


def _rebuild():
    global on
    g = globals()
    for ev in EVENTS:
        fns = g["_" + ev] = tuple(getattr(l, ev) for l in _listeners if hasattr(l, ev))
        # One listener for this event: the locks call it directly (``_ev.acquire``
        # is looked up at each call), sparing a frame per event on every lock op.
        g[ev] = fns[0] if len(fns) == 1 else _LOOPS[ev]
    on = bool(_listeners)


_last = None       # the listener kept after every other (the controlled scheduler's)


def register(listener, first=False, last=False):
    """Add a listener; ``first=True`` puts it before the others (lockdep
    validates before the scheduler switches threads); ``last=True`` keeps it
    after every listener, including those registered later (the scheduler
    switches threads after the others have seen the event)."""
    global _listeners, _last
    with _reg_lock:
        if listener in _listeners:
            return
        if last:
            _last = listener
            _listeners = _listeners + (listener,)
        elif first:
            _listeners = (listener,) + _listeners
        elif _last is not None and _last in _listeners:
            i = _listeners.index(_last)
            _listeners = _listeners[:i] + (listener,) + _listeners[i:]
        else:
            _listeners = _listeners + (listener,)
        _rebuild()


def unregister(listener):
    global _listeners, _last
    with _reg_lock:
        if listener is _last:
            _last = None
        _listeners = tuple(l for l in _listeners if l is not listener)
        _rebuild()


def listeners():
    return _listeners


# -- dispatch (called by the locks only when ``on``) -------------------------

def acquire(lock, read, trylock, subclass, nest_lock):
    for f in _acquire:
        f(lock, read, trylock, subclass, nest_lock)


def contended(lock, read):
    for f in _contended:
        f(lock, read)


def acquired(lock, read, trylock, subclass, nest_lock):
    for f in _acquired:
        f(lock, read, trylock, subclass, nest_lock)


def aborted(lock, read):
    for f in _aborted:
        f(lock, read)


def bad_unlock(lock, read):
    for f in _bad_unlock:
        f(lock, read)


def release(lock, read):
    for f in _release:
        f(lock, read)


def released(lock, read):
    for f in _released:
        f(lock, read)


def downgrade(lock):
    for f in _downgrade:
        f(lock)


def trylock_failed(lock, read):
    for f in _trylock_failed:
        f(lock, read)


_LOOPS = {ev: globals()[ev] for ev in EVENTS}   # the dispatch loops above, by event


# -- backend ------------------------------------------------------------------

class Backend:
    """Where raw primitives come from.  ``lock_factory`` and ``time_source``
    are passed to readerwriterlock explicitly (its defaults are bound at import)."""

    __slots__ = ("lock_factory", "time_source", "name")

    def __init__(self, lock_factory, time_source, name):
        self.lock_factory = lock_factory
        self.time_source = time_source
        self.name = name

    def __repr__(self):
        return f"<Backend {self.name}>"


DEFAULT_BACKEND = Backend(threading.Lock, time.perf_counter, "threading")
_backend = DEFAULT_BACKEND


def backend():
    """The backend locks constructed now will use."""
    return _backend


class use_backend:
    """Context manager: locks constructed inside use ``b``."""

    def __init__(self, b):
        self.b = b

    def __enter__(self):
        global _backend
        self.prev, _backend = _backend, self.b
        return self.b

    def __exit__(self, *exc):
        global _backend
        _backend = self.prev
