"""``pymm campaign`` and ``pymm crashes``: long runs over many seeds, on every
core or on a Ray cluster, with a crash database.

Work items are (scenario, variant, mode, seed).  An *executor* runs them:
local worker processes (``--jobs``, default the number of cores; stdlib
``concurrent.futures``) or a Ray cluster (``--ray ADDRESS|auto``, the
optional extra ``pymm-locksim[ray]``).  Both take the same two top-level
functions (``run_item``, ``minimize``) and hand back futures; everything
else -- the plan, the database, deduplication, minimisation, progress -- is
one code path in this process.

The database (stdlib sqlite3, ``--db``, default ``pymm-campaign.sqlite``)
holds every finished run and every *unique crash*.  A crash is identified by
its signature: kind + title + the first pymm frames of its main stack (the
way syzkaller titles and dedups crashes; ``signature``).  The crash keeps
its first occurrence -- the lowest item in (seed, scenario, variant, mode)
order, so the content does not depend on which worker finished first --
with its full report and replay token, and the minimised replay token.
Each finished run is committed on its own (SIGINT deferred while it is),
so Ctrl-C loses nothing that finished, and a campaign re-run with the same
database skips the items already there (resume).

Minimisation (controlled-mode crashes): ``pymm.sched.shrink`` drops the
schedule's switches while the replay still gives the same signature; the
crash stores the result and "minimised: N preemptions (from M)".
"""
import concurrent.futures as cf
import contextlib
import json
import os
import re
import signal
import sqlite3
import sys
import time

from . import interrupt    # Ctrl-C and atomic output: the mechanism every pymm command shares

DEFAULT_DB = "pymm-campaign.sqlite"
SIGNATURE_FRAMES = 2        # frames of the main stack in a signature
FORMAT = "pymm-campaign"
VERSION = "1"
# The rule ``signature`` dedups by.  A database resumed under another rule
# would list its known bugs again under new signatures, so ``check`` refuses
# it for writing (reading it is fine).  1: kind + title + frames; 2: a
# report with no guilty frame is also signed by its workload.  A database
# without the key was written under rule 1.
SIGNATURE_RULE = "3"        # 3: bytes dumped in hex in a title are masked too
MODES = ("controlled", "free")
TASKS_PER_WORKER = 200      # items a local worker process runs before a fresh one replaces it


class CampaignError(Exception):
    """Bad input (an unknown scenario, a corrupt database, an unreachable
    Ray address...): one line, exit status 2, the database untouched."""


# -- signatures ---------------------------------------------------------------------------

# a frame as pymm prints it: "pymm/mm/gup.py:132 func", or the kernel's way
# "func+0x0/0x0 pymm/mm/gup.py:132"
_FRAME = re.compile(r"^\s*(?:(?P<f1>[\w.<>]+)\+0x[0-9a-f]+/0x[0-9a-f]+\s+(?P<p1>\S+\.py):\d+"
                    r"|(?P<p2>\S+\.py):\d+\s+(?P<f2>[\w.<>]+))\s*$")
_MAIN_STACK = re.compile(r"^\s*(Call Trace:|stack backtrace:)\s*$")
# frames that say where the user side called in, not where the kernel went wrong
_USER_SIDE = ("pymm/stress.py", "pymm/task.py", "pymm/sched/", "pymm/scenarios/", "pymm/kernel.py",
              "pymm/campaign.py")


def frames(text, n=SIGNATURE_FRAMES):
    """The first ``n`` kernel-side function names of a report's main stack
    (the "Call Trace:" / "stack backtrace:" section if there is one, else the
    first frames in the text).  For a Python traceback the innermost frames
    come last, so they are taken from the end."""
    lines = text.splitlines()
    start, traceback_order = 0, False
    for i, line in enumerate(lines):
        m = _MAIN_STACK.match(line)
        if m:
            start, traceback_order = i + 1, m.group(1).startswith("Traceback")
            break
    found = []
    for line in lines[start:]:
        m = _FRAME.match(line)
        if m is None:
            if found and not line.strip():
                break
            continue
        path = (m.group("p1") or m.group("p2")).replace(os.sep, "/")
        func = m.group("f1") or m.group("f2")
        k = path.find("pymm/")
        if k < 0 or any(path[k:].startswith(u) for u in _USER_SIDE):
            continue
        found.append(func)
    return found[:n]


