"""The ``fuzz`` scenario (pymm/scenarios/fuzz.py): its programs run clean as a
Hypothesis stateful test, its reference model catches a kernel that breaks
what a process sees, and its shrinker reduces a failing program to a few
system calls."""
import errno

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

import pymm
from pymm import stress
from pymm.locking import lockdep
from pymm.scenarios import fuzz


class FuzzMachine(RuleBasedStateMachine):
    """Two families of processes run the fuzzer's ops as Hypothesis draws
    them; Hypothesis shrinks any failing run to a minimal program."""

    @initialize()
    def boot(self):
        lockdep.reset()
        self.st = fuzz.new_state(0)
        self.st.families = [fuzz.Family(self.st, f"h{i}") for i in range(2)]
        self.st.baseline = self.st.kernel.meminfo()
        fuzz.arm(self.st)

    @rule(fi=st.integers(0, 1), data=st.data())
    def step(self, fi, data):
        self.st.families[fi].step(fuzz.DataChooser(data))

    def teardown(self):
        st_ = getattr(self, "st", None)
        if st_ is None:
            return
        fuzz.quiesce(st_)
        k = st_.kernel
        k.check()
        assert [f.title for f in k.findings()] == []
        assert lockdep.reports() == []
        fuzz.check_quiescent(st_)


FuzzMachine.TestCase.settings = settings(
    max_examples=15, stateful_step_count=30, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large])
TestFuzzMachine = FuzzMachine.TestCase


# -- the model catches a kernel that misbehaves ------------------------------------------------

def _first_failure(seeds, steps=40, families=1):
    for seed in seeds:
        r = fuzz.shrink(seed, steps, families, max_runs=150)
        if r is not None:
            return r
    return None


def test_model_sees_dontneed_that_does_not_zero(monkeypatch):
    """MADV_DONTNEED that leaves the page in place: a process reads back
    what it wrote where Linux gives zeros.  The shrunk program says so in a
    few calls."""
    import pymm.mm.madvise as madvise
    monkeypatch.setattr(madvise, "zap_page_range_single", lambda *a, **kw: None)
    # programs of maps, stores, loads and madvise: the failure shows in a few seeds
    monkeypatch.setattr(fuzz, "OPS", (fuzz.op_access,) * 3 + (fuzz.op_madvise, fuzz.op_mmap))
    prog, log, err = _first_failure(range(40))
    assert isinstance(err, fuzz.ModelError) and "changed behind its back" in str(err)
    assert len(prog) <= 6, log
    assert any(".madvise(" in ln for ln in log) and any(".store(" in ln for ln in log)


def _munmap_that_unmaps_nothing(self, addr, length):
    """A broken munmap: it checks its input, then unmaps nothing."""
    if addr % 4096 or length <= 0:
        raise OSError(errno.EINVAL, "munmap: bad input")
    return 0


def test_model_sees_memory_surviving_munmap(monkeypatch):
    monkeypatch.setattr(pymm.Process, "munmap", _munmap_that_unmaps_nothing)
    monkeypatch.setattr(fuzz, "OPS", (fuzz.op_access, fuzz.op_munmap, fuzz.op_mmap))
    prog, log, err = _first_failure(range(40))
    assert isinstance(err, fuzz.ModelError) and "after munmap" in str(err)
    assert len(prog) <= 4, log


