"""``pymm campaign`` and ``pymm crashes``: a small campaign on local workers
fills the crash database (one unique crash per buggy variant, deduplicated
over seeds, minimised, replayable), resumes, survives Ctrl-C, and bad input
changes nothing."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from pymm import campaign

from .conftest import run_pymm


def headline(text):
    """The first line of a report that is not a ruler ("=====")."""
    return next(ln.strip() for ln in text.splitlines() if ln.strip() and set(ln.strip()) - set("=-"))

PINNED = ["id", "kind", "title", "count", "first_seen", "last_seen", "scenarios", "replay",
          "minimized_replay", "preemptions", "minimized_preemptions"]


@pytest.fixture(scope="module")
def small_db(tmp_path_factory):
    """populate: drop-retake (buggy) and revalidate (fixed), seeds 0..3, two
    local workers: the real command in a child process."""
    d = tmp_path_factory.mktemp("campaign")
    db = d / "c.sqlite"
    r = run_pymm("campaign", "--scenario", "populate", "--variant", "drop-retake",
                 "--variant", "revalidate", "--seeds", "0:4", "--schedules", "60", "--jobs", "2",
                 "--db", db, "--json", d / "c.json", timeout=240)
    assert r.rc == 0, r.err + r.out
    return db, d / "c.json", r


def test_one_unique_crash_deduplicated_over_seeds(small_db):
    db, js, r = small_db
    doc = json.loads(js.read_text())
    assert (doc["items"], doc["ran"], doc["skipped"], doc["interrupted"]) == (8, 8, 0, False)
    [c] = doc["crashes"]
    assert list(c) == PINNED                 # exactly the keys
    assert c["kind"] == "use-after-free" and "populate_vma_page_range" in c["title"]
    assert c["count"] == 4 and c["scenarios"] == ["populate"]
    assert c["replay"].startswith("pymm:v1:populate:drop-retake:")
    assert "minimised:" in r.out and f"minimised: {c['minimized_preemptions']} preemptions " \
        f"(from {c['preemptions']})" in campaign.format_crash(campaign.CrashDB.open(
            str(db), readonly=True).crash(c["id"]))
    assert c["minimized_preemptions"] < c["preemptions"]
    con = sqlite3.connect(db)
    runs = con.execute("SELECT variant, verdict FROM runs ORDER BY variant, seed").fetchall()
    assert runs == [("drop-retake", "ok (caught)")] * 4 + [("revalidate", "ok (clean)")] * 4


def test_minimised_replay_prints_the_same_headline(small_db, cli):
    db, js, _ = small_db
    [c] = json.loads(js.read_text())["crashes"]
    a = cli("replay", c["replay"])
    b = cli("replay", c["minimized_replay"])
    assert a.rc == b.rc == 0
    assert headline(a.out) == headline(b.out) == c["title"]


def test_crashes_list_json_and_show(small_db, cli, tmp_path):
    db, js, _ = small_db
    r = cli("crashes", "--db", db, "--json", "-")
    assert r.rc == 0
    doc = json.loads(r.out)
    assert list(doc) == ["crashes"] and [list(c) for c in doc["crashes"]] == [PINNED]
    assert doc["crashes"] == json.loads(js.read_text())["crashes"]
    r = cli("crashes", "--db", db)
    assert r.rc == 0 and "use-after-free" in r.out and "populate/drop-retake" in r.out
    cid = doc["crashes"][0]["id"]
    r = cli("crashes", "show", cid, "--db", db)
    assert r.rc == 0
    assert "KASAN: use-after-free" in r.out and "Call Trace:" in r.out      # the report
    replays = [ln for ln in r.out.splitlines() if "pymm replay pymm:v1:" in ln]
    assert len(replays) == 2 and "minimised" in replays[1]
    r = cli("crashes", "show", 999, "--db", db)
    assert r.rc == 2 and "999" in r.error_line()


def test_rerun_resumes_and_skips_finished_items(small_db, cli):
    db, _, _ = small_db
    before = sqlite3.connect(db).execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    r = cli("campaign", "--scenario", "populate", "--variant", "drop-retake", "--variant",
            "revalidate", "--seeds", "0:4", "--schedules", "60", "--jobs", "1", "--db", db)
    assert r.rc == 0, r.err
    assert "8 items, 8 already in" in r.out and "0 run" in r.out
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM runs").fetchone()[0] == before


def test_earliest_item_is_the_first_occurrence(tmp_path):
    """Results arriving out of order (as from parallel workers) end in the
    same crash row: the lowest item's report and replay win."""
    db = campaign.CrashDB.open(str(tmp_path / "o.sqlite"))

    def res(seed, token):
        return {"item": ["populate", "drop-retake", "controlled", seed], "verdict": "ok (caught)",
                "expected": "caught", "ok": True, "seconds": 0.1, "schedules": 1, "ops": 3,
                "findings": [{"kind": "use-after-free", "title": "T", "text": f"report {seed}",
                              "replay": token, "signature": "sig", "frames": [],
                              "preemptions": seed}]}
    assert db.record_run(res(5, "tok5"), {}) == [(1, "tok5", "sig")]
    assert db.record_run(res(2, "tok2"), {}) == [(1, "tok2", "sig")]     # earlier: re-minimise
    assert db.record_run(res(7, "tok7"), {}) == []
    m = {"token": "tok5", "replay": "min5", "preemptions": 5, "minimized_preemptions": 1,
         "steps": 9, "minimized_steps": 5, "note": None}
    assert not db.record_minimized(1, m)          # stale: tok2 is the first occurrence now
    [c] = db.crashes()
    assert (c["replay"], c["minimized_replay"], c["count"], c["first"]["seed"]) == ("tok2", None, 3, 2)
    assert db.crash(1)["report"] == "report 2"


