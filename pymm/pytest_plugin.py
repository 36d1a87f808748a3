"""pymm's pytest plugin (entry point ``pytest11``), modelled on pytest-timeout:
options, ini keys and markers registered in one place; precedence
marker > command line > environment > ini; ``pytest_report_header`` shows the
settings; a test about to time out gets every thread's held locks dumped.

Fixtures
- ``kernel``: a fresh ``pymm.Kernel`` (variants from ``--pymm-variant``, seed
  from ``--pymm-seed``).  When the test function returns, any finding whose
  kind the test did not declare with ``@pytest.mark.pymm_expect("kind", ...)``
  fails it, once, as a failure of the test itself (call phase, not an error
  at teardown).  ``pymm_expect(..., strict=True)``: each declared kind must
  also occur.  An unknown kind name is an error (a typo must not pass).
- ``lockdep``: the validator, enabled and reset, settings restored after.
- ``stress_config``: the resolved budgets of a ``@pytest.mark.stress(...)`` test
  (.seconds, .schedules, .mode, .strategy, .seed).
- ``pymm_stress``: run(scenario, variant, mode=None) with those budgets; a run
  whose verdict does not hold fails the test with its findings, a
  copy-pasteable ``pytest 'path::id' --pymm-seed=N --pymm-mode=M`` line and
  (controlled mode) the replay token.  With the configured mode ``both`` (the
  default) and no ``mode=``, both modes run and a list of the two results is
  returned; with one mode, that run's result.  ``--pymm-replay TOKEN`` makes
  the controlled run of the token's scenario and variant replay that
  schedule instead of exploring.
  ``scenario`` is a name, a ``path/file.py:Class`` / ``module:Class`` reference,
  or a ``pymm.Scenario`` subclass (a scenario of one's own).
- ``loguru_caplog``: pytest's ``caplog`` with pymm's loguru records forwarded;
  pymm's logging is left enabled or disabled as it was before.

Options / ini keys / environment
  --pymm-seed N            pymm_seed         PYMM_SEED         base seed (default 0)
  --pymm-seeds N           pymm_seeds        PYMM_SEEDS        seeds per stress test (default 1)
  --pymm-mode MODE         pymm_mode         PYMM_MODE         controlled | free | both
  --pymm-strategy NAME     pymm_strategy     PYMM_STRATEGY     controlled-mode strategy (random | pct | dfs)
  --pymm-variant KEY=VALUE pymm_variant      PYMM_VARIANT      for the kernel fixture (repeatable)
  --stress-seconds S       stress_seconds    PYMM_STRESS_SECONDS
  --stress-schedules N     stress_schedules  PYMM_STRESS_SCHEDULES
  --pymm-replay TOKEN      -                 PYMM_REPLAY       replay this controlled schedule
  --pymm-hung-task S       pymm_hung_task    PYMM_HUNG_TASK    hung-task watchdog threshold (0: off)
  --pymm-fail SPEC         pymm_fail         PYMM_FAIL         fault injection (pymm stress --fail)
With pytest-xdist, ``-n auto --pymm-seeds 16`` spreads the seeds over the cores
(each seed is its own test item).
"""
import os
import shlex
import sys
import threading
from types import SimpleNamespace

import pytest

_OPTIONS = {
    # name: (ini key, env var, type, default, help)
    "pymm_seed": ("pymm_seed", "PYMM_SEED", int, 0, "base seed for pymm kernels and stress runs"),
    "pymm_seeds": ("pymm_seeds", "PYMM_SEEDS", int, 1, "number of seeds each stress test runs"),
    "pymm_mode": ("pymm_mode", "PYMM_MODE", str, "both", "stress mode: controlled, free or both"),
    "pymm_strategy": ("pymm_strategy", "PYMM_STRATEGY", str, None,
                      "controlled-mode strategy: random, pct or dfs (default: pymm.sched.DEFAULT_STRATEGY)"),
    "stress_seconds": ("stress_seconds", "PYMM_STRESS_SECONDS", float, 1.0,
                       "free-mode time budget per stress run"),
    "stress_schedules": ("stress_schedules", "PYMM_STRESS_SCHEDULES", int, 150,
                         "controlled-mode schedule budget per stress run"),
    "pymm_hung_task": ("pymm_hung_task", "PYMM_HUNG_TASK", float, 0.0,
                       "run the hung-task watchdog: a thread blocked on a pymm lock this many "
                       "seconds is reported (and fails a test using the kernel fixture); 0: off"),
}


