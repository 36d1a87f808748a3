"""NUMA memory policies (mm/mempolicy.c): set_mempolicy, mbind, migrate_pages(2),
and move_pages(2) (whose body lives in mm/migrate.c in Linux).

Policies
--------
A ``Mempolicy`` is refcounted: ``get()``/``put()``; the last put frees (KASAN
poisons) it.  Each VMA owns its ``vm_policy`` (mbind gives every VMA its own
copy, mpol_dup; split and fork share it with a reference, vm_area_dup; freeing
the VMA puts it).  A process's own policy (``task.mempolicy``; None means the
system default, local allocation) is replaced under ``task.alloc_lock``.

Allocation (``alloc_pages_mpol``) asks the policy for a preferred node and a
nodemask (``policy_nodemask``): BIND restricts to its nodes, PREFERRED prefers
its node, INTERLEAVE picks the ``ilx``-th of its nodes, where the interleave
index ilx comes from the VMA: vm_pgoff plus the page's offset in the VMA
(``get_vma_policy``); LOCAL/default prefer the task's node.

mbind and mmap_lock across migration (SCENARIOS.md B)
-----------------------------------------------------
The problem: do_mbind queues misplaced pages and rewrites the VMAs' policies
under mmap_write_lock, then migrates the queued pages.  Migration is slow
(lock, unmap, copy, remap per folio).  Until 6.6 the allocation callback,
``new_folio``, walked the VMA tree to find each page's VMA and policy, so
mmap_lock had to stay held -- write-held -- across the whole migration, and
every fault of the process stalled behind it.  do_migrate_pages likewise held
mmap_read_lock across every migrate_to_node.

What does not work: dropping mmap_lock early but keeping ``new_folio`` (the
"early-unlock-vma-callback" teaching variant): the callback then walks a VMA
tree that munmap is freeing -- a use-after-free of the VMA (or of its
policy), and a VMA-tree walk with neither mmap_lock nor RCU.

The solution (6.7, commit 72e315f7a750, on top of alloc_pages_mpol from
ddc1a5cbc05d): pin the new policy by its refcount, compute the interleave
base index under the write lock, unlock, and migrate with
``alloc_migration_target_by_mpol``, which needs only (policy, ilx) and the
folio's index -- no VMA, no mm.  A real slip on the way (mm-unstable, Oct
2023) put the ilx VMA walk after mmap_write_unlock ("unlock-before-ilx"):
"WARNING: suspicious RCU usage" from the maple tree.

``kernel.variant("mbind")`` is read exactly where these designs differ, in
do_mbind, do_migrate_pages and migrate_to_node:

=========================  ==============================  ==========================
variant                    mmap_lock during migration      allocation callback
=========================  ==============================  ==========================
hold-mmap-lock             held (W in mbind, R in          new_folio (walks VMAs)
                           migrate_pages(2))
early-unlock-vma-callback  dropped                         new_folio -- the bug
unlock-before-ilx          dropped *before* the ilx walk   by_mpol -- ilx walk unlocked
mpol-alloc (default)       dropped after the ilx walk      alloc_migration_target_by_mpol
=========================  ==============================  ==========================

Queued folios are safe without mmap_lock: isolation holds a reference.

shmem (tmpfs) files keep a shared policy per range of page indices
(``SharedPolicy``): mbind on any mapping of the file sets it (shmem_set_policy)
and every fault on the file's pages, from any process, follows it
(shmem_get_policy), else the task policy.  hugetlb faults follow the VMA's (or
the task's) policy through huge_node.

Not modelled: cpusets (every node is allowed), MPOL_F_NUMA_BALANCING's
effect, per-VMA locks.
"""
import errno
import functools

from .. import constants as C
from ..constants import (MPOL_BIND, MPOL_DEFAULT, MPOL_F_NUMA_BALANCING, MPOL_F_RELATIVE_NODES,
                         MPOL_F_STATIC_NODES, MPOL_INTERLEAVE, MPOL_LOCAL, MPOL_MAX,
                         MPOL_MF_MOVE, MPOL_MF_MOVE_ALL, MPOL_MF_STRICT, MPOL_MF_VALID,
                         MPOL_MODE_FLAGS, MPOL_PREFERRED, MPOL_PREFERRED_MANY,
                         MPOL_WEIGHTED_INTERLEAVE)
from ..context import current
from ..debug.kasan import KasanObject, kasan_poison
from ..locking import SpinLock
from ..debug.report import report
from ..sched import point
from . import hugetlb
from . import internal
from .atomic import atomic_add_return
from .hugetlb import folio_isolate_hugetlb, hugetlb_folio_at
from .migrate import (MIGRATE_SYNC, MR_MEMPOLICY_MBIND, MR_SYSCALL, MigrationTargetControl,
                      alloc_migration_target, folio_isolate_lru, migrate_pages,
                      putback_movable_pages)
from .mm_types import PG_hugetlb, PG_reserved, VM_HUGETLB, VM_IO, VM_PFNMAP, Folio
from .mmap import mpol_equal        # identity, None, then Mempolicy.__eq__
from .mmap import vma_split_range, vma_try_merge
from .mmap_lock import (mmap_assert_locked, mmap_assert_write_locked, mmap_read_lock,
                        mmap_read_unlock, mmap_write_lock, mmap_write_unlock, vma_start_write)
from .gfp import (__GFP_DIRECT_RECLAIM, __GFP_NOWARN, __GFP_RETRY_MAYFAIL, GFP_HIGHUSER_MOVABLE, GFP_KERNEL,
                  might_alloc)
from .page_alloc import __alloc_pages as _alloc_pages_nodemask
from .page_alloc import folio_get, folio_put
from .pgtable import PMD_SIZE, PUD_SHIFT, PUD_SIZE, pte_index, pte_offset
from .rmap import folio_anon_vma
from .swapops import is_migration_entry
from .gup import faultin_page_range
from .mmap import vma_splits_ok, vmas_may_split

PAGE_SIZE = C.PAGE_SIZE
MAX_NUMNODES = 1 << 10                 # CONFIG_NODES_SHIFT=10: node ids a nodemask can hold
NO_INTERLEAVE_INDEX = -1               # (-1UL): "no index, use the task's il_prev"
INTERLEAVE_MODES = (MPOL_INTERLEAVE, MPOL_WEIGHTED_INTERLEAVE)

# internal flags (MPOL_MF_INTERNAL << n)
MPOL_MF_INTERNAL = 1 << 4
MPOL_MF_DISCONTIG_OK = MPOL_MF_INTERNAL << 0     # holes in the range are fine
MPOL_MF_INVERT = MPOL_MF_INTERNAL << 1           # queue folios *not* on the nodemask
MPOL_MF_WRLOCK = MPOL_MF_INTERNAL << 2           # the walk holds mmap_lock for write