def _traceback_frames(text):
    """Frames of a Python traceback ('File "...pymm/x.py", line N, in f')."""
    out = []
    for m in re.finditer(r'File "([^"]+)", line \d+, in (\S+)', text):
        path = m.group(1).replace(os.sep, "/")
        k = path.find("pymm/")
        if k >= 0 and not any(path[k:].startswith(u) for u in _USER_SIDE):
            out.append(m.group(2))
    return out[::-1]


_CHAIN = re.compile(r"^-> #\d+ \((.+)\):\s*$", re.M)


# Frames where a user access enters the kernel: where a check on the bytes
# the user sees (data corruption) reports from, not where anything went wrong.
_ACCESS_FRAMES = frozenset({"user_access"})


def signature(kind, title, text, workload=None):
    """(signature string, frames) of a finding: kind, title and the first
    kernel-side frames.  Numbers in the title (addresses, pids, counts,
    bytes dumped in hex) are masked so that the same bug seen with other
    values dedups.  A circular locking dependency is signed by the lock classes of its cycle, sorted:
    the same inversion is reported from whichever side closes it first, with
    that side's stack, and it is one bug (pymm's own rule; syzkaller titles
    it by the closing function and so may list it twice).

    A report whose stack names no kernel function but the user access that
    saw it (a data corruption found by a load) or none at all (an invariant
    check at teardown) says nothing about which code is guilty: two
    scenarios' different bugs would be one crash ("data corruption at N |
    user_access" was both a stale TLB write in tlb-batch-flush and a lost
    COW in vma-lock-fork).  Its signature names the ``workload`` (the
    scenario) instead, as syzkaller's title falls back to the first frame it
    does not skip (pymm's own rule)."""
    chain = sorted(set(_CHAIN.findall(text))) if "circular locking dependency" in title else []
    fr = chain or frames(text) or _traceback_frames(text)[:SIGNATURE_FRAMES]
    t = re.sub(r"0x[0-9a-fA-F]+|\b[0-9a-fA-F]{8,}\b|\b\d+\b", "N", title)
    sig = f"{kind} | {t} | {' < '.join(fr)}"
    if workload and not [f for f in fr if f not in _ACCESS_FRAMES]:
        sig += f" | in {_workload_name(workload)}"
    return sig, fr


def _workload_name(ref):
    """A scenario reference's name, the same on every machine: the class of
    a file or module reference (its path differs between machines)."""
    where, sep, cls = ref.rpartition(":")
    return cls if sep else ref


# -- the work, in a worker process ---------------------------------------------------------

def run_item(item, schedules, seconds, threads=1):
    """Run one (scenario, variant, mode, seed) item; a plain dict back (it
    crosses a process or machine boundary).  Top-level: executors pickle it."""
    from . import stress
    from .sched.shrink import measure
    started, cpu0 = time.time(), time.process_time()
    ref, variant, mode, seed = item
    if mode == "controlled":
        r = stress.run_controlled(ref, variant, seed, schedules, threads)
    else:
        r = stress.run_free(ref, variant, seed, seconds, threads)
    findings = []
    for f in r.findings:
        sig, fr = signature(f["kind"], f["title"], f["text"], ref)
        token = _token(f.get("replay"))
        pre = None
        if token:
            setup, ths, check, sched = stress.token_program(token)
            pre = measure(setup, ths, sched, check, prepare=_reset_lockdep)
        findings.append({"kind": f["kind"], "title": f["title"], "text": f["text"],
                         "replay": token, "signature": sig, "frames": fr, "preemptions": pre})
    # where and when it ran (not stored: for the benchmark's account of the
    # workers' time, which needs the wall clock of one machine)
    worker = {"pid": os.getpid(), "started": started, "finished": time.time(),
              "cpu": time.process_time() - cpu0}
    return {"item": list(item), "verdict": r.verdict, "expected": r.expected, "ok": r.ok,
            "seconds": r.seconds, "schedules": r.schedules, "ops": r.ops, "findings": findings,
            "worker": worker}


