"""``pymm replay TOKEN`` and ``pymm replay FILE``: a controlled finding runs
again, exactly, and prints the same report."""
import json

import pytest

from pymm import stress

from .conftest import run_pymm

BUGGY = [(s, v) for s in stress.all_scenarios() for v in stress.get_scenario(s).variants()
         if stress.get_scenario(s).expected(v) == "caught"]


@pytest.fixture(scope="module")
def drop_retake(tmp_path_factory):
    """A real ``pymm stress`` run of populate/drop-retake in controlled mode:
    (its finding, the JSON file, the report file)."""
    d = tmp_path_factory.mktemp("replay")
    res = run_pymm("stress", "--scenario", "populate", "--variant", "drop-retake", "--mode", "controlled",
                   "--seed", 3, "--json", d / "out.json", "--report-dir", d / "reports", "--quiet")
    assert res.rc == 0, res.out + res.err
    [run] = json.loads((d / "out.json").read_text())["runs"]
    [finding] = run["findings"]
    [report] = (d / "reports").iterdir()
    return finding, d / "out.json", report


def token_of(finding):
    assert finding["replay"].startswith("pymm replay pymm:v1:")
    return finding["replay"].removeprefix("pymm replay ")


def headline(text):
    """The first line that is not a "=====" rule (lockdep splats open with one)."""
    return next(ln for ln in text.splitlines() if ln.strip("=- "))


def report(text):
    """A controlled report without its provenance lines ("found with
    strategy=random seed=..." vs "found with strategy=replay", and the token)."""
    assert "\nfound with strategy=" in text, text
    return text.split("\nfound with strategy=")[0]


def test_replay_token_prints_the_report(drop_retake, cli):
    finding, _, _ = drop_retake
    res = cli("replay", token_of(finding))
    assert res.rc == 0, res.err
    assert res.out.splitlines()[0] == finding["title"] == "BUG: KASAN: use-after-free in populate_vma_page_range"
    assert report(res.out) == report(finding["text"])       # the very report the stress run printed


@pytest.mark.parametrize("which", ["json", "report-dir file"])
def test_replay_file(which, drop_retake, cli):
    finding, json_path, report = drop_retake
    res = cli("replay", json_path if which == "json" else report)
    assert res.rc == 0, res.err
    assert res.out.splitlines()[0] == finding["title"]


def test_replay_from_a_file_is_the_replay_of_its_token(drop_retake, cli):
    """Three ways in (token, JSON, report file), one run, one text."""
    finding, json_path, report = drop_retake
    by_token, by_json, by_report = (cli("replay", a).out for a in (token_of(finding), json_path, report))
    assert by_token == by_json == by_report


def test_two_replays_print_identical_text(drop_retake, cli):
    finding, _, _ = drop_retake
    first = cli("replay", token_of(finding))
    second = cli("replay", token_of(finding))
    assert first.rc == second.rc == 0
    assert first.out == second.out


def test_two_replays_in_separate_processes_print_identical_text(drop_retake):
    finding, _, _ = drop_retake
    a, b = (run_pymm("replay", token_of(finding)) for _ in range(2))
    assert a.rc == b.rc == 0
    assert a.out == b.out


@pytest.mark.parametrize("scenario,variant", BUGGY, ids=[f"{s}-{v}" for s, v in BUGGY])
def test_every_buggy_variant_replays_its_controlled_finding(scenario, variant, cli):
    """The stress run's report, again, twice over."""
    r = stress.run_controlled(scenario, variant, seed=0)
    assert r.findings, f"{scenario}/{variant} not caught in {r.schedules} schedules"
    f = r.findings[0]
    first, second = (cli("replay", token_of(f)) for _ in range(2))
    assert first.rc == 0, first.err
    assert headline(first.out) == f["title"]
    assert first.out == second.out
    assert report(first.out) == report(f["text"])


def test_a_later_schedule_replays_exactly():
    """Every schedule builds its own workload (seeded from the run's seed and
    the schedule's number); the token carries that schedule's workload seed,
    so a finding made after the first schedule replays exactly
    (hugetlb-truncate's buggy variant with seed 3 is caught at schedule 4)."""
    r = stress.run_controlled("hugetlb-truncate", "mapped-check-unlocked", 3, 50)
    assert r.caught and r.schedules > 1
    tok = r.findings[0]["replay"].split()[-1]
    assert f":seed={stress.program_seed(3, r.schedules - 1)}:" in tok
    assert f":seed=3:schedule={r.schedules - 1}:" in tok       # how it was found
    f = stress.replay(tok)
    assert f is not None
    assert f.message.split("\nfound with")[0] == r.findings[0]["text"].split("\nfound with")[0]
