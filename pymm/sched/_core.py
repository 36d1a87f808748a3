"""The baton: real OS threads, one running at a time, switched only at
scheduling points.

The problem.  Under the GIL a thread switch happens every few milliseconds or
when a thread blocks, so a race window a few bytecodes wide is almost never
hit, and a hit cannot be replayed.  Tracing every bytecode (sys.settrace)
makes each run 4-18x slower.

The solution (CHESS, shuttle, loom, Coyote): every managed thread owns a
*gate*, a raw ``_thread`` lock kept locked.  A thread runs only while it holds
the baton; at a scheduling point the running thread asks the strategy which
thread runs next, opens that thread's gate and waits on its own.  Exactly one
thread executes Python code of the program at any time, so a run is a pure
function of the choices made, and only the running thread ever touches the
run's state (the fields below need no lock: the baton *is* the lock).

Scheduling points are the lock events (before every acquire attempt, after
every release and downgrade; see ``pymm.locking.events``), the start of the
first thread, thread exit, a thread blocking, and ``point(label)`` in
emulated kernel code.  A point reached while an exception propagates is still
a point, except the validator's LockdepError (see ``_unwinding_check``).

Blocking.  Locks built inside a controlled run get ``ControlledLock`` as their
raw primitive (through the controlled ``events.Backend``).  Its blocking
acquire never blocks in C: it tries, and on failure marks the thread blocked
on that raw lock and passes the baton; a release re-enables the waiters, which
retry when next chosen.  No runnable thread while some are unfinished is a
deadlock, reported with its waits-for cycle.  Blocking the scheduler cannot see
(a lock built outside the run, I/O, an Event) stops the baton: the controller
thread's watchdog notices that no scheduling point happened for ``watchdog``
seconds and ends the run as "hung".

Abort.  A failure sets ``aborting``, opens every gate and signals the
controller.  From then on the threads run truly concurrently but only to
unwind: each raises ``SchedAbort`` (a BaseException) at its next scheduling
point, new acquisitions raise it too, releases and ``point()`` no longer
schedule, and raw locks behave as plain locks.  A thread that still holds pymm
locks when it has unwound (kernel-style code releases locks explicitly, not in
``finally``) has them released for it, in its own context so the validator sees
ordinary releases; the controller then joins every thread and records anything
left alive or held.

Threads.  The managed threads run on pooled OS threads (``_Worker``), kept
across schedules: starting a thread costs 0.1-3 ms, far more than a
schedule of a small program.  A worker waits on its ``go`` lock, which is
the managed thread's gate until the thread first gets the baton; it then
switches to a fresh per-schedule gate.  After the job it drops the thread's
pymm thread-locals (current task, lockdep's held locks, RCU depth, ...) as
a thread's end would, takes the idle name and waits again.  A thread that
never got the baton (the run aborted first) never runs: its worker is handed
back untouched.  A worker still busy after an abort (leaked) is retired, and
so is every worker of a run that the controller aborted while a managed
thread was running (the watchdog's "hung"), since that thread may still hand
the baton on.

Limits.  Only the threads given to ``explore`` are managed: threads the
program starts itself run uncontrolled, and a managed thread waiting for a
lock one of them holds looks deadlocked.  Locks built outside the run (before
``setup``) have plain raw locks: a managed thread blocking on one blocks in C
and the watchdog reports the run as hung.
"""
import contextlib
import functools
import os
import re
import select
import sys
import threading
import time
import traceback
from _thread import allocate_lock, get_ident

from ..errors import LockdepError, PymmError
from ..locking import events as _ev
from ..locking import lockdep as _LD
from ..locking._rw import RwBase
from .trace import Failure


class SchedAbort(BaseException):
    """Raised by the scheduler inside a managed thread to unwind it when the
    run is being aborted (a failure was found).  A BaseException so that
    ``except Exception`` in the program does not swallow it; do not catch it."""


class SchedUsageError(PymmError, ValueError):
    """Raised by ``explore``/``replay``/free-mode helpers for bad input: an
    empty thread list, something not callable, a schedule that does not fit
    the program, an unknown strategy, a budget that is not a positive int."""


class Finding(Exception):
    """A detector's finding raised as an exception: if it escapes a managed
    thread (or ``check``), the run fails with ``kind`` instead of "exception".
    Detectors that must not unwind the caller use ``report_finding``."""

    def __init__(self, kind, title, text=""):
        super().__init__(title)
        self.kind = kind
        self.title = title
        self.text = text


