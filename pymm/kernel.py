"""The Kernel: nodes and their page pools, variants, tasks, files, findings."""
import errno
import itertools
import random
import threading

from loguru import logger

from . import constants as C
from . import variants as _variants
from .debug import report as _report
from .debug.checks import run_checks
from .fs.hugetlbfs import HugetlbFile
from .fs.shmem import MAX_LFS_FILESIZE, File
from .locking import events, lockdep
from .mm import mempolicy as _mempolicy
from .mm.hugetlb import Hstate
from .mm.mm_types import PG_reserved, Folio
from .mm.page_alloc import PgData
from .mm.swap_state import SwapInfo
from .mm.gfp import GFP_KERNEL
from .mm.vmscan import direct_reclaim, kswapd_run, kswapd_stop
from .sched import is_controlled
from .task import Process, Task, _KernelContext, current
from .debug.fault_inject import FaultInjector

HPAGE_PAGES = 512


class Kernel:
    """One emulated machine.

    ``nodes`` NUMA nodes with ``pages_per_node`` base pages and
    ``hugepages_per_node`` PMD-sized huge pages each; ``variants`` selects
    locking designs (see pymm.variants); ``seed`` seeds whatever in the kernel
    is random (address-space layout stays fixed so runs compare);
    ``pymm_checks`` (default: on, or the CLI's ``--no-pymm-checks``) runs
    pymm's own checks, the ones the kernel never had (their findings say
    ``"pymm_only": true``); ``fail`` ({site: {knob: value}}) configures
    fault injection as ``fail()`` does; ``tlb`` False makes every user
    access take mmap_lock (the model before the TLB).
    """

    def __init__(self, nodes=2, pages_per_node=4096, hugepages_per_node=16, variants=None, seed=None,
                 pymm_checks=None, fail=None, tlb=True):
        for name, v, lo in (("nodes", nodes, 1), ("pages_per_node", pages_per_node, 1),
                            ("hugepages_per_node", hugepages_per_node, 0)):
            if type(v) is not int or v < lo:
                raise ValueError(f"Kernel: {name} must be an int >= {lo}, got {v!r}")
        if tlb not in (True, False):
            raise ValueError(f"Kernel: tlb must be True or False, got {tlb!r}")
        # User loads and stores go through per-CPU TLBs and take no lock
        # (pymm.mm.tlb); False: every access takes mmap_lock for read and
        # copies under the PTE lock, as pymm did before it modelled TLBs
        # (kept to measure the difference: ``pymm bench --section mm``).
        self.tlb = tlb
        self.variants = _variants.resolve(variants)
        if pymm_checks is not None and not isinstance(pymm_checks, bool):
            raise ValueError(f"Kernel: pymm_checks must be True or False, got {pymm_checks!r}")
        self.pymm_checks = _report.pymm_checks_default if pymm_checks is None else pymm_checks
        self.seed = seed
        self.random = random.Random(seed)
        self.fault_inject = FaultInjector(seed)
        if fail is not None:
            if not isinstance(fail, dict):
                raise ValueError(f"Kernel: fail must be a dict of site -> knobs, got {fail!r}")
            for site, kw in fail.items():
                if not isinstance(kw, dict):
                    raise ValueError(f"Kernel: fail[{site!r}] must be a dict of knobs, got {kw!r}")
                self.fail(site, **kw)
        self.nodes = [PgData(n, pages_per_node) for n in range(nodes)]
        self.hugepages_per_node = hugepages_per_node
        self.hstate = Hstate(nodes, hugepages_per_node)     # the huge page pool
        self.zero_page = Folio(0)
        self.zero_page.flags = PG_reserved
        self._pids = itertools.count(0)      # swapper is 0, as in Linux
        self._kasan_labels = {}
        self._findings = []
        self._finding_keys = set()
        # pymm's own: a callable whose text ends every report of this kernel
        # (the fuzz scenario's last system calls); it must take no pymm lock
        self.report_context = None
        self._tasks = {}
        self.files = {}
        self.max_map_count = C.DEFAULT_MAX_MAP_COUNT    # sysctl vm.max_map_count
        self.lru_disable_count = 0      # lru_cache_disable() nesting; atomic
        self.swap_info = SwapInfo(self, pages_per_node * nodes)   # a swap device as big as RAM
        self.kswapd = None              # per-node Kswapd list while running (start_kswapd)
        self.init_task = Task(self, "swapper")
        self._kernel_tasks = threading.local()     # kernel_task(): one per thread
        self._kernel_task_ids = itertools.count(0)
        _report.set_default_kernel(self)

    def __repr__(self):
        v = ", ".join(f"{k}={val}" for k, val in self.variants.items())
        return f"<Kernel {len(self.nodes)} nodes, {v}>"

    # -- variants -------------------------------------------------------------------
    def variant(self, key):
        return self.variants[key]

    # -- sysctl ------------------------------------------------------------------------
    SYSCTLS = ("vm.max_map_count",)

    def sysctl(self, name, value=None):
        """Read (``value`` None) or set a sysctl; returns its value.  Known:
        vm.max_map_count (the most VMAs a process may have: mmap, brk and the
        splits of munmap/mprotect/mlock/madvise fail with ENOMEM beyond it)."""
        if name not in self.SYSCTLS:
            raise ValueError(f"sysctl: unknown name {name!r}; known: {', '.join(self.SYSCTLS)}")
        if value is not None:
            if type(value) is not int or not 0 <= value <= 0x7FFF_FFFF:
                raise OSError(errno.EINVAL, f"sysctl {name}: invalid value {value!r}")
            self.max_map_count = value
        return self.max_map_count

    # -- fault injection ---------------------------------------------------------------
    def fail(self, site, **knobs):
        """Make allocations at ``site`` fail on purpose (the kernel's
        fail_page_alloc/failslab knobs): ``probability`` (percent, 0 turns the
        site off), ``interval``, ``times`` (-1 unlimited), ``space``,
        ``task_filter`` (only tasks with ``make_it_fail = True``).  Sites:
        pymm.debug.fault_inject.SITES.  Returns the site's FaultAttr (its
        ``calls`` and ``failures`` count what happened).  Failures reach user
        space as Linux reports them: ENOMEM from system calls, SIGBUS or
        ENOMEM (VM_FAULT_OOM) from faults."""
        return self.fault_inject.configure(site, **knobs)

    def fault_stats(self):
        """{site: {calls, failures, knobs...}}."""
        return self.fault_inject.stats()

    # -- tasks and files --------------------------------------------------------------
    def alloc_pid(self):
        return next(self._pids)

    def kasan_address(self, obj):
        """A stable pseudo-address for an object in a report: the same object
        gets the same address, and a replay prints the same report."""
        n = self._kasan_labels.setdefault(id(obj), len(self._kasan_labels))
        return 0xFFFF_8880_0100_0000 + n * 0x200

    def spawn(self, name="proc"):
        if not isinstance(name, str) or not name:
            raise ValueError(f"spawn: name must be a non-empty string, got {name!r}")
        p = Process(self, name)
        self._register(p)
        return p

    def _register(self, p):
        self._tasks[p.pid] = p

    def _unregister(self, p):
        self._tasks.pop(p.pid, None)

    def processes(self):
        return list(self._tasks.values())

    def create_file(self, name, size, hugetlb=False):
        if not isinstance(name, str) or not name:
            raise ValueError(f"create_file: name must be a non-empty string, got {name!r}")
        if type(size) is not int or size < 0 or size > MAX_LFS_FILESIZE:
            raise OSError(errno.EINVAL, f"create_file: invalid size {size!r}")
        if hugetlb and size % (HPAGE_PAGES * 4096):
            raise OSError(errno.EINVAL, "create_file: a hugetlbfs file size must be a multiple of 2 MiB")
        if hugetlb:
            f = HugetlbFile(self, name, size)
        else:
            f = File(self, name, size, hugetlb)
        self.files[name] = f
        return f

    def run_syscall(self, fn, *args):
        """Run kernel code for a caller that is not a process (file operations,
        reclaim): as the calling process if there is one, else as the calling
        thread's kernel task."""
        with _KernelContext(current() or self.kernel_task()):
            return fn(*args)

    def kernel_task(self):
        """The task the calling thread runs kernel code as when it is in no
        process: the init task for the first thread that asks, a task of its
        own (pid 0, "swapper/N", as each CPU's idle task) for every other.
        No task runs on two CPUs at once; sharing one between threads shared
        its state -- reclaim's batched TLB flush (``tlb_ubc``): one thread's
        try_to_unmap_flush cleared the batch another had just added an mm's
        CPUs to, and that one then freed its folios with no flush (the
        fuzzer: KASAN use-after-free through a stale TLB entry) -- and the
        fault's reason, task_work and the NUMA policy."""
        t = getattr(self._kernel_tasks, "task", None)
        if t is None:
            n = next(self._kernel_task_ids)        # one step: no two threads get the same n
            t = self._kernel_tasks.task = self.init_task if n == 0 else \
                Task(self, f"swapper/{n}", pid=0)
        return t

    # -- allocation -------------------------------------------------------------------
    def local_node(self):
        t = current()
        return (t.pid % len(self.nodes)) if t is not None else 0

    def vma_alloc_folio(self, vma, addr):
        """Allocate the folio for an anonymous fault at ``addr`` of ``vma`` as
        its NUMA policy says (the VMA's, else the task's, else local).
        Context: mmap_lock held."""
        return _mempolicy.vma_alloc_folio(self, vma, addr)

    def alloc_file_folio(self, file, index):
        """A page-cache folio, placed by the task's NUMA policy."""
        return _mempolicy.alloc_file_folio(self, file, index)

    # -- findings ---------------------------------------------------------------------
    def add_finding(self, f):
        key = (f.kind, f.title, f.data.get("signature"))
        if key in self._finding_keys:
            return False
        self._finding_keys.add(key)
        self._findings.append(f)
        return True

    def findings(self):
        """Every detector report so far: objects with .kind, .title, .text."""
        return list(self._findings)

    def clear_findings(self):
        self._findings.clear()
        self._finding_keys.clear()

    # -- /proc/meminfo and the invariant checks ---------------------------------------------
    def meminfo(self):
        def stat(item):
            return sum(n.vm_stat[item].sum() for n in self.nodes)
        kb = 4
        pagetables = 0
        for p in list(self._tasks.values()):
            if p.mm is not None:
                pagetables += p.mm.pgtables_bytes.sum()
        return {
            "MemTotal": sum(n.present_pages for n in self.nodes) * kb,
            "MemFree": sum(n.nr_free for n in self.nodes) * kb,
            "Cached": stat("NR_FILE_PAGES") * kb,
            "AnonPages": stat("NR_ANON_MAPPED") * kb,
            "Shmem": stat("NR_SHMEM") * kb,
            "Mlocked": stat("NR_MLOCK") * kb,
            "Unevictable": stat("NR_UNEVICTABLE") * kb,
            "SwapCached": self.swap_info.nr_cached() * kb,
            "SwapTotal": self.swap_info.max * kb,
            "SwapFree": (self.swap_info.max - self.swap_info.inuse_pages) * kb,
            "PageTables": pagetables // 1024,
            **self.hstate.meminfo(),
        }

    # -- reclaim -------------------------------------------------------------------------
    def reclaim(self, nr_pages):
        """Reclaim up to ``nr_pages`` pages now (direct reclaim: anonymous
        pages go to swap, mlocked ones stay); returns how many were reclaimed.
        Runs in the calling thread, as the calling process if inside one of
        its system calls, else as the kernel's init task."""
        if type(nr_pages) is not int or nr_pages < 0:
            raise ValueError(f"reclaim: nr_pages must be an int >= 0, got {nr_pages!r}")
        if nr_pages == 0:
            return 0
        # the direct reclaim of a GFP_KERNEL allocation: fs_reclaim held across it
        return self.run_syscall(direct_reclaim, self, GFP_KERNEL, nr_pages)

    def start_kswapd(self, low=None, high=None):
        """Start one kswapd thread per node: woken when an allocation leaves a
        node with fewer than ``low`` free pages, it reclaims until there are
        ``high`` (defaults: 1/16 and 1/8 of the node).  Free mode only: in a
        controlled run, call ``reclaim`` from a managed thread instead."""
        present = self.nodes[0].present_pages
        for name, v in (("low", low), ("high", high)):
            if v is not None and (type(v) is not int or v < 0 or v > present):
                raise ValueError(f"start_kswapd: {name} must be an int in 0..{present}, got {v!r}")
        low = max(1, present // 16) if low is None else low
        high = max(low + 1, present // 8) if high is None else high
        if low > high:
            raise ValueError(f"start_kswapd: low ({low}) must not exceed high ({high})")
        if self.kswapd is not None:
            raise ValueError("start_kswapd: kswapd is already running")
        if is_controlled() or events.backend().name == "controlled":
            raise ValueError("start_kswapd: kswapd is a free-running thread; under the controlled "
                             "scheduler call k.reclaim() from a managed thread instead")
        kswapd_run(self, low, high)

    def stop_kswapd(self, timeout=10.0):
        """Stop the kswapd threads and wait for them.  Returns False if none
        was running.  Raises RuntimeError if one is stuck or died."""
        return kswapd_stop(self, timeout)

    def check(self):
        """Run the invariant checks now (call it when no system call is in
        flight); each violation becomes a finding.  Returns the new findings."""
        return run_checks(self)


def _on_lockdep_report(rep):
    """Lockdep reports become findings of the kernel whose task raised them.
    (The controlled scheduler hears about them from lockdep directly.)"""
    k = _report.current_kernel()
    if k is None:
        return
    kind = {"hung-task": "hung-task", "deadlock": "deadlock", "assertion": "assertion"}.get(
        rep.kind, "lockdep")
    f = _report.Finding(kind, rep.title, rep.text, {"signature": rep.signature, "lockdep": rep.kind})
    if k.add_finding(f):
        logger.opt(lazy=True).warning("{}", lambda: rep.text)


lockdep.subscribe(_on_lockdep_report)
