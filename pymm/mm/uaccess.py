"""User-space loads and stores, and the user page-fault path
(arch/x86/mm/fault.c do_user_addr_fault).

A load or store of one page is one instruction on the calling thread's CPU
(``pymm.mm.tlb``): look the translation up in the CPU's TLB; on a miss, walk
the page tables as the hardware does -- no lock at all, with "interrupts
off" for the instruction so a flush IPI waits for it and the RCU-freed page
tables stay alive (``hw_page_walk``) -- and fill the TLB.  Only a page that is
not present, or present without the needed permission, raises a page fault:
``do_user_addr_fault`` takes mmap_lock for read, checks the VMA, runs
handle_mm_fault and returns, and the instruction is retried.

Hugetlb pages are not cached in the TLB (pymm's simplification): their
accesses always take the fault path and copy under its lock
(hugetlb_user_copy).  The fault path locks as do_user_addr_fault does: the
VMA's per-VMA lock (6.4+) if lock_vma_under_rcu gets it, else mmap_lock.

Data integrity (pymm's own checker): stores to private anonymous memory are
remembered per process (``mm.user_shadow``, page -> bytes); a load that finds
other bytes there reports "data corruption".  The copy and the shadow update
or comparison are one step under the mm's ``shadow_lock`` (the checker's raw
lock, innermost).  A page's first store goes through the fault path, which
has the VMA and decides whether the checker follows the page (None: a shared
or file-backed mapping).  The shadow is dropped when the kernel
legitimately discards memory (munmap, MADV_DONTNEED), after the TLB flush;
after MADV_FREE a page reads its old bytes or zeros, and the store that
cancels the free starts its shadow again from the page's bytes.
(The check assumes one writer at a time per byte, as the workloads arrange.)

Stale TLB entries (pymm's own detector): a TLB entry whose page has been
freed is reported as a use-after-free through a stale TLB entry; a store
through an entry whose page is no longer the one mapped there is lost,
which the shadow reports as data corruption at the next load.  A load
through an entry reclaim's batched flush has not reached yet may read the
old folio's bytes (``_stale_read``): not reported.
"""
import errno
import threading

from ..context import _KernelContext, current
from ..debug import stackdepot
from ..debug.kasan import _track_text, is_poisoned
from ..debug.report import report
from ..errors import BusError, SegmentationFault
from ..locking import lockdep
from ..locking.lockdep_map import might_lock_read
from ..rcu import reader_exit
from ..sched import charge, point
from .hugetlb import hugetlb_user_copy
from .memory import (FAULT_FLAG_ALLOW_RETRY, FAULT_FLAG_KILLABLE, FAULT_FLAG_TRIED,
                     FAULT_FLAG_USER, FAULT_FLAG_VMA_LOCK, FAULT_FLAG_WRITE, VM_FAULT_OOM,
                     VM_FAULT_RETRY, VM_FAULT_SIGBUS, VM_FAULT_SIGSEGV, handle_mm_fault,
                     lock_vma_under_rcu)
from .mm_types import (SHADOW_DISCARDING, SHADOW_LAZYFREE, SHADOW_WINDOW_STORE, VM_ACCESS_FLAGS,
                       VM_HUGETLB, VM_SHARED, VM_WRITE, Folio)
from .mmap import expand_stack_for_fault
from .mmap_lock import (mmap_read_lock, mmap_read_trylock, mmap_read_unlock, per_vma_lock_enabled,
                        vma_end_read)
from .pgtable import PMD_SHIFT, PUD_SHIFT, _PAGE_DIRTY, _PAGE_PROTNONE, _PAGE_RW, PteTable
from .tlb import cpumask_set, this_cpu, tlb_fill

PAGE_SIZE = 4096
PAGE_MASK = ~(PAGE_SIZE - 1)
_MISS = object()          # the instruction faults
_UNKNOWN = object()       # no shadow decision for the page yet