def pytest_addoption(parser):
    group = parser.getgroup("pymm", "pymm: Linux mm locking emulator")
    for name, (ini, env, typ, default, help) in _OPTIONS.items():
        group.addoption("--" + name.replace("_", "-"), dest=name, default=None,
                        type=typ, help=f"{help} (env {env}, ini {ini}; default {default})")
        parser.addini(ini, help, default=None)
    group.addoption("--pymm-variant", dest="pymm_variant", action="append", default=None,
                    metavar="KEY=VALUE", help="variant for the kernel fixture (repeatable; env "
                    "PYMM_VARIANT comma-separated; ini pymm_variant)")
    parser.addini("pymm_variant", "variants for the kernel fixture", type="linelist", default=[])
    group.addoption("--pymm-replay", dest="pymm_replay", default=None, metavar="TOKEN",
                    help="replay this controlled schedule (a pymm:v1:... token, as a failing stress "
                    "test prints it) in the pymm_stress run of its scenario and variant (env PYMM_REPLAY)")
    group.addoption("--pymm-fail", dest="pymm_fail", action="append", default=None,
                    metavar="SITE[:KNOB=VALUE,...]",
                    help="fault injection for the kernel fixture and pymm_stress runs, as "
                    "pymm stress --fail (repeatable; env PYMM_FAIL ';'-separated; ini pymm_fail)")
    parser.addini("pymm_fail", "fault injection (pymm stress --fail syntax)", type="linelist",
                  default=[])


def _replay_token(config):
    tok = config.getoption("pymm_replay") or os.environ.get("PYMM_REPLAY") or None
    if tok is None:
        return None
    from pymm import stress
    try:
        stress.parse_replay_token(tok)
    except ValueError as e:
        raise pytest.UsageError(f"--pymm-replay: {e}")
    return tok


def _setting(config, name):
    """Command line > environment > ini > default."""
    ini, env, typ, default, _ = _OPTIONS[name]
    v = config.getoption(name)
    if v is not None:
        return v
    if os.environ.get(env):
        try:
            return typ(os.environ[env])
        except ValueError:
            raise pytest.UsageError(f"{env}={os.environ[env]!r} is not a valid {typ.__name__}")
    iv = config.getini(ini)
    if iv not in (None, ""):
        try:
            return typ(iv)
        except ValueError:
            raise pytest.UsageError(f"ini {ini}={iv!r} is not a valid {typ.__name__}")
    return default


def _fail(config):
    """{site: knobs} from --pymm-fail > PYMM_FAIL > ini pymm_fail, or None."""
    items = config.getoption("pymm_fail")
    if items is None and os.environ.get("PYMM_FAIL"):
        items = [s for s in os.environ["PYMM_FAIL"].split(";") if s]
    if items is None:
        items = config.getini("pymm_fail")
    if not items:
        return None
    from pymm.debug import fault_inject
    try:
        return fault_inject.merge(fault_inject.parse_spec(s.strip()) for s in items)
    except ValueError as e:
        raise pytest.UsageError(f"--pymm-fail: {e}")


