"""Free mode: real concurrency, with race windows widened.

Free-running threads under the GIL switch every 5 ms by default, so a race
window of a few bytecodes is almost never hit.  Two knobs make them collide
more often (in the spirit of KCSAN's delays and LTP's fzsync):

- ``switch_interval(1e-6)``: ask the interpreter to switch threads as often
  as it can while the stress runs, and restore the previous interval after.
- ``DelayInjector``: at every lock release and every ``point()`` it yields
  (``time.sleep(0)``) or sleeps a short random time, with a given
  probability, so another thread gets to run inside the window that follows.

``free_mode(seed, ...)`` combines both.  The injector's randomness is seeded so
a stress run's configuration is reproducible, but the interleaving itself is
not (the OS schedules the threads): use the controlled mode
(``pymm.sched.explore``) for findings that must replay.
"""
import contextlib
import random
import sys
import time

from ..locking import events as _ev
from . import _core
from ._core import SchedUsageError

_sleep = time.sleep


class DelayInjector:
    """An events listener (at ``released``) and ``point()`` hook that, with
    probability ``probability``, yields (half of the time) or sleeps uniformly
    up to ``max_sleep`` seconds.  Use as a context manager, or
    ``install()`` / ``uninstall()``.  ``yields`` and ``sleeps`` count the
    injected delays (plain counters: approximate when threads race).

    Context: install and uninstall from one thread while no controlled run
    is in progress; the hooks themselves run in any thread and take no lock.
    """

    def __init__(self, seed=0, probability=0.05, max_sleep=1e-4):
        if type(seed) is not int:
            raise SchedUsageError(f"seed must be an int, got {seed!r}")
        if isinstance(probability, bool) or not isinstance(probability, (int, float)) \
                or not 0.0 <= probability <= 1.0:
            raise SchedUsageError(f"probability must be a number in [0, 1], got {probability!r}")
        if isinstance(max_sleep, bool) or not isinstance(max_sleep, (int, float)) \
                or not 0.0 <= max_sleep <= 1.0:
            raise SchedUsageError(f"max_sleep must be a number of seconds in [0, 1], "
                                  f"got {max_sleep!r}")
        self.seed = seed
        self.probability = float(probability)
        self.max_sleep = float(max_sleep)
        self._rnd = random.Random(seed).random
        self.yields = 0
        self.sleeps = 0
        self._installed = False
        self._prev_hook = None

    def delay(self, label=None):
        """Maybe yield or sleep (the body of both hooks)."""
        r = self._rnd()
        p = self.probability
        if r < p:
            if r < p * 0.5:
                self.yields += 1
                _sleep(0)
            else:
                self.sleeps += 1
                _sleep(self._rnd() * self.max_sleep)

    def released(self, lock, read):     # events listener: after every release
        self.delay()

    def install(self):
        if self._installed:
            raise SchedUsageError("this DelayInjector is already installed")
        if _core._active is not None:
            raise SchedUsageError("free mode cannot start during a controlled run "
                                  "(the two modes are exclusive)")
        _ev.register(self)
        self._prev_hook = _core.set_point_hook(self.delay)
        self._installed = True
        return self

    def uninstall(self):
        if self._installed:
            _ev.unregister(self)
            _core.set_point_hook(self._prev_hook)
            self._installed = False

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc):
        self.uninstall()

    def __repr__(self):
        return (f"<DelayInjector seed={self.seed} p={self.probability} max_sleep={self.max_sleep}"
                f" yields={self.yields} sleeps={self.sleeps}"
                f"{' installed' if self._installed else ''}>")


@contextlib.contextmanager
def switch_interval(seconds=1e-6):
    """``sys.setswitchinterval(seconds)`` for the duration; yields the
    previous interval and restores it afterwards."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise SchedUsageError(f"switch interval must be a positive number of seconds, "
                              f"got {seconds!r}")
    prev = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield prev
    finally:
        sys.setswitchinterval(prev)


@contextlib.contextmanager
def free_mode(seed=0, probability=0.05, max_sleep=1e-4, switch=1e-6):
    """Delay injection plus a tiny switch interval (``switch=None`` leaves the
    interval alone); yields the ``DelayInjector``."""
    inj = DelayInjector(seed, probability, max_sleep)
    with contextlib.ExitStack() as stack:
        if switch is not None:
            stack.enter_context(switch_interval(switch))
        stack.enter_context(inj)
        yield inj
