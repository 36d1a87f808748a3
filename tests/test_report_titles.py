"""Every kind of report pymm emits, read by the kernel tooling's own rules.

syzkaller's report parser (google/syzkaller pkg/report: report.go and
linux.go) titles a kernel splat from regular expressions over its text: the
header (``BUG:``, ``WARNING:``, ``INFO:``, ``kernel BUG``), a report
expression per known kind (``is trying to acquire lock ... at: FUNC+``,
``Read of size N``), and the first stack frame that is not a locking,
KASAN or printk helper; a report whose stacks have no frame in the kernel's
form (``func+0x0/0x0``) is flagged corrupted.  Below is a faithful port of
the part of those rules that applies to the headers pymm prints (the
expressions, their order, the ``{{FUNC}}``/``{{SRC}}``/``{{PC}}`` macros, the
skip list and the corruption check on stack keywords), applied to real
reports from pymm's detectors.
"""
import re
import threading

import pytest

from pymm import stress
from pymm.locking import Mutex, RwSemaphore, SpinLock, hung_task, lockdep


# -- the rules (pkg/report/report.go compile(), linux.go) ---------------------------------------

def compile_(expr):
    expr = expr.replace("{{ADDR}}", "0x[0-9a-f]+")
    expr = expr.replace("{{PC}}", r"\[\<[0-9a-f]+\>\]")
    expr = expr.replace("{{FUNC}}", r"([a-zA-Z0-9_]+)(?:\.|\+)")
    expr = expr.replace("{{SRC}}", r"([a-zA-Z0-9-_/.]+\.[a-z]+:[0-9]+)")
    return re.compile(expr)


PARSE_STACK = "parseStackTrace"
STACK_START = [re.compile(r"Call Trace"), re.compile(r"Allocated:"),
               re.compile(r"Allocated by task [0-9]+:"), re.compile(r"Freed:"),
               re.compile(r"Freed by task [0-9]+:"), re.compile(r"[^k] backtrace:")]
FRAME_RE = compile_(r"^ *(?:{{PC}} ){0,2}{{FUNC}}")
STACK_FRAME_RE = re.compile(r"^ *(?:\[\<?(?:[0-9a-f]+)\>?\] ?){0,2}[ \t]+(?:[0-9]+:)?"
                            r"([a-zA-Z0-9_.]+)\+0x([0-9a-f]+)/0x([0-9a-f]+)")
SKIP = ["__sanitizer", "__asan", "kasan", "__msan", "kmsan", "check_memory_region",
        "read_word_at_a_time", "print_address_description", "panic", "invalid_op", "report_bug",
        "fixup_bug", "do_error", "_trap", "dump_stack", "warn_slowpath", "warn_alloc", "__warn",
        "debug_object", "timer_is_static_object", "work_is_static_object", "lockdep",
        "perf_trace", "lock_acquire", "lock_release", "lock_class", "reacquire_held_locks",
        "spin_lock", "spin_trylock", "spin_unlock", "raw_read_lock", "raw_read_trylock",
        "raw_write_lock", "raw_write_trylock", "down", "down_read", "down_write",
        "down_read_trylock", "down_write_trylock", "up_read", "up_write", "mutex_lock",
        "mutex_trylock", "mutex_unlock", "mutex_remove_waiter", "osq_lock", "osq_unlock",
        "__wake_up", "refcount_add", "refcount_sub", "refcount_inc", "refcount_dec",
        "refcount_set", "refcount_read", "memcpy", "memcmp", "memset", "memchr", "memmove",
        "strcmp", "strncmp", "strcpy", "strlcpy", "strncpy", "strscpy", "strlen", "strnstr",
        "strnlen", "strchr", "copy_to_user", "copy_from_user", "put_user", "get_user",
        "might_fault", "might_sleep", "list_add", "list_del", "list_replace", "list_move",
        "list_splice", "_indirect_thunk_", "string", "pointer", "snprintf", "scnprintf",
        "kasprintf", "kvasprintf", "printk"]


