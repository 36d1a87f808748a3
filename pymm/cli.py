"""The ``pymm`` command.

    pymm stress          every scenario x variant x mode; exit 0 iff all verdicts hold
    pymm replay TOKEN    re-run a controlled finding exactly (TOKEN or a report file)
    pymm experiment populate|mbind   locking designs side by side
    pymm lockdep-graph   the observed lock dependency graph as DOT
    pymm bench           the benchmarks (--check: exit 1 when a target is missed)
    pymm campaign        many seeds on every core (or a Ray cluster) into a crash database
    pymm crashes         the unique crashes of a campaign database (crashes show ID: one)
    pymm list            scenarios, variant keys and values, finding kinds

Bad input gets one line naming the problem on stderr and exit status 2;
Ctrl-C summarises what was done and exits 130 (``pymm.interrupt``).
"""
import argparse
import json
import os
import re
import shlex
import sys
import time

from loguru import logger

from . import interrupt
from .interrupt import EXIT_CODES_HELP, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from .sched import DEFAULT_STRATEGY, STRATEGIES

EXIT_PIPE = 141          # 128 + SIGPIPE: the reader of our output went away (`| head`)


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
        sys.exit(EXIT_USAGE)


def _version():
    try:
        from importlib.metadata import version
        return version("pymm-locksim")
    except Exception:       # noqa: BLE001 - running from a source tree that was never installed
        return "unknown (not installed)"


def _common(p):
    """-v/-q after the subcommand too (``pymm stress -v``), as ruff and pytest take them."""
    p.add_argument("-v", "--verbose", dest="sub_verbose", action="count", default=0,
                   help="log pymm's internals, including every finding's full report (-vv: debug)")
    p.add_argument("-q", "--quiet", dest="sub_quiet", action="store_true",
                   help="no progress lines")
    return p


def build_parser():
    p = _Parser(prog="pymm", description="Linux mm locking emulator: stress, replay, experiment, "
                "lockdep-graph, bench, list.  Run 'pymm COMMAND --help' for a command's options.",
                epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"pymm {_version()}")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="log pymm's internals, including every finding's full report (-vv: debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)

    def add(name, help):
        return _common(sub.add_parser(name, help=help, description=help, epilog=EXIT_CODES_HELP,
                                      formatter_class=argparse.RawDescriptionHelpFormatter))

    s = add("stress", "run the stress scenarios (the main job)")
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
    s.add_argument("--strategy", choices=STRATEGIES, default=None,
                   help="controlled mode: how each schedule chooses who runs next "
                        f"(default {DEFAULT_STRATEGY})")
    s.add_argument("--threads", type=_positive_int, default=1, help="threads per role")
    s.add_argument("--json", metavar="PATH", help="write the results (full reports included) as "
                   "JSON; '-' for stdout (the table then goes to stderr)")
    s.add_argument("--report-dir", metavar="DIR", help="write each finding's full report to DIR")
    s.add_argument("--lockstat", action="store_true", help="collect and print lock_stat (free mode)")
    s.add_argument("--no-pymm-checks", action="store_true",
                   help="switch off pymm's own checks (the ones the kernel never had): "
                        "only what the kernel would see is reported")
    s.add_argument("--fail", action="append", metavar="SITE[:KNOB=VALUE,...]",
                   help="fault injection for the scenario's roles, e.g. page-alloc:probability=5,"
                        "times=10 or all:1 (percent); sites: page-alloc, pgtable-alloc, slab, "
                        "hugetlb-reserve, hugetlb-dequeue; knobs: probability, interval, times, "
                        "space, task_filter (repeatable)")

    r = add("replay", "re-run a controlled finding exactly and print its report")
    r.add_argument("token", metavar="TOKEN_OR_FILE")
    r.add_argument("--no-pymm-checks", action="store_true",
                   help="replay with pymm's own checks off (as the finding was made)")

    from .experiment import EXPERIMENTS
    e = add("experiment", "compare locking designs under one workload")
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
    e.add_argument("--json", metavar="PATH", help="write the figures as JSON; '-' for stdout")
    e.add_argument("--trace", metavar="PATH", help="Chrome trace-event JSON of the first seed (Perfetto)")
    e.add_argument("--plot", metavar="FILE.png", help="latency CDFs (needs matplotlib)")

    g = add("lockdep-graph", "export the observed lock dependency graph (DOT)")
    g.add_argument("--scenario", action="append", help="scenarios to run first (default: all)")
    g.add_argument("--variant", action="append", metavar="KEY=VALUE",
                   help="run with this variant (repeatable; default: every scenario's mainline fix)")
    g.add_argument("--seconds", type=_positive_float, default=0.5, help="free-mode seconds per scenario")
    g.add_argument("-o", "--output", metavar="FILE.dot", help="write here instead of stdout")
    g.add_argument("--check", action="store_true",
                   help="exit 1 if an observed edge contradicts the order documented in mm/rmap.py")
    g.add_argument("--reduce", action="store_true",
                   help="transitive reduction: drop A -> C when A -> B -> C was also seen")

    from . import campaign_cli
    campaign_cli.add_parsers(sub, _positive_int, _positive_float)
    for name in ("campaign", "crashes"):
        _common(sub.choices[name])

    b = add("bench", "run the benchmarks and print tables")
    b.add_argument("--section", action="append", help="run only this section (repeatable)")
    b.add_argument("--quick", action="store_true", help="smaller iteration counts")
    b.add_argument("--json", metavar="PATH", help="also write the figures as JSON; '-' for stdout")
    b.add_argument("--check", action="store_true", help="exit 1 when a target is not met")

    ls = add("list", "list scenarios, variant keys and values, and finding kinds")
    ls.add_argument("--json", metavar="PATH", help="write the listing as JSON; '-' for stdout")
    return p