def test_signature_frames_in_both_frame_formats():
    a = ("BUG: KASAN: use-after-free in f\nCall Trace:\n  pymm/mm/gup.py:132 populate_vma_page_range\n"
         "  pymm/mm/gup.py:204 mm_populate_vma\n  pymm/mm/mmap.py:9 sys_brk\n  pymm/task.py:1 brk\n")
    b = ("BUG: KASAN: use-after-free in f\nCall Trace:\n populate_vma_page_range+0x0/0x0 pymm/mm/gup.py:140\n"
         " mm_populate_vma+0x0/0x0 pymm/mm/gup.py:210\n")
    assert campaign.frames(a) == campaign.frames(b) == ["populate_vma_page_range", "mm_populate_vma"]
    assert campaign.signature("k", "T at 0xffff8880 pid 12", a)[0] == \
        campaign.signature("k", "T at 0xffff9999 pid 7", b)[0]
    # the bytes a model error dumps are values too: one crash, whatever the data
    assert campaign.signature("assertion", "process p[23] read 00000000 at 0x7eff, its model says "
                              "7b7b7b7b7b7b7b7b0000", "")[0] == \
        campaign.signature("assertion", "process p[45] read 00000000 at 0x7eff, its model says "
                           "c7c7c7c7c7c7c7c70000", "")[0]
    # the user side (scenario, task wrappers, the runner) is not part of a signature
    c = "x\nstack backtrace:\n  pymm/scenarios/populate.py:3 grow\n  pymm/stress.py:1 body\n"
    assert campaign.frames(c) == []


def test_parse_seeds():
    assert list(campaign.parse_seeds("0:3")) == [0, 1, 2]
    assert list(campaign.parse_seeds("7")) == [7]
    for bad in ("", "a:b", "3:3", "5:1", "1:2:3"):
        with pytest.raises(campaign.CampaignError):
            campaign.parse_seeds(bad)


# -- bad input: one line, exit 2, the database untouched -------------------------------------

