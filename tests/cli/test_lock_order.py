"""The lock order written at the top of pymm/mm/rmap.py, as data, against what
lockdep observes -- and ``pymm lockdep-graph``, which draws the observed graph
with the edges that contradict that order in red."""
import re

import pytest

from pymm import stress
from pymm.locking import lockdep
from pymm.mm.rmap import HUGETLB_LOCK_ORDER, LOCK_ORDER_EXCEPTIONS, LOCK_ORDER_TREE, lock_order_pairs

SCENARIOS = [s for s in stress.all_scenarios() if s != "mix"]   # mix is all of them at once
FIXED = [(s, v) for s in SCENARIOS for v in stress.get_scenario(s).variants()
         if stress.get_scenario(s).expected(v) == "clean"]
EDGE = re.compile(r'^  "(?P<a>[^"]+)" -> "(?P<b>[^"]+)" \[(?P<attrs>.*)\];$')


def base(cls):
    """A lockdep class name without its "/subclass" suffix."""
    return cls.split("/")[0]


def contradictions(deps, documented):
    """Observed edges A -> B whose reverse B -> A the documented order implies
    (less the documented exceptions, matched with their subclass)."""
    return sorted((a, b) for a, b, _ in deps
                  if (base(b), base(a)) in documented and (a, b) not in LOCK_ORDER_EXCEPTIONS)


# -- the data ------------------------------------------------------------------------------

def test_pairs_follow_the_tree_transitively():
    pairs = lock_order_pairs()
    assert ("&mm->mmap_lock", "&anon_vma->rwsem") in pairs
    assert ("&mm->mmap_lock", "&zone->lock") in pairs                 # grandchild of a grandchild
    assert ("&anon_vma->rwsem", "ptlock_ptr(ptdesc)") in pairs
    assert ("hugetlb_fault_mutex", "folio_lock#hugetlbfs") in pairs   # the hugetlbfs order
    assert ("&mm->mmap_lock", "folio_lock#anon") in pairs             # a rank of two classes
    assert ("folio_lock#pagecache", "&anon_vma->rwsem") in pairs
    assert ("&mm->mmap_lock", "vm_lock") in pairs                     # the per-VMA lock
    assert ("vm_lock", "folio_lock#anon") in pairs                    # (a fault waits on folios)
    assert ("vm_lock", "&mapping->i_mmap_rwsem") in pairs             # vma_prepare
    assert ("&zone->lock", "&mm->mmap_lock") not in pairs
    assert ("&lruvec->lru_lock", "&zone->lock") not in pairs          # siblings: no order
    assert all(a != b for a, b in pairs)


def names_in_tree(nodes):
    for name, children in nodes:
        yield from name if isinstance(name, tuple) else (name,)
        yield from names_in_tree(children)


def test_pairs_cover_every_documented_class():
    classes = {c for p in lock_order_pairs() for c in p}
    assert classes == set(names_in_tree(LOCK_ORDER_TREE)) | set(HUGETLB_LOCK_ORDER)


def test_documented_order_is_acyclic():
    """An order that allows A -> B and B -> A is no order: the comparison
    below would flag every edge between A and B, whichever way it goes."""
    pairs = lock_order_pairs()
    both = sorted((a, b) for a, b in pairs if (b, a) in pairs and a < b)
    assert both == []


# -- lockdep's observations against the data --------------------------------------------------

@pytest.mark.parametrize("scenario,variant", FIXED, ids=[f"{s}-{v}" for s, v in FIXED])
def test_observed_dependencies_follow_the_documented_order(scenario, variant):
    """Run a fixed variant in free mode briefly; no dependency lockdep saw
    may go against the order at the top of rmap.py."""
    seconds = 0.3
    r = stress.run_free(scenario, variant, seed=0, seconds=seconds)
    while r.ops == 0 and seconds < 5:   # a loaded machine may spend the budget starting up
        seconds *= 2
        r = stress.run_free(scenario, variant, seed=0, seconds=seconds)
    deps = lockdep.dependencies()
    documented = lock_order_pairs()
    assert r.ops > 0 and deps, "the run took no nested locks: nothing was compared"
    agreeing = [(a, b) for a, b, _ in deps if (base(a), base(b)) in documented]
    assert agreeing, f"no observed edge is in the documented order (class names drifted?): {deps}"
    assert contradictions(deps, documented) == []


def test_contradiction_check_sees_subclasses():
    documented = {("&mm->mmap_lock", "&anon_vma->rwsem")}
    deps = [("&anon_vma->rwsem/1", "&mm->mmap_lock", {"EN"}),
            ("&mm->mmap_lock", "&anon_vma->rwsem", {"EN"}),
            ("x", "y", {"EN"})]
    assert contradictions(deps, documented) == [("&anon_vma->rwsem/1", "&mm->mmap_lock")]


# -- pymm lockdep-graph ------------------------------------------------------------------------

def parse_dot(text):
    lines = text.splitlines()
    assert lines[0] == "digraph lockdep {" and lines[-1] == "}"
    edges = {}
    for ln in lines[1:-1]:
        m = EDGE.match(ln)
        if m:
            edges[m["a"], m["b"]] = m["attrs"]
        else:
            assert "->" not in ln, f"edge line not in the expected form: {ln!r}"
    return edges


def test_lockdep_graph_of_populate(cli, tmp_path):
    res = cli("lockdep-graph", "--scenario", "populate", "--seconds", "0.2")
    assert res.rc == 0, res.err
    edges = parse_dot(res.out)
    assert ("&mm->mmap_lock", "ptlock_ptr(ptdesc)") in edges          # every fault nests these
    for (a, b), attrs in edges.items():
        assert re.match(r'label="[ES][RN](,[ES][RN])*"', attrs), attrs
        assert "color=red" not in attrs, (a, b)
    # -o writes the same graph (edge set; the run is free mode, so labels may vary)
    res = cli("lockdep-graph", "--scenario", "populate", "--seconds", "0.2", "-o", tmp_path / "g.dot")
    assert res.rc == 0 and res.out == ""
    assert ("&mm->mmap_lock", "ptlock_ptr(ptdesc)") in parse_dot((tmp_path / "g.dot").read_text())


def test_lockdep_graph_marks_contradicting_edges_red(cli, monkeypatch):
    fake = [("&mm->mmap_lock", "&anon_vma->rwsem", {"EN"}),            # documented order
            ("&anon_vma->rwsem", "&mm->mmap_lock", {"SR"}),            # against it
            ("ptlock_ptr(ptdesc)/1", "&mm->mmap_lock", {"EN"}),        # against it, with a subclass
            ("cli_test_a", "cli_test_b", {"EN"})]                      # undocumented classes
    ran = []
    monkeypatch.setattr(stress, "run_free", lambda name, variant, *a, **kw: ran.append((name, variant)))
    monkeypatch.setattr(lockdep, "dependencies", lambda: fake)
    res = cli("lockdep-graph")
    assert res.rc == 0, res.err
    assert ran == [(s, [v for v in stress.get_scenario(s).variants()
                        if stress.get_scenario(s).expected(v) == "clean"][-1]) for s in SCENARIOS]
    edges = parse_dot(res.out)
    assert set(edges) == {(a, b) for a, b, _ in fake}
    red = {e for e, attrs in edges.items() if "color=red" in attrs}
    assert red == {("&anon_vma->rwsem", "&mm->mmap_lock"), ("ptlock_ptr(ptdesc)/1", "&mm->mmap_lock")}
    assert 'label="SR"' in edges["&anon_vma->rwsem", "&mm->mmap_lock"]