def minimize(token, sig, max_runs=300):
    """Shrink a controlled crash's schedule while it keeps signature ``sig``.
    Returns {"token", "replay" (the minimised token or None), "preemptions",
    "minimized_preemptions", "steps", "minimized_steps", "runs", "note"}."""
    from . import stress
    from .sched.shrink import shrink
    name, variant, seed, tpr, _ = stress.parse_replay_token(token)
    setup, ths, check, sched = stress.token_program(token)

    want = {}

    def same(failure):
        """The same crash, and the same headline: the signature masks
        numbers, the headline printed by ``pymm replay`` does not (a
        minimised "data corruption at 0x40000007" for a crash titled "...
        at 0x40000008" was the same signature).  The first failure judged
        is the token's own schedule: its title is the one to keep."""
        f = stress._failure_finding(failure, "")
        if signature(f["kind"], f["title"], f["text"], name)[0] != sig:
            return False
        return f["title"] == want.setdefault("title", f["title"])

    s = shrink(setup, ths, sched, check, same=same, prepare=_reset_lockdep, max_runs=max_runs)
    out = {"token": token, "replay": None, "preemptions": None, "minimized_preemptions": None,
           "steps": None, "minimized_steps": None, "runs": 0, "note": None}
    if s is None:
        out["note"] = "the replay token does not reproduce this signature on its own"
        return out
    from .sched.trace import encode_schedule
    new = stress.replay_token(name, variant, seed, tpr, encode_schedule(s.schedule, "shrunk"))
    # the minimised token must replay exactly, as `pymm replay` runs it
    _reset_lockdep()
    f = stress.replay(new)
    if f is None or not same(f):
        out["note"] = "the minimised schedule did not replay the same signature"
        return out
    out.update(replay=new, preemptions=s.preemptions_from, minimized_preemptions=s.preemptions,
               steps=s.steps_from, minimized_steps=s.steps, runs=s.runs)
    return out


def _reset_lockdep():
    from .locking import lockdep
    lockdep.reset()


def _token(replay):
    if not replay:
        return None
    m = re.search(r"pymm:v1:\S+", replay)
    return m.group(0) if m else None


