"""The ``pymm`` command: stress | bench (more subcommands arrive with their issues).

Bad input gets one line naming the problem on stderr and exit status 2."""
import argparse
import sys

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


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, not argparse's usage dump
        print(f"pymm: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser():
    p = _Parser(prog="pymm", description="Linux mm locking emulator: stress, replay, experiment, bench")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log pymm's internals (-vv: debug)")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    s = sub.add_parser("stress", help="run the stress scenarios (the main job)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", metavar="PATH")

    b = sub.add_parser("bench", help="run the benchmarks and print tables")
    b.add_argument("--section", action="append", help="run only this section (repeatable)")
    b.add_argument("--quick", action="store_true", help="smaller iteration counts")
    b.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    return p


def cmd_bench(args):
    from . import bench
    from .benchmarks import SECTIONS
    for s in args.section or []:
        if s not in SECTIONS:
            raise CliError(f"unknown benchmark section {s!r}; expected one of {', '.join(SECTIONS)}")
    bench.run(args.section, quick=args.quick, json_path=args.json)
    return 0


def cmd_stress(args):
    from . import stress_main
    return stress_main.main(args)


COMMANDS = {"stress": cmd_stress, "bench": cmd_bench}


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
