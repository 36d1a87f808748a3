"""pymm's pytest plugin (entry point ``pytest11``).

Fixtures:
- ``lockdep``: the validator, reset before and after the test, with its
  settings restored.
- ``kernel``: a fresh ``pymm.Kernel``; after the test, any finding whose kind
  the test did not declare with ``@pytest.mark.pymm_expect("kind", ...)``
  fails the test and prints the finding.

(The stress marker, options and replay support arrive with issue 7.)
"""
import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "pymm_expect(*kinds): finding kinds this test expects the kernel fixture to report")


@pytest.fixture
def lockdep():
    from pymm.locking import lockdep as ld
    prev = ld.configure()
    was_on = ld.is_enabled()
    ld.enable()
    ld.reset()
    yield ld
    ld.reset()
    ld.configure(**prev)
    if not was_on:
        ld.disable()


@pytest.fixture
def kernel(request):
    import pymm
    from pymm.locking import lockdep as ld
    ld.reset()
    k = pymm.Kernel()
    yield k
    expected = set()
    for m in request.node.iter_markers("pymm_expect"):
        expected.update(m.args)
    bad = [f for f in k.findings() if f.kind not in expected]
    if bad:
        pytest.fail("unexpected pymm findings:\n\n" + "\n\n".join(f.text for f in bad), pytrace=False)
