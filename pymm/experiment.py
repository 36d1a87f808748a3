"""``pymm experiment``: locking designs side by side under one workload.

The default clock is **virtual** (``pymm.sched.vtime``): the workload's threads
run under the controlled scheduler, one simulated CPU each (``cpus``), the
emulated mm charges the kernel's cost of its work (``pymm.sched.cost_model``),
and every figure -- throughput, latency percentiles, mmap_lock hold and wait
times -- is in virtual time.  Same arguments, same JSON, on any machine.
``--seeds K`` runs every design K times (different tie-breaks, so different
interleavings) and reports mean and 95% confidence interval per figure, with
Welch's t-test marking which differences between designs are significant.

``clock="wall"`` keeps the older measurement: free mode, real concurrency,
wall-clock seconds.  It measures Python (a pymm lock costs about as much as a
page copy, where the kernel's is ~100x cheaper), so it is labelled as such.

A workload is a class with ``key`` (the variant key it compares),
``variants`` (the designs), and ``roles``: a list of ``(role name, method
name)``; each role runs in its own thread, calling the method with a seeded
``random.Random`` in a loop until the duration is over (or until it returns
``DONE``).  Methods time the calls under study with ``self.timed(op, fn,
*args)``.  ``run_experiment`` runs any such class; the named experiments
below are instances, and a user's own workload is run the same way (README).

``--scenario REF`` (any scenario, a user's ``path/file.py:Class`` included)
runs each variant of that scenario in free mode, wall clock, for the same
time without stopping at the first finding (``run_scenario``): findings,
operations per second and the most contended lock classes side by side.
"""
import collections
import json
import math
import random
import statistics
import threading
import time

from . import constants as C, interrupt
from .kernel import Kernel
from .sched import vtime
from .sched._core import _headline
from .sched.cost_model import CostModel

P = C.PAGE_SIZE
CHUNK = 16            # pages per populating mmap
REGION = 64           # pages of the readers' / binder's region


DONE = object()        # a role method returns it to end its thread before the duration is over


def fault_in(w, addr):
    """A reader's page fault: drop the page (MADV_DONTNEED, mmap_lock for
    read) and load it back, timing both: a writer's exclusive hold stalls
    whichever of the two comes next.  A load of a present page takes no
    lock and costs a few virtual ns (the lock-free TLB path), so loading
    present pages would measure nothing of the mm's locks."""
    w.timed("madvise (reader)", w.p.madvise, addr, P, C.MADV_DONTNEED)
    w.timed("fault (reader)", w.p.load, addr, 8)


class Workload:
    """Base of an experiment's workload: the kernel, the process, latency
    recording.  Subclasses set ``key``, ``variants``, ``roles`` and may
    override ``kernel_args``."""

    key = None
    variants = ()
    roles = ()
    kernel_args = {"nodes": 2, "pages_per_node": 16384}
    fixed_variants = {}         # other variant keys the workload pins (the kernel it models)

    def __init__(self, kernel, seed):
        self.k = kernel
        self.seed = seed
        self.p = kernel.spawn("experiment")
        self.lat = collections.defaultdict(list)    # op -> [ns]
        self.ops = 0
        self.errors = collections.Counter()
        self.clock = vtime.now_ns                   # replaced for the wall clock

    def timed(self, op, fn, *a):
        """Call ``fn(*a)``, recording its latency under ``op``; an exception
        (stale state after a bug, ENOMEM...) is counted and returns None."""
        span = vtime.span_begin(op)
        t0 = self.clock()
        try:
            return fn(*a)
        except Exception as e:
            self.errors[f"{op}: {type(e).__name__}"] += 1
            return None
        finally:
            self.lat[op].append(self.clock() - t0)
            self.ops += 1
            vtime.span_end(span)


