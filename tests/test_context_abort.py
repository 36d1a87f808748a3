"""A thread the scheduler unwinds (SchedAbort) inside a system call that
holds a lock does not "return to user space": no lock-held report replaces
the abort (which a program's ``except Exception`` would then swallow)."""
import pytest

from pymm.context import _KernelContext
from pymm.locking import Mutex
from pymm.sched._core import SchedAbort


def test_abort_inside_a_syscall_is_not_a_user_return(kernel):
    p = kernel.spawn("a")
    m = Mutex("ctx_abort_test_mutex")
    with pytest.raises(SchedAbort):
        with _KernelContext(p):
            m.lock()
            raise SchedAbort()
    m.unlock()
