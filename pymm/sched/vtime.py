"""Virtual time: the controlled scheduler as a discrete-event simulator.

The problem.  Measuring locking designs by wall clock measures Python: a pymm
lock operation costs about as much as copying a page, where in the kernel a
lock is ~100x cheaper than a page copy, and a shared 2-core machine under the
GIL adds noise on top.  Two runs of the same experiment can rank two designs
in opposite orders.

The solution.  Every simulated CPU has a virtual clock.  Emulated code
*charges* the kernel's cost of the work it does at the places where the
kernel does it (``charge("zap_page", n)``, ``charge("copy_page")``...; the
figures are ``cost_model.DEFAULT``), and every lock operation charges an
uncontended atomic.  The controlled scheduler then always runs the thread
whose clock is earliest (the ``vtime`` strategy), so interleavings follow
virtual time: a thread that blocks on a lock resumes at the virtual time the
lock was released, plus a wake-up; a runnable thread that finds every
simulated CPU busy queues until one is free (or the running thread's slice
ends).  Ties are broken by a seeded RNG, so seeds explore different
interleavings of equally-timed events.  Nothing from the wall clock enters,
so the same arguments give the same figures on any machine.

What it does not change.  ``charge`` is a no-op outside a virtual-time run
(one global load), and scheduling points are the scheduler's own: bug-finding
strategies (``random``, ``pct``, ``dfs``) are unaffected.  ``vtime`` is a
strategy of its own; its schedules replay with ``replay`` like any other.

pymm's simplifications: the clock advances only at charges (work the model
does not name is free); a thread's work between two scheduling points happens
at the point's time from the other threads' view; CPUs have no affinity, caches
or NUMA distance; a thread that is alone runnable runs even if the CPU model
would have queued it (the scheduler makes no choice there).
"""
import collections
import random
from _thread import get_ident

from ..locking import events as _ev
from . import _core
from .cost_model import SCHED_SLICE_NS, CostModel

_charge = None      # the running simulation's charge function, else None
_now = None         # the running simulation's clock of the calling thread, else None
_span = None        # the running simulation's span recorder (begin, end), else None


def charge(what, n=1):
    """Charge ``n`` times the cost of ``what`` (a name in the cost model) to
    the calling thread's virtual clock.  A no-op outside virtual time."""
    h = _charge
    if h is not None:
        h(what, n)


def now_ns():
    """The calling managed thread's virtual clock in ns (0 outside virtual time)."""
    h = _now
    return 0 if h is None else h()


def span_begin(name, cat="syscall"):
    """Open a span (a syscall, a fault: ``cat``) on the calling thread's track
    of the trace; returns a handle for ``span_end``, or None outside virtual
    time."""
    h = _span
    return None if h is None else h.begin(name, cat)


def span_end(handle):
    if handle is not None:
        h = _span
        if h is not None:
            h.end(handle)