def user_access(task, addr, length, write, data, carefully=False):
    """Copy to (write) or from user memory.  Raises SegmentationFault outside a
    mapping or against its protection, BusError when the fault returns
    VM_FAULT_SIGBUS (its message says why: memory.fault_why).
    ``carefully``: a copy_from_user/copy_to_user inside a system call (the
    fault path tries mmap_lock first, get_mmap_lock_carefully).
    Context: no lock held; takes none while the pages are present (the fault
    path takes the VMA lock or mmap_lock for read)."""
    mm = task.mm
    if not carefully and lockdep.holds_locks():
        might_fault(mm)                    # kernel code's copy_to_user/copy_from_user
    tlb = mm.kernel.tlb
    cpu = this_cpu() if tlb else None
    out = None if write else bytearray(length)
    pos, end = addr, addr + length
    while pos < end:
        n = min(end, (pos & PAGE_MASK) + PAGE_SIZE) - pos
        off = pos - addr
        charge("load")                     # virtual time: a TLB-hit access (a fault charges its own)
        bad = _tlb_access(cpu, mm, pos, n, write, data, off, out) if tlb else _MISS
        if bad is _MISS:                   # (the fault path's locks are scheduling points)
            if carefully:
                bad = do_user_addr_fault(task, pos, n, write, data, off, out, not tlb, True)
            else:
                # The fault enters the kernel.  An access made with locks
                # already held is kernel code's (copy_to_user under a lock):
                # its fault returns to that code, not to user space.
                with _KernelContext(task, user_return=not lockdep.holds_locks()):
                    bad = do_user_addr_fault(task, pos, n, write, data, off, out, not tlb)
            if bad is _MISS:
                continue                   # the fault was handled: retry the instruction
        else:
            point("user access")           # an interrupt may come after the instruction
        if bad is not None:
            _report_corruption(task, pos, *bad)
        pos += n
    return None if write else bytes(out)


def might_fault(mm):
    """``__might_fault`` (mm/memory.c): a user copy made by
    kernel code may fault, and the fault takes mmap_lock for read -- say so
    to lockdep on every copy, not only on the ones that fault this time
    (``might_lock_read``).  With per-VMA locks a fault usually needs no
    mmap_lock at all, and a present page none either: without this, a
    copy_to_user under a lock that mmap_lock-holding code also takes was
    seen only when the fault fell back to mmap_lock.  (The kernel skips it
    with page faults disabled; pymm has no pagefault_disable.)

    Simplification: pymm's own syscalls' copies (``carefully``: today only
    tcp_sendmsg's) do not say it yet.  Said, lockdep reports sk_lock-AF_INET
    -> mmap_lock -> fs_reclaim -> &nsock->tx_lock -> sk_lock-AF_INET in
    hugetlb-zap-reclaim whatever its variant (the nbd socket is the one the
    sender copies under), before the syzbot chain that scenario is about;
    whether the kernel's lockdep sees that cycle too is that scenario's
    question."""
    might_lock_read(mm.mmap_lock)


def hw_page_walk(cpu, mm, pos, write):
    """The hardware page walk: PGD -> PMD table -> PTE table -> PTE, with no
    lock (the tables are freed only after an RCU grace period, and this runs
    with interrupts off).  Fills the TLB and returns the entry, or None
    (not present, PROT_NONE, or a write needing the fault path: not writable,
    or clean -- the hardware's atomic dirty-bit update is left to the fault
    path, which sets it under the ptl).  Context: ``cpu.irq`` held."""
    cpumask_set(mm, cpu)
    pmd = mm.pgd.get(pos >> PUD_SHIFT)
    if pmd is None:
        return None
    pt = pmd.entries[(pos >> PMD_SHIFT) & 511]
    if not isinstance(pt, PteTable):        # none, or a huge (hugetlb) entry: not cached
        return None
    i = (pos >> 12) & 511
    folio = pt.ptes[i]
    bits = pt.bits[i]
    if not isinstance(folio, Folio) or bits & _PAGE_PROTNONE:
        return None
    if write and (bits & (_PAGE_RW | _PAGE_DIRTY)) != (_PAGE_RW | _PAGE_DIRTY):
        return None
    return tlb_fill(cpu, mm, pos >> 12, folio, bool(bits & _PAGE_RW), bool(bits & _PAGE_DIRTY))


