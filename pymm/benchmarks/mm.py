"""Benchmark section "mm": the emulated memory manager's speed and size.

- Page faults per second on one thread: a large private anonymous mapping
  written one byte per page (every store is a write fault: mmap_lock for
  read, VMA lookup, handle_mm_fault, a fresh folio), with the lock validator
  off and on.
- Loads of a present page: lock-free through the TLB, lock-free with a TLB
  miss (the hardware page walk), and the old path of every access
  (``Kernel(tlb=False)``: mmap_lock for read and the PTE lock), side by side;
  the speedup of the lock-free hit over the old path (target >= 3x).
- A syscall mix on 8 threads: each loops mmap / store / load / munmap of its
  own 4-page mapping, with all threads in one process (one mmap_lock) or
  spread over two; operations per second.
- VMA lookup cost: nanoseconds per ``mm.mm_mt.find_vma`` under
  mmap_read_lock with 100,000 VMAs (small mappings separated by gaps so they
  cannot merge, built with MAP_FIXED), and the ratio of the tree's search
  alone at 100,000 against 1,000 VMAs (target <= 2x: the search is
  O(log n); find_vma's lock-rule check is a constant that used to hide it).
- Memory per populated page: RSS growth of a fresh interpreter across a
  MAP_POPULATE of 4 GiB (1,048,576 pages; ``quick``: 100,000) in a Kernel
  with enough pages (target <= 300 bytes per page: folios are small and
  their contents are allocated at the first store).

Figures are wall-clock on a shared machine: compare within one run.
"""
import gc
import json
import random
import subprocess
import sys
import threading
import time

from .. import constants as C
from ..locking import lockdep
from . import met

P = C.PAGE_SIZE
RW = C.PROT_READ | C.PROT_WRITE
ANON = C.MAP_PRIVATE | C.MAP_ANONYMOUS


class _validator:
    """``with _validator(on):`` -- the lock validator on or off for the block,
    restored afterwards.  Toggle only while no lock is held."""

    def __init__(self, on):
        self.on = on

    def __enter__(self):
        self.was = lockdep.is_enabled()
        (lockdep.enable if self.on else lockdep.disable)()

    def __exit__(self, *exc):
        (lockdep.enable if self.was else lockdep.disable)()
        lockdep.reset()


def _kernel(pages):
    from ..kernel import Kernel
    return Kernel(nodes=1, pages_per_node=pages, hugepages_per_node=0)


def _row(measure, config, value, unit, target="", ok=None):
    return {"measure": measure, "config": config, "value": value, "unit": unit, "target": target,
            "met": "" if ok is None else met(ok)}


def _no_findings(k, what):
    if k.findings():
        raise RuntimeError(f"the {what} benchmark produced findings:\n{k.findings()[0].text}")


# -- page faults --------------------------------------------------------------------------

def fault_seconds(pages, validator, repeat=3, clock=time.perf_counter):
    """Seconds per write fault on one thread over a ``pages``-page mapping,
    by ``clock`` (wall, or ``time.thread_time`` for the thread's CPU), best
    of ``repeat`` fresh kernels (the first run also pays for growing the
    interpreter's heap)."""
    best = None
    with _validator(validator):
        for _ in range(repeat):
            k = _kernel(pages + 64)
            p = k.spawn("faulter")
            a = p.mmap(0, pages * P, RW, ANON)
            store = p.store
            t0 = clock()
            for i in range(pages):
                store(a + i * P, b"x")
            dt = (clock() - t0) / pages
            if k.meminfo()["AnonPages"] != pages * 4:
                raise RuntimeError("page-fault benchmark: not every store faulted a page in")
            p.exit()
            _no_findings(k, "page-fault")
            best = dt if best is None else min(best, dt)
    return best


def page_faults(pages, validator, repeat=3):
    """Write faults per second (wall) on one thread."""
    return 1 / fault_seconds(pages, validator, repeat)


# -- loads of a present page ------------------------------------------------------------------