class VClock:
    """The state of one simulation: clocks, CPUs, lock statistics, trace.

    Also an events listener (lock events charge ``lock`` and record waits and
    holds).  Only the thread holding the baton touches it."""

    def __init__(self, run, model, cpus, rng, trace):
        self.run = run
        self.cost = model.ns
        self.n = n = len(run.threads)
        self.cpus = cpus = max(1, min(cpus or n, n))
        self.clock = [0] * n
        self.rnd = rng.random
        self.oncpu = [i < cpus for i in range(n)]
        self.rq = collections.deque(range(cpus, n))
        self.nfree = 0
        self.slice_start = [0] * n
        self.prev = set(range(n))           # enabled at the previous choice
        self.woken = [False] * n            # woken, wake-up latency not yet paid
        self.tpos = 0                       # how much of run.trace has been read
        self.trace = [] if trace else None  # chrome trace events
        self.lock_wait = {}                 # tid -> (lock, t0) while it waits
        self._contending = set()
        self.held = {}                      # (tid, lock id) -> (lock, read, t0)
        self.free_w = {}                    # lock id -> virtual time of its last write release
        self.free_r = {}                    # lock id -> virtual time of its last read release
        self.stats = collections.defaultdict(lambda: {
            "acquisitions": 0, "contentions": 0, "wait_total_ns": 0, "wait_max_ns": 0,
            "hold_total_ns": 0, "hold_max_ns": 0})
        self.ctx = self.cost.get("context_switch", 0)
        self.wake = self.cost.get("wakeup", 0)
        self.lockcost = self.cost.get("lock", 0)

    # -- clocks ----------------------------------------------------------------------
    def _me(self):
        """The calling thread's index if it holds the baton, else None.  A
        thread that runs while the CPU model has it queued (it was alone
        runnable, so the scheduler made no choice) first waits for a CPU."""
        run = self.run
        if get_ident() == run.cur_tid and run.cur is not None:
            i = run.cur.index
            if not self.oncpu[i]:
                self._sync(run.enabled, run.cur)
            return i
        return None

    def charge(self, what, n=1):
        i = self._me()
        if i is not None:
            self.clock[i] += self.cost[what] * n

    def now(self):
        i = self._me()
        return 0 if i is None else self.clock[i]

    # -- the strategy -------------------------------------------------------------------
    def choose(self, en, me):
        self._sync(en, me)
        clock, oncpu = self.clock, self.oncpu
        best, bt, ties = None, None, 0
        rnd = self.rnd
        for t in en:
            if not oncpu[t.index]:
                continue
            c = clock[t.index]
            if best is None or c < bt:
                best, bt, ties = t, c, 1
            elif c == bt:                    # reservoir-sample among equal clocks
                ties += 1
                if rnd() * ties < 1:
                    best = t
        if best is None:                     # nobody runnable holds a CPU: earliest wins
            best = min(en, key=lambda t: clock[t.index])
        return best

    def _sync(self, en, me):
        """CPU bookkeeping since the last call: threads that blocked or exited
        give their CPU to the queue's head, threads ``me`` woke resume at its
        clock, a slice that is over sends ``me`` to the back of the queue."""
        clock, oncpu, rq = self.clock, self.oncpu, self.rq
        cur = set()
        for t in en:
            cur.add(t.index)
        # Threads that blocked since the last choice (the run's trace says
        # "wait"): if they can run again, ``me`` woke them, even when no
        # choice was made while they were blocked.
        trace = self.run.trace
        slept = set()
        for k in range(self.tpos, len(trace)):
            if trace[k][1] == "wait":
                slept.add(trace[k][0])
        self.tpos = len(trace)
        left = self.prev - cur
        for i in left:                       # blocked or exited: its CPU goes to the queue
            if oncpu[i]:
                oncpu[i] = False
                self._give_cpu(clock[i], cur)
        if me is not None:
            waker = clock[me.index]
            for i in (cur - self.prev) | (cur & slept):     # woken by ``me``'s release
                # Hand-off: the waiter resumes at the release, so it gets the
                # lock before the waker can take it again (rwsem_mark_wake
                # grants readers the lock; a woken writer gets a hand-off),
                # and pays the wake-up once it holds the lock (``acquired``).
                clock[i] = max(clock[i], waker)
                self.woken[i] = True
                if oncpu[i] or i in rq:      # blocked and woken between two choices
                    continue
                if self.nfree:
                    self.nfree -= 1
                    oncpu[i] = True
                    self.slice_start[i] = clock[i]
                else:
                    rq.append(i)
            m = me.index
            if not oncpu[m] and self.nfree:  # ran alone while queued (see simplifications)
                self.nfree -= 1
                oncpu[m] = True
                self.slice_start[m] = clock[m]
                if m in rq:
                    rq.remove(m)
            elif oncpu[m] and rq and clock[m] - self.slice_start[m] >= SCHED_SLICE_NS:
                oncpu[m] = False             # slice over: to the back of the queue
                rq.append(m)
                self._give_cpu(clock[m], cur)
        self.prev = cur

    def _give_cpu(self, t, runnable):
        """A CPU became free at virtual time ``t``: the queue's head gets it."""
        clock, oncpu, rq = self.clock, self.oncpu, self.rq
        while rq:
            j = rq.popleft()
            if j in runnable:
                clock[j] = max(clock[j], t) + self.ctx
                oncpu[j] = True
                self.slice_start[j] = clock[j]
                return
        self.nfree += 1

    # -- lock events ---------------------------------------------------------------------
    def _free(self, lock, read):
        """When ``lock`` is free for this mode in virtual time: its last write
        release (or downgrade), and for a writer also its last read release."""
        lid = id(lock)
        free = self.free_w.get(lid, 0)
        if not read:
            free = max(free, self.free_r.get(lid, 0))
        return free

    def acquire(self, lock, read, trylock, subclass, nest_lock):
        """Causality: the real lock may be free while, in virtual time, its
        last holder releases it later than this thread asks (the holder's
        section ran ahead).  Then this thread waits: its clock moves to the
        release (+ a wake-up if the lock sleeps) *before* it tries, so the
        scheduler first runs the threads that were waiting earlier (FIFO in
        virtual time).  A trylock does not wait (pymm's simplification: it
        may succeed where the kernel's would have failed)."""
        i = self._me()
        if i is None:
            return
        tid = get_ident()
        t = self.clock[i] + self.lockcost
        self.lock_wait[tid] = (lock, t)
        free = self._free(lock, read)
        if free > t and not trylock:
            self._contending.add(tid)
            self.woken[i] = False
            t = free + (0 if lock.KIND in _SPINNING else self.wake)
        self.clock[i] = t

    def contended(self, lock, read):
        self._contending.add(get_ident())

    def acquired(self, lock, read, trylock, subclass, nest_lock):
        tid = get_ident()
        i = self._me()
        if i is None:
            return
        # Causality again (see ``acquire``): others may have run and released
        # the lock in this thread's virtual future since it asked.
        free = self._free(lock, read)
        t = self.clock[i]
        if free > t:
            t = self.clock[i] = free + (0 if lock.KIND in _SPINNING else self.wake)
            self._contending.add(tid)
            self.woken[i] = False
        elif self.woken[i]:
            self.woken[i] = False
            if lock.KIND not in _SPINNING:
                t = self.clock[i] = t + self.wake
        st = self.stats[_key(lock, read)]
        st["acquisitions"] += 1
        w = self.lock_wait.pop(tid, None)
        if tid in self._contending:
            self._contending.discard(tid)
            st["contentions"] += 1
            if w is not None:
                d = t - w[1]
                st["wait_total_ns"] += d
                st["wait_max_ns"] = max(st["wait_max_ns"], d)
                self._event(i, f"wait {lock.name}", w[1], d, "lock wait")
        self.held[(tid, id(lock))] = (lock, read, t)

    def aborted(self, lock, read):
        self.lock_wait.pop(get_ident(), None)
        self._contending.discard(get_ident())

    def released(self, lock, read):
        i = self._me()
        if i is None:
            return
        t = self.clock[i] = self.clock[i] + self.lockcost
        lid = id(lock)
        fr = self.free_r if read else self.free_w
        if fr.get(lid, 0) < t:
            fr[lid] = t
        h = self.held.pop((get_ident(), lid), None)
        if h is not None:
            self._hold_end(i, h, t)

    def downgrade(self, lock):
        i = self._me()
        if i is None:
            return
        key = (get_ident(), id(lock))
        h = self.held.pop(key, None)
        t = self.clock[i]
        if h is not None:
            self._hold_end(i, h, t)
        if self.free_w.get(id(lock), 0) < t:     # readers may enter from now on
            self.free_w[id(lock)] = t
        self.held[key] = (lock, 1, t)

    def _hold_end(self, i, h, t):
        lock, read, t0 = h
        st = self.stats[_key(lock, read)]
        d = t - t0
        st["hold_total_ns"] += d
        st["hold_max_ns"] = max(st["hold_max_ns"], d)
        self._event(i, f"{'read' if read else 'hold'} {lock.name}", t0, d, "lock hold")

    # -- trace ------------------------------------------------------------------------------
    def _event(self, i, name, t0, dur, cat):
        tr = self.trace
        if tr is not None:
            tr.append({"name": name, "cat": cat, "ph": "X", "ts": t0 / 1000, "dur": dur / 1000,
                       "pid": 1, "tid": i})

    def begin(self, name, cat):
        i = self._me()
        return None if i is None else (i, name, cat, self.clock[i])

    def end(self, handle):
        i, name, cat, t0 = handle
        self._event(i, name, t0, self.clock[i] - t0, cat)


