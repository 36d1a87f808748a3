"""The hung-task watchdog (kernel/hung_task.c) and demonstrated deadlocks.

A listener on the choke point tracks who waits for what: ``contended``
(the first try failed) marks the thread waiting since now, ``acquired`` or
``aborted`` ends the wait.  ``check_now(threshold)`` then looks at every
thread waiting longer than ``threshold`` seconds and reports it as
``INFO: task NAME:TID blocked for more than N seconds.`` with the lock it
waits for, who holds that lock (rwsem readers included), its Python stack,
and "Showing all locks held in the system:" (lockdep's held stacks).

It also builds the wait-for graph -- thread -> the lock it waits for -> the
threads holding it -- and reports each cycle as a *demonstrated* deadlock:
every thread in it is really blocked, not just possibly.

``start(threshold, interval)`` runs ``check_now`` periodically on a daemon
thread (the kernel's khungtaskd); ``stop()`` ends it promptly.  Reports go
through lockdep's report list (``lockdep.reports()``, subscribers) and are
de-duplicated there: a hung task once per (class, waiting site), a deadlock
once per cycle of lock classes.  They never raise, even with
``lockdep.configure(raise_on_report=True)``: the thread that finds them is
not the one at fault.
"""
import sys
import threading
import time
from threading import get_ident

from loguru import logger

from ..errors import PymmError
from . import events as _ev
from . import lockdep
from .lockdep_report import (Report, capture_stack, format_held, format_stack, lock_desc,
                             lock_addr, lock_mode, thread_label, thread_name)

__all__ = ["enable", "disable", "is_enabled", "start", "stop", "is_running", "check_now",
           "waiting", "deadlocked", "format_waits"]

_waiting = {}       # tid -> (lock, read, since); each thread writes only its own entry
_clock = time.monotonic
_enabled = False


def _contended(lock, read):
    _waiting[get_ident()] = (lock, read, _clock())


def _done(lock, read, *rest):
    if _waiting:    # nobody waits, nothing to drop: one truth test on the common path
        _waiting.pop(get_ident(), None)


class _Tracker:
    contended = staticmethod(_contended)
    acquired = staticmethod(_done)
    aborted = staticmethod(_done)

    def __repr__(self):
        return "<hung_task waiter tracker>"


_tracker = _Tracker()


def enable():
    """Track waiters (``start()`` does this too).  Waits that began before
    are not seen."""
    global _enabled
    _enabled = True
    _ev.register(_tracker)


def disable():
    global _enabled
    stop()
    _enabled = False
    _ev.unregister(_tracker)
    _waiting.clear()


def is_enabled():
    return _enabled


def _snapshot():
    """A copy of ``_waiting`` taken while other threads add and drop their
    entries.  ``dict.copy()`` runs no Python code (the keys are ints), so no
    other thread runs mid-copy; ``list(_waiting.items())`` is not safe: its
    tuple allocations (once the 2-tuple free list is empty) can start a
    garbage collection whose finalizers let another thread run and resize
    the dict under the iterator ("dictionary changed size during
    iteration", seen once in CI)."""
    return _waiting.copy()


def waiting():
    """{tid: (lock, read, seconds waited so far)} for every waiting thread."""
    now = _clock()
    return {tid: (lock, read, now - t0) for tid, (lock, read, t0) in _snapshot().items()}


def deadlocked(tids=None, threshold=0.0):
    """The wait-for cycles among threads (of ``tids``, if given) waiting
    longer than ``threshold`` seconds, as lists of thread ids; nothing is
    reported (``check_now`` does that).  Every thread of a cycle is blocked
    for good: a demonstrated deadlock, unlike a thread that merely waits long
    for a holder that runs slowly."""
    now = _clock()
    waits = {t: w for t, w in _snapshot().items()
             if (tids is None or t in tids) and now - w[2] > threshold}
    return _wait_for_cycles(waits) if waits else []


# -- the checks ---------------------------------------------------------------------------