def test_quiescence_compares_every_meminfo_field():
    """A counter left behind after every process exited (here: one page of
    AnonPages, the way item 3's migration bug leaves it, which k.check() does
    not see) fails the quiescence check with the field named."""
    st = fuzz.new_state(0)
    st.families = [fuzz.Family(st, "q")]
    st.baseline = st.kernel.meminfo()
    p = st.families[0].procs[0].p
    a = p.mmap(0, 4096, pymm.PROT_READ | pymm.PROT_WRITE, pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
    p.store(a, b"x")
    fuzz.quiesce(st)
    fuzz.check_quiescent(st)
    st.kernel.nodes[0].vm_stat["NR_ANON_MAPPED"].add(1)
    with pytest.raises(fuzz.ModelError, match="AnonPages 0 kB -> 4 kB"):
        fuzz.check_quiescent(st)


def test_sequential_programs_are_clean():
    for seed in range(12):
        lockdep.reset()
        fuzz.run_program(seed, 40, families=2)


def test_shrink_of_a_clean_program_is_none():
    assert fuzz.shrink(3, 20) is None


# -- tokens carry fault injection ----------------------------------------------------------------

def test_replay_token_carries_fault_injection():
    fail = {"slab": {"probability": 3.0}, "page-alloc": {"probability": 3.0, "interval": 2}}
    r = stress.run_controlled("populate", "drop-retake", 0, 100, fail=fail)
    assert r.caught
    tok = r.findings[0]["replay"].removeprefix("pymm replay ")
    name, variant, seed, tpr, sched, got = stress.parse_replay_token(tok, with_fail=True)
    assert (name, variant) == ("populate", "drop-retake") and got == {
        "slab": {"probability": 3.0}, "page-alloc": {"probability": 3.0, "interval": 2}}
    f = stress.replay(tok)
    assert f is not None and f.message.splitlines()[0] == r.findings[0]["text"].splitlines()[0]
    with pytest.raises(ValueError, match="fault-injection"):
        stress.parse_replay_token(tok.replace("fail=", "fail=nosuchsite@"), with_fail=True)


def test_injected_enomem_is_an_expected_errno():
    assert errno.ENOMEM in fuzz.MAY_FAIL


# -- the reference model follows Linux where a call fails half-way ---------------------------------

def test_model_knows_a_failed_mlock_may_leave_the_range_locked():
    """Item 2's "unexplained" MADV_DONTNEED EINVAL: do_mlock sets VM_LOCKED
    (apply_vma_lock_flags) before __mm_populate, so an mlock whose populate
    fails (EAGAIN: here every page allocation fails) leaves the range locked,
    and DONTNEED there is EINVAL in Linux and pymm alike.  The model took the
    failed mlock for a no-op and reported the EINVAL as a finding."""
    st = fuzz.new_state(0)
    fam = fuzz.Family(st, "m")
    st.families = [fam]
    proc = fam.procs[0]
    fuzz.op_mmap(fam, fuzz.TapeChooser([0, 1, 0, 0, 0]), proc)   # 1 page, private anon, RW
    (a, length, kind, _), = proc.maps
    assert (length, kind) == (4096, fuzz.ANON)
    st.kernel.fail("page-alloc", probability=100)
    with pytest.raises(OSError) as ei:
        proc.p.mlock(a, length)
    assert ei.value.errno == errno.EAGAIN
    st.kernel.fail("page-alloc", probability=0)
    with pytest.raises(OSError) as ei:                  # Linux: the range stayed VM_LOCKED
        proc.p.madvise(a, length, pymm.MADV_DONTNEED)
    assert ei.value.errno == errno.EINVAL
    proc.p.munlock(a, length)
    # the same through the fuzzer's ops: a failed mlock, then DONTNEED is accepted
    st.kernel.fail("page-alloc", probability=100)
    fuzz.op_mlock(fam, fuzz.TapeChooser([0, 0, 0, 0]), proc)      # mlock(a, 4096): EAGAIN
    st.kernel.fail("page-alloc", probability=0)
    assert proc.pages[a][2] & fuzz.LOCK_STATES
    fuzz.op_madvise(fam, fuzz.TapeChooser([0, 1, 0, 0, 0]), proc)  # MADV_DONTNEED: EINVAL
    fuzz.op_mlock(fam, fuzz.TapeChooser([2, 0, 0, 0]), proc)      # munlock: known again
    assert not proc.pages[a][2] & fuzz.LOCK_STATES
    fuzz.op_madvise(fam, fuzz.TapeChooser([0, 1, 0, 0, 0]), proc)  # MADV_DONTNEED: 0
    fuzz.quiesce(st)
    fuzz.check_quiescent(st)


def _owner_of_a_private_huge_page():
    """Two families; the first's process maps one private huge page and the
    second's take the pool's other three reservations, so a COW of the
    page finds no page to copy to.  (state, family, owner, address)"""
    lockdep.reset()
    st = fuzz.new_state(0)
    fam, other = fuzz.Family(st, "f"), fuzz.Family(st, "g")
    st.families = [fam, other]
    st.baseline = st.kernel.meminfo()
    owner = fam.procs[0]
    huge = fuzz.KINDS.index(fuzz.HUGE)
    fuzz.op_mmap(fam, fuzz.TapeChooser([huge, 1, 0, 0]), owner)     # reserves 1 of the 4 pages
    (a, _, kind, _), = owner.maps
    assert kind == fuzz.HUGE
    for _ in range(3):                                               # the others reserve the rest
        fuzz.op_mmap(other, fuzz.TapeChooser([huge, 1, 0, 0]), other.procs[0])
    return st, fam, owner, a


def test_model_knows_the_owner_of_a_private_hugetlb_page_may_take_it_back():
    """Shrunk from a fuzz campaign with fork and hugetlb weighted up (seed
    40, 3 families): the owner of a private hugetlb mapping writes to a page
    its child shares while every free huge page is reserved by others, so
    hugetlb_wp cannot copy and takes the page away from the child instead
    (unmap_ref_private): the child gets SIGBUS there, and a grandchild it
    forks later -- hugetlb_dup_vma_private does not pass the flag on --
    faults in a fresh zero page.  Linux's behaviour, which pymm follows; the
    model expected the child's old bytes in the grandchild."""
    from pymm.errors import BusError
    st, fam, owner, a = _owner_of_a_private_huge_page()
    assert st.kernel.meminfo()["HugePages_Rsvd"] == 4
    fuzz._store(fam, fuzz.TapeChooser([0, 0x9f]), owner, a)         # a0 ... (the reservation)
    fuzz.op_fork(fam, None, owner)
    child = fam.procs[1]
    fuzz._store(fam, fuzz.TapeChooser([0, 0]), owner, a)            # COW: no page, take it back
    with pytest.raises(BusError):
        child.p.load(a, 1)
    fuzz._check_access(fam, child, a, True)                          # SIGBUS: the model agrees
    fuzz.op_exit(fam, None, owner)
    fuzz.op_fork(fam, None, child)
    grandchild = fam.procs[1]
    assert grandchild.p.load(a, 8) == bytes(8)                       # a fresh zero page
    fuzz._check_access(fam, grandchild, a + fuzz.P, True)
    fuzz._check_access(fam, grandchild, a, True)
    fuzz.quiesce(st)
    assert [f.title for f in st.kernel.findings()] == []
    fuzz.check_quiescent(st)


@pytest.mark.parametrize("how,tape", [("mlock", [0, 0]), ("mlock2-onfault", [1, 0]),
                                      ("mlockall", [5, 0, 1, 0])])
def test_model_knows_an_owners_mlock_may_take_a_page_back(how, tape):
    """The private hugetlb zero read of the free-mode campaign (README),
    found again by a sequential program with private hugetlb, fork and
    mremap weighted up (rsvd session, seed 47) and shrunk by hand.  mlock
    leaves a hugetlb VMA unlocked (mlock_fixup: no VM_LOCKED, no
    VM_LOCKONFAULT) but __mm_populate still faults it in -- for write, where
    it is private and writable (populate_vma_page_range's FOLL_WRITE breaks
    COW), MLOCK_ONFAULT and MCL_ONFAULT included.  An owner's populate of a
    page its child shares, with no page to copy to, takes the page back as a
    store would; a grandchild forked later faults in a zero page.  Linux's
    behaviour, which pymm follows; the model only expected it after an
    owner's store (or MADV_POPULATE_WRITE)."""
    from pymm.errors import BusError
    st, fam, owner, a = _owner_of_a_private_huge_page()
    fuzz._store(fam, fuzz.TapeChooser([0, 0x9f]), owner, a)         # a0 ... (the reservation)
    fuzz.op_fork(fam, None, owner)
    child = fam.procs[1]
    fuzz.op_mlock(fam, fuzz.TapeChooser(tape), owner)              # populate: COW, no page
    with pytest.raises(BusError):
        child.p.load(a, 1)                                           # taken back
    assert owner.p.load(a, 1) == b"\xa0"
    fuzz._check_access(fam, child, a, True)
    fuzz.op_exit(fam, None, owner)
    fuzz.op_fork(fam, None, child)
    grandchild = fam.procs[1]
    assert grandchild.p.load(a, 8) == bytes(8)                       # a fresh zero page
    fuzz._check_access(fam, grandchild, a, True)                     # the model agrees
    fuzz.quiesce(st)
    assert [f.title for f in st.kernel.findings()] == []
    fuzz.check_quiescent(st)


# Programs the fuzzer found with fork and hugetlb weighted up (issue 16, item
# 10c's campaign), shrunk; they replay with the same weights.
FORK_HUGETLB_KINDS = (fuzz.ANON, fuzz.ANON, fuzz.HUGE, fuzz.HUGE, fuzz.HUGE, fuzz.HUGE_SH,
                      fuzz.HUGE_SH, fuzz.SHM)
FORK_HUGETLB_EXTRA_OPS = (fuzz.op_fork, fuzz.op_fork, fuzz.op_exit, fuzz.op_mmap, fuzz.op_access,
                          fuzz.op_access, fuzz.op_mlock, fuzz.op_madvise)
SHRUNK = {
    # the owner takes a page back twice: the child's page holds what it
    # held before either (its stores over the first version survive)
    "seed250-owner-takes-back-twice": (250, [
        (0, [0, 12]), (0, [0, 12]), (0, [0, 0, 2, 1, 0, 0]), (0, [0, 20]),
        (0, [1, 0, 0, 0, 1, 1, 0]), (0, [0, 0, 0, 0, 1, 0, 0]), (0, [1, 17, 0, 0, 0, 1, 0, 13]),
        (0, [0, 10, 0, 0, 0, 0, 1, 0, 0]), (0, [1, 0, 0, 0, 0])]),
    # MADV_FREE, a store, then a DONTNEED that fails (ENOMEM: a DONTFORK hole
    # in the child): the page holds the freed bytes under the store, or zeros
    # under it, or (Linux zaps the VMAs before the hole) zeros
    "seed222-free-then-failed-dontneed": (222, [
        (1, [0, 0, 0, 1, 0, 3, 3]), (0, [0, 0, 0, 1, 0, 4]), (1, [0, 9, 0, 1, 1, 0, 2]),
        (1, [0, 11]), (1, [0, 17, 0, 0, 0, 1, 1, 0]), (1, [0, 21]), (1, [1, 9, 0, 1, 0, 0, 5]),
        (1, [1, 0, 0, 0, 1, 0, 252]), (1, [0, 12]), (1, [0, 26, 0, 1, 0, 1, 0]),
        (1, [0, 0, 0, 0, 0, 0])]),
}


@pytest.mark.parametrize("name", sorted(SHRUNK))
def test_model_keeps_every_possible_content_of_an_uncertain_page(name, monkeypatch):
    """A page whose contents became uncertain twice (MADV_FREE, a failed
    madvise, a hugetlb page its owner may take back) may hold what it held
    before either: the model kept only the latest and reported the page's
    real contents as memory changed behind the process's back."""
    monkeypatch.setattr(fuzz, "KINDS", FORK_HUGETLB_KINDS)
    monkeypatch.setattr(fuzz, "OPS", fuzz.OPS + FORK_HUGETLB_EXTRA_OPS)
    seed, prog = SHRUNK[name]
    lockdep.reset()
    fuzz.run_program(seed, 0, 3, program=prog)


# -- the model is shared by the families' threads ------------------------------------------

class _HugeMmapDraws:
    """op_mmap's draws for a valid private hugetlb mapping."""

    def int(self, lo, hi):
        return max(lo, min(hi, 1))

    def choice(self, seq):
        return fuzz.HUGE if seq is fuzz.KINDS else seq[0]


class _AddressOnlyProcess:
    """Just enough of a process for op_mmap: each mmap returns a new huge page."""

    def __init__(self):
        self.top = 0x7F00_0000_0000

    def mmap(self, addr, length, prot, flags, fd=None, offset=0):
        self.top -= fuzz.HP
        return self.top


def test_families_racing_in_mmap_keep_each_mappings_id_whole():
    """Free mode runs the families on their own threads over one model state.
    A mapping's id must be the same in its pages, its entry in ``maps`` and
    its owner's ``owned`` set, whatever another family's mmap does meanwhile:
    the shared counter read three times let another mmap slip in, and the
    owner then did not own its private hugetlb mapping (the model missed the
    owner taking a COW-shared page back from its children: a false "memory
    changed behind its back" on a child's zero read, free mode only).  A
    tiny switch interval makes the threads interleave inside op_mmap."""
    import sys
    import threading
    old = sys.getswitchinterval()
    state = fuzz.new_state(0)
    torn = []

    def family():
        fam = type("Fam", (), {"st": state})()
        for _ in range(3000):
            proc = fuzz.Proc(_AddressOnlyProcess())
            fuzz.op_mmap(fam, _HugeMmapDraws(), proc)
            (start, _length, _kind, mid), = proc.maps
            if not (proc.pages[start][3] == mid and proc.owned == {mid}):
                torn.append((proc.pages[start][3], mid, proc.owned))

    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=family) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert torn == []