MODE_NAMES = {MPOL_DEFAULT: "default", MPOL_PREFERRED: "preferred", MPOL_BIND: "bind",
              MPOL_INTERLEAVE: "interleave", MPOL_LOCAL: "local",
              MPOL_PREFERRED_MANY: "prefer (many)", MPOL_WEIGHTED_INTERLEAVE: "weighted interleave"}


# -- the policy object ----------------------------------------------------------------

class Mempolicy(KasanObject):
    """``struct mempolicy``.  Immutable once published (pymm has no cpuset
    rebinding), so readers need only keep it alive: a VMA's policy is
    protected by mmap_lock, anything else holds a reference."""

    KASAN_CACHE = "numa_policy"
    __slots__ = ("refcnt", "mode", "flags", "nodes", "user_nodemask", "static")

    def __init__(self, mode, flags=0, nodes=frozenset(), user_nodemask=frozenset(), static=False):
        self.kasan_alloc(3)
        self.refcnt = 1                 # atomic
        self.mode = mode
        self.flags = flags
        self.nodes = frozenset(nodes)
        self.user_nodemask = frozenset(user_nodemask)
        self.static = static            # default_policy: never freed

    def get(self):
        """mpol_get."""
        if not self.static:
            atomic_add_return(self, "refcnt", 1)
        return self

    def put(self):
        """mpol_put: the last reference frees the policy."""
        if self.static:
            return
        n = atomic_add_return(self, "refcnt", -1)
        if n == 0:
            kasan_poison(self, skip=3)
        elif n < 0:
            report("assertion", "BUG: mempolicy refcount underflow",
                   f"mpol_put of a policy with no references left: {self!r}")

    def __eq__(self, other):
        """__mpol_equal (mpol_equal in mmap.py adds the identity and None cases)."""
        if not isinstance(other, Mempolicy):
            return NotImplemented
        if self.mode != other.mode or self.flags != other.flags:
            return False
        if self.flags & (MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES) and \
                self.user_nodemask != other.user_nodemask:
            return False
        return self.mode == MPOL_LOCAL or self.nodes == other.nodes

    __hash__ = None

    def __repr__(self):
        return (f"<mempolicy {MODE_NAMES.get(self.mode, self.mode)}"
                f"{'=' + ','.join(map(str, sorted(self.nodes))) if self.nodes else ''} "
                f"ref {self.refcnt}>")


# The system default: local allocation.  Static, like the kernel's.
default_policy = Mempolicy(MPOL_LOCAL, static=True)


def mpol_get(pol):
    if pol is not None:
        pol.get()


def mpol_put(pol):
    if pol is not None:
        pol.put()


def mpol_dup(pol):
    """A private copy with its own refcount (None stays None)."""
    if pol is None:
        return None
    might_alloc(GFP_KERNEL)                    # kmem_cache_alloc(policy_cache, GFP_KERNEL)
    return Mempolicy(pol.mode, pol.flags, pol.nodes, pol.user_nodemask)


def mpol_new(mode, flags, nodes):
    """A new policy for ``mode`` (None for MPOL_DEFAULT), or -EINVAL.  Nodes
    are set by mpol_set_nodemask."""
    if mode == MPOL_DEFAULT:
        return -errno.EINVAL if nodes else None
    if mode == MPOL_PREFERRED:
        if not nodes:
            if flags & (MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES):
                return -errno.EINVAL
            mode = MPOL_LOCAL           # preferred with no node: local allocation
    elif mode == MPOL_LOCAL:
        if nodes or flags & (MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES):
            return -errno.EINVAL
    elif not nodes:
        return -errno.EINVAL
    might_alloc(GFP_KERNEL)                    # kmem_cache_alloc(policy_cache, GFP_KERNEL)
    return Mempolicy(mode, flags)


def mpol_set_nodemask(kernel, pol, nodes):
    """Give a new policy its nodes: the user's nodes restricted to the nodes
    that have memory (or, with MPOL_F_RELATIVE_NODES, folded onto them).
    Returns 0 or -EINVAL (no usable node).  Context: the policy is not yet
    published (the kernel holds mmap_write_lock or task_lock for cpusets)."""
    if pol is None or pol.mode == MPOL_LOCAL:
        return 0
    online = list(range(len(kernel.nodes)))      # every node has memory and is allowed
    if pol.flags & MPOL_F_RELATIVE_NODES:
        mask = {online[n % len(online)] for n in nodes}      # mpol_relative_nodemask
    else:
        mask = set(nodes) & set(online)
    if pol.flags & (MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES):
        pol.user_nodemask = frozenset(nodes)
    if not mask:
        return -errno.EINVAL
    if pol.mode == MPOL_PREFERRED:
        mask = {min(mask)}                                   # first_node
    pol.nodes = frozenset(mask)
    return 0


# -- which policy applies ------------------------------------------------------------------

def task_lock(task):
    task.alloc_lock.lock()


def task_unlock(task):
    task.alloc_lock.unlock()


def get_task_policy(task):
    """The policy of ``task`` with a reference for the caller (mpol_put it),
    or the static default.  pymm's processes are shared by the threads that
    call their system calls, so the policy may be replaced under us: unlike
    Linux (per-thread policies) the read pins it under task_lock."""
    if task is None or task.mempolicy is None:
        return default_policy
    task_lock(task)
    pol = task.mempolicy
    if pol is not None:
        pol.get()
    task_unlock(task)
    return pol if pol is not None else default_policy


def numa_node_id(kernel):
    """The node of the CPU the current task runs on."""
    return kernel.local_node()


class SharedPolicy:
    """``struct shared_policy`` of a tmpfs inode: policies by range of page
    indices, each range holding a reference to its policy.  ``lock`` is
    sp->lock (the kernel's is an rwlock; readers here are short)."""

    __slots__ = ("ranges", "lock")

    def __init__(self):
        self.ranges = []            # sorted, disjoint [start, end, pol]; lock
        self.lock = SpinLock("&sp->lock")

    def lookup(self, idx):
        """mpol_shared_policy_lookup: the policy at ``idx`` with a reference
        for the caller, or None."""
        if not self.ranges:          # (the kernel also peeks at the empty tree unlocked)
            return None
        self.lock.lock()
        pol = next((p for s, e, p in self.ranges if s <= idx < e), None)
        if pol is not None:
            pol.get()
        self.lock.unlock()
        return pol

    def set_range(self, start, end, pol):
        """mpol_set_shared_policy: [start, end) gets its own copy of ``pol``
        (None: the range goes back to the task policy)."""
        new = mpol_dup(pol)
        drop = []
        self.lock.lock()
        out = []
        for s, e, p in self.ranges:
            if e <= start or s >= end:
                out.append([s, e, p])
                continue
            if s < start:
                out.append([s, start, p.get()])
            if e > end:
                out.append([end, e, p.get()])
            drop.append(p)
        if new is not None:
            out.append([start, end, new])
        out.sort(key=lambda r: r[0])
        self.ranges = out
        self.lock.unlock()
        for p in drop:
            p.put()

    def free(self):
        """mpol_free_shared_policy: the inode is evicted."""
        self.lock.lock()
        ranges, self.ranges = self.ranges, []
        self.lock.unlock()
        for s, e, p in ranges:
            p.put()