def _worker_init(path):
    """Workers leave Ctrl-C to the campaign (which stops them) and see the
    campaign's import path (user scenarios given as module:Class)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for p in reversed(path):
        if p not in sys.path:
            sys.path.insert(0, p)


# -- executors ---------------------------------------------------------------------------------

def _worker_context():
    """How workers start: forked from a fork server that imported pymm once
    (its one thread forks, so no lock is copied held), else spawned.  A
    spawned worker imports pymm itself, 0.4 CPU seconds a worker (several
    wall seconds on a loaded machine): with --jobs 2 both workers did that
    at the same time, a fixed cost that did not shrink with more workers
    (a third of the workers' time in a 40-item campaign at load 10).  The
    fork server imports once per process and forks each worker in
    milliseconds, also the replacements after TASKS_PER_WORKER items and
    the workers of a later campaign in the same process."""
    import multiprocessing
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from .scenarios import SCENARIO_MODULES
    ctx = multiprocessing.get_context("forkserver")
    # before the server starts (later calls change nothing for a running one)
    ctx.set_forkserver_preload(["pymm.campaign", "pymm.stress"] +
                               [f"pymm.scenarios.{m}" for m in SCENARIO_MODULES.values()])
    return ctx


class LocalExecutor:
    """Worker processes on this machine (``_worker_context``: never forked
    from this process, whose threads could hold locks)."""

    name = "local"

    def __init__(self, jobs):
        self.jobs = jobs
        # a fresh worker now and then: a free-mode deadlock leaves its stuck
        # (daemon) threads behind in the worker that ran it
        self.pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=_worker_context(),
                                           initializer=_worker_init, initargs=(list(sys.path),),
                                           max_tasks_per_child=TASKS_PER_WORKER)

    def submit(self, fn, *args):
        return self.pool.submit(fn, *args)

    def shutdown(self, abandon=False):
        if abandon:
            # the running items are dropped: stop the workers now
            procs = list(getattr(self.pool, "_processes", {}).values())
            self.pool.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                with contextlib.suppress(Exception):
                    p.terminate()
            for p in procs:
                with contextlib.suppress(Exception):
                    p.join(5)
        else:
            self.pool.shutdown(wait=True)


class RayExecutor:
    """The same functions as Ray tasks (one CPU each) on a Ray cluster."""

    name = "ray"

    def __init__(self, address):
        try:
            import ray
        except ImportError:
            raise CampaignError("--ray needs Ray: pip install 'pymm-locksim[ray]'") from None
        self.ray = ray
        _check_reachable(address)
        try:
            ray.init(address=address, ignore_reinit_error=True, logging_level="ERROR",
                     log_to_driver=False, include_dashboard=False)
        except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError...
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CampaignError(f"cannot connect to the Ray cluster at {address!r}: {msg}") from None
        self.jobs = int(ray.cluster_resources().get("CPU", 1))
        self._remote = {}

    def submit(self, fn, *args):
        r = self._remote.get(fn)
        if r is None:
            r = self._remote[fn] = self.ray.remote(num_cpus=1, max_retries=0,
                                                   max_calls=TASKS_PER_WORKER)(fn)
        return r.remote(*args).future()

    def shutdown(self, abandon=False):
        with contextlib.suppress(Exception):
            self.ray.shutdown()


def _check_reachable(address):
    """Ray retries an unreachable head for minutes: try a TCP connection to a
    host:port (or ray://host:port) address first, for a quick one-line error."""
    import socket
    m = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", address)
    if m is None:
        if address != "auto" and address != "local":
            raise CampaignError(f"--ray expects host:port, ray://host:port or auto, got {address!r}")
        return
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=5).close()
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        raise CampaignError(f"cannot connect to the Ray cluster at {address!r}: {why}") from None


def make_executor(jobs=None, ray_address=None):
    if ray_address is not None:
        return RayExecutor(ray_address)
    return LocalExecutor(jobs or os.cpu_count() or 1)


# -- the database ----------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    scenario TEXT NOT NULL, variant TEXT NOT NULL, mode TEXT NOT NULL, seed INTEGER NOT NULL,
    verdict TEXT NOT NULL, expected TEXT NOT NULL, ok INTEGER NOT NULL,
    duration REAL NOT NULL, schedules INTEGER NOT NULL, ops INTEGER NOT NULL,
    budget TEXT NOT NULL,           -- JSON: {"schedules": N, "seconds": S}
    findings TEXT NOT NULL,         -- JSON: [{"crash_id", "kind", "title", "replay"}]
    finished_at TEXT NOT NULL,
    UNIQUE (scenario, variant, mode, seed)
);
CREATE TABLE crashes (
    id INTEGER PRIMARY KEY,
    signature TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL, title TEXT NOT NULL, frames TEXT NOT NULL,
    first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
    first_scenario TEXT NOT NULL, first_variant TEXT NOT NULL, first_mode TEXT NOT NULL,
    first_seed INTEGER NOT NULL,    -- the first occurrence: lowest (seed, scenario, variant, mode)
    report TEXT NOT NULL,           -- the full report of the first occurrence
    replay TEXT,                    -- its replay token (controlled mode)
    preemptions INTEGER,
    minimized_replay TEXT, minimized_preemptions INTEGER,
    minimized_steps INTEGER, steps INTEGER,
    minimize_note TEXT              -- why there is no minimised replay, once tried
);
CREATE TABLE hits (
    crash_id INTEGER NOT NULL REFERENCES crashes(id),
    run_id INTEGER NOT NULL REFERENCES runs(id),
    PRIMARY KEY (crash_id, run_id)
);
"""


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class CrashDB:
    """The campaign database.  ``open`` checks an existing file without
    writing to it; ``create`` makes a new one."""

    def __init__(self, conn, path):
        self.conn, self.path = conn, path

    @classmethod
    def check(cls, path, must_exist=False):
        """Validate ``path`` without changing anything: an existing pymm
        campaign database that can be written, or a new file that can be
        created.  Returns True if it exists."""
        if os.path.isdir(path):
            raise CampaignError(f"campaign database {path!r} is a directory")
        if not os.path.exists(path):
            if must_exist:
                raise CampaignError(f"no campaign database at {path!r} (run pymm campaign first)")
            d = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(d):
                raise CampaignError(f"cannot create campaign database {path!r}: directory {d!r} "
                                    "does not exist")
            if not os.access(d, os.W_OK | os.X_OK):
                raise CampaignError(f"cannot create campaign database {path!r}: directory {d!r} "
                                    "is not writable")
            return False
        if not os.access(path, os.R_OK):
            raise CampaignError(f"cannot read campaign database {path!r}: permission denied")
        conn = cls._connect_ro(path)
        try:
            cls._validate(conn, path, resume=not must_exist)
        finally:
            conn.close()
        return True

    @staticmethod
    def _connect_ro(path):
        try:
            from urllib.parse import quote
            return sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True)
        except sqlite3.Error as e:
            raise CampaignError(f"cannot open campaign database {path!r}: {e}") from None

    @staticmethod
    def _validate(conn, path, resume=False):
        try:
            conn.execute("PRAGMA schema_version").fetchone()
            rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            conn.execute("SELECT id, scenario, variant, mode, seed FROM runs LIMIT 1").fetchall()
            conn.execute("SELECT id, signature, minimized_replay FROM crashes LIMIT 1").fetchall()
            conn.execute("SELECT crash_id, run_id FROM hits LIMIT 1").fetchall()
            ok = conn.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError as e:
            raise CampaignError(f"{path!r} is not a pymm campaign database (or it is corrupt): "
                                f"{e}") from None
        if rows.get("format") != FORMAT:
            raise CampaignError(f"{path!r} is not a pymm campaign database")
        if rows.get("version") != VERSION:
            raise CampaignError(f"campaign database {path!r} has format version "
                                f"{rows.get('version')!r}; this pymm reads version {VERSION}")
        if not ok or ok[0] != "ok":
            raise CampaignError(f"campaign database {path!r} is corrupt: {ok[0] if ok else '?'}")
        rule = rows.get("signature", "1")
        if resume and rule != SIGNATURE_RULE:
            raise CampaignError(f"campaign database {path!r} dedups crashes by signature rule "
                                f"{rule}; this pymm signs them by rule {SIGNATURE_RULE}, so "
                                "resuming would list known crashes again: use a new --db")

    @classmethod
    def open(cls, path, readonly=False):
        """Open a database ``check`` accepted (created if missing, unless
        ``readonly``)."""
        exists = cls.check(path, must_exist=readonly)
        if readonly:
            return cls(cls._connect_ro(path), path)
        if exists and not os.access(path, os.W_OK):
            raise CampaignError(f"cannot write campaign database {path!r}: permission denied")
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=60)
            if not exists:
                conn.executescript("BEGIN;" + SCHEMA +
                                   f"INSERT INTO meta VALUES ('format', '{FORMAT}'), "
                                   f"('version', '{VERSION}'), ('signature', '{SIGNATURE_RULE}'); "
                                   "COMMIT;")
        except sqlite3.Error as e:
            raise CampaignError(f"cannot open campaign database {path!r}: {e}") from None
        return cls(conn, path)

    def close(self):
        self.conn.close()

    @contextlib.contextmanager
    def _tx(self):
        with interrupt.sigint_deferred():
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def finished(self):
        return {(s, v, m, seed) for s, v, m, seed in
                self.conn.execute("SELECT scenario, variant, mode, seed FROM runs")}

    def record_run(self, res, budget):
        """Store one finished run and its crashes; returns the crashes whose
        (new or earlier) first occurrence needs minimising: [(id, token, sig)]."""
        ref, variant, mode, seed = res["item"]
        key = (seed, ref, variant, mode)
        now = _now()
        todo = []
        with self._tx() as c:
            if c.execute("SELECT 1 FROM runs WHERE scenario=? AND variant=? AND mode=? AND seed=?",
                         (ref, variant, mode, seed)).fetchone():
                return todo
            summary = []
            crash_ids = []
            for f in res["findings"]:
                row = c.execute("SELECT id, first_seed, first_scenario, first_variant, first_mode "
                                "FROM crashes WHERE signature=?", (f["signature"],)).fetchone()
                if row is None:
                    cur = c.execute(
                        "INSERT INTO crashes (signature, kind, title, frames, first_seen, last_seen,"
                        " first_scenario, first_variant, first_mode, first_seed, report, replay,"
                        " preemptions) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (f["signature"], f["kind"], f["title"], json.dumps(f["frames"]), now, now,
                         ref, variant, mode, seed, f["text"], f["replay"], f["preemptions"]))
                    cid = cur.lastrowid
                    if f["replay"]:
                        todo.append((cid, f["replay"], f["signature"]))
                else:
                    cid = row[0]
                    c.execute("UPDATE crashes SET last_seen=? WHERE id=?", (now, cid))
                    if key < (row[1], row[2], row[3], row[4]):
                        # an earlier item found it too: it becomes the first occurrence
                        c.execute("UPDATE crashes SET first_scenario=?, first_variant=?, "
                                  "first_mode=?, first_seed=?, report=?, replay=?, preemptions=?, "
                                  "title=?, frames=?, minimized_replay=NULL, "
                                  "minimized_preemptions=NULL, minimized_steps=NULL, steps=NULL, "
                                  "minimize_note=NULL WHERE id=?",
                                  (ref, variant, mode, seed, f["text"], f["replay"],
                                   f["preemptions"], f["title"], json.dumps(f["frames"]), cid))
                        if f["replay"]:
                            todo.append((cid, f["replay"], f["signature"]))
                if cid not in crash_ids:
                    crash_ids.append(cid)
                summary.append({"crash_id": cid, "kind": f["kind"], "title": f["title"],
                                "replay": f["replay"]})
            cur = c.execute(
                "INSERT INTO runs (scenario, variant, mode, seed, verdict, expected, ok, duration,"
                " schedules, ops, budget, findings, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (ref, variant, mode, seed, res["verdict"], res["expected"], int(res["ok"]),
                 res["seconds"], res["schedules"], res["ops"], json.dumps(budget),
                 json.dumps(summary), now))
            for cid in crash_ids:
                c.execute("INSERT INTO hits VALUES (?, ?)", (cid, cur.lastrowid))
        return todo

    def record_minimized(self, cid, m):
        """Store a minimisation result if the crash's replay is still the one
        that was minimised (an earlier occurrence may have replaced it)."""
        with self._tx() as c:
            row = c.execute("SELECT replay FROM crashes WHERE id=?", (cid,)).fetchone()
            if row is None or row[0] != m["token"]:
                return False
            if m["replay"] is None:
                c.execute("UPDATE crashes SET minimize_note=? WHERE id=?", (m["note"], cid))
            else:
                c.execute("UPDATE crashes SET minimized_replay=?, minimized_preemptions=?, "
                          "preemptions=?, minimized_steps=?, steps=?, minimize_note=NULL "
                          "WHERE id=?", (m["replay"], m["minimized_preemptions"],
                                         m["preemptions"], m["minimized_steps"], m["steps"], cid))
        return True

    def pending_minimizations(self):
        return [(cid, tok, sig) for cid, tok, sig in self.conn.execute(
            "SELECT id, replay, signature FROM crashes WHERE replay IS NOT NULL AND "
            "minimized_replay IS NULL AND minimize_note IS NULL ORDER BY id")]

    def crashes(self):
        """Every unique crash as the dict ``pymm crashes --json`` prints."""
        out = []
        for row in self.conn.execute(
                "SELECT id, kind, title, first_seen, last_seen, replay, minimized_replay, "
                "preemptions, minimized_preemptions, first_scenario, first_variant, first_mode, "
                "first_seed, signature, minimized_steps, steps, minimize_note "
                "FROM crashes ORDER BY id"):
            cid = row[0]
            hits = self.conn.execute(
                "SELECT r.scenario, r.variant, r.mode, r.seed FROM hits h JOIN runs r "
                "ON r.id = h.run_id WHERE h.crash_id=? ORDER BY r.seed", (cid,)).fetchall()
            out.append({
                "id": cid, "kind": row[1], "title": row[2], "count": len(hits),
                "first_seen": row[3], "last_seen": row[4],
                "scenarios": sorted({h[0] for h in hits}),
                "replay": row[5], "minimized_replay": row[6],
                "preemptions": row[7], "minimized_preemptions": row[8],
                "variants": sorted({f"{h[0]}/{h[1]}" for h in hits}),
                "modes": sorted({h[2] for h in hits}),
                "seeds": sorted({h[3] for h in hits}),
                "first": {"scenario": row[9], "variant": row[10], "mode": row[11], "seed": row[12]},
                "signature": row[13], "steps": row[15], "minimized_steps": row[14],
                "minimize_note": row[16]})
        return out

    def crash(self, cid):
        for c in self.crashes():
            if c["id"] == cid:
                c["report"] = self.conn.execute("SELECT report FROM crashes WHERE id=?",
                                                (cid,)).fetchone()[0]
                return c
        return None

    def runs(self):
        cols = ("scenario", "variant", "mode", "seed", "verdict", "expected", "ok", "duration",
                "schedules", "ops", "findings")
        return [dict(zip(cols, r)) for r in self.conn.execute(
            f"SELECT {', '.join(cols)} FROM runs ORDER BY seed, scenario, variant, mode")]


def minimized_line(c):
    """"minimised: N preemptions (from M)" for a crash dict, or why not."""
    if c.get("minimized_replay"):
        return f"minimised: {c['minimized_preemptions']} preemptions (from {c['preemptions']})"
    if c.get("minimize_note"):
        return f"not minimised: {c['minimize_note']}"
    if c.get("replay"):
        return "not minimised yet"
    return "no replay (free mode)"


# -- the plan ----------------------------------------------------------------------------------

def parse_seeds(text):
    """``A:B`` -> range(A, B) (B excluded, like a Python slice); ``N`` -> [N]."""
    m = re.fullmatch(r"\s*(-?\d+)\s*(?::\s*(-?\d+)\s*)?", text or "")
    if not m:
        raise CampaignError(f"--seeds expects A:B (seeds A to B-1) or N, got {text!r}")
    a = int(m.group(1))
    b = int(m.group(2)) if m.group(2) is not None else a + 1
    if b <= a:
        raise CampaignError(f"--seeds {text!r} is empty: B must be greater than A")
    return range(a, b)


def plan(scenario_refs, variants, modes, seeds):
    """The items, seed-major (every scenario/variant/mode of seed A, then A+1,
    ...): a campaign cut short has covered every variant evenly."""
    from . import stress
    from .scenarios import ScenarioError
    refs = [_absolute(r) for r in scenario_refs] if scenario_refs else \
        [n for n in stress.all_scenarios() if n != "mix"]
    combos = []
    try:
        classes = [(r, stress.get_scenario(r)) for r in refs]
    except ScenarioError as e:
        raise CampaignError(str(e)) from None
    if variants:
        for v in variants:
            if not any(v in cls.variants() for _, cls in classes):
                raise CampaignError(f"unknown variant {v!r} for scenario(s) "
                                    f"{', '.join(r for r, _ in classes)}")
    for r, cls in classes:
        for v in cls.variants():
            if variants and v not in variants:
                continue
            for m in modes:
                combos.append((r, v, m))
    return [(r, v, m, s) for s in seeds for (r, v, m) in combos]


def _absolute(ref):
    """A file reference with an absolute path: workers (and Ray nodes) do not
    share the command's working directory."""
    where, sep, cls = ref.rpartition(":")
    if sep and (where.endswith(".py") or "/" in where or os.sep in where):
        return f"{os.path.abspath(where)}:{cls}"
    return ref


