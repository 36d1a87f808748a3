"""``pymm stress``: the summary table, the pinned JSON keys, the report files,
lock_stat, progress lines and the exit status.

One real run of the populate scenario (every variant, both modes, small
budgets) in a child process feeds most tests; the failing verdicts are built
in-process by monkeypatching the scenario's expectations."""
import json
import re

import pytest

from pymm import stress
from pymm.scenarios.populate import PopulateScenario

from .conftest import run_pymm

UAF_TITLE = "BUG: KASAN: use-after-free in populate_vma_page_range"
TABLE_COLUMNS = ["scenario", "variant", "mode", "ops/schedules", "findings", "expected", "verdict"]
RUN_KEYS = {"scenario", "variant", "mode", "seed", "expected", "caught", "schedules", "ops",
            "seconds", "findings"}
FINDING_KEYS = {"kind", "title", "text", "replay", "pymm_only"}
SCHEDULES = 60


@pytest.fixture(scope="module")
def populate_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("stress")
    # free mode: 3 s per run, so that drop-retake's use-after-free is caught on a loaded
    # machine too (a buggy run stops at its first finding; the fixed ones run the 3 s)
    res = run_pymm("stress", "--scenario", "populate", "--schedules", SCHEDULES, "--seconds", 3,
                   "--json", d / "out.json", "--report-dir", d / "reports", "--lockstat", cwd=d,
                   timeout=180)
    doc = json.loads((d / "out.json").read_text())
    return res, doc, d / "reports"


def table(out):
    """The summary table as (header, rows): cells split on runs of 2+ spaces."""
    lines = out.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.split()[:1] == ["scenario"])
    split = lambda ln: re.split(r"\s{2,}", ln.strip())
    rows = []
    for ln in lines[i + 2:]:
        if not ln.strip():
            break
        rows.append(split(ln))
    return split(lines[i]), rows


def test_populate_exits_zero_and_json_says_ok(populate_run):
    res, doc, _ = populate_run
    assert res.rc == 0, res.err
    assert doc["ok"] is True
    assert re.search(r"^6/6 runs as expected in [\d.]+ s: OK$", res.out, re.M)


def test_json_has_exactly_the_pinned_keys(populate_run):
    _, doc, _ = populate_run
    assert set(doc) == {"version", "ok", "interrupted", "runs"} and doc["version"] == 1
    assert doc["interrupted"] is False
    plan = {(r["scenario"], r["variant"], r["mode"]) for r in doc["runs"]}
    assert plan == {("populate", v, m) for v in PopulateScenario.variants()
                    for m in ("controlled", "free")}
    for r in doc["runs"]:
        assert set(r) == RUN_KEYS
        assert r["seed"] == 0 and isinstance(r["caught"], bool)
        assert r["expected"] == PopulateScenario.expected(r["variant"])
        assert r["caught"] == (r["expected"] == "caught")
        assert isinstance(r["seconds"], (int, float)) and r["seconds"] >= 0
        if r["mode"] == "controlled":
            assert 1 <= r["schedules"] <= SCHEDULES
        else:
            assert r["schedules"] == 0 and r["ops"] > 0
        if r["expected"] == "clean":
            assert r["findings"] == []
            if r["mode"] == "controlled":
                assert r["schedules"] == SCHEDULES        # a clean run spends its whole budget
        for f in r["findings"]:
            assert set(f) == FINDING_KEYS
            assert all(isinstance(f[k], str) for k in FINDING_KEYS - {"pymm_only"})
            assert isinstance(f["pymm_only"], bool)       # issue 12: pymm's own checks


def controlled_uaf(doc):
    r = next(r for r in doc["runs"] if (r["variant"], r["mode"]) == ("drop-retake", "controlled"))
    assert len(r["findings"]) == 1
    return r["findings"][0]


def test_drop_retake_controlled_finding(populate_run):
    _, doc, _ = populate_run
    f = controlled_uaf(doc)
    assert f["kind"] == "use-after-free"
    assert f["title"] == UAF_TITLE
    assert f["text"].startswith(UAF_TITLE)
    assert re.search(r"^Freed by task \d+:$", f["text"], re.M)
    assert re.fullmatch(r"pymm replay pymm:v1:populate:drop-retake:seed=\d+:threads=1:sched:v1:\S+",
                        f["replay"])
    free = next(r for r in doc["runs"] if (r["variant"], r["mode"]) == ("drop-retake", "free"))
    assert [x["kind"] for x in free["findings"]] == ["use-after-free"]


def test_summary_table_matches_the_json(populate_run):
    res, doc, _ = populate_run
    header, rows = table(res.out)
    assert header == TABLE_COLUMNS
    assert len(rows) == len(doc["runs"])
    for row, r in zip(rows, doc["runs"]):
        cell = dict(zip(header, row))
        assert (cell["scenario"], cell["variant"], cell["mode"]) == (r["scenario"], r["variant"], r["mode"])
        assert cell["expected"] == r["expected"]
        assert cell["verdict"] == ("ok (caught)" if r["expected"] == "caught" else "ok (clean)")
        if r["mode"] == "controlled":
            assert cell["ops/schedules"] == f"{r['schedules']} sched"
        else:
            assert cell["ops/schedules"] == f"{r['ops']} ops"
        kinds = [f["kind"] for f in r["findings"]]
        assert cell["findings"] == (", ".join(f"{k} x{kinds.count(k)}" for k in dict.fromkeys(kinds))
                                    or "-")


