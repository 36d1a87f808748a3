"""``explore``, ``replay`` and ``run_schedule``: argument checking and the
loop over schedules.  The mechanics are in ``_core``, the choosers in
``strategies``, the failure text in ``trace``."""
import time

from ._core import SchedUsageError, _Run, lockdep_raising, session
from .strategies import PCT, BoundedDFS, RandomWalk, replay_chooser
from .trace import Outcome, Result, cook, decode_schedule, schedule_digest
from .vtime import VirtualTime

STRATEGIES = ("random", "pct", "dfs", "vtime")
DEFAULT_STRATEGY = "random"   # the one that finds every episode fastest (README, "Strategies")
DEFAULT_WATCHDOG = 10.0     # seconds without a scheduling point before a run is "hung"
DEFAULT_MAX_STEPS = 200_000  # scheduling points in one schedule before it is a "livelock"
MAX_THREADS = 255           # a schedule token stores one byte per choice


def explore(setup, threads, check=None, *, strategy=DEFAULT_STRATEGY, seed=0, max_schedules=1000,
            pct_depth=3, pct_k=None, preemption_bound=2, watchdog=DEFAULT_WATCHDOG,
            max_steps=DEFAULT_MAX_STEPS, first_schedule=0):
    """Run the program under up to ``max_schedules`` controlled schedules and
    stop at the first failure.

    For each schedule ``setup()`` builds fresh state (inside the controlled
    backend, so the pymm locks it builds are driven by the scheduler), each of
    ``threads`` is called with that state in its own managed thread, and
    ``check(state)``, if given, runs once they have all finished.  Returns a
    ``Result``; ``result.failure`` is None or a ``Failure`` whose message ends
    with how to replay it.

    ``strategy``: "random" (schedule i draws from ``derive_seed("schedule",
    seed, i)``: no two (seed, i) pairs share a stream), "pct" (depth
    ``pct_depth``; ``pct_k`` fixes the number of choice points instead of
    estimating it from the first schedule), "dfs" (preemption-bounded
    enumeration, ``preemption_bound`` preemptions at most; stops early when
    exhausted) or "vtime" (virtual time: the earliest virtual clock runs,
    ties broken at random; see ``pymm.sched.vtime``).  ``watchdog``: seconds without any scheduling point after
    which a run is declared "hung"; ``max_steps``: scheduling points after
    which one schedule is declared a "livelock".  ``first_schedule``: the
    number of the first schedule run (schedules ``first_schedule`` ..
    ``first_schedule + max_schedules - 1`` of ``seed``): with
    ``max_schedules=1`` and a failure's ``seed`` and ``schedule_index`` it
    runs that schedule again (for pct, with ``pct_k`` pinned to the
    failure's k).

    While it runs, the lock validator is in raise mode (a report raises
    LockdepError in the thread that triggered it, before the real lock is
    attempted) and every report is a failure of kind "lockdep"; the
    previous settings are restored afterwards.

    Context: the calling thread is the controller; it must not be a managed
    thread, and only one controlled run exists at a time.
    """
    fns = _check_program(setup, threads, check)
    if strategy not in STRATEGIES:
        raise SchedUsageError(f"unknown strategy {strategy!r}; expected one of "
                              f"{', '.join(map(repr, STRATEGIES))}")
    _check_int("seed", seed, None)
    _check_int("max_schedules", max_schedules, 1)
    _check_int("first_schedule", first_schedule, 0)
    _check_int("pct_depth", pct_depth, 1)
    if pct_k is not None:
        _check_int("pct_k", pct_k, 1)
    _check_int("preemption_bound", preemption_bound, 0)
    _check_int("max_steps", max_steps, 1)
    watchdog = _check_watchdog(watchdog)
    if strategy == "random":
        strat = RandomWalk(seed)
    elif strategy == "pct":
        strat = PCT(seed, pct_depth, pct_k)
    elif strategy == "vtime":
        strat = VirtualTime(seed)
    else:
        strat = BoundedDFS(preemption_bound)

    result = Result(strategy, seed)
    t0 = time.perf_counter()
    run = None
    with lockdep_raising(), session(), _closing(strat):
        for i in range(first_schedule, first_schedule + max_schedules):
            run = _Run(setup, fns, check, strat.chooser(i), watchdog, max_steps).execute()
            result.schedules_run += 1
            result.points += len(run.trace)
            result.digests.add(schedule_digest(run.schedule))
            f = run.failure
            if f is not None:
                if f.kind == "misfit":
                    raise SchedUsageError(f.detail)
                result.failure = f.finish(run, strat.name, strat.seed, strat.params(), i)
                break
            if not strat.feedback(run):
                result.exhausted = True
                break
    result.trace = result.failure.trace if result.failure else cook(run.trace)
    result.schedule = list(run.schedule)
    result.elapsed = time.perf_counter() - t0
    return result


