"""OpenBLAS's idle threads go to sleep soon after a threaded product (runtime/__init__.py),
so that they do not take a core from the split helper after a prefill."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# In a fresh interpreter: import `first`, run one threaded product, then idle 0.3 s and
# report how much CPU time the process's other threads (OpenBLAS's) spent meanwhile.
IDLE_SPIN_PROBE = """
import importlib, json, os, sys, time
importlib.import_module(sys.argv[1])
import numpy as np

def others_ns():
    me, total = str(os.getpid()), 0
    for tid in os.listdir("/proc/self/task"):
        if tid != me:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    return total

a = np.ones((1024, 1024), dtype=np.float32)
for _ in range(3):
    a @ a  # threaded sgemm: wakes OpenBLAS's threads
before = others_ns()
time.sleep(0.3)
print(json.dumps({"spun_ms": (others_ns() - before) / 1e6,
                  "timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT")}))
"""

needs_threads = pytest.mark.skipif(
    (os.cpu_count() or 1) < 2 or not os.path.exists("/proc/self/task"),
    reason="needs Linux and two CPUs (OpenBLAS runs one thread otherwise)",
)


def idle_spin(first: str, timeout: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    env.pop("OPENBLAS_NUM_THREADS", None)
    env.pop("OMP_NUM_THREADS", None)
    if timeout is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = timeout
    out = subprocess.run(
        [sys.executable, "-c", IDLE_SPIN_PROBE, first],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return json.loads(out)


@needs_threads
@pytest.mark.parametrize("first", ["corral.runtime.engine", "corral.daemon.serve"])
def test_blas_threads_sleep_soon_after_a_product(first: str) -> None:
    result = idle_spin(first)
    assert result["timeout"] == "20"
    assert result["spun_ms"] < 20, result


@needs_threads
def test_the_probe_sees_openblas_default_spinning() -> None:
    """The probe can fail: with OpenBLAS's default (2**28 cycles) the threads spin on."""
    assert idle_spin("json", timeout="28")["spun_ms"] > 30


def test_an_explicit_setting_wins() -> None:
    code = "import corral.runtime, os; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    env = {**os.environ, "OPENBLAS_THREAD_TIMEOUT": "24"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "24"
