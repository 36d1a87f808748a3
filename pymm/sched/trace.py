"""What a controlled run leaves behind: its event trace, the schedule (the
choices made), the replay token, and the ``Failure`` / ``Result`` objects.

A schedule is a list of ints, one per *choice point* -- a scheduling point at
which more than one managed thread could run -- each the index (in the
``threads`` list) of the thread chosen to run next.  Points where only one
thread can run make no choice and record nothing, so a schedule is as short
as the interleaving allows and replaying it needs nothing else.

The token is the same schedule in one copy-pasteable string::

    sched:v1:random:seed=3:schedule=17:r<base64 of the choices>       (raw bytes)
    sched:v1:pct:seed=5:schedule=0:depth=3:k=41:z<base64 of zlib>     (compressed)

Only the last field is needed to replay; the others say how it was found
(``explore`` seed and schedule index: the schedule's randomness is
``derive_seed("schedule", seed, schedule)``).

A trace is the list of (thread index, label) of every scheduling point, in
order.  Labels: "start", "exit", "lock NAME", "rlock NAME", "trylock NAME",
"tryrlock NAME" (before the attempt), "unlock NAME", "runlock NAME",
"downgrade NAME" (after), "wait NAME" (the thread blocked), and
"point LABEL" (or "point") for ``pymm.sched.point``.  NAME is the lock's
class name.  Events are recorded as tuples and turned into labels only when
a trace is handed out.
"""
import base64
import hashlib
import zlib

TOKEN_PREFIX = "sched:v1"
_LIST_LIMIT = 64      # longer schedules are shown as a token in the replay hint


def encode_schedule(choices, strategy="replay", /, **params):
    """The replay token for the schedule ``choices`` (thread indices 0..255)."""
    raw = bytes(choices)
    z = zlib.compress(raw, 9)
    payload = ("z" + _b64(z)) if len(z) < len(raw) else ("r" + _b64(raw))
    fields = [TOKEN_PREFIX, strategy] + [f"{k}={v}" for k, v in params.items() if v is not None]
    return ":".join(fields + [payload])


def decode_schedule(token):
    """The list of choices in a token made by ``encode_schedule``."""
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX + ":"):
        raise ValueError(f"not a pymm.sched schedule token (expected {TOKEN_PREFIX}:...): {token!r}")
    payload = token.rsplit(":", 1)[1]
    try:
        body = payload[1:]
        data = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
        if payload[:1] == "z":
            data = zlib.decompress(data)
        elif payload[:1] != "r":
            raise ValueError("payload must start with 'r' or 'z'")
    except (ValueError, zlib.error) as e:    # binascii.Error is a ValueError
        raise ValueError(f"corrupt schedule token {token!r}: {e}") from None
    return list(data)


def schedule_digest(schedule):
    """A short fingerprint of a schedule's choices (distinct interleavings
    are counted by distinct digests)."""
    return hashlib.blake2b(bytes(schedule), digest_size=8).digest()


def _b64(b):
    return base64.urlsafe_b64encode(b).decode("ascii").rstrip("=")


def label(code, obj):
    """The printable label of one raw trace event."""
    return code if obj is None else f"{code} {obj}"


def cook(raw):
    """Raw trace events (index, code, obj) -> [(thread index, label)]."""
    return [(i, code if obj is None else f"{code} {obj}") for i, code, obj in raw]


def format_tail(raw, names, n=24):
    """The last ``n`` events, one per line, for failure messages."""
    tail = raw[-n:]
    lines = [f"  {names[i]}: {label(c, o)}" for i, c, o in tail]
    skipped = len(raw) - len(tail)
    head = f"last {len(tail)} of {len(raw)} scheduling points:" if skipped else \
        f"all {len(raw)} scheduling points:"
    return "\n".join([head] + lines)