def _bad_cases(tmp_path):
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"SQLite format 3\x00" + b"\x13" * 2000)
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    text = tmp_path / "notes.sqlite"
    text.write_text("not a database at all\n" * 50)
    nofile = tmp_path / "s.py"
    nofile.write_text("x = 1\n")
    return {
        "corrupt database": (["--db", corrupt], str(corrupt)),
        "another sqlite database": (["--db", other], str(other)),
        "text file as database": (["--db", text], str(text)),
        "database in a missing directory": (["--db", tmp_path / "no" / "c.sqlite"], "no"),
        "unknown scenario": (["--scenario", "nope"], "'nope'"),
        "file without that class": (["--scenario", f"{nofile}:Missing"], "Missing"),
        "missing file": (["--scenario", f"{tmp_path / 'gone.py'}:X"], "gone.py"),
        "bad seeds": (["--seeds", "5:1"], "5:1"),
    }


@pytest.mark.parametrize("case", [
    "corrupt database", "another sqlite database", "text file as database",
    "database in a missing directory", "unknown scenario", "file without that class",
    "missing file", "bad seeds"])
def test_bad_input_one_line_exit_2_nothing_changed(case, tmp_path, cli):
    argv, needle = _bad_cases(tmp_path)[case]
    argv = [str(a) for a in argv]
    base = ["campaign", "--scenario", "populate", "--seeds", "0:1", "--schedules", "5", "--jobs", "1"]
    if "--seeds" in argv:
        base = base[:3] + base[5:]
    if "--scenario" in argv:
        base = base[:1] + base[3:]
    db_default = str(tmp_path / "default.sqlite")
    if "--db" not in argv:
        argv += ["--db", db_default]
    files = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    r = cli(*base, *argv)
    assert r.rc == 2, r
    assert needle in r.error_line()
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == files
    assert not os.path.exists(db_default)


def test_crashes_without_a_database(cli, tmp_path):
    r = cli("crashes", "--db", tmp_path / "none.sqlite")
    assert r.rc == 2 and "none.sqlite" in r.error_line()
    assert not (tmp_path / "none.sqlite").exists()


def test_ray_missing_or_unreachable_is_one_line(cli, tmp_path):
    db = tmp_path / "r.sqlite"
    r = cli("campaign", "--scenario", "populate", "--seeds", "0:1", "--ray", "127.0.0.1:1",
            "--db", db)
    assert r.rc == 2
    line = r.error_line()
    assert "ray" in line.lower()
    assert not db.exists()


# -- Ctrl-C ------------------------------------------------------------------------------------

