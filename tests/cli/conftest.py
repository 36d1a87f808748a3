"""Runners for the ``pymm`` command, shared by the CLI tests.

Two ways to run it, both returning a ``CliResult(rc, out, err)``:

- ``cli(*argv)`` calls ``pymm.cli.main`` in this process (fast; monkeypatch
  reaches the scenarios it runs).  argparse's ``sys.exit(2)`` becomes rc.
- ``run_pymm(*argv)`` runs ``python -m pymm.cli`` in a child process: what a
  user at a shell sees, including the exit status the interpreter returns.
  A child still running after ``timeout`` seconds is a hang: it gets SIGABRT,
  faulthandler prints every thread's stack, and the test fails with them.

Note: ``pytest_plugins = ["pytester"]`` is declared in test_pytest_plugin.py,
not here: pytest refuses ``pytest_plugins`` in a conftest below the rootdir
("no longer supported"), which would break a plain ``pytest`` from the root.
"""
import signal
import subprocess
import sys
from typing import NamedTuple

import pytest


class CliResult(NamedTuple):
    rc: int
    out: str
    err: str

    def error_line(self):
        """The single line a bad input must produce on stderr."""
        lines = self.err.splitlines()
        assert len(lines) == 1, f"expected one error line on stderr, got {len(lines)}:\n{self.err}"
        return lines[0]


def run_pymm(*argv, cwd=None, timeout=60):
    cmd = [sys.executable, "-X", "faulthandler", "-m", "pymm.cli", *map(str, argv)]
    with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGABRT)
            out, err = p.communicate()
            pytest.fail(f"pymm {' '.join(cmd[4:])} still running after {timeout} s; its threads:\n"
                        f"{err}\n--- stdout:\n{out}", pytrace=False)
    return CliResult(p.returncode, out, err)


@pytest.fixture
def cli(capsys):
    from pymm.cli import main

    def run(*argv):
        capsys.readouterr()
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:           # argparse errors exit from inside main
            rc = e.code
        out, err = capsys.readouterr()
        return CliResult(rc, out, err)
    return run
