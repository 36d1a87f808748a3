"""The controlled scheduler: deterministic, replayable interleavings of real
threads over real pymm locks; and the free-mode helpers for stress runs.

    from pymm.sched import explore, replay, point

    result = explore(setup, [thread_a, thread_b], check, strategy="random", seed=0)
    if result.failure:
        print(result.failure.message)        # ends with how to replay it
        replay(setup, [thread_a, thread_b], result.failure.schedule, check)

Exactly one managed thread runs at a time; at every scheduling point (each
lock acquire attempt and release, thread exit, a thread blocking, and
``point(label)`` in emulated kernel code) a seeded strategy chooses who runs
next.  Same choices, same run.  See shared/docs/SCHEDULER.md and ``_core``.
"""
from ._api import (DEFAULT_MAX_STEPS, DEFAULT_STRATEGY, DEFAULT_WATCHDOG, STRATEGIES, explore, replay,
                   run_schedule)
from ._core import (CONTROLLED, Finding, SchedAbort, SchedUsageError, is_controlled, point,
                    report_finding)
from .vtime import charge
from .free import DelayInjector, free_mode, switch_interval
from .strategies import derive_seed
from .trace import Failure, Outcome, Result, decode_schedule, encode_schedule, schedule_digest

__all__ = [
    # controlled mode
    "explore", "replay", "run_schedule", "point", "report_finding", "is_controlled",
    "Finding", "Failure", "Result", "Outcome", "SchedAbort", "SchedUsageError",
    "encode_schedule", "decode_schedule", "charge", "STRATEGIES", "DEFAULT_STRATEGY",
    "DEFAULT_WATCHDOG", "DEFAULT_MAX_STEPS", "CONTROLLED", "derive_seed", "schedule_digest",
    # free mode
    "DelayInjector", "switch_interval", "free_mode",
]
