"""The hugetlb variants of SCENARIOS.md C, C2 and D under the controlled
scheduler: every buggy value caught with its expected finding kind by a
seeded exploration and the failing schedule replayed to the same finding;
every fixed value clean over at least 100 schedules.

The programs are the scenario modules' roles (pymm/scenarios/hugetlb_*.py),
one step per thread.  Beyond the validator's reports, the symptoms
themselves are shown with the validator off (as on a kernel without
CONFIG_LOCKDEP): the use-after-free of a chain node an unlocked anon_vma walk
reads, the use-after-free of a PMD table a fault without the vma_lock keeps
using, and the real AB-BA hangs the scheduler reports as deadlocks.
"""
import pytest

from pymm import scenarios, stress
from pymm.locking import lockdep
from pymm.sched import explore, replay

CLEAN_SCHEDULES = 120

# (scenario, buggy value, fixed value, kinds the buggy one may be caught as)
EPISODES = [
    ("hugetlb-anon-migrate", "rmap-locked", "anon-vma-lock", {"assertion"}),
    ("hugetlb-file-migrate", "relock-under-folio", "keep-imap", {"lockdep"}),
    ("hugetlb-pmd-share", "no-vma-lock", "vma-lock", {"assertion"}),
    ("hugetlb-wp", "fault-mutex-under-folio", "folio-trylock", {"lockdep"}),
    ("hugetlb-truncate", "mapped-check-unlocked", "lock-folio-across-unmap", {"bad-page-state"}),
]
# fixed values kept beside mainline's (issue 12): clean too
ALTERNATIVES = [("hugetlb-wp", "unlock-folio-first"), ("hugetlb-truncate", "lock-folio-first")]
IDS = [e[0] for e in EPISODES]


@pytest.fixture(autouse=True)
def fresh_lockdep():
    """Lock classes are global: every exploration starts from an empty
    dependency graph and leaves none behind (a buggy variant's inverted
    order must not make a later, correct program look circular)."""
    lockdep.reset()
    yield
    lockdep.reset()


@pytest.fixture
def lockdep_off():
    lockdep.disable()
    yield
    lockdep.enable()


def kind_of(f):
    """The finding kind of a failure: lockdep's own reports are "lockdep"
    except its assertion failures, which are "assertion" (as the stress
    runner reports them)."""
    if f.kind == "lockdep" and f.report is not None and f.report.kind == "assertion":
        return "assertion"
    return f.kind


def program(name, variant):
    """setup, threads and check of a scenario: one thread per role, each
    running its step once; the check tears down, runs the invariant checks
    and fails on any finding."""
    scn = scenarios.get(name)()

    def setup():
        return scn.setup(variant, 0)

    def thread(fn):
        def body(st):
            try:
                fn(scn, st, scn.rng(0, 0))
            except OSError:
                pass                     # a system call that legitimately failed (SIGBUS...)
        body.__name__ = fn.__name__
        return body

    def check(st):
        scn.teardown(st)
        st.kernel.check()
        scn.check(st)
        bad = st.kernel.findings()
        assert not bad, bad[0].text

    return setup, [thread(fn) for _, fn in scn.roles], check


@pytest.mark.parametrize("name, buggy, fixed, kinds", EPISODES, ids=IDS)
def test_buggy_value_is_caught_and_replays(name, buggy, fixed, kinds):
    setup, threads, check = program(name, buggy)
    res = explore(setup, threads, check, strategy="random", seed=0, max_schedules=200)
    f = res.failure
    assert f is not None, f"{name}={buggy} ran {res.schedules_run} schedules without a finding"
    assert kind_of(f) in kinds, f.message
    lockdep.reset()                  # its reports are de-duplicated: let it report again
    again = replay(setup, threads, f.schedule, check)
    assert again is not None, "replaying the failing schedule ran clean"
    assert (kind_of(again), again.message.splitlines()[0]) == (kind_of(f), f.message.splitlines()[0])


@pytest.mark.parametrize("name, buggy, fixed, kinds", EPISODES, ids=IDS)
def test_fixed_value_runs_clean(name, buggy, fixed, kinds):
    setup, threads, check = program(name, fixed)
    res = explore(setup, threads, check, strategy="random", seed=0, max_schedules=CLEAN_SCHEDULES)
    assert res.failure is None, res.failure.message
    assert res.schedules_run == CLEAN_SCHEDULES


@pytest.mark.parametrize("name, buggy, fixed, kinds", EPISODES, ids=IDS)
def test_fixed_value_runs_clean_under_pct(name, buggy, fixed, kinds):
    setup, threads, check = program(name, fixed)
    res = explore(setup, threads, check, strategy="pct", seed=3, max_schedules=100)
    assert res.failure is None, res.failure.message