class _MmapLockWorkload(Workload):
    """Readers load from a populated region (each load of a page that is not
    in the TLB faults, or takes mmap_lock where pymm has no lock-free walk);
    a writer munmaps what the subject mapped."""

    def __init__(self, kernel, seed):
        super().__init__(kernel, seed)
        self.mapped = collections.deque()
        self.chunks = set()
        self.region = self.p.mmap(0, REGION * P, C.PROT_READ | C.PROT_WRITE,
                                  C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_POPULATE)

    roles = (("subject", "subject"), ("writer", "writer"), ("reader", "reader"),
             ("reader", "reader"))

    def reader(self, rng):
        fault_in(self, self.region + rng.randrange(REGION) * P)

    def writer(self, rng):
        try:
            a = self.mapped.popleft()
        except IndexError:
            a = self.timed("mmap (writer)", self.p.mmap, 0, P, C.PROT_READ,
                           C.MAP_PRIVATE | C.MAP_ANONYMOUS)
            if a is None:
                return
        self.timed("munmap (writer)", self.p.munmap, a, CHUNK * P if a in self.chunks else P)
        self.chunks.discard(a)


class PopulateWorkload(_MmapLockWorkload):
    """SCENARIOS.md A: MAP_POPULATE after mmap -- how the write lock is left."""
    key = "populate"
    variants = ("drop-retake", "downgrade", "revalidate")
    call = "mmap+populate"

    def subject(self, rng):
        a = self.timed(self.call, self.p.mmap, 0, CHUNK * P, C.PROT_READ | C.PROT_WRITE,
                       C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_POPULATE)
        if a is not None:
            self.chunks.add(a)
            self.mapped.append(a)


class MbindWorkload(_MmapLockWorkload):
    """SCENARIOS.md B: mbind(MPOL_MF_MOVE) -- mmap_lock across the migration or not."""
    key = "mbind"
    variants = ("hold-mmap-lock", "mpol-alloc")
    call = "mbind+migrate"

    def __init__(self, kernel, seed):
        super().__init__(kernel, seed)
        self.node = 0
        # mbind moves a populated region of its own: the readers' MADV_DONTNEED
        # passes would otherwise empty it, and mbind would have less to migrate
        # the less it stalls them (the designs would not do the same work)
        self.target = self.p.mmap(0, REGION * P, C.PROT_READ | C.PROT_WRITE,
                                  C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_POPULATE)

    def subject(self, rng):
        self.node ^= 1
        self.timed(self.call, self.p.mbind, self.target, REGION * P, C.MPOL_BIND, [self.node],
                   C.MPOL_MF_MOVE)


BIG = 1 << 18       # pages of the munmap experiment's populated region: 1 GiB


class MunmapWorkload(Workload):
    """munmap of a populated 1 GiB region beside faulting readers: does
    munmap hold mmap_lock for write across the zap (write-locked, before
    4.20) or downgrade to read after detaching (dd2283f2605e and its later
    forms)?  The region is populated before the clock starts (MAP_POPULATE
    in the setup: outside virtual time), the unmapper unmaps it at once and
    is done; the readers fault in their own region until the duration is
    over.  The readers' faults take mmap_lock for read: pymm pins
    per-vma-lock off here, the kernel dd2283f2605e was measured on (with
    per-VMA locks, faults in other VMAs do not wait for munmap at all --
    see the per-vma-lock experiment)."""
    key = "munmap-downgrade"
    variants = ("write-locked", "downgrade-always", "unless-growsdown", "stack-write-locked")
    fixed_variants = {"per-vma-lock": "off"}
    pages = BIG                     # a subclass may unmap a smaller region
    kernel_args = {"nodes": 2, "pages_per_node": BIG}
    roles = (("unmapper", "unmapper"), ("reader", "reader"), ("reader", "reader"))

    def __init__(self, kernel, seed):
        super().__init__(kernel, seed)
        self.region = self.p.mmap(0, REGION * P, C.PROT_READ | C.PROT_WRITE,
                                  C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_POPULATE)
        self.big = self.p.mmap(0, self.pages * P, C.PROT_READ | C.PROT_WRITE,
                               C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_POPULATE)

    def unmapper(self, rng):
        if self.big is None:
            return DONE
        big, self.big = self.big, None
        self.timed("munmap (large)", self.p.munmap, big, self.pages * P)

    def reader(self, rng):
        fault_in(self, self.region + rng.randrange(REGION) * P)