def check_now(threshold=120.0, tids=None):
    """Report every thread blocked on a lock for more than ``threshold``
    seconds, and every wait-for cycle.  Returns the reports recorded by this
    call (duplicates of earlier ones are not returned).  ``tids``, if given,
    limits the check to those threads (a stress run checks its own workers,
    not threads an earlier run left stuck)."""
    if not _enabled:
        raise PymmError("hung_task.check_now(): waiter tracking is off; call "
                        "hung_task.enable() (or start()) before the waits begin")
    if threshold < 0:
        raise PymmError(f"hung_task.check_now(): threshold must be >= 0 seconds, got {threshold!r}")
    now = _clock()
    waits = {t: w for t, w in _snapshot().items() if tids is None or t in tids}
    if not waits:
        return []
    frames = sys._current_frames()
    all_held = lockdep.all_held_locks() if lockdep.is_enabled() else None
    out = []
    for tid, (lock, read, t0) in sorted(waits.items(), key=lambda kv: kv[1][2]):
        if now - t0 > threshold:
            out.append(_hung_report(tid, lock, read, now - t0, threshold, frames, all_held))
    for cycle in _wait_for_cycles(waits):
        out.append(_deadlock_report(cycle, waits, frames, all_held))
    # record_report returns the first report of a signature: ours only if new
    return [rep for rep in out if lockdep.record_report(rep) is rep]


def _wait_for_cycles(waits):
    """Elementary cycles of thread -> holder-of-the-lock-it-waits-for,
    among waiting threads, each once (rotated to start at its smallest tid).

    A lock's holders are its owner or its readers (``lock.holders()``); a
    reader blocked behind a queued writer waits for the holders too, so the
    writer need not be on the path."""
    succ = {tid: [h for h in lock.holders() if h in waits] for tid, (lock, _, _) in waits.items()}
    seen = set()
    cycles = []

    def dfs(start, node, path, on_path):
        for nxt in succ.get(node, ()):
            if nxt == start:
                c = tuple(path)
                r = c.index(min(c))
                c = c[r:] + c[:r]
                if c not in seen:
                    seen.add(c)
                    cycles.append(list(c))
            elif nxt not in on_path and nxt > start:    # each cycle from its smallest tid
                on_path.add(nxt)
                path.append(nxt)
                dfs(start, nxt, path, on_path)
                path.pop()
                on_path.discard(nxt)

    for tid in sorted(succ):
        dfs(tid, tid, [tid], {tid})
    return cycles


def _stack_of(tid, frames):
    f = frames.get(tid)
    return capture_stack(frame=f) if f is not None else []


def _holders_desc(lock):
    out = []
    for h in lock.holders():
        mode = "write" if lock.owner == h else "read"
        if lock.readers is None:
            mode = "held"
        out.append({"name": thread_name(h), "tid": h, "mode": mode})
    return out


def _show_all(all_held):
    """``debug_show_all_locks()``.  With the validator off pymm still knows
    who holds each lock a thread waits for (the lock's owner and readers)."""
    lines = ["", "Showing all locks held in the system:"]
    if all_held is None:
        lines.append("INFO: lockdep is turned off; the locks threads wait for, and who holds them:")
        lines += format_waits()
    else:
        for (name, tid), held in sorted(all_held.items(), key=lambda kv: kv[0][1]):
            lines += format_held(name, tid, held)
    lines += ["", "=" * 45, ""]
    return lines


def _all_held_data(all_held):
    if all_held is None:
        return None
    return [{"thread": {"name": n, "tid": t}, "held": [h.as_dict() for h in hs]}
            for (n, t), hs in sorted(all_held.items(), key=lambda kv: kv[0][1])]


def format_waits():
    """One line per waiting thread: what it waits for and who holds it.
    Needs neither the validator nor the watchdog thread, only ``enable()``."""
    out = []
    now = _clock()
    for tid, (lock, read, t0) in sorted(_snapshot().items()):
        holders = ", ".join(f"{thread_label(h['name'], h['tid'])} ({h['mode']})"
                            for h in _holders_desc(lock)) or "nobody (just released)"
        out.append(f" {thread_label(thread_name(tid), tid)} waits {now - t0:.3f} s to "
                   f"{lock_mode(lock, read) or 'lock'} {_lock_line(lock, read)}, held by {holders}")
    return out or [" no thread waits for a pymm lock"]


def _lock_line(lock, read):
    return lock_desc(lock, lock.key.name, read, None).rsplit(", at:", 1)[0]


