"""Lockdep's verdicts against a brute-force oracle, on random programs.

A *program* is a list of blocks; a block is up to four nested acquisitions
(mutex lock, rwsem read/write, rwlock_t read/write, spinlock, or a trylock of
any of them) on classes from a small pool, released innermost first at the
end of the block.  Every block runs in this one thread, one after the other:
as in lib/locking-selftest.c, one context plays every "CPU".

The oracle rebuilds, step by step, what LOCKDEP.md says lockdep records, and
decides each acquisition's verdict by brute force:

- the typed dependency graph: acquiring ``next`` adds ``class(prev) ->
  class(next)`` for the held entries from the top of the stack down through
  consecutive trylocked entries and the first non-trylock one; the type is
  E/S (prev held exclusive/shared) + R/N (next a recursive read or not);
  trylocks add no edge into themselves, failed trylocks record nothing;
- "circular" iff the graph now holds a *strong* simple cycle: one whose
  edges can be given types, each from its edge's set, with no -(xR)->
  followed by -(Sx)-> anywhere around the cycle (wrap-around included).
  Every simple cycle and every type assignment is tried -- no BFS, no
  only_xr bookkeeping -- which is the point: the validator's search is
  checked against the definition, not against a copy of itself.  (A strong
  closed walk always contains a strong simple cycle, so simple cycles
  suffice.);
- "recursive" when the class is already held, unless a recursive read
  (rwlock_t read_lock) meets a held read;
- "invalid-context" when a sleeping lock (mutex, rwsem) is taken while a
  spinning one (spinlock_t, rwlock_t) is held.

Where LOCKDEP.md leaves a detail open the oracle follows kernel/locking/
lockdep.c, except in two places where the kernel is knowingly imprecise and
the oracle takes the exact answer (both pinned by examples on the test):
the kernel's __bfs() marks a class visited once, so a class first reached
through -(xR)-> is never re-entered through a stronger -(xN)->, and its
chain key leaves out the trylock flag (below).

- trylocks are never checked: validate_chain() skips them (no recursion
  check, no cycle search) and check_wait_context() returns early for them
  (``if (!next_inner || next->trylock) return 0;``): a trylock cannot sleep,
  so mutex_trylock() under a spinlock is not "invalid context";
- the chain cache is an optimisation and must not change any verdict, so
  the oracle has none.  The kernel's chain key (hlock_id: class and read
  kind) omits the trylock flag, so ``A; trylock(B); C`` after ``A; B; C``
  skips validation and never records A -> C, which can hide a deadlock (see
  the last example on the test); pymm's validator hashes the trylock flag too
  and needs no such allowance;
- after the first report the program stops (``raise_on_report=True``): what
  the kernel does after a splat is "debug_locks = 0", so later verdicts are
  not specified.  A report must come at exactly the step the oracle names,
  with one of the kinds the oracle found there (several checks can fire on
  one acquisition; lockdep.c runs the wait-context check, then
  check_deadlock(), then the cycle search, but pymm need not order them so).

Real self-deadlock is impossible by construction, whatever the validator
does: each class has as many instances as a block can be deep, and a
blocking acquisition reuses an instance this thread holds only when a reader
joins its own readers (never blocks here: no writer is queued); otherwise it
takes an instance nobody holds.  Trylocks may hit held instances and fail.
"""
import itertools
from collections import namedtuple

from hypothesis import HealthCheck, example, given, settings, strategies as st

from pymm.errors import LockdepError
from pymm.locking import lockdep, new_lock

from .selftest_helpers import release, release_held