def _human_out(args):
    """Where tables go: stdout, unless stdout is taken by ``--json -``."""
    return sys.stderr if getattr(args, "json", None) == "-" else sys.stdout


def _check_writable(path, what):
    try:
        interrupt.check_writable(path, what)
    except ValueError as e:
        raise CliError(str(e))


# -- stress ------------------------------------------------------------------------------

def _plan(args):
    from . import stress
    from .scenarios import ScenarioError
    names = stress.all_scenarios()
    chosen = args.scenario or stress.default_scenarios()
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


def _fail_config(specs):
    """--fail SPEC ... -> {site: knobs} (None when not given)."""
    if not specs:
        return None
    from .debug import fault_inject
    try:
        return fault_inject.merge(fault_inject.parse_spec(s) for s in specs)
    except ValueError as e:
        raise CliError(str(e))


def _with_pymm_checks(cmd):
    """Run ``cmd`` with pymm's own checks as ``--no-pymm-checks`` says, and
    put the default back afterwards (main() may be called again in-process)."""
    def run(args):
        from .debug import report as _r
        prev = _r.pymm_checks_default
        _r.set_pymm_checks_default(not getattr(args, "no_pymm_checks", False))
        try:
            return cmd(args)
        finally:
            _r.set_pymm_checks_default(prev)
    run.__name__ = cmd.__name__
    return run