FAULTERS = 4         # faulting threads of the per-vma-lock experiment


class PerVmaLockWorkload(Workload):
    """Page faults with and without per-VMA locks (6.4): FAULTERS threads
    each fault the pages of their own region in (a store to a page that is
    not there), dropping them with MADV_DONTNEED when the region is full;
    beside them a writer maps and unmaps a small region (mmap_lock for
    write) in a loop."""
    key = "per-vma-lock"
    variants = ("off", "on")
    roles = (("writer", "writer"),) + tuple(("faulter", f"faulter{i}") for i in range(FAULTERS))

    def __init__(self, kernel, seed):
        super().__init__(kernel, seed)
        self.regions = [self.p.mmap(0, REGION * P, C.PROT_READ | C.PROT_WRITE,
                                    C.MAP_PRIVATE | C.MAP_ANONYMOUS) for _ in range(FAULTERS)]
        self.next = [0] * FAULTERS
        for r in self.regions:
            self.p.store(r, b"anon_vma")       # the first fault makes the anon_vma

    def writer(self, rng):
        a = self.timed("mmap (writer)", self.p.mmap, 0, 4 * P, C.PROT_READ | C.PROT_WRITE,
                       C.MAP_PRIVATE | C.MAP_ANONYMOUS)
        if a is not None:
            self.timed("munmap (writer)", self.p.munmap, a, 4 * P)

    def _fault(self, i):
        n = self.next[i] = (self.next[i] + 1) % REGION
        if n == 0:
            self.p.madvise(self.regions[i], REGION * P, C.MADV_DONTNEED)
            return
        self.timed("fault", self.p.store, self.regions[i] + n * P, b"x")


for _i in range(FAULTERS):
    setattr(PerVmaLockWorkload, f"faulter{_i}", lambda self, rng, _i=_i: self._fault(_i))


EXPERIMENTS = {"populate": PopulateWorkload, "mbind": MbindWorkload, "munmap": MunmapWorkload,
               "per-vma-lock": PerVmaLockWorkload}
DEFAULT_DURATION_MS = {"virtual": 5.0, "wall": 3000.0}


# -- one design, one seed ------------------------------------------------------------------

def _virtual(cls, variant, seed, cpus, duration_ns, model, trace):
    roles = cls.roles

    def setup():
        return cls(Kernel(variants={**cls.fixed_variants, cls.key: variant}, seed=seed,
                          **cls.kernel_args), seed)

    def body(i):
        def role(w):
            rng = random.Random(f"pymm-experiment:{seed}:{i}")
            fn = getattr(w, roles[i][1])
            now = vtime.now_ns
            while now() < duration_ns and fn(rng) is not DONE:
                pass
        role.__name__ = f"role{i}"
        return role

    run, vc = vtime.simulate(setup, [body(i) for i in range(len(roles))], seed=seed, cpus=cpus,
                             model=model, trace=trace)
    w = run.state
    findings = sorted({f"{f.kind}: {f.title}" for f in w.k.findings()})
    if run.failure is not None:
        findings = sorted(set(findings) | {f"{run.failure.kind}: {_headline(run.failure) or run.failure.kind}"})

    def st(name):
        return vc.stats.get(name) or {"acquisitions": 0, "contentions": 0, "wait_total_ns": 0,
                                      "wait_max_ns": 0, "hold_total_ns": 0, "hold_max_ns": 0}
    w_, r_ = st("&mm->mmap_lock-W"), st("&mm->mmap_lock-R")
    end = max(vc.clock) if run.failure is not None else max(duration_ns, max(vc.clock))
    return {
        "findings": findings,
        "errors": dict(w.errors),
        "ops": w.ops,
        "virtual_ns": end,
        "throughput_ops_per_s": w.ops / (end / 1e9) if end else 0.0,
        "lat_ns": dict(w.lat),
        "mmap_lock": {"write_hold_max_us": w_["hold_max_ns"] / 1e3,
                      "write_hold_total_us": w_["hold_total_ns"] / 1e3,
                      "read_wait_max_us": r_["wait_max_ns"] / 1e3,
                      "contentions": w_["contentions"] + r_["contentions"]},
        "trace": vc.trace,
        "roles": [name for name, _ in roles],
    }


