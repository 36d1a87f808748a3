"""The bench's VMA tree: it builds more one-page VMAs than vm.max_map_count
allows by default (100,000 > 65,530), so it raises the sysctl as a user would
(`sysctl -w vm.max_map_count`); the lookup it times finds the right VMA."""
from pymm import constants as C
from pymm.benchmarks.mm import build_vmas, vma_lookup_ns


def test_more_vmas_than_the_default_max_map_count(monkeypatch):
    monkeypatch.setattr(C, "DEFAULT_MAX_MAP_COUNT", 100)
    k, p, base = build_vmas(300)
    try:
        assert k.sysctl("vm.max_map_count") >= 300
        assert vma_lookup_ns(p, base, 300, 200, repeat=1) > 0
        assert vma_lookup_ns(p, base, 300, 200, repeat=1, tree_only=True) > 0
    finally:
        p.exit()