# kind -> mode -> (blocking method, trylock method)
OPS = {
    "spinlock": {"w": ("lock", "trylock")},
    "mutex": {"w": ("lock", "trylock")},
    "rwsem": {"w": ("down_write", "down_write_trylock"),
              "r": ("down_read", "down_read_trylock")},
    "rwlock": {"w": ("write_lock", "write_trylock"),
               "r": ("read_lock", "read_trylock")},
}
READ_KIND = {"rwsem": 1, "rwlock": 2}      # of a read acquisition; writes are 0
SLEEPING = {"spinlock": False, "rwlock": False, "mutex": True, "rwsem": True}
# Pools mixing sleeping and spinning locks mostly end in "invalid-context"
# within a step or two, so most pools stay on one side.
WORLDS = {"sleeping": ("mutex", "rwsem"), "spinning": ("spinlock", "rwlock"),
          "mixed": ("spinlock", "mutex", "rwsem", "rwlock")}
MAX_DEPTH = 4
INSTANCES = MAX_DEPTH      # a free instance always exists (see the docstring)

Op = namedtuple("Op", "cls mode trylock inst")
Program = namedtuple("Program", "kinds blocks")


def read_kind(kind, mode):
    return READ_KIND[kind] if mode == "r" else 0


# -- the oracle --------------------------------------------------------------------

def edge_type(prev_read, next_read):
    return ("S" if prev_read else "E") + ("R" if next_read == 2 else "N")


def simple_cycles(edges):
    """Every simple cycle (self-loops included) of the graph whose edges are
    the keys of ``edges``, each once, as a list of nodes starting at its
    smallest node."""
    succ = {}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
    for start in sorted(succ):
        stack = [[start]]
        while stack:
            path = stack.pop()
            for n in succ.get(path[-1], ()):
                if n == start:
                    yield path
                elif n > start and n not in path:
                    stack.append(path + [n])


def strong_assignment(cycle, edges):
    """Types for the cycle's edges making it strong, or None."""
    hops = list(zip(cycle, cycle[1:] + cycle[:1]))
    for types in itertools.product(*(sorted(edges[h]) for h in hops)):
        if not any(t[1] == "R" and u[0] == "S" for t, u in zip(types, types[1:] + types[:1])):
            return list(zip(hops, types))
    return None


def find_strong_cycle(edges):
    for cycle in simple_cycles(edges):
        found = strong_assignment(cycle, edges)
        if found:
            return found
    return None


class Oracle:
    """What lockdep must say about each acquisition of one program."""

    def __init__(self, kinds):
        self.kinds = kinds
        self.held = []          # [(cls, read, trylock)], innermost last
        self.edges = {}         # (cls, cls) -> set of "ER" "EN" "SR" "SN"
        self.cycle = None       # the strong cycle behind a "circular" verdict

    def acquire(self, c, read):
        """A blocking acquisition: the set of report kinds it must raise
        (empty: none, and it is now held)."""
        found = set()
        if SLEEPING[self.kinds[c]] and any(not SLEEPING[self.kinds[h]] for h, _, _ in self.held):
            found.add("invalid-context")
        if any(h == c and not (read == 2 and r) for h, r, _ in self.held):
            found.add("recursive")
        else:
            for h, r, trylock in reversed(self.held):
                self.edges.setdefault((h, c), set()).add(edge_type(r, read))
                if not trylock:
                    break
            self.cycle = find_strong_cycle(self.edges)
            if self.cycle:
                found.add("circular")
        if not found:
            self.held.append((c, read, False))
        return found

    def trylocked(self, c, read):
        """A trylock succeeded: held, no checks, no edges."""
        self.held.append((c, read, True))

    def release(self):
        self.held.pop()

    def describe(self):
        edges = ", ".join(f"{a}-{'/'.join(sorted(t))}->{b}" for (a, b), t in sorted(self.edges.items()))
        cyc = "" if not self.cycle else "; strong cycle " + " ".join(
            f"{a}-({t})->{b}" for (a, b), t in self.cycle)
        return f"graph: {edges or 'empty'}{cyc}"


