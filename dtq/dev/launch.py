"""Start a command that dies with its parent (run as a file, standard library only).

    python -I -S launch.py PARENT_PID SIGNAL [USER] -- COMMAND [ARGS...]

Already inside the child process, it drops privileges to USER (when given),
asks the kernel for PR_SET_PDEATHSIG (Linux), checks the parent is still
there, and execs COMMAND: same pid, so the signal comes when the thread that
started it ends.

Why not `Popen(preexec_fn=...)`: a preexec_fn (like `user=`) makes CPython
fork() instead of vfork(), which runs gRPC's fork handlers in a process that
holds gRPC channels, and those can block the parent forever (seen in our test
suite). Started plainly, the child is vfork()ed and none of that runs.
Privileges are dropped here, before prctl: a change of credentials clears the
parent-death signal.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import signal
import sys

PR_SET_PDEATHSIG = 1


def _drop_to(name: str) -> None:
    who = pwd.getpwnam(name)
    os.setgroups([])
    os.setgid(who.pw_gid)
    os.setuid(who.pw_uid)
    os.environ["HOME"] = who.pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = who.pw_name


def _die_with(sig: int) -> None:
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: nothing to ask for
        return
    prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def main(argv: list[str]) -> None:
    if "--" not in argv:
        sys.exit("usage: launch.py PARENT_PID SIGNAL [USER] -- COMMAND [ARGS...]")
    split = argv.index("--")
    head, command = argv[:split], argv[split + 1 :]
    parent, sig = int(head[0]), int(head[1])
    if len(head) > 2:
        _drop_to(head[2])
    _die_with(sig)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