def hang_extractor(frames):
    """linuxHangTaskFrameExtractor."""
    for f in frames:
        if f.startswith("rtnl_lock"):
            return f
        if f.startswith(("synchronize_rcu", "synchronize_srcu", "synchronize_net", "synchronize_sched")):
            return "synchronize_rcu"
    skip = ["sched", "_lock", "_slowlock", "down", "completion", "kthread", "wait", "synchronize",
            "context_switch", "__switch_to", "cancel_delayed_work"]
    return next((f for f in frames if not any(s in f for s in skip)), "")


class Stack:
    def __init__(self, parts, parts2=(), skip=(), extractor=None):
        self.parts, self.parts2, self.skip, self.extractor = parts, parts2, list(skip), extractor


class Fmt:
    def __init__(self, title, fmt, report=None, stack=None, corrupted=False):
        self.title, self.fmt, self.report = compile_(title), fmt, report and compile_(report)
        self.stack, self.corrupted = stack, corrupted


def call_trace(skip=(), extractor=None):
    return Stack([compile_("Call Trace:"), PARSE_STACK], skip=skip, extractor=extractor)


def warning_stack(*skip):
    rip = (r"N?IP:? (?:(?:[0-9]+:)?(?:{{PC}} +){0,2}{{FUNC}}|[0-9]+:0x[0-9a-f]+|"
           r"(?:[0-9]+:)?{{PC}} +\[< *\(null\)>\] +\(null\)|[0-9]+: +\(null\))")
    return Stack([compile_("(?:" + rip + "|--- interrupt: [0-9]+ at {{FUNC}})"), PARSE_STACK],
                 parts2=[compile_("Call Trace:"), PARSE_STACK], skip=skip)


