"""A stack depot, as lib/stackdepot.c: identical stacks are stored once and
objects keep a small handle.  Saving walks frames (no formatting); the text is
rendered only when a report prints it.

Saving is on every folio, VMA, anon_vma and page-table allocation and free,
so it is kept cheap: per frame it reads two ints, the code object's id and
the bytecode offset (``f_lasti``), and the depot is keyed by those (hashing
code objects is what cost most).  The depot keeps the code objects of every
stack it stores, so the ids in its keys stay valid.  Line numbers are looked
up, and the detectors' own frames dropped, only when a report prints the
stack: what is printed is unchanged."""
import sys
import threading

from ..stacktrace import format_frame

_depot = {}          # key (id(code), lasti, id(code), lasti, ...) -> handle
_stacks = [()]       # handle -> ((code, lasti), ...); handle 0 is "no stack"
_lock = threading.Lock()   # the depot's own lock (like the kernel's pool lock), never a pymm lock

_SKIP = ("/pymm/debug/", "/pymm/locking/", "/pymm/sched/")


def save(skip=1, limit=16):
    """Save the caller's stack (its ``limit`` innermost frames); return its
    handle (an int)."""
    f = sys._getframe(skip)
    key = []
    app = key.append
    n = limit
    while f is not None and n:
        app(id(f.f_code))
        app(f.f_lasti)
        f = f.f_back
        n -= 1
    key = tuple(key)
    h = _depot.get(key)
    if h is None:
        h = _store(key, sys._getframe(skip))
    return h


def _store(key, f):
    stack = []
    while f is not None and len(stack) < len(key) // 2:
        stack.append((f.f_code, f.f_lasti))
        f = f.f_back
    with _lock:
        h = _depot.get(key)
        if h is None:
            h = _depot[key] = len(_stacks)
            _stacks.append(tuple(stack))
    return h


_lines = {}          # (code, offset) -> line number


def _lineno(code, lasti):
    line = _lines.get((code, lasti))
    if line is None:
        line = code.co_firstlineno
        for start, end, ln in code.co_lines():
            if start <= lasti < end:
                if ln is not None:
                    line = ln
                break
        _lines[(code, lasti)] = line
    return line


def frames(handle):
    """The saved stack as ["func+0x0/0x0 path:line", ...] (pymm.stacktrace),
    innermost first, without the detectors' own frames."""
    out = []
    for code, lasti in _stacks[handle]:
        fn = code.co_filename
        if "/pymm/sched/" in fn:
            break       # the scheduler and its caller are not the program's frames
        if any(s in fn for s in _SKIP):
            continue
        out.append(format_frame(code, _lineno(code, lasti)))
    return out


def current(skip=1, limit=16):
    return frames(save(skip + 1, limit))


def format(handle, indent=" "):
    fr = frames(handle)
    return "\n".join(indent + f for f in fr) if fr else indent + "(no stack saved)"
