"""KASAN for Python objects: freed kernel objects are poisoned, and any later
field access (read or write) reports ``BUG: KASAN: use-after-free in FUNC``
with the allocation and free stacks.

Mechanism: every poisonable object derives from ``KasanObject`` (slots for the
allocation and free stack handles).  ``kasan_poison(obj)`` swaps its class for
a cached subclass with the same slot layout whose ``__getattribute__`` and
``__setattr__`` report first and then behave as before -- like the kernel,
where the freed memory still holds its old bytes, the access returns the stale
value and execution goes on (or, in a controlled run, the scheduler ends the
schedule at the report).  The kernel's finding list de-duplicates by title.
"""
import sys
import threading

from ..context import current
from . import stackdepot
from .stackdepot import save as save_stack
from ..stacktrace import format_site
from .report import current_kernel, pymm_checks, pymm_only_title, report
from ..locking import lockdep
from ..rcu import rcu_read_lock_held

_freed_classes = {}
pymm_only_title(lockdep.FREED_OTHER_TITLE)


class KasanObject:
    """Base of every object KASAN can poison.  Context: subclasses set
    ``KASAN_CACHE`` (the slab cache name printed in reports)."""

    __slots__ = ("_kasan_alloc", "_kasan_free")
    KASAN_CACHE = "object"
    # The fields holding the locks embedded in the object, which
    # debug_check_no_locks_freed looks at when it is freed (see kasan_poison).
    KASAN_LOCKS = ()

    def kasan_alloc(self, skip=2):
        t = current()                       # (_track, inlined: on every allocation)
        self._kasan_alloc = save_stack(skip) | ((t.pid if t is not None else 0) << _PID_SHIFT)
        self._kasan_free = 0


# A saved track (the kernel's ``struct kasan_track``): the stack depot handle
# and the pid of the task that allocated or freed, in one int (no object per
# allocation).
_PID_SHIFT = 32


def _track(skip):
    """``skip`` as for ``stackdepot.save`` called in our caller."""
    return stackdepot.save(skip + 1) | (_current_pid() << _PID_SHIFT)


def _track_text(track, what):
    """``Allocated by task N:`` / ``Freed by task N:`` and the stack."""
    handle, pid = track & ((1 << _PID_SHIFT) - 1), track >> _PID_SHIFT
    return [f"{what} by task {pid}:", stackdepot.format(handle, " ")]


def _current_pid():
    t = current()
    return t.pid if t is not None else 0


def kasan_save_track(skip=1):
    """A track of the caller's caller (for an object freed later, by an RCU
    callback: the stack that queued it)."""
    return _track(skip + 1)


def kasan_poison(obj, skip=2, stack=None):
    """Mark ``obj`` freed (call it exactly where the kernel would kfree it).
    ``stack``: a track (``kasan_save_track``) to report as the free stack
    instead of the caller's (an RCU callback reports where call_rcu was
    called, which KASAN prints as "Last potentially related work creation")."""
    cls = type(obj)
    if cls in _freed_classes.values():
        _report_double_free(obj, cls)
        return
    if cls.KASAN_LOCKS:
        _check_no_locks_freed(obj, cls, sys._getframe(1))
    obj._kasan_free = _track(skip) if stack is None else stack
    obj.__class__ = _freed_class(cls)


def _check_no_locks_freed(obj, cls, frame):
    """What slab_free_hook runs before KASAN poisons the block:
    lockdep's debug_check_no_locks_freed over the object's locks -- the
    freeing task's own (the kernel's check) and, with pymm's checks on,
    those another task holds or is acquiring (pymm's own extension, not for
    SLAB_TYPESAFE_BY_RCU caches, whose freed objects may be locked and
    revalidated)."""
    locks = [lk for lk in (object.__getattribute__(obj, f) for f in cls.KASAN_LOCKS)
             if lk is not None]
    if locks:
        addr, _ = _where(obj)
        lockdep.debug_check_no_locks_freed(
            f"{addr:016x} ({cls.KASAN_CACHE})", locks,
            others=not getattr(cls, "KASAN_TYPESAFE_BY_RCU", False) and pymm_checks(), frame=frame)


