"""The stress runner: every scenario x variant in two modes.

- controlled: ``pymm.sched.explore`` over the scenario's roles, each thread
  running its role's step ``controlled_steps`` times; the first failure ends
  the run and carries a replay token.
- free: real threads loop their role's step until the time budget is spent
  (or, for a buggy variant, until it is caught), with seeded delay injection
  and a tiny switch interval; a hung-task check at the end turns threads
  stuck on locks into "hung-task"/"deadlock" findings.

A run's verdict compares what was found with what the variant should give:
a buggy variant must be caught with one of the scenario's ``caught_kinds``;
a fixed variant must produce no finding at all.
"""
import sys
import threading
import time
from types import SimpleNamespace
from urllib.parse import quote, unquote

from . import scenarios, variants as _variants
from .scenarios.base import Scenario
from .locking import hung_task, lock_stat, lockdep
from .sched import DEFAULT_STRATEGY, derive_seed, explore, free_mode, replay as sched_replay
from .debug import fault_inject
from .sched.trace import decode_schedule
from .debug.report import is_pymm_only

DEFAULT_SCHEDULES = 200
DEFAULT_SECONDS = 2.0
HUNG_THRESHOLD = 1.0        # free mode: a wait-for cycle this old is a deadlock; a wait this
                            # long is reported (as "blocked for more than 1 seconds") once hung
HUNG_TIMEOUT = 10.0         # free mode: a worker still blocked on one wait this long after the
                            # others stopped is hung (a slow one gets its lock meanwhile)
ROUND_SECONDS = 0.5         # free mode: setup ... teardown + checks, again and again
REPLAY_PREFIX = "pymm:v1"


class RunResult:
    """One (scenario, variant, mode, seed) run; ``to_dict`` is the JSON shape."""

    def __init__(self, scenario, variant, mode, seed, expected):
        self.scenario, self.variant, self.mode, self.seed = scenario, variant, mode, seed
        self.expected = expected
        self.schedules = 0
        self.ops = 0
        self.seconds = 0.0
        self.findings = []          # dicts: kind, title, text, replay
        self.caught_kinds = frozenset()
        self.lockstat = None
        self.strategy = None        # controlled mode: the explore strategy
        self.digests = set()        # controlled mode: schedule_digest of every schedule run
        self.slow_waits = 0         # free mode: waits longer than HUNG_THRESHOLD that ended

    @property
    def caught(self):
        return any(f["kind"] in self.caught_kinds for f in self.findings)

    @property
    def ok(self):
        return self.caught if self.expected == "caught" else not self.findings

    @property
    def verdict(self):
        if self.expected == "caught":
            return "ok (caught)" if self.caught else ("MISSED" if not self.findings else "WRONG KIND")
        return "ok (clean)" if not self.findings else "FALSE POSITIVE?"

    def kinds(self):
        out = {}
        for f in self.findings:
            out[f["kind"]] = out.get(f["kind"], 0) + 1
        return out

    def to_dict(self):
        return {"scenario": self.scenario, "variant": self.variant, "mode": self.mode,
                "seed": self.seed, "expected": self.expected, "caught": self.caught,
                "schedules": self.schedules, "ops": self.ops, "seconds": round(self.seconds, 3),
                "findings": list(self.findings)}


# -- building threads from roles ------------------------------------------------------

class _Mix(Scenario):
    """Every scenario at once, default variants: their roles run concurrently,
    each scenario on its own Kernel (processes of different kernels share lock
    classes, so lockdep sees every path's ordering in one graph)."""

    name = "mix"
    variant_key = None
    controlled_steps = 1

    @classmethod
    def variants(cls):
        return ["default"]

    @classmethod
    def expected(cls, variant):
        return "clean"

    def __init__(self):
        self.parts = [c() for c in map(scenarios.get, scenarios.names()) if c.in_mix]
        self.caught_kinds = frozenset()
        self.roles = tuple((f"{p.name}:{r}", _sub_step(i, fn))
                           for i, p in enumerate(self.parts) for r, fn in p.roles)

    def setup(self, variant, seed):
        sts = [p.setup(_variants.VARIANTS[p.variant_key]["default"], seed)
               for p in self.parts]
        return SimpleNamespace(kernel=sts[0].kernel, kernels=[s.kernel for s in sts],
                               parts=list(zip(self.parts, sts)))

    def teardown(self, st):
        for p, s in st.parts:
            p.teardown(s)

    def check(self, st):
        for p, s in st.parts:
            p.check(s)