def _tlb_access(cpu, mm, pos, n, write, data, off, out):
    """One instruction: translate through the TLB (walking on a miss) and
    copy.  Returns None, _MISS (fault), or a shadow mismatch (index,
    expected, found).  Takes no lock: ``cpu.irq`` is this CPU's interrupt
    flag (flush IPIs wait for the instruction) and ``shadow_lock`` the
    checker's."""
    irq = cpu.irq
    rcu = cpu.rcu
    page = pos & PAGE_MASK
    irq.acquire()
    rcu.depth += 1
    try:
        e = cpu.tlb.get((mm, pos >> 12))
        if e is None or write and not (e[1] and e[2]):
            e = hw_page_walk(cpu, mm, pos, write)
            if e is None:
                # A page fault invalidates the TLB entries for the faulting
                # address (x86: the processor drops them when it faults).
                cpu.tlb.pop((mm, pos >> 12), None)
                return _MISS
        folio = e[0]
        if type(folio) is not Folio and is_poisoned(folio):
            del cpu.tlb[(mm, pos >> 12)]
            _report_stale_tlb(cpu, mm, pos, write, folio)
            return _MISS
        poff = pos - page
        sh = mm.user_shadow
        if write:
            if _first_store(sh, page):
                return _MISS          # first store: the fault path decides about the shadow
            b = data[off:off + n]
            with mm.shadow_lock:
                folio.write_bytes(poff, b)
                _shadow_store(sh, page, poff, b)
            return None
        with mm.shadow_lock:              # the bytes and what the shadow expects, at once
            got = folio.read_bytes(poff, n)
            buf = sh.get(page)
            want = _shadow_bytes(buf, poff, n) if type(buf) is bytearray else None
            if want is not None and want != got and _stale_read(mm, page, folio):
                want = None
        out[off:off + n] = got
        return None if want is None or want == got else _mismatch(want, got)
    finally:
        irq.release()
        reader_exit(rcu)              # (the end of the interrupts-off region)


def _stale_read(mm, page, folio):
    """Is this load going through a stale TLB entry to a folio that reclaim
    unmapped from ``page`` with its flush still batched (and that munmap,
    MADV_DONTNEED/FREE or mremap has not promised away since)?  Then it may
    read the folio's old bytes although the page has been swapped back in
    as another folio and written meanwhile: the kernel lets a CPU read
    through such an entry until try_to_unmap_flush (72b252aed506 only asks
    that a write through a clean entry fault), so the checker does not call
    it corruption.  (A strict reading of x86's memory ordering would: a
    thread that saw the new write elsewhere can still load the old bytes
    here; mainline accepts that window.)  Context: ``cpu.irq`` and
    shadow_lock held."""
    if (page, folio) not in mm.shadow_stale:
        return False
    pmd = mm.pgd.get(page >> PUD_SHIFT)            # still the page's folio: not stale
    pt = pmd.entries[(page >> PMD_SHIFT) & 511] if pmd is not None else None
    return not isinstance(pt, PteTable) or pt.ptes[(page >> 12) & 511] is not folio


