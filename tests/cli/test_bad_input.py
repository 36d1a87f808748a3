"""Bad input: ONE line on stderr that names the problem, a non-zero exit,
and no work done (nothing on stdout)."""
import importlib.util
import pathlib

import pytest

GOOD_SCHEDULE = "sched:v1:random:seed=2:rAgIAAAICAQABAQEAAQECAg"   # a valid schedule encoding


def cases(tmp_path, write=True):
    """name -> (argv, text the error line must contain); ``write`` creates
    the files the cases read."""
    no_token = tmp_path / "notes.txt"
    binary = tmp_path / "binary.bin"
    a_file = tmp_path / "plain-file"
    if write:
        no_token.write_text("a report without any replay token\n")
        binary.write_bytes(b"\xff\xfe\x00\x80 not text")
        a_file.write_text("")
    missing_dir = tmp_path / "no" / "such" / "dir"
    return {
        "unknown scenario": (["stress", "--scenario", "nope"], "'nope'"),
        "unknown variant": (["stress", "--scenario", "populate", "--variant", "nope"], "'nope'"),
        "variant of another scenario": (["stress", "--scenario", "populate", "--variant", "vma-lock"],
                                        "'vma-lock'"),
        "--schedules 0": (["stress", "--schedules", "0"], "--schedules"),
        "--schedules -3": (["stress", "--schedules", "-3"], "--schedules"),
        "--schedules x": (["stress", "--schedules", "x"], "--schedules"),
        "--seconds 0": (["stress", "--seconds", "0"], "--seconds"),
        "--seconds -1": (["stress", "--seconds", "-1"], "--seconds"),
        "--seconds nan": (["stress", "--seconds", "nan"], "--seconds"),
        "--seconds inf": (["stress", "--seconds", "inf"], "--seconds"),
        "--threads 0": (["stress", "--threads", "0"], "--threads"),
        "--mode bogus": (["stress", "--mode", "bogus"], "'bogus'"),
        "--strategy bogus": (["stress", "--strategy", "bogus"], "'bogus'"),
        "stress --json in a missing directory": (
            ["stress", "--scenario", "populate", "--json", missing_dir / "out.json"], str(missing_dir)),
        "stress --report-dir under a file": (["stress", "--report-dir", a_file / "reports"], str(a_file)),
        "missing replay file": (["replay", tmp_path / "missing.txt"], str(tmp_path / "missing.txt")),
        "replay file is a directory": (["replay", tmp_path], str(tmp_path)),
        "unreadable replay file (not text)": (["replay", binary], str(binary)),
        "replay file without a token": (["replay", no_token], str(no_token)),
        "token with too few fields": (["replay", "pymm:v1:populate"], "pymm:v1:populate"),
        "token with a bad seed": (["replay", f"pymm:v1:populate:drop-retake:seed=x:threads=1:{GOOD_SCHEDULE}"],
                                  "seed=x"),
        "token with a bad schedule": (["replay", "pymm:v1:populate:drop-retake:seed=0:threads=1:garbage"],
                                      "garbage"),
        "token with a corrupt schedule": (["replay", "pymm:v1:populate:drop-retake:seed=0:threads=1:sched:v1:"
                                           "random:seed=2:AAA"], "sched:v1:random:seed=2:AAA"),
        "token of an unknown scenario": (["replay", f"pymm:v1:nope:drop-retake:seed=2:threads=1:{GOOD_SCHEDULE}"],
                                         "'nope'"),
        "token of an unknown variant": (["replay", f"pymm:v1:populate:nope:seed=2:threads=1:{GOOD_SCHEDULE}"],
                                        "'nope'"),
        "unknown experiment": (["experiment", "nope"], "'nope'"),
        "experiment --seconds 0": (["experiment", "populate", "--seconds", "0"], "--seconds"),
        "experiment --json in a missing directory": (
            ["experiment", "populate", "--json", missing_dir / "x.json"], str(missing_dir)),
        "unknown bench section": (["bench", "--section", "nope"], "'nope'"),
        "bench --json in a missing directory": (["bench", "--section", "sched", "--json", missing_dir / "b.json"],
                                                str(missing_dir)),
        "lockdep-graph unknown scenario": (["lockdep-graph", "--scenario", "nope"], "'nope'"),
        "lockdep-graph --seconds 0": (["lockdep-graph", "--seconds", "0"], "--seconds"),
        "lockdep-graph -o in a missing directory": (
            ["lockdep-graph", "--scenario", "populate", "--seconds", "0.05", "-o", missing_dir / "g.dot"],
            str(missing_dir)),
        "lockdep-graph --variant without =": (["lockdep-graph", "--variant", "populate"], "'populate'"),
        "lockdep-graph --variant unknown key": (["lockdep-graph", "--variant", "nope=x"], "'nope'"),
        "lockdep-graph --variant unknown value": (["lockdep-graph", "--variant", "populate=nope"], "'nope'"),
        "list --json in a missing directory": (["list", "--json", missing_dir / "l.json"], str(missing_dir)),
        "-v before an unknown option": (["stress", "-v", "--bogus"], "--bogus"),
        "unknown command": (["frobnicate"], "'frobnicate'"),
    }


CASE_NAMES = list(cases(pathlib.Path("unused"), write=False))


@pytest.fixture
def no_work(monkeypatch):
    """Every runner the commands call raises: bad input must be rejected
    before any of them starts (a typo must not cost a long run first)."""
    from pymm import bench, experiment, stress

    def refuse(*a, **kw):
        raise AssertionError("bad input reached a runner")
    for mod, name in ((stress, "run_controlled"), (stress, "run_free"), (stress, "sched_replay"),
                      (experiment, "run"), (bench, "run")):
        monkeypatch.setattr(mod, name, refuse)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_is_one_line_naming_the_problem(name, cli, tmp_path, no_work):
    argv, names = cases(tmp_path)[name]
    res = cli(*argv)
    assert res.rc not in (0, None), res
    line = res.error_line()
    assert line.startswith("pymm: error: ")
    assert names in line
    assert res.out == ""


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is not None, reason="matplotlib is installed")
def test_plot_without_matplotlib_is_one_line(cli, no_work):
    res = cli("experiment", "populate", "--plot", "x.png")
    assert res.rc == 2
    assert "matplotlib" in res.error_line() and res.out == ""


@pytest.mark.parametrize("token", [
    "pymm:v1:populate",
    f"pymm:v1:populate:nope:seed=2:threads=1:{GOOD_SCHEDULE}",
    f"pymm:v1:nope:drop-retake:seed=2:threads=1:{GOOD_SCHEDULE}",      # a KeyError's message
], ids=["too-few-fields", "unknown-variant", "unknown-scenario"])
def test_error_quotes_are_balanced(token, cli):
    """The error repeats the offending value in quotes; a message that lost
    its closing quote (or gained a stray one) reads as garbled."""
    line = cli("replay", token).error_line()
    body = line.removeprefix("pymm: error: ")
    assert body.count("'") % 2 == 0, line
