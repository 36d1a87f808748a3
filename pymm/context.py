"""Task context: ``current`` and what every layer needs of a task.

The kernel keeps ``current`` at the bottom (asm/current.h, linux/sched.h) so
that mm, fs and the detectors can ask "which task am I?" without depending on
the system-call layer above them.  pymm does the same: this module imports
nothing of mm, fs, debug, the kernel or the system calls (only the locking
layer, for the task's alloc_lock and the return-to-user lockdep check), and
``pymm.task`` (Process and its system calls) builds on it.

Any Python thread may run "in kernel context" as a task for the duration of a
system call (``_KernelContext``); ``current()`` returns that task, or None in
user space.
"""
import threading

from .locking import SpinLock, lockdep


class _TaskLocal(threading.local):
    """The calling thread's task.  A class attribute is the default, so
    reading it in a thread that never set it is a plain attribute lookup
    (``getattr(local, name, None)`` raises and catches an AttributeError
    inside: ~0.7 us, on every ``current()`` in user space)."""
    task = None


_tls = _TaskLocal()


def current():
    """The task the calling thread is running as, or None (user space)."""
    return _tls.task


def current_kernel():
    t = _tls.task
    return t.kernel if t is not None else None


class _KernelContext:
    """Enter kernel context as ``task``; the outermost exit runs the
    return-to-user lockdep check, unless ``user_return`` is False (a fault
    taken by kernel code, e.g. copy_to_user under a lock, goes back to that
    code, not to user space)."""

    __slots__ = ("task", "prev", "user_return")

    def __init__(self, task, user_return=True):
        self.task = task
        self.user_return = user_return

    def __enter__(self):
        self.prev = _tls.task
        _tls.task = self.task

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and not isinstance(exc, Exception):
            # The scheduler is unwinding the thread (SchedAbort, a
            # BaseException): no return to user space, nothing to check --
            # a "lock held" report here would replace the abort with an
            # ordinary exception that the program may catch and go on.
            _tls.task = self.prev
            return
        if self.prev is None and self.user_return:
            works = self.task.task_works
            while works:                  # task_work_run(): e.g. the final fput
                works.pop(0)()
        _tls.task = self.prev
        if self.prev is None and self.user_return and lockdep._enabled:
            lockdep.lockdep_sys_exit()


def task_work_add(fn):
    """Run ``fn`` when the current task returns to user space (task_work_add
    with TWA_RESUME), or now if there is no current task."""
    t = current()
    if t is None:
        fn()
    else:
        t.task_works.append(fn)


class Task:
    """A task without an mm (the kernel's own threads; kernel code that a
    thread in no process runs -- file operations, reclaim -- runs as that
    thread's kernel task, Kernel.kernel_task).  ``pid``: given for the
    per-thread "swapper/N" tasks (pid 0), else allocated."""

    def __init__(self, kernel, name, mm=None, pid=None):
        self.kernel = kernel
        self.pid = kernel.alloc_pid() if pid is None else pid
        self.comm = name
        self.mm = mm
        self.exited = False
        self.make_it_fail = False   # /proc/PID/make-it-fail: the fault-injection task filter
        self.task_works = []
        self.tlb_ubc = None          # rmap.TlbflushUnmapBatch of batched unmaps (reclaim)
        self.fault_why = None        # why the fault in progress fails (memory.fault_why)
        # NUMA policy (mm/mempolicy.py): None is the system default; replaced
        # under alloc_lock (task_lock); il_prev is the last node dynamic
        # interleave used.
        self.mempolicy = None
        self.il_prev = -1
        self.alloc_lock = SpinLock("&p->alloc_lock")

    def __repr__(self):
        return f"<{type(self).__name__} {self.comm}[{self.pid}]>"