# -- progress ------------------------------------------------------------------------------------

class Progress:
    """One status line on a terminal: done/total, rate, unique crashes, ETA.
    Silent when the stream is not a terminal."""

    def __init__(self, stream, total, enabled=None):
        self.stream, self.total = stream, total
        self.enabled = _isatty(stream) if enabled is None else enabled
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.width = 0

    def update(self, done, crashes, force=False):
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self.last < 0.2:
            return
        self.last = now
        el = now - self.t0
        rate = done / el if el > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else None
        line = (f"[{done}/{self.total}] {rate:.1f} items/s, {crashes} unique crash"
                f"{'' if crashes == 1 else 'es'}, ETA {_hms(eta)}")
        pad = max(0, self.width - len(line))
        self.width = len(line)
        with contextlib.suppress(OSError, ValueError):
            self.stream.write("\r" + line + " " * pad)
            self.stream.flush()

    def close(self):
        if self.enabled and self.width:
            with contextlib.suppress(OSError, ValueError):
                self.stream.write("\r" + " " * self.width + "\r")
                self.stream.flush()


def _hms(s):
    if s is None:
        return "?"
    s = int(s + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# -- the campaign ---------------------------------------------------------------------------------

class Outcome:
    """What ``run`` returns."""

    def __init__(self, total, skipped):
        self.total, self.skipped = total, skipped
        self.ran = 0
        self.unexpected = []        # runs of expected-clean variants that crashed
        self.missed = []            # runs of buggy variants that caught nothing in the budget
        self.new_crashes = set()
        self.interrupted = False
        self.seconds = 0.0
        self.minimized = 0
        # for the benchmark: the wall clock (time.time) when the executor was
        # asked for and when everything was done, the workers' account of
        # each item they ran, and this process's CPU seconds meanwhile
        self.started = self.finished = None
        self.worker_items = []
        self.parent_cpu = 0.0


def run(items, db_path=DEFAULT_DB, schedules=None, seconds=None, jobs=None, ray_address=None,
        minimize_crashes=True, progress=None, threads=1, executor=None):
    """Run the campaign: every item not yet in the database, then (or as
    they are found) the minimisation of new controlled crashes.  ``progress``:
    None (a progress line on a terminal), False (none) or a ``Progress``.  Returns an
    ``Outcome``; the database has everything that finished, also after
    Ctrl-C (``outcome.interrupted``)."""
    from . import stress
    schedules = schedules or stress.DEFAULT_SCHEDULES
    seconds = seconds or stress.DEFAULT_SECONDS
    budget = {"schedules": schedules, "seconds": seconds, "threads": threads}
    exists = CrashDB.check(db_path)     # before anything starts: nothing is created on bad input
    done, pending = set(), []
    if exists:
        ro = CrashDB.open(db_path, readonly=True)
        try:
            done = ro.finished()
            pending = ro.pending_minimizations() if minimize_crashes else []
        finally:
            ro.close()
    todo = [it for it in items if it not in done]
    out = Outcome(len(items), len(items) - len(todo))
    out.started, cpu0 = time.time(), time.process_time()
    try:
        ex = executor or (make_executor(jobs, ray_address) if todo or pending or ray_address
                          else None)
    except KeyboardInterrupt:
        out.interrupted = True
        return out
    db = None
    try:
        db = CrashDB.open(db_path)
        prog = progress if isinstance(progress, Progress) else \
            Progress(sys.stderr, len(todo), enabled=False if progress is False else None)
        known = {c["id"] for c in db.crashes()}
        t0 = time.perf_counter()
        inflight = {}                   # future -> ("item", item) | ("min", crash id)
        queue = list(reversed(todo))
        minq = list(pending)
        limit = max(2, 2 * getattr(ex, "jobs", 1))
        try:
            while queue or minq or inflight:
                while minq:         # few (one per new crash), and they come first
                    cid, tok, sig = minq.pop(0)
                    inflight[ex.submit(minimize, tok, sig)] = ("min", cid)
                while queue and len(inflight) < limit:
                    it = queue.pop()
                    inflight[ex.submit(run_item, it, schedules, seconds, threads)] = ("item", it)
                ready, _ = cf.wait(list(inflight), timeout=0.25, return_when=cf.FIRST_COMPLETED)
                for fut in ready:
                    what, arg = inflight.pop(fut)
                    try:
                        res = fut.result()
                    except Exception as e:  # noqa: BLE001 - a worker died: say which item
                        task = f"item {' '.join(map(str, arg))}" if what == "item" else \
                            f"minimising crash #{arg}"
                        hint = ""
                        if isinstance(e, cf.process.BrokenProcessPool):
                            hint = (" (a worker died; a script that calls pymm.campaign.run "
                                    "must guard its top level with "
                                    "`if __name__ == \"__main__\":`: each local worker imports "
                                    "the main module)")
                        raise CampaignError(f"{task} failed in the worker: {type(e).__name__}: "
                                            f"{e}{hint}") from None
                    # a Ctrl-C now waits until the run is both committed and
                    # counted (the summary says exactly what the database has)
                    with interrupt.sigint_deferred():
                        if what == "item":
                            todo_min = db.record_run(res, budget)
                            out.ran += 1
                            if res.get("worker"):
                                out.worker_items.append(res["worker"])
                            if not res["ok"] and res["expected"] == "clean":
                                out.unexpected.append(res)
                            elif not res["ok"]:
                                out.missed.append(res)
                            if minimize_crashes:
                                minq.extend(todo_min)
                        elif db.record_minimized(arg, res) and res["replay"]:
                            out.minimized += 1
                ncrash = db.conn.execute("SELECT COUNT(*) FROM crashes").fetchone()[0]
                prog.update(out.ran, ncrash)
        except KeyboardInterrupt:
            out.interrupted = True
        out.new_crashes = {c["id"] for c in db.crashes()} - known
        out.seconds = time.perf_counter() - t0
        prog.close()
        return out
    finally:
        if ex is not None:
            ex.shutdown(abandon=True)
        if db is not None:
            db.close()
        out.finished, out.parent_cpu = time.time(), time.process_time() - cpu0


def format_crashes(crashes):
    from .bench import format_table
    rows = [{"id": c["id"], "kind": c["kind"], "title": c["title"], "count": c["count"],
             "scenarios": ", ".join(c["variants"]),
             "minimised": minimized_line(c).replace("minimised: ", "")} for c in crashes]
    return format_table(rows) if rows else "  (no crashes)"


def format_crash(c):
    lines = [f"crash #{c['id']}: {c['kind']}: {c['title']}",
             f"signature: {c['signature']}",
             f"seen in {c['count']} run(s), first {c['first_seen']}, last {c['last_seen']}",
             f"scenarios: {', '.join(c['variants'])}",
             f"first occurrence: {c['first']['scenario']} {c['first']['variant']} "
             f"{c['first']['mode']} seed {c['first']['seed']}",
             minimized_line(c), "", c["report"].rstrip(), ""]
    if c["replay"]:
        lines.append(f"replay ({c['preemptions']} preemptions): pymm replay {c['replay']}")
    if c["minimized_replay"]:
        lines.append(f"minimised replay ({c['minimized_preemptions']} preemptions): "
                     f"pymm replay {c['minimized_replay']}")
    if not c["replay"]:
        lines.append("no replay: found in free mode (real concurrency is not replayable)")
    return "\n".join(lines)


def write_json_atomic(path, doc):
    """``-`` is stdout; a file is written to a temporary and renamed."""
    interrupt.write_json(path, doc)
