"""The scenario contract: ``pymm.Scenario``.

A scenario is a workload and the racers that expose a locking bug, written
once and run two ways by ``pymm stress`` / ``pymm campaign`` / the pytest
plugin.  pymm's own scenarios (``pymm/scenarios/*.py``) and a user's
(``--scenario path/to/file.py:ClassName``, ``--scenario pkg.module:ClassName``,
an entry point in the group ``pymm.scenarios``) follow the same contract.

A subclass defines (class attributes):

- ``name``: a short name (used in reports);
- ``variant_key``: a key of ``pymm.variants.VARIANTS`` -- pymm's own, or one
  registered with ``pymm.variants.register(key, values, default, buggy, doc)``
  before the class is used (at import of the scenario's module is the usual
  place).  The scenario's variants are that key's values; a value listed as
  buggy is *expected to be caught*, every other value *expected clean*;
- ``caught_kinds``: a non-empty set of finding kinds (``pymm.debug.report.KINDS``:
  "use-after-free", "lockdep", "bad-page-state", "data-corruption",
  "deadlock", "hung-task", "assertion", "rcu", "rss-counter") that count as
  catching the bug;
- ``roles``: a sequence of (role name, step function); ``step(self, state, rng)``
  does ONE operation of that role (a workload op or a racer op) with
  ``rng`` a ``random.Random`` private to the thread.  Steps must be short,
  bounded and self-contained; they may raise OSError for a legitimately failed
  system call (a normal outcome).  A step must not block on anything but pymm
  locks (no sleeps, Events, I/O): the controlled scheduler only sees pymm locks
  and ``pymm.sched.point()``;
- ``controlled_steps``: how many steps each role runs in one controlled
  schedule (a positive int; keep it small: the scheduler explores
  interleavings of them);

and methods:

- ``setup(self, variant, seed)`` -> a state object with at least ``.kernel``
  (a ``pymm.Kernel`` built with ``variants={variant_key: variant}``).  Called
  afresh for every controlled schedule and every free-mode round; same
  (variant, seed), same state: the controlled mode replays only if setup and
  steps are deterministic given their seed and rng;
- optionally ``teardown(self, state)`` (e.g. exit the processes, so leaks show
  in the kernel's checks) and ``check(self, state)`` (extra assertions: an
  AssertionError is a finding of kind "assertion").

The runner (``pymm.stress``) builds the threads from ``roles``: in controlled
mode each thread runs its role's step ``controlled_steps`` times under the
scheduler; in free mode each thread loops its step until the deadline.
After the threads: teardown, ``kernel.check()``, ``check``, and the findings
decide the verdict.  ``pymm.scenarios.check_contract`` enforces the
attributes above when a scenario is loaded by reference.

Code under test branches on the variant exactly like pymm's own code::

    if kernel.variant("my-key") == "buggy-value": ...
"""
import random

from .. import variants as _variants


class Scenario:
    name = "?"
    variant_key = "?"
    caught_kinds = frozenset()
    controlled_steps = 2
    roles = ()
    in_mix = True        # False: an era's code path whose lock order today's contradicts

    @classmethod
    def variants(cls):
        return list(_variants.VARIANTS[cls.variant_key]["values"])

    @classmethod
    def expected(cls, variant):
        """"caught" for a buggy variant, "clean" for a correct one."""
        return "caught" if _variants.is_buggy(cls.variant_key, variant) else "clean"

    def setup(self, variant, seed):
        raise NotImplementedError

    def teardown(self, state):
        pass

    def check(self, state):
        pass

    @staticmethod
    def rng(seed, role_index):
        return random.Random((seed or 0) * 1000003 + role_index)