def test_oracle_agrees_with_the_kernel_selftest():
    """The oracle's cycle rule on the kernel's own rwlock cases
    (rlock_ABBA1..3 and the four 3-lock families), before trusting it."""
    def strong(*hops):
        return find_strong_cycle({(a, b): {t} for a, t, b in hops}) is not None
    assert strong((0, "SN", 1), (1, "EN", 0))                # rlock_ABBA1
    assert not strong((0, "SN", 1), (1, "ER", 0))            # rlock_ABBA2
    assert strong((0, "EN", 1), (1, "EN", 0))                # rlock_ABBA3
    assert strong((0, "ER", 1), (1, "ER", 2), (2, "ER", 0))  # W1R2_W2R3_W3R1
    assert strong((0, "EN", 1), (1, "SR", 2), (2, "ER", 0))  # W1W2_R2R3_W3R1
    assert not strong((0, "EN", 1), (1, "SR", 2), (2, "SN", 0))  # W1W2_R2R3_R3W1
    assert not strong((0, "ER", 1), (1, "SR", 2), (2, "EN", 0))  # W1R2_R2R3_W3W1
    assert not strong((0, "SR", 0))                          # read_lock(A) twice
    # two types on one edge: the strong choice wins
    assert find_strong_cycle({(0, 1): {"SN"}, (1, 0): {"ER", "EN"}}) is not None


# -- programs ------------------------------------------------------------------------

@st.composite
def programs(draw):
    """Few classes and many short blocks, so that cycles are common; most
    blocks nest distinct classes (a repeated class ends the program with a
    "recursive" report unless it is a read joining reads)."""
    world = draw(st.sampled_from(("sleeping", "sleeping", "spinning", "spinning", "mixed")))
    kinds = tuple(draw(st.lists(st.sampled_from(WORLDS[world]), min_size=2, max_size=4)))

    def op_for(c):
        return st.builds(Op, st.just(c), st.sampled_from(sorted(OPS[kinds[c]])),
                         st.sampled_from((False, False, False, True)),
                         st.integers(0, INSTANCES - 1))

    op = st.integers(0, len(kinds) - 1).flatmap(op_for)

    @st.composite
    def block(draw):
        # mostly pairs: each pair is one edge, and a dozen edges over a few
        # classes close cycles often; deeper blocks bring trylock walks
        depth = min(len(kinds), draw(st.sampled_from((1, 2, 2, 2, 2, 3, 3, 4))))
        repeats = draw(st.sampled_from((False, False, False, True)))
        return tuple(draw(st.lists(op, min_size=depth, max_size=depth,
                                   unique_by=None if repeats else (lambda o: o.cls))))

    return Program(kinds, tuple(draw(st.lists(block(), min_size=1, max_size=12))))


def pick_instance(instances, op, read, held):
    """The instance an op takes; see the module docstring for why."""
    lock = instances[op.inst]
    if op.trylock:
        return lock
    mine = [r for l, r, _ in held if l is lock]
    if not mine or (read and all(mine)):
        return lock
    return next(l for l in instances if not any(l is h for h, _, _ in held))