def _sub_step(i, fn):
    def step(self, st, rng):
        part, sub = st.parts[i]
        return fn(part, sub, rng)
    step.__name__ = getattr(fn, "__name__", "step")
    return step


def get_scenario(name):
    """The scenario class for ``name``: a built-in name, "mix", an entry
    point's name, ``path/to/file.py:Class`` or ``package.module:Class``, or a
    Scenario class itself (see ``pymm.scenarios.resolve``; a ScenarioError,
    one line, when it does not resolve)."""
    if name == "mix":
        return _Mix
    return scenarios.resolve(name)


def scenario_ref(scenario):
    """The reference to store for ``scenario`` (a name or a reference string,
    or a class, which must come from a module that can be imported again:
    ``module:Class``)."""
    if isinstance(scenario, str):
        return scenario
    scenarios.check_contract(scenario)
    mod = sys.modules.get(scenario.__module__)
    f = getattr(mod, "__file__", None)
    if scenario.__module__.startswith("pymm_user_scenario_") and f:
        return f"{f}:{scenario.__qualname__}"
    if scenario.__module__ == "__main__" and f:
        return f"{f}:{scenario.__qualname__}"
    return f"{scenario.__module__}:{scenario.__qualname__}"


def all_scenarios():
    """Built-in scenarios, then those of installed packages, then "mix"."""
    return scenarios.names() + scenarios.plugin_names() + ["mix"]


def default_scenarios():
    """What ``pymm stress`` runs without ``--scenario``: every scenario but
    those ``scenarios.NOT_DEFAULT`` lists (see there why)."""
    return [n for n in all_scenarios() if n not in scenarios.NOT_DEFAULT]


def _kernels(st):
    return getattr(st, "kernels", None) or [st.kernel]


def _findings(st):
    out = []
    for k in _kernels(st):
        out.extend(k.findings())
    return out


# -- controlled mode -----------------------------------------------------------------

def _arm_faults(st, fail):
    """Fault injection for the roles only: armed after setup, disarmed before
    teardown (so a failed setup is never the finding, and teardown's checks
    prove that every injected failure was unwound without a leak)."""
    if not fail:
        return
    for k in _kernels(st):
        for site, kw in fail.items():
            k.fail(site, **kw)


def _disarm_faults(st, fail):
    if not fail:
        return
    for k in _kernels(st):
        for site in fail:
            k.fail(site, probability=0)


def program_seed(seed, schedule):
    """The workload seed of schedule ``schedule`` of a controlled run seeded
    ``seed`` (the scenario's setup and its roles' random streams).  Like the
    scheduler's choices (``derive_seed("schedule", seed, i)``) it is derived
    from the pair, so every schedule of every seed runs its own workload."""
    return derive_seed("program", seed, schedule)


def _controlled_program(scn, variant, seed, threads_per_role, counter, per_schedule=False,
                        fail=None):
    """(setup, threads, check) of a controlled run.  With ``per_schedule``
    each schedule builds its own workload: ``explore`` calls setup once per
    schedule, in order, and the n-th call uses ``program_seed(seed, n)``;
    otherwise (a replay) every schedule uses ``seed`` itself.  ``fail``:
    fault injection for the roles (armed after setup, so its random stream
    too comes from the schedule's workload seed and a token replays it)."""
    roles = [(name, fn) for name, fn in scn.roles for _ in range(threads_per_role)]
    cur = [seed]            # the workload seed of the schedule being run
    nxt = [0]

    def setup():
        if per_schedule:
            cur[0] = program_seed(seed, nxt[0])
            nxt[0] += 1
        st = scn.setup(variant, cur[0])
        _arm_faults(st, fail)
        return st

    def make(i, fn):
        def body(st):
            rng = scn.rng(cur[0], i)
            for _ in range(scn.controlled_steps):
                counter[0] += 1
                try:
                    fn(scn, st, rng)
                except OSError:
                    pass                  # a system call that legitimately failed
        body.__name__ = roles[i][0]
        return body

    def check(st):
        _disarm_faults(st, fail)
        scn.teardown(st)
        for k in _kernels(st):
            k.check()
        scn.check(st)

    return setup, [make(i, fn) for i, (_, fn) in enumerate(roles)], check


