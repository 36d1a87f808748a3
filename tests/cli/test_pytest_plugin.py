"""The pytest plugin (pymm/pytest_plugin.py), driven through ``pytester``:
fixtures, the stress marker and settings precedence, the failure message of
a stress run, seed parametrisation, the report header, pytest-xdist and
pytest-timeout."""
import re
import shlex

import hypothesis  # noqa: F401 -- see below
import pytest

from pymm import stress

# Here and not in tests/cli/conftest.py: pytest rejects pytest_plugins in a
# conftest below the rootdir, and that would break a plain ``pytest``.
pytest_plugins = ["pytester"]
# pytester's inline runs forget the modules each run imported, and hypothesis's
# plugin imports the whole package at session end: imported once here, it is
# kept, and an inline run costs ~0.05 s instead of ~1 s.

ENV = ("PYMM_SEED", "PYMM_SEEDS", "PYMM_MODE", "PYMM_VARIANT", "PYMM_STRESS_SECONDS",
       "PYMM_STRESS_SCHEDULES", "PYMM_FAIL", "PYMM_HUNG_TASK")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """The inner sessions see only the settings a test gives them."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def outcomes_by_test(result):
    """{test name: "passed" | "failed" | "skipped"}, a failing teardown
    counting as a failure of its test."""
    out = {}
    for rep in result.reprec.getreports("pytest_runtest_logreport"):
        name = rep.nodeid.split("::")[-1]
        if rep.failed:
            out[name] = "failed"
        elif rep.when == "call" or (rep.skipped and name not in out):
            out.setdefault(name, rep.outcome)
    return out


# -- the kernel fixture ------------------------------------------------------------------------

KERNEL_TESTS = """
import pytest
from pymm import MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE
from pymm.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from pymm.mm.vma import vm_area_dup, vm_area_free


def dup_and_free(mm, addr):
    mmap_read_lock(mm)
    copy = vm_area_dup(mm.mm_mt.vma_lookup(addr))   # a detached copy: freeing it is harmless
    mmap_read_unlock(mm)
    vm_area_free(copy)
    return copy


def read_freed_vma(vma):
    return vma.vm_start