def _variants(config):
    items = config.getoption("pymm_variant")
    if items is None and os.environ.get("PYMM_VARIANT"):
        items = [s for s in os.environ["PYMM_VARIANT"].split(",") if s]
    if items is None:
        items = config.getini("pymm_variant")
    out = {}
    for it in items:
        if "=" not in it:
            raise pytest.UsageError(f"--pymm-variant expects KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    from pymm import variants
    try:
        variants.resolve(out)
    except ValueError as e:
        raise pytest.UsageError(f"--pymm-variant: {e}")
    return out


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "pymm_expect(*kinds, strict=False): finding kinds the kernel fixture may report "
        "in this test (strict=True: each must occur)")
    config.addinivalue_line(
        "markers", "stress(seconds=None, schedules=None, mode=None): a pymm stress test; the "
        "marker's budgets win over --stress-seconds/--stress-schedules/--pymm-mode")
    mode = _setting(config, "pymm_mode")
    if mode not in ("controlled", "free", "both"):
        raise pytest.UsageError(f"--pymm-mode must be controlled, free or both, got {mode!r}")
    strategy = _setting(config, "pymm_strategy")
    if strategy is not None:
        from pymm.sched import STRATEGIES
        if strategy not in STRATEGIES:
            raise pytest.UsageError(f"--pymm-strategy must be one of {', '.join(STRATEGIES)}, "
                                    f"got {strategy!r}")
    for n in ("stress_seconds", "stress_schedules", "pymm_seeds"):
        if _setting(config, n) <= 0:
            raise pytest.UsageError(f"--{n.replace('_', '-')} must be > 0")
    _variants(config)
    _replay_token(config)
    _fail(config)
    hung = _setting(config, "pymm_hung_task")
    if hung < 0:
        raise pytest.UsageError("--pymm-hung-task must be >= 0 (0 turns the watchdog off)")
    if hung > 0:
        # khungtaskd for the session: works with the validator on or off (the
        # report names the lock and its holders from the lock itself)
        from pymm.locking import hung_task
        config._pymm_hung_was = hung_task.is_enabled()
        hung_task.enable()
        hung_task.start(hung, interval=max(0.05, hung / 4))


def pytest_unconfigure(config):
    if _setting(config, "pymm_hung_task") > 0:
        from pymm.locking import hung_task
        hung_task.stop()
        if not getattr(config, "_pymm_hung_was", True):
            hung_task.disable()


def pytest_report_header(config):
    s = {n: _setting(config, n) for n in _OPTIONS}
    v = _variants(config)
    return (f"pymm: seed={s['pymm_seed']} seeds={s['pymm_seeds']} mode={s['pymm_mode']} "
            + (f"strategy={s['pymm_strategy']} " if s['pymm_strategy'] else "")
            + 
            f"stress_seconds={s['stress_seconds']} stress_schedules={s['stress_schedules']}"
            + (f" variants={v}" if v else "") + _fail_header(config))


def _fail_header(config):
    f = _fail(config)
    if not f:
        return ""
    from pymm.debug import fault_inject
    return f" fail={fault_inject.format_spec(f)}"


def pytest_generate_tests(metafunc):
    """Stress tests that take ``pymm_seed_param`` run once per seed."""
    if "pymm_seed_param" in metafunc.fixturenames:
        base = _setting(metafunc.config, "pymm_seed")
        n = _setting(metafunc.config, "pymm_seeds")
        metafunc.parametrize("pymm_seed_param", [base + i for i in range(n)],
                             ids=[f"seed{base + i}" for i in range(n)])


# -- fixtures ---------------------------------------------------------------------------------

@pytest.fixture
def lockdep():
    from pymm.locking import lockdep as ld
    prev = ld.configure()
    was_on = ld.is_enabled()
    ld.enable()
    ld.reset()
    yield ld
    ld.reset()
    ld.configure(**prev)
    if not was_on:
        ld.disable()


def _expectations(item):
    """(declared kinds, kinds that must occur) from the pymm_expect markers."""
    from pymm.debug.report import KINDS
    allowed, required = set(), set()
    for m in item.iter_markers("pymm_expect"):
        bad = set(m.kwargs) - {"strict"}
        if bad:
            raise pytest.UsageError(f"{item.nodeid}: pymm_expect takes kinds and strict=, "
                                    f"not {', '.join(sorted(bad))}")
        for kind in m.args:
            if kind not in KINDS:
                raise pytest.UsageError(f"{item.nodeid}: pymm_expect({kind!r}): unknown finding kind; "
                                        f"expected one of {', '.join(KINDS)}")
        allowed.update(m.args)
        if m.kwargs.get("strict"):
            required.update(m.args)
    return allowed, required


