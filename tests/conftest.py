"""Fixtures shared by every test package."""
import queue
import threading

import pytest


class Cpu:
    """A thread that runs what it is given, one call at a time: a second CPU
    whose TLB (and per-VMA read locks, RCU sections...) survives between
    calls, driven step by step from the test's own thread."""

    def __init__(self, name="cpu1"):
        self.q, self.r = queue.Queue(), queue.Queue()
        self.t = threading.Thread(target=self._run, daemon=True, name=name)
        self.t.start()

    def _run(self):
        while True:
            fn = self.q.get()
            if fn is None:
                return
            try:
                self.r.put((True, fn()))
            except BaseException as e:         # noqa: BLE001 -- handed back to the caller
                self.r.put((False, e))

    def __call__(self, fn):
        self.q.put(fn)
        ok, v = self.r.get(timeout=30)
        if not ok:
            raise v
        return v

    def stop(self):
        self.q.put(None)
        self.t.join(10)


@pytest.fixture
def cpus():
    """``cpus(name)`` makes a Cpu; every one made is stopped after the test."""
    made = []

    def make(name="cpu1"):
        c = Cpu(name)
        made.append(c)
        return c
    yield make
    for c in made:
        c.stop()


@pytest.fixture
def cpu1(cpus):
    return cpus("cpu1")