def use_after_free(k):
    p = k.spawn("p")
    a = p.mmap(0, 4 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    k.run_syscall(read_freed_vma, k.run_syscall(dup_and_free, p.mm, a))
    assert [f.kind for f in k.findings()] == ["use-after-free"]


def test_undeclared(kernel):
    use_after_free(kernel)


@pytest.mark.pymm_expect("use-after-free")
def test_declared(kernel):
    use_after_free(kernel)


@pytest.mark.pymm_expect("lockdep", "deadlock")
def test_declared_another_kind(kernel):
    use_after_free(kernel)


def test_clean(kernel):
    p = kernel.spawn("p")
    a = p.mmap(0, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    p.store(a, b"ok")
    assert p.load(a, 2) == b"ok"
"""


def test_kernel_fixture_fails_on_undeclared_findings(pytester):
    pytester.makepyfile(test_k=KERNEL_TESTS)
    result = pytester.runpytest()
    assert outcomes_by_test(result) == {"test_undeclared": "failed", "test_declared": "passed",
                                        "test_declared_another_kind": "failed", "test_clean": "passed"}
    result.stdout.fnmatch_lines(["*unexpected pymm findings:*",
                                 "*BUG: KASAN: use-after-free in read_freed_vma*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


VARIANT_TEST = """
def test_variant(kernel):
    assert kernel.variant("populate") == {expected!r}
"""


@pytest.mark.parametrize("ini,env,argv,expected", [
    (None, None, [], "revalidate"),                                  # the registry's default
    (None, None, ["--pymm-variant", "populate=downgrade"], "downgrade"),
    (None, None, ["--pymm-variant=populate=drop-retake", "--pymm-variant", "mbind=hold-mmap-lock"],
     "drop-retake"),
    (None, "mbind=mpol-alloc,populate=downgrade", [], "downgrade"),
    ("populate=drop-retake", None, [], "drop-retake"),
    ("populate=drop-retake", "populate=downgrade", [], "downgrade"),   # environment > ini
    (None, "populate=drop-retake", ["--pymm-variant", "populate=downgrade"], "downgrade"),  # cli > env
], ids=["default", "cli", "cli-repeated", "env", "ini", "env-over-ini", "cli-over-env"])
def test_pymm_variant_reaches_the_kernel_fixture(ini, env, argv, expected, pytester, monkeypatch):
    if ini:
        pytester.makeini(f"[pytest]\npymm_variant =\n    {ini}\n")
    if env:
        monkeypatch.setenv("PYMM_VARIANT", env)
    pytester.makepyfile(test_v=VARIANT_TEST.format(expected=expected))
    pytester.runpytest(*argv).assert_outcomes(passed=1)


@pytest.mark.parametrize("argv,message", [
    (["--pymm-variant", "populate=nope"], "*--pymm-variant*'nope'*"),
    (["--pymm-variant", "nokey=x"], "*--pymm-variant*'nokey'*"),
    (["--pymm-variant", "populate"], "*--pymm-variant expects KEY=VALUE*'populate'*"),
    (["--pymm-mode", "sideways"], "*--pymm-mode*'sideways'*"),
    (["--stress-seconds", "0"], "*--stress-seconds must be > 0*"),
    (["--stress-schedules", "-5"], "*--stress-schedules must be > 0*"),
    (["--pymm-seeds", "0"], "*--pymm-seeds must be > 0*"),
    (["--pymm-strategy", "fastest"], "*--pymm-strategy must be one of random, pct, dfs*'fastest'*"),
], ids=lambda x: x if isinstance(x, str) else " ".join(x))
def test_bad_settings_are_usage_errors(argv, message, pytester):
    pytester.makepyfile(test_ok="def test_ok(): pass")
    result = pytester.runpytest(*argv)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_bad_environment_value_is_a_usage_error(pytester, monkeypatch):
    monkeypatch.setenv("PYMM_STRESS_SECONDS", "soon")
    pytester.makepyfile(test_ok="def test_ok(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*PYMM_STRESS_SECONDS='soon'*"])


# -- settings precedence: marker > command line > environment > ini ------------------------------

LAYERS = {
    "ini": "[pytest]\nstress_seconds = 4\nstress_schedules = 40\npymm_mode = controlled\npymm_seed = 4\n",
    "env": {"PYMM_STRESS_SECONDS": "3", "PYMM_STRESS_SCHEDULES": "30", "PYMM_MODE": "free",
            "PYMM_SEED": "3"},
    "cli": ["--stress-seconds=2", "--stress-schedules=20", "--pymm-mode=controlled", "--pymm-seed=2"],
    "marker": "@pytest.mark.stress(seconds=1.5, schedules=15, mode='free')",
}
CONFIG_TEST = """
import pytest

{marker}
def test_config(stress_config):
    got = (stress_config.seconds, stress_config.schedules, stress_config.mode, stress_config.seed)
    assert got == {expected!r}
"""


@pytest.mark.parametrize("layers,expected", [
    ((), (1.0, 150, "both", 0)),                                 # the plugin's defaults
    (("ini",), (4.0, 40, "controlled", 4)),
    (("ini", "env"), (3.0, 30, "free", 3)),
    (("ini", "env", "cli"), (2.0, 20, "controlled", 2)),
    (("ini", "env", "cli", "marker"), (1.5, 15, "free", 2)),     # the marker carries no seed
    (("marker",), (1.5, 15, "free", 0)),
    (("env", "marker"), (1.5, 15, "free", 3)),
], ids=["defaults", "ini", "ini+env", "ini+env+cli", "ini+env+cli+marker", "marker", "env+marker"])
def test_stress_config_precedence(layers, expected, pytester, monkeypatch):
    if "ini" in layers:
        pytester.makeini(LAYERS["ini"])
    if "env" in layers:
        for k, v in LAYERS["env"].items():
            monkeypatch.setenv(k, v)
    marker = LAYERS["marker"] if "marker" in layers else ""
    pytester.makepyfile(test_c=CONFIG_TEST.format(marker=marker, expected=expected))
    pytester.runpytest(*(LAYERS["cli"] if "cli" in layers else [])).assert_outcomes(passed=1)


def test_precedence_is_per_setting(pytester, monkeypatch):
    """Each setting takes its own highest layer: seconds from the command
    line, schedules from the environment, mode from the ini file."""
    pytester.makeini("[pytest]\nstress_seconds = 4\nstress_schedules = 40\npymm_mode = free\n")
    monkeypatch.setenv("PYMM_STRESS_SCHEDULES", "30")
    pytester.makepyfile(test_c=CONFIG_TEST.format(marker="", expected=(2.5, 30, "free", 0)))
    pytester.runpytest("--stress-seconds=2.5").assert_outcomes(passed=1)


# -- a failing stress run says how to reproduce it ----------------------------------------------

FAILING_STRESS = """
import pytest
from pymm.scenarios.populate import PopulateScenario


@pytest.mark.stress(schedules=200, mode="controlled")
def test_wrong_kind(pymm_stress, monkeypatch):
    # the run catches a use-after-free; pretend only a deadlock would count
    monkeypatch.setattr(PopulateScenario, "caught_kinds", frozenset({"deadlock"}))
    pymm_stress("populate", "drop-retake")
"""


def test_failing_stress_run_prints_seed_and_replay(pytester):
    pytester.makepyfile(test_f=FAILING_STRESS)
    result = pytester.runpytest("--pymm-seed=5")
    result.assert_outcomes(failed=1, errors=0)
    out = result.stdout.str()
    assert "populate/drop-retake (controlled, seed 5): expected caught, got WRONG KIND" in out
    assert "--- use-after-free: BUG: KASAN: use-after-free in populate_vma_page_range" in out
    assert "re-run with: pytest test_f.py::test_wrong_kind --pymm-seed=5 --pymm-mode=controlled" in out
    m = re.search(r"reproduce with: pymm replay (pymm:v1:\S+)", out)
    assert m, out
    # the printed command reproduces the finding
    failure = stress.replay(m.group(1))
    assert failure is not None
    assert failure.message.splitlines()[0] == "BUG: KASAN: use-after-free in populate_vma_page_range"


# -- seeds, header -----------------------------------------------------------------------------

SEEDED = """
def test_seeded(pymm_seed_param, stress_config):
    assert stress_config.seed == pymm_seed_param
"""


def test_pymm_seeds_parametrises_seed_ids(pytester):
    pytester.makepyfile(test_s=SEEDED)
    result = pytester.runpytest("--pymm-seeds", "3", "--pymm-seed", "7", "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_seeded?seed7? PASSED*", "*test_seeded?seed8? PASSED*",
                                 "*test_seeded?seed9? PASSED*"])
    assert "seed10" not in result.stdout.str()


def test_report_header_shows_the_settings(pytester):
    pytester.makepyfile(test_ok="def test_ok(): pass")
    result = pytester.runpytest("--pymm-seed=7", "--pymm-seeds=3", "--pymm-mode=free",
                                "--stress-seconds=0.5", "--pymm-variant=populate=downgrade")
    result.stdout.fnmatch_lines(["pymm: seed=7 seeds=3 mode=free stress_seconds=0.5 "
                                 "stress_schedules=150 variants={'populate': 'downgrade'}"])


# -- pytest-xdist and pytest-timeout (child processes) ----------------------------------------------

XDIST_TESTS = """
import os
import pytest


@pytest.mark.stress(schedules=40, seconds=0.2)
@pytest.mark.parametrize("variant", ["drop-retake", "downgrade"])
def test_populate(variant, pymm_seed_param, stress_config, pymm_stress):
    r = pymm_stress("populate", variant, "controlled")
    assert r.seed == pymm_seed_param
    out = os.environ["CLI_TEST_OUT"]
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(os.path.join(out, f"{variant}-{r.seed}-{worker}"), "w"):
        pass
"""


def test_xdist_spreads_seeds_over_workers(pytester, monkeypatch, tmp_path):
    out = tmp_path / "ran"
    out.mkdir()
    monkeypatch.setenv("CLI_TEST_OUT", str(out))
    pytester.makepyfile(test_x=XDIST_TESTS)
    result = pytester.runpytest_subprocess("-n", "2", "--pymm-seeds", "4", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=8)
    ran = [p.name.rsplit("-", 2) for p in out.iterdir()]
    assert sorted((v, int(s)) for v, s, _ in ran) == [(v, s) for v in ("downgrade", "drop-retake")
                                                      for s in range(4)]
    assert {w for _, _, w in ran} == {"gw0", "gw1"}


TIMEOUT_TEST = """
import threading
import pytest
from pymm.locking import Mutex


@pytest.mark.timeout(2)
def test_blocks_on_a_held_lock():
    m = Mutex("cli_test_held_mutex")
    held, never = threading.Event(), threading.Event()

    def holder():
        m.lock()
        held.set()
        never.wait()

    threading.Thread(target=holder, name="cli-holder", daemon=True).start()
    held.wait(10)
    m.lock()                      # blocks until pytest-timeout ends the session
"""


@pytest.mark.parametrize("capture", ["captured", "-s"])
def test_timeout_dumps_held_locks_first(capture, pytester):
    """The dump is written to stderr while the test still runs: captured, it
    shows in the captured-stderr section pytest-timeout prints (above the
    thread stacks); with -s it goes straight to the process's stderr."""
    pytester.makeini("[pytest]\ntimeout_method = thread\n")
    pytester.makepyfile(test_t=TIMEOUT_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *(["-s"] if capture == "-s" else []),
                                           timeout=60)
    assert result.ret != 0
    out, err = result.stdout.str(), result.stderr.str()
    assert re.search(r"\+{3,} Timeout \+{3,}", out), out      # pytest-timeout did fire
    text = err if capture == "-s" else out
    head = "+++ pymm: test_t.py::test_blocks_on_a_held_lock is about to time out: locks held"
    assert head in text, out + err
    dump = text[text.index(head):]
    assert re.search(r"^1 lock held by cli-holder/\d+:\n #0: .*\(cli_test_held_mutex\)\{mutex\}", dump, re.M), dump
    if capture == "captured":
        section = out[out.index("Captured stderr"):]
        assert section.index(head) < section.index("Stack of cli-holder")


def test_the_printed_rerun_and_replay_lines_work_as_pasted(pytester):
    pytester.makepyfile(test_f=FAILING_STRESS)
    out = pytester.runpytest("--pymm-seed=5").stdout.str()
    rerun = re.search(r"re-run with: (pytest .*)", out).group(1)
    again = pytester.runpytest(*shlex.split(rerun)[1:])
    again.assert_outcomes(failed=1)
    assert "expected caught, got WRONG KIND" in again.stdout.str()
    replay = re.search(r"replay with: (pytest .*)", out).group(1)
    assert "--pymm-replay=pymm:v1:populate:drop-retake:" in replay
    again = pytester.runpytest(*shlex.split(replay)[1:])
    again.assert_outcomes(failed=1)
    assert "populate/drop-retake (controlled, seed 5)" in again.stdout.str()


KERNEL_OUTCOMES = KERNEL_TESTS + """

@pytest.mark.pymm_expect("use-after-free", strict=True)
def test_strict_and_found(kernel):
    use_after_free(kernel)


@pytest.mark.pymm_expect("use-after-free", strict=True)
def test_strict_and_missing(kernel):
    pass
"""


def test_findings_fail_the_call_phase_once(pytester):
    """Undeclared findings fail the test itself (not an ERROR at teardown
    next to a pass), and strict=True requires the declared kind."""
    pytester.makepyfile(test_k=KERNEL_OUTCOMES)
    result = pytester.runpytest("-rA")
    result.assert_outcomes(failed=3, passed=3, errors=0)
    assert outcomes_by_test(result) == {
        "test_undeclared": "failed", "test_declared": "passed", "test_declared_another_kind": "failed",
        "test_clean": "passed", "test_strict_and_found": "passed", "test_strict_and_missing": "failed"}
    calls = [r for r in result.reprec.getreports("pytest_runtest_logreport") if r.failed]
    assert {r.when for r in calls} == {"call"} and len(calls) == 3
    result.stdout.fnmatch_lines(["*pymm_expect(strict=True): no finding of kind use-after-free occurred*"])


def test_an_unknown_kind_is_rejected(pytester):
    pytester.makepyfile(test_u="""
import pytest

@pytest.mark.pymm_expect("use-after-fre")
def test_typo(kernel):
    pass
""")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pymm_expect('use-after-fre'): unknown finding kind*"])


def test_pymm_stress_as_documented_runs_both_modes(pytester):
    pytester.makepyfile(test_d="""
import pytest

@pytest.mark.stress(schedules=5, seconds=0.2)
def test_doc(pymm_stress):
    rs = pymm_stress("populate", "downgrade")
    assert [r.mode for r in rs] == ["controlled", "free"] and all(r.ok for r in rs)
""")
    pytester.runpytest().assert_outcomes(passed=1)


REPLAYED = """
def test_r(pymm_stress):
    r = pymm_stress("populate", "drop-retake", "controlled")
    assert r.schedules == 1 and r.caught
    assert r.findings[0]["replay"] == "pymm replay {token}"
"""


@pytest.mark.parametrize("how", ["option", "env"])
def test_pymm_replay_replays_the_schedule(how, pytester, monkeypatch):
    token = ("pymm:v1:populate:drop-retake:seed=10465572937248623526:threads=1:"
             "sched:v1:random:seed=2:schedule=18:rAAICAAAAAgEBAgIBAQA")
    pytester.makepyfile(test_r=REPLAYED.format(token=token))
    if how == "env":
        monkeypatch.setenv("PYMM_REPLAY", token)
        result = pytester.runpytest()
    else:
        result = pytester.runpytest(f"--pymm-replay={token}")
    result.assert_outcomes(passed=1)


def test_a_bad_replay_token_is_a_usage_error(pytester):
    pytester.makepyfile(test_ok="def test_ok(): pass")
    result = pytester.runpytest("--pymm-replay=nonsense")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--pymm-replay: not a pymm replay token*"])


LOGURU = """
from loguru import logger
from pymm.pytest_plugin import _pymm_logging_enabled

def test_a_enabled_before(loguru_caplog):
    pass

def test_b_state_is_kept():
    assert _pymm_logging_enabled() is {expect}
"""


@pytest.mark.parametrize("enabled", [True, False])
def test_loguru_caplog_restores_the_logging_state(enabled, pytester):
    from loguru import logger
    from pymm.pytest_plugin import _pymm_logging_enabled
    was = _pymm_logging_enabled()
    (logger.enable if enabled else logger.disable)("pymm")
    try:
        pytester.makepyfile(test_l=LOGURU.format(expect=enabled))
        pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=2)
    finally:
        (logger.enable if was else logger.disable)("pymm")


def test_the_cache_provider_is_not_disabled():
    """--lf / --ff / --sw need pytest's cache: the project's settings keep it."""
    import tomllib
    from pathlib import Path
    cfg = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert "no:cacheprovider" not in cfg["tool"]["pytest"]["ini_options"].get("addopts", "")


STRATEGY_TEST = """
from pymm import stress

def test_strategy(stress_config, pymm_stress, monkeypatch):
    assert stress_config.strategy == {expected!r}
    seen = []
    real = stress.run_controlled
    monkeypatch.setattr(stress, "run_controlled",
                        lambda *a, **k: seen.append(k.get("strategy")) or real(*a, **k))
    pymm_stress("populate", "drop-retake", "controlled")
    assert seen == [{expected!r}]
"""


@pytest.mark.parametrize("argv,env,expected", [
    (["--pymm-strategy=random"], {"PYMM_STRATEGY": "pct"}, "random"),
    ([], {"PYMM_STRATEGY": "pct"}, "pct"),
    ([], {}, None),
])
def test_pymm_strategy_reaches_the_stress_runs(argv, env, expected, pytester, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    pytester.makepyfile(test_s=STRATEGY_TEST.format(expected=expected))
    pytester.runpytest("--stress-schedules=50", *argv).assert_outcomes(passed=1)


# -- the hung-task watchdog in the plugin (issue 16) ------------------------------------------------

HUNG_TEST = """
import threading
import time

from pymm.locking import Mutex, hung_task, lockdep


def test_hang(kernel):
    lockdep.disable()             # the watchdog needs no validator
    m = Mutex("cli_test_hung_mutex")
    held, never = threading.Event(), threading.Event()

    def holder():
        m.lock()
        held.set()
        never.wait()

    def waiter():
        m.lock()

    threading.Thread(target=holder, name="cli-hung-holder", daemon=True).start()
    held.wait(10)
    threading.Thread(target=waiter, name="cli-hung-waiter", daemon=True).start()
    deadline = time.monotonic() + 20
    while not any(r.kind == "hung-task" for r in lockdep.reports()):
        assert time.monotonic() < deadline, "the watchdog never reported"
        time.sleep(0.05)          # polling the watchdog's report list, bounded above
    assert any("cli-hung-waiter" in line and "cli-hung-holder" in line
               for line in hung_task.format_waits())
"""


def test_hung_task_watchdog_fails_a_kernel_test(pytester):
    pytester.makepyfile(test_h=HUNG_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:hypothesispytest",
                                           "--pymm-hung-task", "0.3", timeout=180)
    assert result.ret != 0
    out = result.stdout.str()
    assert re.search(r"INFO: task cli-hung-waiter:\d+ blocked for more than \d+ seconds", out), out
    assert "held by cli-hung-holder" in out or "cli-hung-holder" in out, out
    assert "lockdep is turned off; the locks threads wait for" in out, out


def test_hung_task_option_bad_value(pytester):
    pytester.makepyfile(test_ok="def test_ok(): pass")
    result = pytester.runpytest("--pymm-hung-task", "-1")
    assert result.ret != 0
    assert "--pymm-hung-task must be >= 0" in result.stderr.str()


FAIL_TEST = """
import errno
import pytest
from pymm import MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE


def test_injected(kernel):
    p = kernel.spawn("a")
    a = p.mmap(0, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    with pytest.raises(OSError) as e:
        p.store(a, b"x")
    assert e.value.errno == errno.ENOMEM
    assert kernel.fault_stats()["page-alloc"]["failures"] == 1
"""


@pytest.mark.parametrize("how", ["argv", "env", "ini"])
def test_pymm_fail_reaches_the_kernel_fixture(how, pytester, monkeypatch):
    pytester.makepyfile(test_f=FAIL_TEST)
    argv = []
    if how == "argv":
        argv = ["--pymm-fail", "page-alloc:probability=100"]
    elif how == "env":
        monkeypatch.setenv("PYMM_FAIL", "page-alloc:100;slab:0")
    else:
        pytester.makeini("[pytest]\npymm_fail =\n    page-alloc:100\n")
    result = pytester.runpytest("-p", "no:cacheprovider", *argv)
    result.assert_outcomes(passed=1)
    assert "fail=page-alloc@" in result.stdout.str()


def test_pymm_fail_bad_spec_is_a_usage_error(pytester):
    pytester.makepyfile(test_ok="def test_ok(): pass")
    result = pytester.runpytest("--pymm-fail", "nosuch:5")
    assert result.ret != 0
    assert "--pymm-fail" in result.stderr.str() and "unknown site" in result.stderr.str()
