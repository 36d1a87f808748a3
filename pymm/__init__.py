"""pymm: an in-process emulator of the Linux memory manager's locking."""
from loguru import logger as _logger

_logger.disable("pymm")   # a library never logs unless the application enables it

from .errors import BusError, LockdepError, LockUsageError, PymmError, SegmentationFault  # noqa: E402

__all__ = ["PymmError", "LockUsageError", "LockdepError", "SegmentationFault", "BusError"]