_active = None          # the _Run in progress (from setup to check), else None
_hook = None            # what point() calls: the run's hook, free mode's injector, or None
_run_lock = allocate_lock()   # one controlled run at a time in a process


def point(label=None):
    """A scheduling point for emulated kernel code (``label`` names the step:
    "vma lookup", "pte_alloc", ...).  Outside a controlled run and free mode it
    costs one global check."""
    if _hook is not None:
        _hook(label)


def set_point_hook(fn):
    """Install ``fn(label)`` as the target of ``point()``; returns the
    previous one so the caller can restore it."""
    global _hook
    prev, _hook = _hook, fn
    return prev


def report_finding(kind, title, text=""):
    """A detector found something.  In a managed thread of a controlled run
    this ends the schedule with a failure of ``kind`` and unwinds the calling
    thread (it raises ``SchedAbort``; it does not return).  Called from the
    controller during setup/check it records the failure and returns True.
    Anywhere else (free mode, no run) it does nothing and returns False: the
    caller keeps the finding its own way.

    Context: any; takes no lock."""
    run = _active
    if run is None or run.aborting:
        return False
    tid = get_ident()
    if tid == run.cur_tid:
        me = run.cur
        run._fail(Failure(kind, f"{title}\n{text}".rstrip(), thread=me.index))
        me.unwinding = True
        raise SchedAbort
    if tid == run.controller_tid:
        run._fail(Failure(kind, f"{title}\n{text}".rstrip()))
        return True
    return False


def is_controlled():
    """Is the calling thread a managed thread of a controlled run?"""
    run = _active
    return run is not None and get_ident() in run.by_tid


def virtual_time():
    """The controlled backend's clock.  It does not advance, so a timed
    acquire with timeout 0 is a single try; positive timeouts never expire
    (they wait like blocking acquires; a run that can only end by a timeout is
    reported as a deadlock)."""
    return 0.0


class ControlledLock:
    """The raw lock of pymm locks built inside a controlled run (their
    readerwriterlock internals included).  In a managed thread a blocking
    acquire is a loop of non-blocking try + pass the baton; in any other
    thread, outside a run, or while a run aborts it is a plain lock.
    Release by another thread is allowed (readerwriterlock relies on it)."""

    __slots__ = ("_lock", "_waiters")

    def __init__(self):
        self._lock = allocate_lock()
        self._waiters = None        # managed threads blocked on this lock, or None

    def acquire(self, blocking=True, timeout=-1):
        if self._lock.acquire(False):
            return True
        if not blocking or timeout == 0:
            return False
        run = _active
        if run is None or run.aborting or get_ident() != run.cur_tid:
            return self._lock.acquire(True, timeout)
        me = run.cur
        while True:
            run._block(me, self)
            if self._lock.acquire(False):
                return True

    def release(self):
        self._lock.release()
        w = self._waiters
        if w is not None:
            self._waiters = None
            run = _active
            if run is not None and not run.aborting:
                run._wake(w, self)

    def locked(self):
        return self._lock.locked()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def __repr__(self):
        return f"<ControlledLock {'locked' if self._lock.locked() else 'unlocked'}>"


CONTROLLED = _ev.Backend(ControlledLock, virtual_time, "controlled")

# trace codes by lockdep read kind (0 exclusive, 1 shared, 2 shared recursive)
_LOCK = ("lock", "rlock", "rlock")
_TRY = ("trylock", "tryrlock", "tryrlock")
_UNLOCK = ("unlock", "runlock", "runlock")


def _lockdep():
    return _LD


class _FdGate:
    """A gate: ``open()`` lets one ``wait()`` through (opens before the wait
    are not lost; several opens before one wait let that one through).
    An eventfd: ``eventfd_write`` and ``eventfd_read`` drop the GIL *before*
    the system call, so the woken thread finds the GIL free, where a raw
    lock's release wakes it while the releaser still holds the GIL and it
    sleeps again on the GIL (``pymm bench --section engine``'s hand-over
    rows: ~2x).  The descriptor is closed when the last reference goes:
    whoever may still open a gate holds it."""

    __slots__ = ("fd", "_poll")

    def __init__(self):
        self.fd = os.eventfd(0, os.EFD_CLOEXEC)
        self._poll = None

    def open(self, _write=getattr(os, "eventfd_write", None)):
        _write(self.fd, 1)

    def wait(self, _read=getattr(os, "eventfd_read", None)):
        while True:
            try:
                _read(self.fd)
                return
            except InterruptedError:    # a signal (eventfd_read does not retry, as
                pass                    # a lock's acquire does: PEP 475 skips it)

    def wait_for(self, timeout):
        """Wait at most ``timeout`` seconds; True if the gate was open."""
        p = self._poll
        if p is None:
            p = self._poll = select.poll()
            p.register(self.fd, select.POLLIN)
        if not p.poll(timeout * 1000.0):
            return False
        os.eventfd_read(self.fd)
        return True

    def is_open(self):
        p = self._poll
        if p is None:
            p = self._poll = select.poll()
            p.register(self.fd, select.POLLIN)
        return bool(p.poll(0))

    def __del__(self):
        fd = getattr(self, "fd", None)
        if fd is not None:
            os.close(fd)


