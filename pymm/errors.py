"""pymm's exceptions: one root, each subclass says who raises it and why."""
import errno as _errno


class PymmError(Exception):
    """Root of every error pymm raises on purpose."""


class LockUsageError(PymmError, RuntimeError):
    """Raised by a lock when it is misused in a way that would corrupt it:
    releasing a lock this thread does not hold, downgrading a lock not held for
    write, a subclass out of range, an unknown lock kind.  The lock itself is
    left untouched."""


class LockdepError(PymmError):
    """Raised by the validator for a report, only when it was configured with
    ``lockdep.configure(raise_on_report=True)``.  Carries the report."""

    def __init__(self, report):
        super().__init__(report.title)
        self.report = report


class SegmentationFault(OSError, PymmError):
    """A user access outside any mapping or against its protection (SIGSEGV)."""

    def __init__(self, addr, why="bad access"):
        super().__init__(_errno.EFAULT, f"segmentation fault at {addr:#x}: {why}")
        self.addr = addr


class BusError(OSError, PymmError):
    """A user access whose fault returned VM_FAULT_SIGBUS (SIGBUS): beyond the
    end of a file, no huge page for a hugetlb fault (an empty pool, a failed
    or injected dequeue), a private hugetlb page its owner took back...
    ``why`` says which, as the fault saw it (memory.fault_why); ``addr`` is
    the faulting address."""

    def __init__(self, addr, why="VM_FAULT_SIGBUS"):
        super().__init__(_errno.EFAULT, f"bus error at {addr:#x}: {why}")
        self.addr = addr
        self.why = why