_SPINNING = ("spinlock", "rwlock")     # waiters spin: no sleep, no wake-up


def _key(lock, read):
    return f"{lock.name}-{'R' if read else 'W'}"


class VirtualTime:
    """The ``vtime`` strategy: earliest virtual clock first (see the module
    docstring).  ``cpus``: simulated CPUs (default: one per thread)."""

    name = "vtime"

    def __init__(self, seed, cpus=None, model=None, trace=False):
        self.seed = seed
        self.cpus = cpus
        self.model = model or CostModel()
        self.trace = trace
        self.state = None

    def seed_of(self, i):
        return self.seed

    def params(self):
        return {"cpus": self.cpus}

    def chooser(self, i):
        rng = random.Random(f"pymm-vtime:{self.seed}:{i}")

        def make(run):
            self.close()
            st = self.state = VClock(run, self.model, self.cpus, rng, self.trace)
            _install(st)
            return st.choose
        return make

    def feedback(self, run):
        self.close()
        return True

    def close(self):
        st = self.state
        if st is not None:
            _uninstall(st)


def _install(st):
    global _charge, _now, _span
    _ev.register(st)
    _charge, _now, _span = st.charge, st.now, st


def _uninstall(st):
    global _charge, _now, _span
    _ev.unregister(st)
    if _span is st:
        _charge = _now = _span = None


def simulate(setup, threads, *, seed=0, cpus=None, model=None, trace=False,
             max_steps=50_000_000, watchdog=60.0):
    """Run ``threads`` once under virtual time (``setup()`` builds the state
    each thread receives) and return ``(run, vclock)``: the finished run
    (``run.failure`` is None or what a detector found) and its ``VClock``
    (``clock`` per thread, ``stats`` per lock class and mode, ``trace``).

    Context: the calling thread is the controller, as for ``explore``."""
    strat = VirtualTime(seed, cpus, model, trace)
    with _core.lockdep_raising():
        try:
            run = _core._Run(setup, list(threads), None, strat.chooser(0), watchdog,
                             max_steps).execute()
        finally:
            strat.close()
    return run, strat.state
