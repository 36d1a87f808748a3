"""Virtual time: the controlled scheduler as a discrete-event simulator
(``pymm.sched.vtime``).  Clocks advance only at charges; the earliest clock
runs; a thread that waits for a lock resumes at its release; CPUs queue."""
import pytest

from pymm.locking import Mutex, RwSemaphore
from pymm.sched import vtime
from pymm.sched.cost_model import DEFAULT, CostModel

COPY2M = DEFAULT["copy_huge_page"][0]
SYSCALL = DEFAULT["syscall"][0]
LOCK = DEFAULT["lock"][0]
WAKE = DEFAULT["wakeup"][0]


def _setup():
    return {"m": Mutex("vt_mutex"), "sem": RwSemaphore("vt_sem"), "log": []}


def holder(st):
    st["m"].lock()
    vtime.charge("copy_huge_page")          # a long critical section
    st["log"].append(("holder", vtime.now_ns()))
    st["m"].unlock()


def latecomer(st):
    vtime.charge("syscall")                 # asks after the holder took it
    st["m"].lock()
    st["log"].append(("latecomer", vtime.now_ns()))
    st["m"].unlock()


@pytest.mark.parametrize("seed", range(4))
def test_a_waiter_resumes_when_the_holder_releases_in_virtual_time(seed):
    run, vc = vtime.simulate(_setup, [holder, latecomer], seed=seed)
    assert run.failure is None
    log = dict(run.state["log"])
    # the holder got the mutex first (at one lock op), held it for the copy
    assert log["holder"] == LOCK + COPY2M
    # the latecomer asked at SYSCALL + LOCK, but got the mutex only after the
    # release (one more lock op) plus a wake-up: never inside the holder's section
    assert log["latecomer"] == log["holder"] + LOCK + WAKE
    st = vc.stats["vt_mutex-W"]
    assert st["acquisitions"] == 2 and st["contentions"] == 1
    assert st["wait_max_ns"] == log["latecomer"] - (SYSCALL + LOCK)
    assert st["hold_max_ns"] == COPY2M + LOCK


def test_readers_share_and_a_writer_waits_for_the_last_reader():
    def reader(st):
        st["sem"].down_read()
        vtime.charge("copy_page")
        st["sem"].up_read()

    def writer(st):
        vtime.charge("syscall")
        st["sem"].down_write()
        st["log"].append(("writer", vtime.now_ns()))
        st["sem"].up_write()

    for seed in range(3):
        run, vc = vtime.simulate(_setup, [reader, reader, writer], seed=seed)
        assert run.failure is None
        copy = DEFAULT["copy_page"][0]
        # both readers ran concurrently: neither waited
        assert vc.stats["vt_sem-R"]["contentions"] == 0
        # the writer got the lock after the readers' copies, not before
        assert dict(run.state["log"])["writer"] >= LOCK + copy + LOCK


def test_one_cpu_serialises_and_more_cpus_overlap():
    def work(name):
        def fn(st):                     # a lock of its own: scheduling points, no contention
            for _ in range(10):
                vtime.charge("copy_page")
                st[name].lock()
                st[name].unlock()
        return fn

    def setup():
        return {"a": Mutex("vt_a"), "b": Mutex("vt_b")}

    one, vc1 = vtime.simulate(setup, [work("a"), work("b")], cpus=1)
    two, vc2 = vtime.simulate(setup, [work("a"), work("b")], cpus=2)
    assert one.failure is None and two.failure is None
    per_thread = 10 * (DEFAULT["copy_page"][0] + 2 * LOCK)
    assert max(vc2.clock) == per_thread                  # in parallel
    assert max(vc1.clock) >= 2 * per_thread              # one after the other (plus switches)


def test_same_seed_same_run_and_seeds_explore_ties():
    def racer(name):
        def fn(st):
            for _ in range(5):
                st["m"].lock()
                st["log"].append(name)
                st["m"].unlock()
        return fn
    runs = {}
    for seed in range(8):
        logs = []
        for _ in range(2):
            run, vc = vtime.simulate(_setup, [racer("a"), racer("b")], seed=seed)
            logs.append((tuple(run.state["log"]), tuple(vc.clock), tuple(run.schedule)))
        assert logs[0] == logs[1]                        # deterministic
        runs[seed] = logs[0]
    assert len({r[0] for r in runs.values()}) > 1        # equal clocks: seeds break ties differently


def test_charge_is_a_no_op_outside_virtual_time():
    vtime.charge("copy_huge_page")
    assert vtime.now_ns() == 0
    assert vtime.span_begin("x") is None


def test_the_vtime_state_is_uninstalled_after_a_run():
    vtime.simulate(_setup, [holder])
    assert vtime._charge is None and vtime._span is None


def test_a_trace_has_holds_and_waits_on_each_thread_track():
    run, vc = vtime.simulate(_setup, [holder, latecomer], trace=True)
    names = {(e["tid"], e["name"]) for e in vc.trace}
    assert (0, "hold vt_mutex") in names and (1, "wait vt_mutex") in names
    for e in vc.trace:
        assert e["ph"] == "X" and e["dur"] >= 0 and e["ts"] >= 0


def test_cost_model_file(tmp_path):
    p = tmp_path / "costs.json"
    p.write_text('{"copy_page": 1000}')
    m = CostModel.load(p)
    assert m.ns["copy_page"] == 1000 and m.sources["copy_page"].startswith("user")
    assert m.ns["syscall"] == SYSCALL
    for text, msg in [('{"nope": 1}', "unknown cost 'nope'"), ('{"copy_page": -1}', "non-negative"),
                      ("[1]", "JSON object"), ("{", "not JSON")]:
        p.write_text(text)
        with pytest.raises(ValueError, match=msg):
            CostModel.load(p)
    with pytest.raises(ValueError, match="cannot read"):
        CostModel.load(tmp_path / "missing.json")


def test_every_cost_names_its_source():
    for name, (ns, src) in DEFAULT.items():
        assert ns >= 0 and len(src) > 20, name


def test_vtime_is_a_strategy_of_explore_and_replays():
    from pymm.sched import explore, replay

    def setup():
        return {"m": Mutex("vt_m2"), "x": 0}

    def inc(st):
        for _ in range(3):
            st["m"].lock()
            v = st["x"]
            st["m"].unlock()
            st["m"].lock()
            st["x"] = v + 1               # a lost update when another ran in between
            st["m"].unlock()

    def check(st):
        assert st["x"] == 6, st["x"]

    res = explore(setup, [inc, inc], check, strategy="vtime", seed=0, max_schedules=50)
    assert res.failure is not None and res.failure.kind == "assertion"
    assert vtime._charge is None                  # uninstalled after a failure too
    again = replay(setup, [inc, inc], res.failure.schedule, check)
    assert again is not None and again.kind == "assertion"
