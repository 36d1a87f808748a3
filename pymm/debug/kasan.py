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
from .report import current_kernel, report

_freed_classes = {}


class KasanObject:
    """Base of every object KASAN can poison.  Context: subclasses set
    ``KASAN_CACHE`` (the slab cache name printed in reports)."""

    __slots__ = ("_kasan_alloc", "_kasan_free")
    KASAN_CACHE = "object"

    def kasan_alloc(self, skip=2):
        self._kasan_alloc = stackdepot.save(skip)
        self._kasan_free = 0


def kasan_poison(obj, skip=2):
    """Mark ``obj`` freed (call it exactly where the kernel would kfree it)."""
    cls = type(obj)
    if cls in _freed_classes.values():
        _report_double_free(obj, cls)
        return
    obj._kasan_free = stackdepot.save(skip)
    obj.__class__ = _freed_class(cls)


def is_poisoned(obj):
    return type(obj) in _freed_classes.values()


def _freed_class(cls):
    fc = _freed_classes.get(cls)
    if fc is None:
        get = object.__getattribute__
        put = object.__setattr__

        def __getattribute__(self, name):
            if not name.startswith(("_kasan", "__class__")):
                _report(self, name, "Read", sys._getframe(1))
            return get(self, name)

        def __setattr__(self, name, value):
            _report(self, name, "Write", sys._getframe(1))
            put(self, name, value)

        fc = type(f"freed_{cls.__name__}", (cls,), {
            "__slots__": (), "__getattribute__": __getattribute__,
            "__setattr__": __setattr__, "__module__": cls.__module__})
        _freed_classes[cls] = fc
    return fc


def _report(obj, field, rw, frame):
    func = frame.f_code.co_name
    base = type(obj).__mro__[1]
    get = object.__getattribute__
    cache = getattr(base, "KASAN_CACHE", base.__name__)
    title = f"BUG: KASAN: use-after-free in {func}"
    addr, task = _where(obj)
    text = "\n".join([
        "=" * 66,
        title,
        f"{rw} of field '{field}' of {cache} object at {addr:#x} by task {task}",
        "",
        "Call Trace:",
        stackdepot.format(stackdepot.save(2), "  "),
        "",
        "Allocated by:",
        stackdepot.format(get(obj, "_kasan_alloc"), "  "),
        "",
        "Freed by:",
        stackdepot.format(get(obj, "_kasan_free"), "  "),
        "",
        f"The buggy address belongs to the object at {addr:#x}",
        f" which belongs to the cache {cache}",
        "=" * 66,
    ])
    report("use-after-free", title, text, data={"function": func, "cache": cache, "field": field})


def _report_double_free(obj, cls):
    base = cls.__mro__[1]
    func = sys._getframe(2).f_code.co_name
    addr, task = _where(obj)
    title = f"BUG: KASAN: double-free in {func}"
    get = object.__getattribute__
    text = "\n".join([
        "=" * 66, title,
        f"Free of {getattr(base, 'KASAN_CACHE', base.__name__)} object at {addr:#x} by task {task}",
        "", "Call Trace:", stackdepot.format(stackdepot.save(3), "  "),
        "", "Freed by:", stackdepot.format(get(obj, "_kasan_free"), "  "), "=" * 66])
    report("use-after-free", title, text)


def _where(obj):
    """(address, "thread/pid") for a report, stable across replays: the kernel's
    pseudo-address for the object and the pymm pid of the current task."""
    k = current_kernel()
    t = current()
    addr = k.kasan_address(obj) if k is not None else id(obj)
    return addr, f"{threading.current_thread().name}/{t.pid if t is not None else 0}"