def pytest_collection_modifyitems(config, items):
    for item in items:          # a typo in a kind name stops the run before anything runs
        _expectations(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """The kernel fixture's verdict, as part of the test's own outcome: a
    test that left undeclared findings (or missed a strict one) fails in
    its call phase, once."""
    res = yield
    k = getattr(item, "_pymm_kernel", None)
    if k is not None:
        allowed, required = _expectations(item)
        found = k.findings()
        # the hung-task watchdog's reports come from its own thread, which
        # runs as no process: they reach the test through lockdep's list
        from pymm.locking import lockdep as ld
        reps, seen = ld.reports(), getattr(item, "_pymm_reports_seen", 0)
        found += [r for r in (reps[seen:] if len(reps) >= seen else reps)
                  if r.kind in ("hung-task", "deadlock") and not any(f.title == r.title for f in found)]
        bad = [f for f in found if f.kind not in allowed]
        missing = sorted(required - {f.kind for f in found})
        msg = []
        if bad:
            msg.append("unexpected pymm findings:\n\n" + "\n\n".join(f.text for f in bad))
        if missing:
            msg.append(f"pymm_expect(strict=True): no finding of kind {', '.join(missing)} occurred")
        if msg:
            pytest.fail("\n\n".join(msg), pytrace=False)
    return res


@pytest.fixture
def kernel(request):
    import pymm
    from pymm.locking import lockdep as ld
    ld.reset()
    k = pymm.Kernel(variants=_variants(request.config), seed=_setting(request.config, "pymm_seed"),
                    fail=_fail(request.config))
    request.node._pymm_kernel = k       # checked when the test function returns (pytest_runtest_call)
    request.node._pymm_reports_seen = len(ld.reports())
    yield k


@pytest.fixture
def stress_config(request):
    cfg = request.config
    m = request.node.get_closest_marker("stress")
    kw = dict(m.kwargs) if m else {}
    seed = request.getfixturevalue("pymm_seed_param") if "pymm_seed_param" in request.fixturenames \
        else _setting(cfg, "pymm_seed")
    return SimpleNamespace(
        seconds=kw.get("seconds") or _setting(cfg, "stress_seconds"),
        schedules=kw.get("schedules") or _setting(cfg, "stress_schedules"),
        mode=kw.get("mode") or _setting(cfg, "pymm_mode"),
        strategy=kw.get("strategy") or _setting(cfg, "pymm_strategy"),
        fail=_fail(cfg),
        seed=seed)


@pytest.fixture
def pymm_stress(stress_config, request):
    """``run(scenario, variant, mode=None, seconds=None, schedules=None)`` -> the RunResult (a
    list of two with mode "both"); fails the test, with how to reproduce it,
    when the verdict does not hold.  ``scenario`` is a name, a reference
    (``path/file.py:Class``, ``package.module:Class``) or a ``pymm.Scenario``
    subclass."""
    from pymm import stress
    token = _replay_token(request.config)

    def one(scenario, variant, mode, seconds, schedules):
        if mode == "controlled":
            if token is not None and stress.parse_replay_token(token)[:2] == \
                    (getattr(scenario, "name", scenario), variant):
                r = stress.run_replay(token)
            else:
                kw = {"strategy": stress_config.strategy} if stress_config.strategy else {}
                r = stress.run_controlled(scenario, variant, stress_config.seed,
                                          schedules or stress_config.schedules,
                                          fail=stress_config.fail, **kw)
        else:
            r = stress.run_free(scenario, variant, stress_config.seed, seconds or stress_config.seconds,
                                fail=stress_config.fail)
        if not r.ok:
            pytest.fail(_failure_text(request.node.nodeid, r, mode), pytrace=False)
        return r

    def run(scenario, variant, mode=None, seconds=None, schedules=None):
        """``seconds`` and ``schedules`` override the free-mode and the
        controlled budget for this run."""
        mode = mode or stress_config.mode
        if mode == "both":
            return [one(scenario, variant, m, seconds, schedules) for m in ("controlled", "free")]
        return one(scenario, variant, mode, seconds, schedules)
    return run


def _failure_text(nodeid, r, mode):
    lines = [f"{r.scenario}/{r.variant} ({mode}, seed {r.seed}): expected {r.expected}, got {r.verdict}"]
    for f in r.findings:
        lines.append(f"\n--- {f['kind']}: {f['title']}\n{f['text']}")
        if f.get("replay"):
            lines.append(f"reproduce with: {f['replay']}")
    rerun = f"pytest {shlex.quote(nodeid)} --pymm-seed={r.seed} --pymm-mode={mode}"
    if mode == "controlled" and getattr(r, "strategy", None):
        rerun += f" --pymm-strategy={r.strategy}"
    lines.append(f"re-run with: {rerun}")
    for f in r.findings:
        if f.get("replay"):
            tok = f["replay"].split()[-1]
            lines.append(f"replay with: pytest {shlex.quote(nodeid)} --pymm-replay={tok}")
            break
    return "\n".join(lines)


@pytest.fixture
def loguru_caplog(caplog):
    """caplog that also sees pymm's loguru records (loguru does not use logging)."""
    from loguru import logger
    was_enabled = _pymm_logging_enabled()
    logger.enable("pymm")
    hid = logger.add(caplog.handler, format="{message}", level=0)
    try:
        yield caplog
    finally:
        logger.remove(hid)
        if not was_enabled:
            logger.disable("pymm")


def _pymm_logging_enabled():
    """Whether loguru passes records from pymm's modules (loguru has no
    query for it): log one probe record from a function whose module is
    ``pymm.*`` to a sink that only accepts that probe."""
    from loguru import logger
    seen = []
    hid = logger.add(seen.append, level=0, filter=lambda r: r["extra"].get("_pymm_probe") is True)
    try:
        probe = eval("lambda: logger.bind(_pymm_probe=True).trace('probe')",
                     {"__name__": "pymm._logging_probe", "logger": logger})
        probe()
    finally:
        logger.remove(hid)
    return bool(seen)


# -- pytest-timeout: dump held locks before the timeout fires ------------------------------------

def _dump_lead(timeout):
    """How long before pytest-timeout fires the dump is written: 5% of the
    timeout, at least a second (the dump thread must get the CPU and finish
    writing before the timeout thread ends the process, also on a loaded
    machine), at most half the timeout."""
    return min(max(timeout * 0.05, 1.0), timeout / 2)


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_set_timer(item, settings):
    timeout = getattr(settings, "timeout", None)
    if not timeout or timeout <= 0:
        return None
    t = threading.Timer(timeout - _dump_lead(timeout), _dump_held_locks, args=(item.nodeid,))
    t.name = "pymm-timeout-dump"
    t.daemon = True
    t.start()
    item._pymm_timer = t
    return None        # pytest-timeout still sets its own timer


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_cancel_timer(item):
    t = getattr(item, "_pymm_timer", None)
    if t is not None:
        t.cancel()
    return None


def _dump_held_locks(nodeid):
    from pymm.locking import hung_task, lockdep
    from pymm.locking.lockdep_report import format_held
    out = [f"\n+++ pymm: {nodeid} is about to time out: locks held and waited for +++"]
    for (name, tid), held in sorted(lockdep.all_held_locks().items(), key=lambda kv: kv[0][1]):
        out += format_held(name, tid, held)
    if hung_task.is_enabled():
        out += hung_task.format_waits()
    sys.stderr.write("\n".join(out) + "\n")
    sys.stderr.flush()
