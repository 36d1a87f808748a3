"""``fuzz``: random system-call programs against a model of user-visible
memory (syzkaller's idea, pymm's detectors).

Several roles (threads) each own a *family* of processes (one to start
with; fork adds children, exit removes them) and run random programs on it:
mmap / munmap / mprotect / madvise / mlock / mremap / fork / exit / mbind /
move_pages / truncate / fallocate / reclaim and loads and stores, over
private and shared anonymous memory, a tmpfs file, anonymous hugetlb and a
hugetlbfs file, on a 2-node machine, with valid and invalid arguments.
Families share the files, the page pools, swap, reclaim and migration, so
their programs race in the kernel while each process's memory has one user.

The reference model (``Model``): for every page a process mapped it knows the
mapping's kind and protection, and for private anonymous memory (4 KiB and
hugetlb) the exact contents:

- what a process stored it loads back (through reclaim, swap, migration,
  fork and COW);
- COW isolation: a child starts with a copy of its parent's model and the two
  then diverge (a store in one is never seen by the other);
- MADV_DONTNEED zero-fills private anonymous memory; MADV_FREE leaves either
  the old contents or zeros (lazy free) until the next store; MADV_WIPEONFORK
  ranges are zero in the child;
- nothing survives munmap: a load there is SIGSEGV, as is a load of PROT_NONE
  or a store to a read-only page;
- invalid arguments fail with the man page's errno, valid ones succeed or fail
  only the way Linux may (ENOMEM, EAGAIN, SIGBUS of hugetlb or beyond EOF).

A disagreement raises ``ModelError`` (an AssertionError: a finding of kind
"assertion" in both modes).  At quiescence (teardown: every process exits, the
files are truncated) /proc/meminfo must be back to what it was after setup,
and ``k.check()`` runs every invariant check.

Fault injection (pymm.debug.fault_inject) is on in every site with a small
probability while the roles run (``FAIL``), so error paths run too.  In a
controlled run the program and the injected failures come from the schedule's
seed: the token replays both.

Programs are drawn through a ``Chooser``: ``RngChooser`` (the stress runner's
per-role random stream) or a Hypothesis ``data`` object (tests/test_fuzz.py
runs the same ops as a Hypothesis stateful test, which shrinks a failing
program to a minimal one).
"""
import collections
import errno
import itertools
from types import SimpleNamespace

from .. import constants as C
from ..debug.fault_inject import SITES
from ..errors import BusError, SegmentationFault
from ..kernel import Kernel
from ..mm.swap_state import swap_reclaim_cache
from . import register
from .base import Scenario
from ..locking import lockdep

P = C.PAGE_SIZE
HP = C.HPAGE_SIZE
RW = C.PROT_READ | C.PROT_WRITE
SHM_PAGES = 16
HUGE_FILE_PAGES = 2
MAX_FAMILY = 3
MAX_MAPS = 8            # mappings per process the program keeps track of

# probability (percent) of an injected failure per allocation while roles run
FAIL = {site: {"probability": 2.0} for site in SITES}

# kinds of mapping
ANON, SHANON, SHM, SHM_PRIV, HUGE, HUGE_SH = "anon", "shared-anon", "shm", "shm-private", \
    "huge", "huge-shared"
PRIVATE_ANON = (ANON, HUGE)      # contents modelled exactly


# what op_mmap maps, drawn uniformly (repeats weight a kind up)
KINDS = (ANON, ANON, ANON, SHANON, SHM, SHM_PRIV, HUGE, HUGE_SH)


class ModelError(AssertionError):
    """The emulated mm and the reference model disagree."""


class RngChooser:
    """Draws from a ``random.Random``; ``tape``, if given, records each draw
    (as its offset from ``lo``) so that ``TapeChooser`` can replay it."""

    def __init__(self, rng, tape=None):
        self.rng = rng
        self.tape = tape

    def int(self, lo, hi):
        v = self.rng.randint(lo, hi)
        if self.tape is not None:
            self.tape.append(v - lo)
        return v

    def choice(self, seq):
        return seq[self.int(0, len(seq) - 1)]


class TapeChooser:
    """Replays recorded draws; a draw beyond the tape, or out of range, is
    the smallest value (so deleting or lowering draws shrinks a program)."""

    def __init__(self, tape):
        self.tape = list(tape)
        self.i = 0

    def int(self, lo, hi):
        v = self.tape[self.i] if self.i < len(self.tape) else 0
        self.i += 1
        return lo + v if 0 <= v <= hi - lo else lo

    def choice(self, seq):
        return seq[self.int(0, len(seq) - 1)]


class DataChooser:
    """Draws from a Hypothesis ``data`` object (st.data())."""

    def __init__(self, data):
        from hypothesis import strategies
        self.data, self.st = data, strategies

    def int(self, lo, hi):
        return self.data.draw(self.st.integers(lo, hi))

    def choice(self, seq):
        return seq[self.int(0, len(seq) - 1)]


# The last system calls of a run (every family's, in the order they returned)
# are kept in a ring; every report of the run's kernel ends with them
# (Kernel.report_context), and an exception out of an op (a ModelError, or
# anything but an OSError escaping the kernel) gets them as a note, which
# the finding's traceback prints.  A free-mode run cannot be replayed, so
# this is how its program is seen.  Entries are kept raw and formatted only
# then.
CALL_RING = 100


def _wrap(st, obj):
    if st.log is None:
        return obj
    label = f"{obj.comm}[{obj.pid}]" if hasattr(obj, "pid") else obj.name
    return _Traced(obj, label, st.log)


def _shown(v):
    return hex(v) if isinstance(v, int) and v > 4096 else repr(v)


def format_call(entry):
    """One logged system call as a line: ``label.name(args) = result`` or
    ``-> Error: message``."""
    label, name, args, kw, ok, out = entry
    shown = ", ".join([_shown(a) for a in args] +
                      [f"{k}={'<' + v.name + '>' if hasattr(v, 'name') else repr(v)}"
                       for k, v in kw.items()])
    if not ok:
        return f"{label}.{name}({shown}) -> {out}"
    return f"{label}.{name}({shown}) = {_shown(out)}"[:200]


