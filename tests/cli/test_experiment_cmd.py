"""``pymm experiment``: locking designs side by side, in virtual time by
default (deterministic, kernel-calibrated), as a table, JSON and a trace."""
import json
import re

import pytest

from pymm import experiment
from pymm.experiment import EXPERIMENTS

VARIANTS = ["drop-retake", "downgrade", "revalidate"]
OPS = ["mmap+populate", "fault (reader)", "munmap (writer)"]
ARGS = ("experiment", "populate", "--duration-ms", "0.3", "--seeds", "2", "--seed", "1")


@pytest.fixture(scope="module")
def populate_experiment(tmp_path_factory):
    from .conftest import run_pymm
    d = tmp_path_factory.mktemp("exp")
    res = run_pymm(*ARGS, "--json", d / "a.json", "--trace", d / "trace.json", timeout=300)
    assert res.rc == 0, res.err
    return res.out, (d / "a.json").read_bytes(), json.loads((d / "trace.json").read_text()), d


def test_table_is_side_by_side(populate_experiment):
    out, *_ = populate_experiment
    lines = out.splitlines()
    assert lines[0].startswith("experiment populate: drop-retake, downgrade, revalidate -- "
                               "virtual time, 0.3 ms x 2 seed(s) from 1, 4 CPUs")
    assert lines[1].split() == VARIANTS                         # one column per design
    rows = [ln for ln in lines[3:] if ln.strip() and not ln.startswith("  *") and "trace written" not in ln]
    labels = {re.split(r"\s{2,}", ln.strip())[0] for ln in rows}
    want = {"findings", "throughput (ops/s)", "mmap_lock write hold max (us)",
            "mmap_lock read wait max (us)", "mmap_lock contentions"}
    want |= {f"{c} {q} (us)" for c in OPS for q in ("p50", "p99", "max")}
    assert want <= labels


def test_json_has_the_pinned_keys(populate_experiment):
    _, raw, _, _ = populate_experiment
    doc = json.loads(raw)
    assert doc["experiment"] == "populate" and doc["variant_key"] == "populate"
    assert doc["clock"] == "virtual" and doc["cpus"] == 4 and doc["seeds"] == 2
    assert set(doc["cost_model"]) >= {"copy_page", "zap_page", "lock", "wakeup"}
    assert all(isinstance(c["ns"], (int, float)) and c["source"] for c in doc["cost_model"].values())
    assert list(doc["variants"]) == VARIANTS == list(EXPERIMENTS["populate"].variants)
    for v, r in doc["variants"].items():
        assert set(r) >= {"findings", "throughput_ops_per_s", "latency_us", "mmap_lock"}
        assert r["throughput_ops_per_s"]["mean"] > 0 and r["throughput_ops_per_s"]["ci95"] >= 0
        assert set(r["latency_us"]) >= set(OPS), v
        for op, lat in r["latency_us"].items():
            assert lat["n"] > 0, (v, op)
            assert 0 <= lat["p50"] <= lat["p99"] <= lat["max"], (v, op, lat)
        ml = r["mmap_lock"]
        assert {"write_hold_max_us", "write_hold_total_us", "read_wait_max_us", "contentions"} <= set(ml)
        assert 0 < ml["write_hold_max_us"] <= ml["write_hold_total_us"]
    for v in ("downgrade", "revalidate"):                      # the fixed designs run clean
        assert doc["variants"][v]["findings"] == [], v


def test_same_arguments_same_bytes(populate_experiment):
    from .conftest import run_pymm
    _, raw, _, d = populate_experiment
    res = run_pymm(*ARGS, "--json", d / "b.json", timeout=300)
    assert res.rc == 0, res.err
    assert (d / "b.json").read_bytes() == raw


def test_trace_is_chrome_trace_event_format(populate_experiment):
    _, _, tr, _ = populate_experiment
    events = tr["traceEvents"]
    procs = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert procs == {f"populate {v} (seed 1)" for v in VARIANTS}     # the first seed of each design
    tracks = [e for e in events if e["ph"] == "M" and e["name"] == "thread_name"]
    assert len(tracks) == 3 * 4 and all(e["args"]["name"].startswith("CPU ") for e in tracks)
    spans = [e for e in events if e["ph"] == "X"]
    assert {e["cat"] for e in spans} >= {"syscall", "fault", "lock hold"}
    for e in spans:
        assert isinstance(e["name"], str) and e["ts"] >= 0 and e["dur"] >= 0
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int)


def test_numbers_in_the_table_come_from_the_json(populate_experiment):
    out, raw, _, _ = populate_experiment
    doc = json.loads(raw)
    rows = {re.split(r"\s{2,}", ln.strip())[0]: re.split(r"\s{2,}", ln.strip())[1:]
            for ln in out.splitlines()[3:] if ln.strip()}
    for i, v in enumerate(VARIANTS):
        cell = rows["mmap_lock contentions"][i].rstrip(" *")
        mean = float(cell.split(" ± ")[0].replace(",", ""))
        assert mean == pytest.approx(doc["variants"][v]["mmap_lock"]["contentions"], abs=0.05)


def test_mbind_ranks_the_designs_as_the_kernel_would():
    """SCENARIOS.md B: holding mmap_lock for write across the migration makes
    the exclusive hold the whole migration; mpol-alloc keeps it short."""
    res = experiment.run("mbind", duration_ms=0.5)
    hold = {v: r["mmap_lock"]["write_hold_max_us"] for v, r in res["variants"].items()}
    assert hold["hold-mmap-lock"] > 10 * hold["mpol-alloc"]


def test_wall_clock_is_labelled_as_measuring_python(cli):
    res = cli("experiment", "populate", "--clock", "wall", "--duration-ms", "200", "--variants", "downgrade")
    assert res.rc == 0, res.err
    assert "WALL clock (measures Python" in res.out.splitlines()[0]


@pytest.mark.parametrize("argv, needle", [
    (["--variants", "downgrade,nope"], "'nope'"),
    (["--clock", "wall", "--trace", "t.json"], "--trace needs --clock virtual"),
    (["--cost-model", "missing.json"], "cannot read cost model"),
    (["--seeds", "0"], "--seeds"),
    (["--duration-ms", "-1"], "--duration-ms"),
])
def test_bad_input_is_one_line(cli, argv, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = cli("experiment", "populate", *argv)
    assert res.rc == 2
    assert needle in res.error_line()


def test_a_workload_of_ones_own():
    """The Python API: a workload class is all an experiment needs."""
    from pymm import constants as C

    class Faulters(experiment.Workload):
        key = "populate"
        variants = ("downgrade",)
        roles = (("faulter", "fault"), ("faulter", "fault"))

        def __init__(self, kernel, seed):
            super().__init__(kernel, seed)
            self.a = self.p.mmap(0, 64 * C.PAGE_SIZE, C.PROT_READ | C.PROT_WRITE,
                                 C.MAP_PRIVATE | C.MAP_ANONYMOUS)

        def fault(self, rng):
            a = self.a + rng.randrange(64) * C.PAGE_SIZE
            self.p.madvise(a, C.PAGE_SIZE, C.MADV_DONTNEED)
            self.timed("store", self.p.store, a, b"x")

    res = experiment.run_experiment(Faulters, duration_ms=0.2)
    r = res["variants"]["downgrade"]
    assert r["findings"] == [] and r["latency_us"]["store"]["n"] > 0
