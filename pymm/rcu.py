"""RCU, as far as pymm needs it: read-side sections and deferred freeing.

Readers.  ``rcu_read_lock``/``rcu_read_unlock`` keep a per-thread nesting
depth that lookups check (``rcu_read_lock_held``), so that a VMA-tree walk
with neither mmap_lock nor an RCU read section is reported as "suspicious RCU
usage".  Since 4.20 (the flavour consolidation) a region with interrupts
disabled is a read-side critical section too: pymm's CPUs (``pymm.mm.tlb``)
report their interrupts-off regions -- a user instruction with its hardware
page walk, gup_fast -- through ``irqoff_enter``/``irqoff_exit``.

Grace periods.  ``call_rcu(fn)`` runs ``fn`` once every reader that was inside
a read-side section when it was called has left that section; with no reader
inside one it runs at once.  There is no grace-period kthread: the reader
whose exit completes a grace period runs the callbacks that were waiting for
it (callbacks must take no sleeping lock; page-table freeing only poisons the
table).  ``rcu_barrier()`` says whether nothing is pending.

Simplification: readers are tracked per thread (not per CPU), and a callback
waits only for the sections that were open when it was queued, as the
kernel's grace period does.  The bookkeeping lock is pymm's own (a raw lock,
never held across a scheduling point or another lock).
"""
import threading
import weakref

from .errors import LockUsageError


class _RcuLocal(threading.local):
    rec = None              # the thread's reader record (a class default: no AttributeError)


_tls = _RcuLocal()
_gp_lock = threading.Lock()     # protects _pending and the reader registry
_readers = weakref.WeakValueDictionary()   # id(record) -> record of a live thread
_pending = []                   # [(snapshot [(record, gen)], fn)], in call order


class _Reader:
    """One reader (a thread's RCU section, or a CPU's interrupts-off region):
    ``depth`` > 0 while inside, ``gen`` counts the sections it has left."""

    __slots__ = ("depth", "gen", "__weakref__")

    def __init__(self):
        self.depth = 0
        self.gen = 0


def _record():
    r = _tls.rec
    if r is None:
        r = _tls.rec = new_reader()
    return r


def this_reader():
    """The calling thread's reader record (a CPU keeps it for its
    interrupts-off regions: ``depth`` += 1 to enter, ``reader_exit`` to leave)."""
    return _record()


def new_reader():
    """A reader record that grace periods wait for."""
    r = _Reader()
    with _gp_lock:
        _readers[id(r)] = r
    return r


def rcu_read_lock():
    _record().depth += 1


def rcu_read_unlock():
    r = _tls.rec
    if r is None or r.depth <= 0:
        raise LockUsageError("rcu_read_unlock() without rcu_read_lock()")
    reader_exit(r)


def reader_exit(r):
    """Leave a read-side section of reader ``r`` (the outermost exit is a
    quiescent state: it may end grace periods and run their callbacks)."""
    d = r.depth - 1
    r.depth = d
    if d == 0:
        r.gen += 1
        if _pending:
            rcu_process_callbacks()


def rcu_read_lock_held():
    r = _tls.rec
    return r is not None and r.depth > 0


class rcu_read:
    """``with rcu_read():`` -- a read-side critical section."""

    def __enter__(self):
        rcu_read_lock()

    def __exit__(self, *exc):
        rcu_read_unlock()


def call_rcu(fn):
    """Run ``fn()`` after a grace period: once every read-side section open
    now has ended.  Context: any; takes no pymm lock."""
    with _gp_lock:
        snap = [(r, r.gen) for r in _readers.values() if r.depth > 0]
        if snap:
            _pending.append((snap, fn))
            fn = None
    if fn is not None:
        fn()


def rcu_process_callbacks():
    """Run the callbacks whose grace period has ended (the RCU softirq)."""
    with _gp_lock:
        ready = []
        keep = []
        for snap, fn in _pending:
            if all(r.gen != g for r, g in snap):
                ready.append(fn)
            else:
                keep.append((snap, fn))
        _pending[:] = keep
    for fn in ready:
        fn()


def rcu_barrier():
    """Run what can run; True if no callback is left waiting (a reader is
    still inside a section otherwise)."""
    rcu_process_callbacks()
    return not _pending
