"""pymm: an in-process emulator of the Linux memory manager's locking.

    import pymm
    k = pymm.Kernel(nodes=2)
    p = k.spawn("a")
    addr = p.mmap(0, 4 * pymm.PAGE_SIZE, pymm.PROT_READ | pymm.PROT_WRITE,
                  pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
    p.store(addr, b"hello")
"""
from loguru import logger as _logger

_logger.disable("pymm")   # a library never logs unless the application enables it

from .constants import *  # noqa: E402,F401,F403
from .constants import __all__ as _constants_all  # noqa: E402
from .errors import BusError, LockdepError, LockUsageError, PymmError, SegmentationFault  # noqa: E402
from .kernel import Kernel  # noqa: E402
from .fs.shmem import File  # noqa: E402
from .task import Process  # noqa: E402
from .scenarios.base import Scenario  # noqa: E402
from . import variants  # noqa: E402,F401  pymm.variants.register(...) for one's own keys

__all__ = ["Kernel", "Process", "File", "Scenario", "PymmError", "LockUsageError", "LockdepError",
           "SegmentationFault", "BusError"] + list(_constants_all)