def shmem_shared_policy(vma):
    """The shared policy behind a tmpfs VMA (vm_ops->get_policy/set_policy
    exist), or None: anonymous, hugetlbfs."""
    f = vma.vm_file if vma is not None else None
    return getattr(f, "shared_policy", None) if f is not None and not f.hugetlb else None


def get_vma_policy(vma, addr, order=0):
    """The effective policy at ``addr`` of ``vma`` (or of the task if ``vma``
    is None or has none) and the interleave index.  Returns (pol, ilx, ref):
    ``ref`` says a reference was taken for the caller (the task policy, a
    shared policy), to be dropped with mpol_put.  A tmpfs VMA's policy is
    its file's shared policy at that index (vm_ops->get_policy), never
    vm_policy.  Context: mmap_lock held (vm_policy and the VMA's range are
    protected by it)."""
    sp = shmem_shared_policy(vma)
    if sp is not None:
        idx = vma.linear_page_index(addr)
        pol = sp.lookup(idx)
        ilx = vma.vm_file.inode.i_ino + (idx >> order)      # shmem_get_pgoff_policy
        if pol is None:
            pol = get_task_policy(current())
        return pol, ilx, pol is not default_policy
    pol = vma.vm_policy if vma is not None else None
    ref = False
    if pol is None:
        pol = get_task_policy(current())
        ref = pol is not default_policy
    ilx = NO_INTERLEAVE_INDEX if vma is None else 0
    if pol.mode in INTERLEAVE_MODES and vma is not None:
        ilx += vma.vm_pgoff >> order
        ilx += (addr - vma.vm_start) >> (C.PAGE_SHIFT + order)
    return pol, ilx, ref


def vma_migratable(vma):
    return not vma.vm_flags & (VM_IO | VM_PFNMAP)


# -- allocation by policy -----------------------------------------------------------------

def interleave_nid(pol, ilx):
    """The ilx-th node of the policy (static interleave)."""
    nodes = sorted(pol.nodes)
    if not nodes:
        return None
    return nodes[ilx % len(nodes)]


def interleave_nodes(pol):
    """Dynamic interleave (no index): the node after the task's il_prev."""
    t = current()
    nodes = sorted(pol.nodes)
    prev = t.il_prev if t is not None else -1
    nid = next((n for n in nodes if n > prev), nodes[0])     # next_node_in
    if t is not None:
        t.il_prev = nid
    return nid


def policy_nodemask(pol, ilx, nid):
    """(nodemask or None, preferred nid) for allocating under ``pol``."""
    mode = pol.mode
    if mode == MPOL_PREFERRED:
        return None, min(pol.nodes)
    if mode in (MPOL_BIND, MPOL_PREFERRED_MANY):
        return pol.nodes, nid
    if mode in INTERLEAVE_MODES:      # weighted interleave: every node weighs 1 in pymm
        n = interleave_nodes(pol) if ilx == NO_INTERLEAVE_INDEX else interleave_nid(pol, ilx)
        return None, n
    return None, nid                  # MPOL_LOCAL


def alloc_pages_mpol(kernel, order, pol, ilx, nid, gfp=GFP_HIGHUSER_MOVABLE):
    """Allocate 2**order pages as ``pol`` says.  Touches no VMA and no mm:
    callable without mmap_lock as long as ``pol`` is pinned."""
    nodemask, nid = policy_nodemask(pol, ilx, nid)
    if pol.mode == MPOL_PREFERRED_MANY:
        # two passes: the preferred nodes first (without reclaim), then anywhere
        return (_alloc_pages_nodemask(kernel, order, nid, nodemask,
                                      (gfp | __GFP_NOWARN) & ~__GFP_DIRECT_RECLAIM)
                or _alloc_pages_nodemask(kernel, order, nid, None, gfp))
    return _alloc_pages_nodemask(kernel, order, nid, nodemask, gfp)


folio_alloc_mpol = alloc_pages_mpol


def vma_alloc_folio(kernel, vma, addr, order=0, gfp=GFP_HIGHUSER_MOVABLE):
    """Allocate the folio for a fault at ``addr`` in ``vma`` (None: the task
    policy alone).  ``gfp``: every caller in pymm (anonymous fault, COW,
    swap-in) passes GFP_HIGHUSER_MOVABLE in the kernel.  Context: mmap_lock
    held -- vma and vma->vm_policy are read without a reference."""
    if vma is not None and vma.vm_policy is None and shmem_shared_policy(vma) is None:
        t = current()
        if t is None or t.mempolicy is None:      # the default policy: local node
            return _alloc_pages_nodemask(kernel, order, numa_node_id(kernel), None, gfp)
    pol, ilx, ref = get_vma_policy(vma, addr, order)
    point("vma_alloc_folio")
    folio = alloc_pages_mpol(kernel, order, pol, ilx, numa_node_id(kernel), gfp)
    if ref:
        pol.put()
    return folio


def alloc_file_folio(kernel, file, index, order=0):
    """A page-cache folio for ``file``: its shared policy at ``index`` if
    one is set (shmem_get_pgoff_policy), else the task policy; interleaved
    by inode number and index.  GFP: mapping_gfp_mask() of a tmpfs mapping,
    GFP_HIGHUSER_MOVABLE."""
    sp = getattr(file, "shared_policy", None)
    pol = sp.lookup(index) if sp is not None else None
    if pol is not None:
        folio = alloc_pages_mpol(kernel, order, pol, file.inode.i_ino + (index >> order),
                                 numa_node_id(kernel), GFP_HIGHUSER_MOVABLE)
        pol.put()
        return folio
    t = current()
    if t is None or t.mempolicy is None:
        return _alloc_pages_nodemask(kernel, order, numa_node_id(kernel), None, GFP_HIGHUSER_MOVABLE)
    pol = get_task_policy(t)
    ilx = file.inode.i_ino + (index >> order)
    folio = alloc_pages_mpol(kernel, order, pol, ilx, numa_node_id(kernel))
    pol.put()                           # (a no-op for the static default)
    return folio


# -- lru_cache_disable (mm/swap.c) ---------------------------------------------------------------