def last_calls(st):
    """The ring of last system calls as text (for a report or a note).
    Other families may append meanwhile: a copy that saw one is retried."""
    for _ in range(100):
        try:
            calls = list(st.log)[-CALL_RING:]
            break
        except RuntimeError:             # deque mutated during iteration
            continue
    else:
        return "(the last system calls of the run could not be read)"
    return (f"the last {len(calls)} system calls of the run, oldest first:\n" +
            "\n".join("  " + format_call(c) for c in calls))


def note_calls(st, e):
    """Add the ring of last system calls to ``e`` as a note."""
    if st.log is not None:
        e.add_note(last_calls(st))


class _Traced:
    """A process or file whose system calls are logged, one entry each, in
    ``log`` (a list: the program listing a shrunk failure prints; a ring:
    the last calls of a run)."""

    def __init__(self, obj, label, log):
        self._obj, self._label, self._log = obj, label, log

    def __getattr__(self, name):
        v = getattr(self._obj, name)
        if not callable(v) or name.startswith("_"):
            return v

        def call(*args, **kw):
            try:
                r = v(*args, **kw)
            except BaseException as e:
                self._log.append((self._label, name, args, kw, False, f"{type(e).__name__}: {e}"))
                raise
            self._log.append((self._label, name, args, kw, True, r))
            return r
        return call


class Proc:
    """A process and its model: ``pages`` maps each page address this
    process has mapped to [kind, prot, flags]; ``data`` the bytes of private
    anonymous pages that are not all zero; ``freed`` the pages whose
    contents are uncertain (after MADV_FREE, a madvise that failed half-way,
    a hugetlb page its owner may take back): a tuple of the contents each
    may have had then -- or zeros -- with ``data``'s stores since on top
    (``_to_freed``, ``_check_access``)."""

    def __init__(self, p):
        self.p = p
        self.pages = {}
        self.data = {}
        self.freed = {}
        self.maps = []           # [start, length, kind] as mapped (may be partly unmapped since)
        self.owned = set()       # ids of the private hugetlb mappings this process made (their
                                 # reservation's owner, HPAGE_RESV_OWNER; fork children own none)

    def fork_model(self, child):
        c = Proc(child)
        for a, info in self.pages.items():
            if "dontfork" in info[2]:
                continue
            c.pages[a] = [info[0], info[1], set(info[2]) - LOCK_STATES, info[3]]
            if "wipeonfork" in info[2]:
                continue
            if a in self.data:
                c.data[a] = bytearray(self.data[a])
            if a in self.freed:
                c.freed[a] = self.freed[a]
        c.maps = [list(m) for m in self.maps]
        return c

    def drop(self, start, end):
        for a in range(start, end, P):
            self.pages.pop(a, None)
            self.data.pop(a, None)
            self.freed.pop(a, None)


def new_mapping_id(st):
    """A new mapping's id in the model.  Families run on their own threads
    and share ``st``: the id is drawn once, in one step (``next`` of an
    itertools.count is atomic), and used for the pages, the mapping and
    ``owned`` alike.  (A shared ``st.next_id`` read three times and then
    incremented let another family's mmap slip in between in free mode:
    a private hugetlb mapping's pages then carried an id its owner did not
    own, so the model missed that the owner may take a COW-shared page back
    from its children and reported their zero read as lost data.)"""
    return next(st.mapping_ids)


def _expect(cond, what):
    if not cond:
        raise ModelError(what)


def _errno_in(e, allowed, what):
    if not isinstance(e, OSError) or isinstance(e, (SegmentationFault, BusError)) or \
            e.errno not in allowed:
        raise ModelError(f"{what}: unexpected {type(e).__name__}: {e} (allowed: "
                         f"{', '.join(errno.errorcode[x] for x in allowed)})") from e


MAY_FAIL = (errno.ENOMEM, errno.EAGAIN)

# A page's VM_LOCKED as the model knows it: "locked" for sure, or "maybe-locked"
# after an mlock/munlock that failed.  Linux's do_mlock sets VM_LOCKED
# (apply_vma_lock_flags) before __mm_populate, so an mlock whose populate fails
# (EAGAIN, or ENOMEM for a page beyond EOF) leaves the range locked; and
# apply_vma_lock_flags stops at a hole or a failed split with the VMAs before
# it changed.  Only a later call that succeeds tells the model again.
LOCK_STATES = frozenset(("locked", "maybe-locked"))


def _any_locked(proc, pages, maybe=True):
    states = LOCK_STATES if maybe else {"locked"}
    return any(states & proc.pages[a][2] for a in pages if a in proc.pages)


def _set_locked(info, state):
    info[2].difference_update(LOCK_STATES)
    if state is not None:
        info[2].add(state)