# -- a finding shows the run's last system calls --------------------------------------------------

@pytest.mark.parametrize("mode", ["controlled", "free"])
def test_a_finding_shows_the_last_system_calls_of_the_run(mode, monkeypatch):
    """A free-mode run cannot be replayed: its finding's text carries the
    run's last system calls (every family's, with arguments and results), as
    does a controlled one's.  Here munmap unmaps nothing, so a load after it
    succeeds and the model says so."""
    monkeypatch.setattr(pymm.Process, "munmap", _munmap_that_unmaps_nothing)
    monkeypatch.setattr(fuzz, "OPS", (fuzz.op_access, fuzz.op_munmap, fuzz.op_mmap))
    r = (stress.run_controlled("fuzz", "default", 0, 30) if mode == "controlled" else
         stress.run_free("fuzz", "default", 0, seconds=5))
    texts = [f["text"] for f in r.findings if "after munmap" in f["title"]]
    assert texts, [f["title"] for f in r.findings]
    block = texts[0].split("system calls of the run, oldest first:\n", 1)[1]
    calls = block.split("\n\n", 1)[0].splitlines()
    assert 1 <= len(calls) <= fuzz.CALL_RING
    assert any(".munmap(0x" in c and c.endswith(" = 0") for c in calls), calls
    assert ".load(0x" in calls[-1], calls[-1]        # the load that found it comes last


def test_every_report_of_a_fuzz_run_ends_with_its_last_system_calls():
    """Kernel-side findings (KASAN, bad page state, lockdep...) are reports,
    not exceptions: the fuzz run's kernel ends each of them with the calls."""
    from pymm.debug.report import report
    scn = fuzz.FuzzScenario()
    st = scn.setup("default", 0)
    for site in fuzz.FAIL:
        st.kernel.fail(site, probability=0)
    p = st.families[1].procs[0].p
    a = p.mmap(0, 4096, pymm.PROT_READ | pymm.PROT_WRITE, pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
    with pytest.raises(OSError):
        p.munmap(a + 1, 4096)
    f = report("assertion", "BUG: a report of the test", "what it saw", kernel=st.kernel)
    assert f.text.splitlines()[-3:] == [
        "the last 2 system calls of the run, oldest first:",
        f"  fuzz1[{p.pid}].mmap(0, 4096, 3, 34) = {a:#x}",
        f"  fuzz1[{p.pid}].munmap({a + 1:#x}, 4096) -> OSError: [Errno 22] munmap: address "
        f"{a + 1:#x} is not page aligned"]
    scn.teardown(st)
    st.kernel.clear_findings()
