"""The scenario contract.

A scenario subclass defines:

- ``name`` and ``variant_key`` (a key of pymm.variants.VARIANTS);
- ``caught_kinds``: finding kinds that count as catching the bug;
- ``setup(variant, seed)`` -> a state object with at least ``.kernel``;
- ``roles``: a list of (role name, step function); ``step(state, rng)`` does
  ONE operation of that role (a workload op or a racer op).  Steps must be
  short, bounded and self-contained (they may raise OSError for legitimately
  failed system calls, which counts as a normal outcome);
- ``controlled_steps``: how many steps each role runs in one controlled
  schedule (keep it small: the scheduler explores interleavings of them);
- optionally ``teardown(state)`` (e.g. exit the processes) and
  ``check(state)`` extra assertions.

The runner (pymm.stress) builds the threads from ``roles``: in controlled mode
each thread runs its role's step ``controlled_steps`` times under the
scheduler; in free mode each thread loops its step until the deadline.
After the threads: teardown, ``kernel.check()``, and the findings decide.
"""
import random

from .. import variants as _variants


class Scenario:
    name = "?"
    variant_key = "?"
    caught_kinds = frozenset()
    controlled_steps = 2
    roles = ()

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