class _LockGate:
    """The same gate on a raw lock (interpreters without ``os.eventfd``)."""

    __slots__ = ("_lock",)

    def __init__(self):
        self._lock = allocate_lock()
        self._lock.acquire()

    def open(self):
        try:
            self._lock.release()
        except RuntimeError:        # already open
            pass

    def wait(self):
        self._lock.acquire()

    def wait_for(self, timeout):
        return self._lock.acquire(True, timeout)

    def is_open(self):
        return not self._lock.locked()


_Gate = _FdGate if hasattr(os, "eventfd") and hasattr(select, "poll") else _LockGate


class _Managed:
    """One managed thread.  ``gate`` (its worker's ``go``) is closed except
    while the baton is being handed to this thread."""

    __slots__ = ("index", "name", "fn", "gate", "tid", "worker", "run", "blocked_on",
                 "finished", "unwinding", "started")

    def __init__(self, index, fn, run):
        self.index = index
        self.name = f"T{index}-{getattr(fn, '__name__', 'thread')}"
        self.fn = fn
        self.run = run
        self.gate = None
        self.tid = None
        self.worker = None          # the pooled _Worker running it
        self.started = False        # it got the baton at least once (its job began)
        self.blocked_on = None      # the ControlledLock it waits for
        self.finished = False
        self.unwinding = False      # SchedAbort has been raised in it


class _Worker:
    """A pooled OS thread that runs managed threads, one schedule after
    another (see "Threads" in the module docstring).  ``go`` is the gate of
    the managed thread it runs (closed while the worker waits for a job);
    ``idle`` is locked while it has a job.  Only the controller of the run
    in progress hands out jobs (under ``_run_lock``)."""

    __slots__ = ("thread", "tid", "go", "idle", "job", "retired")

    def __init__(self):
        self.go = _Gate()
        self.idle = allocate_lock()
        self.job = None
        self.retired = False
        self.thread = threading.Thread(target=self._loop, name=_IDLE_NAME, daemon=True)
        self.thread.start()
        self.tid = self.thread.ident

    def _loop(self):
        th = threading.current_thread()
        reset = _thread_state_resetter()
        wait = self.go.wait
        while True:
            wait()
            m = self.job
            if m is None:
                if self.retired:
                    return
                continue
            th.name = m.name            # what lockdep and the reports call the thread
            nxt = None
            try:
                nxt = m.run._start(m)
            finally:
                self.job = None
                reset()                 # as if the thread had ended
                th.name = _IDLE_NAME
                self.idle.release()
                if nxt is not None:     # the exit's hand-over, after the cleanup: the next
                    nxt.open()          # thread (or the controller) finds this one idle
            if self.retired:
                return

    def retire(self):
        """Never reuse this worker; its thread ends when its job does (or
        now, if it has none)."""
        self.retired = True
        if self.job is None:
            self.go.open()


_IDLE_NAME = "pymm-sched-idle"
_pool = []                  # idle workers (touched only by a controller, under _run_lock)
# The controller's gate, reused run after run (under _run_lock): in a run
# that ends without the controller aborting it while a thread runs, it is
# opened exactly once (by the last thread's worker, or by the failure that
# aborts the run: ``_done_open``) and the controller consumes that opening.
_done_gate = None
_tls_cache = [-1, ()]       # [len(sys.modules) when scanned, pymm's thread-locals]


def _pymm_thread_locals():
    """Every module-level ``threading.local`` of pymm's modules (rescanned
    when modules were imported since the last scan)."""
    mods = sys.modules
    if _tls_cache[0] != len(mods):
        found = []
        for name, mod in list(mods.items()):
            if (name == "pymm" or name.startswith("pymm.")) and mod is not None:
                for v in list(vars(mod).values()):
                    if isinstance(v, threading.local) and not any(v is f for f in found):
                        found.append(v)
        _tls_cache[:] = [len(mods), tuple(found)]
    return _tls_cache[1]


