"""Leave no processes behind: a tiny watchdog that outlives the `sila run` driver.

A local Ray started by the driver spawns agents that survive a SIGKILL of the driver. The
reaper (`python -m sila.coordinator.executors.reaper PID`) keeps a list of the driver's descendants and,
once the driver is gone, kills those still running (matched by pid AND start time), their own
children, and any process naming the driver's Ray session directory.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import psutil

SESSION = re.compile(r"session_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_\d+")


def start(pid: int | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sila.coordinator.executors.reaper", str(pid or os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""


def watch(pid: int, interval: float = 0.2) -> None:
    me = os.getpid()
    try:
        driver = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    seen: dict[int, float] = {}
    sessions: set[str] = set()
    while True:
        try:
            if not driver.is_running() or driver.status() == psutil.STATUS_ZOMBIE:
                break
            for child in driver.children(recursive=True):
                if child.pid != me and child.pid not in seen:
                    try:
                        seen[child.pid] = child.create_time()
                        sessions.update(SESSION.findall(_cmdline(child)))
                    except psutil.NoSuchProcess:
                        pass
        except psutil.NoSuchProcess:
            break
        time.sleep(interval)
    time.sleep(1.0)  # give Ray's own shutdown a moment
    for _ in range(3):
        victims: dict[int, psutil.Process] = {}
        for p, created in seen.items():
            try:
                proc = psutil.Process(p)
                if proc.create_time() == created:
                    victims[p] = proc
                    for c in proc.children(recursive=True):
                        victims[c.pid] = c
            except psutil.NoSuchProcess:
                continue
        if sessions:
            for proc in psutil.process_iter():
                if proc.pid != me and any(s in _cmdline(proc) for s in sessions):
                    victims[proc.pid] = proc
        for proc in victims.values():
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        time.sleep(1.0)


if __name__ == "__main__":
    watch(int(sys.argv[1]))