def _hung_report(tid, lock, read, waited, threshold, frames, all_held):
    """``check_hung_task()`` + ``sched_show_task()`` + ``debug_show_all_locks()``."""
    name = thread_name(tid)
    secs = int(threshold)      # whole seconds, as the kernel prints (and its parsers expect)
    title = f"INFO: task {name}:{tid} blocked for more than {secs} seconds."
    stack = _stack_of(tid, frames)
    holders = _holders_desc(lock)
    mode = lock_mode(lock, read) or "lock"
    body = [f"      blocked for {waited:.3f} s waiting to {mode} {_lock_line(lock, read)}",
            '"hung_task.stop()" disables this message.',
            f"task:{name} state:D tid:{tid}", "Call Trace:"] + format_stack(stack)
    body += ["", "the lock is held by:"]
    body += [f" {thread_label(h['name'], h['tid'])} ({h['mode']})" for h in holders] or \
            [" nobody (it was released; the waiter has not run yet)"]
    body += _show_all(all_held)
    data = {"thread": {"name": name, "tid": tid}, "classes": [lock.key.name],
            "lock": {"class": lock.key.name, "kind": lock.KIND, "lock": lock_addr(lock),
                     "mode": mode},
            "waited": round(waited, 6), "threshold": threshold, "holders": holders,
            "stack": stack, "all_held": _all_held_data(all_held)}
    sig = ("hung-task", lock.key.name, stack[0] if stack else None)
    return Report("hung-task", title, body, data, sig, framed=False)


def _deadlock_report(cycle, waits, frames, all_held):
    title = "WARNING: deadlock detected"
    body = ["A wait-for cycle among blocked threads: this deadlock is demonstrated, "
            "not just possible.", ""]
    steps = []
    for i, tid in enumerate(cycle):
        lock, read, t0 = waits[tid]
        nxt = cycle[(i + 1) % len(cycle)]
        holder = thread_label(thread_name(nxt), nxt)
        mode = lock_mode(lock, read) or "lock"
        body.append(f" {thread_label(thread_name(tid), tid)} waits to {mode} "
                    f"{_lock_line(lock, read)}, held by {holder}")
        steps.append({"thread": {"name": thread_name(tid), "tid": tid}, "class": lock.key.name,
                      "lock": lock_addr(lock), "mode": mode,
                      "holder": {"name": thread_name(nxt), "tid": nxt},
                      "stack": _stack_of(tid, frames)})
    for s in steps:
        body += ["", f"stack of {thread_label(s['thread']['name'], s['thread']['tid'])}:"]
        body += format_stack(s["stack"])
    body += _show_all(all_held)
    classes = [s["class"] for s in steps]
    r = classes.index(min(classes))
    data = {"classes": classes, "cycle": steps, "all_held": _all_held_data(all_held)}
    return Report("deadlock", title, body, data,
                  ("deadlock",) + tuple(classes[r:] + classes[:r]))


# -- the watchdog thread ------------------------------------------------------------------

_thread = None
_stop = threading.Event()
_ctl = threading.Lock()     # start/stop only


def _watchdog(threshold, interval, stop):
    # A periodic poll, as khungtaskd's: Event.wait is the timer and the
    # prompt way out.
    while not stop.wait(interval):
        try:
            check_now(threshold)
        except Exception:   # a subscriber failed: log it, keep watching
            logger.exception("hung_task: check failed")


def start(threshold=120.0, interval=None):
    """Start the watchdog: every ``interval`` seconds (default: threshold/2,
    at most 10 s) report threads blocked longer than ``threshold`` seconds
    and wait-for cycles.  Restarts it if running."""
    global _thread, _stop
    if threshold < 0:
        raise PymmError(f"hung_task.start(): threshold must be >= 0 seconds, got {threshold!r}")
    if interval is None:
        interval = min(max(threshold / 2, 0.01), 10.0)
    if interval <= 0:
        raise PymmError(f"hung_task.start(): interval must be > 0 seconds, got {interval!r}")
    stop()
    enable()
    with _ctl:
        _stop = threading.Event()
        _thread = threading.Thread(target=_watchdog, args=(threshold, interval, _stop),
                                   name="khungtaskd", daemon=True)
        _thread.start()


def stop(timeout=5.0):
    """Stop the watchdog thread (tracking stays on; ``disable()`` ends it)."""
    global _thread
    with _ctl:
        t, _thread = _thread, None
        _stop.set()
    if t is not None and t is not threading.current_thread():
        t.join(timeout)


def is_running():
    t = _thread
    return t is not None and t.is_alive()