@_with_pymm_checks
def cmd_stress(args):
    from . import stress
    plan = _plan(args)
    if args.report_dir:
        if os.path.exists(args.report_dir) and not os.path.isdir(args.report_dir):
            raise CliError(f"cannot create report directory {args.report_dir!r}: not a directory")
        parent = os.path.dirname(os.path.abspath(args.report_dir))
        if not os.path.isdir(parent):
            raise CliError(f"cannot create report directory {args.report_dir!r}: "
                           f"{parent!r} is not a directory")
    _check_writable(args.json, "JSON file")
    schedules = args.schedules or stress.DEFAULT_SCHEDULES
    seconds = args.seconds or stress.DEFAULT_SECONDS
    fail = _fail_config(args.fail)
    out = _human_out(args)
    err = sys.stderr
    hb = [None]

    def run_one(item):
        n, v, m = item
        if m == "controlled":
            return stress.run_controlled(n, v, args.seed, schedules, args.threads,
                                         strategy=args.strategy or DEFAULT_STRATEGY, fail=fail)
        return stress.run_free(n, v, args.seed, seconds, args.threads, lockstat=args.lockstat,
                               fail=fail)

    def on_start(i, item):
        if not args.quiet:
            prefix = f"[{i:>2}/{len(plan)}] {' '.join(item)} ..."
            print(prefix, end="", file=err, flush=True)
            hb[0] = interrupt.Heartbeat(err, prefix).__enter__()

    def on_done(i, item, r):
        if not args.quiet:
            hb[0].__exit__(None, None, None)
            hb[0] = None
            kinds = ", ".join(f"{k} x{c}" for k, c in r.kinds().items()) or "-"
            verdict = interrupt.paint(r.verdict, "green" if r.ok else "red", err)
            print(f" {verdict} [{kinds}] {r.seconds:.2f}s", file=err, flush=True)

    t0 = time.perf_counter()
    try:
        done = interrupt.run_plan(plan, run_one, on_start, on_done)
    finally:
        if hb[0] is not None:
            hb[0].__exit__(None, None, None)
    if done.interrupted and not args.quiet:
        print(file=err)           # end the progress line the interrupt cut
    results = done.results
    ok = all(r.ok for r in results) and not done.interrupted
    elapsed = time.perf_counter() - t0
    if results:
        print(_summary(results), file=out)
    findings = _findings_section(results, args, seconds)
    if findings:
        print("\n" + findings, file=out)
    n_ok = sum(r.ok for r in results)
    if done.interrupted:
        print(f"\n{n_ok}/{len(results)} completed runs as expected in {elapsed:.1f} s", file=out)
        print(interrupt.paint(done.interrupted_line(), "yellow", out), file=out)
    else:
        verdict = interrupt.paint("OK" if ok else "FAILED", "green" if ok else "red", out)
        print(f"\n{n_ok}/{len(results)} runs as expected in {elapsed:.1f} s: {verdict}", file=out)
    if args.lockstat:
        for r in results:
            if r.lockstat:
                print(f"\n== lock_stat: {r.scenario} {r.variant} free\n{r.lockstat}", file=out)
    out.flush()
    if args.report_dir:
        try:
            os.makedirs(args.report_dir, exist_ok=True)
            _write_reports(args.report_dir, results)
        except OSError as e:
            raise CliError(f"cannot write reports to {args.report_dir!r}: {e.strerror}")
    if args.json:
        interrupt.write_json(args.json, {"version": 1, "ok": ok, "interrupted": done.interrupted,
                                         "runs": [r.to_dict() for r in results]})
    return done.exit_code(ok)


def _summary(results):
    from .bench import format_table
    rows = [{"scenario": r.scenario, "variant": r.variant, "mode": r.mode,
             "ops/schedules": f"{r.schedules} sched" if r.mode == "controlled" else f"{r.ops} ops",
             "findings": ", ".join(f"{k} x{c}" for k, c in r.kinds().items()) or "-",
             "expected": r.expected, "verdict": r.verdict} for r in results]
    return format_table(rows)


def rerun_command(r, seconds):
    """A command that runs ``r`` again: the replay for a controlled finding,
    the same stress run (same seed, not the same interleaving) for free mode."""
    return (f"pymm stress --scenario {shlex.quote(r.scenario)} --variant {shlex.quote(r.variant)} "
            f"--mode free --seed {r.seed} --seconds {seconds:g}")


