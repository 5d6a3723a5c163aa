"""Peak memory of one load, measured in a fresh process.

``python -m benchmarks._memory MODE USERS BASE_URL SERVICE_SID WARM_UP_SID``,
with the emulator's credentials in ``TWILIO_ACCOUNT_SID`` and
``TWILIO_AUTH_TOKEN``, warms up (imports, a small load and export), resets
the kernel's peak-RSS mark, runs one load, and prints a JSON line: the RSS
before, the peak growth over it, what the result still holds, and for an
in-memory load the frame's deep memory. The parent
(:func:`measure`) gives every case a process of its own, so no case inherits
another's heap.

The peak is Linux's ``VmHWM``, reset by writing 5 to ``/proc/self/clear_refs``:
exact, where polling RSS from a thread would miss short spikes. Elsewhere it
falls back to ``ru_maxrss``, which cannot be reset, so the warm-up then counts.
"""

from __future__ import annotations

import gc
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["MODES", "WARM_UP_USERS", "measure"]

#: What is measured: an in-memory load, and the streaming export.
MODES = ("load", "export")

#: Users of the service each measurement loads first, outside the measure.
WARM_UP_USERS = 500

_STATUS = Path("/proc/self/status")


def measure(mode: str, users: int, info: Any) -> dict[str, Any]:
    """Run one ``mode`` load of ``users`` users in a fresh process; its report."""
    command = [
        sys.executable,
        "-m",
        "benchmarks._memory",
        mode,
        str(users),
        info.base_url,
        info.service_for(users),
        info.service_for(WARM_UP_USERS),
    ]
    environment = {
        **os.environ,
        "TWILIO_ACCOUNT_SID": info.account_sid,
        "TWILIO_AUTH_TOKEN": info.auth_token,
    }
    done = subprocess.run(
        command, capture_output=True, text=True, env=environment, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {mode} measurement failed:\n{done.stderr}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def main(argv: list[str]) -> None:
    """Measure one load as the command line says, and print the report."""
    mode, users, base_url, service_sid, warm_up_sid = argv
    import conv_frames  # after the interpreter's own start, before the baseline

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "users.parquet"
        _warm_up(conv_frames, warm_up_sid, path, base_url)
        gc.collect()
        exact = _reset_peak()
        before = _rss()
        started = time.perf_counter()
        report: dict[str, Any] = {"mode": mode, "users": int(users)}
        if mode == "load":
            frame = conv_frames.load_users(service_sid, base_url=base_url)
            report["frame_bytes"] = int(frame.memory_usage(deep=True).sum())
            report["rows"] = len(frame)
        else:
            attrs = conv_frames.export_users(service_sid, path, base_url=base_url)
            report["rows"] = attrs["rows"]
            report["file_bytes"] = path.stat().st_size
        report["seconds"] = time.perf_counter() - started
        report["peak_growth"] = _peak(exact) - before
        gc.collect()
        report["retained"] = _rss() - before  # what the result itself holds
        report["rss_before"] = before
        report["exact_peak"] = exact
    print(json.dumps(report))


def _warm_up(conv_frames: Any, service_sid: str, path: Path, base_url: str) -> None:
    """Load a small service both ways: lazy imports and pools join the baseline."""
    conv_frames.load_users(service_sid, base_url=base_url)
    conv_frames.export_users(service_sid, path, base_url=base_url)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _rss() -> int:
    return _status_bytes("VmRSS") if _STATUS.exists() else _max_rss()


def _peak(exact: bool) -> int:
    return _status_bytes("VmHWM") if exact else _max_rss()


def _status_bytes(field: str) -> int:
    found = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    assert found is not None, f"{field} missing from {_STATUS}"
    return int(found.group(1)) * 1024


def _max_rss() -> int:
    # Kilobytes on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


if __name__ == "__main__":
    main(sys.argv[1:])
