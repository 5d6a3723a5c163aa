"""Peak memory of streaming a large service into a snapshot, in a fresh process.

This process serves N users from the bundled emulator on 127.0.0.1. A fresh
Python process imports conv_frames, notes its resident memory (RSS), and runs
``export_snapshots`` against the emulator into a temporary dataset. Growth is
the peak RSS during the export minus the RSS just before it, measured twice:

- sampled: this process polls the child's RSS with psutil every few ms;
- high-water: the child resets the kernel's peak-RSS mark (``VmHWM``) before
  the export and reads it after (Linux), which catches spikes between samples.

If memory does not grow with the number of users, the growth at 300,000 users
is close to the growth at 30,000. Run it by hand::

    .venv/bin/python benchmarks/bench_export_memory.py --users 30000 100000 300000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from conv_frames.emulator import Emulator

MIB = 1024 * 1024
SAMPLE_SECONDS = 0.005


def child(root: str, service_sid: str, base_url: str) -> None:
    """Export one service and print what it cost, as JSON on stdout."""
    import pyarrow.parquet as pq

    import conv_frames

    process = psutil.Process()
    baseline = process.memory_info().rss
    _reset_high_water_mark()
    started = time.perf_counter()
    run = conv_frames.export_snapshots(root, [service_sid], base_url=base_url)
    seconds = time.perf_counter() - started
    run.raise_for_failures()

    service = run.services[0]
    assert service.manifest is not None
    assert service.path is not None
    part = Path(service.path) / "part-0.parquet"
    print(
        json.dumps(
            {
                "baseline": baseline,
                "high_water": _high_water_mark(),
                "after": process.memory_info().rss,
                "seconds": seconds,
                "rows": service.manifest["rows"],
                "pages": service.manifest["pages"],
                "bytes": part.stat().st_size,
                "row_groups": pq.ParquetFile(part).metadata.num_row_groups,
            }
        )
    )


def _reset_high_water_mark() -> None:
    # Not on Linux, the high-water figure then includes the imports.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _high_water_mark() -> int | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def measure(users: int) -> dict[str, Any]:
    """Serve ``users`` and export them from a fresh process; return the figures."""
    with (
        Emulator(users=users, seed=0) as emulator,
        tempfile.TemporaryDirectory() as tmp,
    ):
        environment = {
            **os.environ,
            "TWILIO_ACCOUNT_SID": emulator.account_sid,
            "TWILIO_AUTH_TOKEN": emulator.auth_token,
        }
        command = [
            sys.executable,
            __file__,
            "--child",
            str(Path(tmp) / "users"),
            emulator.service_sid,
            emulator.base_url,
        ]
        process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE)
        sampled = _sample_peak_rss(process)
        out, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"the export failed with exit code {process.returncode}")

    figures: dict[str, Any] = json.loads(out)
    figures["sampled_peak"] = sampled
    figures["users"] = users
    return figures


def _sample_peak_rss(process: subprocess.Popen[bytes]) -> int:
    watched = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(SAMPLE_SECONDS)
    return peak


def report(rows: list[dict[str, Any]]) -> str:
    """The figures as a table, in MiB."""
    columns = ["users", "pages", "seconds", "baseline", "sampled", "VmHWM", "file"]
    lines = [" ".join(f"{name:>9}" for name in columns) + "  row groups"]
    for row in rows:
        high_water = row["high_water"]
        values = [
            f"{row['users']}",
            f"{row['pages']}",
            f"{row['seconds']:.1f}",
            f"{row['baseline'] / MIB:.1f}",
            f"+{(row['sampled_peak'] - row['baseline']) / MIB:.1f}",
            "n/a"
            if high_water is None
            else f"+{(high_water - row['baseline']) / MIB:.1f}",
            f"{row['bytes'] / MIB:.1f}",
        ]
        lines.append(" ".join(f"{v:>9}" for v in values) + f"  {row['row_groups']:>10}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[30_000, 300_000])
    parser.add_argument("--child", nargs=3, metavar=("ROOT", "SERVICE", "BASE_URL"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    rows = []
    for users in args.users:
        rows.append(measure(users))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(report(rows))


if __name__ == "__main__":
    main()
