"""Lockdep's reports: the ``Report`` object and the kernel-shaped texts.

Every detector that hangs off the lock choke point (the validator, the
hung-task watchdog) describes a problem the same way: a ``Report`` with a
``kind``, the kernel's headline as ``title``, the full splat as ``text``, a
JSON-serialisable ``data`` dict and a ``signature`` used to report each
distinct problem once.  The texts follow kernel/locking/lockdep.c's
``print_*`` functions line for line, with Python stacks in the kernel's
frame format (``func+0x0/0x0 path:line``, innermost first, from
pymm.stacktrace) where the kernel prints kernel stacks, so that the
kernel's report parsers (syzkaller's pkg/report) title them as they title
the kernel's.

Nothing here takes a lock or touches the validator's state: the builders get
plain values (held entries are ``HeldLock`` snapshots) so they can run
outside the validator's graph lock.
"""
import os
import sys
import threading

from ..stacktrace import format_frame, site_of

__all__ = ["Report", "HeldLock", "capture_stack", "caller_site", "lock_desc",
           "format_held", "thread_label", "thread_name", "lock_addr", "reset_labels"]

_LOCKING_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_SCHED_DIR = os.path.join(os.path.dirname(os.path.dirname(_LOCKING_DIR)), "sched") + os.sep
_STACK_LIMIT = 24


_RWLOCK_DIR = os.sep + "readerwriterlock" + os.sep


def _outside_locking(f):
    """The first frame at or above ``f`` that is not pymm's locking code
    (nor readerwriterlock's, which pymm's rw-semaphores are built on)."""
    while f is not None and (f.f_code.co_filename.startswith(_LOCKING_DIR)
                             or _RWLOCK_DIR in f.f_code.co_filename):
        f = f.f_back
    return f


def capture_stack(limit=_STACK_LIMIT, frame=None):
    """The calling thread's Python stack (or the one from ``frame`` up:
    another thread's, from ``sys._current_frames()``) as frames in the
    kernel's form (``func+0x0/0x0 path:line``, see pymm.stacktrace),
    innermost first, without the frames of pymm/locking itself (the lock
    methods, the event dispatch and the validator), like the kernel's
    ``save_trace()`` skipping lockdep's own frames."""
    f = _outside_locking(sys._getframe(1) if frame is None else frame)
    out = []
    while f is not None and len(out) < limit:
        co = f.f_code
        if co.co_filename.startswith(_SCHED_DIR):
            break       # the controlled scheduler's frames and whatever called it: not the program's
        out.append(format_frame(co, f.f_lineno))
        f = f.f_back
    return out


def caller_site():
    """Where the lock operation was called from, as the kernel's ``%pS`` of
    ``_RET_IP_`` prints it: the innermost frame outside pymm/locking that is
    not a kernel inline wrapper (``exit_mmap+0x0/0x0 pymm/mm/mmap.py:308``)."""
    f = _outside_locking(sys._getframe(1))
    if f is None:
        return "?"
    return site_of(f)


def thread_name(tid, default=None):
    """The name of the live thread ``tid`` (``default`` once it is gone)."""
    t = threading._active.get(tid)     # a dict read: no lock, unlike threading.enumerate()
    if t is not None:
        return t.name
    return default if default is not None else f"thread-{tid}"


# Reports print locks and threads by ordinal numbers handed out in order of
# first appearance since the last lockdep.reset(), not by id() or OS thread
# ids: a replay of a controlled schedule then prints the very same report.
_lock_nos = {}
_thread_nos = {}


def reset_labels():
    _lock_nos.clear()
    _thread_nos.clear()


def lock_addr(lock):
    """A stable pseudo-address for ``lock`` in reports."""
    n = _lock_nos.setdefault(id(lock), len(_lock_nos))
    return f"{0xFFFF_8880_0200_0000 + n * 0x40:#x}"


def thread_label(name, tid):
    """``comm/pid`` as lockdep prints a task (pid: the thread's ordinal)."""
    n = _thread_nos.setdefault(tid, len(_thread_nos) + 1)
    return f"{name}/{n}"