def _findings_section(results, args, seconds):
    """After the table: each finding's headline and one command to reproduce
    it, pasted as is; and where the full reports are."""
    lines = []
    for r in results:
        for f in r.findings:
            lines.append(f"{r.scenario} {r.variant} {r.mode}: {f['title']}")
            if f.get("replay"):
                lines.append(f"  replay: {f['replay']}")
            else:
                extra = f" --threads {args.threads}" if args.threads != 1 else ""
                lines.append(f"  replay: {rerun_command(r, seconds)}{extra}"
                             "  # free mode: the same run again, not the same interleaving")
    if not lines:
        return ""
    where = []
    if args.report_dir:
        where.append(f"in {args.report_dir}/")
    if args.json and args.json != "-":
        where.append(f"in {args.json}")
    if not where:
        where.append("with --report-dir DIR, --json PATH or -v; 'pymm replay TOKEN' prints a "
                     "controlled finding's report again")
    return "findings:\n" + "\n".join(lines) + "\nfull reports: " + "; ".join(where)


def _write_reports(d, results):
    for r in results:
        for j, f in enumerate(r.findings):
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{r.scenario}-{r.variant}-{r.mode}-{j}-{f['kind']}.txt")
            head = (f"scenario: {r.scenario}\nvariant: {r.variant}\nmode: {r.mode}\n"
                    f"seed: {r.seed}\nkind: {f['kind']}\ntitle: {f['title']}\n")
            if f.get("replay"):
                head += f"replay: {f['replay']}\n"
            interrupt.write_text(os.path.join(d, name), head + "\n" + f["text"] + "\n")


# -- replay ------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"pymm:v1:\S+")


@_with_pymm_checks
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
        return EXIT_FAILED
    print(stress.finding_text(failure))
    print(f"replay: pymm replay {token}")
    return EXIT_OK


# -- lockdep-graph ---------------------------------------------------------------------------

DEP_LEGEND = ("edge label: lockdep's dependency types (kernel/locking/lockdep.c); first letter: "
              "how the held lock was taken, E exclusive or S shared (read); second: how the next "
              "lock was taken, R recursive read or N non-recursive (write or plain read). "
              "Red: contradicts the order documented at the top of mm/rmap.py.")


def _parse_variants(items):
    from . import variants
    out = {}
    for it in items or []:
        if "=" not in it:
            raise CliError(f"--variant expects KEY=VALUE, got {it!r}")
        k, v = (x.strip() for x in it.split("=", 1))
        out[k] = v
    try:
        variants.resolve(out)
    except ValueError as e:
        raise CliError(str(e))
    return out


def merge_dependencies(deps):
    """[(a, b, types)] -> {(a, b): set of types}: one edge per class pair."""
    merged = {}
    for a, b, types in deps:
        merged.setdefault((a, b), set()).update(types)
    return merged


def transitive_reduction(edges, keep=()):
    """Drop each edge A -> C for which C is reachable from A along a longer
    path of observed edges (the graph's transitive reduction when it is
    acyclic); edges in ``keep`` always stay."""
    succ = {}
    for a, b in edges:
        succ.setdefault(a, set()).add(b)

    def reachable_without(a, c):
        seen, todo = {a}, [x for x in succ.get(a, ()) if x != c]
        while todo:
            x = todo.pop()
            if x == c:
                return True
            if x not in seen:
                seen.add(x)
                todo.extend(succ.get(x, ()))
        return False
    return {e for e in edges if e in keep or not reachable_without(*e)}


