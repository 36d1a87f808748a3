"""Who runs next: the strategies of ``explore`` and the replay chooser.

A strategy makes one *chooser* per schedule.  The run calls
``choose(enabled, me)`` at every choice point (more than one runnable
thread): ``enabled`` is the list of runnable managed threads ordered by
index, ``me`` the thread at the scheduling point (None when it cannot go on:
it blocked, exited, or nothing has run yet).  It returns one of ``enabled``.
Choosers are tight closures: they run on the scheduler's hot path.

- ``random``: uniform among the runnable threads, seeded per schedule:
  schedule ``i`` of seed ``s`` draws from ``derive_seed("schedule", s, i)``,
  a hash of the pair, so no two (seed, schedule) pairs share a stream (with
  ``s + i``, seed 1's schedule 1 was seed 2's schedule 0, and ten seeds of
  2,000 schedules ran almost the same 2,009).
- ``pct``: probabilistic concurrency testing (Burckhardt, Kothari, Musuvathi,
  Nagarakatte, ASPLOS 2010).  Random distinct priorities >= d per thread; the
  highest-priority runnable thread always runs; at d-1 change points, drawn
  uniformly from [1, k] over the choice points, the running thread's priority
  drops to d-1, d-2, ...  A bug of depth d is found with probability
  >= 1/(n k^(d-1)).  k is estimated: the first schedule runs with
  priorities only (no change points), and k is the most choice points any
  schedule so far has made; ``pct_k`` fixes it instead (then ``seed`` alone
  reproduces a schedule).  Past 10*k choice points (10,000 while k is
  unknown) choices become uniform random: a high-priority thread spinning
  on a trylock held by a lower-priority one would otherwise never end.
- ``random`` and ``pct`` cope with spin loops; ``dfs``'s default of keeping
  the current thread running does not (such a schedule ends as "livelock").
- ``dfs``: systematic depth-first enumeration with a preemption bound
  (CHESS's iterative context bounding): the default is to keep running the
  current thread; switching away from a runnable current thread is a
  preemption, and a schedule has at most ``bound`` of them.  Schedule i+1 is
  schedule i's choices up to the deepest choice point with an untried
  alternative, then that alternative, then defaults.  ``exhausted`` when the
  tree within the bound is done.
"""
import hashlib
import random


def derive_seed(*parts):
    """A 64-bit seed for the stream named by ``parts`` (ints and strings):
    a hash of their text, so distinct tuples give unrelated streams and no
    two overlap (``derive_seed("schedule", seed, i)`` for the scheduler's
    choices in schedule ``i``; stress uses ``"program"`` for the workload).
    Independent of PYTHONHASHSEED: the same parts, the same seed."""
    text = ":".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


class RandomWalk:
    name = "random"

    def __init__(self, seed):
        self.seed = seed

    def params(self):
        return {}

    def chooser(self, i):
        rnd = random.Random(derive_seed("schedule", self.seed, i)).random

        def make(run):
            def choose(en, me):
                return en[int(rnd() * len(en))]
            return choose
        return make

    def feedback(self, run):
        return True


class PCT:
    name = "pct"

    def __init__(self, seed, depth, k=None):
        self.seed = seed
        self.depth = depth
        self.k = k
        self.fixed_k = k is not None

    def params(self):
        return {"depth": self.depth, "k": self.k}

    def chooser(self, i):
        rng = random.Random(derive_seed("schedule", self.seed, i))
        d, k = self.depth, self.k

        horizon = 10 * k if k else 10_000
        rnd = rng.random

        def make(run):
            prio = list(range(d, d + len(run.threads)))
            rng.shuffle(prio)
            change = {}         # choice point number (1-based) -> new priority
            if k and d > 1:
                for j, step in enumerate(rng.sample(range(1, k + 1), min(d - 1, k))):
                    change[step] = d - 1 - j
            sched = run.schedule

            def choose(en, me):
                j = len(sched)
                if j >= horizon:
                    return en[int(rnd() * len(en))]
                if change and me is not None:
                    c = change.get(j + 1)
                    if c is not None:
                        prio[me.index] = c
                best = en[0]
                bp = prio[best.index]
                for t in en:
                    p = prio[t.index]
                    if p > bp:
                        best, bp = t, p
                return best
            return choose
        return make

    def feedback(self, run):
        if not self.fixed_k:
            self.k = max(self.k or 1, len(run.schedule))
        return True


class BoundedDFS:
    name = "dfs"

    def __init__(self, bound):
        self.bound = bound
        self.prefix = []        # choices forced in the next schedule
        self.stack = []         # per choice point on the current path: untried alternatives
        self.exhausted = False
        self._info = None
        self.seed = None

    def params(self):
        return {"bound": self.bound}

    def chooser(self, i):
        prefix = self.prefix
        info = self._info = []      # per choice point: (enabled indices, current or None, chosen)

        def make(run):
            sched = run.schedule
            threads = run.threads

            def choose(en, me):
                j = len(sched)
                cur = me if me is not None and me in en else None
                if j < len(prefix):
                    t = threads[prefix[j]]
                    if t not in en:
                        run.misfit(f"the program is not deterministic: dfs forced thread {t.index} "
                                   f"at choice point {j}, where it could run in an earlier "
                                   f"schedule, but now only {[u.index for u in en]} can run")
                else:
                    t = cur if cur is not None else en[0]
                info.append(([u.index for u in en], None if cur is None else cur.index, t.index))
                return t
            return choose
        return make

    def feedback(self, run):
        stack, bound = self.stack, self.bound
        pre = 0
        for j, (en, cur, choice) in enumerate(self._info):
            if j >= len(stack):
                stack.append([a for a in en if a != choice and (cur is None or pre < bound)])
            if cur is not None and choice != cur:
                pre += 1
        while stack and not stack[-1]:
            stack.pop()
        if not stack:
            self.exhausted = True
            return False
        j = len(stack) - 1
        self.prefix = [c for _, _, c in self._info[:j]] + [stack[j].pop(0)]
        return True


def replay_chooser(schedule):
    """Choose exactly ``schedule``; anything else is a misfit (reported as a
    ValueError by ``replay``): a choice naming a thread that cannot run
    there, or more choice points than the schedule has choices."""
    n = len(schedule)

    def make(run):
        sched = run.schedule
        threads = run.threads

        def choose(en, me):
            j = len(sched)
            if j >= n:
                run.misfit(f"the schedule does not fit the program: it has {n} choices but the "
                           f"program reached choice point {j} (threads {[u.index for u in en]} "
                           "could run); a replayed schedule must be complete")
            t = threads[schedule[j]]
            if t not in en:
                run.misfit(f"the schedule does not fit the program: choice {j} picks thread "
                           f"{t.index}, which cannot run there (runnable: {[u.index for u in en]})")
            return t
        return choose
    return make