OOPSES = [
    ("BUG:", [
        Fmt("BUG: KASAN:", "KASAN: %[1]v %[3]v in %[4]v",
            report=r"BUG: KASAN: ([a-z\-]+) in {{FUNC}}(?:.*\n)+?.*(Read|Write) of size (?:[0-9]+)",
            stack=Stack([compile_(r"BUG: KASAN: (?:[a-z\-]+) in {{FUNC}}"), compile_("Call Trace:"),
                         PARSE_STACK])),
        Fmt("BUG: KASAN:", "KASAN: invalid-free in %[2]v",
            report="BUG: KASAN: (?:double-free or invalid-free|double-free|invalid-free) in {{FUNC}}",
            stack=Stack([compile_("BUG: KASAN: (?:double-free or invalid-free|double-free|invalid-free) "
                                  "in {{FUNC}}"), compile_("Call Trace:"), PARSE_STACK],
                        skip=["slab_", "kfree", "vunmap", "vfree"])),
        Fmt(r"BUG: KASAN: ([a-z\-]+) on address(?:.*\n)+?.*(Read|Write) of size ([0-9]+)",
            "KASAN: %[1]v %[2]v"),
        Fmt("BUG: KASAN: (.*)", "KASAN: %[1]v", corrupted=True),
        Fmt("BUG: .*still has locks held!", "BUG: still has locks held in %[1]v",
            report=r"BUG: .*still has locks held!(?:.*\n)+?.*{{PC}} +{{FUNC}}"),
        Fmt("BUG: lock held when returning to user space",
            "BUG: lock held when returning to user space in %[1]v",
            report=r"BUG: lock held when returning to user space(?:.*\n)+?.*leaving the kernel with "
                   r"locks still held(?:.*\n)+?.*at: (?:{{PC}} +)?{{FUNC}}"),
        Fmt("BUG: bad unlock balance detected!", "BUG: bad unlock balance in %[1]v",
            report=r"BUG: bad unlock balance detected!(?:.*\n){0,15}?.*is trying to release "
                   r"lock(?:.*\n){0,15}?.*{{PC}} +{{FUNC}}"),
        Fmt("BUG: Bad rss-counter state", "BUG: Bad rss-counter state"),
        Fmt("BUG: Bad page state", "BUG: Bad page state"),
        Fmt("BUG: Bad page map", "BUG: Bad page map"),
        Fmt("BUG: sleeping function called from invalid context at (.*)",
            "BUG: sleeping function called from invalid context in %[2]v", stack=call_trace()),
        Fmt(r"BUG:\s*(?:\n|$)", "BUG: corrupted", corrupted=True),
    ]),
    ("WARNING:", [
        Fmt(r"WARNING: .*kernel/locking/lockdep\.c.*lock_", "WARNING: locking bug in %[1]v",
            stack=warning_stack("lock_sock", "release_sock")),
        Fmt("WARNING: lock held when returning to user space",
            "WARNING: lock held when returning to user space in %[1]v",
            report=r"WARNING: lock held when returning to user space(?:.*\n)+?.*leaving the kernel "
                   r"with locks still held(?:.*\n)+?.*at: (?:{{PC}} +)?{{FUNC}}"),
        Fmt("WARNING: .* at {{SRC}} {{FUNC}}", "WARNING in %[3]v", stack=warning_stack()),
        Fmt("WARNING: possible circular locking dependency detected", "possible deadlock in %[1]v",
            report=r"WARNING: possible circular locking dependency detected(?:.*\n)+?.*is trying to "
                   r"acquire lock(?:.*\n)+?.*at: (?:{{PC}} +)?{{FUNC}}"),
        Fmt("WARNING: possible recursive locking detected", "possible deadlock in %[1]v",
            report=r"WARNING: possible recursive locking detected(?:.*\n)+?.*is trying to acquire "
                   r"lock(?:.*\n)+?.*at: (?:{{PC}} +)?{{FUNC}}"),
        Fmt("WARNING: suspicious RCU usage", "WARNING: suspicious RCU usage in %[2]v",
            report=r"WARNING: suspicious RCU usage(?:.*\n)+?.*?{{SRC}}",
            stack=call_trace(skip=["rcu", "kmem", "slab", "kmalloc", "vmalloc", "kcalloc", "kzalloc"])),
        Fmt("WARNING: bad unlock balance detected!", "WARNING: bad unlock balance in %[1]v",
            report=r"WARNING: bad unlock balance detected!(?:.*\n){0,15}?.*is trying to release "
                   r"lock(?:.*\n){0,15}?.*{{PC}} +{{FUNC}}"),
        Fmt(r"WARNING:\s*(?:\n|$)", "WARNING: corrupted", corrupted=True),
    ]),
    ("INFO:", [
        Fmt("INFO: task .* blocked for more than [0-9]+ seconds", "INFO: task hung in %[1]v",
            stack=call_trace(extractor=hang_extractor)),
        Fmt(r"INFO:\s*(?:\n|$)", "INFO: corrupted", corrupted=True),
    ]),
    ("kernel BUG", [
        Fmt("kernel BUG at (.*)", "kernel BUG at %[1]v", stack=call_trace()),
    ]),
]


def _stack_frames(parts, output, skip_re):
    lines = output.split("\n")
    i, frames = 0, []
    for part in parts:
        if part is PARSE_STACK:
            while i < len(lines):
                ln = lines[i]
                i += 1
                if any(k.search(ln) for k in STACK_START):
                    break
                m = FRAME_RE.search(ln)
                if m and not skip_re.search(m.group(1)):
                    frames.append(m.group(1))
        else:
            while i < len(lines):
                ln = lines[i]
                i += 1
                m = part.search(ln)
                if m is None:
                    continue
                if m.groups() and m.group(1) and not skip_re.search(m.group(1)):
                    frames.append(m.group(1))
                break
    return frames


def _extract_frame(stack, output):
    skip_re = re.compile("|".join(SKIP + stack.skip))
    frames = _stack_frames(stack.parts, output, skip_re)
    if not frames and stack.parts2:
        frames = _stack_frames(stack.parts2, output, skip_re)
    if not frames:
        return ""
    return stack.extractor(frames) if stack.extractor else frames[0]


def _fmt(fmt, args):
    return re.sub(r"%\[(\d+)\]v", lambda m: args[int(m.group(1)) - 1], fmt)


