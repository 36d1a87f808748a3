"""Scenarios of one's own: the README tutorial runs from a file path under
``pymm stress``, a campaign (minimised replay included) and pytest; module
references, entry points, ``variants.register`` and the contract checks."""
import json
import pathlib
import re
import subprocess
import sys

import pytest

import pymm
from pymm import scenarios, stress, variants

from .conftest import run_pymm


def headline(text):
    """The first line of a report that is not a ruler ("=====")."""
    return next(ln.strip() for ln in text.splitlines() if ln.strip() and set(ln.strip()) - set("=-"))

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def tutorial_code():
    text = README.read_text()
    i = text.index("## Test your own locking change")
    return re.search(r"```python\n(.*?)```", text[i:], re.S).group(1)


@pytest.fixture(scope="module")
def frob(tmp_path_factory):
    d = tmp_path_factory.mktemp("tutorial")
    f = d / "frob.py"
    f.write_text(tutorial_code())
    return f


def test_tutorial_scenario_is_30_to_40_lines():
    code = tutorial_code()
    cls = code[code.index("class FrobScenario"):code.index("st.p.exit()")]
    assert 30 <= len(cls.splitlines()) + 1 <= 40


def test_tutorial_under_stress_from_a_file_path(frob):
    r = run_pymm("stress", "--scenario", f"{frob}:FrobScenario", "--schedules", "40",
                 "--seconds", "2", "--quiet", timeout=240)   # a buggy free run stops when caught
    assert r.rc == 0, r.out + r.err
    assert "4/4 runs as expected" in r.out
    assert "copy-under-lock" in r.out and "lockdep" in r.out


def test_tutorial_in_a_campaign_with_a_minimised_replay(frob, tmp_path):
    db = tmp_path / "frob.sqlite"
    r = run_pymm("campaign", "--scenario", f"{frob}:FrobScenario", "--seeds", "0:3",
                 "--schedules", "20", "--jobs", "1", "--db", db, "--json", "-", timeout=240)
    assert r.rc == 0, r.err
    doc = json.loads(r.out)                 # --json -: stdout is the JSON, the summary on stderr
    # every seed finds the inversion; whichever side closes it, it is one crash
    [c] = doc["crashes"]
    assert "unique crashes: 1" in r.err
    assert c["kind"] == "lockdep" and c["count"] == 3 and c["scenarios"] == [f"{frob}:FrobScenario"]
    assert c["title"] == "WARNING: possible circular locking dependency detected"
    assert c["minimized_replay"] and c["minimized_preemptions"] <= c["preemptions"]
    rep = run_pymm("replay", c["minimized_replay"], timeout=120)   # the token names the file
    assert rep.rc == 0 and headline(rep.out) == c["title"]


def test_tutorial_under_pytest(frob):
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--stress-schedules", "40", str(frob)], cwd=frob.parent,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 passed" in p.stdout


def test_module_reference_and_scenario_class(tmp_path, monkeypatch):
    pkg = tmp_path / "frobpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "scenario.py").write_text(tutorial_code())
    monkeypatch.syspath_prepend(str(tmp_path))
    cls = stress.get_scenario("frobpkg.scenario:FrobScenario")
    assert cls.variants() == ["copy-under-lock", "copy-after-unlock"]
    r = stress.run_controlled(cls, "copy-under-lock", 0, 20)
    assert r.ok and r.scenario == "frobpkg.scenario:FrobScenario"
    assert stress.replay(r.findings[0]["replay"].split()[-1]) is not None


def test_entry_point_group(tmp_path, monkeypatch, cli):
    """An installed distribution (a .dist-info on sys.path, as pip leaves it)
    whose entry point in the group pymm.scenarios names the tutorial class."""
    (tmp_path / "frob_ep.py").write_text(tutorial_code())
    info = tmp_path / "frob_ep-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: frob-ep\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pymm.scenarios]\nfrob = frob_ep:FrobScenario\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "frob" in stress.all_scenarios()
    assert stress.get_scenario("frob").__name__ == "FrobScenario"
    r = cli("stress", "--scenario", "frob", "--mode", "controlled", "--schedules", "20", "--quiet")
    assert r.rc == 0, r