@pytest.mark.parametrize("name, fixed", ALTERNATIVES, ids=[f"{n}-{v}" for n, v in ALTERNATIVES])
def test_alternative_fixed_value_runs_clean(name, fixed):
    setup, threads, check = program(name, fixed)
    res = explore(setup, threads, check, strategy="random", seed=0, max_schedules=CLEAN_SCHEDULES)
    assert res.failure is None, res.failure.message


# -- what each bug does, beyond the validator's report -----------------------------------------

def test_rmap_locked_fires_the_anon_vma_assertion():
    setup, threads, check = program("hugetlb-anon-migrate", "rmap-locked")
    f = explore(setup, threads, check, seed=0, max_schedules=5).failure
    assert kind_of(f) == "assertion"
    assert "lockdep_assert_held(&anon_vma->rwsem)" in f.message
    assert "rmap_walk_anon" in f.message and "hugetlbfs_i_mmap_rwsem_key" in f.message


def test_rmap_locked_walk_reads_a_freed_chain_node(lockdep_off):
    """With the assertion compiled out, the walk that holds i_mmap_rwsem and
    not anon_vma->rwsem reads the chain node a concurrently exiting child
    frees (the LTP move_pages12 crash in anon_vma_interval_tree_iter_first)."""
    setup, threads, check = program("hugetlb-anon-migrate", "rmap-locked")
    # (the fork role forks three children: random finds the window in ~90 schedules)
    res = explore(setup, threads, check, strategy="random", seed=0, max_schedules=300)
    f = res.failure
    assert f is not None and f.kind == "use-after-free", f and f.message
    assert f.message.startswith("BUG: KASAN: use-after-free in anon_vma_interval_tree_foreach")
    assert "anon_vma_chain" in f.message and "unlink_anon_vmas" in f.message
    assert replay(setup, threads, f.schedule, check).kind == "use-after-free"


def test_anon_vma_lock_survives_the_same_exploration(lockdep_off):
    setup, threads, check = program("hugetlb-anon-migrate", "anon-vma-lock")
    res = explore(setup, threads, check, strategy="pct", seed=0, max_schedules=450)
    assert res.failure is None, res.failure.message


def test_relock_under_folio_is_a_circular_dependency():
    setup, threads, check = program("hugetlb-file-migrate", "relock-under-folio")
    f = explore(setup, threads, check, seed=0, max_schedules=20).failure
    assert f.kind == "lockdep"
    assert "possible circular locking dependency" in f.message
    assert "folio_lock" in f.message and "&hugetlbfs_i_mmap_rwsem_key" in f.message
    assert "remove_migration_ptes" in f.message and "hugetlbfs_zero_partial_page" in f.message


def test_relock_under_folio_hangs_against_hole_punch(lockdep_off):
    """task hung in hugetlbfs_zero_partial_page: migration holds the folio
    lock and waits for i_mmap_rwsem, the punch holds i_mmap_rwsem and waits
    for the folio lock."""
    setup, threads, check = program("hugetlb-file-migrate", "relock-under-folio")
    f = explore(setup, threads, check, strategy="pct", seed=0, max_schedules=300).failure
    assert f is not None and f.kind == "deadlock", f and f.message
    assert "&hugetlbfs_i_mmap_rwsem_key" in f.message and "folio_lock" in f.message
    assert replay(setup, threads, f.schedule, check).kind == "deadlock"


def test_fault_mutex_under_folio_is_a_circular_dependency():
    setup, threads, check = program("hugetlb-wp", "fault-mutex-under-folio")
    f = explore(setup, threads, check, seed=0, max_schedules=20).failure
    assert f.kind == "lockdep" and "possible circular locking dependency" in f.message
    assert "hugetlb_fault_mutex" in f.message and "hugetlb_wp" in f.message


def test_fault_mutex_under_folio_hangs_against_a_fault_on_the_same_page(lockdep_off):
    """The owner holds the page-cache folio lock and waits for the fault
    mutex; the other process's fault holds the mutex and waits for the
    folio lock."""
    setup, threads, check = program("hugetlb-wp", "fault-mutex-under-folio")
    f = explore(setup, threads, check, strategy="pct", seed=0, max_schedules=300).failure
    assert f is not None and f.kind == "deadlock", f and f.message
    assert "hugetlb_fault_mutex" in f.message and "folio_lock" in f.message
    assert replay(setup, threads, f.schedule, check).kind == "deadlock"