class _closing:
    """Let a strategy that installs hooks per schedule (vtime) remove them,
    however the loop ends."""

    def __init__(self, strat):
        self.strat = strat

    def __enter__(self):
        return self.strat

    def __exit__(self, *exc):
        close = getattr(self.strat, "close", None)
        if close is not None:
            close()


def run_schedule(setup, threads, schedule, check=None, *, watchdog=DEFAULT_WATCHDOG,
                 max_steps=DEFAULT_MAX_STEPS):
    """Run exactly ``schedule`` (a list of thread indices, one per choice
    point, or a token string) and return an ``Outcome`` (failure, trace,
    schedule).

    The schedule must fit: a choice naming a thread that cannot run at that
    point, running out of choices before the program is done, or choices
    left over when it finishes cleanly raise ``SchedUsageError`` (a
    ValueError) saying where.  (A failure reached before the last choice is
    returned, with a note: the program may have changed.)"""
    fns = _check_program(setup, threads, check)
    sched = _check_schedule(schedule, len(fns))
    _check_int("max_steps", max_steps, 1)
    watchdog = _check_watchdog(watchdog)
    with lockdep_raising():
        run = _Run(setup, fns, check, replay_chooser(sched), watchdog, max_steps).execute()
    f = run.failure
    used = len(run.schedule)
    if f is not None and f.kind == "misfit":
        raise SchedUsageError(f.detail)
    if f is None and used < len(sched):
        raise SchedUsageError(f"the schedule does not fit the program: the program finished "
                              f"after {used} of the schedule's {len(sched)} choices")
    if f is not None:
        if used < len(sched):
            f.notes.append(f"the failure came after {used} of the schedule's {len(sched)} choices"
                           + (" (the validator remembers the dependencies it has seen, so a "
                              "replay can report earlier than the run that found it)"
                              if f.kind == "lockdep" else ""))
        f.finish(run, "replay", None, {})
    return Outcome(f, f.trace if f else cook(run.trace), list(run.schedule))


def replay(setup, threads, schedule, check=None, *, watchdog=DEFAULT_WATCHDOG,
           max_steps=DEFAULT_MAX_STEPS):
    """Run exactly ``schedule`` (``failure.schedule`` or ``failure.token``)
    and return the failure it leads to, or None.  See ``run_schedule``."""
    return run_schedule(setup, threads, schedule, check, watchdog=watchdog,
                        max_steps=max_steps).failure


# -- argument checks ---------------------------------------------------------------

def _check_program(setup, threads, check):
    if not callable(setup):
        raise SchedUsageError(f"setup must be a callable that builds fresh state for each "
                              f"schedule, got {setup!r}")
    if isinstance(threads, (str, bytes)) or not hasattr(threads, "__iter__"):
        raise SchedUsageError(f"threads must be a list of callables, got {threads!r}")
    fns = list(threads)
    if not fns:
        raise SchedUsageError("threads is empty: give at least one callable "
                              "(each runs in its own managed thread)")
    for i, fn in enumerate(fns):
        if not callable(fn):
            raise SchedUsageError(f"threads[{i}] is not callable: {fn!r}")
    if len(fns) > MAX_THREADS:
        raise SchedUsageError(f"too many threads ({len(fns)}); at most {MAX_THREADS}")
    if check is not None and not callable(check):
        raise SchedUsageError(f"check must be None or a callable taking the state, got {check!r}")
    return fns


def _check_int(name, v, minimum):
    if type(v) is not int:
        raise SchedUsageError(f"{name} must be an int, got {v!r}")
    if minimum is not None and v < minimum:
        raise SchedUsageError(f"{name} must be >= {minimum}, got {v}")


def _check_watchdog(w):
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not w > 0:
        raise SchedUsageError(f"watchdog must be a positive number of seconds, got {w!r}")
    return float(w)


def _check_schedule(schedule, nthreads):
    if isinstance(schedule, str):
        try:
            schedule = decode_schedule(schedule)
        except ValueError as e:
            raise SchedUsageError(str(e)) from None
    if not isinstance(schedule, (list, tuple)):
        raise SchedUsageError(f"schedule must be a list of thread indices or a token string, "
                              f"got {schedule!r}")
    for j, c in enumerate(schedule):
        if type(c) is not int or not 0 <= c < nthreads:
            raise SchedUsageError(f"schedule[{j}] = {c!r} is not a thread index in 0..{nthreads - 1}")
    return list(schedule)