def _clear_module_locals():
    for loc in _pymm_thread_locals():
        loc.__dict__.clear()


def _tstate_dict():
    """The calling thread's thread-state dict (CPython keeps every
    ``threading.local``'s per-thread dict in it under a "thread.local.<address>"
    key, and a thread's end drops them all by clearing it), or None if this
    interpreter does not work so.  The dict lives as long as the thread."""
    try:
        import ctypes
        get = ctypes.pythonapi.PyThreadState_GetDict
        get.restype = ctypes.c_void_p       # a borrowed reference: cast takes a new one
        get.argtypes = []
        d = ctypes.cast(get(), ctypes.py_object).value
    except (ImportError, AttributeError, OSError, ValueError):
        return None
    if type(d) is not dict:
        return None
    probe = threading.local()               # check that dropping the keys works here
    probe.x = 1
    _drop_locals(d)
    return d if not hasattr(probe, "x") else None


def _drop_locals(d):
    for k in [k for k in d if type(k) is str and k.startswith("thread.local.")]:
        del d[k]


def _thread_state_resetter():
    """For the calling (worker) thread: a function that drops its thread-local
    state (current task, lockdep's held locks, RCU depth, lock_stat's holds,
    a lock map's depth, the program's own thread-locals) exactly as a thread's
    end does, so that a pooled worker starts every schedule as a fresh thread
    would.  Dropping the thread-state dict's keys needs the dict, looked up
    once per worker; failing that, pymm's module-level thread-locals are
    cleared one by one."""
    d = _tstate_dict()
    if d is None:
        return _clear_module_locals
    return functools.partial(_drop_locals, d)


def _take_workers(n):
    """``n`` idle workers, starting new ones when the pool is short."""
    out = []
    while _pool and len(out) < n:
        out.append(_pool.pop())
    try:
        while len(out) < n:
            out.append(_Worker())
    except BaseException:
        _pool.extend(out)
        raise
    return out


def _forget_pool():
    global _done_gate
    _pool.clear()           # a forked child has none of the parent's threads
    _done_gate = None


os.register_at_fork(after_in_child=_forget_pool)


