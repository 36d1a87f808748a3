"""What a user meets at the shell: Ctrl-C, findings after the table, the
usual command-line conventions (--version, bare help, -v/-q after the
subcommand, --json -, pymm list, exit codes, NO_COLOR, closed pipes, the
heartbeat, column alignment) and the output files' atomicity."""
import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from pymm import interrupt, stress
from pymm.bench import format_table
from pymm.scenarios.populate import PopulateScenario

from .conftest import run_pymm


# -- Ctrl-C ---------------------------------------------------------------------------------

def _read_until(p, needle, timeout):
    """Read the child's stderr until ``needle`` appears (progress lines have
    no newline until the run ends, so read bytes, not lines)."""
    buf = b""
    end = time.monotonic() + timeout
    fd = p.stderr.fileno()
    while needle.encode() not in buf:
        left = end - time.monotonic()
        if left <= 0 or p.poll() is not None:
            pytest.fail(f"{needle!r} never appeared on stderr:\n{buf.decode()}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            buf += os.read(fd, 4096)
    return buf


def test_sigint_summarises_the_completed_runs_and_writes_the_json(tmp_path):
    """A real ``pymm stress`` process gets SIGINT in its second run (a free run
    of 60 s): it prints the table of the first, ``interrupted after 1/2 runs``,
    exits 130 and leaves complete JSON with "interrupted": true."""
    out_json = tmp_path / "out.json"
    cmd = [sys.executable, "-m", "pymm.cli", "stress", "--scenario", "populate", "--variant",
           "downgrade", "--schedules", "20", "--seconds", "60", "--json", str(out_json)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        err = _read_until(p, "[ 2/2] populate downgrade free ...", 60)
        assert not out_json.exists()          # nothing is written before the end
        p.send_signal(signal.SIGINT)
        out, rest = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    out, err = out.decode(), (err + rest).decode()
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert re.search(r"^interrupted after 1/2 runs$", out, re.M), out
    rows = [ln.split() for ln in out.splitlines() if ln.startswith("  populate")]
    assert rows == [["populate", "downgrade", "controlled", "20", "sched", "-", "clean", "ok", "(clean)"]]
    doc = json.loads(out_json.read_text())
    assert doc["interrupted"] is True and doc["ok"] is False
    assert [(r["variant"], r["mode"]) for r in doc["runs"]] == [("downgrade", "controlled")]
    assert [f.name for f in tmp_path.iterdir()] == ["out.json"]      # no temporary file left


def test_run_plan_stops_at_ctrl_c():
    seen = []

    def run_one(i):
        if i == 3:
            raise KeyboardInterrupt
        seen.append(i)
        return i * 10
    done = interrupt.run_plan(range(5), run_one)
    assert done.results == [0, 10, 20] and done.interrupted and done.total == 5
    assert done.interrupted_line() == "interrupted after 3/5 runs"
    assert done.exit_code(True) == 130
    done = interrupt.run_plan(range(2), lambda i: i)
    assert not done.interrupted and done.exit_code(True) == 0 and done.exit_code(False) == 1


def test_experiment_is_interruptible(cli, monkeypatch, tmp_path):
    """Ctrl-C during the second design: the first one's figures, the line,
    exit 130 and the JSON with "interrupted": true."""
    from pymm import experiment
    real, calls = experiment._virtual, []

    def second_is_interrupted(*a, **kw):
        calls.append(a[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)
    monkeypatch.setattr(experiment, "_virtual", second_is_interrupted)
    res = cli("experiment", "populate", "--duration-ms", "0.5", "--json", tmp_path / "e.json")
    assert res.rc == 130, res.err
    assert "interrupted after 1/3 runs" in res.out
    doc = json.loads((tmp_path / "e.json").read_text())
    assert doc["interrupted"] is True and doc["planned"] == 3
    assert list(doc["variants"]) == [calls[0]]


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    interrupt.write_json(path, {"a": 1})

    def boom(*a, **kw):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        interrupt.write_json(path, {"a": 2, "b": "x" * 100000})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]


def test_sigint_during_a_write_is_deferred_to_its_end(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    real_replace = os.replace

    def replace_after_sigint(a, b):
        os.kill(os.getpid(), signal.SIGINT)        # arrives mid-write
        real_replace(a, b)
    monkeypatch.setattr(os, "replace", replace_after_sigint)
    with pytest.raises(KeyboardInterrupt):
        interrupt.write_json(path, {"done": True})
    assert json.loads(path.read_text()) == {"done": True}


# -- findings after the table ------------------------------------------------------------------

def test_findings_follow_the_table_with_a_pasteable_replay(cli):
    res = cli("stress", "--scenario", "populate", "--variant", "drop-retake", "--schedules", 30,
              "--seconds", 2, "-q")
    assert res.rc == 0, res.err
    out = res.out
    assert "use-after-free x1" in out and "use-after-freex1" not in out
    block = out.split("\nfindings:\n", 1)[1]
    lines = block.splitlines()
    assert lines[0] == "populate drop-retake controlled: BUG: KASAN: use-after-free in populate_vma_page_range"
    m = re.fullmatch(r"  replay: (pymm replay \S+)", lines[1])
    assert m, lines[1]
    assert lines[2].startswith("populate drop-retake free: BUG: KASAN: use-after-free in ")
    assert lines[3].startswith("  replay: pymm stress --scenario populate --variant drop-retake --mode free")
    assert "--report-dir" in lines[4] and lines[4].startswith("full reports: ")
    # the controlled replay line, pasted as is, reproduces the finding
    argv = m.group(1).split()[1:]
    again = cli(*argv)
    assert again.rc == 0
    assert again.out.startswith("BUG: KASAN: use-after-free in populate_vma_page_range")
    assert again.out.rstrip().endswith(f"replay: {m.group(1)}")


def test_a_report_carries_one_way_to_reproduce(cli, tmp_path):
    res = cli("stress", "--scenario", "populate", "--variant", "drop-retake", "--mode", "controlled",
              "--schedules", 30, "-q", "--json", tmp_path / "r.json")
    f = json.loads((tmp_path / "r.json").read_text())["runs"][0]["findings"][0]
    assert "pymm.sched.replay(" not in f["text"] and "\ntoken: " not in f["text"]
    assert f["text"].count("pymm:v1:") == 0 and f["replay"].startswith("pymm replay pymm:v1:")
    assert "full reports: in " + str(tmp_path / "r.json") in res.out


# -- conventions ---------------------------------------------------------------------------------

def test_version(cli):
    from importlib.metadata import version
    res = cli("--version")
    assert res.rc == 0 and res.out.strip() == f"pymm {version('pymm-locksim')}"


def test_bare_pymm_prints_help_with_the_exit_codes(cli):
    res = cli()
    assert res.rc == 0 and res.out.startswith("usage: pymm")
    for cmd in ("stress", "replay", "experiment", "lockdep-graph", "bench", "list"):
        assert f"    {cmd}" in res.out
    for code in ("0", "1", "2", "130"):
        assert re.search(rf"^  {code} +\S", res.out, re.M)
    res = cli("stress", "--help")
    assert res.rc == 0 and "130  interrupted" in res.out


@pytest.mark.parametrize("flags", [["-q", "stress"], ["stress", "-q"], ["stress", "--quiet"]])
def test_quiet_anywhere(flags, cli):
    res = cli(*flags, "--scenario", "populate", "--variant", "downgrade", "--mode", "controlled",
              "--schedules", 3)
    assert res.rc == 0 and res.err == ""


def test_verbose_after_the_subcommand(cli):
    res = cli("stress", "-v", "--scenario", "populate", "--variant", "drop-retake", "--mode",
              "controlled", "--schedules", 30, "-q")
    assert res.rc == 0
    assert "Freed by task " in res.err          # -v logs the full report


def test_json_to_stdout(cli):
    res = cli("stress", "--scenario", "populate", "--variant", "downgrade", "--mode", "controlled",
              "--schedules", 3, "--json", "-")
    assert res.rc == 0
    doc = json.loads(res.out)                  # stdout is the JSON alone
    assert doc["ok"] is True and doc["interrupted"] is False
    assert "1/1 runs as expected" in res.err   # the table went to stderr


def test_list(cli):
    res = cli("list")
    assert res.rc == 0
    assert re.search(r"^  populate +drop-retake \(buggy\), downgrade, revalidate \(default\)$", res.out, re.M)
    assert re.search(r"^  hugetlb-wp +hugetlb-wp +deadlock, hung-task, lockdep$", res.out, re.M)
    from pymm.debug.report import KINDS
    assert ", ".join(KINDS) in res.out
    doc = json.loads(cli("list", "--json", "-").out)
    assert [s["scenario"] for s in doc["scenarios"]] == stress.all_scenarios()
    pop = next(k for k in doc["variant_keys"] if k["key"] == "populate")
    assert pop == {"key": "populate", "values": PopulateScenario.variants(), "buggy": ["drop-retake"],
                   "default": "revalidate", "doc": pop["doc"]}
    assert doc["finding_kinds"] == list(KINDS)


def test_no_color(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert interrupt.paint("OK", "green", Tty()) == "\x1b[32mOK\x1b[0m"
    assert interrupt.paint("OK", "green", io.StringIO()) == "OK"          # not a terminal
    monkeypatch.setenv("NO_COLOR", "1")
    assert interrupt.paint("OK", "green", Tty()) == "OK"


def test_no_traceback_on_a_closed_pipe():
    cmd = [sys.executable, "-m", "pymm.cli", "list"]
    r, w = os.pipe()
    os.close(r)                                 # the reader is gone before we write
    p = subprocess.run(cmd, stdout=w, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(w)
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr
    assert p.returncode == 141


def test_heartbeat_on_a_terminal_only():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    tty = Tty()
    with interrupt.Heartbeat(tty, "[ 1/1] x y free ...", interval=0.01) as hb:
        deadline = time.monotonic() + 30
        while hb.beats < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert hb.beats >= 2
    assert re.search(r"\r\[ 1/1\] x y free \.\.\. \d+ s", tty.getvalue())
    assert tty.getvalue().endswith("\r[ 1/1] x y free ...")      # the verdict follows cleanly
    pipe = io.StringIO()
    with interrupt.Heartbeat(pipe, "x", interval=0.01) as hb:
        time.sleep(0.05)
    assert pipe.getvalue() == "" and hb.beats == 0


def test_text_columns_are_left_aligned_numbers_right():
    t = format_table([{"name": "a", "count": 5, "sched": "3 sched"},
                      {"name": "longer", "count": 12345, "sched": "200 sched"}]).splitlines()
    assert t[2] == "  a           5    3 sched"
    assert t[3] == "  longer  12345  200 sched"


# -- lockdep-graph -------------------------------------------------------------------------------

def _graph(cli, monkeypatch, fake, *argv):
    from pymm.locking import lockdep
    ran = []
    monkeypatch.setattr(stress, "run_free", lambda name, variant, *a, **kw: ran.append((name, variant)))
    monkeypatch.setattr(lockdep, "dependencies", lambda: fake)
    return cli("lockdep-graph", "--scenario", "populate", *argv), ran


def test_lockdep_graph_merges_pairs_and_has_a_legend(cli, monkeypatch):
    fake = [("&mm->mmap_lock", "ptlock_ptr(ptdesc)", {"EN"}),
            ("&mm->mmap_lock", "ptlock_ptr(ptdesc)", {"SN", "EN"})]
    res, _ = _graph(cli, monkeypatch, fake)
    edges = [ln for ln in res.out.splitlines() if "->" in ln]
    assert edges == ['  "&mm->mmap_lock" -> "ptlock_ptr(ptdesc)" [label="EN,SN"];']
    assert re.search(r'^  label=".*E exclusive.*S shared.*R recursive read.*N non-recursive', res.out, re.M)


def test_lockdep_graph_variant_and_check(cli, monkeypatch):
    fake = [("&anon_vma->rwsem", "&mm->mmap_lock", {"EN"})]         # against mm/rmap.py
    res, ran = _graph(cli, monkeypatch, fake, "--variant", "populate=drop-retake")
    assert ran == [("populate", "drop-retake")]
    assert res.rc == 0 and "color=red" in res.out                   # drawn, but no --check
    res, _ = _graph(cli, monkeypatch, fake, "--check")
    assert res.rc == 1
    assert "contradiction: &anon_vma->rwsem -> &mm->mmap_lock" in res.err
    res, _ = _graph(cli, monkeypatch, [("&mm->mmap_lock", "&anon_vma->rwsem", {"EN"})], "--check")
    assert res.rc == 0


def test_lockdep_graph_reduce(cli, monkeypatch):
    fake = [("a_lock", "b_lock", {"EN"}), ("b_lock", "c_lock", {"EN"}), ("a_lock", "c_lock", {"EN"}),
            ("c_lock", "d_lock", {"EN"})]
    res, _ = _graph(cli, monkeypatch, fake, "--reduce")
    pairs = re.findall(r'^  "(\w+)" -> "(\w+)"', res.out, re.M)
    assert sorted(pairs) == [("a_lock", "b_lock"), ("b_lock", "c_lock"), ("c_lock", "d_lock")]
    res, _ = _graph(cli, monkeypatch, fake)
    assert len(re.findall(r"->", res.out)) == 4


def test_lockdep_graph_of_a_buggy_variant_draws_the_contradiction(cli):
    """A real run: hugetlb-file-migrate's buggy variant retakes i_mmap_rwsem
    under the folio lock, against the hugetlbfs order in mm/rmap.py.  The run stops at
    its first finding; 5 s is the budget for a loaded machine."""
    res = cli("lockdep-graph", "--scenario", "hugetlb-file-migrate", "--variant",
              "hugetlb-file-migrate=relock-under-folio", "--seconds", "5", "--check")
    assert res.rc == 1, res.err
    red = [ln for ln in res.out.splitlines() if "color=red" in ln]
    assert any('"folio_lock' in ln and "i_mmap" in ln.split("->")[1] for ln in red), res.out


# -- bench ---------------------------------------------------------------------------------------

def fake_section(met_value):
    class Mod:
        @staticmethod
        def run(quick=False):
            return {"title": "fake", "rows": [{"case": "a", "value": 1, "target": "<= 1", "met": met_value},
                                              {"case": "b", "value": 2, "target": "", "met": ""}],
                    "notes": ["a note"]}
    return Mod


@pytest.mark.parametrize("met_value,rc", [("met", 0), ("not met", 1)])
def test_bench_check_exits_1_on_a_missed_target(met_value, rc, cli, monkeypatch):
    from pymm import benchmarks
    monkeypatch.setattr(benchmarks, "load", lambda name: fake_section(met_value))
    res = cli("bench", "--section", "sched", "--check")
    assert res.rc == rc
    assert ("1 target(s) not met:\n  sched: a 1" in res.out) == (rc == 1)
    assert cli("bench", "--section", "sched").rc == 0       # without --check: informative


def test_bench_sections_follow_the_readme_and_say_met_or_not():
    import pathlib
    from pymm.benchmarks import SECTIONS
    readme = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
    shown = [s for s in SECTIONS if f"`pymm bench --section {s}`" in readme]
    assert shown == SECTIONS[:len(shown)] and len(shown) >= 5      # the others come last
    pos = [readme.index(f"`pymm bench --section {s}`") for s in shown]
    assert pos == sorted(pos)
    pkg = pathlib.Path(__file__).parents[2] / "pymm"
    for f in list((pkg / "benchmarks").glob("*.py")) + [pkg / "bench.py", pkg / "cli.py"]:
        src = f.read_text()
        assert "(issue" not in src, f                     # no internal references in output
        assert not re.search(r'"(?:targets )?met":\s*\(?"(?:yes|no)"', src), f   # met / not met


def test_experiment_of_a_scenario_is_interruptible(cli, monkeypatch, tmp_path):
    from pymm import stress
    real, calls = stress.run_free, []

    def second_is_interrupted(*a, **kw):
        calls.append(a[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)
    monkeypatch.setattr(stress, "run_free", second_is_interrupted)
    res = cli("experiment", "--scenario", "populate", "--seconds", "0.2", "--json", tmp_path / "s.json")
    assert res.rc == 130, res.err
    assert "interrupted after 1/3 runs" in res.out
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["interrupted"] is True and list(doc["variants"]) == [calls[0]]
