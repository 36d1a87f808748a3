"""The command lines of ``pymm campaign`` and ``pymm crashes`` (the work is
in ``pymm.campaign``; ``pymm.cli`` only wires these in)."""
import argparse
import functools
import os
import sys

from . import campaign as C, interrupt


def add_parsers(sub, positive_int, positive_float):
    c = sub.add_parser("campaign", help="many seeds on every core (or a Ray cluster) into a "
                       "crash database",
                       description="Run (scenario, variant, mode, seed) items on local worker "
                       "processes or a Ray cluster; record every run and every unique crash "
                       "(deduplicated by signature) in a SQLite database; minimise the "
                       "schedules of controlled-mode crashes. Re-running with the same --db "
                       "resumes. Exit status: 0 done, 1 a fixed (expected clean) variant "
                       "crashed, 2 bad input, 130 interrupted (everything finished is kept).")
    c.add_argument("--scenario", action="append", metavar="S",
                   help="scenario name, path/to/file.py:ClassName or package.module:ClassName "
                   "(repeatable; default: every scenario but mix)")
    c.add_argument("--variant", action="append", metavar="V", help="only this variant (repeatable)")
    c.add_argument("--mode", choices=("controlled", "free", "both"), default="controlled",
                   help="default controlled (replayable, minimisable)")
    c.add_argument("--seeds", required=True, metavar="A:B", help="seeds A to B-1 (B excluded)")
    c.add_argument("--schedules", type=positive_int, default=None,
                   help="controlled mode: schedule budget per item (default 200)")
    c.add_argument("--seconds", type=positive_float, default=None,
                   help="free mode: seconds per item (default 2)")
    c.add_argument("--jobs", type=positive_int, default=None,
                   help=f"local worker processes (default: the number of cores, {os.cpu_count()})")
    c.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run on a Ray cluster (ADDRESS host:port, ray://host:port, or auto); "
                   "needs pip install 'pymm-locksim[ray]'")
    c.add_argument("--db", metavar="PATH", default=C.DEFAULT_DB,
                   help=f"the crash database (default {C.DEFAULT_DB})")
    c.add_argument("--no-minimize", action="store_true",
                   help="do not minimise the schedules of new crashes")
    c.add_argument("--json", metavar="PATH", help="write the summary and crashes as JSON (- for stdout)")

    k = sub.add_parser("crashes", help="the unique crashes of a campaign database",
                       description="List the unique crashes of a campaign database, or show one "
                       "(pymm crashes show ID): its report and both replay commands.")
    k.add_argument("--db", metavar="PATH", default=C.DEFAULT_DB)
    k.add_argument("--json", metavar="PATH", help="write the list as JSON (- for stdout)")
    ks = k.add_subparsers(dest="crashes_cmd", parser_class=sub._parser_class)
    show = ks.add_parser("show", help="one crash: its report and both replay commands")
    show.add_argument("id", type=positive_int, metavar="ID")
    show.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS)


def _check_json_path(path, CliError):
    try:
        interrupt.check_writable(path, "JSON file")
    except ValueError as e:
        raise CliError(str(e)) from None


def cmd_campaign(args, CliError):
    try:
        seeds = C.parse_seeds(args.seeds)
        modes = C.MODES if args.mode == "both" else (args.mode,)
        items = C.plan(args.scenario, args.variant, modes, seeds)
        _check_json_path(args.json, CliError)
        if args.ray is not None and args.jobs is not None:
            raise CliError("--jobs is for local workers; with --ray the cluster's CPUs decide")
        out = C.run(items, db_path=args.db, schedules=args.schedules, seconds=args.seconds,
                    jobs=args.jobs, ray_address=args.ray, minimize_crashes=not args.no_minimize,
                    progress=False if getattr(args, "quiet", False) else None)
        db = C.CrashDB.open(args.db, readonly=True)
        try:
            crashes = db.crashes()
        finally:
            db.close()
    except C.CampaignError as e:
        raise CliError(str(e))
    # with --json - the JSON owns stdout: the summary goes to stderr
    say = functools.partial(print, file=sys.stderr if args.json == "-" else sys.stdout)
    where = f"ray cluster {args.ray}" if args.ray else f"{args.jobs or os.cpu_count()} local jobs"
    rate = f"{out.ran / out.seconds:.2f} items/s, " if out.ran and out.seconds > 0 else ""
    mins = f", {out.minimized} crash(es) minimised" if out.minimized else ""
    say(f"campaign: {out.total} items, {out.skipped} already in {args.db}, {out.ran} run in "
        f"{out.seconds:.1f} s ({rate}{where}){mins}")
    say(f"unique crashes: {len(crashes)} ({len(out.new_crashes)} new)")
    if crashes:
        say(C.format_crashes(crashes))
    for c in crashes:
        if c["id"] in out.new_crashes:
            say(f"\nnew crash #{c['id']}: {c['kind']}: {c['title']}\n  {C.minimized_line(c)}")
            tok = c["minimized_replay"] or c["replay"]
            if tok:
                say(f"  replay: pymm replay {tok}")
    if out.missed:
        by = {}
        for r in out.missed:
            s, v, m, seed = r["item"]
            by.setdefault(f"{s}/{v} ({m})", []).append(str(seed))
        say(f"missed: {len(out.missed)} run(s) of buggy variants caught nothing within the budget: "
            + "; ".join(f"{k} seed(s) {', '.join(v)}" for k, v in by.items()))
    for r in out.unexpected:
        s, v, m, seed = r["item"]
        say(f"UNEXPECTED: {s} {v} ({m}, seed {seed}) is expected clean and crashed: "
            + "; ".join(f["title"] for f in r["findings"]))
    if out.interrupted:
        say(f"interrupted after {out.ran}/{out.total - out.skipped} items "
            f"(everything finished is in {args.db}; run the same command again to resume)")
    if args.json:
        C.write_json_atomic(args.json, {
            "version": 1, "db": args.db, "items": out.total, "skipped": out.skipped,
            "ran": out.ran, "seconds": round(out.seconds, 3), "interrupted": out.interrupted,
            "unexpected": [{"item": r["item"], "verdict": r["verdict"]} for r in out.unexpected],
            "missed": [{"item": r["item"], "verdict": r["verdict"]} for r in out.missed],
            "crashes": [_public(c) for c in crashes]})
    if out.interrupted:
        return interrupt.EXIT_INTERRUPTED
    return interrupt.EXIT_FAILED if out.unexpected else interrupt.EXIT_OK


_KEYS = ("id", "kind", "title", "count", "first_seen", "last_seen", "scenarios", "replay",
         "minimized_replay", "preemptions", "minimized_preemptions")


def _public(c):
    """A crash in JSON: exactly the keys issue 14 pins, in its order (the
    signature, variants, seeds and first occurrence are in ``pymm crashes
    show ID``)."""
    return {k: c[k] for k in _KEYS}


def cmd_crashes(args, CliError):
    _check_json_path(args.json, CliError)
    try:
        db = C.CrashDB.open(args.db, readonly=True)
    except C.CampaignError as e:
        raise CliError(str(e))
    try:
        if args.crashes_cmd == "show":
            c = db.crash(args.id)
            if c is None:
                raise CliError(f"no crash #{args.id} in {args.db}")
            print(C.format_crash(c))
            return 0
        crashes = db.crashes()
    finally:
        db.close()
    if args.json:
        C.write_json_atomic(args.json, {"crashes": [_public(c) for c in crashes]})
        if args.json == "-":
            return 0
    print(C.format_crashes(crashes))
    return 0