def replay_token(scenario, variant, seed, threads_per_role, sched_token, fail=None):
    """``pymm:v1:SCENARIO:VARIANT:seed=S:threads=T[:fail=SPEC]:SCHEDULE``."""
    # a file or module reference has ':' (and maybe spaces): percent-encode it
    ref = quote(scenario, safe="/._-~+@,")
    extra = f"fail={fault_inject.format_spec(fail)}:" if fail else ""
    return (f"{REPLAY_PREFIX}:{ref}:{variant}:seed={seed}:threads={threads_per_role}:"
            f"{extra}{sched_token}")


def parse_replay_token(token, with_fail=False):
    """-> (scenario, variant, seed, threads_per_role, schedule list), plus the
    fault-injection config ({} if none) when ``with_fail``; ``seed`` is the
    workload seed of the schedule (``program_seed``)."""
    if not isinstance(token, str) or not token.startswith(REPLAY_PREFIX + ":"):
        raise ValueError(f"not a pymm replay token (expected {REPLAY_PREFIX}:...): {token!r}")
    parts = token.split(":", 6)
    if len(parts) != 7:
        raise ValueError(f"malformed pymm replay token: {token!r}")
    _, _, scenario, variant, seed, threads, sched = parts
    scenario = unquote(scenario)
    fail = {}
    if sched.startswith("fail="):
        spec, sep, sched = sched.partition(":")
        try:
            fail = fault_inject.parse_token_spec(spec.removeprefix("fail="))
        except ValueError:
            raise ValueError(f"malformed fault-injection part in replay token: {token!r}") from None
        if not sep:
            raise ValueError(f"malformed pymm replay token: {token!r}")
    try:
        seed = int(seed.removeprefix("seed="))
        threads = int(threads.removeprefix("threads="))
    except ValueError:
        raise ValueError(f"malformed seed/threads in replay token: {token!r}") from None
    if with_fail:
        return scenario, variant, seed, threads, decode_schedule(sched), fail
    return scenario, variant, seed, threads, decode_schedule(sched)


def finding_text(f):
    """A controlled failure's report with one way to reproduce it: the
    finding's ``replay`` (``pymm replay TOKEN``), not the scheduler's own
    ``pymm.sched.replay(...)`` list and ``token:`` line, which are dropped
    here (the "found with strategy=... seed=..." line stays)."""
    hint = f.replay_hint()
    text = f.message
    if text.endswith(hint):
        found = hint.splitlines()[0]
        text = text[:-len(hint)] + found
    return text


def _failure_finding(f, token):
    title = f.detail.splitlines()[0] if f.detail else f.kind
    if f.report is not None:
        title = f.report.title
    return {"kind": _finding_kind(f), "title": title, "text": finding_text(f),
            "replay": f"pymm replay {token}", "pymm_only": is_pymm_only(title)}


def _finding_kind(f):
    if f.kind == "lockdep" and f.report is not None:
        return {"hung-task": "hung-task", "deadlock": "deadlock",
                "assertion": "assertion"}.get(f.report.kind, "lockdep")
    if f.kind in ("hung", "lock-held"):
        return "hung-task" if f.kind == "hung" else "lockdep"
    if f.kind == "exception":
        return "assertion"
    return f.kind


def run_controlled(name, variant, seed=0, schedules=DEFAULT_SCHEDULES, threads_per_role=1,
                   strategy=DEFAULT_STRATEGY, fail=None):
    """``fail``: fault injection for the roles, {site: knobs} (see
    pymm.debug.fault_inject); it is recorded in the replay token."""
    cls = get_scenario(name)
    name = scenario_ref(name)
    scn = cls()
    r = RunResult(name, variant, "controlled", seed, cls.expected(variant))
    r.caught_kinds = scn.caught_kinds
    r.strategy = strategy
    counter = [0]
    setup, threads, check = _controlled_program(scn, variant, seed, threads_per_role, counter,
                                                per_schedule=True, fail=fail)
    lockdep.reset()
    t0 = time.perf_counter()
    res = explore(setup, threads, check, strategy=strategy, seed=seed, max_schedules=schedules)
    r.seconds = time.perf_counter() - t0
    r.schedules = res.schedules_run
    r.ops = counter[0]
    r.digests = res.digests
    if res.failure is not None:
        # the token names the failing schedule's own workload seed; its
        # sched part says how it was found (explore seed, schedule number)
        tok = replay_token(name, variant, program_seed(seed, res.failure.schedule_index),
                           threads_per_role, res.failure.token, fail)
        r.findings.append(_failure_finding(res.failure, tok))
    return r


