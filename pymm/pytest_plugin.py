"""pymm's pytest plugin (entry point ``pytest11``), modelled on pytest-timeout:
options, ini keys and markers registered in one place; precedence
marker > command line > environment > ini; ``pytest_report_header`` shows the
settings; a test about to time out gets every thread's held locks dumped.

Fixtures
- ``kernel``: a fresh ``pymm.Kernel`` (variants from ``--pymm-variant``, seed
  from ``--pymm-seed``).  After the test, any finding whose kind the test did
  not declare with ``@pytest.mark.pymm_expect("kind", ...)`` fails it.
- ``lockdep``: the validator, enabled and reset, settings restored after.
- ``stress_config``: the resolved budgets of a ``@pytest.mark.stress(...)`` test
  (.seconds, .schedules, .mode, .seed).
- ``pymm_stress``: run(scenario, variant, mode=None) with those budgets; a run
  whose verdict does not hold fails the test with the seed and the replay command.
  ``scenario`` is a name, a ``path/file.py:Class`` / ``module:Class`` reference,
  or a ``pymm.Scenario`` subclass (a scenario of one's own).
- ``loguru_caplog``: pytest's ``caplog`` with pymm's loguru records forwarded.

Options / ini keys / environment
  --pymm-seed N            pymm_seed         PYMM_SEED         base seed (default 0)
  --pymm-seeds N           pymm_seeds        PYMM_SEEDS        seeds per stress test (default 1)
  --pymm-mode MODE         pymm_mode         PYMM_MODE         controlled | free | both
  --pymm-variant KEY=VALUE pymm_variant      PYMM_VARIANT      for the kernel fixture (repeatable)
  --stress-seconds S       stress_seconds    PYMM_STRESS_SECONDS
  --stress-schedules N     stress_schedules  PYMM_STRESS_SCHEDULES
With pytest-xdist, ``-n auto --pymm-seeds 16`` spreads the seeds over the cores
(each seed is its own test item).
"""
import os
import sys
import threading
from types import SimpleNamespace

import pytest

_OPTIONS = {
    # name: (ini key, env var, type, default, help)
    "pymm_seed": ("pymm_seed", "PYMM_SEED", int, 0, "base seed for pymm kernels and stress runs"),
    "pymm_seeds": ("pymm_seeds", "PYMM_SEEDS", int, 1, "number of seeds each stress test runs"),
    "pymm_mode": ("pymm_mode", "PYMM_MODE", str, "both", "stress mode: controlled, free or both"),
    "stress_seconds": ("stress_seconds", "PYMM_STRESS_SECONDS", float, 1.0,
                       "free-mode time budget per stress run"),
    "stress_schedules": ("stress_schedules", "PYMM_STRESS_SCHEDULES", int, 150,
                         "controlled-mode schedule budget per stress run"),
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
        "markers", "pymm_expect(*kinds): finding kinds the kernel fixture may report in this test")
    config.addinivalue_line(
        "markers", "stress(seconds=None, schedules=None, mode=None): a pymm stress test; the "
        "marker's budgets win over --stress-seconds/--stress-schedules/--pymm-mode")
    mode = _setting(config, "pymm_mode")
    if mode not in ("controlled", "free", "both"):
        raise pytest.UsageError(f"--pymm-mode must be controlled, free or both, got {mode!r}")
    for n in ("stress_seconds", "stress_schedules", "pymm_seeds"):
        if _setting(config, n) <= 0:
            raise pytest.UsageError(f"--{n.replace('_', '-')} must be > 0")
    _variants(config)


def pytest_report_header(config):
    s = {n: _setting(config, n) for n in _OPTIONS}
    v = _variants(config)
    return (f"pymm: seed={s['pymm_seed']} seeds={s['pymm_seeds']} mode={s['pymm_mode']} "
            f"stress_seconds={s['stress_seconds']} stress_schedules={s['stress_schedules']}"
            + (f" variants={v}" if v else ""))


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


@pytest.fixture
def kernel(request):
    import pymm
    from pymm.locking import lockdep as ld
    ld.reset()
    k = pymm.Kernel(variants=_variants(request.config), seed=_setting(request.config, "pymm_seed"))
    yield k
    expected = set()
    for m in request.node.iter_markers("pymm_expect"):
        expected.update(m.args)
    bad = [f for f in k.findings() if f.kind not in expected]
    if bad:
        pytest.fail("unexpected pymm findings:\n\n" + "\n\n".join(f.text for f in bad), pytrace=False)


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
        seed=seed)


@pytest.fixture
def pymm_stress(stress_config):
    """``run(scenario, variant, mode=None)`` -> the RunResult; fails the test
    (with seed and replay command) when the verdict does not hold.
    ``scenario`` is a name, a reference (``path/file.py:Class``,
    ``package.module:Class``) or a ``pymm.Scenario`` subclass."""
    from pymm import stress

    def run(scenario, variant, mode=None, seconds=None):
        """``seconds`` overrides the free-mode budget for this run."""
        mode = mode or stress_config.mode
        if mode == "both":
            raise ValueError("pymm_stress.run: pass mode= when the configured mode is 'both'")
        if mode == "controlled":
            r = stress.run_controlled(scenario, variant, stress_config.seed, stress_config.schedules)
        else:
            r = stress.run_free(scenario, variant, stress_config.seed, seconds or stress_config.seconds)
        if not r.ok:
            lines = [f"{r.scenario}/{variant} ({mode}, seed {r.seed}): expected {r.expected}, "
                     f"got {r.verdict}"]
            for f in r.findings:
                lines.append(f"\n--- {f['kind']}: {f['title']}\n{f['text']}")
                if f.get("replay"):
                    lines.append(f"reproduce with: {f['replay']}")
            lines.append(f"re-run with: pytest ... --pymm-seed={r.seed} --pymm-mode={mode}")
            pytest.fail("\n".join(lines), pytrace=False)
        return r
    return run


@pytest.fixture
def loguru_caplog(caplog):
    """caplog that also sees pymm's loguru records (loguru does not use logging)."""
    from loguru import logger
    logger.enable("pymm")
    hid = logger.add(caplog.handler, format="{message}", level=0)
    yield caplog
    logger.remove(hid)
    logger.disable("pymm")


# -- pytest-timeout: dump held locks before the timeout fires ------------------------------------

@pytest.hookimpl(optionalhook=True)
def pytest_timeout_set_timer(item, settings):
    timeout = getattr(settings, "timeout", None)
    if not timeout or timeout <= 0:
        return None
    t = threading.Timer(max(0.0, timeout * 0.95 - 0.05), _dump_held_locks, args=(item.nodeid,))
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
    for tid, (lock, read, since) in list(hung_task.waiting().items()) if hung_task.is_enabled() else []:
        out.append(f"thread {tid} waits for {lock!r}")
    sys.stderr.write("\n".join(out) + "\n")
    sys.stderr.flush()