class _Run:
    """One schedule: setup, the managed threads, check.  Also the events
    listener (registered only while the run exists).

    Every field is written only by the thread holding the baton (or by the
    controller while no managed thread runs), except during an abort."""

    def __init__(self, setup, fns, check, make_chooser, watchdog, max_steps):
        self.setup = setup
        self.check = check
        self.watchdog = watchdog
        self.max_steps = max_steps
        self.threads = [_Managed(i, fn, self) for i, fn in enumerate(fns)]
        self.enabled = list(self.threads)   # runnable threads, ordered by index
        self.by_tid = {}
        self.cur = None                     # the thread holding the baton
        self.cur_tid = None
        self.controller_tid = None
        self.trace = []                     # (thread index, code, obj) per scheduling point
        self.schedule = []                  # thread index chosen at each choice point
        self.choose = make_chooser(self)
        self.aborting = False
        self.failure = None
        self.done = None                    # the controller's gate while the threads run
        self._done_open = False
        self.unfinished = len(fns)
        self.locks = {}                     # pymm locks managed threads acquired (ordered set)
        self.waiting = {}                   # tid -> the pymm lock it waits for (contended)
        self.state = None
        self.lockdep = None
        self.leaked_threads = []
        self.leaked_locks = []
        self.released_on_abort = []
        self.concurrent_abort = False       # the controller aborted while a thread ran

    # -- controller ------------------------------------------------------------
    def execute(self):
        """Run this schedule (inside the calling controller's session, or in
        one of its own)."""
        global _active
        if _session_owner != get_ident():
            with session():
                return self.execute()
        if _active is not None:
            raise RuntimeError("a controlled run is already in progress; pymm.sched runs one "
                               "at a time (do not call explore/replay from setup or check)")
        self.lockdep = _LD
        self.controller_tid = _session_owner
        prev_hook = set_point_hook(self.point_hook)
        _active = self
        try:
            with _ev.use_backend(CONTROLLED):
                try:
                    self.state = self.setup()
                except LockdepError as e:
                    self._fail(_lockdep_failure(e.report, None))
                if self.failure is None:
                    self._run_threads()
                if self.failure is None and self.check is not None:
                    self._run_check()
        finally:
            set_point_hook(prev_hook)
            _active = None
        return self

    def _run_threads(self):
        global _done_gate
        if _done_gate is None:
            _done_gate = _Gate()
        self.done = _done_gate
        workers = _take_workers(len(self.threads))
        for m, w in zip(self.threads, workers):
            m.worker = w
            m.tid = w.tid
            m.gate = w.go           # the first hand-over starts the job
            self.by_tid[m.tid] = m
            w.idle.acquire()
            w.job = m
        try:                # the first choice: which thread starts
            en = self.enabled
            nxt = en[0] if len(en) == 1 else self._pick(en, None)
            self.cur, self.cur_tid = nxt, nxt.tid
            nxt.gate.open()
        except SchedAbort:
            pass
        last = -1
        while not self.done.wait_for(self.watchdog):
            n = len(self.trace)
            if n == last:
                self.concurrent_abort = True    # a managed thread may still be running
                self._fail(self._hung())
            last = n
        if self.concurrent_abort:
            _done_gate = None       # a thread may still open this one: the next run gets its own
        self._return_workers()
        self.cur = self.cur_tid = None
        self.leaked_locks = [repr(lk) for lk in self.locks
                             if any(h in self.by_tid for h in lk.holders())]

    def _return_workers(self):
        """Wait for the jobs that began; hand back the workers (or retire
        them: a job still running after the watchdog leaked its thread)."""
        deadline = time.monotonic() + self.watchdog
        leaked = []
        for m in self.threads:
            w = m.worker
            if not m.started:
                continue
            if w.idle.acquire(True, max(0.0, deadline - time.monotonic())):
                w.idle.release()
                if self.concurrent_abort:
                    w.retire()
                else:
                    _pool.append(w)
            else:
                w.retire()
                leaked.append(m)
        for m in self.threads:
            w = m.worker
            if m.started:
                continue
            # never got the baton (the run aborted first)
            if self.concurrent_abort or w.go.is_open():
                # a hand-over may have reached it (or still may): let it run
                # the job, which unwinds at once, and end
                w.retired = True
                w.go.open()
                continue
            w.job = None        # nobody released go: it never ran, never will
            w.idle.release()
            _pool.append(w)
        self.leaked_threads = [f"{m.name} (tid {m.tid})" for m in leaked]

    def _run_check(self):
        try:
            self.check(self.state)
        except LockdepError as e:
            self._fail(_lockdep_failure(e.report, None))
        except AssertionError as e:
            self._fail(Failure("assertion", "check(state) failed: "
                               f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}", exception=e))
        except Finding as e:
            self._fail(Failure(e.kind, f"{e.title}\n{e.text}".rstrip(), exception=e))
        except Exception as e:
            self._fail(Failure("exception", f"check(state) raised {type(e).__name__}: {e}\n\n"
                               f"{traceback.format_exc()}", exception=e))

    # -- managed threads -----------------------------------------------------------
    def _start(self, me):
        """In ``me``'s worker, which was just handed the baton for the first
        time: run.  Returns the gate to open once the worker is idle (the
        exit's hand-over), or None."""
        me.started = True
        return self._main(me, self.state)

    def _main(self, me, state):
        ok = False
        try:
            if self.aborting:
                me.unwinding = True
                raise SchedAbort
            self.trace.append((me.index, "start", None))
            me.fn(state)
            ok = True
        except SchedAbort:
            pass
        except LockdepError as e:
            self._fail(_lockdep_failure(e.report, me.index))
        except Finding as e:
            self._fail(Failure(e.kind, f"{e.title}\n{e.text}".rstrip() + "\n\n"
                               + traceback.format_exc(), thread=me.index, exception=e))
        except BaseException as e:
            self._fail(Failure("exception", f"{me.name} raised {type(e).__name__}: {e}\n\n"
                               + traceback.format_exc(), thread=me.index, exception=e))
        try:
            return self._exit(me, ok)
        except SchedAbort:
            pass
        except LockdepError as e:     # thread_exit() in raise mode
            self._fail(_lockdep_failure(e.report, me.index))
            self._exit(me, False)
        return None

    def _exit(self, me, ok):
        """``me`` ends.  Returns the gate of whoever gets the baton (the next
        thread, or the controller when every thread is done), for the worker
        to open after its cleanup; None when the run is aborting."""
        if ok and not self.aborting:
            if self.lockdep is not None and hasattr(self.lockdep, "thread_exit"):
                self.lockdep.thread_exit()      # a report makes the run fail ("lockdep")
            if not self.aborting:
                held = self._held_by(me.tid)
                if held:
                    self._fail(Failure("lock-held", f"{me.name} exited holding "
                                       + ", ".join(held), thread=me.index))
        if self.aborting:
            me.unwinding = True     # releases below must not raise SchedAbort
            self._release_held(me)
            me.finished = True
            return None
        me.finished = True
        self.trace.append((me.index, "exit", None))
        self.unfinished -= 1
        en = self.enabled
        en.remove(me)
        if not en:
            if self.unfinished:
                self._fail(self._deadlock())
                return None
            self.cur = self.cur_tid = None
            self._done_open = True
            return self.done
        nxt = en[0] if len(en) == 1 else self._pick(en, None)
        self.cur, self.cur_tid = nxt, nxt.tid
        return nxt.gate

    # -- the hot path ----------------------------------------------------------------
    def _pick(self, en, me):
        t = self.choose(en, me)
        self.schedule.append(t.index)
        return t

    def _point(self, me, code, obj):
        """A scheduling point in the running thread ``me``."""
        trace = self.trace
        trace.append((me.index, code, obj))
        if len(trace) > self.max_steps:
            self._fail(Failure("livelock", f"livelock: no end after {self.max_steps} scheduling "
                               "points (threads that keep going without finishing: a retry or "
                               "spin loop that never succeeds, or a program longer than "
                               "max_steps)"))
            me.unwinding = True
            raise SchedAbort
        en = self.enabled
        if len(en) > 1:
            nxt = self.choose(en, me)
            self.schedule.append(nxt.index)
            if nxt is not me:
                self._hand_over(me, nxt)

    def _hand_over(self, me, nxt):
        """Pass the baton: open ``nxt``'s gate, wait on our own.  Raises
        SchedAbort in ``me`` if the run was aborted while it waited."""
        self.cur = nxt
        self.cur_tid = nxt.tid
        nxt.gate.open()
        me.gate.wait()
        if self.aborting:
            me.unwinding = True
            raise SchedAbort

    def _block(self, me, raw):
        """``me`` cannot get ``raw``: park it until a release re-enables it."""
        w = raw._waiters
        if w is None:
            raw._waiters = [me]
        else:
            w.append(me)
        me.blocked_on = raw
        en = self.enabled
        en.remove(me)
        lk = self.waiting.get(me.tid)
        self.trace.append((me.index, "wait", None if lk is None else lk.name))
        if not en:
            self._fail(self._deadlock())
            me.unwinding = True
            raise SchedAbort
        self._hand_over(me, en[0] if len(en) == 1 else self._pick(en, None))

    def _wake(self, waiters, raw):
        en = self.enabled
        for t in waiters:
            if t.run is self and t.blocked_on is raw:
                t.blocked_on = None
                i = t.index
                for pos, u in enumerate(en):
                    if u.index > i:
                        en.insert(pos, t)
                        break
                else:
                    en.append(t)

    def _abort_point(self):
        me = self.by_tid.get(get_ident())
        if me is not None and not me.unwinding:
            me.unwinding = True
            raise SchedAbort

    def point_hook(self, label):
        if self.aborting:
            self._abort_point()
        elif get_ident() == self.cur_tid:
            if _exception() is not None:
                self._unwinding_check()
            self._point(self.cur, "point", label)

    def _unwinding_check(self):
        """A scheduling point reached while an exception propagates (in a
        ``finally`` or ``__exit__``).  If it is the validator's LockdepError,
        the run fails here, exactly as when the report was new and the
        subscriber aborted the run before the error was raised: lockdep
        de-duplicates reports, so a replay sees the error without the
        subscriber call, and must not schedule while it unwinds."""
        e = _exception()
        if isinstance(e, LockdepError):
            me = self.cur
            self._fail(_lockdep_failure(e.report, me.index))
            me.unwinding = True
            raise SchedAbort

    def on_report(self, report):
        """A validator report during the run is a failure (called by the
        session's lockdep subscriber).  The reporting thread unwinds at its
        next scheduling point (for acquire-time reports that is the
        listener's ``acquire``, called right after the validator's)."""
        if self.aborting:
            return
        tid = get_ident()
        if tid == self.cur_tid or tid == self.controller_tid:
            me = self.cur if tid == self.cur_tid else None
            self._fail(_lockdep_failure(report, None if me is None else me.index))

    # -- failures ---------------------------------------------------------------------------
    def _fail(self, failure):
        """Record ``failure`` (the first one wins; later ones become notes)
        and abort: open every gate and wake the controller."""
        if self.failure is None:
            self.failure = failure
        elif failure.report is not None and failure.report is self.failure.report:
            pass
        else:
            # without its "WARNING:"/"BUG:" prefix: a kernel report parser takes any line
            # holding one for the start of a report, and this line only mentions one
            head = re.sub(r"^(?:BUG|WARNING|INFO): ", "", _headline(failure))
            self.failure.notes.append(f"then {failure.kind}: {head}")
        if self.aborting:
            return
        self.aborting = True
        me = get_ident()
        for t in self.threads:      # (a thread that never started has nothing to unwind)
            if t.started and not t.finished and t.tid != me:
                t.gate.open()           # (a second open, racing a hand-over, is harmless)
        self._open_done()

    def misfit(self, text):
        """The replayed schedule does not fit the program (a chooser calls this)."""
        self._fail(Failure("misfit", text))
        me = self.by_tid.get(get_ident())
        if me is not None:
            me.unwinding = True
        raise SchedAbort

    def _open_done(self):
        if not self._done_open and self.done is not None:
            self._done_open = True
            self.done.open()

    def _held_by(self, tid):
        out = []
        for lk in self.locks:
            if lk.owner == tid or (lk.readers and tid in lk.readers):
                out.append(f"{lk.KIND} {lk.name!r} ({_mode(lk, tid)})")
        return out

    def _release_held(self, me):
        """Release, in ``me``'s own context, every pymm lock it still holds."""
        tid = me.tid
        for lk in list(self.locks):
            try:
                if lk.owner == tid:
                    if isinstance(lk, RwBase):
                        lk._write_unlock()
                    else:
                        lk.unlock()
                    self.released_on_abort.append(f"{me.name}: {lk.name} ({lk.KIND})")
                n = lk.readers.get(tid, 0) if lk.readers else 0
                for _ in range(n):
                    lk._read_unlock()
                if n:
                    self.released_on_abort.append(f"{me.name}: {lk.name} ({lk.KIND}, read x{n})")
            except BaseException as e:      # noqa: BLE001 - report, keep unwinding the rest
                self.released_on_abort.append(f"{me.name}: {lk.name}: release failed: {e!r}")

    def _name(self, tid):
        m = self.by_tid.get(tid)
        if m is not None:
            return m.name
        for t in threading.enumerate():
            if t.ident == tid:
                return t.name
        return f"thread-{tid}"

    def _deadlock(self):
        blocked = [t for t in self.threads if not t.finished and t.blocked_on is not None]
        lines = [f"deadlock: no thread can run; {len(blocked)} of {len(self.threads)} "
                 "threads are blocked"]
        graph = {}
        for t in blocked:
            lk = self.waiting.get(t.tid)
            if lk is None:
                lines.append(f"  {t.name} waits for an internal lock (inside a lock it is releasing)")
                continue
            holders = lk.holders()
            graph[t] = [(self.by_tid[h], lk) for h in holders if h in self.by_tid]
            hs = ", ".join(f"{self._name(h)} ({_mode(lk, h)})" for h in holders) \
                or "nobody (a queued writer or a thread that exited)"
            lines.append(f"  {t.name} waits for {lk.KIND} {lk.name!r}, held by {hs}")
        cycle = _find_cycle(graph)
        if cycle:
            lines.append("waits-for cycle: " + " -> ".join(
                f"{t.name} -> {lk.KIND} {lk.name!r}" for t, lk in cycle) + f" -> {cycle[0][0].name}")
        else:
            lines.append("no waits-for cycle among the managed threads: a lock is held by a "
                         "thread that exited or is not managed, or a wait cannot be attributed")
        return Failure("deadlock", "\n".join(lines))

    def _hung(self):
        me = self.cur
        if me is None:
            return Failure("hung", f"no scheduling point for {self.watchdog} s and no thread "
                           "holds the baton")
        frame = sys._current_frames().get(me.tid)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "  (no stack)\n"
        lk = self.waiting.get(me.tid)
        what = f"\nit waits for {lk!r}" if lk is not None else ""
        return Failure("hung", f"hung: {me.name} made no scheduling point for {self.watchdog} s: "
                       "it is blocked where the scheduler cannot see (a lock built outside the "
                       "controlled run, an Event, I/O, sleep) or computes without scheduling "
                       f"points{what}\nits stack:\n{stack}", thread=me.index)


_exception = sys.exception


class _Listener:
    """The events listener of controlled runs (``pymm.locking.events``),
    registered once per session (a loop of schedules), last, and acting on
    the run in progress (``_active``; None between schedules: nothing to do).
    Registering per schedule rebuilt the dispatch tables twice a schedule."""

    __slots__ = ()

    def acquire(self, lock, read, trylock, subclass, nest_lock):
        run = _active
        if run is None:
            return
        if run.aborting:        # no new locks while unwinding
            me = run.by_tid.get(get_ident())
            if me is not None:
                me.unwinding = True
                raise SchedAbort
            return
        if get_ident() == run.cur_tid:
            if _exception() is not None:
                run._unwinding_check()
            run.locks[lock] = None
            run._point(run.cur, (_TRY if trylock else _LOCK)[read], lock.name)

    def contended(self, lock, read):
        run = _active
        if run is not None:
            run.waiting[get_ident()] = lock

    def acquired(self, lock, read, trylock, subclass, nest_lock):
        run = _active
        if run is not None and run.waiting:
            run.waiting.pop(get_ident(), None)

    def aborted(self, lock, read):
        run = _active
        if run is not None and run.waiting:
            run.waiting.pop(get_ident(), None)

    def released(self, lock, read):
        run = _active
        if run is None:
            return
        if run.aborting:
            run._abort_point()
        elif get_ident() == run.cur_tid:
            if _exception() is not None:
                run._unwinding_check()
            run._point(run.cur, _UNLOCK[read], lock.name)

    def downgrade(self, lock):
        run = _active
        if run is None:
            return
        if run.aborting:
            run._abort_point()
        elif get_ident() == run.cur_tid:
            if _exception() is not None:
                run._unwinding_check()
            run._point(run.cur, "downgrade", lock.name)


_LISTENER = _Listener()


def _on_report(report):
    """lockdep.subscribe callback of a session."""
    run = _active
    if run is not None:
        run.on_report(report)


_session_owner = None       # the controller thread of the session in progress


class session:
    """A controller's loop of schedules (``explore``, ``replay``, shrinking):
    takes the one-run-at-a-time lock, registers the events listener and the
    validator subscriber once for all the schedules.  Re-entered by the
    same controller it does nothing; ``_Run.execute`` outside one opens its
    own."""

    __slots__ = ("outer",)

    def __enter__(self):
        global _session_owner
        me = get_ident()
        self.outer = _session_owner != me
        if not self.outer:
            return self
        if not _run_lock.acquire(False):
            raise RuntimeError("a controlled run is already in progress; pymm.sched runs one "
                               "at a time (do not call explore/replay from a managed thread)")
        _session_owner = me
        try:
            _ev.register(_LISTENER, last=True)
            if _LD is not None:
                _LD.subscribe(_on_report)
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *exc):
        if self.outer:
            self._close()

    @staticmethod
    def _close():
        global _session_owner
        try:
            if _LD is not None:
                _LD.unsubscribe(_on_report)
            _ev.unregister(_LISTENER)
        finally:
            _session_owner = None
            _run_lock.release()




