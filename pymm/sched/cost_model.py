"""The cost model of virtual time: what the kernel's work costs, in nanoseconds.

Virtual time (``pymm.sched.vtime``) advances a simulated CPU's clock only where
emulated code calls ``charge(NAME, n)``, by ``n`` times the figure below.
Python's own speed never enters it, so an experiment ranks locking designs by
what their critical sections would cost in the kernel, the same on any machine.

Each figure is an order-of-magnitude anchor for a current x86-64 server
(Skylake..Sapphire Rapids class, DDR4/DDR5), with where it comes from.  They
are deliberately round: the experiments compare designs under one model, and
a user with better numbers for their machine passes them with
``pymm experiment NAME --cost-model FILE`` (a JSON object ``{"NAME": ns}``;
names not in it keep the defaults below).

pymm's own simplification: costs are charged per event, with no caches, no
NUMA distance and no memory-bandwidth contention between simulated CPUs.
"""
import json
import math

# name: (nanoseconds, source)
DEFAULT = {
    "syscall": (100, "syscall entry + exit without speculation mitigations: ~70-100 ns "
                "(getpid() in a loop, e.g. LWN 'Anatomy of a system call'; lmbench lat_syscall null)"),
    "fault": (500, "page-fault exception entry/exit and handle_mm_fault overhead without the "
              "page's own work: will-it-scale page_fault1 reaches ~1-2 M faults/s per core "
              "including zeroing, i.e. ~500-1000 ns per fault"),
    "page_alloc": (150, "one order-0 allocation from the per-cpu lists (rmqueue_pcplist): "
               "~100-200 ns (Mel Gorman's page allocator series, e.g. 'mm/page_alloc: "
               "optimise pcp allocation', 2021, ~150 ns per alloc+free)"),
    "clear_page": (250, "zeroing 4 KiB with rep stosb at ~15-20 GB/s per core: ~250 ns "
                   "(clear_page_erms; Ankur Arora's 'x86/clear_huge_page' series, 2023)"),
    "copy_page": (350, "copying 4 KiB at ~10-12 GB/s per core (copy_page / copy_mc): ~350 ns"),
    "clear_huge_page": (130_000, "zeroing 2 MiB: 512 x clear_page; ~130 us (the 2023 "
                        "clear_huge_page series measured 2 MiB clears at 10-20 GB/s)"),
    "copy_huge_page": (180_000, "copying 2 MiB at ~11 GB/s: ~180 us"),
    "pte": (10, "setting or clearing one PTE (set_pte_at / ptep_get_and_clear): a store, "
            "or an atomic xchg, on a cache-hot page table: ~5-20 ns"),
    "zap_page": (118, "zapping one populated 4 KiB page including the rmap, counters and "
                 "freeing: Yang Shi's munmap series (2018, 'mm: mmap: zap pages with read "
                 "mmap_sem in munmap for large mapping'): unmapping 80 GB took 2.49 s in "
                 "unmap_region on a 32-core E5-2680, i.e. ~31 ms per GiB, ~118 ns per page"),
    "tlb_flush": (150, "a local TLB flush of a range (invlpg x few, or a full flush): "
                  "~100-200 ns"),
    "tlb_shootdown": (3_000, "a TLB-flush IPI to other CPUs and waiting for them "
                      "(flush_tlb_mm_range, native_flush_tlb_multi): ~2-5 us "
                      "(Nadav Amit's 'x86/tlb: Concurrent TLB flushes' series, 2019-2021)"),
    "migrate_page": (1_500, "migrating one 4 KiB page beyond the copy: unmap to a "
                     "migration entry, refcount freeze, remap, TLB flush: ~1-2 us "
                     "(move_pages throughput of a few GB/s in the 2023 'batched migration' "
                     "series by Huang Ying)"),
    "lock": (20, "an uncontended lock or unlock (one atomic RMW on a cache-hot line): ~20 ns"),
    "wakeup": (3_000, "waking a task sleeping on a rwsem/mutex and switching to it "
               "(try_to_wake_up + schedule): ~2-5 us (lmbench lat_ctx, perf bench sched pipe)"),
    "context_switch": (1_500, "a context switch between runnable tasks on one CPU: ~1-2 us "
                       "(perf bench sched pipe)"),
    "vma_op": (300, "a VMA tree update (maple tree store or erase, vma alloc/free): "
               "~200-500 ns (Liam Howlett's maple tree series, 2022)"),
    "load": (5, "a user load or store hitting the TLB and the cache: a few ns"),
}

SCHED_SLICE_NS = 3_000_000   # CFS/EEVDF base slice (sysctl_sched_base_slice, 3 ms since 6.6 at 8+ CPUs)


class CostModel:
    """The figures in force for one run: ``ns[name]`` plus where each came from."""

    def __init__(self, overrides=None, origin="default"):
        self.ns = {k: v for k, (v, _src) in DEFAULT.items()}
        self.sources = {k: src for k, (_v, src) in DEFAULT.items()}
        self.origin = origin
        for k, v in (overrides or {}).items():
            if k not in DEFAULT:
                raise ValueError(f"unknown cost {k!r}; known costs: {', '.join(sorted(DEFAULT))}")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"cost {k!r} must be a non-negative number of nanoseconds, got {v!r}")
            self.ns[k] = v
            self.sources[k] = f"user ({origin})"

    @classmethod
    def load(cls, path):
        """A model from a JSON file ``{"NAME": ns, ...}``; ValueError with a
        one-line reason on anything else."""
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except OSError as e:
            raise ValueError(f"cannot read cost model {path}: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"cost model {path} is not JSON: {e.msg} at line {e.lineno}") from None
        if not isinstance(data, dict):
            raise ValueError(f"cost model {path} must be a JSON object of name -> nanoseconds")
        return cls(data, origin=str(path))

    def as_json(self):
        return {k: {"ns": self.ns[k], "source": self.sources[k]} for k in sorted(self.ns)}
