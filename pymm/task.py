"""Processes and their system calls; ``current``.

A Process is a task with an mm.  Any Python thread may call a process's
system calls; for the duration of the call that thread runs "in kernel
context" as that task (``current()`` returns it) and on the way back to user
space lockdep checks that it holds no lock (lockdep_sys_exit).

Every system call validates its arguments before it takes a lock or changes
anything, and reports bad input the way Linux does: an OSError with the errno
from the man page.
"""
import errno
import functools

from . import constants as C
from .context import Task, _KernelContext, current, current_kernel, task_work_add  # noqa: F401 (public here too)
from .fs.hugetlbfs import (hugetlb_file_setup, hugetlb_split_check, hugetlbfs_file_mmap,
                           hugetlbfs_file_mmap_prepare)
from .fs.shmem import File, shmem_zero_setup
from .mm.fork import dup_mm
from .mm.gup import mm_populate_after_write
from .mm.madvise import VALID_ADVICE, do_madvise
from .mm.mempolicy import kernel_get_mempolicy
from .mm.mempolicy import (kernel_mbind, kernel_migrate_pages, kernel_move_pages,
                           kernel_set_mempolicy, mpol_dup, mpol_put)
from .mm.mincore import sys_mincore
from .mm.mlock import can_do_mlock, do_mlock, do_mlockall, do_munlock, mlock2_flags_to_vm, mlock_future_ok
from .mm.msync import sys_msync
from .mm.mm_types import (MmStruct, VM_DONTEXPAND, VM_GROWSDOWN, VM_HUGETLB, VM_LOCKED, VM_LOCKED_MASK,
                          VM_MAYEXEC, VM_MAYREAD, VM_MAYSHARE, VM_MAYWRITE, VM_NORESERVE,
                          VM_SHARED)
from .mm.mmap import munmap_splits_ok
from .mm.mmap import do_vmi_munmap, exit_mmap, get_unmapped_area, mmap_region, page_align, sys_brk
from .mm.mmap_lock import mmap_write_lock, mmap_write_unlock
from .mm.mprotect import calc_vm_prot_bits, do_mprotect_pkey
from .mm.mremap import do_mremap
from .mm.uaccess import user_access
from .sched import charge
from .debug.fault_inject import should_fail


def syscall(fn):
    @functools.wraps(fn)
    def wrapper(self, *args, **kw):
        if self.exited:
            raise OSError(errno.ESRCH, f"{fn.__name__}: process {self.pid} has exited")
        charge("syscall")               # virtual time (loads and stores are not syscalls)
        with _KernelContext(self):
            return fn(self, *args, **kw)
    return wrapper


def _err(e, what):
    if e < 0:
        raise OSError(-e, f"{what}: {errno.errorcode.get(-e, str(-e))}")
    return e


def _err_or(r, what):
    if isinstance(r, int):
        _err(r, what)
    return r


def _need_int(name, v):
    if type(v) is not int and not isinstance(v, int) or isinstance(v, bool):
        raise OSError(errno.EINVAL, f"{name} must be an int, got {type(v).__name__}")


# errno for a length that is negative as a signed value (an enormous size_t):
# mprotect sees end <= start and says ENOMEM, the others EINVAL.
_NEGATIVE_LENGTH_ERRNO = {"mprotect": errno.ENOMEM}

# mmap flags Linux knows (LEGACY_MAP_MASK, plus MAP_FIXED_NOREPLACE): MAP_SHARED_VALIDATE
# refuses anything else.  (MAP_SYNC needs a DAX file; tmpfs and hugetlbfs are not.)
KNOWN_MAP_FLAGS = (C.MAP_SHARED | C.MAP_PRIVATE | C.MAP_FIXED | C.MAP_ANONYMOUS | C.MAP_GROWSDOWN |
                   C.MAP_DENYWRITE | C.MAP_EXECUTABLE | C.MAP_LOCKED | C.MAP_NORESERVE |
                   C.MAP_POPULATE | C.MAP_NONBLOCK | C.MAP_STACK | C.MAP_HUGETLB | C.MAP_32BIT |
                   C.MAP_FIXED_NOREPLACE | C.MAP_UNINITIALIZED | C.MAP_HUGE_2MB | C.MAP_HUGE_1GB)


