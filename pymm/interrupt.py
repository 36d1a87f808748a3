"""What every long-running ``pymm`` command does the same way: run a plan of
runs that Ctrl-C can stop, say how far it got, and write its output files so
that no exit path leaves one truncated.

Used by ``pymm stress`` and ``pymm experiment`` (and meant for any command
that runs a list of things, such as ``pymm campaign``)::

    from pymm import interrupt
    interrupt.check_writable(args.json, "JSON file")        # fail early, create nothing
    done = interrupt.run_plan(plan, run_one, on_start=..., on_done=...)
    print(table(done.results))
    if done.interrupted:
        print(done.interrupted_line())                      # "interrupted after k/N runs"
    interrupt.write_json(args.json, {..., "interrupted": done.interrupted})
    return done.exit_code(ok)                               # 0, 1 or 130

Ctrl-C raises ``KeyboardInterrupt`` in the main thread wherever it is: the
run in progress is abandoned (its threads are daemons; free-mode rounds tell
theirs to stop) and the runs completed so far are the result.  Files are
written to a temporary file in the destination's directory and renamed over
it (``os.replace`` is atomic on POSIX), with SIGINT deferred while that
happens; a file is therefore either absent, its old self, or complete.
"""
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time

EXIT_OK = 0
EXIT_FAILED = 1          # a verdict did not hold
EXIT_USAGE = 2           # bad command line or input
EXIT_INTERRUPTED = 130   # SIGINT (128 + 2), as a shell reports it

EXIT_CODES_HELP = """exit status:
  0    every verdict held (or the command did what it was asked)
  1    a verdict did not hold (stress, bench --check, lockdep-graph --check, replay that did not reproduce)
  2    usage error: bad option, unknown scenario/variant, unreadable or unwritable file
  130  interrupted (Ctrl-C): the runs completed so far are summarised and written"""


class Completed:
    """What ``run_plan`` returns: ``results`` (one per completed item, in
    plan order), ``total`` (the plan's length) and ``interrupted``."""

    __slots__ = ("results", "total", "interrupted")

    def __init__(self, results, total, interrupted):
        self.results, self.total, self.interrupted = results, total, interrupted

    def interrupted_line(self, what="runs"):
        return f"interrupted after {len(self.results)}/{self.total} {what}"

    def exit_code(self, ok):
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if ok else EXIT_FAILED


def run_plan(plan, run_one, on_start=None, on_done=None):
    """Call ``run_one(item)`` for each item of ``plan`` in order and collect
    the results; ``on_start(i, item)`` / ``on_done(i, item, result)`` (i from
    1) report progress.  Ctrl-C stops the loop: the item in progress is
    dropped and the completed ones are returned with ``interrupted`` set."""
    plan = list(plan)
    results = []
    try:
        for i, item in enumerate(plan, 1):
            if on_start is not None:
                on_start(i, item)
            r = run_one(item)
            results.append(r)
            if on_done is not None:
                on_done(i, item, r)
    except KeyboardInterrupt:
        return Completed(results, len(plan), True)
    return Completed(results, len(plan), False)


_deferring = [0]           # nesting depth of sigint_deferred (main thread)


@contextlib.contextmanager
def sigint_deferred():
    """Hold back SIGINT for the duration of the block (main thread only;
    elsewhere a no-op); a Ctrl-C that arrived meanwhile is raised at the end
    of the outermost such block (an inner one, e.g. a database commit inside
    the bookkeeping of a finished item, does not cut the outer one short)."""
    if threading.current_thread() is not threading.main_thread() or _deferring[0]:
        yield
        return
    _deferring[0] += 1
    try:
        with _deferred():
            yield
    finally:
        _deferring[0] -= 1


@contextlib.contextmanager
def _deferred():
    got = []
    prev = signal.signal(signal.SIGINT, lambda s, f: got.append(s))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, prev)
    if got:
        raise KeyboardInterrupt


def check_writable(path, what):
    """Raise ``ValueError`` (one line) if ``path`` cannot be written later;
    create nothing.  ``-`` (stdout) is always writable."""
    if path is None or path == "-":
        return
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise ValueError(f"cannot write {what} {path!r}: directory {d!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"cannot write {what} {path!r}: it is a directory")
    if not os.access(d, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {what} {path!r}: directory {d!r} is not writable")


def write_text(path, text):
    """Write ``text`` to ``path`` atomically (``-``: to stdout)."""
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    d = os.path.dirname(os.path.abspath(path))
    with sigint_deferred():
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def write_json(path, doc):
    write_text(path, json.dumps(doc, indent=1) + "\n")


class Heartbeat:
    """On a terminal, rewrite the current progress line every ``interval``
    seconds with the time spent so far, so a long run shows it is alive::

        with Heartbeat(sys.stderr, "[ 3/40] populate downgrade free ..."):
            run()

    Off a terminal it does nothing (logs stay one line per run)."""

    def __init__(self, stream, prefix, interval=5.0, force=False):
        self.stream, self.prefix, self.interval = stream, prefix, interval
        self.enabled = force or _isatty(stream)
        self._stop = threading.Event()
        self._thread = None
        self.beats = 0

    def __enter__(self):
        if self.enabled:
            self._t0 = time.perf_counter()
            self._thread = threading.Thread(target=self._run, name="pymm-heartbeat", daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            self.beats += 1
            try:
                self.stream.write(f"\r{self.prefix} {time.perf_counter() - self._t0:.0f} s")
                self.stream.flush()
            except (OSError, ValueError):
                return

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            if self.beats:      # put the line back as it was for the verdict that follows
                self.stream.write(f"\r{self.prefix}" + " " * 8 + f"\r{self.prefix}")
                self.stream.flush()
        return False


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def use_color(stream):
    """ANSI colour only on a terminal and only without NO_COLOR (no-color.org)."""
    return not os.environ.get("NO_COLOR") and _isatty(stream)


def paint(text, color, stream):
    codes = {"red": "31", "green": "32", "yellow": "33", "bold": "1"}
    if not use_color(stream):
        return text
    return f"\x1b[{codes[color]}m{text}\x1b[0m"