class HeldLock:
    """One entry of a thread's held-lock stack, as ``lockdep.held_locks()``
    returns it: a snapshot, not a live view.

    ``read`` is the lockdep read kind (0 exclusive, 1 shared, 2 shared
    recursive), ``name`` the printed class name ("name" or "name/subclass"),
    ``site`` where the chain ending in this lock was first validated
    ("func+0x0/0x0 path:line"; None when stacks are off)."""

    __slots__ = ("lock", "read", "trylock", "subclass", "name", "site", "nest_lock")

    def __init__(self, lock, read, trylock, subclass, name, site, nest_lock=None):
        self.lock = lock
        self.read = read
        self.trylock = trylock
        self.subclass = subclass
        self.name = name
        self.site = site
        self.nest_lock = nest_lock

    def mode(self):
        return lock_mode(self.lock, self.read)

    def describe(self):
        return lock_desc(self.lock, self.name, self.read, self.site)

    def as_dict(self):
        return {"class": self.name, "lock": lock_addr(self.lock), "kind": self.lock.KIND,
                "mode": self.mode(), "trylock": self.trylock, "site": self.site}

    def __repr__(self):
        t = " trylock" if self.trylock else ""
        return f"<HeldLock {self.name} {self.mode()}{t} at {self.site}>"


def lock_mode(lock, read):
    """"read"/"write" for reader-writer locks, "" for exclusive-only locks."""
    if lock.readers is None:    # SpinLock, Mutex: no read side
        return ""
    return "read" if read else "write"


def lock_desc(lock, name, read, site):
    """``print_lock()``: ``<addr> (<class>){<kind>}, at: <site>``."""
    mode = lock_mode(lock, read)
    kind = f"{lock.KIND}:{mode}" if mode else lock.KIND
    return f"{lock_addr(lock)} ({name}){{{kind}}}, at: {site or '?'}"


def format_held(name, tid, held):
    """``lockdep_print_held_locks()`` for one thread."""
    label = thread_label(name, tid)
    if not held:
        return [f"no locks held by {label}."]
    n = len(held)
    lines = [f"{n} lock{'s' if n > 1 else ''} held by {label}:"]
    lines += [f" #{i}: {h.describe()}" for i, h in enumerate(held)]
    return lines


def dump_stack(stack):
    """What ``dump_stack()`` prints after "stack backtrace:": the Call Trace."""
    return ["Call Trace:"] + format_stack(stack)


def format_stack(stack, indent=" "):
    if stack is None:
        return [f"{indent}<stack not recorded: lockdep.configure(stacks=False)>"]
    return [indent + s for s in stack] or [f"{indent}<empty>"]


class Report:
    """One problem found by a detector.

    ``kind``: "circular", "recursive", "bad-unlock", "user-return",
    "invalid-context", "assertion", "thread-exit", "bad-downgrade",
    "hung-task" or "deadlock".  ``title`` is the headline (the kernel's),
    ``text`` the full splat, ``data`` a JSON-serialisable dict (kind, title,
    thread, classes, edges with their saved stacks, held locks...), and
    ``signature`` the de-duplication key: a report whose signature was seen
    since the last ``lockdep.reset()`` is not recorded again."""

    __slots__ = ("kind", "title", "text", "data", "signature")

    def __init__(self, kind, title, body, data, signature, framed=True, headline=None):
        self.kind = kind
        self.title = title
        headline = headline or title    # the text's first line, when it says more than the title
        if framed:     # WARNING splats are framed by ==== and ---- of the title's width
            head = ["=" * len(headline), headline, "-" * len(headline)]
        else:          # BUG:/INFO: lines are printed bare, as the kernel does
            head = [headline]
        self.text = "\n".join(head + list(body)) + "\n"
        self.data = dict(data, kind=kind, title=title)
        self.signature = signature

    def __str__(self):
        return self.text

    def __repr__(self):
        return f"<Report {self.kind}: {self.title}>"