def is_poisoned(obj):
    return type(obj) in _freed_classes.values()


def _freed_class(cls):
    fc = _freed_classes.get(cls)
    if fc is None:
        get = object.__getattribute__
        put = object.__setattr__
        # SLAB_TYPESAFE_BY_RCU caches (vm_area_struct): a freed object stays
        # an object of its type until the RCU readers that may have found it
        # are gone, so accesses inside an RCU read section are legal; the
        # reader must revalidate what it found (lock_vma_under_rcu).
        typesafe = getattr(cls, "KASAN_TYPESAFE_BY_RCU", False)

        def __getattribute__(self, name):
            if not name.startswith(("_kasan", "__class__")) and \
                    not (typesafe and rcu_read_lock_held()):
                _report(self, name, "Read", sys._getframe(1))
            return get(self, name)

        def __setattr__(self, name, value):
            if not (typesafe and rcu_read_lock_held()):
                _report(self, name, "Write", sys._getframe(1))
            put(self, name, value)

        fc = type(f"freed_{cls.__name__}", (cls,), {
            "__slots__": (), "__getattribute__": __getattribute__,
            "__setattr__": __setattr__, "__module__": cls.__module__})
        _freed_classes[cls] = fc
    return fc


# Python objects have fields, not bytes: every access is reported as one of
# pointer size (8), and the field's name is printed after the object's cache.
ACCESS_SIZE = 8


def _report(obj, field, rw, frame):
    """``kasan_report()``: the kernel's layout, so that its parsers title it
    ``KASAN: use-after-free Read in FUNC``."""
    func = frame.f_code.co_name
    base = type(obj).__mro__[1]
    get = object.__getattribute__
    cache = getattr(base, "KASAN_CACHE", base.__name__)
    title = f"BUG: KASAN: use-after-free in {func}"
    addr, task = _where(obj)
    text = "\n".join([
        "=" * 66,
        f"BUG: KASAN: use-after-free in {format_site(frame.f_code, frame.f_lineno)}",
        f"{rw} of size {ACCESS_SIZE} at addr {addr:016x} by task {task}",
        "",
        "Call Trace:",
        stackdepot.format(stackdepot.save(2), " "),
        "",
        *_track_text(get(obj, "_kasan_alloc"), "Allocated"),
        "",
        *_track_text(get(obj, "_kasan_free"), "Freed"),
        "",
        f"The buggy address belongs to the object at {addr:016x}",
        f" which belongs to the cache {cache}",
        f"The buggy address is field '{field}' of the object (pymm: Python objects have fields)",
        "=" * 66,
    ])
    report("use-after-free", title, text, data={"function": func, "cache": cache, "field": field,
                                                "access": rw})


def _report_double_free(obj, cls):
    """The kernel's ``double-free`` report (mm/kasan/report.c)."""
    base = cls.__mro__[1]
    f = sys._getframe(2)
    func = f.f_code.co_name
    addr, task = _where(obj)
    title = f"BUG: KASAN: double-free in {func}"
    get = object.__getattribute__
    text = "\n".join([
        "=" * 66, f"BUG: KASAN: double-free in {format_site(f.f_code, f.f_lineno)}",
        f"Free of addr {addr:016x} by task {task}",
        "", "Call Trace:", stackdepot.format(stackdepot.save(3), " "),
        "", *_track_text(get(obj, "_kasan_alloc"), "Allocated"),
        "", *_track_text(get(obj, "_kasan_free"), "Freed"),
        "", f"The buggy address belongs to the object at {addr:016x}",
        f" which belongs to the cache {getattr(base, 'KASAN_CACHE', base.__name__)}", "=" * 66])
    report("use-after-free", title, text)


def _where(obj):
    """(address, "thread/pid") for a report, stable across replays: the kernel's
    pseudo-address for the object and the pymm pid of the current task."""
    k = current_kernel()
    t = current()
    addr = k.kasan_address(obj) if k is not None else id(obj)
    return addr, f"{threading.current_thread().name}/{t.pid if t is not None else 0}"