def lru_cache_disable(kernel):
    """Make new folios go straight to the LRU so they can be isolated.  pymm
    never batches LRU additions, so this is only the kernel's counter
    (``kernel.lru_disable_count``), which must be back to 0 when quiescent."""
    atomic_add_return(kernel, "lru_disable_count", 1)


def lru_cache_enable(kernel):
    if atomic_add_return(kernel, "lru_disable_count", -1) < 0:
        report("assertion", "WARNING: lru_cache_enable without lru_cache_disable",
               "lru_disable_count went negative", kernel=kernel)


# -- queue_pages_range -------------------------------------------------------------------------

class QueuePages:
    """``struct queue_pages``."""

    __slots__ = ("kernel", "pagelist", "flags", "nmask", "start", "end", "first", "nr_failed")

    def __init__(self, kernel, pagelist, flags, nmask, start, end):
        self.kernel = kernel
        self.pagelist = pagelist
        self.flags = flags
        self.nmask = nmask
        self.start = start
        self.end = end
        self.first = None
        self.nr_failed = 0


def strictly_unmovable(flags):
    """STRICT without MOVE: fail with -EIO at the first misplaced folio."""
    return flags & (MPOL_MF_STRICT | MPOL_MF_MOVE | MPOL_MF_MOVE_ALL) == MPOL_MF_STRICT


def queue_folio_required(folio, qp):
    return (folio.node in qp.nmask) == (not qp.flags & MPOL_MF_INVERT)


def folio_maybe_mapped_shared(folio):
    return folio._mapcount > 1


def folio_isolate(kernel, folio, pagelist):
    """Isolate ``folio`` for migration onto ``pagelist`` (off the LRU, or out
    of the hugetlb active list); False if someone else has it isolated."""
    if folio.flags & PG_hugetlb:
        return folio_isolate_hugetlb(kernel, folio, pagelist)
    if not folio_isolate_lru(kernel, folio):
        return False
    pagelist.append(folio)
    return True


def migrate_folio_add(kernel, folio, pagelist, flags):
    """Isolate and queue ``folio``; a shared folio is left alone unless
    MPOL_MF_MOVE_ALL (not a failure).  False if it could not be isolated."""
    if flags & MPOL_MF_MOVE_ALL or not folio_maybe_mapped_shared(folio):
        return folio_isolate(kernel, folio, pagelist)
    return True


def _pte_tables(mm, start, end):
    """(table, lo, hi) for every PTE table covering part of [start, end)."""
    addr = start
    while addr < end:
        if mm.pgd.get(addr >> PUD_SHIFT) is None:        # nothing mapped in this PUD
            addr = (addr & ~(PUD_SIZE - 1)) + PUD_SIZE
            continue
        nxt = min((addr & ~(PMD_SIZE - 1)) + PMD_SIZE, end)
        pt = pte_offset(mm, addr)
        if pt is not None:
            yield pt, addr, nxt
        addr = nxt


def queue_folios_pte_range(vma, pt, addr, end, qp):
    """Check the PTEs of one table under its ptl; queue misplaced folios
    (isolated, no folio lock).  Returns 0 or -EIO (STRICT without MOVE)."""
    flags = qp.flags
    movable = flags & (MPOL_MF_MOVE | MPOL_MF_MOVE_ALL) and vma_migratable(vma)
    pt.ptl.lock()
    for i in range(pte_index(addr), pte_index(end - 1) + 1):
        e = pt.ptes[i]
        if e is None:
            continue
        if not isinstance(e, Folio):
            if is_migration_entry(e):        # someone else is moving it right now
                qp.nr_failed += 1
            continue
        if e.flags & PG_reserved:            # the zero page
            continue
        if not queue_folio_required(e, qp):
            continue
        if not movable or not migrate_folio_add(qp.kernel, e, qp.pagelist, flags):
            qp.nr_failed += 1
            if strictly_unmovable(flags):
                break
    pt.ptl.unlock()
    if qp.nr_failed and strictly_unmovable(flags):
        return -errno.EIO
    return 0


def queue_folios_hugetlb(vma, start, end, qp):
    """queue_folios_pte_range for the huge pages of a hugetlb VMA (looked up
    under its vma_lock and ptl).  A shared huge page stays unless
    MPOL_MF_MOVE_ALL; that is not a failure.  Returns 0 or -EIO."""
    flags = qp.flags
    addr = start & C.HPAGE_MASK
    while addr < end:
        folio = hugetlb_folio_at(vma.vm_mm, addr)
        if folio is not None:
            if queue_folio_required(folio, qp):
                if not flags & (MPOL_MF_MOVE | MPOL_MF_MOVE_ALL) or not vma_migratable(vma):
                    qp.nr_failed += 1
                elif not migrate_folio_add(qp.kernel, folio, qp.pagelist, flags):
                    qp.nr_failed += 1
            folio_put(folio, qp.kernel)
            if qp.nr_failed and strictly_unmovable(flags):
                return -errno.EIO
        addr += C.HPAGE_SIZE
    return 0


def queue_pages_range(mm, start, end, nmask, flags, pagelist):
    """Walk [start, end) and queue (isolate onto ``pagelist``) the folios that
    need migration: those not on ``nmask`` with MPOL_MF_INVERT (mbind), those
    on it without (migrate_pages).  Returns the number of misplaced folios that
    could not be queued, -EIO (STRICT without MOVE, a misplaced folio found),
    or -EFAULT (a hole, unless MPOL_MF_DISCONTIG_OK; or no VMA at all).
    Folios queued before an error stay on ``pagelist`` for the caller to put
    back.  Context: mmap_lock held (write with MPOL_MF_WRLOCK); takes each
    page table's ptl, and the LRU lock under it."""
    mmap_assert_locked(mm)
    if flags & MPOL_MF_WRLOCK:
        mmap_assert_write_locked(mm)
    qp = QueuePages(mm.kernel, pagelist, flags, frozenset(nmask), start, end)
    vmas = mm.mm_mt.range(start, end)
    for i, vma in enumerate(vmas):
        # queue_pages_test_walk
        if qp.first is None:
            qp.first = vma
            if not flags & MPOL_MF_DISCONTIG_OK and start < vma.vm_start:
                return -errno.EFAULT                      # hole at the head
        nxt = vmas[i + 1] if i + 1 < len(vmas) else None
        if not flags & MPOL_MF_DISCONTIG_OK and vma.vm_end < end and \
                (nxt is None or vma.vm_end < nxt.vm_start):
            return -errno.EFAULT                          # hole in the middle or at the tail
        if not vma_migratable(vma) and not flags & MPOL_MF_STRICT:
            continue
        if not flags & (MPOL_MF_STRICT | MPOL_MF_MOVE | MPOL_MF_MOVE_ALL):
            continue
        lo, hi = max(start, vma.vm_start), min(end, vma.vm_end)
        if vma.vm_flags & VM_HUGETLB:
            err = queue_folios_hugetlb(vma, lo, hi, qp)
            if err:
                return err
            continue
        for pt, lo, hi in _pte_tables(mm, lo, hi):
            err = queue_folios_pte_range(vma, pt, lo, hi, qp)
            if err:
                return err
    if qp.first is None:
        return -errno.EFAULT                              # the whole range is a hole
    return qp.nr_failed