def _wall(cls, variant, seed, duration_ns):
    from .locking import lock_stat
    from .sched import free_mode
    k = Kernel(variants={**cls.fixed_variants, cls.key: variant}, seed=seed, **cls.kernel_args)
    w = cls(k, seed)
    w.clock = time.perf_counter_ns
    lock_stat.reset()
    lock_stat.enable()
    stop = threading.Event()
    roles = [(n, getattr(w, m)) for n, m in cls.roles]

    def body(i, fn):
        rng = random.Random(f"pymm-experiment:{seed}:{i}")
        while not stop.is_set() and fn(rng) is not DONE:
            pass

    ths = [threading.Thread(target=body, args=(i, fn), name=f"exp-{n}-{i}", daemon=True)
           for i, (n, fn) in enumerate(roles)]
    t0 = time.perf_counter_ns()
    with free_mode(seed):
        try:
            for t in ths:
                t.start()
            stop.wait(duration_ns / 1e9)
        finally:                  # also on Ctrl-C: the workers stop at their next step
            stop.set()
        for t in ths:
            t.join(10)
    elapsed = time.perf_counter_ns() - t0
    lock_stat.disable()
    snap = lock_stat.snapshot()
    wd, rd = snap.get("&mm->mmap_lock-W") or {}, snap.get("&mm->mmap_lock-R") or {}
    return {
        "findings": sorted({f"{f.kind}: {f.title}" for f in k.findings()}),
        "errors": dict(w.errors),
        "stuck_threads": [t.name for t in ths if t.is_alive()],
        "ops": w.ops,
        "virtual_ns": elapsed,
        "throughput_ops_per_s": w.ops / (elapsed / 1e9),
        "lat_ns": dict(w.lat),
        "mmap_lock": {"write_hold_max_us": wd.get("holdtime_max", 0.0),
                      "write_hold_total_us": wd.get("holdtime_total", 0.0),
                      "read_wait_max_us": rd.get("waittime_max", 0.0),
                      "contentions": wd.get("contentions", 0) + rd.get("contentions", 0)},
        "trace": None,
        "roles": [name for name, _ in roles],
    }



# -- statistics ------------------------------------------------------------------------------

# two-sided 95% quantiles of Student's t by degrees of freedom (df > 30: normal)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
        17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 22: 2.074, 24: 2.064, 26: 2.056,
        28: 2.048, 30: 2.042}


def t95(df):
    """Student's t 0.975 quantile for ``df`` degrees of freedom (rounded down
    to the table's entry, i.e. conservative)."""
    if df > 30:
        return 1.960
    d = max(k for k in _T95 if k <= max(1, int(df)))
    return _T95[d]


def mean_ci95(xs):
    """Mean and half-width of its 95% confidence interval (0 for one sample)."""
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return {"mean": _r(m), "ci95": None}
    return {"mean": _r(m), "ci95": _r(t95(len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs)))}


def welch_significant(a, b):
    """Do samples ``a`` and ``b`` differ at the 5% level (Welch's t-test)?"""
    if len(a) < 2 or len(b) < 2:
        return False
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.fmean(a) - statistics.fmean(b)
    if va + vb == 0:
        return diff != 0
    t = abs(diff) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va ** 2 / (len(a) - 1) if va else 0) + (vb ** 2 / (len(b) - 1) if vb else 0))
    return t > t95(df)


def _r(x):
    return None if x is None else round(x, 3)


def _percentiles(xs_ns):
    if not xs_ns:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    xs = sorted(xs_ns)
    pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]
    return {"n": len(xs), "p50": _r(pick(0.50) / 1e3), "p99": _r(pick(0.99) / 1e3),
            "max": _r(xs[-1] / 1e3)}


