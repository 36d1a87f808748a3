"""Schedule minimisation: the same failure with fewer preemptions.

A failing schedule found by a random walk switches threads at almost every
choice point; the bug usually needs two or three of those switches.  This
module shrinks a schedule while a predicate on its failure (the campaign
uses "same crash signature") keeps holding, and returns an exact schedule
that ``replay`` runs as is.

Representation.  An exact schedule names the thread chosen at each choice
point, so removing one switch shifts every later choice onto another
context.  The shrinker works on *rules* instead: "after thread t's n-th
scheduling point, run thread u".  A point is named by the thread that made
the last scheduling event and that thread's event count (every choice point
follows exactly one new trace event, so the name is unique), which stays
meaningful when other threads' switches are removed.  Where no rule
applies, the *default* is taken: keep running the current thread when it
can run (no preemption), else the runnable thread with the lowest index.
The failing schedule is replayed once to turn it into rules (the choices
that differ from the default); candidates keep subsets of the rules, chosen
by delta debugging (Zeller's ddmin: no rules at all, then each half alone and
without each half, quarters, ..., single rules), and a candidate that still
fails the same way with no more preemptions is kept with the rules it
actually used.  The result is 1-minimal: dropping any one of its remaining
switches loses the failure (or makes it need more preemptions).  A last
pass tries each single preemption along the shrunk run, which finds the
one-preemption schedule of a simple race wherever it is.

Counting.  A *preemption* is a choice point where the running thread could
go on and another is chosen; a *context switch* is any choice point where
the chosen thread is not the one that made the last event (preemptions plus
choices after a thread blocked or exited).

This is pymm's own facility: CHESS bounds preemptions while searching;
shrinking a found schedule afterwards is what hypothesis does for data.
"""
from ._core import _Run, lockdep_raising
from .strategies import replay_chooser

DEFAULT_MAX_RUNS = 300
SINGLE_PASS_RUNS = 100      # runs the last pass (single preemptions) may use


def guided_chooser(rules, log, exact=None):
    """A chooser following ``rules`` ({(thread, count): thread}) with the
    default elsewhere, or ``exact`` (a schedule) when given; ``log`` gets one
    (key, current index or None, previous thread, chosen, default, runnable
    indices) per choice point."""

    def make(run):
        threads = run.threads
        trace = run.trace
        counts = [0] * len(threads)
        seen = [0]
        inner = replay_chooser(exact)(run) if exact is not None else None

        def choose(en, me):
            n = len(trace)
            for j in range(seen[0], n):
                counts[trace[j][0]] += 1
            seen[0] = n
            prev = trace[-1][0] if n else None
            key = (prev, counts[prev] if prev is not None else 0)
            if inner is not None:
                t = inner(en, me)
            else:
                t = None
                u = rules.get(key)
                if u is not None:
                    cand = threads[u]
                    if cand in en:
                        t = cand
                if t is None:
                    t = me if me is not None and me in en else en[0]
            d = me if me is not None and me in en else en[0]
            log.append((key, None if me is None else me.index, prev, t.index, d.index,
                        tuple(u.index for u in en)))
            return t
        return choose
    return make


def _rules(log):
    """The rules that reproduce a logged run: its non-default choices."""
    return {e[0]: e[3] for e in log if e[3] != e[4]}


def counts(log):
    """(preemptions, context switches) of a logged run."""
    pre = sum(1 for e in log if e[1] is not None and e[3] != e[1])
    sw = sum(1 for e in log if e[2] is not None and e[3] != e[2])
    return pre, sw


class Shrunk:
    """What ``shrink`` returns: ``schedule`` (exact, for ``replay``),
    ``failure`` (of the shrunk run), ``preemptions`` / ``switches`` / ``steps``
    before (``*_from``) and after, and ``runs`` (schedules executed)."""

    __slots__ = ("schedule", "failure", "preemptions", "preemptions_from", "switches",
                 "switches_from", "steps", "steps_from", "runs")

    def __repr__(self):
        return (f"<Shrunk {self.preemptions} preemptions (from {self.preemptions_from}), "
                f"{self.steps} steps (from {self.steps_from}), {self.runs} runs>")


