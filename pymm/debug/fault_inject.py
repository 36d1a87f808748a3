"""Faults on purpose: the kernel's fault-injection framework
(lib/fault-inject.c ``should_fail``, mm/fail_page_alloc.c, mm/failslab.c).

The problem.  An allocation that fails is the path nobody tests: every
caller must turn it into the errno or signal Linux gives (ENOMEM from a
system call, VM_FAULT_OOM or VM_FAULT_SIGBUS from a fault), undo what it had
done, and drop every lock it took.  A pool that runs dry reaches only the
page allocator and the huge-page pool, and only when a workload fills them.

The solution, as in Linux: a ``FaultAttr`` per allocation site with the
kernel's knobs -- ``probability`` (percent), ``interval`` (fail at most every
Nth call), ``times`` (how many failures in all, -1 unlimited), ``space``
(bytes to let through first) and ``task_filter`` (fail only tasks whose
``make_it_fail`` is set, the kernel's /proc/PID/make-it-fail) -- and one
decision function, ``should_fail``, called at the top of each allocation.

Sites (``SITES``): where the kernel has one fault_attr per facility, pymm has
one per allocation site the issue names, so a run can aim at one path:

- ``page-alloc``: fail_page_alloc, every order-0 page (anonymous faults,
  COW, page cache, swap-in, migration targets);
- ``pgtable-alloc``: page-table pages (``__pte_alloc``/``__pmd_alloc``,
  ``huge_pte_alloc``) -- in the kernel these are page allocations too; pymm
  separates them so a run can aim at the table paths;
- ``slab``: failslab on ``vm_area_cachep``, ``anon_vma_cachep`` and
  ``anon_vma_chain_cachep``: new VMAs for mmap and brk, fork's VMA copies,
  ``anon_vma_prepare``, ``anon_vma_fork``, ``anon_vma_clone`` of a merge
  (``dup_anon_vma``: the merge is given up) (split_vma's copy and its
  anon_vma_clone are not sites: pymm's split callers have no undo path yet);
- ``hugetlb-reserve``: ``hugetlb_reserve_pages`` at mmap (ENOMEM);
- ``hugetlb-dequeue``: taking a page from the huge-page pool at fault time
  (SIGBUS, as the kernel's ``vmf_error(-ENOSPC)``) and for migration.

Determinism.  Each Kernel has its own ``FaultInjector`` whose random stream
is seeded from the Kernel's seed (the schedule's seed in a controlled run:
the stress runner builds each schedule's kernel from it), and decisions are
taken in the order allocations happen.  Under the controlled scheduler that
order is a function of the schedule, so a replay token reproduces every
injected failure exactly; in free mode the same seed gives the same stream
but threads race for it.

Configuration: ``Kernel.fail(site, ...)`` or ``Kernel(fail={site: {...}})``;
``pymm stress --fail SITE:KEY=VALUE,...``; the plugin's ``--pymm-fail``.
``parse_spec`` reads the command-line form.
"""
import random
import threading

from ..context import current

SITES = {
    "page-alloc": "order-0 page allocations (fail_page_alloc): faults, COW, page cache, "
                  "swap-in, migration targets",
    "pgtable-alloc": "page-table pages: __pte_alloc, __pmd_alloc, huge_pte_alloc",
    "slab": "VMA and anon_vma allocations (failslab): mmap/brk VMAs, fork's VMA copies, "
            "anon_vma_prepare, anon_vma_fork, a merge's anon_vma_clone",
    "hugetlb-reserve": "hugetlb_reserve_pages at mmap",
    "hugetlb-dequeue": "taking a huge page from the pool (fault, COW, migration)",
}

_KNOBS = {"probability": float, "interval": int, "times": int, "space": int, "task_filter": bool}


class FaultAttr:
    """``struct fault_attr``: one site's knobs and counters.  Knobs are
    changed only through ``set`` (which validates); ``calls`` and ``failures``
    count decisions and injected failures."""

    __slots__ = ("site", "probability", "interval", "times", "space", "task_filter",
                 "calls", "failures")

    def __init__(self, site):
        self.site = site
        self.probability = 0.0      # percent; 0 disables the site
        self.interval = 1
        self.times = -1
        self.space = 0
        self.task_filter = False
        self.calls = 0
        self.failures = 0

    def set(self, **kw):
        for name, v in kw.items():
            if name not in _KNOBS:
                raise ValueError(f"fault injection: unknown knob {name!r}; expected one of "
                                 f"{', '.join(_KNOBS)}")
            typ = _KNOBS[name]
            if typ is bool:
                if not isinstance(v, bool):
                    raise ValueError(f"fault injection: {name} must be True or False, got {v!r}")
            elif isinstance(v, bool) or not isinstance(v, (int, float) if typ is float else int):
                raise ValueError(f"fault injection: {name} must be {'a number' if typ is float else 'an int'}, "
                                 f"got {v!r}")
            if name == "probability" and not 0 <= v <= 100:
                raise ValueError(f"fault injection: probability is a percentage in 0..100, got {v!r}")
            if name == "interval" and v < 1:
                raise ValueError(f"fault injection: interval must be >= 1, got {v!r}")
            if name == "times" and v < -1:
                raise ValueError(f"fault injection: times must be >= 0, or -1 for unlimited, got {v!r}")
            if name == "space" and v < 0:
                raise ValueError(f"fault injection: space must be >= 0, got {v!r}")
        for name, v in kw.items():
            setattr(self, name, _KNOBS[name](v))
        return self

    @property
    def enabled(self):
        return self.probability > 0 and self.times != 0

    def settings(self):
        return {n: getattr(self, n) for n in _KNOBS}

    def __repr__(self):
        return (f"<FaultAttr {self.site} probability={self.probability} interval={self.interval} "
                f"times={self.times} space={self.space} task_filter={self.task_filter} "
                f"calls={self.calls} failures={self.failures}>")


