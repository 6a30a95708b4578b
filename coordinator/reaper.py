"""Leave no processes behind: a tiny watchdog that outlives the `sila run` driver.

A local Ray started by the driver spawns agents that survive a SIGKILL of the driver. The
reaper (`python -m sila.coordinator.reaper PID`) keeps a list of the driver's descendants and,
once the driver is gone, kills those still running (matched by pid AND start time).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil


def start(pid: int | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sila.coordinator.reaper", str(pid or os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def watch(pid: int, interval: float = 0.5) -> None:
    me = os.getpid()
    try:
        driver = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    seen: dict[int, float] = {}
    while True:
        try:
            if not driver.is_running() or driver.status() == psutil.STATUS_ZOMBIE:
                break
            for child in driver.children(recursive=True):
                if child.pid != me:
                    try:
                        seen[child.pid] = child.create_time()
                    except psutil.NoSuchProcess:
                        pass
        except psutil.NoSuchProcess:
            break
        time.sleep(interval)
    time.sleep(2.0)  # give Ray's own shutdown a moment
    for p, created in seen.items():
        try:
            proc = psutil.Process(p)
            if proc.create_time() == created:
                proc.kill()
        except psutil.NoSuchProcess:
            continue


if __name__ == "__main__":
    watch(int(sys.argv[1]))