def _stack_corruption(report):
    """isCorrupted: after 'Call Trace' / 'Allocated by task N:' / 'Freed by
    task N:' / 'backtrace:' there must be a frame in the kernel's form."""
    for key in STACK_START:
        m = key.search(report)
        if m is None:
            continue
        frames = report[m.start():].split("\n")
        if len(frames) < 4:
            return "call trace is missed"
        for ln in frames[1:16]:
            if any(k.search(ln) for k in STACK_START):
                break
            if "(stack is not available)" in ln or STACK_FRAME_RE.search(ln):
                break
        else:
            return f"no frames in a stack trace after {key.pattern!r}"
        if not any("(stack is not available)" in ln or STACK_FRAME_RE.search(ln)
                   for ln in frames[1:16]):
            return f"no frames in a stack trace after {key.pattern!r}"
    return None


def syz_title(text):
    """(title, corrupted reason or None) for a report, by the rules above."""
    lines = text.split("\n")
    for n, ln in enumerate(lines):
        oops = next((o for o in OOPSES if o[0] in ln), None)
        if oops is not None:
            break
    else:
        return None, "no oops header"
    header = ln[ln.index(oops[0]):]
    output = "\n".join(lines[n:])
    desc, corrupted, start, matched_title = "", None, len(output), False
    for f in oops[1]:
        m = f.title.search(output)
        if m is None or m.start() > start:
            continue
        if m.start() == start and desc:
            continue
        if m.start() < start:
            desc, start = "", m.start()
        matched_title = True
        if f.report is not None:
            m = f.report.search(output)
            if m is None:
                continue
        args = [g or "" for g in m.groups()]
        corrupted = None
        if f.stack is not None:
            frame = _extract_frame(f.stack, output[m.start():])
            if not frame:
                frame, corrupted = "corrupted", "extracted no stack frame"
            args.append(frame)
        desc = _fmt(f.fmt, args)
        if f.corrupted:
            corrupted = "format is a corrupted-report catch-all"
    if not desc:
        if matched_title:
            corrupted = "matched a title but not its report expression"
        desc = header
    return desc, corrupted or _stack_corruption(output)


# -- the parser port itself, on reports as the kernel prints them ------------------------------------

KERNEL_KASAN = """\
==================================================================
BUG: KASAN: use-after-free in ip6_send_skb+0x2f5/0x330 net/ipv6/ip6_output.c:1748
Read of size 8 at addr ffff88004fab1858 by task syz-executor0/30168

Call Trace:
 __dump_stack lib/dump_stack.c:16 [inline]
 dump_stack+0x292/0x395 lib/dump_stack.c:52
 kasan_report+0x230/0x340 mm/kasan/report.c:408
 ip6_send_skb+0x2f5/0x330 net/ipv6/ip6_output.c:1748
"""


def test_the_port_titles_kernel_reports_as_syzkaller_does():
    assert syz_title(KERNEL_KASAN) == ("KASAN: use-after-free Read in ip6_send_skb", None)
    old_pymm = KERNEL_KASAN.replace(" ip6_send_skb+0x2f5/0x330 net/ipv6/ip6_output.c:1748\n",
                                    " net/ipv6/ip6_output.c:1748 ip6_send_skb\n")
    assert syz_title(old_pymm)[1] is not None         # pymm's old "path:line func" frames


# -- pymm's reports --------------------------------------------------------------------------

def controlled_finding(scenario, variant, schedules=200):
    r = stress.run_controlled(scenario, variant, seed=0, schedules=schedules)
    assert r.findings, (scenario, variant)
    return r.findings[0]


def function_at(text, after):
    """The function of the first ``at: func+`` line after the line ``after``."""
    rest = text[text.index(after):]
    return re.search(r"at: ([a-zA-Z0-9_]+)\+0x0/0x0 ", rest).group(1)


def check(text, want):
    title, corrupted = syz_title(text)
    assert corrupted is None, (corrupted, text)
    assert title == want, text
    return title