@pytest.mark.parametrize("name, fixed", [("hugetlb-file-migrate", "keep-imap"),
                                         ("hugetlb-wp", "unlock-folio-first"),
                                         ("hugetlb-wp", "folio-trylock"),
                                         ("hugetlb-truncate", "lock-folio-across-unmap")])
def test_fixed_values_never_hang(lockdep_off, name, fixed):
    setup, threads, check = program(name, fixed)
    res = explore(setup, threads, check, strategy="pct", seed=0, max_schedules=300)
    assert res.failure is None, res.failure.message


def pmd_table_program(variant, pymm_checks=True):
    """D in its plainest form: B faults index 1 through A's PMD table while a
    hole punch unshares B's PMD and A, the table's last user, unmaps it."""
    import pymm
    from pymm import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, MAP_FIXED, MAP_NORESERVE, MAP_SHARED
    from pymm.constants import HPAGE_SIZE as HS, PUD_SIZE as G
    base = 64 * G
    flags = MAP_SHARED | MAP_NORESERVE | MAP_FIXED
    rw = pymm.PROT_READ | pymm.PROT_WRITE

    def setup():
        k = pymm.Kernel(nodes=1, pages_per_node=64, hugepages_per_node=8,
                        variants={"hugetlb-pmd-share": variant}, pymm_checks=pymm_checks)
        f = k.create_file("f", G, hugetlb=True)
        a, b = k.spawn("a"), k.spawn("b")
        a.mmap(base, G, rw, flags, fd=f)
        b.mmap(base, G, rw, flags, fd=f)
        a.store(base, b"a")
        return k, f, a, b

    def fault(st):
        st[3].store(base + HS, b"b")

    def punch(st):
        st[1].fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, HS)

    def unmap(st):
        st[2].munmap(base, G)

    def check(st):
        k, f, a, b = st
        a.exit()
        b.exit()
        k.check()
        assert not k.findings(), k.findings()[0].text

    return setup, [fault, punch, unmap], check


def test_no_vma_lock_fault_takes_the_lock_of_a_freed_pmd_table():
    """What the kernel's own detectors see (pymm's unshare check off)."""
    setup, threads, check = pmd_table_program("no-vma-lock", pymm_checks=False)
    # (pct finds it in ~100-400 schedules depending on the seed; seed 3 in 102)
    res = explore(setup, threads, check, strategy="pct", seed=3, max_schedules=400)
    f = res.failure
    assert f is not None and f.kind == "use-after-free", f and f.message
    assert "page table (pmd)" in f.message and "Freed by task " in f.message
    assert "free_pgd_range" in f.message                  # A's munmap freed it
    assert replay(setup, threads, f.schedule, check).kind == "use-after-free"


def test_no_vma_lock_is_caught_at_the_unshare_first():
    """pymm's check fires at the hole punch's unshare, before the fault
    goes on to use the table (the same exploration as above)."""
    setup, threads, check = pmd_table_program("no-vma-lock")
    res = explore(setup, threads, check, strategy="pct", seed=3, max_schedules=400)
    f = res.failure
    assert f is not None and f.kind == "assertion", f and f.message
    assert "BUG: hugetlb PMD table unshared under a fault using it" in f.message
    assert "huge_pmd_unshare" in f.message and "hugetlbfs_punch_hole" in f.message
    assert res.schedules_run <= 102


def test_vma_lock_fault_survives_the_same_exploration():
    setup, threads, check = pmd_table_program("vma-lock")
    # (pct finds it in ~100-400 schedules depending on the seed; seed 3 in 102)
    res = explore(setup, threads, check, strategy="pct", seed=3, max_schedules=400)
    assert res.failure is None, res.failure.message


def test_mapped_check_unlocked_deletes_a_mapped_folio():
    setup, threads, check = program("hugetlb-truncate", "mapped-check-unlocked")
    f = explore(setup, threads, check, seed=0, max_schedules=200).failure
    assert f.kind == "bad-page-state"
    assert f.message.startswith("BUG: Bad page cache")
    assert "still mapped when deleted" in f.message and "remove_inode_single_folio" in f.message


# -- the scenario modules through the stress runner --------------------------------------------

@pytest.mark.parametrize("name, buggy, fixed, kinds", EPISODES, ids=IDS)
def test_stress_runner_catches_and_replays_the_token(name, buggy, fixed, kinds):
    r = stress.run_controlled(name, buggy, seed=0, schedules=200)
    assert r.caught, r.findings
    token = r.findings[0]["replay"].split()[-1]
    again = stress.replay(token)
    assert again is not None and kind_of(again) == r.findings[0]["kind"]