# -- the experiment ---------------------------------------------------------------------------

FIGURES = ("throughput_ops_per_s", "write_hold_max_us", "write_hold_total_us",
           "read_wait_max_us", "contentions")


def run_experiment(cls, variants=None, *, cpus=None, seeds=1, seed=0, duration_ms=None,
                   clock="virtual", cost_model=None, trace=False, name=None):
    """Run workload class ``cls`` once per design in ``variants`` (default:
    all of ``cls.variants``) and seed (``seed`` .. ``seed + seeds - 1``);
    return the result document (see the README for its keys)."""
    if clock not in ("virtual", "wall"):
        raise ValueError(f"unknown clock {clock!r}; expected 'virtual' or 'wall'")
    variants = list(variants or cls.variants)
    for v in variants:
        if v not in cls.variants:
            raise ValueError(f"unknown variant {v!r} for experiment {name or cls.key!r}; "
                             f"expected one of {', '.join(cls.variants)}")
    if type(seeds) is not int or seeds < 1:
        raise ValueError(f"seeds must be an int >= 1, got {seeds!r}")
    if cpus is not None and (type(cpus) is not int or cpus < 1):
        raise ValueError(f"cpus must be an int >= 1, got {cpus!r}")
    duration_ms = DEFAULT_DURATION_MS[clock] if duration_ms is None else duration_ms
    if isinstance(duration_ms, bool) or not isinstance(duration_ms, (int, float)) or not duration_ms > 0:
        raise ValueError(f"duration_ms must be a positive number, got {duration_ms!r}")
    model = cost_model or CostModel()
    dur = int(duration_ms * 1e6)
    out = {"experiment": name or cls.key, "variant_key": cls.key, "clock": clock,
           "cpus": cpus, "seeds": seeds, "seed": seed, "duration_ms": duration_ms,
           "cost_model": model.as_json() if clock == "virtual" else None,
           "variants": {}}
    samples = {}
    traces = []
    def measure(v):
        per_seed = []
        for s in range(seed, seed + seeds):
            if clock == "virtual":
                per_seed.append(_virtual(cls, v, s, cpus, dur, model, trace and s == seed))
            else:
                per_seed.append(_wall(cls, v, s, dur))
        return per_seed

    # Ctrl-C ends the experiment with the designs measured so far ("interrupted": true)
    done = interrupt.run_plan(variants, measure)
    out["interrupted"] = done.interrupted
    out["planned"] = len(variants)
    variants = variants[:len(done.results)]
    for v, per_seed in zip(variants, done.results):
        for s, r in zip(range(seed, seed + seeds), per_seed):
            if r["trace"]:
                traces.append((v, s, r["roles"], r["trace"]))
        if out["cpus"] is None and clock == "virtual":
            out["cpus"] = len(per_seed[0]["roles"])
        lat = collections.defaultdict(list)
        for r in per_seed:
            for op, xs in r["lat_ns"].items():
                lat[op].extend(xs)
        samples[v] = {"throughput_ops_per_s": [r["throughput_ops_per_s"] for r in per_seed],
                      **{k: [r["mmap_lock"][k] for r in per_seed] for k in FIGURES[1:]}}
        ml = {k: mean_ci95(samples[v][k]) for k in FIGURES[1:]}
        out["variants"][v] = {
            "findings": sorted({f for r in per_seed for f in r["findings"]}),
            "errors": dict(sum((collections.Counter(r["errors"]) for r in per_seed),
                               collections.Counter())),
            "throughput_ops_per_s": mean_ci95(samples[v]["throughput_ops_per_s"]),
            "latency_us": {op: _percentiles(xs) for op, xs in sorted(lat.items())},
            "mmap_lock": {**{k: ml[k]["mean"] for k in ml}, "ci95": {k: ml[k]["ci95"] for k in ml}},
            "_lat_ns": dict(lat),
        }
        if clock == "wall":
            out["variants"][v]["stuck_threads"] = sorted({t for r in per_seed
                                                          for t in r["stuck_threads"]})
    out["significant"] = [[a, b, f] for f in FIGURES for i, a in enumerate(variants)
                          for b in variants[i + 1:] if welch_significant(samples[a][f], samples[b][f])]
    out["_traces"] = traces
    return out


