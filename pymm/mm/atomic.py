"""atomic_t for Python objects.

Why this exists: ``obj.count += 1`` is a load, an add and a store, and a
thread switch between them loses an update -- with a 1 us switch interval in
free mode that happens within seconds and shows up as false "Bad page state"
findings.  The kernel uses atomic instructions for refcounts, mapcounts and
percpu counters; pymm models them with a small hash of raw locks.  These are
not kernel locks (an atomic instruction cannot block or deadlock and holds no
lock across code), so they are deliberately invisible to lockdep and to the
scheduler: no scheduling point can fall inside one.
"""
import threading
from threading import get_ident

_NR = 64
_locks = [threading.Lock() for _ in range(_NR)]


def atomic_add_return(obj, field, delta):
    """``atomic_add_return``: add ``delta`` to ``obj.field`` and return the new value."""
    with _locks[id(obj) % _NR]:
        v = getattr(obj, field) + delta
        setattr(obj, field, v)
        return v


class PerCpuCounter:
    """``struct percpu_counter``: each thread adds into its own cell (no lost
    updates, no shared cache line), ``sum()`` folds the cells, as
    percpu_counter_sum does.  Cells of exited threads keep their values."""

    __slots__ = ("_cells",)

    def __init__(self):
        self._cells = {}

    def add(self, n):
        cells = self._cells
        tid = get_ident()
        c = cells.get(tid)
        if c is None:
            cells[tid] = n
        else:
            cells[tid] = c + n     # only this thread writes this cell

    def sum(self):
        return sum(list(self._cells.values()))

    def reset(self):
        self._cells = {}


def atomic_inc_not_zero(obj, field):
    """``atomic_inc_not_zero``: add 1 unless the value is 0; True if it added.
    The field is read raw: callers look objects up under rcu_read_lock in
    SLAB_TYPESAFE_BY_RCU caches (anon_vma), where an object freed a moment
    ago is still memory of that type whose count reads 0 -- not a
    use-after-free."""
    with _locks[id(obj) % _NR]:
        v = object.__getattribute__(obj, field)
        if v == 0:
            return False
        object.__setattr__(obj, field, v + 1)
        return True


def set_bits(obj, field, mask):
    """``set_bit``: atomically OR ``mask`` into ``obj.field``; returns the old value."""
    with _locks[id(obj) % _NR]:
        old = getattr(obj, field)
        setattr(obj, field, old | mask)
        return old


def clear_bits(obj, field, mask):
    """``clear_bit``: atomically clear ``mask``; returns the old value."""
    with _locks[id(obj) % _NR]:
        old = getattr(obj, field)
        setattr(obj, field, old & ~mask)
        return old


def cmpxchg(obj, field, old, new):
    """Install ``new`` if ``obj.field is old``; return what the field holds afterwards."""
    with _locks[id(obj) % _NR]:
        cur = getattr(obj, field)
        if cur is old:
            setattr(obj, field, new)
            return new
        return cur
