"""lock_stat: per-class contention and hold times (Documentation/locking/lockstat.rst).

Off by default (it costs a clock read per lock event); ``enable()``
registers a listener on the choke point.  Per class it keeps, as
/proc/lock_stat does, separate -W and -R rows for reader-writer locks:

- contentions and waittime min/max/total/avg: from ``contended`` (the first
  try failed) to ``acquired``;
- acquisitions and holdtime min/max/total/avg: from ``acquired`` to
  ``release`` (trylocks count as acquisitions with no wait);
- the top call sites that contended (LOCKSTAT_POINTS of them).

Times are microseconds, from ``time.perf_counter``.  Classes are keyed by
name and lock kind (subclasses share their class's row: the events that
end a hold do not carry the subclass).
"""
import threading
from time import perf_counter

from . import events as _ev
from .lockdep_report import caller_site

__all__ = ["enable", "disable", "is_enabled", "reset", "snapshot", "format"]

LOCKSTAT_POINTS = 4     # contention points kept per row, as in the kernel


class _Time:
    """``struct lock_time``: min/max/total/count of one duration (seconds)."""

    __slots__ = ("min", "max", "total", "nr")

    def __init__(self):
        self.min = self.max = self.total = 0.0
        self.nr = 0

    def add(self, t):
        if t > self.max:
            self.max = t
        if t < self.min or not self.nr:
            self.min = t
        self.total += t
        self.nr += 1

    def as_us(self, prefix):
        us = 1e6
        return {f"{prefix}_min": self.min * us, f"{prefix}_max": self.max * us,
                f"{prefix}_total": self.total * us,
                f"{prefix}_avg": (self.total / self.nr * us) if self.nr else 0.0}


class _Row:
    __slots__ = ("name", "cls", "kind", "contentions", "wait", "acquisitions", "hold", "points")

    def __init__(self, name, cls, kind):
        self.name = name
        self.cls = cls
        self.kind = kind
        self.contentions = 0
        self.wait = _Time()
        self.acquisitions = 0
        self.hold = _Time()
        self.points = {}        # contending call site -> count


_lock = threading.Lock()        # protects _rows (a leaf: never held across a lock event)
_rows = {}                      # (lock key, "W"/"R"/"") -> _Row
_tls = threading.local()        # .wait = (lock, start); .holds = [[lock, read, start], ...]
_enabled = False


def _row(lock, read):
    rw = "" if lock.readers is None else ("R" if read else "W")
    k = (lock.key, rw)
    r = _rows.get(k)
    if r is None:
        name = lock.key.name
        r = _rows[k] = _Row(f"{name}-{rw}" if rw else name, name, lock.KIND)
    return r


def _holds():
    try:
        return _tls.holds
    except AttributeError:
        _tls.holds = []
        _tls.wait = None
        return _tls.holds


def _contended(lock, read):
    now = perf_counter()
    _holds()
    _tls.wait = (lock, now)
    site = caller_site()    # slow path only: the thread is about to block anyway
    with _lock:
        r = _row(lock, read)
        r.contentions += 1
        r.points[site] = r.points.get(site, 0) + 1


def _acquired(lock, read, trylock, subclass, nest_lock):
    now = perf_counter()
    holds = _holds()
    w = _tls.wait
    waited = None
    if w is not None and w[0] is lock:
        waited = now - w[1]
        _tls.wait = None
    holds.append([lock, read, now])
    with _lock:
        r = _row(lock, read)
        r.acquisitions += 1
        if waited is not None:
            r.wait.add(waited)


def _aborted(lock, read):
    _holds()
    _tls.wait = None


def _release(lock, read):
    now = perf_counter()
    holds = _holds()
    for i in range(len(holds) - 1, -1, -1):
        if holds[i][0] is lock:
            _, rd, start = holds.pop(i)
            with _lock:
                _row(lock, rd).hold.add(now - start)
            return
    # taken before lock_stat was enabled: no hold time to account


class _Listener:
    contended = staticmethod(_contended)
    acquired = staticmethod(_acquired)
    aborted = staticmethod(_aborted)
    release = staticmethod(_release)

    def __repr__(self):
        return "<lock_stat>"


_listener = _Listener()


def enable():
    """Start collecting (after lockdep on the choke point)."""
    global _enabled
    _enabled = True
    _ev.register(_listener)


def disable():
    global _enabled
    _enabled = False
    _ev.unregister(_listener)


def is_enabled():
    return _enabled


def reset():
    """Forget every row (``echo 0 > /proc/lock_stat``)."""
    with _lock:
        _rows.clear()


def snapshot():
    """{row name: {class, kind, contentions, waittime_min/max/total/avg,
    acquisitions, holdtime_min/max/total/avg, contention_points}}; times in
    microseconds, contention points as [{"site", "count"}], most first."""
    with _lock:
        rows = list(_rows.values())
        out = {}
        for r in rows:
            d = {"class": r.cls, "kind": r.kind, "contentions": r.contentions}
            d.update(r.wait.as_us("waittime"))
            d["acquisitions"] = r.acquisitions
            d.update(r.hold.as_us("holdtime"))
            top = sorted(r.points.items(), key=lambda kv: (-kv[1], kv[0]))[:LOCKSTAT_POINTS]
            d["contention_points"] = [{"site": s, "count": n} for s, n in top]
            out[r.name if r.name not in out else f"{r.name} ({r.kind})"] = d
    return out


_COLS = ("contentions", "waittime_min", "waittime_max", "waittime_total", "waittime_avg",
         "acquisitions", "holdtime_min", "holdtime_max", "holdtime_total", "holdtime_avg")


def format(snap=None):
    """/proc/lock_stat-shaped text, most contended classes first."""
    snap = snapshot() if snap is None else snap
    heads = [c.replace("_", "-") for c in _COLS]
    width = max([len("class name")] + [len(n) + 1 for n in snap])
    sep = "-" * (width + sum(len(h) + 2 for h in heads))
    lines = ["lock_stat version 0.4 (pymm; times in microseconds)", sep,
             "class name".rjust(width) + "".join(h.rjust(len(h) + 2) for h in heads), sep]
    order = sorted(snap.items(), key=lambda kv: (-kv[1]["contentions"], -kv[1]["acquisitions"], kv[0]))
    for name, d in order:
        cells = []
        for c, h in zip(_COLS, heads):
            v = d[c]
            cells.append((f"{v:.2f}" if isinstance(v, float) else str(v)).rjust(len(h) + 2))
        lines.append(f"{name}:".rjust(width) + "".join(cells))
        if d["contention_points"]:
            lines.append("")
            for p in d["contention_points"]:
                lines.append(f"{name}".rjust(width) + f"{p['count']:>14}  [{p['site']}]")
            lines.append("")
    lines.append(sep)
    return "\n".join(lines) + "\n"
