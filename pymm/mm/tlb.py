"""CPUs, their TLBs and TLB shootdown (arch/x86/mm/tlb.c, arch/x86/include/asm/tlbflush.h).

A CPU is a Python thread running user code: the first user access of a thread
gives it a ``Cpu`` with a TLB, a small cache of translations keyed by (mm,
virtual page) -- an ASID/PCID-tagged TLB, so a thread that touches several
processes keeps entries of each.  ``mm.cpumask`` (mm_cpumask) holds every CPU
that may cache translations of the mm; a CPU joins it before its first page
walk for that mm and never leaves (x86 leaves lazily too).

A user load or store is one instruction (``pymm.mm.uaccess``): look the page
up in the TLB, on a miss walk the page tables (the hardware walker, with no
lock: ``hw_page_walk``) and fill the TLB; only a miss in the page tables or a
permission problem becomes a page fault.

Why interrupts matter.  A CPU takes interrupts between instructions, never in
the middle of one, and a TLB-flush IPI is an interrupt: the flushing CPU waits
until every target has run the handler (native_flush_tlb_multi waits for the
acknowledgements).  So once a flush returns, no CPU still uses the old
translation -- not even an access that started before the flush.  pymm models
"interrupts off" with a per-CPU raw lock, ``cpu.irq``: an instruction holds it
from the TLB lookup to the last byte copied, gup_fast holds it for its walk
(local_irq_save), and an IPI is delivered by taking the target's ``irq`` and
running the handler.  The same region is an RCU read-side section (pymm.rcu),
which is what keeps page tables freed by ``tlb_remove_table`` alive under a
lockless walker.  ``cpu.irq`` is the CPU's interrupt flag, not a kernel lock:
lockdep does not see it, and nothing is ever acquired while holding it, so
no IPI can deadlock.

Flushing.  ``flush_tlb_mm_range`` sends the IPI to every CPU in
mm_cpumask; up to ``tlb_single_page_flush_ceiling`` pages are flushed one by
one, larger ranges flush the mm's whole ASID.  ``arch_tlbbatch_*`` is the
batched flush of reclaim (TTU_BATCH_FLUSH, see rmap.set_tlb_ubc_flush_pending):
the CPUs of every mm unmapped are collected and flushed once, entirely.

Simplifications: no lazy-TLB mode, no PCID generations (``tlb_gen``): a flush
is always an IPI to every CPU of the mm (the kernel skips CPUs that already
switched away); the TLB holds ``TLB_ENTRIES`` entries and evicts the oldest;
accessed bits are not modelled; huge (hugetlb PMD) mappings are never cached,
their accesses go through the fault path under mmap_lock.
"""
import threading
from itertools import count

from ..locking import events as _ev
from ..rcu import reader_exit, this_reader
from ..sched import charge, point

PAGE_SHIFT = 12
TLB_ENTRIES = 256                    # per CPU; the oldest entry is evicted
TLB_FLUSH_ALL = -1
tlb_single_page_flush_ceiling = 33   # arch/x86/mm/tlb.c


class _CpuLocal(threading.local):
    cpu = None              # the thread's CPU (a class default: no AttributeError)


_tls = _CpuLocal()
_ids = count()


class Cpu:
    """One CPU (a thread running user code).  ``tlb`` maps (mm, vpn) to
    (folio, writable, dirty); it is changed only with ``irq`` held (by the
    CPU itself, inside an instruction, or by an IPI handler)."""

    __slots__ = ("id", "tlb", "irq", "rcu", "name", "flushes", "__weakref__")

    def __init__(self):
        self.id = next(_ids)
        self.tlb = {}
        self.irq = _ev.backend().lock_factory()   # "interrupts off" (see the module docstring)
        self.rcu = this_reader()
        self.name = threading.current_thread().name
        self.flushes = 0                 # IPIs handled (statistics)

    def __repr__(self):
        return f"<cpu{self.id} ({self.name}) {len(self.tlb)} TLB entries>"


def this_cpu():
    """The calling thread's CPU (created at its first user access)."""
    c = _tls.cpu
    if c is None:
        c = _tls.cpu = Cpu()
    return c


