"""A stack depot, as lib/stackdepot.c: identical stacks are stored once and
objects keep a small handle.  Saving walks frames (no formatting); the text is
rendered only when a report prints it."""
import sys
import threading

from ..stacktrace import format_frame

_depot = {}          # key (tuple of (code, lineno)) -> handle
_stacks = [()]       # handle -> key; handle 0 is "no stack"
_lock = threading.Lock()   # the depot's own lock (like the kernel's pool lock), never a pymm lock

_SKIP = ("/pymm/debug/", "/pymm/locking/", "/pymm/sched/")


def save(skip=1, limit=16):
    """Save the caller's stack; return its handle (an int)."""
    f = sys._getframe(skip)
    key = []
    while f is not None and len(key) < limit:
        key.append((f.f_code, f.f_lineno))
        f = f.f_back
    key = tuple(key)
    h = _depot.get(key)
    if h is None:
        with _lock:
            h = _depot.get(key)
            if h is None:
                h = _depot[key] = len(_stacks)
                _stacks.append(key)
    return h


def frames(handle):
    """The saved stack as ["func+0x0/0x0 path:line", ...] (pymm.stacktrace),
    innermost first, without the detectors' own frames."""
    out = []
    for code, line in _stacks[handle]:
        fn = code.co_filename
        if "/pymm/sched/" in fn:
            break       # the scheduler and its caller are not the program's frames
        if any(s in fn for s in _SKIP):
            continue
        out.append(format_frame(code, line))
    return out


def current(skip=1, limit=16):
    return frames(save(skip + 1, limit))


def format(handle, indent=" "):
    fr = frames(handle)
    return "\n".join(indent + f for f in fr) if fr else indent + "(no stack saved)"
