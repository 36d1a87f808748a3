"""``pymm experiment``: locking designs side by side under one free-mode
workload -- findings, syscall throughput, latency percentiles of the call
under study, of concurrent mmap_lock readers and writers, and mmap_lock
contention from lock_stat.

- populate: drop-retake vs downgrade vs revalidate.  A populater maps and
  populates (MAP_POPULATE, so the populate variant decides how the write lock
  is left), readers load from a populated region (every pymm user access takes
  mmap_lock for read, as a fault does), a writer munmaps what the populater
  mapped.
- mbind: hold-mmap-lock vs mpol-alloc.  A binder moves a region between nodes
  with mbind(MPOL_BIND, MPOL_MF_MOVE); readers and a writer as above.

Every variant runs the same workload with the same seed and delay-injection
settings, one after the other, for the same number of seconds.
"""
import collections
import random
import threading
import time

from . import constants as C
from .kernel import Kernel
from .locking import lock_stat, lockdep
from .sched import free_mode

P = C.PAGE_SIZE
CHUNK = 16            # pages per populating mmap
REGION = 64           # pages of the readers' / binder's region


def _percentiles(xs):
    if not xs:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    xs = sorted(xs)
    pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]
    return {"n": len(xs), "p50": round(pick(0.50) * 1e6, 1), "p99": round(pick(0.99) * 1e6, 1),
            "max": round(xs[-1] * 1e6, 1)}


class _Workload:
    """Shared pieces: the readers, the writer, latency recording."""

    def __init__(self, kernel, seed):
        self.k = kernel
        self.p = kernel.spawn("experiment")
        self.seed = seed
        self.lat = collections.defaultdict(list)
        self.ops = 0
        self.errors = collections.Counter()
        self.mapped = collections.deque()
        self.region = self.p.mmap(0, REGION * P, C.PROT_READ | C.PROT_WRITE,
                                  C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_POPULATE)

    def timed(self, what, fn, *a):
        t0 = time.perf_counter()
        try:
            return fn(*a)
        except Exception as e:               # stale state after a bug, ENOMEM...: count, go on
            self.errors[f"{what}: {type(e).__name__}"] += 1
            return None
        finally:
            self.lat[what].append(time.perf_counter() - t0)
            self.ops += 1

    def reader(self, rng):
        self.timed("fault (reader)", self.p.load, self.region + rng.randrange(REGION) * P, 8)

    def writer(self, rng):
        try:
            a = self.mapped.popleft()
        except IndexError:
            a = self.p.mmap(0, P, C.PROT_READ, C.MAP_PRIVATE | C.MAP_ANONYMOUS)
            self.ops += 1
        self.timed("munmap (writer)", self.p.munmap, a, CHUNK * P if a in self._chunks else P)
        self._chunks.discard(a)

    _chunks = None


class PopulateWorkload(_Workload):
    key = "populate"
    call = "mmap+populate"

    def __init__(self, kernel, seed):
        super().__init__(kernel, seed)
        self._chunks = set()

    def subject(self, rng):
        a = self.timed(self.call, self.p.mmap, 0, CHUNK * P, C.PROT_READ | C.PROT_WRITE,
                       C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_POPULATE)
        if a is not None:
            self._chunks.add(a)
            self.mapped.append(a)


class MbindWorkload(_Workload):
    key = "mbind"
    call = "mbind+migrate"

    def __init__(self, kernel, seed):
        super().__init__(kernel, seed)
        self._chunks = set()
        self.node = 0

    def subject(self, rng):
        self.node ^= 1
        self.timed(self.call, self.p.mbind, self.region, REGION * P, C.MPOL_BIND, [self.node],
                   C.MPOL_MF_MOVE)


EXPERIMENTS = {
    "populate": (PopulateWorkload, ("drop-retake", "downgrade", "revalidate")),
    "mbind": (MbindWorkload, ("hold-mmap-lock", "mpol-alloc")),
}
READERS = 2