class Failure:
    """A finding of a controlled run.

    ``kind``: "deadlock", "exception", "lockdep", "assertion", "hung" (no
    scheduling point for ``watchdog`` seconds), "livelock" (more than
    ``max_steps`` points), "lock-held" (a thread finished holding a lock, with
    the validator off), or a detector's kind ("use-after-free", ...).
    ``message`` ends with how to replay it.  ``schedule`` is the list of
    choices that reproduces it through ``pymm.sched.replay``; ``token`` the
    same as a string.  ``seed`` is the ``explore`` seed and
    ``schedule_index`` the schedule's number in that exploration (its
    randomness is ``derive_seed("schedule", seed, schedule_index)``; seed is
    None for dfs and replays).  ``trace`` is the list of
    (thread index, event label) of the failing schedule.  ``report`` is the
    lockdep report for kind "lockdep".  ``thread`` is the index of the thread
    the failure happened in (None when it is not one thread's).
    ``leaked_threads`` / ``leaked_locks`` are what the abort could not clean
    up (empty when it went well); ``released_on_abort`` lists locks that
    aborted threads still held and the scheduler released for them.
    """

    __slots__ = ("kind", "message", "detail", "seed", "schedule", "strategy", "params",
                 "schedule_index", "token", "trace", "report", "thread", "exception",
                 "leaked_threads", "leaked_locks", "released_on_abort", "notes")

    def __init__(self, kind, detail, thread=None, report=None, exception=None):
        self.kind = kind
        self.detail = detail          # the description without the replay hint
        self.message = detail
        self.thread = thread
        self.report = report
        self.exception = exception
        self.seed = None
        self.schedule = []
        self.strategy = None
        self.params = {}
        self.schedule_index = None
        self.token = None
        self.trace = []
        self.leaked_threads = []
        self.leaked_locks = []
        self.released_on_abort = []
        self.notes = []

    def finish(self, run, strategy, seed, params, schedule_index=None):
        """Attach the schedule, trace and replay hint of ``run``."""
        self.schedule = list(run.schedule)
        self.trace = cook(run.trace)
        self.strategy = strategy
        self.seed = seed
        self.params = dict(params)
        self.schedule_index = schedule_index
        self.leaked_threads = list(run.leaked_threads)
        self.leaked_locks = list(run.leaked_locks)
        # threads unwind concurrently: order by thread (stable), not by who finished first
        self.released_on_abort = sorted(run.released_on_abort, key=lambda s: s.split(":", 1)[0])
        self.token = encode_schedule(self.schedule, strategy, seed=seed,
                                     schedule=schedule_index if seed is not None else None,
                                     **{k: v for k, v in params.items()})
        parts = [self.detail]
        if self.notes:
            parts.append("\n".join("note: " + n for n in self.notes))
        if self.released_on_abort:
            parts.append("released on abort (still held when their thread was aborted):\n"
                         + "\n".join("  " + s for s in self.released_on_abort))
        if self.leaked_locks or self.leaked_threads:
            parts.append("NOT cleaned up after the abort:\n" + "\n".join(
                ["  thread still alive: " + s for s in self.leaked_threads]
                + ["  lock still held: " + s for s in self.leaked_locks]))
        parts.append(format_tail(run.trace, [t.name for t in run.threads]))
        parts.append(self.replay_hint())
        self.message = "\n\n".join(parts)
        return self

    def replay_hint(self):
        sched = repr(self.schedule) if len(self.schedule) <= _LIST_LIMIT else repr(self.token)
        how = f"strategy={self.strategy}"
        if self.seed is not None:
            how += f" seed={self.seed}"
        how += "".join(f" {k}={v}" for k, v in self.params.items() if v is not None)
        if self.schedule_index is not None:
            how += f" (schedule #{self.schedule_index})"
        return (f"found with {how}\n"
                f"replay with: pymm.sched.replay(setup, threads, schedule={sched})\n"
                f"token: {self.token}")

    def __str__(self):
        return self.message

    def __repr__(self):
        return f"<Failure {self.kind} after {len(self.trace)} points, {len(self.schedule)} choices>"


class Result:
    """What ``explore`` returns: ``failure`` (None or a Failure),
    ``schedules_run``, ``points`` (scheduling points over all schedules),
    ``digests`` (the set of ``schedule_digest`` of every schedule run: its
    size is the number of distinct interleavings explored),
    ``elapsed`` seconds, ``exhausted`` (dfs explored every schedule within
    its preemption bound), and ``trace`` and ``schedule`` of the last
    schedule run (the failing one when there is a failure)."""

    __slots__ = ("failure", "schedules_run", "points", "elapsed", "exhausted", "strategy",
                 "seed", "trace", "schedule", "digests")

    def __init__(self, strategy, seed):
        self.failure = None
        self.schedules_run = 0
        self.points = 0
        self.elapsed = 0.0
        self.exhausted = False
        self.strategy = strategy
        self.seed = seed
        self.trace = []
        self.schedule = []
        self.digests = set()

    def __repr__(self):
        what = "clean" if self.failure is None else f"failure {self.failure.kind}"
        return f"<Result {what}: {self.schedules_run} schedules, {self.points} points>"


class Outcome:
    """What ``run_schedule`` returns: ``failure`` (None or a Failure),
    ``trace`` [(thread index, label)], ``schedule`` (the choices made)."""

    __slots__ = ("failure", "trace", "schedule")

    def __init__(self, failure, trace, schedule):
        self.failure = failure
        self.trace = trace
        self.schedule = schedule

    def __repr__(self):
        what = "clean" if self.failure is None else f"failure {self.failure.kind}"
        return f"<Outcome {what}: {len(self.trace)} points, {len(self.schedule)} choices>"