def test_variants_register():
    key = "test-own-key"
    variants.register(key, ["bad", "good"], "good", buggy=["bad"], doc="a test key")
    variants.register(key, ["bad", "good"], "good", buggy=["bad"], doc="a test key")  # idempotent
    k = pymm.Kernel(nodes=1, pages_per_node=16, variants={key: "bad"})
    assert k.variant(key) == "bad" and variants.is_buggy(key, "bad")
    assert pymm.Kernel(nodes=1, pages_per_node=16).variant(key) == "good"
    bad = [
        dict(key="populate", values=["a", "b"], default="a"),              # pymm's own key
        dict(key=key, values=["bad", "good", "other"], default="good"),    # redefined
        dict(key="k2", values=[], default="a"),
        dict(key="k2", values=["a"], default="b"),
        dict(key="k2", values=["a", "b"], default="a", buggy=["a"]),       # default is buggy
        dict(key="k2", values=["a", "b"], default="a", buggy=["c"]),
        dict(key="k 2", values=["a"], default="a"),
        dict(key="k2", values=["a:b"], default="a:b"),
    ]
    for kw in bad:
        with pytest.raises(ValueError):
            variants.register(**kw)
    assert "k2" not in variants.VARIANTS


CONTRACT = {
    "not a Scenario": ("class X:\n    pass\n", "not a subclass"),
    "unregistered key": ("class X(pymm.Scenario):\n    name = 'x'\n    variant_key = 'nope'\n",
                         "variant_key"),
    "no roles": ("class X(pymm.Scenario):\n    name = 'x'\n    variant_key = 'populate'\n"
                 "    caught_kinds = {'lockdep'}\n    def setup(self, v, s): pass\n", "roles"),
    "unknown kind": ("class X(pymm.Scenario):\n    name = 'x'\n    variant_key = 'populate'\n"
                     "    caught_kinds = {'oops'}\n", "caught_kinds"),
    "no setup": ("class X(pymm.Scenario):\n    name = 'x'\n    variant_key = 'populate'\n"
                 "    caught_kinds = {'lockdep'}\n    roles = (('a', lambda s, st, r: None),)\n",
                 "setup"),
    "import error": ("import no_such_module_here\n", "no_such_module_here"),
}


@pytest.mark.parametrize("case", list(CONTRACT))
def test_contract_breaches_are_one_line_exit_2(case, tmp_path, cli):
    body, needle = CONTRACT[case]
    f = tmp_path / "s.py"
    f.write_text("import pymm\n" + body)
    for cmd in (["stress", "--scenario", f"{f}:X"],
                ["campaign", "--scenario", f"{f}:X", "--seeds", "0:1", "--db", tmp_path / "d.sqlite"]):
        r = cli(*cmd)
        assert r.rc == 2, r
        assert needle in r.error_line()
    assert not (tmp_path / "d.sqlite").exists()


def test_bad_references(cli, tmp_path):
    for ref, needle in [("nope.py:X", "nope.py"), ("no_such_pkg_xyz.mod:X", "no_such_pkg_xyz"),
                        ("pymm.stress:NoSuchClass", "NoSuchClass"), ("pymm.stress:", "pymm.stress:")]:
        r = cli("stress", "--scenario", ref)
        assert r.rc == 2 and needle in r.error_line(), (ref, r)
    r = cli("replay", "pymm:v1:nope.py%3AX:a:seed=0:threads=1:sched:v1:replay:rAA")
    assert r.rc == 2 and "nope.py" in r.error_line()


def test_replay_token_quotes_the_reference():
    tok = stress.replay_token("dir/my file.py:Cls", "v", 1, 1, "sched:v1:replay:rAA")
    assert tok.startswith("pymm:v1:dir/my%20file.py%3ACls:v:seed=1:")
    assert stress.parse_replay_token(tok)[:4] == ("dir/my file.py:Cls", "v", 1, 1)
    assert stress.replay_token("populate", "v", 1, 1, "S") == "pymm:v1:populate:v:seed=1:threads=1:S"


def test_experiment_takes_a_scenario(frob):
    r = run_pymm("experiment", "--scenario", f"{frob}:FrobScenario", "--seconds", "0.3",
                 timeout=120)
    assert r.rc == 0, r.err
    assert "copy-under-lock" in r.out and "copy-after-unlock" in r.out