def run(name, variants=None, **kw):
    """Run the named experiment (``EXPERIMENTS``); see ``run_experiment``."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; expected one of {', '.join(EXPERIMENTS)}")
    return run_experiment(EXPERIMENTS[name], variants, name=name, **kw)


def public(res):
    """The result without its private parts (raw latencies, traces): what --json writes."""
    doc = {k: v for k, v in res.items() if not k.startswith("_")}
    doc["variants"] = {v: {k: x for k, x in r.items() if not k.startswith("_")}
                       for v, r in res["variants"].items()}
    return doc


def dumps(res):
    """The JSON text of a result (same run, same bytes: nothing in it comes from the wall clock)."""
    return json.dumps(public(res), indent=1) + "\n"


def run_scenario(ref, seconds=3.0, seed=0):
    """Every variant of scenario ``ref`` in free mode for ``seconds`` each
    (the stress runner's rounds, not stopping when caught), with lock_stat."""
    from . import stress
    from .locking import lock_stat
    cls = stress.get_scenario(ref)
    out = {"experiment": stress.scenario_ref(ref), "variant_key": cls.variant_key,
           "seconds_per_variant": seconds, "seed": seed, "variants": {}, "_raw": {}}
    variants = cls.variants()

    def measure(v):
        r = stress.run_free(ref, v, seed, seconds, stop_when_caught=False, lockstat=True)
        return r, lock_stat.snapshot()
    # Ctrl-C ends it with the variants measured so far ("interrupted": true)
    done = interrupt.run_plan(variants, measure)
    out["interrupted"], out["planned"] = done.interrupted, len(variants)
    for v, (r, snap) in zip(variants, done.results):
        top = sorted(snap.items(), key=lambda kv: (-kv[1]["contentions"], kv[0]))[:3]
        out["variants"][v] = {
            "expected": cls.expected(v),
            "findings": sorted({f"{f['kind']}: {f['title']}" for f in r.findings}),
            "seconds": round(r.seconds, 2), "ops_per_s": round(r.ops / r.seconds, 1) if r.seconds else 0,
            "contended": [{"lock": name, "contentions": d["contentions"],
                           "waittime_avg_us": round(d["waittime_avg"], 1),
                           "holdtime_avg_us": round(d["holdtime_avg"], 1)} for name, d in top]}
    return out


def format_scenario_result(res):
    from .bench import format_table
    vs = list(res["variants"])
    rows = []

    def row(label, f):
        rows.append({"": label, **{v: f(res["variants"][v]) for v in vs}})
    row("expected", lambda r: r["expected"])
    row("findings", lambda r: ", ".join(
        f"{k} x{n}" for k, n in collections.Counter(f.split(":")[0] for f in r["findings"]).items())
        or "none")
    row("ops/s", lambda r: r["ops_per_s"])
    for i in range(3):
        row(f"contended #{i + 1} (contentions, wait avg us)", lambda r, i=i: (
            f"{r['contended'][i]['lock']} ({r['contended'][i]['contentions']}, "
            f"{r['contended'][i]['waittime_avg_us']})" if len(r["contended"]) > i else ""))
    head = (f"experiment {res['experiment']}: {', '.join(vs)} -- {res['seconds_per_variant']} s "
            f"each, seed {res['seed']}, free mode (the stress runner's rounds)")
    return head + "\n" + format_table(rows)


def format_result(res):
    from .bench import format_table
    vs = list(res["variants"])
    sig = {(a, b, f) for a, b, f in res["significant"]} | {(b, a, f) for a, b, f in res["significant"]}
    rows = []

    def row(label, f, figure=None):
        cells = {v: f(res["variants"][v]) for v in vs}
        if figure is not None and res["seeds"] > 1:
            for v in vs:
                if any((v, u, figure) in sig for u in vs if u != v):
                    cells[v] = f"{cells[v]} *"
        rows.append({"": label, **cells})

    def ci(d):
        m, h = d["mean"], d["ci95"]
        return _num(m) if h is None else f"{_num(m)} ± {_num(h)}"
    row("findings", lambda r: ", ".join(
        f"{k} x {n}" for k, n in collections.Counter(f.split(":")[0] for f in r["findings"]).items())
        or "none")
    row("errors in workload", lambda r: sum(r["errors"].values()))
    row("throughput (ops/s)", lambda r: ci(r["throughput_ops_per_s"]), "throughput_ops_per_s")
    ops = sorted({op for r in res["variants"].values() for op in r["latency_us"]})
    for op in ops:
        for q in ("p50", "p99", "max"):
            row(f"{op} {q} (us)", lambda r, op=op, q=q: _num(r["latency_us"].get(op, {}).get(q)))
    labels = {"write_hold_max_us": "mmap_lock write hold max (us)",
              "write_hold_total_us": "mmap_lock write hold total (us)",
              "read_wait_max_us": "mmap_lock read wait max (us)",
              "contentions": "mmap_lock contentions"}
    for k, label in labels.items():
        row(label, lambda r, k=k: ci({"mean": r["mmap_lock"][k], "ci95": r["mmap_lock"]["ci95"][k]}), k)
    if res["clock"] == "virtual":
        head = (f"experiment {res['experiment']}: {', '.join(vs)} -- virtual time, "
                f"{res['duration_ms']} ms x {res['seeds']} seed(s) from {res['seed']}, "
                f"{res['cpus']} CPUs, cost model {'default' if _default(res) else 'custom'}")
    else:
        head = (f"experiment {res['experiment']}: {', '.join(vs)} -- WALL clock (measures "
                f"Python, not the kernel), {res['duration_ms']} ms x {res['seeds']} seed(s), "
                "free mode with delay injection")
    foot = ("\n  * differs significantly from another design (Welch's t-test, 5%)"
            if res["seeds"] > 1 and res["significant"] else "")
    return head + "\n" + format_table(rows) + foot


def _default(res):
    cm = res["cost_model"] or {}
    return all(not d["source"].startswith("user") for d in cm.values())


def _num(x):
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:,.1f}" if abs(x) < 1e5 else f"{x:,.0f}"
    return f"{x:,}"