def test_progress_goes_to_stderr(populate_run):
    res, doc, _ = populate_run
    lines = [ln for ln in res.err.splitlines() if ln.startswith("[")]
    assert len(lines) == len(doc["runs"])
    for i, (ln, r) in enumerate(zip(lines, doc["runs"]), 1):
        assert ln.startswith(f"[{i:>2}/{len(doc['runs'])}] {r['scenario']} {r['variant']} {r['mode']} ... ok")


def test_report_dir_has_one_file_per_finding(populate_run):
    _, doc, reports = populate_run
    findings = [(r, f) for r in doc["runs"] for f in r["findings"]]
    files = sorted(reports.iterdir())
    assert len(files) == len(findings) >= 2
    texts = [p.read_text() for p in files]
    for r, f in findings:
        match = [t for t in texts if f"title: {f['title']}\n" in t and f"mode: {r['mode']}\n" in t
                 and f["text"] in t]
        assert len(match) == 1, (r["variant"], r["mode"], f["title"])
        assert (f"replay: {f['replay']}\n" in match[0]) == bool(f["replay"])


def test_lockstat_is_printed_for_free_runs(populate_run):
    res, doc, _ = populate_run
    for r in doc["runs"]:
        if r["mode"] == "free":
            head = f"== lock_stat: populate {r['variant']} free\n"
            assert head in res.out
            section = res.out.split(head, 1)[1].split("\n== ", 1)[0]
            assert section.startswith("lock_stat version")
            assert "&mm->mmap_lock-W" in section and "&mm->mmap_lock-R" in section
    assert "lock_stat: populate drop-retake controlled" not in res.out


FAILING = {
    # what the monkeypatch does -> (variant, the verdict it must produce)
    "wrong-kind": ("drop-retake", "WRONG KIND",
                   lambda mp: mp.setattr(PopulateScenario, "caught_kinds", frozenset({"deadlock"}))),
    "false-positive": ("drop-retake", "FALSE POSITIVE?",
                       lambda mp: mp.setattr(PopulateScenario, "expected", classmethod(lambda c, v: "clean"))),
    "missed": ("downgrade", "MISSED",
               lambda mp: mp.setattr(PopulateScenario, "expected", classmethod(lambda c, v: "caught"))),
}


@pytest.mark.parametrize("case", FAILING)
def test_a_failed_verdict_exits_non_zero(case, cli, monkeypatch, tmp_path):
    variant, verdict, patch = FAILING[case]
    patch(monkeypatch)
    res = cli("stress", "--scenario", "populate", "--variant", variant, "--mode", "controlled",
              "--schedules", 30, "--quiet", "--json", tmp_path / "r.json")
    assert res.rc == 1
    header, rows = table(res.out)
    assert [dict(zip(header, row))["verdict"] for row in rows] == [verdict]
    assert re.search(r"^0/1 runs as expected in [\d.]+ s: FAILED$", res.out, re.M)
    assert "lock_stat" not in res.out            # only with --lockstat
    assert res.err == ""                         # --quiet: no progress
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["ok"] is False
    # "caught" says whether a finding of a caught kind appeared, whatever was expected
    assert doc["runs"][0]["caught"] is (case == "false-positive")


def test_every_registered_scenario_plans_all_its_variants(cli, monkeypatch):
    """The plan is every scenario's own variants x both modes (run nothing:
    the runners are replaced by recorders)."""
    ran = []

    def fake(mode):
        def run(name, variant, seed=0, *a, **kw):
            ran.append((name, variant, mode))
            r = stress.RunResult(name, variant, mode, seed, "clean")
            return r
        return run
    monkeypatch.setattr(stress, "run_controlled", fake("controlled"))
    monkeypatch.setattr(stress, "run_free", fake("free"))
    res = cli("stress", "--quiet")
    assert res.rc == 0, res.err
    expect = [(n, v, m) for n in stress.default_scenarios() for v in stress.get_scenario(n).variants()
              for m in ("controlled", "free")]
    assert ran == expect
    assert "populate" in stress.all_scenarios() and "mix" in stress.all_scenarios()
    assert "fuzz" in stress.all_scenarios() and "fuzz" in stress.default_scenarios()


def test_entry_points_are_declared():
    from importlib.metadata import entry_points
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    plugins = {e.name: e.value for e in entry_points(group="pytest11")}
    assert scripts.get("pymm") == "pymm.cli:main"
    assert plugins.get("pymm") == "pymm.pytest_plugin"


@pytest.mark.parametrize("strategy", ["pct", "random"])
def test_strategy_option_reaches_the_controlled_runs(strategy, cli, monkeypatch):
    seen = []
    real = stress.run_controlled
    monkeypatch.setattr(stress, "run_controlled",
                        lambda *a, **k: seen.append(k.get("strategy")) or real(*a, **k))
    res = cli("stress", "--scenario", "populate", "--variant", "drop-retake", "--mode", "controlled",
              "--schedules", "300", "--strategy", strategy, "--quiet")
    assert seen == [strategy]
    assert res.rc == 0, res.out + res.err
