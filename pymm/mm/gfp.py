"""GFP flags (include/linux/gfp_types.h), the task's allocation scope
(include/linux/sched/mm.h: memalloc_*_save, current_gfp_context) and
lockdep's reclaim context (mm/page_alloc.c: fs_reclaim_acquire, might_alloc).

The problem.  An allocation that may enter direct reclaim waits for
whatever reclaim waits for: writeback, the block layer, a network block
device's socket -- locks pymm's allocating code never takes itself.  A lock
held across such an allocation therefore depends on every lock reclaim
takes, and lockdep must see that dependency even when no reclaim happens.

The kernel's answer, modelled here: one lockdep class, ``fs_reclaim``, a
``lockdep_map`` rather than a lock.  Every allocation that may reclaim
(``__GFP_DIRECT_RECLAIM`` and ``__GFP_FS`` after the task's scope is
applied, and the task not itself reclaiming: PF_MEMALLOC) acquires and
releases it at once (``might_alloc``): "lock L -> fs_reclaim" for every L
held.  Reclaim holds it for its whole run (kswapd's balance_pgdat and
direct reclaim's __perform_reclaim): "fs_reclaim -> M" for every lock M
reclaim takes.  L -> fs_reclaim -> M -> ... -> L is then a cycle lockdep
reports, whichever thread ever reclaims.

Scopes: ``memalloc_nofs_save`` clears __GFP_FS from every allocation of the
task until the matching restore (filesystems holding locks reclaim's
writeback takes), ``memalloc_noio_save`` clears __GFP_IO and __GFP_FS,
``memalloc_noreclaim_save`` sets PF_MEMALLOC (reclaim itself: its own
allocations never recurse into reclaim).  pymm keeps the task's PF_MEMALLOC*
bits per thread (a Python thread is a task), which is what current->flags is.
"""
import threading

from ..locking import lockdep
from ..locking.lockdep_map import LockdepMap, lock_map_acquire, lock_map_release

# -- gfp_types.h ------------------------------------------------------------------------------
__GFP_DMA = 0x01
__GFP_HIGHMEM = 0x02
__GFP_MOVABLE = 0x08
__GFP_RECLAIMABLE = 0x10
__GFP_HIGH = 0x20
__GFP_IO = 0x40
__GFP_FS = 0x80
__GFP_ZERO = 0x100
__GFP_DIRECT_RECLAIM = 0x400
__GFP_KSWAPD_RECLAIM = 0x800
__GFP_WRITE = 0x1000
__GFP_NOWARN = 0x2000
__GFP_RETRY_MAYFAIL = 0x4000
__GFP_NOFAIL = 0x8000
__GFP_NORETRY = 0x10000
__GFP_COMP = 0x40000
__GFP_HARDWALL = 0x100000
__GFP_THISNODE = 0x200000
__GFP_ACCOUNT = 0x400000
__GFP_NOLOCKDEP = 0x10000000

__GFP_RECLAIM = __GFP_DIRECT_RECLAIM | __GFP_KSWAPD_RECLAIM

GFP_ATOMIC = __GFP_HIGH | __GFP_KSWAPD_RECLAIM
GFP_KERNEL = __GFP_RECLAIM | __GFP_IO | __GFP_FS
GFP_KERNEL_ACCOUNT = GFP_KERNEL | __GFP_ACCOUNT
GFP_NOWAIT = __GFP_KSWAPD_RECLAIM | __GFP_NOWARN
GFP_NOIO = __GFP_RECLAIM
GFP_NOFS = __GFP_RECLAIM | __GFP_IO
GFP_USER = __GFP_RECLAIM | __GFP_IO | __GFP_FS | __GFP_HARDWALL
GFP_HIGHUSER = GFP_USER | __GFP_HIGHMEM
GFP_HIGHUSER_MOVABLE = GFP_HIGHUSER | __GFP_MOVABLE
GFP_PGTABLE_USER = GFP_KERNEL_ACCOUNT | __GFP_ZERO       # asm-generic/pgalloc.h

_NAMES = [(v, n) for n, v in sorted(globals().items())
          if n.startswith("__GFP_") and isinstance(v, int) and n != "__GFP_RECLAIM"]

