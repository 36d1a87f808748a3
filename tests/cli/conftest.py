"""Runners for the ``pymm`` command, shared by the CLI tests.

Two ways to run it, both returning a ``CliResult(rc, out, err)``:

- ``cli(*argv)`` calls ``pymm.cli.main`` in this process (fast; monkeypatch
  reaches the scenarios it runs).  argparse's ``sys.exit(2)`` becomes rc.
- ``run_pymm(*argv)`` runs ``python -m pymm.cli`` in a child process: what a
  user at a shell sees, including the exit status the interpreter returns.

Note: ``pytest_plugins = ["pytester"]`` is declared in test_pytest_plugin.py,
not here: pytest refuses ``pytest_plugins`` in a conftest below the rootdir
("no longer supported"), which would break a plain ``pytest`` from the root.
"""
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


def run_pymm(*argv, cwd=None, timeout=120):
    p = subprocess.run([sys.executable, "-m", "pymm.cli", *map(str, argv)], cwd=cwd,
                       capture_output=True, text=True, timeout=timeout)
    return CliResult(p.returncode, p.stdout, p.stderr)


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