# -- mbind ------------------------------------------------------------------------------------

def vma_replace_policy(vma, pol):
    """Give ``vma`` its own copy of ``pol``.  Context: mmap_lock held for write."""
    mmap_assert_write_locked(vma.vm_mm)
    vma_start_write(vma)        # "mm/mempolicy: Take VMA lock before replacing policy" (6.5)
    sp = shmem_shared_policy(vma)
    if sp is not None:               # vm_ops->set_policy: shmem_set_policy
        sp.set_range(vma.vm_pgoff, vma.vm_pgoff + vma.vma_pages(), pol)
    new = mpol_dup(pol)
    old = vma.vm_policy
    vma.vm_policy = new
    mpol_put(old)
    return 0


def mbind_range(vma, start, end, new_pol):
    """Split ``vma`` to [start, end) & its range, set the policy, merge with
    neighbours.  Returns the VMA now covering that part (it may reach past
    ``end`` after a merge).  Context: mmap_lock held for write."""
    mmap_assert_write_locked(vma.vm_mm)
    if mpol_equal(vma.vm_policy, new_pol):
        return vma
    vma = vma_split_range(vma, max(start, vma.vm_start), min(end, vma.vm_end))
    vma_replace_policy(vma, new_pol)
    return vma_try_merge(vma)


class MigrationMpol:
    """``struct migration_mpol``: what alloc_migration_target_by_mpol needs --
    a pinned policy and the interleave base index.  No VMA, no mm."""

    __slots__ = ("kernel", "pol", "ilx")

    def __init__(self, kernel, pol, ilx=0):
        self.kernel = kernel
        self.pol = pol
        self.ilx = ilx


def alloc_migration_target_by_mpol(src, mmpol):
    """Allocate the destination of ``src`` by the mbind policy (6.7+).
    Context: no lock needed -- the policy is pinned, the index is the folio's."""
    kernel, pol = mmpol.kernel, mmpol.pol
    order = src.order
    ilx = mmpol.ilx + (src.index >> order)
    nid = numa_node_id(kernel)
    if src.flags & PG_hugetlb:
        nodemask, nid = policy_nodemask(pol, ilx, nid)
        return hugetlb.alloc_hugetlb_folio_nodemask(kernel, nid, nodemask)
    return folio_alloc_mpol(kernel, order, pol, ilx, nid,
                            GFP_HIGHUSER_MOVABLE | __GFP_RETRY_MAYFAIL | __GFP_NOWARN)


def page_address_in_vma(folio, vma):
    """The user address of ``folio`` in ``vma``, or -EFAULT if the folio
    cannot be mapped there (another anon_vma, another file, out of range)."""
    if folio.folio_test_anon():
        anon_vma = folio_anon_vma(folio)
        if vma.anon_vma is None or anon_vma is None or vma.anon_vma.root is not anon_vma.root:
            return -errno.EFAULT
    elif vma.vm_file is None or vma.vm_file.mapping is not folio.mapping:
        return -errno.EFAULT
    addr = vma.vm_start + ((folio.index - vma.vm_pgoff) << C.PAGE_SHIFT)
    if addr < vma.vm_start or addr >= vma.vm_end:
        return -errno.EFAULT
    return addr


def new_folio(src, start):
    """The pre-6.7 mbind allocation callback: find the VMA mapping ``src`` by
    walking current->mm's VMAs from ``start``, then allocate by that VMA's
    policy.  Context: needs mmap_lock -- it walks the VMA tree and reads the
    VMA and its policy (this is why mbind held mmap_write_lock across
    migration until 6.6)."""
    mm = current().mm
    kernel = mm.kernel
    vma, address = None, -errno.EFAULT
    for v in mm.mm_mt.range(start, C.TASK_SIZE):       # for_each_vma(vmi, vma) from start
        point("new_folio")
        address = page_address_in_vma(src, v)
        if address != -errno.EFAULT:
            vma = v
            break
    if src.flags & PG_hugetlb:                          # alloc_hugetlb_folio_vma
        pol, ilx, ref = get_vma_policy(vma, address, src.order)
        nodemask, nid = policy_nodemask(pol, ilx, numa_node_id(kernel))
        if ref:
            pol.put()
        return hugetlb.alloc_hugetlb_folio_nodemask(kernel, nid, nodemask)
    # with no VMA, vma_alloc_folio uses the task or system default policy
    return vma_alloc_folio(kernel, vma, address, src.order)


def mbind_interleave_ilx(mm, start, end, pagelist, mmpol):
    """Set mmpol.ilx so that the first queued folio lands on exactly the
    node its VMA's interleave would give it; later ones follow by index.
    Walks the VMAs of [start, end): needs mmap_lock."""
    folio = pagelist[0]
    vma, addr = None, -errno.EFAULT
    for v in mm.mm_mt.range(start, end):              # for_each_vma_range
        point("mbind_ilx")
        addr = page_address_in_vma(folio, v)
        if addr != -errno.EFAULT:
            vma = v
            break
    if vma is not None:
        order = folio.order
        pol, ilx, ref = get_vma_policy(vma, addr, order)   # we know the pol, not the ilx
        if ref:
            pol.put()
        mmpol.ilx = ilx - (folio.index >> order)