def test_kasan_use_after_free():
    f = controlled_finding("populate", "drop-retake")
    check(f["text"], "KASAN: use-after-free Read in populate_vma_page_range")


def test_kasan_double_free(kernel_with_findings):
    from pymm.mm.vma import vm_area_dup, vm_area_free
    from pymm.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
    k, p, a = kernel_with_findings

    def dup_free_free(mm, addr):
        mmap_read_lock(mm)
        copy = vm_area_dup(mm.mm_mt.vma_lookup(addr))
        mmap_read_unlock(mm)
        vm_area_free(copy)
        vm_area_free(copy)
    k.run_syscall(dup_free_free, p.mm, a)
    (f,) = [f for f in k.findings() if "double-free" in f.title]
    check(f.text, "KASAN: invalid-free in vm_area_free")      # where pymm's kfree is


def test_circular_dependency_is_a_possible_deadlock_in_the_acquiring_function():
    f = controlled_finding("hugetlb-wp", "fault-mutex-under-folio")
    text = f["text"]
    fn = function_at(text, "is trying to acquire lock:")
    check(text, f"possible deadlock in {fn}")
    assert fn == "hugetlb_wp"
    f = controlled_finding("hugetlb-file-migrate", "relock-under-folio")
    check(f["text"], f"possible deadlock in {function_at(f['text'], 'is trying to acquire lock:')}")


def test_suspicious_rcu_usage():
    f = controlled_finding("mbind", "early-unlock-vma-callback")
    title, corrupted = syz_title(f["text"])
    assert corrupted is None, f["text"]
    assert re.fullmatch(r"WARNING: suspicious RCU usage in [a-z_]+", title), title
    assert "rcu" not in title.split(" in ")[1]


def test_bad_page_state_and_page_cache():
    from pymm.debug import report as R
    from pymm.mm.mlock import RMAP_MLOCK_TITLE
    f = controlled_finding("rmap-mlock", "mmap-trylock")
    check(f["text"], RMAP_MLOCK_TITLE)                  # pymm's own check, at the mlock
    R.set_pymm_checks_default(False)                    # the outcome: the copy freed mlocked
    try:
        f = controlled_finding("rmap-mlock", "mmap-trylock")
    finally:
        R.set_pymm_checks_default(True)
    check(f["text"], "BUG: Bad page state")
    f = controlled_finding("hugetlb-truncate", "mapped-check-unlocked")
    title, corrupted = syz_title(f["text"])
    assert corrupted is None and title.startswith("BUG: Bad page cache"), f["text"]


def test_every_scenario_finding_gets_an_uncorrupted_title():
    """Whatever each buggy variant is caught as (assertions, rss-counter,
    bad page state...), the parser finds a header and frames."""
    for name in stress.all_scenarios():
        cls = stress.get_scenario(name)
        for v in cls.variants():
            if cls.expected(v) != "caught":
                continue
            for f in stress.run_controlled(name, v, seed=0, schedules=200).findings:
                title, corrupted = syz_title(f["text"])
                assert title and corrupted is None, (name, v, f["title"], corrupted, f["text"])


# -- lockdep's other reports, made directly -----------------------------------------------------

@pytest.fixture
def validator():
    prev = lockdep.configure()
    lockdep.enable()
    lockdep.reset()
    lockdep.configure(raise_on_report=False)
    yield lockdep
    lockdep.reset()
    lockdep.configure(**prev)