def replay(token):
    """Re-run a controlled finding exactly; returns the failure (or None)."""
    setup, threads, check, schedule = token_program(token)
    lockdep.reset()
    return sched_replay(setup, threads, schedule, check)


def token_program(token):
    """(setup, threads, check, schedule) of a replay token's run."""
    name, variant, seed, tpr, schedule, fail = parse_replay_token(token, with_fail=True)
    cls = get_scenario(name)
    if variant not in cls.variants():
        raise ValueError(f"unknown variant {variant!r} for scenario {name!r}")
    scn = cls()
    setup, threads, check = _controlled_program(scn, variant, seed, tpr, [0], fail=fail)
    return setup, threads, check, schedule


def _found_seed(token):
    """The run seed a token's finding was found with (its sched part's
    ``seed=``), or None (a replayed or shrunk schedule says none)."""
    fields = token.rsplit(":", 1)[0].split(":sched:", 1)[-1].split(":")
    for f in fields:
        if f.startswith("seed="):
            try:
                return int(f[5:])
            except ValueError:
                return None
    return None


def run_replay(token):
    """A controlled run that replays the schedule of ``token`` (one
    schedule) instead of exploring: the RunResult, with the finding if it
    reproduced."""
    name, variant, seed, tpr, _ = parse_replay_token(token)
    found = _found_seed(token)
    cls = get_scenario(name)
    r = RunResult(name, variant, "controlled", seed if found is None else found,
                  cls.expected(variant))
    r.caught_kinds = cls().caught_kinds
    t0 = time.perf_counter()
    failure = replay(token)
    r.seconds = time.perf_counter() - t0
    r.schedules = 1
    if failure is not None:
        r.findings.append(_failure_finding(failure, token))
    return r


# -- free mode -------------------------------------------------------------------------

def run_free(name, variant, seed=0, seconds=DEFAULT_SECONDS, threads_per_role=1,
             probability=0.05, max_sleep=1e-4, stop_when_caught=True, lockstat=False,
             round_seconds=ROUND_SECONDS, fail=None, hung_timeout=HUNG_TIMEOUT):
    """Real threads for ``seconds``, in rounds of ``round_seconds``: each round
    sets the scenario up afresh, runs its roles concurrently, then tears down
    and runs the invariant checks -- so bugs that only show at teardown (rss
    counters, leaked pages, mlock accounting) are seen within a round, not at
    the end of the budget.  A buggy variant stops at the first round that
    catches it.  Hung workers end the run with the hung-task check's findings
    (they are left behind: daemons); slow ones do not (see _join_or_hang)."""
    cls = get_scenario(name)
    name = scenario_ref(name)
    scn = cls()
    r = RunResult(name, variant, "free", seed, cls.expected(variant))
    r.caught_kinds = scn.caught_kinds
    lockdep.reset()
    if lockstat:
        lock_stat.reset()
        lock_stat.enable()
    hung_was = hung_task.is_enabled()
    hung_task.enable()
    t0 = time.perf_counter()
    deadline = t0 + seconds
    rnd = 0
    try:
        with free_mode(seed, probability=probability, max_sleep=max_sleep):
            while True:
                now = time.perf_counter()
                stuck = _free_round(scn, r, variant, seed, rnd, threads_per_role,
                                    min(deadline, now + round_seconds), stop_when_caught, hung_task,
                                    fail, hung_timeout)
                rnd += 1
                if stuck or (stop_when_caught and r.expected == "caught" and r.caught) or \
                        time.perf_counter() >= deadline:
                    break
    finally:
        r.seconds = time.perf_counter() - t0
        if not hung_was:
            hung_task.disable()
        if lockstat:
            r.lockstat = lock_stat.format()
            lock_stat.disable()
    return r