def cmd_lockdep_graph(args):
    from . import stress
    from .locking import lockdep
    from .mm.rmap import LOCK_ORDER_EXCEPTIONS, lock_order_pairs
    names = [n for n in stress.all_scenarios() if n != "mix"]
    chosen = args.scenario or names
    for n in chosen:
        if n not in names:
            raise CliError(f"unknown scenario {n!r}; expected one of {', '.join(names)}")
    chosen_variants = _parse_variants(args.variant)
    _check_writable(args.output, "DOT file")
    deps = []
    for n in chosen:
        cls = stress.get_scenario(n)
        v = chosen_variants.get(cls.variant_key)
        if v is None:
            v = [v for v in cls.variants() if cls.expected(v) == "clean"][-1]
        stress.run_free(n, v, 0, args.seconds)
        deps.extend(lockdep.dependencies())
    merged = merge_dependencies(deps)
    documented = lock_order_pairs()
    bad = {(a, b) for a, b in merged if (b.split("/")[0], a.split("/")[0]) in documented
           and (a, b) not in LOCK_ORDER_EXCEPTIONS}
    kept = transitive_reduction(merged, keep=bad) if args.reduce else set(merged)
    out = ["digraph lockdep {", '  rankdir=LR; node [shape=box, fontname="monospace"];',
           f'  label="{DEP_LEGEND}"; labelloc=b; labeljust=l; fontname="monospace"; fontsize=10;']
    for (a, b) in sorted(kept):
        attrs = [f'label="{",".join(sorted(merged[a, b]))}"']
        if (a, b) in bad:
            attrs += ['color=red', 'penwidth=2', 'tooltip="contradicts the order documented in mm/rmap.py"']
        out.append(f'  "{a}" -> "{b}" [{", ".join(attrs)}];')
    out.append("}")
    text = "\n".join(out) + "\n"
    if args.output:
        interrupt.write_text(args.output, text)
    else:
        sys.stdout.write(text)
    summary = (f"{len(kept)} edges ({len(merged)} class pairs observed"
               f"{', reduced' if args.reduce else ''}), {len(bad)} contradicting mm/rmap.py's order")
    for a, b in sorted(bad):
        summary += f"\n  contradiction: {a} -> {b}"
    if args.check or bad:
        print(summary, file=sys.stderr)
    return EXIT_FAILED if args.check and bad else EXIT_OK


# -- experiment / bench / list ----------------------------------------------------------------

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
        _check_writable(args.plot, "plot")
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
    _check_writable(args.json, "JSON file")
    _check_writable(args.trace, "trace file")
    out = _human_out(args)
    res = experiment.run(args.name, variants, cpus=args.cpus, seeds=args.seeds, seed=args.seed,
                         duration_ms=duration, clock=args.clock, cost_model=model,
                         trace=bool(args.trace))
    interrupted = res.get("interrupted", False)
    if res["variants"]:
        print(experiment.format_result(res), file=out)
    if interrupted:
        print(f"\ninterrupted after {len(res['variants'])}/{res['planned']} runs", file=out)
    if args.json:
        interrupt.write_text(args.json, experiment.dumps(res))
    if args.trace and res["variants"]:
        interrupt.write_text(args.trace, json.dumps(experiment.trace_document(res)))
        print(f"\ntrace written to {args.trace} (open it in https://ui.perfetto.dev)", file=out)
    if args.plot and res["variants"] and not interrupted:
        experiment.plot(res, args.plot)
        print(f"\nlatency plot written to {args.plot}", file=out)
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


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
    _check_writable(args.json, "JSON file")
    res = experiment.run_scenario(args.scenario, seconds=seconds, seed=args.seed)
    out = _human_out(args)
    if res["variants"]:
        print(experiment.format_scenario_result(res), file=out)
    if res["interrupted"]:
        print(f"\ninterrupted after {len(res['variants'])}/{res['planned']} runs", file=out)
    if args.json:
        interrupt.write_json(args.json, {k: v for k, v in res.items() if k != "_raw"})
    return EXIT_INTERRUPTED if res["interrupted"] else EXIT_OK