def _execute(setup, fns, check, chooser, watchdog, max_steps):
    with lockdep_raising():
        r = _Run(setup, fns, check, chooser, watchdog, max_steps).execute()
    f = r.failure
    if f is not None and f.kind != "misfit":
        f.finish(r, "replay", None, {})
    return r


def measure(setup, threads, schedule, check=None, *, prepare=None, watchdog=10.0):
    """The number of preemptions of ``schedule`` (replayed once), or None if
    it does not fit the program."""
    if prepare is not None:
        prepare()
    log = []
    r = _execute(setup, list(threads), check, guided_chooser({}, log, list(schedule)), watchdog,
                 200_000)
    if r.failure is not None and r.failure.kind == "misfit":
        return None
    return counts(log)[0]


def shrink(setup, threads, schedule, check=None, *, same, prepare=None,
           max_runs=DEFAULT_MAX_RUNS, watchdog=10.0):
    """Shrink ``schedule`` (a failing schedule of the program) while
    ``same(failure)`` holds.  ``prepare()`` runs before every schedule (e.g.
    reset the validator's memory).  Returns a ``Shrunk``, or None when the
    schedule does not fail with ``same`` to begin with."""
    fns = list(threads)
    state = {"runs": 0}

    def run(rules=None, exact=None, max_steps=200_000):
        if prepare is not None:
            prepare()
        log = []
        state["runs"] += 1
        r = _execute(setup, fns, check, guided_chooser(rules or {}, log, exact), watchdog,
                     max_steps)
        f = r.failure
        ok = f is not None and f.kind != "misfit" and same(f)
        return ok, r, log

    ok, r0, log0 = run(exact=list(schedule))
    if not ok:
        return None
    out = Shrunk()
    out.preemptions_from, out.switches_from = counts(log0)
    out.steps_from = len(r0.trace)
    limit = 4 * len(r0.trace) + 1000      # a default that spins is not worth 200k steps
    best, best_run, best_log = _rules(log0), r0, log0

    def attempt(rules):
        if state["runs"] >= max_runs:
            return False
        nonlocal best, best_run, best_log
        ok, r, log = run(rules=rules, max_steps=limit)
        if ok:
            new = _rules(log)
            if _score(log, r) <= _score(best_log, best_run):
                best, best_run, best_log = new, r, log
                return True
        return False

    if best:
        attempt({})
    n = 2                       # ddmin (Zeller): subsets, then complements, finer and finer
    while best and state["runs"] < max_runs:
        keys = list(best)
        n = min(n, len(keys))
        size = -(-len(keys) // n)
        chunks = [set(keys[i:i + size]) for i in range(0, len(keys), size)]
        if any(attempt({k: best[k] for k in ch}) for ch in chunks if len(chunks) > 1):
            n = 2
        elif any(attempt({k: v for k, v in best.items() if k not in ch}) for ch in chunks):
            n = max(2, n - 1)
        elif n >= len(keys):
            break
        else:
            n = min(len(keys), 2 * n)
    # Subsets cannot move a switch: a race that needs one preemption may sit
    # where the found schedule had none.  Try every single preemption of the
    # shrunk run's own path (short by now), within the budget.
    if counts(best_log)[0] > 1:
        stop = min(max_runs, state["runs"] + SINGLE_PASS_RUNS)
        for e in [e for e in best_log if e[1] is not None]:
            if any(attempt({e[0]: u}) for u in e[5] if u != e[1]) or state["runs"] >= stop:
                break
    out.schedule = list(best_run.schedule)
    out.failure = best_run.failure
    out.preemptions, out.switches = counts(best_log)
    out.steps = len(best_run.trace)
    out.runs = state["runs"]
    return out


def _score(log, run):
    pre, sw = counts(log)
    return (pre, sw, len(run.trace))