def local_irq_disable(cpu):
    """Interrupts off on ``cpu`` (the calling thread's): flush IPIs wait,
    and the region is an RCU read-side section."""
    cpu.irq.acquire()
    cpu.rcu.depth += 1


def local_irq_enable(cpu):
    cpu.irq.release()
    reader_exit(cpu.rcu)


def tlb_fill(cpu, mm, vpn, folio, writable, dirty):
    """Cache a translation the hardware walk found.  Context: ``cpu.irq`` held."""
    tlb = cpu.tlb
    if len(tlb) >= TLB_ENTRIES:
        del tlb[next(iter(tlb))]
    e = tlb[(mm, vpn)] = (folio, writable, dirty)
    return e


def cpumask_set(mm, cpu):
    """Add ``cpu`` to mm_cpumask before it walks ``mm``'s page tables (a
    flusher that cleared a PTE and then read the mask either sees this CPU or
    this CPU's walk sees the cleared PTE)."""
    if cpu not in mm.cpumask:
        mm.cpumask.add(cpu)


# -- flushing -----------------------------------------------------------------------

def flush_tlb_func(cpu, mm, start, end):
    """The IPI handler: drop ``mm``'s translations in [start, end) from
    ``cpu`` (TLB_FLUSH_ALL as ``end``: the whole mm; ``mm`` None: everything).
    Context: ``cpu.irq`` held."""
    tlb = cpu.tlb
    cpu.flushes += 1
    if mm is None:
        tlb.clear()
        return
    if end != TLB_FLUSH_ALL and (end - start) >> PAGE_SHIFT <= tlb_single_page_flush_ceiling:
        for vpn in range(start >> PAGE_SHIFT, (end + 4095) >> PAGE_SHIFT):
            tlb.pop((mm, vpn), None)
        return
    for key in [k for k in tlb if k[0] is mm]:
        del tlb[key]


def native_flush_tlb_multi(cpus, mm, start, end):
    """Send the flush IPI to ``cpus`` and wait for each: the handler runs on
    the target between two of its instructions (its ``irq`` taken).
    Context: interrupts on in the caller; any locks may be held."""
    for cpu in cpus:
        irq = cpu.irq
        irq.acquire()
        try:
            flush_tlb_func(cpu, mm, start, end)
        finally:
            irq.release()


def flush_tlb_mm_range(mm, start, end):
    """Flush ``mm``'s translations of [start, end) on every CPU that may
    cache them.  Context: the PTEs are already changed."""
    point("flush_tlb_mm_range")
    cpus = tuple(mm.cpumask)
    if cpus:
        _charge_flush(cpus)
        native_flush_tlb_multi(cpus, mm, start, end)


def _charge_flush(cpus):
    """Virtual time: a local flush, plus one shootdown if other CPUs are in
    the mask (the IPIs go out together and are waited for together)."""
    me = _tls.cpu
    charge("tlb_flush")
    if any(c is not me for c in cpus):
        charge("tlb_shootdown")


def flush_tlb_range(vma, start, end):
    flush_tlb_mm_range(vma.vm_mm, start, end)


def flush_tlb_page(vma, addr):
    flush_tlb_mm_range(vma.vm_mm, addr, addr + 4096)


def flush_tlb_mm(mm):
    flush_tlb_mm_range(mm, 0, TLB_FLUSH_ALL)


# -- the batched flush of reclaim (arch_tlbflush_unmap_batch) --------------------------

class ArchTlbflushUnmapBatch:
    """``struct arch_tlbflush_unmap_batch``: the CPUs to flush."""

    __slots__ = ("cpumask",)

    def __init__(self):
        self.cpumask = set()


def arch_tlbbatch_add_pending(batch, mm):
    batch.cpumask.update(tuple(mm.cpumask))


def arch_tlbbatch_flush(batch):
    """Flush the whole TLB of every CPU in the batch (x86 flushes everything:
    the batch does not remember which addresses)."""
    point("arch_tlbbatch_flush")
    cpus, batch.cpumask = tuple(batch.cpumask), set()
    if cpus:
        _charge_flush(cpus)
    native_flush_tlb_multi(sorted(cpus, key=lambda c: c.id), None, 0, TLB_FLUSH_ALL)