def present_loads(mode, loads, validator, repeat=5):
    """Nanoseconds per 8-byte load of a present page on one thread, best of
    ``repeat`` batches of ``loads``, the three ways:

    - "tlb": lock-free, the translation in this CPU's TLB (the common case);
    - "walk": lock-free, a TLB miss every time (the entry dropped before each
      load, as a TLB too small for the working set would): the hardware walk;
    - "mmap-lock": ``Kernel(tlb=False)``: mmap_lock for read, VMA lookup,
      copy under the PTE lock -- every load as pymm did it before the TLB.
    """
    from ..mm.tlb import this_cpu
    with _validator(validator):
        k = _kernel(64) if mode != "mmap-lock" else __import__("pymm").Kernel(
            nodes=1, pages_per_node=64, hugepages_per_node=0, tlb=False)
        p = k.spawn("loader")
        a = p.mmap(0, P, RW, ANON)
        p.store(a, b"12345678")
        load = p.load
        cpu = this_cpu()
        tlb = cpu.tlb
        best = None
        for _ in range(repeat):
            load(a, 8)
            t0 = time.process_time()          # CPU time: one thread, robust to a loaded machine
            if mode == "walk":
                for _ in range(loads):
                    tlb.clear()
                    load(a, 8)
            else:
                for _ in range(loads):
                    load(a, 8)
            dt = time.process_time() - t0
            best = dt if best is None else min(best, dt)
        if load(a, 8) != b"12345678":
            raise RuntimeError("load benchmark: wrong bytes")
        p.exit()
        _no_findings(k, "load")
    return best / loads * 1e9


# -- syscall mix ----------------------------------------------------------------------------

def syscall_mix(threads, processes, seconds, validator):
    """Operations per second of ``threads`` threads looping mmap / store /
    load / munmap (4 operations per round) over ``processes`` processes."""
    with _validator(validator):
        k = _kernel(threads * 8 + 64)
        procs = [k.spawn(f"mix{i}") for i in range(processes)]
        counts = [0] * threads
        errors = []
        start = threading.Barrier(threads + 1)
        stop = threading.Event()

        def worker(i):
            p = procs[i % processes]
            payload = bytes([i]) * 64
            n = 0
            try:
                start.wait()
                while not stop.is_set():
                    a = p.mmap(0, 4 * P, RW, ANON)
                    p.store(a + P, payload)
                    if p.load(a + P, 64) != payload:
                        raise AssertionError("syscall mix: lost a store")
                    p.munmap(a, 4 * P)
                    n += 4
            except BaseException as e:      # noqa: B902 - re-raised by the caller
                errors.append(e)
            counts[i] = n

        ts = [threading.Thread(target=worker, args=(i,), name=f"bench-mix-{i}", daemon=True)
              for i in range(threads)]
        for t in ts:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        time.sleep(seconds)                 # the measurement window, not synchronisation
        stop.set()
        for t in ts:
            t.join(60)
        dt = time.perf_counter() - t0
        if any(t.is_alive() for t in ts):
            raise RuntimeError("syscall mix: a worker thread hung")
        if errors:
            raise errors[0]
        for p in procs:
            p.exit()
        _no_findings(k, "syscall-mix")
    return sum(counts) / dt


# -- VMA lookup ---------------------------------------------------------------------------------

def build_vmas(n):
    """A process with ``n`` one-page VMAs separated by one-page gaps."""
    from ..mm.mmap_lock import mmap_read_lock, mmap_read_unlock
    with _validator(False):
        k = _kernel(64)
        # sysctl -w vm.max_map_count: 100,000 VMAs are more than the default 65,530
        k.sysctl("vm.max_map_count", max(k.sysctl("vm.max_map_count"), n + 16))
        p = k.spawn(f"vmas{n}")
        base = 0x1000_0000
        flags = ANON | C.MAP_FIXED
        for i in range(n):
            p.mmap(base + 2 * i * P, P, C.PROT_READ, flags)
        mmap_read_lock(p.mm)
        count = len(p.mm.mm_mt)
        mmap_read_unlock(p.mm)
    if count != n:
        raise RuntimeError(f"VMA benchmark: built {count} VMAs, wanted {n} (did some merge?)")
    return k, p, base


def vma_lookup_ns(p, base, n, lookups, repeat=5, seed=0, tree_only=False):
    """Best-of-``repeat`` nanoseconds per find_vma under mmap_read_lock, at
    ``lookups`` random addresses inside the VMAs (``tree_only``: the tree's
    search alone, without find_vma's lock-rule check).  Context: takes
    mmap_lock for read (one hold per timed batch, so the lookup itself is
    measured)."""
    from ..mm.mmap_lock import mmap_read_lock, mmap_read_unlock
    rnd = random.Random(seed)
    addrs = [base + 2 * rnd.randrange(n) * P + rnd.randrange(P) for _ in range(lookups)]
    mm = p.mm
    best = None
    for _ in range(repeat):
        mmap_read_lock(mm)
        mt = mm.mm_mt
        find = (lambda a: mt._at(mt._locate(a))) if tree_only else mt.find_vma
        t0 = time.perf_counter()
        for a in addrs:
            find(a)
        dt = time.perf_counter() - t0
        v = find(addrs[0])
        mmap_read_unlock(mm)
        if not v.vm_start <= addrs[0] < v.vm_end:
            raise RuntimeError("VMA benchmark: find_vma returned the wrong VMA")
        best = dt if best is None else min(best, dt)
    return best / lookups * 1e9


