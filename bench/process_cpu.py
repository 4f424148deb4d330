"""CPU seconds used by a process tree, from /proc (Linux). On a shared machine the
wall-clock throughput of a benchmark swings with the neighbours' load; the CPU each
request costs the server side (app workers, Postgres, Redis) barely does."""

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def tree_cpu_seconds(root_pid: int) -> float:
    """User + system CPU of `root_pid` and all its descendants, live and reaped."""
    tree = _children()
    total, stack = 0.0, [root_pid]
    while stack:
        pid = stack.pop()
        fields = _stat(pid)
        if fields is None:
            continue
        # utime, stime, cutime, cstime are fields 14-17 (index 11-14 here); the
        # reaped children's time is in the parent's cutime/cstime.
        total += sum(int(value) for value in fields[11:15]) / _TICKS
        stack.extend(tree.get(pid, []))
    return total
