"""Findings: what every detector produces, and where they go.

A finding has a kind (``use-after-free``, ``lockdep``, ``bad-page-state``,
``data-corruption``, ``deadlock``, ``hung-task``, ``assertion``, ``rcu``,
``rss-counter``), a kernel-style headline (``title``) and the full report
(``text``).  ``report()`` records it on the kernel of the calling task (or the
kernel passed), logs it, and hands it to the controlled scheduler when one is
running, which ends the schedule with that finding.
"""
import threading
import weakref

from loguru import logger

from ..context import current
from ..sched import report_finding
from . import stackdepot

KINDS = ("use-after-free", "lockdep", "bad-page-state", "data-corruption", "deadlock",
         "hung-task", "assertion", "rcu", "rss-counter")


class Finding:
    __slots__ = ("kind", "title", "text", "data")

    def __init__(self, kind, title, text, data=None):
        self.kind, self.title, self.text, self.data = kind, title, text, data or {}

    def to_dict(self):
        return {"kind": self.kind, "title": self.title, "text": self.text,
                "pymm_only": bool(self.data.get("pymm_only"))}

    def __repr__(self):
        return f"<Finding {self.kind}: {self.title}>"


_last_kernel = None
_tls = threading.local()


def set_default_kernel(k):
    global _last_kernel
    _last_kernel = weakref.ref(k)


def current_kernel():
    t = current()
    if t is not None:
        return t.kernel
    return _last_kernel() if _last_kernel is not None else None


# -- checks the kernel never had ------------------------------------------------------
# Findings from pymm's own checks carry ``"pymm_only": True`` in their data
# (and in the report JSON); their titles are remembered here so that a finding
# known only by its title (a controlled run's failure) is labelled too.  A
# Kernel built with ``pymm_checks=False`` (CLI: ``--no-pymm-checks``) runs
# none of them: what is left is what the kernel itself would have seen.
_pymm_only_titles = set()
pymm_checks_default = True


def set_pymm_checks_default(on):
    """The ``pymm_checks`` of Kernels built without one (the CLI's switch)."""
    global pymm_checks_default
    pymm_checks_default = bool(on)


def pymm_checks(kernel=None):
    """Do pymm's own checks run?  (Kernel option ``pymm_checks``.)"""
    k = kernel or current_kernel()
    return getattr(k, "pymm_checks", pymm_checks_default) if k is not None else pymm_checks_default


def pymm_only_title(title):
    """Register (and return) the title of a pymm-only check's finding."""
    _pymm_only_titles.add(title)
    return title


def is_pymm_only(title):
    return title in _pymm_only_titles


def report(kind, title, text, kernel=None, data=None):
    """Record a finding.  Context: any; never takes a pymm lock (it may be
    called with any lock held, from inside a poisoned-object access)."""
    if data and data.get("pymm_only"):
        _pymm_only_titles.add(title)
    text = _with_headline(title, text)
    k = kernel or current_kernel()
    context = getattr(k, "report_context", None)
    if context is not None:
        text = f"{text}\n{context()}"
    f = Finding(kind, title, text, data)
    new = k.add_finding(f) if k is not None else True
    if new:
        logger.opt(lazy=True).warning("{}", lambda: text)
        _to_scheduler(f)
    return f


def report_pymm_check(kind, title, lines, kernel=None):
    """A check of pymm's own (``title`` registered with ``pymm_only_title``)
    failed: its report is the title, ``lines`` (what it saw) and the stack of
    the check's caller.  Context: as ``report``."""
    text = "\n".join([title, *lines, "Call Trace:", stackdepot.format(stackdepot.save(3), "  ")])
    return report(kind, title, text, kernel=kernel, data={"pymm_only": True})


def _with_headline(title, text):
    """Every report reads like a kernel splat: it names its headline (the
    line the kernel's report parsers key on) and carries a Call Trace.  A
    detector that passed only a message gets both added here."""
    if title in text:
        return text
    return f"{title}\n{text}\nCall Trace:\n" + stackdepot.format(stackdepot.save(3), " ")


def _to_scheduler(f):
    report_finding(f.kind, f.title, f.text)