def _lockdep_failure(report, thread):
    return Failure("lockdep", getattr(report, "text", str(report)), thread=thread, report=report)


@contextlib.contextmanager
def lockdep_raising():
    """Controlled runs put the validator in raise mode: a report raises
    LockdepError before the real lock is attempted, and -- unlike the
    subscriber callback -- raises again for a de-duplicated report, so a
    replay reproduces a lockdep failure found earlier.  Restores the
    previous settings."""
    ld = _lockdep()
    if ld is None or not hasattr(ld, "configure"):
        yield
        return
    prev = ld.configure(raise_on_report=True)
    try:
        yield
    finally:
        ld.configure(**prev)


def _mode(lock, tid):
    """How ``tid`` holds ``lock``: "held" (exclusive lock), "write", "read xN"."""
    if lock.owner == tid:
        return "held" if lock.readers is None else "write"
    n = lock.readers.get(tid, 0) if lock.readers else 0
    return "read" if n == 1 else f"read x{n}"


def _find_cycle(graph):
    """A cycle in thread -> [(holder thread, lock)] as [(thread, lock it waits for)]."""
    state = {}

    def visit(t, path):
        state[t] = 1
        for h, lk in graph.get(t, ()):
            path.append((t, lk))
            if state.get(h) == 1:
                for i, (u, _) in enumerate(path):
                    if u is h:
                        return path[i:]
            if h not in state:
                c = visit(h, path)
                if c:
                    return c
            path.pop()
        state[t] = 2
        return None

    for t in graph:
        if t not in state:
            c = visit(t, [])
            if c:
                return c
    return None


def _headline(failure):
    """A failure's one-line summary: the report's title, else the first line
    of its description that is not a ruler ("=====")."""
    if failure.report is not None:
        return failure.report.title
    for line in failure.detail.splitlines():
        if line.strip() and set(line.strip()) - set("=-"):
            return line.strip()
    return ""