def cmd_bench(args):
    from . import bench
    from .benchmarks import SECTIONS
    for s in args.section or []:
        if s not in SECTIONS:
            raise CliError(f"unknown benchmark section {s!r}; expected one of {', '.join(SECTIONS)}")
    _check_writable(args.json, "JSON file")
    res = bench.run(args.section, quick=args.quick, json_path=args.json, out=_human_out(args))
    missed = bench.missed_targets(res)
    if args.check:
        out = _human_out(args)
        if missed:
            print(f"\n{len(missed)} target(s) not met:", file=out)
            for sec, row in missed:
                print(f"  {sec}: {bench.row_label(row)}", file=out)
        else:
            print("\nevery target met", file=out)
        return EXIT_FAILED if missed else EXIT_OK
    return EXIT_OK


def listing():
    """What ``pymm list`` prints, as data."""
    from . import stress, variants
    from .debug.report import KINDS
    scen = []
    for n in stress.all_scenarios():
        cls = stress.get_scenario(n)
        scen.append({"scenario": n, "variant key": cls.variant_key or "-",
                     "variants": cls.variants(),
                     "caught as": sorted(getattr(cls, "caught_kinds", ()) or ())})
    keys = [{"key": k, "values": list(v["values"]), "buggy": list(v["buggy"]),
             "default": v["default"], "doc": v.get("doc", "")} for k, v in variants.VARIANTS.items()]
    return {"scenarios": scen, "variant_keys": keys, "finding_kinds": list(KINDS)}


def cmd_list(args):
    from .bench import format_table
    _check_writable(args.json, "JSON file")
    data = listing()
    out = _human_out(args)
    rows = []
    for k in data["variant_keys"]:
        vals = [v + (" (buggy)" if v in k["buggy"] else "") + (" (default)" if v == k["default"] else "")
                for v in k["values"]]
        rows.append({"variant key": k["key"], "values (buggy first; the default is mainline)": ", ".join(vals)})
    srows = [{"scenario": s["scenario"], "variant key": s["variant key"],
              "buggy variants caught as": ", ".join(s["caught as"]) or "-"} for s in data["scenarios"]]
    print("scenarios (pymm stress --scenario NAME)\n" + format_table(srows), file=out)
    print("\nvariant keys (Kernel(variants={KEY: VALUE}), --pymm-variant KEY=VALUE)\n"
          + format_table(rows), file=out)
    print("\nfinding kinds (@pytest.mark.pymm_expect(KIND))\n  " + ", ".join(data["finding_kinds"]),
          file=out)
    if args.json:
        interrupt.write_json(args.json, data)
    return EXIT_OK


def cmd_campaign(args):
    from . import campaign_cli
    return campaign_cli.cmd_campaign(args, CliError)


def cmd_crashes(args):
    from . import campaign_cli
    return campaign_cli.cmd_crashes(args, CliError)


COMMANDS = {"stress": cmd_stress, "replay": cmd_replay, "experiment": cmd_experiment,
            "lockdep-graph": cmd_lockdep_graph, "bench": cmd_bench, "campaign": cmd_campaign,
            "crashes": cmd_crashes, "list": cmd_list}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd is None:
        parser.print_help()
        return EXIT_OK
    args.verbose += getattr(args, "sub_verbose", 0)
    args.quiet = args.quiet or getattr(args, "sub_quiet", False)
    logger.remove()
    if args.verbose:
        logger.enable("pymm")
        logger.add(sys.stderr, level="DEBUG" if args.verbose > 1 else "INFO",
                   colorize=interrupt.use_color(sys.stderr))
    try:
        rc = COMMANDS[args.cmd](args)
        sys.stdout.flush()         # a closed pipe shows here, inside the handler below
        return rc
    except CliError as e:
        print(f"pymm: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:       # outside a run loop (replay, lockdep-graph, bench...)
        print("\npymm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:         # `pymm ... | head`: the reader left; no traceback
        _silence_stdout()
        return EXIT_PIPE


def _silence_stdout():
    """Point stdout at /dev/null so the interpreter's final flush does not
    raise again (Python's documented recipe for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