def do_user_addr_fault(task, pos, n, write, data, off, out, copy=False, carefully=False):
    """The page fault of an instruction at ``pos``, with do_user_addr_fault's
    locking: with per-VMA locks (6.4+) the VMA is read-locked under RCU
    (lock_vma_under_rcu) and the fault handled under that lock alone; when
    that is not possible, or the fault returns VM_FAULT_RETRY, mmap_lock for
    read.  Returns _MISS to retry the instruction; or, for what the fault
    path copies itself (a hugetlb page; a page's first store, which registers
    it with the shadow; with ``copy``, every access: ``Kernel(tlb=False)``),
    None or a shadow mismatch.  Raises SIGSEGV/SIGBUS as OSErrors."""
    mm = task.mm
    me = current()
    me.fault_why = None
    fault_flags = FAULT_FLAG_USER | FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_KILLABLE
    if write:
        fault_flags |= FAULT_FLAG_WRITE
    vma_locked = lock_vma_under_rcu(mm, pos) if per_vma_lock_enabled(mm) else None
    locked = False
    if vma_locked is None:                   # lock_mmap
        if not carefully or not mmap_read_trylock(mm):
            mmap_read_lock(mm)
        locked = True
    try:
        while True:
            vma = vma_locked if vma_locked is not None else mm.mm_mt.vma_lookup(pos)
            if vma is None:
                vma = expand_stack_for_fault(mm, pos)       # a VM_GROWSDOWN VMA above?
            if vma is None:
                raise SegmentationFault(pos, "no mapping")
            # x86 (access_error): a load needs the VMA accessible at all
            if not vma.vm_flags & (VM_WRITE if write else VM_ACCESS_FLAGS):
                raise SegmentationFault(pos, "access against the mapping's protection")
            if vma.vm_flags & VM_HUGETLB:
                if hugetlb_user_copy(vma, pos, n, write, data, off, out):
                    return None
            elif copy or write and _first_store(mm.user_shadow, pos & PAGE_MASK):
                shadowed = (vma.vm_file is None and not vma.vm_flags & VM_SHARED
                            and mm.kernel.pymm_checks)
                done, bad = _copy_pte(mm, pos, n, write, data, off, out, shadowed)
                if done:
                    return bad
            if vma_locked is not None:
                ret = handle_mm_fault(vma, pos, fault_flags | FAULT_FLAG_VMA_LOCK)
                if ret & VM_FAULT_RETRY:
                    vma_locked = None        # the fault released the VMA lock
                    mmap_read_lock(mm)
                    locked = True
                    continue
            else:
                ret = handle_mm_fault(vma, pos, fault_flags)
                if ret & VM_FAULT_RETRY:
                    # mmap_lock was dropped by the fault; take it again and retry.
                    locked = False
                    mmap_read_lock(mm)
                    locked = True
                    fault_flags |= FAULT_FLAG_TRIED
                    continue
            if ret & VM_FAULT_SIGBUS:
                raise BusError(pos, me.fault_why or "VM_FAULT_SIGBUS")
            if ret & VM_FAULT_SIGSEGV:
                raise SegmentationFault(pos, "fault returned SIGSEGV")
            if ret & VM_FAULT_OOM:
                raise OSError(errno.ENOMEM, f"out of memory faulting {pos:#x}: "
                                            f"{me.fault_why or 'VM_FAULT_OOM'}")
            if vma.vm_flags & VM_HUGETLB or copy or \
                    write and _first_store(mm.user_shadow, pos & PAGE_MASK):
                continue                   # copy under the lock, now that it is mapped
            return _MISS
    finally:
        if vma_locked is not None:
            vma_end_read(vma_locked)
        if locked:
            mmap_read_unlock(mm)


def _copy_pte(mm, pos, n, write, data, off, out, shadowed):
    """Copy under the PTE lock if the page is present with the right access
    (a store needs it writable and dirty), recording in the shadow, at a
    page's first store, whether the checker follows the page.  Returns
    (done, mismatch)."""
    pmd = mm.pgd.get(pos >> PUD_SHIFT)               # pte_offset, inline (every first store)
    if pmd is None:
        return False, None
    pt = pmd.entries[(pos >> PMD_SHIFT) & 511]
    if not isinstance(pt, PteTable):
        return False, None
    i = (pos >> 12) & 511                            # pte_index
    pt.ptl.lock()
    try:
        folio = pt.ptes[i]
        bits = pt.bits[i]
        if not isinstance(folio, Folio) or bits & _PAGE_PROTNONE:
            return False, None
        if write and (bits & (_PAGE_RW | _PAGE_DIRTY)) != (_PAGE_RW | _PAGE_DIRTY):
            return False, None
        page = pos & PAGE_MASK
        poff = pos - page
        sh = mm.user_shadow
        if write:
            b = data[off:off + n]
            with mm.shadow_lock:
                cur = sh.get(page, _UNKNOWN)
                if cur is _UNKNOWN:
                    sh[page] = bytearray() if shadowed else None
                elif cur is SHADOW_LAZYFREE:      # the old bytes or zeros: whichever it is now
                    sh[page] = bytearray(folio.read_bytes(0, PAGE_SIZE).rstrip(b"\0"))
                folio.write_bytes(poff, b)
                _shadow_store(sh, page, poff, b)
            return True, None
        with mm.shadow_lock:
            got = folio.read_bytes(poff, n)
            buf = sh.get(page)
            want = _shadow_bytes(buf, poff, n) if type(buf) is bytearray else None
        out[off:off + n] = got
        return True, None if want is None or want == got else _mismatch(want, got)
    finally:
        pt.ptl.unlock()