class Process(Task):
    """A user process: its system calls and user-space accesses."""

    def __init__(self, kernel, name, mm=None):
        super().__init__(kernel, name)
        # credentials and resource limits (cred->cap_effective, signal->rlim):
        # pymm's processes run as root; drop a capability to be bound by a limit
        self.capabilities = {"CAP_IPC_LOCK", "CAP_SYS_RESOURCE", "CAP_SYS_NICE"}
        self.rlimits = {C.RLIMIT_MEMLOCK: (C.MLOCK_LIMIT, C.MLOCK_LIMIT)}
        self.mm = mm if mm is not None else MmStruct(kernel, self.pid)
        self.mm.owner_pid = self.pid
        if mm is None:
            self.mm.start_brk = self.mm.brk = 0x5555_5560_0000

    # -- memory mapping --------------------------------------------------------
    @syscall
    def mmap(self, addr, length, prot, flags, fd=None, offset=0):
        for n, v in (("addr", addr), ("length", length), ("prot", prot), ("flags", flags),
                     ("offset", offset)):
            _need_int(n, v)
        mm = self.mm
        if length <= 0:
            raise OSError(errno.EINVAL, "mmap: length must be > 0")
        if offset < 0 or offset & (C.PAGE_SIZE - 1):
            raise OSError(errno.EINVAL, "mmap: offset must be a non-negative multiple of PAGE_SIZE")
        if prot & ~(C.PROT_READ | C.PROT_WRITE | C.PROT_EXEC):
            raise OSError(errno.EINVAL, f"mmap: unknown prot bits {prot:#x}")
        mtype = flags & C.MAP_TYPE
        if mtype not in (C.MAP_SHARED, C.MAP_PRIVATE, C.MAP_SHARED_VALIDATE):
            raise OSError(errno.EINVAL, "mmap: flags need exactly one of MAP_SHARED or MAP_PRIVATE")
        if mtype == C.MAP_SHARED_VALIDATE and flags & C.MAP_ANONYMOUS:
            raise OSError(errno.EINVAL, "mmap: MAP_SHARED_VALIDATE is for file mappings")
        if mtype == C.MAP_SHARED_VALIDATE and flags & ~KNOWN_MAP_FLAGS:
            raise OSError(errno.EOPNOTSUPP, f"mmap: unknown flags {flags & ~KNOWN_MAP_FLAGS:#x} "
                          "with MAP_SHARED_VALIDATE")
        shared = mtype != C.MAP_PRIVATE
        fixed = bool(flags & (C.MAP_FIXED | C.MAP_FIXED_NOREPLACE))
        length = page_align(length)
        if length > C.TASK_SIZE or (fixed and (addr & (C.PAGE_SIZE - 1))):
            raise OSError(errno.EINVAL if fixed else errno.ENOMEM, "mmap: bad address or length")
        if fixed and (addr < C.MMAP_MIN_ADDR or addr + length > C.TASK_SIZE):
            raise OSError(errno.EPERM if addr < C.MMAP_MIN_ADDR else errno.ENOMEM,
                          "mmap: MAP_FIXED range outside the user address space")
        anon = bool(flags & C.MAP_ANONYMOUS)
        file = None
        if not anon:
            if not isinstance(fd, File):
                raise OSError(errno.EBADF, "mmap: a file mapping needs fd= a File (k.create_file)")
            file = fd
        huge = bool(flags & C.MAP_HUGETLB) if anon else bool(file.hugetlb)
        if huge or flags & C.MAP_HUGETLB:
            if not huge:
                raise OSError(errno.EINVAL, "mmap: MAP_HUGETLB on a file that is not on hugetlbfs")
            if flags & C.MAP_HUGETLB and (flags >> C.MAP_HUGE_SHIFT) & 0x3F not in (0, C.HPAGE_SHIFT):
                raise OSError(errno.EINVAL, "mmap: only 2 MiB huge pages exist (MAP_HUGE_2MB)")
            length = (length + C.HPAGE_SIZE - 1) & C.HPAGE_MASK
            if offset & (C.HPAGE_SIZE - 1) or (fixed and addr & (C.HPAGE_SIZE - 1)):
                raise OSError(errno.EINVAL, "mmap: hugetlb offset and MAP_FIXED address must be "
                              "2 MiB aligned")
            if length > C.TASK_SIZE or (fixed and addr + length > C.TASK_SIZE):
                raise OSError(errno.ENOMEM, "mmap: bad address or length")
            if not fixed and addr:
                addr = (addr + C.HPAGE_SIZE - 1) & C.HPAGE_MASK
        pgoff = offset >> 12
        vm_flags = calc_vm_prot_bits(prot) | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
        if shared:
            vm_flags |= VM_SHARED | VM_MAYSHARE
        if flags & C.MAP_LOCKED:
            if not can_do_mlock(self):
                raise OSError(errno.EPERM, "mmap: MAP_LOCKED needs CAP_IPC_LOCK or a nonzero "
                                           "RLIMIT_MEMLOCK")
            vm_flags |= VM_LOCKED
        if flags & C.MAP_GROWSDOWN:
            if shared and anon:
                raise OSError(errno.EINVAL, "mmap: MAP_GROWSDOWN with MAP_SHARED|MAP_ANONYMOUS")
            vm_flags |= VM_GROWSDOWN
        if huge:
            vm_flags |= VM_HUGETLB | VM_DONTEXPAND | (VM_NORESERVE if flags & C.MAP_NORESERVE else 0)
        mmap_write_lock(mm)
        if mm.map_count > self.kernel.max_map_count:
            mmap_write_unlock(mm)
            raise OSError(errno.ENOMEM, "mmap: the process has vm.max_map_count mappings")
        vm_flags |= mm.def_flags
        populate = vm_flags & VM_LOCKED or (flags & (C.MAP_POPULATE | C.MAP_NONBLOCK)) == C.MAP_POPULATE
        if huge:
            vm_flags &= ~VM_LOCKED_MASK          # hugetlb VMAs are never VM_LOCKED (populated, though)
        if not mlock_future_ok(mm, vm_flags, length):
            mmap_write_unlock(mm)
            raise OSError(errno.EAGAIN, "mmap: locking the mapping would exceed RLIMIT_MEMLOCK")
        if fixed:
            if hugetlb_split_check(mm, addr, addr + length):
                mmap_write_unlock(mm)
                raise OSError(errno.EINVAL, "mmap: MAP_FIXED would split a hugetlb mapping "
                              "off a huge page boundary")
        if flags & C.MAP_FIXED_NOREPLACE and \
                mm.mm_mt.find_vma_intersection(addr, addr + length) is not None:
            mmap_write_unlock(mm)
            raise OSError(errno.EEXIST, "mmap: MAP_FIXED_NOREPLACE range is already mapped")
        addr = get_unmapped_area(mm, addr, length, fixed, C.HPAGE_SIZE if huge else C.PAGE_SIZE)
        if addr < 0:
            mmap_write_unlock(mm)
            raise OSError(-addr, "mmap: no free address range of that length")
        # vm_area_alloc.  pymm decides it before the file's mmap_prepare (the
        # hugetlb reservation) and before a MAP_FIXED unmap, so a failure has
        # nothing to undo and leaves an old mapping in place, as 6.12+ does.
        if should_fail(self.kernel, "slab"):
            mmap_write_unlock(mm)
            raise OSError(errno.ENOMEM, "mmap: cannot allocate a VMA")
        resv = None
        if huge:                   # hugetlbfs_file_mmap_prepare: reserve the pages now
            if anon:               # anonymous MAP_HUGETLB memory is an unlinked hugetlbfs file
                file, pgoff = hugetlb_file_setup(self.kernel, length), 0
            err, resv = hugetlbfs_file_mmap_prepare(file, pgoff, length, vm_flags)
            if err:
                mmap_write_unlock(mm)
                raise OSError(-err, "mmap: not enough free huge pages to reserve" if
                              err == -errno.ENOMEM else "mmap: invalid hugetlb mapping")
        elif anon and shared:      # shared anonymous memory is a deleted tmpfs file
            file, pgoff = shmem_zero_setup(self.kernel, length), 0
        vma = mmap_region(mm, addr, length, vm_flags, file, pgoff,
                          (lambda v: hugetlbfs_file_mmap(v, resv)) if huge else None)
        if populate:
            mm_populate_after_write(mm, vma, addr, addr + length)
        else:
            mmap_write_unlock(mm)
        return addr

    @syscall
    def munmap(self, addr, length):
        start, end = self._range("munmap", addr, length)
        mmap_write_lock(self.mm)
        if not munmap_splits_ok(self.mm, start, end):
            mmap_write_unlock(self.mm)
            raise OSError(errno.ENOMEM, "munmap: splitting the mapping would exceed vm.max_map_count")
        err = do_vmi_munmap(self.mm, start, end - start, unlock=True)     # releases mmap_lock
        if err:
            mmap_write_unlock(self.mm)
            raise OSError(-err, "munmap: would split a hugetlb mapping off a 2 MiB boundary")
        return 0

    @syscall
    def mremap(self, old_address, old_size, new_size, flags=0, new_address=0):
        """mremap(2) (mm/mremap.py): shrink, grow in place, or -- with
        MREMAP_MAYMOVE -- move the mapping at ``old_address`` with its pages;
        MREMAP_FIXED moves it to ``new_address`` (unmapping what is there),
        MREMAP_DONTUNMAP leaves the old range mapped and empty.  Returns the
        new address.  EINVAL: bad flags, unaligned addresses, a zero new
        size, FIXED/DONTUNMAP without MAYMOVE, DONTUNMAP resizing, ranges
        that overlap; EFAULT: nothing mapped at ``old_address`` or the old
        range crosses the end of its mapping; ENOMEM: cannot grow in place
        without MAYMOVE, no room, vm.max_map_count; EAGAIN: a locked mapping
        would grow beyond RLIMIT_MEMLOCK."""
        for n, v in (("old_address", old_address), ("old_size", old_size), ("new_size", new_size),
                     ("flags", flags), ("new_address", new_address)):
            _need_int(n, v)
            if v < 0:
                raise OSError(errno.EINVAL, f"mremap: negative {n}")
        return _err(do_mremap(self.mm, old_address, old_size, new_size, flags, new_address), "mremap")

    @syscall
    def mprotect(self, addr, length, prot):
        _need_int("prot", prot)
        start, end = self._range("mprotect", addr, length)
        if prot & ~(C.PROT_READ | C.PROT_WRITE | C.PROT_EXEC):
            raise OSError(errno.EINVAL, f"mprotect: unknown prot bits {prot:#x}")
        if start == end:
            return 0
        return _err(do_mprotect_pkey(self.mm, start, end - start, prot), "mprotect")

    @syscall
    def brk(self, new_brk):
        """brk(2) as the system call (not the libc wrapper): returns the new
        break on success and the current one on failure; brk(0) queries."""
        _need_int("brk", new_brk)
        return sys_brk(self.mm, new_brk)

    # -- mlock -----------------------------------------------------------------------
    @syscall
    def mlock(self, addr, length):
        return self._mlock(addr, length, 0)

    @syscall
    def mlock2(self, addr, length, flags=0):
        _need_int("flags", flags)
        if flags & ~C.MLOCK_ONFAULT:
            raise OSError(errno.EINVAL, f"mlock2: unknown flags {flags:#x}")
        return self._mlock(addr, length, flags)

    def _mlock(self, addr, length, flags):
        start, end = self._range("mlock", addr, length, align_start=False)
        if start == end:
            return 0
        return _err(do_mlock(self.mm, start, end - start, mlock2_flags_to_vm(flags)), "mlock")

    @syscall
    def munlock(self, addr, length):
        start, end = self._range("munlock", addr, length, align_start=False)
        if start == end:
            return 0
        return _err(do_munlock(self.mm, start, end - start), "munlock")

    @syscall
    def mlockall(self, flags):
        _need_int("flags", flags)
        if not flags or flags & ~(C.MCL_CURRENT | C.MCL_FUTURE | C.MCL_ONFAULT) or \
                flags == C.MCL_ONFAULT:
            raise OSError(errno.EINVAL, f"mlockall: invalid flags {flags:#x}")
        return _err(do_mlockall(self.mm, flags), "mlockall")

    @syscall
    def munlockall(self):
        return _err(do_mlockall(self.mm, 0), "munlockall")

    @syscall
    def madvise(self, addr, length, advice):
        _need_int("advice", advice)
        if advice not in VALID_ADVICE:
            raise OSError(errno.EINVAL, f"madvise: unknown advice {advice}")
        start, end = self._range("madvise", addr, length)
        if start == end:
            return 0
        return _err(do_madvise(self.mm, start, end, advice), "madvise")

    @syscall
    def mincore(self, addr, length):
        """mincore(2): one byte per page of [addr, addr+length), bit 0 set
        if the page is resident.  EINVAL: addr not page aligned; ENOMEM: the
        range is not all mapped or leaves the address space."""
        _need_int("addr", addr)
        _need_int("length", length)
        return _err_or(sys_mincore(self.mm, addr, length), "mincore")

    @syscall
    def msync(self, addr, length, flags):
        """msync(2): MS_ASYNC, MS_SYNC (exclusive), MS_INVALIDATE.  EINVAL: bad
        flags or addr not page aligned; ENOMEM: unmapped parts; EBUSY:
        MS_INVALIDATE of locked memory."""
        for n, v in (("addr", addr), ("length", length), ("flags", flags)):
            _need_int(n, v)
        return _err(sys_msync(self.mm, addr, length, flags), "msync")

    # -- resource limits (getrlimit(2)) -------------------------------------------------------
    def getrlimit(self, resource):
        """(soft, hard) of ``resource``; pymm knows RLIMIT_MEMLOCK."""
        if resource not in self.rlimits:
            raise OSError(errno.EINVAL, f"getrlimit: unknown resource {resource!r}")
        return self.rlimits[resource]

    def setrlimit(self, resource, limits):
        """setrlimit(2).  EINVAL: unknown resource or soft > hard; EPERM:
        raising the hard limit without CAP_SYS_RESOURCE."""
        if resource not in self.rlimits:
            raise OSError(errno.EINVAL, f"setrlimit: unknown resource {resource!r}")
        if not isinstance(limits, tuple) or len(limits) != 2 or \
                any(type(x) is not int or not 0 <= x <= C.RLIM_INFINITY for x in limits):
            raise OSError(errno.EINVAL, f"setrlimit: limits must be (soft, hard) ints, got {limits!r}")
        soft, hard = limits
        if soft > hard:
            raise OSError(errno.EINVAL, f"setrlimit: soft limit {soft} above the hard limit {hard}")
        if hard > self.rlimits[resource][1] and "CAP_SYS_RESOURCE" not in self.capabilities:
            raise OSError(errno.EPERM, "setrlimit: raising the hard limit needs CAP_SYS_RESOURCE")
        self.rlimits[resource] = (soft, hard)
        return 0

    # -- process lifetime ---------------------------------------------------------------
    @syscall
    def fork(self):
        child = Process(self.kernel, self.comm, mm=None)
        mm = dup_mm(self.kernel, self.mm, child.pid)
        if not isinstance(mm, MmStruct):
            raise OSError(-mm, "fork: out of memory copying the address space")
        child.mm = mm
        child.make_it_fail = self.make_it_fail
        child.capabilities = set(self.capabilities)
        child.rlimits = dict(self.rlimits)
        child.mempolicy = mpol_dup(self.mempolicy)        # copy_process
        self.kernel._register(child)
        return child

    @syscall
    def exit(self):
        exit_mmap(self.mm)
        pol, self.mempolicy = self.mempolicy, None         # mpol_put_task_policy
        mpol_put(pol)
        self.exited = True
        self.kernel._unregister(self)
        return 0

    # -- NUMA memory policy (mm/mempolicy.py) ----------------------------------------------
    @syscall
    def mbind(self, addr, length, mode, nodes, flags=0):
        """mbind(2): set the policy of [addr, addr+length); with MPOL_MF_MOVE(_ALL)
        migrate the pages that break it; MPOL_MF_STRICT: EIO if some do and stay."""
        return kernel_mbind(self, addr, length, mode, nodes, flags)

    @syscall
    def set_mempolicy(self, mode, nodes):
        """set_mempolicy(2): the policy of this process's future allocations."""
        return kernel_set_mempolicy(self, mode, nodes)

    @syscall
    def get_mempolicy(self, addr=0, flags=0, maxnode=None):
        """get_mempolicy(2) -> (mode, nodes).  flags: MPOL_F_ADDR (the policy
        of the VMA at ``addr``; MPOL_DEFAULT if it has none), MPOL_F_NODE
        (with MPOL_F_ADDR: the node of the page at ``addr``, faulted in; alone:
        the next interleave node), MPOL_F_MEMS_ALLOWED (the allowed nodes).
        EINVAL: bad flags, ``addr`` without MPOL_F_ADDR, MPOL_F_NODE alone
        without an interleave policy, ``maxnode`` below the number of nodes;
        EFAULT: no mapping at ``addr``."""
        return kernel_get_mempolicy(self, addr, flags, maxnode)

    @syscall
    def migrate_pages(self, old_nodes, new_nodes):
        """migrate_pages(2) on this process: move its pages from old_nodes to
        new_nodes; returns the number of pages that could not be moved."""
        return kernel_migrate_pages(self, old_nodes, new_nodes)

    @syscall
    def move_pages(self, addrs, nodes, flags=0):
        """move_pages(2) on this process: move the page at addrs[i] to nodes[i]
        (nodes=None: only report where each page is).  Returns the status of
        each page: its node, or -errno (-ENOENT not present, -EFAULT unmapped or
        the zero page, -EACCES shared without MPOL_MF_MOVE_ALL, -EBUSY)."""
        return kernel_move_pages(self, addrs, nodes, flags)

    # -- user-space accesses ---------------------------------------------------------------
    # Not system calls: a load or store runs in user mode on the calling
    # thread's CPU and enters the kernel only when it faults (uaccess.py).
    def store(self, addr, data):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("store: data must be bytes")
        _need_int("addr", addr)
        if self.exited:
            raise OSError(errno.ESRCH, f"store: process {self.pid} has exited")
        data = bytes(data)
        if not data:
            return 0
        user_access(self, addr, len(data), True, data)
        return len(data)

    def load(self, addr, length):
        _need_int("addr", addr)
        _need_int("length", length)
        if self.exited:
            raise OSError(errno.ESRCH, f"load: process {self.pid} has exited")
        if length < 0:
            raise OSError(errno.EINVAL, "load: negative length")
        if length == 0:
            return b""
        return user_access(self, addr, length, False, None)

    # -- helpers ---------------------------------------------------------------------------
    def _range(self, what, addr, length, align_start=True):
        _need_int("addr", addr)
        _need_int("length", length)
        if align_start and addr & (C.PAGE_SIZE - 1):
            raise OSError(errno.EINVAL, f"{what}: address {addr:#x} is not page aligned")
        if length < 0:      # a huge size_t: the range wraps
            raise OSError(_NEGATIVE_LENGTH_ERRNO.get(what, errno.EINVAL), f"{what}: negative length")
        if length == 0 and what == "munmap":
            raise OSError(errno.EINVAL, "munmap: length is 0")
        start = addr & ~(C.PAGE_SIZE - 1)
        end = (addr + length + C.PAGE_SIZE - 1) & ~(C.PAGE_SIZE - 1)
        if end > C.TASK_SIZE or start < 0:
            raise OSError(errno.EINVAL if what in ("munmap",) else errno.ENOMEM,
                          f"{what}: range outside the user address space")
        return start, end
