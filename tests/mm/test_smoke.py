"""A multi-threaded smoke run: four threads on two processes mixing every
system call for about two seconds of real concurrency, then zero findings.

Each thread owns a few fixed slots of its process's address space and keeps a
model of what they hold (mapped or not, protection, contents); every load is
compared with the model, and pymm's own data-integrity check watches every
private anonymous page as well.  Slots are per thread, so the model is exact
even though the VMA tree, page tables, anon_vmas, LRU lists and page pools
are shared and contended.  One thread per process also moves the heap (brk
is per process).  Each thread's choices come from its own seeded Random, and
the run widens race windows with pymm.sched.free_mode (seeded delays at lock
releases and scheduling points, a tiny switch interval).
"""
import random
import sys
import threading
import time
import traceback

import pymm
from pymm import (MADV_DONTNEED, MAP_ANONYMOUS, MAP_FIXED, MAP_POPULATE, MAP_PRIVATE, PAGE_SIZE,
                  PROT_READ, PROT_WRITE)
from pymm.sched import free_mode

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
SLOTS = 6
SLOT_PAGES = 4
BASE = 0x3000_0000
THREAD_SPAN = 0x100_0000          # each thread's slots live in its own 16 MiB
DURATION = 2.0
JOIN_TIMEOUT = 60.0


class Worker:
    def __init__(self, k, proc, index, seed, moves_heap):
        self.k, self.p, self.index = k, proc, index
        self.rnd = random.Random(seed)
        self.moves_heap = moves_heap
        self.model = [None] * SLOTS        # slot -> bytearray contents, or None (unmapped)
        self.readonly = [False] * SLOTS
        self.locked = [False] * SLOTS
        self.heap = 0                       # pages of heap this thread added
        self.ops = 0
        self.error = None

    def addr(self, slot):
        return BASE + self.index * THREAD_SPAN + slot * (SLOT_PAGES + 1) * P   # gaps: no merging

    # -- operations ----------------------------------------------------------------------
    def op_mmap(self, s):
        flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
        if self.rnd.random() < 0.3:
            flags |= MAP_POPULATE
        assert self.p.mmap(self.addr(s), SLOT_PAGES * P, RW, flags) == self.addr(s)
        self.model[s] = bytearray(SLOT_PAGES * P)
        self.readonly[s] = self.locked[s] = False

    def op_munmap(self, s):
        self.p.munmap(self.addr(s), SLOT_PAGES * P)
        self.model[s] = None

    def op_store(self, s):
        if self.model[s] is None or self.readonly[s]:
            return self.expect_segv(lambda: self.p.store(self.addr(s) + 8, b"x"))
        off = self.rnd.randrange(SLOT_PAGES * P - 64)
        data = self.rnd.randbytes(self.rnd.randrange(1, 64))
        self.p.store(self.addr(s) + off, data)
        self.model[s][off:off + len(data)] = data

    def op_load(self, s):
        if self.model[s] is None:
            return self.expect_segv(lambda: self.p.load(self.addr(s), 1))
        got = self.p.load(self.addr(s), SLOT_PAGES * P)
        assert got == bytes(self.model[s]), f"thread {self.index} slot {s}: contents differ"

    def op_mprotect(self, s):
        if self.model[s] is None:
            return
        ro = not self.readonly[s]
        self.p.mprotect(self.addr(s), SLOT_PAGES * P, PROT_READ if ro else RW)
        self.readonly[s] = ro

    def op_mlock(self, s):
        if self.model[s] is None:
            return
        if self.locked[s]:
            self.p.munlock(self.addr(s), SLOT_PAGES * P)
        else:
            self.p.mlock(self.addr(s), SLOT_PAGES * P)
        self.locked[s] = not self.locked[s]

    def op_dontneed(self, s):
        if self.model[s] is None or self.locked[s]:
            return
        self.p.madvise(self.addr(s), SLOT_PAGES * P, MADV_DONTNEED)
        self.model[s][:] = bytes(SLOT_PAGES * P)

    def op_fork(self, s):
        child = self.p.fork()
        try:
            for t in range(SLOTS):        # the child sees this thread's slots as they were
                if self.model[t] is not None:
                    assert child.load(self.addr(t), SLOT_PAGES * P) == bytes(self.model[t])
            if self.model[s] is not None:
                child.store(self.addr(s), b"child")   # private: read-only VMAs are copied too
        except pymm.SegmentationFault:
            assert self.readonly[s]
        finally:
            child.exit()
        self.op_load(s)                     # the child's write did not reach us

    def op_brk(self, s):
        if not self.moves_heap:
            return
        base = self.p.mm.start_brk
        n = self.rnd.randrange(0, 6)
        assert self.p.brk(base + n * P) == base + n * P
        if n:
            self.p.store(base + n * P - 3, b"top")
            assert self.p.load(base + n * P - 3, 3) == b"top"
        self.heap = n

    def expect_segv(self, fn):
        try:
            fn()
        except pymm.SegmentationFault:
            return
        raise AssertionError(f"thread {self.index}: access should have faulted")

    OPS = ("mmap", "munmap", "store", "store", "load", "load", "mprotect", "mlock", "dontneed",
           "fork", "brk")

    def run(self, deadline):
        try:
            while time.monotonic() < deadline:
                op = self.rnd.choice(self.OPS)
                getattr(self, "op_" + op)(self.rnd.randrange(SLOTS))
                self.ops += 1
            for s in range(SLOTS):
                self.op_load(s)
        except BaseException as e:          # noqa: B902 - reported by the main thread
            self.error = (e, traceback.format_exc())


def test_multithreaded_smoke_zero_findings(kernel, lockdep):
    k = kernel
    procs = [k.spawn("smoke-a"), k.spawn("smoke-b")]
    workers = [Worker(k, procs[i % 2], i, seed=1000 + i, moves_heap=i < 2) for i in range(4)]
    with free_mode(seed=7, probability=0.02, max_sleep=1e-4, switch=1e-5):
        deadline = time.monotonic() + DURATION
        threads = [threading.Thread(target=w.run, args=(deadline,), name=f"smoke-{w.index}",
                                    daemon=True) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(JOIN_TIMEOUT)
        hung = [t for t in threads if t.is_alive()]
    if hung:
        frames = sys._current_frames()
        dump = "\n".join(f"--- {t.name}\n" + "".join(traceback.format_stack(frames[t.ident]))
                         for t in hung if t.ident in frames)
        raise AssertionError(f"{len(hung)} smoke threads still running after {JOIN_TIMEOUT} s:\n{dump}")
    for w in workers:
        if w.error is not None:
            raise AssertionError(f"thread {w.index} failed after {w.ops} ops:\n{w.error[1]}")
        assert w.ops >= 30, f"thread {w.index} did only {w.ops} operations"
    assert k.check() == []
    assert k.findings() == [] and lockdep.reports() == []
    for p in procs:
        p.exit()
    assert k.meminfo()["MemFree"] == k.meminfo()["MemTotal"]
    assert k.check() == [] and k.findings() == []