def _first_store(sh, page):
    """Does a store to ``page`` need the fault path's shadow decision (the
    page's first store, or the first since MADV_FREE)?"""
    cur = sh.get(page, _UNKNOWN)
    return cur is _UNKNOWN or cur is SHADOW_LAZYFREE


def _mismatch(want, got):
    """(index of the first differing byte, expected, found).  Both were taken
    under shadow_lock: a store between the copy and the comparison would
    otherwise look like corruption."""
    j = next(j for j in range(len(want)) if want[j] != got[j])
    return (j, want, got)


def _shadow_bytes(buf, poff, n):
    """What the shadow expects at [poff, poff + n) of its page: it keeps the
    written extent only (from offset 0 to the last byte stored), the rest
    reads as zeros -- as folio contents do (Folio.write_bytes), so a page
    touched by one store costs bytes, not 4 KiB.  Context: shadow_lock held."""
    want = bytes(buf[poff:poff + n])
    return want if len(want) == n else want + bytes(n - len(want))


def _shadow_store(sh, page, poff, b):
    """Record a store in the shadow (sparse: see _shadow_bytes).  Context:
    shadow_lock held."""
    buf = sh.get(page)
    if type(buf) is bytearray:
        end = poff + len(b)
        have = len(buf)
        if end > have:
            if poff >= have and not any(b):
                return                      # zeros beyond the extent: already what it reads
            buf.extend(bytes(end - have))
        buf[poff:end] = b
    elif buf is SHADOW_DISCARDING:
        sh[page] = SHADOW_WINDOW_STORE


def _report_stale_tlb(cpu, mm, pos, write, folio):
    """pymm's own detector, in KASAN's layout: the access went through a TLB
    entry whose page has been freed (the kernel would have read or written
    freed -- maybe reused -- memory)."""
    t = threading.current_thread()
    op = "Write" if write else "Read"
    title = "BUG: KASAN: use-after-free through a stale TLB entry"
    get = object.__getattribute__
    text = "\n".join([
        "=" * 66,
        title,
        f"{op} of user address {pos:#x} by thread {t.name} on cpu{cpu.id} through a stale TLB entry",
        f"mm {mm!r}: the PTE was changed and the page freed before every CPU's TLB was "
        f"flushed (a missing flush, or a batched flush still pending)",
        "",
        "Call Trace:",
        stackdepot.format(stackdepot.save(2), " "),
        "",
        *_track_text(get(folio, "_kasan_alloc"), "Allocated"),
        "",
        *_track_text(get(folio, "_kasan_free"), "Freed"),
        "=" * 66,
    ])
    report("use-after-free", title, text, kernel=mm.kernel,
           data={"addr": pos, "cpu": cpu.id, "access": op, "pymm_only": True})


def _report_corruption(task, pos, i, want, got):
    t = threading.current_thread()
    bad = pos + i
    title = f"data corruption at {bad:#x}"
    # pymm's own check (the kernel has no such report), printed as a BUG: splat
    report("data-corruption", title,
           f"BUG: {title}\nexpected {want[i:i + 16].hex()}, found {got[i:i + 16].hex()}\n"
           f"process {task.comm}[{task.pid}], thread {t.name}: the page's contents changed "
           f"behind the process's back (a lost COW, a lost migration copy, a page freed "
           f"and reused while mapped, or a store lost through a stale TLB entry: written "
           f"to the old page after the mapping changed).\nCall Trace:\n"
           + stackdepot.format(stackdepot.save(2), " "),
           kernel=task.kernel, data={"addr": bad, "pymm_only": True})