@pytest.fixture
def kernel_with_findings():
    import pymm
    k = pymm.Kernel()
    p = k.spawn("p")
    a = p.mmap(0, 4 * pymm.PAGE_SIZE, pymm.PROT_READ | pymm.PROT_WRITE,
               pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
    return k, p, a


def only_report(kind):
    reps = [r for r in lockdep.reports() if r.kind == kind]
    assert len(reps) == 1, lockdep.reports()
    return reps[0].text


def take_twice(m):
    m.lock()
    m.lock()


def test_recursive_locking(validator):
    m = Mutex("titles.recursive")
    t = threading.Thread(target=take_twice, args=(m,), daemon=True)
    t.start()
    t.join(0.5)             # it blocks on itself for real; the report came first
    check(only_report("recursive"), "possible deadlock in take_twice")


def unlock_unheld(m):
    m.unlock()


def test_bad_unlock_balance(validator):
    m = Mutex("titles.unbalanced")
    with pytest.raises(Exception):
        unlock_unheld(m)
    check(only_report("bad-unlock"), "WARNING: bad unlock balance in unlock_unheld")


def sleep_under_spin(s, m):
    s.lock()
    m.lock()
    m.unlock()
    s.unlock()


def test_sleeping_function_called_from_invalid_context(validator):
    sleep_under_spin(SpinLock("titles.spin"), Mutex("titles.mutex"))
    check(only_report("invalid-context"), "BUG: sleeping function called from invalid context "
                                          "in sleep_under_spin")


def leave_kernel_holding(kernel_and_proc):
    from pymm.mm.mmap_lock import mmap_read_lock
    k, p = kernel_and_proc
    mmap_read_lock(p.mm)


def test_lock_held_when_returning_to_user_space(validator, kernel_with_findings):
    k, p, _ = kernel_with_findings
    k.run_syscall(leave_kernel_holding, (k, p))
    text = next(f.text for f in k.findings() if "returning to user space" in f.title)
    check(text, "WARNING: lock held when returning to user space in leave_kernel_holding")
    p.mm.mmap_lock.up_read()


def test_hung_task(validator):
    sem = RwSemaphore("titles.sem")
    sem.down_write()
    started = threading.Event()

    def reader_blocks():
        started.set()
        sem.down_read()
        sem.up_read()
    t = threading.Thread(target=reader_blocks, name="titles-reader", daemon=True)
    was = hung_task.is_enabled()
    hung_task.enable()
    try:
        t.start()
        started.wait(10)
        for _ in range(200):
            reps = hung_task.check_now(threshold=0)
            if reps:
                break
            threading.Event().wait(0.01)
    finally:
        sem.up_write()
        t.join(10)
        if not was:
            hung_task.disable()
    check(reps[0].text, "INFO: task hung in reader_blocks")


def test_pymm_own_checks_are_titled_by_their_headline(kernel_with_findings):
    """The data-corruption check is pymm's own (the kernel has none): it
    prints a BUG: headline, which the parser takes as the title, and a Call
    Trace in the kernel's form."""
    import pymm
    from tests.mm.test_detectors import pte_folio
    k, p, a = kernel_with_findings
    p.store(a + pymm.PAGE_SIZE, b"precious")
    pte_folio(p, a + pymm.PAGE_SIZE).write_bytes(2, b"X")        # a stray write behind its back
    p.load(a + pymm.PAGE_SIZE, 8)
    (f,) = [f for f in k.findings() if f.kind == "data-corruption"]
    check(f.text, "BUG: " + f.title)


def test_a_finding_without_its_own_headline_gets_one_and_a_call_trace(kernel_with_findings):
    from pymm.debug.report import report
    k, _, _ = kernel_with_findings
    f = report("assertion", "kernel BUG at mm/gup.c: VM_BUG_ON_VMA(start < vma->vm_start)",
               "start 0x1000 vma 0x2000-0x3000", kernel=k)
    assert f.text.splitlines()[0] == f.title
    check(f.text, "kernel BUG at mm/gup.c: VM_BUG_ON_VMA(start < vma->vm_start)")


def test_paths_are_relative_to_the_package_root_whatever_the_directory(tmp_path, monkeypatch):
    import pymm.mm.gup as gup
    from pymm import stacktrace
    monkeypatch.setattr(stacktrace, "_paths", {})
    monkeypatch.chdir(tmp_path)
    assert stacktrace.src_path(gup.__file__) == "pymm/mm/gup.py"
    f = controlled_finding("populate", "drop-retake")
    assert " populate_vma_page_range+0x0/0x0 pymm/mm/gup.py:" in f["text"]