# -- memory per page --------------------------------------------------------------------------------

def _rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def memory_child(pages):
    """Run in a fresh interpreter: populate ``pages`` pages with MAP_POPULATE
    and print JSON {bytes_per_page, seconds}."""
    lockdep.disable()
    k = _kernel(pages + 1024)
    p = k.spawn("populate")
    gc.collect()
    r0 = _rss()
    t0 = time.perf_counter()
    p.mmap(0, pages * P, RW, ANON | C.MAP_POPULATE)
    dt = time.perf_counter() - t0
    gc.collect()
    r1 = _rss()
    if k.meminfo()["AnonPages"] != pages * 4:
        raise RuntimeError("memory benchmark: MAP_POPULATE did not populate every page")
    print(json.dumps({"bytes_per_page": (r1 - r0) / pages, "seconds": dt}))


def memory_per_page(pages):
    """Bytes of RSS per populated page, measured in a fresh interpreter so no
    earlier allocation is reused (which would make the figure look smaller)."""
    code = f"from pymm.benchmarks.mm import memory_child; memory_child({pages})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=1800, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# -- the section ------------------------------------------------------------------------------------

def run(quick=False):
    rows = []
    fault_pages = 5_000 if quick else 20_000
    for validator in (False, True):
        rows.append(_row("page faults, 1 thread", f"{fault_pages} pages, validator "
                         f"{'on' if validator else 'off'}", page_faults(fault_pages, validator),
                         "faults/s"))

    loads = 20_000 if quick else 100_000
    for validator in (True, False):
        ns = {m: present_loads(m, loads, validator) for m in ("mmap-lock", "walk", "tlb")}
        v = f"validator {'on' if validator else 'off'}"
        rows.append(_row("load of a present page", f"mmap_lock + PTE lock (tlb=False), {v}",
                         ns["mmap-lock"], "ns/load"))
        rows.append(_row("load of a present page", f"lock-free, TLB miss (page walk), {v}",
                         ns["walk"], "ns/load"))
        rows.append(_row("load of a present page", f"lock-free, TLB hit, {v}", ns["tlb"], "ns/load"))
        rows.append(_row("lock-free load speedup", f"mmap_lock / TLB hit, {v}",
                         ns["mmap-lock"] / ns["tlb"], "x", ">= 3"))

    mix_seconds = 1.0 if quick else 3.0
    for processes, validator in ((1, True), (2, True), (2, False)):
        rows.append(_row("syscall mix, 8 threads", f"{processes} process{'es' if processes > 1 else ''}, "
                         f"validator {'on' if validator else 'off'}",
                         syscall_mix(8, processes, mix_seconds, validator), "ops/s"))

    lookups = 50_000 if quick else 200_000
    tree = {}
    for n in (1_000, 100_000):
        k, p, base = build_vmas(n)
        with _validator(True):
            if n == 100_000:
                rows.append(_row("VMA lookup (find_vma)", f"{n:,} VMAs, validator on",
                                 vma_lookup_ns(p, base, n, lookups), "ns/lookup"))
            tree[n] = vma_lookup_ns(p, base, n, lookups, tree_only=True)
        p.exit()
        del k, p
    ratio = tree[100_000] / tree[1_000]
    rows.append(_row("VMA tree search ratio", "100,000 / 1,000 VMAs (the search alone)", ratio, "x",
                     "<= 2", ratio <= 2))

    pages = 100_000 if quick else 1_048_576
    mem = memory_per_page(pages)
    rows.append(_row("memory per populated page", f"{pages:,} pages (MAP_POPULATE "
                     f"{pages * P >> 20} MiB, {mem['seconds']:.1f} s)", mem["bytes_per_page"],
                     "bytes/page", "<= 300", mem["bytes_per_page"] <= 300))
    return {
        "title": "Emulated mm: faults, syscalls, VMA lookup, memory per page",
        "rows": rows,
        "notes": [
            "page faults: one-byte stores, one per page, into a fresh private anonymous mapping; best of 3",
            f"loads: 8 bytes of one present page, best of 5 batches of {loads:,}, one thread, "
            "CPU time; the three paths side by side in this run",
            f"syscall mix: mmap/store/load/munmap of a 4-page mapping per thread, {mix_seconds:g} s window",
            f"VMA lookup: best of 5 batches of {lookups:,} random find_vma calls under "
            "mmap_read_lock, validator on; the ratio times the tree's search alone (the "
            "lock-rule check is a constant that hid it)",
            "memory: RSS growth of a fresh interpreter across the populating mmap, validator off",
        ],
    }
