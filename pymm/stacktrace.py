"""How every pymm report prints a stack frame and a source location: one
helper, used by lockdep, lock_stat, the hung-task check, KASAN and the other
detectors (through the stack depot), so that the same frame reads the same
everywhere and does not depend on the current directory.

Frames print the way the kernel's symbolised reports do, so the kernel's own
tooling (syzkaller's pkg/report, scripts/decode_stacktrace.sh readers) can
parse them::

     populate_vma_page_range+0x0/0x0 pymm/mm/gup.py:132
     mmap_write_lock pymm/mm/mmap_lock.py:20 [inline]

Python has no code offsets: pymm prints ``+0x0/0x0`` (the parsers need the
form, not the numbers).  Paths are relative to the directory that holds the
``pymm`` package (``pymm/mm/gup.py``); code outside the package (tests, a
user's script) is printed relative to the current directory when it is below
it, else absolute.

A function that is a ``static inline`` in the kernel (the mmap_lock wrappers
of include/linux/mmap_lock.h, i_mmap_lock_* of include/linux/fs.h,
anon_vma_lock_* of include/linux/rmap.h, folio_lock/folio_trylock of
include/linux/pagemap.h) has no frame of its own in the kernel: it is printed
as ``func path:line [inline]``, as the symboliser prints inlined frames, and
a lock's acquisition site (``at: ...``) names its caller, as the kernel's
``_RET_IP_`` does.  Simplification: only these wrappers are treated as
inline; every other pymm function is a real frame.
"""
import os

PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_PKG_DIR = PKG_PARENT + "pymm" + os.sep
_INLINE_FILES = (_PKG_DIR + os.path.join("mm", "mmap_lock.py"),)
INLINE_FUNCS = frozenset({
    "i_mmap_lock_write", "i_mmap_unlock_write", "i_mmap_lock_read", "i_mmap_unlock_read",
    "anon_vma_lock_write", "anon_vma_unlock_write", "anon_vma_lock_read", "anon_vma_unlock_read",
    "folio_lock", "folio_trylock",
})
_paths = {}


def src_path(filename):
    """``filename`` as reports print it (cached per file)."""
    s = _paths.get(filename)
    if s is None:
        if filename.startswith(_PKG_DIR):
            s = filename[len(PKG_PARENT):]
        else:
            cwd = os.getcwd() + os.sep
            s = filename[len(cwd):] if filename.startswith(cwd) else filename
        _paths[filename] = s
    return s


def is_inline(code):
    return code.co_name in INLINE_FUNCS or code.co_filename in _INLINE_FILES


def format_frame(code, lineno):
    """One frame of a stack: ``func+0x0/0x0 path:line`` (``func path:line
    [inline]`` for a kernel inline)."""
    where = f"{src_path(code.co_filename)}:{lineno}"
    if is_inline(code):
        return f"{code.co_name} {where} [inline]"
    return f"{code.co_name}+0x0/0x0 {where}"


def format_site(code, lineno):
    """An acquisition or report site, as ``%pS`` prints it: ``func+0x0/0x0
    path:line``."""
    return f"{code.co_name}+0x0/0x0 {src_path(code.co_filename)}:{lineno}"


def site_of(frame):
    """The site of ``frame``, inline wrappers skipped (they have no frame in
    the kernel: the site is in their caller)."""
    f = frame
    while f is not None and is_inline(f.f_code) and f.f_back is not None:
        f = f.f_back
    return format_site(f.f_code, f.f_lineno) if f is not None else "?"


def frame_function(line):
    """The function name of a formatted frame (``"?"`` if none)."""
    s = line.strip()
    return s.split("+", 1)[0].split(" ", 1)[0] if s else "?"


def stack_site(stack):
    """The site of a stack captured as formatted frames: its innermost frame
    that is not a kernel inline (None for an empty or missing stack)."""
    for line in stack or ():
        if not line.endswith("[inline]"):
            return line
    return stack[-1] if stack else None
