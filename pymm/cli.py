"""The ``pymm`` command.

    pymm stress          every scenario x variant x mode; exit 0 iff all verdicts hold
    pymm replay TOKEN    re-run a controlled finding exactly (TOKEN or a report file)
    pymm experiment populate|mbind   locking designs side by side
    pymm lockdep-graph   the observed lock dependency graph as DOT
    pymm bench           the benchmarks
    pymm campaign        many seeds on every core (or a Ray cluster) into a crash database
    pymm crashes         the unique crashes of a campaign database (crashes show ID: one)

Bad input gets one line naming the problem on stderr and exit status 2.
"""
import argparse
import json
import os
import re
import sys
import time

from loguru import logger


class CliError(Exception):
    """A user mistake: printed as one line, exit status 2."""


def _positive_int(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _positive_float(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {s!r}")
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {s!r}")
    return v


def _int(s):
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}")


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, not argparse's usage dump
        print(f"pymm: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser():
    p = _Parser(prog="pymm", description="Linux mm locking emulator: stress, replay, experiment, bench")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log pymm's internals (-vv: debug)")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    s = sub.add_parser("stress", help="run the stress scenarios (the main job)")
    s.add_argument("--scenario", action="append", help="only this scenario (repeatable; default: all); "
                   "also path/to/file.py:ClassName or package.module:ClassName")
    s.add_argument("--variant", action="append", help="only this variant (repeatable)")
    s.add_argument("--mode", choices=("controlled", "free"), action="append",
                   help="only this mode (default: both)")
    s.add_argument("--schedules", type=_positive_int, default=None,
                   help="controlled mode: schedule budget per run (default 200)")
    s.add_argument("--seconds", type=_positive_float, default=None,
                   help="free mode: time budget per run in seconds (default 2)")
    s.add_argument("--seed", type=_int, default=0)
    s.add_argument("--threads", type=_positive_int, default=1, help="threads per role")
    s.add_argument("--json", metavar="PATH", help="write the results as JSON")
    s.add_argument("--report-dir", metavar="DIR", help="write each finding's full report to DIR")
    s.add_argument("--lockstat", action="store_true", help="collect and print lock_stat (free mode)")
    s.add_argument("--quiet", action="store_true", help="no progress lines")

    r = sub.add_parser("replay", help="re-run a controlled finding exactly")
    r.add_argument("token", metavar="TOKEN_OR_FILE")

    from .experiment import EXPERIMENTS
    e = sub.add_parser("experiment", help="compare locking designs under one workload")
    e.add_argument("name", choices=tuple(EXPERIMENTS), nargs="?",
                   help="a built-in experiment (or give --scenario)")
    e.add_argument("--scenario", metavar="S", help="any scenario's variants side by side, free "
                   "mode, wall clock (a name, path/to/file.py:ClassName or package.module:ClassName)")
    e.add_argument("--variants", metavar="V1,V2,...", help="designs to compare (default: all)")
    e.add_argument("--clock", choices=("virtual", "wall"), default="virtual",
                   help="virtual: kernel-calibrated virtual time, deterministic (default); "
                        "wall: free mode and wall-clock time (measures Python)")
    e.add_argument("--cpus", type=_positive_int, help="simulated CPUs (default: one per thread)")
    e.add_argument("--seeds", type=_positive_int, default=1,
                   help="runs per design (mean and 95%% CI per figure)")
    e.add_argument("--seed", type=_int, default=0, help="the first seed")
    e.add_argument("--duration-ms", type=_positive_float, metavar="T",
                   help="per run: virtual ms (default 5) or, with --clock wall, wall ms (default 3000)")
    e.add_argument("--seconds", type=_positive_float, help=argparse.SUPPRESS)   # older spelling: wall seconds
    e.add_argument("--cost-model", metavar="FILE", help="JSON {name: ns} overriding the default costs")
    e.add_argument("--json", metavar="PATH")
    e.add_argument("--trace", metavar="PATH", help="Chrome trace-event JSON of the first seed (Perfetto)")
    e.add_argument("--plot", metavar="FILE.png", help="latency CDFs (needs matplotlib)")

    g = sub.add_parser("lockdep-graph", help="export the observed lock dependency graph (DOT)")
    g.add_argument("--scenario", action="append", help="scenarios to run first (default: all, fixed variants)")
    g.add_argument("--seconds", type=_positive_float, default=0.5, help="free-mode seconds per scenario")
    g.add_argument("-o", "--output", metavar="FILE.dot", help="write here instead of stdout")

    from . import campaign_cli
    campaign_cli.add_parsers(sub, _positive_int, _positive_float)

    b = sub.add_parser("bench", help="run the benchmarks and print tables")
    b.add_argument("--section", action="append", help="run only this section (repeatable)")
    b.add_argument("--quick", action="store_true", help="smaller iteration counts")
    b.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    return p


# -- stress ------------------------------------------------------------------------------

def _plan(args):
    from . import stress
    from .scenarios import ScenarioError
    names = stress.all_scenarios()
    chosen = args.scenario or names
    for n in chosen:
        try:
            stress.get_scenario(n)
        except ScenarioError as e:
            raise CliError(str(e))
    plan = []
    for n in chosen:
        vs = stress.get_scenario(n).variants()
        if args.variant:
            bad = [v for v in args.variant if not any(v in stress.get_scenario(m).variants() for m in chosen)]
            if bad:
                raise CliError(f"unknown variant {bad[0]!r} for scenario(s) {', '.join(chosen)}")
            vs = [v for v in vs if v in args.variant]
        for v in vs:
            for m in args.mode or ("controlled", "free"):
                plan.append((n, v, m))
    return plan


def _open_for_write(path, what):
    try:
        d = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(d):
            raise CliError(f"cannot write {what} {path!r}: directory {d!r} does not exist")
        return open(path, "w")
    except OSError as e:
        raise CliError(f"cannot write {what} {path!r}: {e.strerror}")


def cmd_stress(args):
    from . import stress
    plan = _plan(args)
    if args.report_dir:
        try:
            os.makedirs(args.report_dir, exist_ok=True)
        except OSError as e:
            raise CliError(f"cannot create report directory {args.report_dir!r}: {e.strerror}")
    jf = _open_for_write(args.json, "JSON file") if args.json else None
    schedules = args.schedules or stress.DEFAULT_SCHEDULES
    seconds = args.seconds or stress.DEFAULT_SECONDS
    results = []
    t0 = time.perf_counter()
    for i, (n, v, m) in enumerate(plan, 1):
        if not args.quiet:
            print(f"[{i:>2}/{len(plan)}] {n} {v} {m} ...", end="", file=sys.stderr, flush=True)
        if m == "controlled":
            r = stress.run_controlled(n, v, args.seed, schedules, args.threads)
        else:
            r = stress.run_free(n, v, args.seed, seconds, args.threads, lockstat=args.lockstat)
        results.append(r)
        if not args.quiet:
            kinds = ",".join(f"{k}x{c}" for k, c in r.kinds().items()) or "-"
            print(f" {r.verdict} [{kinds}] {r.seconds:.2f}s", file=sys.stderr, flush=True)
    ok = all(r.ok for r in results)
    print(_summary(results))
    print(f"\n{sum(r.ok for r in results)}/{len(results)} runs as expected in "
          f"{time.perf_counter() - t0:.1f} s: {'OK' if ok else 'FAILED'}")
    if args.lockstat:
        for r in results:
            if r.lockstat:
                print(f"\n== lock_stat: {r.scenario} {r.variant} free\n{r.lockstat}")
    if args.report_dir:
        _write_reports(args.report_dir, results)
    if jf:
        with jf:
            json.dump({"version": 1, "ok": ok, "runs": [r.to_dict() for r in results]}, jf, indent=1)
    return 0 if ok else 1


def _summary(results):
    from .bench import format_table
    rows = [{"scenario": r.scenario, "variant": r.variant, "mode": r.mode,
             "ops/schedules": f"{r.schedules} sched" if r.mode == "controlled" else f"{r.ops} ops",
             "findings": ", ".join(f"{k} x{c}" for k, c in r.kinds().items()) or "-",
             "expected": r.expected, "verdict": r.verdict} for r in results]
    return format_table(rows)


def _write_reports(d, results):
    for r in results:
        for j, f in enumerate(r.findings):
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{r.scenario}-{r.variant}-{r.mode}-{j}-{f['kind']}.txt")
            with open(os.path.join(d, name), "w") as fh:
                fh.write(f"scenario: {r.scenario}\nvariant: {r.variant}\nmode: {r.mode}\n"
                         f"seed: {r.seed}\nkind: {f['kind']}\ntitle: {f['title']}\n")
                if f.get("replay"):
                    fh.write(f"replay: {f['replay']}\n")
                fh.write("\n" + f["text"] + "\n")


# -- replay ------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"pymm:v1:\S+")


def cmd_replay(args):
    from . import stress
    arg = args.token
    token = arg
    if not arg.startswith("pymm:v1:"):
        if not os.path.exists(arg):
            raise CliError(f"{arg!r} is neither a pymm replay token (pymm:v1:...) nor a file")
        try:
            with open(arg) as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as e:
            raise CliError(f"cannot read replay file {arg!r}: {getattr(e, 'strerror', None) or e}")
        m = _TOKEN_RE.search(text)
        if not m:
            raise CliError(f"no pymm replay token (pymm:v1:...) in {arg!r}")
        token = m.group(0).rstrip('",')
    try:
        failure = stress.replay(token)
    except (ValueError, KeyError) as e:
        raise CliError(e.args[0] if e.args else str(e))
    if failure is None:
        print("replay ran clean: the finding did not reproduce")
        return 1
    print(failure.message)
    return 0


# -- lockdep-graph ---------------------------------------------------------------------------

def cmd_lockdep_graph(args):
    from . import stress
    from .locking import lockdep
    from .mm.rmap import LOCK_ORDER_EXCEPTIONS, lock_order_pairs
    names = [n for n in stress.all_scenarios() if n != "mix"]
    chosen = args.scenario or names
    for n in chosen:
        if n not in names:
            raise CliError(f"unknown scenario {n!r}; expected one of {', '.join(names)}")
    out_file = _open_for_write(args.output, "DOT file") if args.output else None
    deps = set()
    for n in chosen:
        cls = stress.get_scenario(n)
        fixed = [v for v in cls.variants() if cls.expected(v) == "clean"][-1]
        stress.run_free(n, fixed, 0, args.seconds)
        deps.update((a, b, frozenset(t)) for a, b, t in lockdep.dependencies())
    documented = lock_order_pairs()
    out = ["digraph lockdep {", '  rankdir=LR; node [shape=box, fontname="monospace"];']
    for a, b, types in sorted(deps, key=lambda d: (d[0], d[1])):
        base_a, base_b = a.split("/")[0], b.split("/")[0]
        bad = (base_b, base_a) in documented and (a, b) not in LOCK_ORDER_EXCEPTIONS
        attrs = [f'label="{",".join(sorted(types))}"']
        if bad:
            attrs += ['color=red', 'penwidth=2', 'tooltip="contradicts the order documented in mm/rmap.py"']
        out.append(f'  "{a}" -> "{b}" [{", ".join(attrs)}];')
    out.append("}")
    text = "\n".join(out) + "\n"
    if out_file is not None:
        with out_file:
            out_file.write(text)
    else:
        sys.stdout.write(text)
    return 0


# -- experiment / bench ----------------------------------------------------------------------

def cmd_experiment(args):
    from . import experiment
    if (args.name is None) == (args.scenario is None):
        raise CliError("give an experiment (" + ", ".join(experiment.EXPERIMENTS)
                       + ") or --scenario S, not both")
    if args.scenario is not None:
        return _experiment_scenario(args)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CliError("--plot needs matplotlib: pip install 'pymm-locksim[plot]'")
    from .sched.cost_model import CostModel
    cls = experiment.EXPERIMENTS[args.name]
    variants = None
    if args.variants:
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        bad = [v for v in variants if v not in cls.variants]
        if bad or not variants:
            raise CliError(f"unknown variant {', '.join(map(repr, bad)) or repr(args.variants)} for "
                           f"experiment {args.name!r}; expected some of {', '.join(cls.variants)}")
    if args.clock == "wall" and args.trace:
        raise CliError("--trace needs --clock virtual (a wall-clock run has no simulated CPUs)")
    model = None
    if args.cost_model:
        if args.clock == "wall":
            raise CliError("--cost-model needs --clock virtual")
        try:
            model = CostModel.load(args.cost_model)
        except ValueError as err:
            raise CliError(str(err))
    duration = args.duration_ms
    if args.seconds is not None:
        duration = args.seconds * 1000
    jf = _open_for_write(args.json, "JSON file") if args.json else None
    tf = _open_for_write(args.trace, "trace file") if args.trace else None
    res = experiment.run(args.name, variants, cpus=args.cpus, seeds=args.seeds, seed=args.seed,
                         duration_ms=duration, clock=args.clock, cost_model=model,
                         trace=bool(args.trace))
    print(experiment.format_result(res))
    if jf:
        with jf:
            jf.write(experiment.dumps(res))
    if tf:
        with tf:
            json.dump(experiment.trace_document(res), tf)
        print(f"\ntrace written to {args.trace} (open it in https://ui.perfetto.dev)")
    if args.plot:
        experiment.plot(res, args.plot)
        print(f"\nlatency plot written to {args.plot}")
    return 0


def _experiment_scenario(args):
    from . import experiment, stress
    from .scenarios import ScenarioError
    if args.plot or args.trace or args.cost_model or args.clock != "virtual" or args.cpus:
        raise CliError("--scenario runs free mode on the wall clock: --plot, --trace, "
                       "--cost-model, --clock and --cpus are for the built-in experiments")
    try:
        stress.get_scenario(args.scenario)
    except ScenarioError as e:
        raise CliError(str(e))
    seconds = args.seconds or (args.duration_ms / 1000 if args.duration_ms else 3.0)
    jf = _open_for_write(args.json, "JSON file") if args.json else None
    res = experiment.run_scenario(args.scenario, seconds=seconds, seed=args.seed)
    print(experiment.format_scenario_result(res))
    if jf:
        with jf:
            json.dump({k: v for k, v in res.items() if k != "_raw"}, jf, indent=1)
    return 0


def cmd_bench(args):
    from . import bench
    from .benchmarks import SECTIONS
    for s in args.section or []:
        if s not in SECTIONS:
            raise CliError(f"unknown benchmark section {s!r}; expected one of {', '.join(SECTIONS)}")
    jf = _open_for_write(args.json, "JSON file") if args.json else None
    if jf:
        jf.close()
    bench.run(args.section, quick=args.quick, json_path=args.json)
    return 0


def cmd_campaign(args):
    from . import campaign_cli
    return campaign_cli.cmd_campaign(args, CliError)


def cmd_crashes(args):
    from . import campaign_cli
    return campaign_cli.cmd_crashes(args, CliError)


COMMANDS = {"stress": cmd_stress, "replay": cmd_replay, "experiment": cmd_experiment,
            "lockdep-graph": cmd_lockdep_graph, "bench": cmd_bench, "campaign": cmd_campaign,
            "crashes": cmd_crashes}


def main(argv=None):
    args = build_parser().parse_args(argv)
    logger.remove()
    if args.verbose:
        logger.enable("pymm")
        logger.add(sys.stderr, level="DEBUG" if args.verbose > 1 else "INFO")
    try:
        return COMMANDS[args.cmd](args)
    except CliError as e:
        print(f"pymm: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