def do_mbind(task, start, length, mode, mode_flags, nmask, flags):
    """mbind(2).  Returns 0 or -errno.

    Context: takes mmap_lock for write; queues under it (ptl per table, LRU
    lock), rewrites the VMAs' policies, then migrates -- with or without
    mmap_lock as the "mbind" variant says (see the module docstring)."""
    mm = task.mm
    kernel = mm.kernel
    if flags & ~MPOL_MF_VALID:
        return -errno.EINVAL
    if start & (PAGE_SIZE - 1):
        return -errno.EINVAL
    if mode == MPOL_DEFAULT:
        flags &= ~MPOL_MF_STRICT
    length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    end = start + length
    if end == start:
        return 0
    new = mpol_new(mode, mode_flags, nmask)
    if isinstance(new, int):
        return new
    if new is None:
        flags |= MPOL_MF_DISCONTIG_OK      # the default policy: holes are fine
    moving = flags & (MPOL_MF_MOVE | MPOL_MF_MOVE_ALL)
    if moving:
        lru_cache_disable(kernel)
    variant = kernel.variant("mbind")
    vma_callback = variant in ("hold-mmap-lock", "early-unlock-vma-callback")
    mmap_write_lock(mm)
    err = mpol_set_nodemask(kernel, new, nmask)
    if not err:
        err = vmas_may_split(mm, start, end)     # mbind_range would split a hugetlb VMA badly
    if not err:
        if not vma_splits_ok(mm, start, end, lambda v: not mpol_equal(v.vm_policy, new)):
            err = -errno.ENOMEM                 # vm.max_map_count (vma_modify_policy's split)
    if err:
        mmap_write_unlock(mm)
    else:
        pagelist = []
        nr_failed = queue_pages_range(mm, start, end, nmask,
                                      flags | MPOL_MF_INVERT | MPOL_MF_WRLOCK, pagelist)
        if nr_failed < 0:
            err, nr_failed = nr_failed, 0
        else:
            addr = start
            while addr < end:
                vma = mm.mm_mt.find_vma_intersection(addr, end)
                if vma is None:
                    break
                vma = mbind_range(vma, start, end, new)
                addr = vma.vm_end
        mmpol = None
        if not err and pagelist and not vma_callback:
            if new is None:                 # MPOL_DEFAULT: migrate by the task's policy
                new = get_task_policy(task)
                if new is default_policy:
                    new = None
            mmpol = MigrationMpol(kernel, new if new is not None else default_policy)
            if mmpol.pol.mode in INTERLEAVE_MODES and variant == "mpol-alloc":
                mbind_interleave_ilx(mm, start, end, pagelist, mmpol)   # walk, then unlock
        if variant != "hold-mmap-lock":
            mmap_write_unlock(mm)
        if mmpol is not None and mmpol.pol.mode in INTERLEAVE_MODES and \
                variant == "unlock-before-ilx":
            mbind_interleave_ilx(mm, start, end, pagelist, mmpol)       # the mm-unstable slip
        if not err and pagelist:
            if vma_callback:
                nr_failed |= migrate_pages(kernel, pagelist, new_folio, None, start,
                                           MIGRATE_SYNC, MR_MEMPOLICY_MBIND)
            else:
                nr_failed |= migrate_pages(kernel, pagelist, alloc_migration_target_by_mpol,
                                           None, mmpol, MIGRATE_SYNC, MR_MEMPOLICY_MBIND)
        if nr_failed and flags & MPOL_MF_STRICT:
            err = -errno.EIO
        if pagelist:
            putback_movable_pages(kernel, pagelist)
            pagelist.clear()
        if variant == "hold-mmap-lock":
            mmap_write_unlock(mm)
    mpol_put(new)
    if moving:
        lru_cache_enable(kernel)
    return err


# -- set_mempolicy -------------------------------------------------------------------------------

def do_set_mempolicy(task, mode, flags, nodes):
    """set_mempolicy(2) for ``task``.  Returns 0 or -errno.  Context: takes
    task_lock to publish the new policy; the old one is put after."""
    new = mpol_new(mode, flags, nodes)
    if isinstance(new, int):
        return new
    err = mpol_set_nodemask(task.kernel, new, nodes)
    if err:
        mpol_put(new)
        return err
    task_lock(task)
    old = task.mempolicy
    task.mempolicy = new
    if new is not None and new.mode in INTERLEAVE_MODES:
        task.il_prev = -1
    task_unlock(task)
    mpol_put(old)
    return 0


# -- migrate_pages(2) -------------------------------------------------------------------------------

def node_remap(oldbit, old, new):
    """Map ``oldbit``'s position in sorted ``old`` onto sorted ``new``."""
    if oldbit not in old or not new:
        return oldbit
    n = old.index(oldbit)
    return new[n % len(new)]


def migrate_to_node(mm, source, dest, flags):
    """Move every page of ``mm`` on node ``source`` to ``dest``.  Returns the
    number not moved.  Context: under hold-mmap-lock the caller holds
    mmap_lock for read across this; otherwise it is taken here only to queue."""
    kernel = mm.kernel
    hold = kernel.variant("mbind") == "hold-mmap-lock"
    if not hold:
        mmap_read_lock(mm)
    vma = mm.mm_mt.find_vma(0)
    if vma is None:
        if not hold:
            mmap_read_unlock(mm)
        return 0
    pagelist = []
    nr_failed = queue_pages_range(mm, vma.vm_start, C.TASK_SIZE, {source},
                                  flags | MPOL_MF_DISCONTIG_OK, pagelist)
    if not hold:
        mmap_read_unlock(mm)
    err = 0
    if pagelist:
        # __GFP_THISNODE: the destination node or nothing
        mtc = MigrationTargetControl(dest, frozenset({dest}))
        err = migrate_pages(kernel, pagelist, functools.partial(alloc_migration_target, kernel),
                            None, mtc, MIGRATE_SYNC, MR_SYSCALL)     # puts back what failed
    return err if err < 0 else err + max(nr_failed, 0)


def do_migrate_pages(mm, from_nodes, to_nodes, flags):
    """Move pages between the node sets, keeping their relative placement.
    Returns the number of pages not moved.  Context: takes mmap_lock for read
    (around everything under hold-mmap-lock, around each queueing otherwise)."""
    kernel = mm.kernel
    hold = kernel.variant("mbind") == "hold-mmap-lock"
    frm, to = sorted(from_nodes), sorted(to_nodes)
    lru_cache_disable(kernel)
    if hold:
        mmap_read_lock(mm)
    nr_failed = 0
    err = 0
    tmp = set(frm)
    # Pick a (source, dest) pair whose dest is not itself still to be emptied,
    # if possible, so incoming pages do not crowd a node before it is moved out.
    while tmp:
        source, dest = None, 0
        for s in sorted(tmp):
            if len(frm) != len(to) and s in to:
                continue
            d = node_remap(s, frm, to)
            if s == d:
                continue
            source, dest = s, d
            if dest not in tmp:
                break
        if source is None:
            break
        tmp.discard(source)
        err = migrate_to_node(mm, source, dest, flags)
        if err > 0:
            nr_failed += err
        if err < 0:
            break
    if hold:
        mmap_read_unlock(mm)
    lru_cache_enable(kernel)
    return err if err < 0 else nr_failed


# -- move_pages(2) (mm/migrate.c) ------------------------------------------------------------

def _folio_at(vma, addr):
    """follow_page: the folio mapped at ``addr`` with a reference, the zero
    page (no reference), or None.  Context: mmap_lock held."""
    if vma.vm_flags & VM_HUGETLB:
        return hugetlb_folio_at(vma.vm_mm, addr)    # takes the vma_lock and the ptl
    pt = pte_offset(vma.vm_mm, addr)
    if pt is None:
        return None
    pt.ptl.lock()
    e = pt.ptes[pte_index(addr)]
    if not isinstance(e, Folio):        # none, or a migration entry (not present)
        e = None
    elif not e.flags & PG_reserved:
        folio_get(e)
    pt.ptl.unlock()
    return e