class Family:
    """One role's processes and the ops it runs on them."""

    def __init__(self, st, name):
        self.st = st
        self.k = st.kernel
        self.name = name
        self.procs = [Proc(_wrap(st, self.k.spawn(name)))]

    # -- helpers ------------------------------------------------------------------------
    def pick_map(self, ch, proc):
        """One of the process's mappings still (partly) mapped: [start, length, kind, id]."""
        live = [m for m in proc.maps if any(proc.pages.get(a, (0, 0, 0, None))[3] == m[3]
                                            for a in range(m[0], m[0] + m[1], P))]
        proc.maps = live
        return ch.choice(live) if live else None

    def sub_range(self, ch, proc, m):
        """A page range inside mapping ``m`` (the whole mapping for hugetlb),
        starting at a page still mapped by it.  It may cover holes or other
        4 KiB mappings placed there since, never part of a hugetlb mapping."""
        start, length, kind, mid = m
        if kind in (HUGE, HUGE_SH):
            return start, length
        mine = [x for x in range(length // P) if proc.pages.get(start + x * P, (0, 0, 0, None))[3] == mid]
        i = ch.choice(mine)
        j = ch.int(i + 1, length // P)
        for x in range(i + 1, j):
            info = proc.pages.get(start + x * P)
            if info is not None and info[0] in (HUGE, HUGE_SH):
                j = x
                break
        return start + i * P, (j - i) * P

    # -- the ops ------------------------------------------------------------------------
    def step(self, ch):
        proc = ch.choice(self.procs)
        op = ch.choice(OPS)
        try:
            op(self, ch, proc)
        except Exception as e:
            if not isinstance(e, OSError):
                note_calls(self.st, e)
            raise


def op_mmap(fam, ch, proc):
    if len(proc.maps) >= MAX_MAPS:
        return op_munmap(fam, ch, proc)
    p, st = proc.p, fam.st
    kind = ch.choice(KINDS)
    bad = ch.int(0, 9) == 0
    prot = ch.choice((RW, RW, RW, C.PROT_READ))
    extra = ch.choice((0, 0, 0, C.MAP_POPULATE, C.MAP_LOCKED))
    if bad:
        which = ch.int(0, 2)
        try:
            if which == 0:
                p.mmap(0, 0, RW, C.MAP_PRIVATE | C.MAP_ANONYMOUS)
            elif which == 1:
                p.mmap(0, P, RW, C.MAP_ANONYMOUS)
            else:
                p.mmap(0x1234_5001, P, RW, C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED)
        except OSError as e:
            _errno_in(e, (errno.EINVAL,), "mmap with bad arguments")
            return
        raise ModelError("mmap with bad arguments succeeded")
    if kind in (HUGE, HUGE_SH):
        length = HP
    else:
        length = ch.int(1, 4) * P
    if kind == ANON:
        flags, fd, off = C.MAP_PRIVATE | C.MAP_ANONYMOUS, None, 0
    elif kind == SHANON:
        flags, fd, off = C.MAP_SHARED | C.MAP_ANONYMOUS, None, 0
    elif kind in (SHM, SHM_PRIV):
        flags = C.MAP_SHARED if kind == SHM else C.MAP_PRIVATE
        fd, off = st.shm, ch.int(0, SHM_PAGES - length // P) * P
    elif kind == HUGE:
        flags, fd, off = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_HUGETLB, None, 0
    else:
        flags, fd, off = C.MAP_SHARED, st.huge, ch.int(0, HUGE_FILE_PAGES - 1) * HP
    try:
        addr = p.mmap(0, length, prot, flags | extra, fd=fd, offset=off)
    except OSError as e:
        _errno_in(e, MAY_FAIL, f"mmap {kind}")
        return
    _expect(addr % (HP if kind in (HUGE, HUGE_SH) else P) == 0, f"mmap returned {addr:#x}")
    flags = {"locked"} if extra == C.MAP_LOCKED and kind not in (HUGE, HUGE_SH) else set()
    mid = new_mapping_id(fam.st)
    for a in range(addr, addr + length, P):
        _expect(a not in proc.pages, f"mmap {kind} returned {addr:#x}, overlapping a live mapping")
        proc.pages[a] = [kind, prot, set(flags), mid]
    proc.maps.append([addr, length, kind, mid])
    if kind == HUGE:
        proc.owned.add(mid)


def op_munmap(fam, ch, proc):
    m = fam.pick_map(ch, proc)
    if m is None or ch.int(0, 9) == 0:
        try:
            proc.p.munmap(0x10_0001, P)
        except OSError as e:
            _errno_in(e, (errno.EINVAL,), "munmap of an unaligned address")
            return
        raise ModelError("munmap of an unaligned address succeeded")
    start, length = fam.sub_range(ch, proc, m)
    try:
        proc.p.munmap(start, length)
    except OSError as e:
        _errno_in(e, MAY_FAIL, "munmap")        # a split may need a VMA (ENOMEM)
        return
    proc.drop(start, start + length)
    _check_access(fam, proc, start, False)       # nothing survives munmap


def op_mprotect(fam, ch, proc):
    m = fam.pick_map(ch, proc)
    if m is None or ch.int(0, 9) == 0:
        which = ch.int(0, 1)
        try:
            if which or m is None:
                proc.p.mprotect(0x10_0001, P, C.PROT_READ)
            else:
                proc.p.mprotect(m[0], P, 0x100)
        except OSError as e:
            _errno_in(e, (errno.EINVAL,), "mprotect with bad arguments")
            return
        raise ModelError("mprotect with bad arguments succeeded")
    start, length = fam.sub_range(ch, proc, m)
    prot = ch.choice((C.PROT_NONE, C.PROT_READ, RW))
    try:
        proc.p.mprotect(start, length, prot)
    except OSError as e:
        # ENOMEM: part of the range is unmapped (munmap'd earlier) or a split failed
        _errno_in(e, MAY_FAIL, "mprotect")
        if all(a in proc.pages for a in range(start, start + length, P)) and e.errno == errno.ENOMEM:
            return          # a failed split (pymm: not injected) or a page-table allocation
        return
    for a in range(start, start + length, P):
        _expect(a in proc.pages, f"mprotect({start:#x}, {length:#x}) succeeded over an unmapped page")
        proc.pages[a][1] = prot


def op_madvise(fam, ch, proc):
    m = fam.pick_map(ch, proc)
    if m is None or ch.int(0, 12) == 0:
        try:
            proc.p.madvise(m[0] if m else 0x10_0000, P, 12345)
        except OSError as e:
            _errno_in(e, (errno.EINVAL,), "madvise with an unknown advice")
            return
        raise ModelError("madvise with an unknown advice succeeded")
    start, length = fam.sub_range(ch, proc, m)
    kind = m[2]
    advs = [C.MADV_DONTNEED, C.MADV_WILLNEED, C.MADV_DONTFORK, C.MADV_DOFORK, C.MADV_POPULATE_WRITE]
    for name in ("MADV_FREE", "MADV_COLD", "MADV_PAGEOUT", "MADV_WIPEONFORK", "MADV_KEEPONFORK"):
        if hasattr(C, name) and kind not in (HUGE, HUGE_SH):
            advs.append(getattr(C, name))
    adv = ch.choice(advs)
    pages = [a for a in range(start, start + length, P)]
    locked = _any_locked(proc, pages)
    if adv == C.MADV_POPULATE_WRITE:
        _owner_may_steal(fam, proc, start, start + length)
    try:
        proc.p.madvise(start, length, adv)
    except SegmentationFault as e:
        raise ModelError(f"madvise raised {e!r}") from e
    except OSError as e:
        allowed = MAY_FAIL + (errno.EINVAL, errno.EFAULT, errno.EPERM, errno.EIO, errno.EBUSY) \
            if adv in (C.MADV_POPULATE_WRITE, getattr(C, "MADV_FREE", -1),
                       getattr(C, "MADV_WIPEONFORK", -1)) or locked else MAY_FAIL
        if adv in (C.MADV_DONTNEED, getattr(C, "MADV_FREE", -1)) and locked:
            allowed = (errno.EINVAL,) if _any_locked(proc, pages, maybe=False) else \
                MAY_FAIL + (errno.EINVAL,)
        _errno_in(e, allowed + ((errno.ENOMEM,) if any(a not in proc.pages for a in pages) else ()),
                  f"madvise({adv})")
        if adv in (C.MADV_DONTNEED, getattr(C, "MADV_FREE", -1)):
            # madvise applies VMA by VMA and stops at the first error: the
            # pages before it may have been dropped (old contents or zeros)
            for a in pages:
                if a in proc.pages and "locked" in proc.pages[a][2]:
                    break               # (a maybe-locked one may have been dropped)
                if proc.pages.get(a, [None])[0] in PRIVATE_ANON:
                    _to_freed(proc, a)
        return
    for a in pages:
        info = proc.pages.get(a)
        _expect(info is not None, f"madvise({adv}) succeeded over an unmapped page {a:#x}")
        if adv in (C.MADV_DONTNEED, getattr(C, "MADV_FREE", -1), getattr(C, "MADV_COLD", -1),
                   getattr(C, "MADV_PAGEOUT", -1)) and info[0] not in (HUGE, HUGE_SH):
            _set_locked(info, None)     # these refuse VM_LOCKED VMAs: so it is not locked
        if adv == C.MADV_DONTNEED and info[0] in PRIVATE_ANON:
            proc.data.pop(a, None)
            proc.freed.pop(a, None)
        elif adv == getattr(C, "MADV_FREE", None) and info[0] == ANON:
            _to_freed(proc, a)
        elif adv == C.MADV_DONTFORK:
            info[2].add("dontfork")
        elif adv == C.MADV_DOFORK:
            info[2].discard("dontfork")
        elif adv == getattr(C, "MADV_WIPEONFORK", None):
            info[2].add("wipeonfork")
        elif adv == getattr(C, "MADV_KEEPONFORK", None):
            info[2].discard("wipeonfork")


def op_mlock(fam, ch, proc):
    p = proc.p
    which = ch.int(0, 5)
    m = fam.pick_map(ch, proc)
    try:
        if which == 5:
            if ch.int(0, 1):
                # populate write-faults every writable private mapping, hugetlb too
                for a in sorted({a & -HP for a, info in proc.pages.items() if info[0] == HUGE}):
                    _owner_may_steal(fam, proc, a, a + HP)
                p.mlockall(ch.choice((C.MCL_CURRENT, C.MCL_CURRENT | C.MCL_ONFAULT)))
                for info in proc.pages.values():
                    if info[0] not in (HUGE, HUGE_SH):      # mlock skips hugetlb VMAs
                        _set_locked(info, "locked")
            else:
                p.munlockall()
                for info in proc.pages.values():
                    _set_locked(info, None)
            return
        if m is None or which == 4:
            try:
                p.mlock2(m[0] if m else 0x10_0000, P, 0xFF)
            except OSError as e:
                _errno_in(e, (errno.EINVAL,), "mlock2 with bad flags")
                return
            raise ModelError("mlock2 with bad flags succeeded")
        start, length = fam.sub_range(ch, proc, m)
        if which < 2:
            # mlock_fixup leaves a hugetlb VMA unlocked (no VM_LOCKED, nor
            # VM_LOCKONFAULT), but __mm_populate still faults it in, for
            # write where it is writable and private (populate_vma_page_range:
            # FOLL_WRITE breaks COW) -- MLOCK_ONFAULT included.  An owner's
            # COW of a page its children share may take it back from them.
            _owner_may_steal(fam, proc, start, start + length)
            (p.mlock(start, length) if which == 0 else p.mlock2(start, length, C.MLOCK_ONFAULT))
            for a in range(start, start + length, P):
                _expect(a in proc.pages, f"mlock succeeded over an unmapped page {a:#x}")
                if proc.pages[a][0] not in (HUGE, HUGE_SH):
                    _set_locked(proc.pages[a], "locked")
        else:
            p.munlock(start, length)
            for a in range(start, start + length, P):
                if a in proc.pages:
                    _set_locked(proc.pages[a], None)
    except SegmentationFault as e:
        raise ModelError(f"mlock family raised {e!r}") from e
    except OSError as e:
        _errno_in(e, MAY_FAIL + (errno.EINVAL,), "mlock family")   # EINVAL: hugetlb split refused
        if e.errno != errno.EINVAL:
            # VM_LOCKED may have changed before the failure (see LOCK_STATES)
            for a in range(start, start + length, P):
                info = proc.pages.get(a)
                if info is not None and info[0] not in (HUGE, HUGE_SH) and \
                        (which >= 2 or "locked" not in info[2]):
                    _set_locked(info, "maybe-locked")


def op_access(fam, ch, proc):
    """A store or a load of a random page this process maps (or mapped)."""
    if not proc.pages:
        return op_mmap(fam, ch, proc)
    m = fam.pick_map(ch, proc)
    if m is None:
        return op_mmap(fam, ch, proc)
    start, length, kind, mid = m
    a = start + ch.int(0, length // P - 1) * P if kind not in (HUGE, HUGE_SH) else \
        start + ch.choice((0, 1, 511)) * P
    if ch.int(0, 1):
        _store(fam, ch, proc, a)
    else:
        _check_access(fam, proc, a, True)


def _owner_may_steal(fam, proc, start, end):
    """The owner of a private hugetlb mapping is about to write to it (a
    store, or a populate for write: mlock, mlockall, MADV_POPULATE_WRITE): if a
    huge page there is COW-shared with its fork children and the pool has no
    page for the copy outside the reservations, Linux's hugetlb_wp takes the
    page away from the children instead (unmap_ref_private): each child then
    gets SIGBUS there (HPAGE_RESV_UNMAPPED), and a child it forks later --
    which does not inherit that flag (hugetlb_dup_vma_private) -- faults in a
    fresh zero page.  So from now on each sharer's page holds its old bytes
    or zeros (or SIGBUS), then its own stores: the model of ``freed``."""
    for a in range(start & -HP, end, HP):
        info = proc.pages.get(a)
        if info is None or info[0] != HUGE or info[3] not in proc.owned:
            continue
        for q in fam.procs:
            if q is proc:
                continue
            for b in range(a, a + HP, P):
                if q.pages.get(b, (0, 0, 0, None))[3] == info[3]:
                    _to_freed(q, b)


def _store(fam, ch, proc, a):
    info = proc.pages.get(a)
    _owner_may_steal(fam, proc, a, a + P)
    off = ch.int(0, P - 8)
    data = bytes([ch.int(1, 255)]) * 8
    try:
        proc.p.store(a + off, data)
    except SegmentationFault as e:
        _expect(info is None or not info[1] & C.PROT_WRITE, f"store at {a + off:#x} ({info}): {e}")
        return
    except BusError as e:
        _expect(info is not None and info[0] != ANON and info[0] != SHANON,
                f"store at {a + off:#x} ({info}): {e}")
        return
    except OSError as e:
        _errno_in(e, (errno.ENOMEM,), f"store at {a + off:#x}")
        return
    _expect(info is not None and info[1] & C.PROT_WRITE,
            f"store at {a + off:#x} succeeded but the model says {info}")
    if info[0] in PRIVATE_ANON:
        buf = proc.data.get(a)
        if buf is None:
            old = proc.freed.pop(a, None)
            buf = proc.data[a] = bytearray(P)
            if old is not None:
                # after MADV_FREE a store cancels the free of that page: the
                # rest of the page is the old contents or zeros (see _check_access)
                proc.freed[a] = old
        buf[off:off + 8] = data


def _overlay(base, buf):
    """``base`` with the bytes stored since (``buf``'s non-zero bytes: a
    store never writes zeros) on top."""
    cand = bytearray(base)
    if buf is not None:
        for i in range(P):
            if buf[i]:
                cand[i] = buf[i]
    return cand


def _to_freed(proc, a):
    """Page ``a``'s contents become uncertain: whatever it may hold now, or
    zeros (then the stores to come).  Each candidate is kept: a page freed
    twice may hold what it held before either free."""
    buf = proc.data.pop(a, None)
    if buf is None:
        return               # zeros, or already uncertain with nothing stored since
    prev = proc.freed.get(a, ())
    cands = {bytes(_overlay(base, buf)) for base in prev} | {bytes(buf)}
    proc.freed[a] = tuple(sorted(cands))


def _check_access(fam, proc, a, expect_mapped, off=0):
    """Load the whole page at ``a`` and compare it with the model."""
    info = proc.pages.get(a)
    n = P - off
    try:
        got = proc.p.load(a + off, n)
    except SegmentationFault as e:
        _expect(info is None or info[1] in (C.PROT_NONE, C.PROT_WRITE),
                f"load at {a + off:#x} ({info}): {e}")
        return
    except BusError as e:
        _expect(info is not None and info[0] not in (ANON, SHANON),
                f"load at {a + off:#x} ({info}): {e}")
        return
    except OSError as e:
        _errno_in(e, (errno.ENOMEM,), f"load at {a + off:#x}")
        return
    _expect(info is not None, f"load at {a + off:#x} succeeded after munmap (got {got[:16].hex()}"
                              f"{'...' if n > 16 else ''})")
    _expect(info[1] != C.PROT_NONE, f"load at {a + off:#x} of a PROT_NONE page succeeded")
    if info[0] in PRIVATE_ANON:
        buf = proc.data.get(a)
        want = bytes(buf[off:off + n]) if buf is not None else bytes(n)
        if got == want:
            return
        old = proc.freed.get(a)
        if old is not None:      # MADV_FREE'd: the old contents or zeros, then our stores
            for base in (*old, bytes(P)):
                if bytes(_overlay(base, buf)[off:off + n]) == got:
                    return
        i = next(i for i in range(n) if got[i] != want[i])
        raise ModelError(f"process {proc.p.comm}[{proc.p.pid}] read {got[i:i + 16].hex()} at "
                         f"{a + off + i:#x} ({info[0]}), its model says {want[i:i + 16].hex()}: "
                         f"its memory changed behind its back")


def op_fork(fam, ch, proc):
    if len(fam.procs) >= MAX_FAMILY:
        return op_exit(fam, ch, proc)
    try:
        child = _wrap(fam.st, proc.p.fork())
    except OSError as e:
        _errno_in(e, MAY_FAIL, "fork")
        return
    fam.procs.append(proc.fork_model(child))


def op_exit(fam, ch, proc):
    if len(fam.procs) == 1:
        return op_fork(fam, ch, proc)
    proc.p.exit()
    fam.procs.remove(proc)


def op_mbind(fam, ch, proc):
    m = fam.pick_map(ch, proc)
    if m is None or ch.int(0, 9) == 0:
        try:
            proc.p.mbind(m[0] if m else 0x10_0000, P, 99, [0])
        except OSError as e:
            _errno_in(e, (errno.EINVAL,), "mbind with an invalid mode")
            return
        raise ModelError("mbind with an invalid mode succeeded")
    start, length = fam.sub_range(ch, proc, m)
    mode = ch.choice((C.MPOL_BIND, C.MPOL_PREFERRED, C.MPOL_INTERLEAVE, C.MPOL_DEFAULT))
    nodes = None if mode == C.MPOL_DEFAULT else ch.choice(([0], [1], [0, 1]))
    flags = ch.choice((0, C.MPOL_MF_MOVE, C.MPOL_MF_MOVE_ALL))
    try:
        proc.p.mbind(start, length, mode, nodes, flags)
    except SegmentationFault as e:
        raise ModelError(f"mbind raised {e!r}") from e
    except OSError as e:
        _errno_in(e, MAY_FAIL + (errno.EFAULT, errno.EIO, errno.EINVAL), "mbind")


def op_move_pages(fam, ch, proc):
    m = fam.pick_map(ch, proc)
    if m is None:
        return op_access(fam, ch, proc)
    start, length = fam.sub_range(ch, proc, m)
    addrs = list(range(start, start + length, HP if m[2] in (HUGE, HUGE_SH) else P))[:8]
    node = ch.int(0, 1)
    try:
        status = proc.p.move_pages(addrs, [node] * len(addrs), C.MPOL_MF_MOVE_ALL)
    except SegmentationFault as e:
        raise ModelError(f"move_pages raised {e!r}") from e
    except OSError as e:
        _errno_in(e, MAY_FAIL, "move_pages")
        return
    for a, s in zip(addrs, status):
        ok = (node, -errno.ENOENT, -errno.EFAULT, -errno.ENOMEM, -errno.EBUSY, -errno.EACCES)
        _expect(s in ok, f"move_pages({a:#x}) status {s}")
        if a not in proc.pages:
            _expect(s == -errno.EFAULT, f"move_pages of unmapped {a:#x}: status {s}")


def op_file(fam, ch, proc):
    """ftruncate or fallocate of the shared files (other families see it)."""
    st = fam.st
    if ch.int(0, 3) == 0:
        f, unit, n = st.huge, HP, HUGE_FILE_PAGES
    else:
        f, unit, n = st.shm, P, SHM_PAGES
    which = ch.int(0, 3)
    f = _wrap(st, f)
    try:
        if which == 0:
            f.ftruncate(ch.int(0, n) * unit)
        elif which == 1:
            f.ftruncate(n * unit)
        else:
            mode = ch.choice((0, C.FALLOC_FL_KEEP_SIZE, C.FALLOC_FL_KEEP_SIZE | C.FALLOC_FL_PUNCH_HOLE))
            i = ch.int(0, n - 1)
            f.fallocate(mode, i * unit, ch.int(1, n - i) * unit)
    except OSError as e:
        _errno_in(e, MAY_FAIL + (errno.ENOSPC,), "ftruncate/fallocate")


def op_reclaim(fam, ch, proc):
    n = ch.int(1, 32)
    r = fam.k.reclaim(n)
    if fam.st.log is not None:
        fam.st.log.append(("k", "reclaim", (n,), {}, True, r))


def op_mremap(fam, ch, proc):
    """mremap(2): shrink, grow (in place or moved), MREMAP_FIXED onto
    another of the process's mappings or MREMAP_DONTUNMAP, over every kind
    of mapping; or bad arguments with their errno.  The model moves each
    page's kind, protection, flags and contents with it, zero-fills the
    grown part, forgets what was unmapped (the shrunk tail, the old range
    of a move, what MREMAP_FIXED replaced) and, after MREMAP_DONTUNMAP,
    keeps the old range mapped and empty.  A range that crosses the end of
    its VMA (EFAULT) is legal input the model cannot predict exactly (it
    does not know where VMAs merged): then nothing may have changed."""
    p = proc.p
    m = fam.pick_map(ch, proc)
    if m is None or ch.int(0, 7) == 0:
        which = ch.int(0, 4)
        start = m[0] if m is not None else 0x10_0000
        args, want = [((start + 1, P, P, C.MREMAP_MAYMOVE), errno.EINVAL),
                      ((start, P, P, 0x80), errno.EINVAL),
                      ((start, P, P, C.MREMAP_FIXED, start + HP), errno.EINVAL),
                      ((start, P, 0, C.MREMAP_MAYMOVE), errno.EINVAL),
                      ((0x10_0000, P, 2 * P, C.MREMAP_MAYMOVE), errno.EFAULT)][which]
        if which == 4 and 0x10_0000 in proc.pages:
            return
        try:
            p.mremap(*args)
        except OSError as e:
            _errno_in(e, (want,), f"mremap with bad arguments {args}")
            return
        raise ModelError(f"mremap with bad arguments {args} succeeded")
    kind, mid = m[2], m[3]
    start, length = fam.sub_range(ch, proc, m)
    huge = kind in (HUGE, HUGE_SH)
    unit = HP if huge else P
    how = ch.choice(("shrink", "grow", "grow", "move", "fixed", "dontunmap"))
    if how == "shrink":
        new_len = ch.int(1, length // unit) * unit
    elif how in ("grow", "move"):
        new_len = (length // unit + ch.int(0 if how == "move" else 1, 2)) * unit
    else:
        new_len = length
    flags = {"shrink": ch.choice((0, C.MREMAP_MAYMOVE)), "grow": ch.choice((0, C.MREMAP_MAYMOVE)),
             "move": C.MREMAP_MAYMOVE, "fixed": C.MREMAP_MAYMOVE | C.MREMAP_FIXED,
             "dontunmap": C.MREMAP_MAYMOVE | C.MREMAP_DONTUNMAP}[how]
    dest = 0
    if how == "fixed":
        other = ch.choice(proc.maps)
        dest = other[0] + (other[1] if ch.int(0, 1) else 0)    # over another mapping, or just past it
        if dest == start:
            dest += length + P
    pages = list(range(start, start + length, P))
    if how == "dontunmap" and _any_locked(proc, pages):
        return          # (mainline and pymm unlock the whole old VMA: more than the model knows)
    overlap = how == "fixed" and dest < start + length and start < dest + new_len
    dest_pages = range(dest, dest + new_len, P) if how == "fixed" else ()
    try:
        new = p.mremap(start, length, new_len, flags, dest)
    except SegmentationFault as e:
        raise ModelError(f"mremap raised {e!r}") from e
    except OSError as e:
        allowed = MAY_FAIL + (errno.EFAULT,)
        if huge and (how in ("grow", "move", "fixed", "dontunmap") and (new_len > length or flags)):
            allowed += (errno.EINVAL,)          # no growth (mainline), no move (pymm)
        if overlap or how == "dontunmap" and kind in (HUGE, HUGE_SH):
            allowed += (errno.EINVAL,)
        if how == "fixed" and any(proc.pages.get(a, [None])[0] in (HUGE, HUGE_SH) for a in dest_pages):
            allowed += (errno.EINVAL,)          # the destination would split a hugetlb mapping
        if how == "fixed" and dest + new_len > C.TASK_SIZE:
            allowed += (errno.EINVAL,)
        _errno_in(e, allowed, f"mremap({start:#x}, {length:#x}, {new_len:#x}, {flags:#x}, {dest:#x})")
        if how == "fixed" and e.errno == errno.ENOMEM:
            # an allocation failed in the move (an injected failure): as in
            # mainline, the destination was unmapped first
            proc.drop(dest, dest + new_len)
        return
    _expect(not overlap, f"mremap to an overlapping range {dest:#x} succeeded")
    # in place, a shrink only unmaps the tail, whatever is there (holes
    # included), and the same size is a no-op; a move or growth needs the
    # old range to be one mapping (the shrink of mremap_to unmaps first)
    need = () if new == start and new_len <= length else pages[:min(length, new_len) // P]
    _expect(all(a in proc.pages for a in need),
            f"mremap({start:#x}, {length:#x}, {new_len:#x}) succeeded over a hole")
    _expect(new % unit == 0 and (how != "fixed" or new == dest), f"mremap returned {new:#x}")
    kept = pages[:new_len // P] if new != start else ()
    moved = [(proc.pages[a], proc.data.get(a), proc.freed.get(a)) for a in kept]
    vma_info = proc.pages.get(pages[-1]) or proc.pages[start]
    if how == "fixed":
        proc.drop(dest, dest + new_len)
    if new == start:                            # resized in place
        proc.drop(start + new_len, start + length)
    else:
        if how == "dontunmap":
            left = new_mapping_id(fam.st)
            proc.maps.append([start, length, kind, left])
            for a in pages:
                old = proc.pages[a]
                proc.pages[a] = [old[0], old[1], set(old[2]), left]
                proc.data.pop(a, None)
                proc.freed.pop(a, None)
        else:
            proc.drop(start, start + length)
        for i, (info, d, fr) in enumerate(moved):
            a = new + i * P
            proc.pages[a] = info
            if d is not None:
                proc.data[a] = d
            if fr is not None:
                proc.freed[a] = fr
    # the grown part of a shared anonymous mapping lies beyond the end of its
    # tmpfs file (SIGBUS, as in Linux): like a file mapping's beyond EOF
    grown = SHM if vma_info[0] == SHANON else vma_info[0]
    for a in range(new + length, new + new_len, P):
        proc.pages[a] = [grown, vma_info[1], set(vma_info[2]), mid]
    if new == m[0]:
        m[1] = max(m[1], new_len)
    elif not (m[0] <= new and new + new_len <= m[0] + m[1]):
        proc.maps.append([new, new_len, kind, mid])
    _check_access(fam, proc, new, True)
    if new != start and how != "dontunmap":
        _check_access(fam, proc, start, False)


def op_query(fam, ch, proc):
    """mincore, msync or get_mempolicy over a range: ENOMEM/EFAULT exactly
    where the model says part of it is unmapped, bad input's errno."""
    m = fam.pick_map(ch, proc)
    if m is None:
        return op_mmap(fam, ch, proc)
    start, length = fam.sub_range(ch, proc, m)
    if ch.int(0, 1):                 # sometimes run past the mapping
        length += P
    pages = range(start, start + length, P)
    holes = any(a not in proc.pages for a in pages)
    which = ch.int(0, 3)
    p = proc.p
    try:
        if which == 0:
            if ch.int(0, 9) == 0:
                try:
                    p.mincore(start + 1, P)
                except OSError as e:
                    _errno_in(e, (errno.EINVAL,), "mincore of an unaligned address")
                    return
                raise ModelError("mincore of an unaligned address succeeded")
            vec = p.mincore(start, length)
            _expect(len(vec) == len(pages) and set(vec) <= {0, 1},
                    f"mincore({start:#x}, {length:#x}) = {vec!r}")
        elif which == 1:
            flags = ch.choice((C.MS_ASYNC, C.MS_SYNC, C.MS_INVALIDATE, C.MS_ASYNC | C.MS_SYNC))
            p.msync(start, length, flags)
            _expect(flags != C.MS_ASYNC | C.MS_SYNC, "msync(MS_ASYNC|MS_SYNC) succeeded")
            _expect(not (flags & C.MS_INVALIDATE and
                         _any_locked(proc, pages, maybe=False)),
                    "msync(MS_INVALIDATE) of locked memory succeeded")
        else:
            flags = C.MPOL_F_ADDR | (C.MPOL_F_NODE if which == 3 else 0)
            mode, nodes = p.get_mempolicy(start, flags)
            if which == 3:
                _expect(mode in (0, 1), f"get_mempolicy(MPOL_F_NODE) = {mode}")
            holes = start not in proc.pages
    except SegmentationFault as e:
        raise ModelError(f"query raised {e!r}") from e
    except OSError as e:
        if which == 1 and e.errno in (errno.EINVAL, errno.EBUSY):
            return
        if which >= 2:
            # EFAULT: no mapping, or (MPOL_F_NODE) the page cannot be faulted in
            _errno_in(e, (errno.EFAULT,), "get_mempolicy")
            _expect(start not in proc.pages or which == 3, f"get_mempolicy({start:#x}): {e}")
            return
        _errno_in(e, (errno.ENOMEM,), ("mincore", "msync")[which])
        _expect(holes, f"{('mincore', 'msync')[which]}({start:#x}, {length:#x}) said ENOMEM "
                       f"but the model has it all mapped")
        return
    _expect(not holes, f"{('mincore', 'msync', 'get_mempolicy', 'get_mempolicy')[which]}"
                       f"({start:#x}, {length:#x}) succeeded over a hole")


OPS = (op_access, op_access, op_access, op_access, op_mmap, op_mmap, op_munmap, op_mprotect,
       op_madvise, op_madvise, op_mlock, op_fork, op_exit, op_mbind, op_move_pages, op_file,
       op_reclaim, op_mremap, op_query)


def new_state(seed, fail=True):
    """The machine and the files: 2 nodes, small pools (so reclaim, swap and
    real allocation failures happen), a tmpfs and a hugetlbfs file."""
    k = Kernel(nodes=2, pages_per_node=192, hugepages_per_node=2, seed=seed)
    st = SimpleNamespace(kernel=k, families=[], mapping_ids=itertools.count(1), log=None)
    st.shm = k.create_file("fuzz-shm", SHM_PAGES * P)
    st.huge = k.create_file("fuzz-huge", HUGE_FILE_PAGES * HP, hugetlb=True)
    st.baseline = k.meminfo()
    return st


def arm(st):
    for site, kw in FAIL.items():
        st.kernel.fail(site, **kw)


def quiesce(st):
    """Teardown: no more injected failures; every process exits; the files
    are emptied.  Then meminfo must equal the baseline taken after setup."""
    k = st.kernel
    for site in FAIL:
        k.fail(site, probability=0)
    for fam in st.families:
        for proc in fam.procs:
            proc.p.exit()
        fam.procs = []
    for f, unit in ((st.shm, P), (st.huge, HP)):
        size = f.size
        f.ftruncate(0)
        f.ftruncate(size)
    # Linux frees the swap cache lazily: when the last PTE holding a swap
    # entry goes (free_swap_and_cache -> __try_to_reclaim_swap), the folio in
    # the swap cache is freed only if its lock can be *tried*; if a swap-in,
    # reclaim, migration or mlock holds it at that moment, the folio and its
    # slot stay, only the swap cache holding them, until reclaim or the swap
    # allocator (swap_reclaim_full_clusters) takes them.  So a process that
    # exits in such a race leaves SwapCached behind in Linux too (the
    # campaign's 4 kB + 1 slot finding).  The check reclaims those first, as
    # the kernel would later: pymm's freeing is the kernel's, not changed.
    k.run_syscall(swap_reclaim_cache, k.swap_info)


def check_quiescent(st):
    now = st.kernel.meminfo()
    diff = {key: (st.baseline[key], now[key]) for key in st.baseline if st.baseline[key] != now[key]}
    if diff:
        unit = {key: "" if key.startswith("HugePages_") else " kB" for key in diff}
        raise ModelError("meminfo not back to its baseline after every process exited: " +
                         ", ".join(f"{key} {a}{unit[key]} -> {b}{unit[key]}"
                                   for key, (a, b) in diff.items()))


def _role(i):
    def role(self, st, rng):
        st.families[i].step(RngChooser(rng))
    role.__name__ = f"family{i}"
    return role


@register
class FuzzScenario(Scenario):
    name = "fuzz"
    in_mix = False       # not a historical episode: mix runs the episodes
    variant_key = None
    caught_kinds = frozenset()
    controlled_steps = 5
    families = 3
    roles = tuple((f"family{i}", _role(i)) for i in range(families))

    @classmethod
    def variants(cls):
        return ["default"]

    @classmethod
    def expected(cls, variant):
        return "clean"

    def setup(self, variant, seed):
        st = new_state(seed)
        st.log = collections.deque(maxlen=CALL_RING)
        st.kernel.report_context = lambda: last_calls(st)
        st.families = [Family(st, f"fuzz{i}") for i in range(self.families)]
        st.baseline = st.kernel.meminfo()
        arm(st)
        return st

    def teardown(self, st):
        quiesce(st)

    def check(self, st):
        check_quiescent(st)


def run_program(seed, steps, families=1, program=None, fail=True, log=None, record=None):
    """One sequential program (no concurrency): ``families`` families take
    turns for ``steps`` steps drawing from a seeded RngChooser -- or replay
    ``program``, a list of (family, draws) steps -- then quiesce and check.
    ``record``: a list that receives the program as it runs; ``log``: a list
    that receives one entry per system call (``format_call`` prints one).
    Raises ModelError (or whatever escaped) on a finding; returns the state.
    The shrinker drives this."""
    import random
    st = new_state(seed)
    st.log = log
    st.families = [Family(st, f"fuzz{i}") for i in range(families)]
    st.baseline = st.kernel.meminfo()
    if fail:
        arm(st)
    rng = random.Random(seed)
    todo = program if program is not None else [(i % families, None) for i in range(steps)]
    for fi, draws in todo:
        tape = []
        ch = TapeChooser(draws) if draws is not None else RngChooser(rng, tape)
        if record is not None:
            record.append((fi, tape if draws is None else list(draws)))
        st.families[fi % len(st.families)].step(ch)
    quiesce(st)
    k = st.kernel
    k.check()
    found = k.findings()
    if found:
        raise ModelError(f"{len(found)} finding(s): " + "; ".join(f.title for f in found) +
                         "\n\n" + found[0].text)
    check_quiescent(st)
    return st


def _signature(e):
    """What must stay the same while shrinking: the exception type and the
    first line of its message with addresses and numbers blanked."""
    import re
    first = str(e).splitlines()[0] if str(e) else ""
    return type(e).__name__, re.sub(r"0x[0-9a-f]+|\d+", "N", first)


def shrink(seed, steps, families=1, fail=True, max_runs=2000):
    """Run the program of ``seed`` and, if it fails, shrink it the way
    Hypothesis does (delete steps, then lower each draw towards 0) while the
    failure keeps its signature.  Returns None if it passes, else
    (program, listing, error): the minimal program ((family, draws) steps),
    its system calls one per line, and the error it ends with."""
    rec = []
    try:
        lockdep.reset()
        run_program(seed, steps, families, fail=fail, record=rec)
        return None
    except Exception as e:      # noqa: BLE001 -- any escape is a finding to shrink
        sig = _signature(e)
    prog = rec
    runs = [0]

    def fails(p):
        if runs[0] >= max_runs:
            return False
        runs[0] += 1
        lockdep.reset()
        try:
            run_program(seed, 0, families, program=p, fail=fail)
        except Exception as e:   # noqa: BLE001
            return _signature(e) == sig
        return False

    changed = True
    while changed:
        changed = False
        n = len(prog)
        chunk = max(1, n // 2)
        while chunk >= 1:                       # delete runs of steps, big ones first
            i = len(prog) - chunk
            while i >= 0:
                cand = prog[:i] + prog[i + chunk:]
                if fails(cand):
                    prog, changed = cand, True
                i -= chunk
            chunk //= 2
        for si in range(len(prog)):             # lower draws
            fi, draws = prog[si]
            for di in range(len(draws)):
                for v in (0, draws[di] // 2):
                    if v < draws[di]:
                        cand = list(prog)
                        nd = list(draws)
                        nd[di] = v
                        cand[si] = (fi, nd)
                        if fails(cand):
                            prog, draws, changed = cand, nd, True
                            break
    log = []
    lockdep.reset()
    err = None
    try:
        run_program(seed, 0, families, program=prog, fail=fail, log=log)
    except Exception as e:      # noqa: BLE001
        err = e
    return prog, [format_call(c) for c in log], err