def trace_document(res):
    """The run's Chrome trace-event JSON (opens in Perfetto / chrome://tracing):
    one process per design (its first seed), one track per simulated CPU
    (thread), complete events ("ph": "X") for syscalls, faults, lock holds and
    waits, timestamps in virtual microseconds."""
    events = []
    for pid, (v, s, roles, tr) in enumerate(res["_traces"], start=1):
        events.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
                       "args": {"name": f"{res['experiment']} {v} (seed {s})"}})
        for i, role in enumerate(roles):
            events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": i,
                           "args": {"name": f"CPU {i}: {role}"}})
        for e in tr:
            events.append({**e, "pid": pid})
    return {"traceEvents": events, "displayTimeUnit": "ns",
            "otherData": {"experiment": res["experiment"], "clock": res["clock"]}}


def plot(res, path):
    """Latency CDFs on a log axis, one line per design, one panel per operation."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ops = sorted({op for r in res["variants"].values() for op in r["_lat_ns"]})
    fig, axes = plt.subplots(1, len(ops), figsize=(5 * len(ops), 4), squeeze=False)
    for ax, op in zip(axes[0], ops):
        for v, r in res["variants"].items():
            xs = sorted(x / 1e3 for x in r["_lat_ns"].get(op, []) if x > 0)
            if xs:
                ax.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", label=v)
        ax.set_xscale("log")
        ax.set_title(op)
        ax.set_xlabel(f"latency (us, {res['clock']} clock)")
        ax.set_ylabel("fraction of calls")
        ax.legend()
    fig.suptitle(f"pymm experiment {res['experiment']}")
    fig.tight_layout()
    fig.savefig(path)