def test_ctrl_c_keeps_every_finished_run_and_resumes(tmp_path):
    db = tmp_path / "i.sqlite"
    argv = ["campaign", "--scenario", "populate", "--variant", "revalidate", "--seeds", "0:400",
            "--schedules", "5", "--jobs", "1", "--db", str(db)]
    p = subprocess.Popen([sys.executable, "-m", "pymm.cli", *argv], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        n = 0
        while time.monotonic() < deadline and n < 3:
            time.sleep(0.2)
            if db.exists():
                try:
                    n = sqlite3.connect(db).execute("SELECT COUNT(*) FROM runs").fetchone()[0]
                except sqlite3.Error:
                    n = 0
        assert n >= 3, "the campaign did not get going"
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert "interrupted after" in out
    con = sqlite3.connect(db)
    done = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert f"interrupted after {done}/400" in out
    con.close()
    r = run_pymm(*argv[:6], "0:2", *argv[7:], timeout=120)     # a subset: all finished already
    assert r.rc == 0 and "2 already in" in r.out and "0 run" in r.out


def test_progress_line_on_a_terminal_only():
    import io

    class Tty(io.StringIO):
        def isatty(self):
            return True
    t = Tty()
    p = campaign.Progress(t, 10)
    p.update(4, 2, force=True)
    line = t.getvalue()
    assert line.startswith("\r[4/10]") and "items/s" in line and "2 unique crashes" in line \
        and "ETA" in line
    p.close()
    assert t.getvalue().endswith("\r")
    quiet = io.StringIO()
    q = campaign.Progress(quiet, 10)
    q.update(4, 2, force=True)
    q.close()
    assert quiet.getvalue() == ""


def test_no_minimize_then_a_later_run_catches_up(tmp_path, cli):
    db = tmp_path / "m.sqlite"
    argv = ["campaign", "--scenario", "populate", "--variant", "drop-retake", "--seeds", "0:1",
            "--schedules", "60", "--jobs", "1", "--db", db]
    r = cli(*argv, "--no-minimize")
    assert r.rc == 0, r.err
    [c] = json.loads(cli("crashes", "--db", db, "--json", "-").out)["crashes"]
    assert c["replay"] and c["minimized_replay"] is None and "not minimised yet" in r.out
    r = cli(*argv)
    assert r.rc == 0 and "1 already in" in r.out
    [c] = json.loads(cli("crashes", "--db", db, "--json", "-").out)["crashes"]
    assert c["minimized_replay"] and c["minimized_preemptions"] <= c["preemptions"]


def test_a_lock_inversion_is_one_crash_whichever_side_closes_it():
    def report(first, second, func):
        return (f"WARNING: possible circular locking dependency detected\n"
                f"the existing dependency chain (in reverse order) is:\n\n-> #1 ({first}):\n"
                f"  x+0x0/0x0 pymm/mm/a.py:1\n\n-> #0 ({second}):\n  y+0x0/0x0 pymm/mm/b.py:2\n\n"
                f"stack backtrace:\n {func}+0x0/0x0 pymm/mm/c.py:3\n")
    t = "WARNING: possible circular locking dependency detected"
    a = campaign.signature("lockdep", t, report("folio_lock", "hugetlb_fault_mutex", "hugetlb_wp"))
    b = campaign.signature("lockdep", t, report("hugetlb_fault_mutex", "folio_lock", "hugetlb_fault"))
    c = campaign.signature("lockdep", t, report("folio_lock", "i_mmap_rwsem", "hugetlb_wp"))
    assert a[0] == b[0] != c[0]


class _CannedExecutor:
    """Runs nothing: hands back the results given for each item (the
    executor interface ``campaign.run`` uses)."""
    name, jobs = "canned", 1

    def __init__(self, results):
        self.results = results

    def submit(self, fn, *args):
        import concurrent.futures as cf
        f = cf.Future()
        f.set_result(self.results[tuple(args[0])])
        return f

    def shutdown(self, abandon=False):
        pass


def test_missed_buggy_runs_are_counted_not_failed(tmp_path):
    """A buggy variant's run that catches nothing within its budget is
    listed as missed (it is not a failure of the campaign: the budget was
    short), a fixed variant's crash is unexpected (exit 1)."""
    def res(item, ok, expected):
        return {"item": list(item), "verdict": "MISSED" if not ok else "ok (clean)",
                "expected": expected, "ok": ok, "seconds": 0.1, "schedules": 1, "ops": 1,
                "findings": []}
    a = ("populate", "drop-retake", "controlled", 0)
    b = ("populate", "revalidate", "controlled", 0)
    ex = _CannedExecutor({a: res(a, False, "caught"), b: res(b, True, "clean")})
    out = campaign.run([a, b], db_path=str(tmp_path / "m.sqlite"), executor=ex, progress=False)
    assert [r["item"] for r in out.missed] == [list(a)] and out.unexpected == [] and out.ran == 2


def test_ctrl_c_during_a_commit_waits_for_the_bookkeeping():
    """A Ctrl-C while a finished run is committed is raised only once the
    run is also counted: the interrupted summary says exactly what the
    database holds (it said one run fewer when the commit raised)."""
    from pymm import interrupt
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with interrupt.sigint_deferred():          # the campaign's bookkeeping
            with interrupt.sigint_deferred():      # the database commit
                os.kill(os.getpid(), signal.SIGINT)
                steps.append("committed")
            steps.append("counted")
    assert steps == ["committed", "counted"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_report_with_no_guilty_frame_is_signed_by_its_workload():
    """A data corruption is seen by a load (its only kernel frame is the
    user access): two scenarios' corruptions are two crashes (a stale TLB
    write and a lost COW were one), the same scenario's at other addresses
    one; a report with kernel frames is signed by them, whatever the
    workload."""
    def corruption(addr, role):
        return (f"BUG: data corruption at {addr}\nexpected 00, found 73\nCall Trace:\n"
                f" user_access+0x0/0x0 pymm/mm/uaccess.py:100\n load+0x0/0x0 pymm/task.py:431\n"
                f" {role}+0x0/0x0 pymm/scenarios/x.py:104\n body+0x0/0x0 pymm/stress.py:233\n")
    t = "data corruption at 0x40000000"
    a = campaign.signature("data-corruption", t, corruption("0x40000000", "user"), "tlb-batch-flush")
    b = campaign.signature("data-corruption", "data corruption at 0x40000008",
                           corruption("0x40000008", "writer"), "vma-lock-fork")
    c = campaign.signature("data-corruption", "data corruption at 0x40001000",
                           corruption("0x40001000", "reader"), "tlb-batch-flush")
    assert a[0] != b[0] and a[0] == c[0]
    assert campaign.signature("rss-counter", "BUG: Bad rss-counter state", "BUG: Bad rss-counter "
                              "state mm:0x1 type:MM_ANONPAGES val:1", "/x/frob.py:Frob")[0].endswith(
        "| in Frob")
    uaf = ("BUG: KASAN: use-after-free in f\nCall Trace:\n f+0x0/0x0 pymm/mm/gup.py:140\n"
           " g+0x0/0x0 pymm/mm/gup.py:210\n")
    assert campaign.signature("use-after-free", "T", uaf, "populate")[0] == \
        campaign.signature("use-after-free", "T", uaf, "mbind")[0]


def test_minimised_replay_keeps_the_headline_not_only_the_signature():
    """vma-lock-fork's lost COW is titled by the address it was seen at; the
    signature masks it, the headline does not.  The minimised schedule must
    print the very headline (one at 0x40000007 for a crash at 0x40000008
    did before)."""
    from pymm import stress
    r = stress.run_controlled("vma-lock-fork", "unlocked", 0, 200, 1)
    f = r.findings[0]
    assert f["kind"] == "data-corruption"
    token = campaign._token(f["replay"])
    sig = campaign.signature(f["kind"], f["title"], f["text"], "vma-lock-fork")[0]
    m = campaign.minimize(token, sig)
    assert m["replay"] and m["minimized_preemptions"] <= m["preemptions"]
    campaign._reset_lockdep()
    again = stress._failure_finding(stress.replay(m["replay"]), "")
    assert again["title"] == f["title"]


def test_a_database_of_another_signature_rule_is_read_but_not_resumed(small_db, cli, tmp_path):
    """Resuming under a changed dedup rule would list known crashes again
    under new signatures: refused with one line, nothing changed; listing
    its crashes still works."""
    db, _, _ = small_db
    con = sqlite3.connect(db)
    assert dict(con.execute("SELECT key, value FROM meta"))["signature"] == campaign.SIGNATURE_RULE
    con.close()
    old = tmp_path / "old.sqlite"
    old.write_bytes(db.read_bytes())
    con = sqlite3.connect(old)
    con.execute("DELETE FROM meta WHERE key = 'signature'")     # as written before the key existed
    con.commit()
    con.close()
    before = old.read_bytes()
    r = cli("campaign", "--scenario", "populate", "--variant", "drop-retake", "--seeds", "4:5",
            "--schedules", "5", "--jobs", "1", "--db", old)
    assert r.rc == 2, r
    assert "signature rule 1" in r.error_line() and str(old) in r.error_line()
    assert old.read_bytes() == before
    r = cli("crashes", "--db", old)
    assert r.rc == 0 and "populate/drop-retake" in r.out