def _free_round(scn, r, variant, seed, rnd, threads_per_role, deadline, stop_when_caught, hung_task,
                fail=None, hung_timeout=HUNG_TIMEOUT):
    """One round of a free run; returns the threads left stuck (if any)."""
    pseed = derive_seed("free", seed, rnd)     # no overlap between seeds' rounds
    st = scn.setup(variant, pseed)
    _arm_faults(st, fail)
    roles = [(n, fn) for n, fn in scn.roles for _ in range(threads_per_role)]
    stop = threading.Event()
    ops = [0] * len(roles)
    errors = []

    def caught():
        return any(f.kind in scn.caught_kinds for f in _findings(st))

    def body(i, fn):
        rng = scn.rng(pseed, i)
        try:
            while not stop.is_set() and time.perf_counter() < deadline:
                try:
                    fn(scn, st, rng)
                except OSError:
                    pass
                ops[i] += 1
                if stop_when_caught and r.expected == "caught" and caught():
                    stop.set()
        except BaseException as e:           # a crash in emulated kernel code is a finding
            import traceback
            errors.append((roles[i][0], e, traceback.format_exc()))

    ths = [threading.Thread(target=body, args=(i, fn), name=f"{scn.name}-{n}-{i}", daemon=True)
           for i, (n, fn) in enumerate(roles)]
    try:
        for t in ths:
            t.start()
        stuck = _join_or_hang(ths, deadline, stop, hung_task, hung_timeout, r)
    except BaseException:        # Ctrl-C: the workers stop at their next step, the run is dropped
        stop.set()
        raise
    r.ops += sum(ops)
    for role, e, tb in errors:
        _add_free(r, {"kind": "assertion", "title": f"unexpected {type(e).__name__} in {role}: {e}",
                      "text": tb, "replay": ""})
    if not stuck:
        try:
            _disarm_faults(st, fail)
            scn.teardown(st)
            for k in _kernels(st):
                k.check()
            scn.check(st)
        except BaseException as e:
            import traceback
            _add_free(r, {"kind": "assertion", "title": f"teardown/check failed: {e}",
                          "text": traceback.format_exc(), "replay": ""})
    for f in _findings(st):
        _add_free(r, {"kind": f.kind, "title": f.title, "text": f.text, "replay": "",
                      "pymm_only": bool(f.data.get("pymm_only")) or is_pymm_only(f.title)})
    return stuck


def _add_free(r, d):
    if not any(f["kind"] == d["kind"] and f["title"] == d["title"] for f in r.findings):
        r.findings.append(d)


def _join_or_hang(ths, deadline, stop, hung_task, hung_timeout=HUNG_TIMEOUT, r=None):
    """Wait for the workers; return those left hung (after reporting them).

    A worker blocked long on a lock is not necessarily hung: on a loaded
    machine the lock's holder may simply not get the CPU (two cores, many
    threads).  So, as the kernel's khungtaskd, pymm reports a task only when
    it stays blocked on the same wait -- and gives it the best chance not to:

    - during the round (until ``deadline``), a wait-for cycle among the
      workers, each blocked HUNG_THRESHOLD seconds, is a demonstrated
      deadlock (nobody in it can ever run again): the round ends at once;
      any other wait, however long, lets the round go on;
    - then every worker is told to stop at the end of its step; one still
      blocked on the wait it was in, ``hung_timeout`` seconds into that wait
      while the others have stopped (so whoever holds its lock has the CPU
      to itself), is hung; so is one that neither ends nor blocks for
      ``hung_timeout`` seconds after the stop (a loop).  A slow worker gets
      its lock meanwhile and ends: counted in ``r.slow_waits``, not reported.

    Reports go through the hung-task check (which names wait-for cycles as
    deadlocks); the hung workers are left behind (they are daemons)."""
    tids = {t.ident for t in ths}
    long_waits = set()           # (tid, id of the lock) waited for longer than HUNG_THRESHOLD

    def note_long_waits():
        for tid, (lock, _, waited) in hung_task.waiting().items():
            if tid in tids and waited > HUNG_THRESHOLD:
                long_waits.add((tid, id(lock)))

    hung = False
    while time.perf_counter() < deadline:
        alive = [t for t in ths if t.is_alive()]
        if not alive:
            break
        note_long_waits()
        if hung_task.deadlocked(tids, HUNG_THRESHOLD):
            hung = True
            break
        alive[0].join(0.05)
    stop.set()
    t_stop = time.perf_counter()
    while not hung:
        alive = [t for t in ths if t.is_alive()]
        if not alive:
            break
        note_long_waits()
        waits = {tid: w for tid, w in hung_task.waiting().items() if tid in tids}
        if hung_task.deadlocked(tids, HUNG_THRESHOLD) or \
                any(waited > hung_timeout for _, _, waited in waits.values()) or \
                (time.perf_counter() - t_stop > hung_timeout and
                 any(t.ident not in waits for t in alive)):
            hung = True
            break
        alive[0].join(0.05)
    alive = [t for t in ths if t.is_alive()]
    if alive:
        hung_task.check_now(HUNG_THRESHOLD, tids=tids)
    if r is not None:
        hung_tids = {t.ident for t in alive}
        r.slow_waits += len({w for w in long_waits if w[0] not in hung_tids})
    return alive