def do_pages_stat(mm, addrs):
    """The node of each page, -ENOENT if not present, -EFAULT if unmapped or
    the zero page.  Context: mmap_lock for read per chunk of 16, as Linux."""
    out = []
    for c in range(0, len(addrs), 16):
        mmap_read_lock(mm)
        for addr in addrs[c:c + 16]:
            vma = mm.mm_mt.vma_lookup(addr)
            if vma is None:
                out.append(-errno.EFAULT)
                continue
            folio = _folio_at(vma, addr)
            if folio is None:
                out.append(-errno.ENOENT)
            elif folio.flags & PG_reserved:
                out.append(-errno.EFAULT)
            else:
                out.append(folio.node)
                folio_put(folio, mm.kernel)
        mmap_read_unlock(mm)
    return out


def add_page_for_migration(mm, addr, node, pagelist, migrate_all):
    """Queue the folio at ``addr`` for ``node``.  Returns 1 (queued), 0
    (already there) or -errno.  Context: takes mmap_lock for read."""
    kernel = mm.kernel
    mmap_read_lock(mm)
    err = -errno.EFAULT
    vma = mm.mm_mt.vma_lookup(addr)
    if vma is not None and vma_migratable(vma):
        folio = _folio_at(vma, addr)
        if folio is None:
            err = -errno.ENOENT
        elif folio.flags & PG_reserved:
            err = -errno.EFAULT                 # the zero page
        else:
            if folio.node == node:
                err = 0
            elif folio_maybe_mapped_shared(folio) and not migrate_all:
                err = -errno.EACCES
            elif folio_isolate(kernel, folio, pagelist):
                err = 1
            else:
                err = -errno.EBUSY
            folio_put(folio, kernel)
    mmap_read_unlock(mm)
    return err


def do_move_pages_to_node(mm, pagelist, node):
    kernel = mm.kernel
    mtc = MigrationTargetControl(node, frozenset({node}))        # __GFP_THISNODE
    return migrate_pages(kernel, pagelist, functools.partial(alloc_migration_target, kernel),
                         None, mtc, MIGRATE_SYNC, MR_SYSCALL)         # puts back what failed


def move_pages_and_store_status(mm, node, pagelist, status, addrs, start, i):
    """Migrate the batch queued for ``node`` (pages start..i-1) and set their
    status.  Linux gives up on the rest of the call when some fail and leaves
    their status untouched; pymm goes on and reports each failed page as
    -EBUSY, or -ENOMEM when a destination could not be allocated (looked up
    again after the attempt)."""
    if not pagelist:
        return
    err = do_move_pages_to_node(mm, pagelist, node)
    if err == 0:
        status[start:i] = [node] * (i - start)
        return
    now = do_pages_stat(mm, addrs[start:i])
    fail = -errno.ENOMEM if err == -errno.ENOMEM else -errno.EBUSY
    status[start:i] = [node if s == node else fail for s in now]


def do_pages_move(mm, addrs, nodes, flags):
    """Move each page to its node; returns the status list (node or -errno
    per page).  Consecutive pages for one node are migrated as a batch, with
    no mmap_lock held.  Context: takes mmap_lock for read per page."""
    kernel = mm.kernel
    migrate_all = bool(flags & MPOL_MF_MOVE_ALL)
    status = [0] * len(addrs)
    pagelist = []
    current_node, start = None, 0
    lru_cache_disable(kernel)
    for i, (addr, node) in enumerate(zip(addrs, nodes)):
        if current_node is None:
            current_node, start = node, i
        elif node != current_node:
            move_pages_and_store_status(mm, current_node, pagelist, status, addrs, start, i)
            current_node, start = node, i
        err = add_page_for_migration(mm, addr, current_node, pagelist, migrate_all)
        if err > 0:
            continue                            # queued
        status[i] = err if err else current_node
        move_pages_and_store_status(mm, current_node, pagelist, status, addrs, start, i)
        current_node = None
    move_pages_and_store_status(mm, current_node, pagelist, status, addrs, start, len(addrs))
    lru_cache_enable(kernel)
    return status


# -- the system-call layer: argument checks (nothing is changed on bad input) ----------------------

def _int(what, v):
    if type(v) is not int and not (isinstance(v, int) and not isinstance(v, bool)):
        raise OSError(errno.EINVAL, f"{what} must be an int, got {type(v).__name__}")
    return int(v)


def get_nodes(what, nodes, kernel, relative=False):
    """A node set from the caller: None or an iterable of node ids.  Ids must
    be ints; beyond the machine's highest node is EINVAL (mbind(2): "greater
    than the maximum supported node ID"), except relative ids, which only
    have to fit a nodemask."""
    if nodes is None:
        return frozenset()
    if isinstance(nodes, (str, bytes)) or not hasattr(nodes, "__iter__"):
        raise OSError(errno.EFAULT, f"{what}: the node set must be an iterable of node ids, "
                                    f"got {type(nodes).__name__}")
    out = set()
    limit = MAX_NUMNODES if relative else len(kernel.nodes)
    for n in nodes:
        n = _int(f"{what}: node id", n)
        if n < 0 or n >= limit:
            raise OSError(errno.EINVAL, f"{what}: node {n} does not exist "
                                        f"(nodes 0..{len(kernel.nodes) - 1})")
        out.add(n)
    return frozenset(out)


def sanitize_mpol_flags(what, mode):
    """Split the mode flags off ``mode``; -> (mode, flags) or raise EINVAL."""
    mode = _int(f"{what}: mode", mode)
    flags = mode & MPOL_MODE_FLAGS
    mode &= ~MPOL_MODE_FLAGS
    if not 0 <= mode < MPOL_MAX:
        raise OSError(errno.EINVAL, f"{what}: unknown mode {mode}")
    if flags & MPOL_F_STATIC_NODES and flags & MPOL_F_RELATIVE_NODES:
        raise OSError(errno.EINVAL, f"{what}: MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES "
                                    "are mutually exclusive")
    if flags & MPOL_F_NUMA_BALANCING and mode not in (MPOL_BIND, MPOL_PREFERRED_MANY):
        raise OSError(errno.EINVAL, f"{what}: MPOL_F_NUMA_BALANCING needs MPOL_BIND or "
                                    "MPOL_PREFERRED_MANY")
    return mode, flags


def _raise(e, what):
    if e < 0:
        raise OSError(-e, f"{what}: {errno.errorcode.get(-e, str(-e))}")
    return e