class FaultInjector:
    """A kernel's fault attributes and its random stream."""

    def __init__(self, seed):
        self.attrs = {s: FaultAttr(s) for s in SITES}
        self.armed = False          # any site enabled: the one test on the fast path
        self.seed = seed
        self.random = random.Random(f"pymm-fault-inject:{seed}")
        self._lock = threading.Lock()   # pymm's own bookkeeping, not an emulated kernel lock

    def configure(self, site, **kw):
        if site not in SITES:
            raise ValueError(f"fault injection: unknown site {site!r}; expected one of "
                             f"{', '.join(SITES)}")
        a = self.attrs[site].set(**kw)
        self.armed = any(x.enabled for x in self.attrs.values())
        return a

    def should_fail(self, site, task, size=1):
        """should_fail_ex(): decide whether this allocation fails."""
        a = self.attrs[site]
        if not a.enabled:
            return False
        if a.task_filter and (task is None or not getattr(task, "make_it_fail", False)):
            return False
        with self._lock:
            a.calls += 1
            if a.times == 0:
                return False
            if a.space > 0:
                a.space = max(0, a.space - size)
                return False
            if a.interval > 1 and a.calls % a.interval:
                return False
            if a.probability < 100 and a.probability <= self.random.random() * 100:
                return False
            if a.times > 0:
                a.times -= 1
            a.failures += 1
            if not any(x.enabled for x in self.attrs.values()):
                self.armed = False
        return True

    def stats(self):
        return {s: {"calls": a.calls, "failures": a.failures, **a.settings()}
                for s, a in self.attrs.items()}


def should_fail(kernel, site, size=1):
    """The hook every allocation site calls first.  Context: any (takes no
    emulated lock: fine under spinlocks, as the kernel's is)."""
    fi = kernel.fault_inject
    if not fi.armed:
        return False
    return fi.should_fail(site, current(), size)


def parse_spec(text):
    """``SITE[:KEY=VALUE,...]`` or ``SITE:PROBABILITY`` (``all`` for every
    site) -> {site: {knob: value}}.  Raises ValueError with a one-line message."""
    if not isinstance(text, str) or not text:
        raise ValueError("--fail expects SITE:KEY=VALUE,... (e.g. page-alloc:probability=5)")
    site, _, rest = text.partition(":")
    sites = list(SITES) if site == "all" else [site]
    if site != "all" and site not in SITES:
        raise ValueError(f"--fail: unknown site {site!r}; expected all or one of {', '.join(SITES)}")
    kw = {"probability": 100.0}
    for item in filter(None, rest.split(",")):
        if "=" not in item:
            item = f"probability={item}"
        k, _, v = item.partition("=")
        if k not in _KNOBS:
            raise ValueError(f"--fail: unknown knob {k!r}; expected one of {', '.join(_KNOBS)}")
        try:
            kw[k] = (v.lower() in ("1", "true", "yes", "y")) if _KNOBS[k] is bool else _KNOBS[k](v)
        except ValueError:
            raise ValueError(f"--fail: {k}={v!r} is not a valid {_KNOBS[k].__name__}") from None
    FaultAttr("check").set(**kw)            # validate the values once, with the knob's message
    return {s: dict(kw) for s in sites}


def format_spec(config):
    """The inverse of parse_spec for a whole config: 'site@k=v;k=v+site2@...'
    (used in replay tokens; no ':' so a token still splits on ':')."""
    parts = []
    for site in sorted(config):
        kv = ";".join(f"{k}={config[site][k]}" for k in sorted(config[site]))
        parts.append(f"{site}@{kv}")
    return "+".join(parts)


def parse_token_spec(text):
    out = {}
    for part in filter(None, text.split("+")):
        site, _, kv = part.partition("@")
        spec = parse_spec(f"{site}:{kv.replace(';', ',')}")
        out.update(spec)
    return out


def merge(configs):
    out = {}
    for c in configs:
        for site, kw in c.items():
            out.setdefault(site, {}).update(kw)
    return out