# -- the task's allocation scope (current->flags) ------------------------------------------------
PF_MEMALLOC = 0x00000800
PF_MEMALLOC_NOFS = 0x00040000
PF_MEMALLOC_NOIO = 0x00080000


class _FlagsLocal(threading.local):
    flags = 0               # current->flags (a class default: no AttributeError)


_task = _FlagsLocal()


def current_flags():
    return _task.flags


def _save(flag):
    old = current_flags()
    _task.flags = old | flag
    return old & flag


def _restore(flag, saved):
    _task.flags = (current_flags() & ~flag) | saved


def memalloc_noreclaim_save():
    """Reclaim itself: allocations never enter reclaim again (PF_MEMALLOC)."""
    return _save(PF_MEMALLOC)


def memalloc_noreclaim_restore(saved):
    _restore(PF_MEMALLOC, saved)


def memalloc_nofs_save():
    return _save(PF_MEMALLOC_NOFS)


def memalloc_nofs_restore(saved):
    _restore(PF_MEMALLOC_NOFS, saved)


def memalloc_noio_save():
    return _save(PF_MEMALLOC_NOIO)


def memalloc_noio_restore(saved):
    _restore(PF_MEMALLOC_NOIO, saved)


def current_gfp_context(gfp):
    """``gfp`` with the task's scope applied."""
    f = current_flags()
    if f & PF_MEMALLOC_NOIO:
        gfp &= ~(__GFP_IO | __GFP_FS)
    elif f & PF_MEMALLOC_NOFS:
        gfp &= ~__GFP_FS
    return gfp


def gfpflags_allow_blocking(gfp):
    return bool(gfp & __GFP_DIRECT_RECLAIM)


def gfp_names(gfp):
    """"GFP_KERNEL|__GFP_ZERO"-style text, as the kernel's %pGg prints."""
    for name in ("GFP_HIGHUSER_MOVABLE", "GFP_KERNEL_ACCOUNT", "GFP_KERNEL", "GFP_NOFS",
                 "GFP_NOIO", "GFP_NOWAIT", "GFP_ATOMIC"):
        v = globals()[name]
        if gfp & v == v:
            rest = gfp & ~v
            return "|".join([name] + [n for b, n in _NAMES if rest & b])
    return "|".join(n for b, n in _NAMES if gfp & b) or "0"


# -- lockdep's reclaim context (mm/page_alloc.c) ------------------------------------------------
__fs_reclaim_map = LockdepMap("fs_reclaim")
fs_reclaim_map = __fs_reclaim_map


def __need_reclaim(gfp):
    if not gfp & __GFP_DIRECT_RECLAIM:          # no reclaim without waiting on it
        return False
    if current_flags() & PF_MEMALLOC:           # this one won't enter reclaim
        return False
    return not gfp & __GFP_NOLOCKDEP


def __fs_reclaim_acquire():
    lock_map_acquire(__fs_reclaim_map)


def __fs_reclaim_release():
    lock_map_release(__fs_reclaim_map)


def fs_reclaim_acquire(gfp):
    gfp = current_gfp_context(gfp)
    if __need_reclaim(gfp) and gfp & __GFP_FS:
        __fs_reclaim_acquire()


def fs_reclaim_release(gfp):
    gfp = current_gfp_context(gfp)
    if __need_reclaim(gfp) and gfp & __GFP_FS:
        __fs_reclaim_release()


def might_alloc(gfp):
    """Every allocation calls this first (slab_pre_alloc_hook,
    prepare_alloc_pages): "this may enter direct reclaim" for lockdep
    (fs_reclaim_acquire then fs_reclaim_release, the task's scope read once:
    nothing can change it in between).  With the validator off the map's
    acquire and release cancel out and are skipped (on every allocation).
    Context: blocking ``gfp`` may sleep (the map is sleeping-class: taken
    under a spinlock it is lockdep's invalid-context report)."""
    if not lockdep._enabled:
        return
    gfp = current_gfp_context(gfp)
    if __need_reclaim(gfp) and gfp & __GFP_FS:
        __fs_reclaim_acquire()
        __fs_reclaim_release()