def kernel_mbind(task, addr, length, mode, nodes, flags):
    addr = _int("mbind: addr", addr)
    length = _int("mbind: length", length)
    flags = _int("mbind: flags", flags)
    mode, mode_flags = sanitize_mpol_flags("mbind", mode)
    nmask = get_nodes("mbind", nodes, task.kernel, bool(mode_flags & MPOL_F_RELATIVE_NODES))
    if addr < 0 or length < 0:
        raise OSError(errno.EINVAL, "mbind: negative address or length")
    return _raise(do_mbind(task, addr, length, mode, mode_flags, nmask, flags), "mbind")


def kernel_set_mempolicy(task, mode, nodes):
    mode, mode_flags = sanitize_mpol_flags("set_mempolicy", mode)
    nmask = get_nodes("set_mempolicy", nodes, task.kernel,
                      bool(mode_flags & MPOL_F_RELATIVE_NODES))
    return _raise(do_set_mempolicy(task, mode, mode_flags, nmask), "set_mempolicy")


def kernel_migrate_pages(task, old_nodes, new_nodes):
    """migrate_pages(2) with the caller as the target.  pymm tasks are
    privileged (CAP_SYS_NICE): shared pages move too (MPOL_MF_MOVE_ALL)."""
    old = get_nodes("migrate_pages: old_nodes", old_nodes, task.kernel)
    new = get_nodes("migrate_pages: new_nodes", new_nodes, task.kernel)
    if not new:
        raise OSError(errno.EINVAL, "migrate_pages: new_nodes has no node with memory")
    return _raise(do_migrate_pages(task.mm, old, new, MPOL_MF_MOVE_ALL), "migrate_pages")


def kernel_move_pages(task, addrs, nodes, flags):
    """move_pages(2) on the caller.  Returns the status list."""
    flags = _int("move_pages: flags", flags)
    if flags & ~(MPOL_MF_MOVE | MPOL_MF_MOVE_ALL):
        raise OSError(errno.EINVAL, f"move_pages: unknown flags {flags:#x}")
    if isinstance(addrs, (str, bytes)) or not hasattr(addrs, "__iter__"):
        raise OSError(errno.EFAULT, "move_pages: addrs must be an iterable of addresses")
    addrs = [_int("move_pages: address", a) for a in addrs]
    if nodes is None:
        return do_pages_stat(task.mm, addrs)
    if isinstance(nodes, (str, bytes)) or not hasattr(nodes, "__iter__"):
        raise OSError(errno.EFAULT, "move_pages: nodes must be None or an iterable of node ids")
    nodes = [_int("move_pages: node", n) for n in nodes]
    if len(nodes) != len(addrs):
        raise OSError(errno.EFAULT, f"move_pages: {len(addrs)} addresses but {len(nodes)} nodes")
    for n in nodes:
        if not 0 <= n < len(task.kernel.nodes):
            raise OSError(errno.ENODEV, f"move_pages: node {n} is not online")
    return do_pages_move(task.mm, addrs, nodes, flags)


# -- get_mempolicy(2) ------------------------------------------------------------------------

def lookup_node(mm, addr):
    """The node of the page at ``addr``, faulting it in (read) as
    get_user_pages_fast does; -EFAULT if it cannot be.  Context: mmap_lock
    not held; takes it for read."""
    mmap_read_lock(mm)
    locked = [1]
    addr &= ~(C.PAGE_SIZE - 1)
    r = faultin_page_range(mm, addr, addr + C.PAGE_SIZE, False, locked)
    if not locked[0]:
        mmap_read_lock(mm)
    vma = mm.mm_mt.vma_lookup(addr) if r >= 0 else None
    folio = _folio_at(vma, addr) if vma is not None else None
    mmap_read_unlock(mm)
    if folio is None:
        return -errno.EFAULT
    nid = folio.node
    if not folio.flags & PG_reserved:
        folio_put(folio, mm.kernel)
    return nid


def do_get_mempolicy(task, addr, flags):
    """get_mempolicy(2): returns (mode or node, nodes) or -errno."""
    if flags & ~(C.MPOL_F_NODE | C.MPOL_F_ADDR | C.MPOL_F_MEMS_ALLOWED):
        return -errno.EINVAL
    kernel = task.kernel
    if flags & C.MPOL_F_MEMS_ALLOWED:
        if flags & (C.MPOL_F_NODE | C.MPOL_F_ADDR):
            return -errno.EINVAL
        return 0, frozenset(range(len(kernel.nodes)))       # cpuset_current_mems_allowed
    mm = task.mm
    ref = False
    if flags & C.MPOL_F_ADDR:
        mmap_read_lock(mm)
        vma = mm.mm_mt.vma_lookup(addr)
        if vma is None:
            mmap_read_unlock(mm)
            return -errno.EFAULT
        pol = vma.vm_policy            # __get_vma_policy: no task fallback here
        if pol is not None:
            pol.get()                  # mpol_get, so mmap_lock can go
            ref = True
        mmap_read_unlock(mm)
    elif addr:
        return -errno.EINVAL
    else:
        pol = get_task_policy(task)
        ref = pol is not default_policy
    if pol is None:
        pol = default_policy
    try:
        if flags & C.MPOL_F_NODE:
            if flags & C.MPOL_F_ADDR:
                mode = lookup_node(mm, addr)
                if mode < 0:
                    return mode
            elif ref and pol.mode in INTERLEAVE_MODES:    # pol == current->mempolicy
                nodes = sorted(pol.nodes)
                mode = next((n for n in nodes if n > task.il_prev), nodes[0])   # next_node_in
            else:
                return -errno.EINVAL
        else:
            mode = MPOL_DEFAULT if pol is default_policy else \
                pol.mode | (pol.flags & C.MPOL_MODE_FLAGS)
        if pol.flags & (MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES):
            nodes = pol.user_nodemask                         # mpol_store_user_nodemask
        elif pol is default_policy or pol.mode == C.MPOL_LOCAL:
            nodes = frozenset()
        else:
            nodes = pol.nodes                                 # get_policy_nodemask
        return mode, frozenset(nodes)
    finally:
        if ref:
            mpol_put(pol)


def kernel_get_mempolicy(task, addr, flags, maxnode):
    addr = _int("get_mempolicy: addr", addr)
    flags = _int("get_mempolicy: flags", flags)
    if maxnode is not None:
        maxnode = _int("get_mempolicy: maxnode", maxnode)
        if maxnode < len(task.kernel.nodes):                  # nmask && maxnode < nr_node_ids
            raise OSError(errno.EINVAL, f"get_mempolicy: maxnode {maxnode} is below the number "
                                        f"of nodes ({len(task.kernel.nodes)})")
    r = do_get_mempolicy(task, addr, flags)
    if isinstance(r, int):
        _raise(r, "get_mempolicy")
    return r


internal.define(__name__, globals())   # callers across a cycle use these through internal
