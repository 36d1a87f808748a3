"""``pymm experiment populate``: drop-retake, downgrade and revalidate under
one free-mode workload, side by side, as a table and as JSON."""
import json
import re

import pytest

from pymm.experiment import EXPERIMENTS

VARIANTS = ["drop-retake", "downgrade", "revalidate"]
CALLS = ["mmap+populate", "fault (reader)", "munmap (writer)"]


@pytest.fixture(scope="module")
def populate_experiment(tmp_path_factory):
    from .conftest import run_pymm
    path = tmp_path_factory.mktemp("exp") / "exp.json"
    res = run_pymm("experiment", "populate", "--seconds", 0.5, "--seed", 1, "--json", path)
    assert res.rc == 0, res.err
    return res.out, json.loads(path.read_text())


def test_table_is_side_by_side(populate_experiment):
    out, _ = populate_experiment
    lines = out.splitlines()
    assert lines[0].startswith("experiment populate: drop-retake, downgrade, revalidate -- 0.5 s each, seed 1")
    assert lines[1].split() == VARIANTS                         # one column per variant
    labels = {re.split(r"\s{2,}", ln.strip())[0] for ln in lines[3:]}
    want = {"findings", "syscalls/s", "mmap_lock write contentions", "mmap_lock read contentions"}
    want |= {f"{c} {q} (us)" for c in CALLS for q in ("p50", "p99", "max")}
    assert want <= labels
    for ln in lines[3:]:
        assert len(re.split(r"\s{2,}", ln.strip())) == 1 + len(VARIANTS), ln


def test_json_has_the_three_variants(populate_experiment):
    _, doc = populate_experiment
    assert doc["experiment"] == "populate" and doc["variant_key"] == "populate"
    assert doc["seconds_per_variant"] == 0.5 and doc["seed"] == 1
    assert list(doc["variants"]) == VARIANTS == list(EXPERIMENTS["populate"][1])
    assert "_raw" not in doc
    for v, r in doc["variants"].items():
        assert r["syscalls_per_s"] > 0 and r["seconds"] >= 0.5
        assert set(r["latency_us"]) == set(CALLS), v
        for call, lat in r["latency_us"].items():
            assert lat["n"] > 0, (v, call)
            assert 0 <= lat["p50"] <= lat["p99"] <= lat["max"], (v, call, lat)
        for rw in ("write", "read"):
            ml = r["mmap_lock"][rw]
            assert ml["acquisitions"] > 0 and 0 <= ml["contentions"] <= ml["acquisitions"], (v, rw, ml)
    # the fixed designs run clean and stop on time (the buggy one may leave a
    # thread blocked on a lock that a crashed call never released)
    for v in ("downgrade", "revalidate"):
        assert doc["variants"][v]["findings"] == [], v
        assert doc["variants"][v]["stuck_threads"] == [], v


def test_table_numbers_come_from_the_json(populate_experiment):
    out, doc = populate_experiment
    rows = {re.split(r"\s{2,}", ln.strip())[0]: re.split(r"\s{2,}", ln.strip())[1:]
            for ln in out.splitlines()[3:]}
    as_int = lambda s: int(s.replace(",", ""))
    for i, v in enumerate(VARIANTS):
        r = doc["variants"][v]
        assert as_int(rows["mmap_lock write contentions"][i]) == r["mmap_lock"]["write"]["contentions"]
        assert as_int(rows["mmap_lock read contentions"][i]) == r["mmap_lock"]["read"]["contentions"]
        if not r["findings"]:
            assert rows["findings"][i] == "none"
        else:
            kinds = {f.split(":")[0] for f in r["findings"]}
            assert {c.rsplit(" x", 1)[0] for c in rows["findings"][i].split(", ")} == kinds