def run_program(program):
    """Run ``program`` against the validator and the oracle side by side;
    AssertionError at the first step where they disagree."""
    kinds = program.kinds
    locks = [[new_lock(kind, f"prop{c}_{kind}") for _ in range(INSTANCES)]
             for c, kind in enumerate(kinds)]
    oracle = Oracle(kinds)
    for b, block in enumerate(program.blocks):
        held = []           # [(lock, read, trylock)] really held, innermost last
        try:
            for s, op in enumerate(block):
                kind = kinds[op.cls]
                read = read_kind(kind, op.mode)
                lock = pick_instance(locks[op.cls], op, read, held)
                method = OPS[kind][op.mode][op.trylock]
                where = f"block {b} step {s}: {kind} class {op.cls} {method}"
                expected = set() if op.trylock else oracle.acquire(op.cls, read)
                try:
                    got = getattr(lock, method)()
                except LockdepError as e:
                    assert expected, (f"{where}: unexpected {e.report.kind!r} report; "
                                      f"oracle {oracle.describe()}\n{e.report.text}")
                    assert e.report.kind in expected, (
                        f"{where}: reported {e.report.kind!r}, oracle expects one of "
                        f"{sorted(expected)}; {oracle.describe()}\n{e.report.text}")
                    return e.report
                assert not expected, (f"{where}: lockdep missed {sorted(expected)}; "
                                      f"{oracle.describe()}")
                if op.trylock:
                    if not got:
                        continue
                    oracle.trylocked(op.cls, read)
                held.append((lock, read, op.trylock))
            seen = [(h.lock, h.read, bool(h.trylock)) for h in lockdep.held_locks()]
            assert len(seen) == len(held) and all(
                a is x and r == y and t == z for (a, r, t), (x, y, z) in zip(seen, held)), (
                f"block {b}: lockdep.held_locks() {seen} != really held {held}")
        finally:
            for lock, read, _ in reversed(held):
                release(lock, read)
                oracle.release()
    return None


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(programs())
# A strong cycle a breadth-first search that visits each class once can
# miss: from N, B is first reached through N -ER-> B (only *R so far, so
# B -SN-> P is masked), and the strong route N -EN-> C -EN-> B arrives at B
# second.  P -EN-> N closes P -> N -> C -> B -> P, all -(xN)->: strong.
@example(Program(
    kinds=("spinlock", "rwlock", "spinlock", "spinlock"),     # N, B, C, P
    blocks=((Op(0, "w", False, 0), Op(1, "r", False, 0)),    # N -ER-> B
            (Op(0, "w", False, 0), Op(2, "w", False, 0)),    # N -EN-> C
            (Op(2, "w", False, 0), Op(1, "w", False, 0)),    # C -EN-> B
            (Op(1, "r", False, 0), Op(3, "w", False, 0)),    # B -SN-> P
            (Op(3, "w", False, 0), Op(0, "w", False, 0)))))  # P -EN-> N: circular
# Trylocked entries are predecessors: A; trylock(B); C records B -> C and
# A -> C, so C; A closes a cycle through the trylocked-over edge.
@example(Program(
    kinds=("mutex", "mutex", "mutex"),
    blocks=((Op(0, "w", False, 0), Op(1, "w", True, 0), Op(2, "w", False, 0)),
            (Op(2, "w", False, 0), Op(0, "w", False, 0)))))
# rlock_chaincache_ABBA1: Y; read_lock(X) is harmless and cached, and
# Y; write_lock(X) is a different chain because the key holds the read kind.
@example(Program(
    kinds=("rwlock", "spinlock"),                            # X, Y
    blocks=((Op(0, "r", False, 0), Op(1, "w", False, 0)),   # X -SN-> Y
            (Op(1, "w", False, 0), Op(0, "r", False, 0)),    # Y -ER-> X: weak
            (Op(1, "w", False, 0), Op(0, "w", False, 0)))))  # Y -EN-> X: circular
# The kernel's chain-cache blind spot: in the kernel the second block has
# the first one's chain key (hlock_id has no trylock bit), so A -EN-> C is
# never recorded and A -ER-> B -SN-> C is weak at B; yet C -EN-> A closes the
# strong cycle A -EN-> C -EN-> A, a real ABBA.
@example(Program(
    kinds=("spinlock", "rwlock", "spinlock"),                 # A, B, C
    blocks=((Op(0, "w", False, 0), Op(1, "r", False, 0), Op(2, "w", False, 0)),
            (Op(0, "w", False, 0), Op(1, "r", True, 0), Op(2, "w", False, 0)),
            (Op(2, "w", False, 0), Op(0, "w", False, 0)))))
def test_lockdep_matches_the_oracle(program):
    lockdep.enable()
    lockdep.reset()
    prev = lockdep.configure(raise_on_report=True)
    try:
        run_program(program)
    finally:
        lockdep.configure(**prev)
        release_held()
        lockdep.reset()