def run_variant(workload_cls, variant, seconds, seed):
    k = Kernel(nodes=2, pages_per_node=16384, variants={workload_cls.key: variant}, seed=seed)
    w = workload_cls(k, seed)
    lockdep.reset()
    lock_stat.reset()
    lock_stat.enable()
    stop = threading.Event()
    roles = [("subject", w.subject), ("writer", w.writer)] + [("reader", w.reader)] * READERS

    def body(i, fn):
        rng = random.Random(seed * 1000003 + i)
        while not stop.is_set():
            fn(rng)

    ths = [threading.Thread(target=body, args=(i, fn), name=f"exp-{n}-{i}", daemon=True)
           for i, (n, fn) in enumerate(roles)]
    t0 = time.perf_counter()
    with free_mode(seed):
        for t in ths:
            t.start()
        stop.wait(seconds)
        stop.set()
        for t in ths:
            t.join(10)
    elapsed = time.perf_counter() - t0
    lock_stat.disable()
    snap = lock_stat.snapshot()
    stuck = [t.name for t in ths if t.is_alive()]

    def ml(rw):
        d = snap.get(f"&mm->mmap_lock-{rw}")
        if not d:
            return {"contentions": 0, "acquisitions": 0, "waittime_avg_us": 0.0, "holdtime_avg_us": 0.0}
        return {"contentions": d["contentions"], "acquisitions": d["acquisitions"],
                "waittime_avg_us": round(d["waittime_avg"], 1), "holdtime_avg_us": round(d["holdtime_avg"], 1),
                "waittime_total_us": round(d["waittime_total"], 1),
                "holdtime_max_us": round(d["holdtime_max"], 1)}
    return {
        "findings": sorted({f"{f.kind}: {f.title}" for f in k.findings()}),
        "errors": dict(w.errors),
        "stuck_threads": stuck,
        "seconds": round(elapsed, 2),
        "syscalls_per_s": round(w.ops / elapsed, 1),
        "latency_us": {what: _percentiles(xs) for what, xs in sorted(w.lat.items())},
        "mmap_lock": {"write": ml("W"), "read": ml("R")},
        "_raw": {what: xs for what, xs in w.lat.items()},
    }


def run(name, seconds=3.0, seed=0):
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; expected one of {', '.join(EXPERIMENTS)}")
    cls, variants = EXPERIMENTS[name]
    out = {"experiment": name, "variant_key": cls.key, "seconds_per_variant": seconds,
           "seed": seed, "variants": {}}
    for v in variants:
        out["variants"][v] = run_variant(cls, v, seconds, seed)
    raw = {v: r.pop("_raw") for v, r in out["variants"].items()}
    out["_raw"] = raw
    return out


def format_result(res):
    from .bench import format_table
    vs = list(res["variants"])
    rows = []

    def row(label, f):
        rows.append({"": label, **{v: f(res["variants"][v]) for v in vs}})
    row("findings", lambda r: ", ".join(
        f"{k} x{n}" for k, n in collections.Counter(f.split(":")[0] for f in r["findings"]).items())
        or "none")
    row("errors in workload", lambda r: sum(r["errors"].values()))
    row("syscalls/s", lambda r: r["syscalls_per_s"])
    whats = sorted({w for r in res["variants"].values() for w in r["latency_us"]})
    for w in whats:
        for q in ("p50", "p99", "max"):
            row(f"{w} {q} (us)", lambda r, w=w, q=q: r["latency_us"].get(w, {}).get(q))
    for rw in ("write", "read"):
        row(f"mmap_lock {rw} contentions", lambda r, rw=rw: r["mmap_lock"][rw]["contentions"])
        row(f"mmap_lock {rw} wait avg (us)", lambda r, rw=rw: r["mmap_lock"][rw]["waittime_avg_us"])
        row(f"mmap_lock {rw} hold avg (us)", lambda r, rw=rw: r["mmap_lock"][rw]["holdtime_avg_us"])
    head = (f"experiment {res['experiment']}: {', '.join(vs)} -- {res['seconds_per_variant']} s each, "
            f"seed {res['seed']}, free mode with delay injection")
    return head + "\n" + format_table(rows)


def plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    raw = res["_raw"]
    whats = sorted({w for r in raw.values() for w in r})
    fig, axes = plt.subplots(1, len(whats), figsize=(5 * len(whats), 4), squeeze=False)
    for ax, w in zip(axes[0], whats):
        for v, r in raw.items():
            xs = [x * 1e6 for x in r.get(w, [])]
            if xs:
                ax.hist(xs, bins=60, histtype="step", label=v, log=True)
        ax.set_title(w)
        ax.set_xlabel("latency (us)")
        ax.legend()
    fig.suptitle(f"pymm experiment {res['experiment']}")
    fig.tight_layout()
    fig.savefig(path)
