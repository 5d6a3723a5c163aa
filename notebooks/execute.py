"""Run the notebooks top to bottom with this interpreter as their kernel.

    .venv/bin/python notebooks/execute.py              # every notebook, in place
    .venv/bin/python notebooks/execute.py 02_presence_analysis.ipynb

The outputs are saved into the notebooks so that a reader sees the tables and
plots without running anything; run this after changing a notebook or the
code it calls. The kernel runs in this folder (the analysis notebook writes
``presence_shares.png`` here, the picture in the README) with every
``TWILIO_*`` variable removed, so the outputs always come from the bundled
emulator. The tests execute the notebooks through :func:`execute` as well.

Two things a run must not leave behind: progress bars are turned off
(``TQDM_DISABLE``), since their frames would only clutter the saved outputs,
and the kernel's temporary folder must be empty at the end, or the run fails
naming what the notebook forgot to remove.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
_KERNEL = "conv-frames-python"


class LeftBehind(RuntimeError):
    """A notebook left files in its temporary folder."""


def execute(path: Path, *, cwd: Path, timeout: float = 300.0) -> nbformat.NotebookNode:
    """Execute the notebook at ``path`` in a fresh kernel; return it with outputs.

    The kernel is ``sys.executable`` (the virtual environment's Python when
    run from it), whatever kernels Jupyter has installed elsewhere, and it
    starts in ``cwd`` without ``TWILIO_*`` variables, without progress bars,
    and with a temporary folder of its own.

    Raises:
        nbclient.exceptions.CellExecutionError: A cell raised.
        LeftBehind: The notebook left files in its temporary folder.
    """
    notebook = nbformat.read(path, as_version=4)
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TWILIO_")
    }
    with tempfile.TemporaryDirectory() as folder:
        specs = Path(folder)
        _write_kernelspec(specs)
        scratch = specs / "tmp"
        scratch.mkdir()
        environment.update(TMPDIR=str(scratch), TQDM_DISABLE="1")
        manager = KernelManager(
            kernel_name=_KERNEL,
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)]),
            # Unix sockets in the temporary folder: the kernel opens no port.
            transport="ipc",
            ip=str(specs / "kernel"),
        )
        client = NotebookClient(
            notebook,
            km=manager,
            timeout=timeout,
            resources={"metadata": {"path": str(cwd)}},
        )
        # cleanup_kc: stop the kernel and close its channels even though the
        # manager is ours, not the client's.
        client.execute(env=environment, cleanup_kc=True)
        left = sorted(entry.name for entry in scratch.iterdir())
    if left:
        raise LeftBehind(
            f"{path.name} left {left} in its temporary folder: remove what it "
            "creates (tempfile.TemporaryDirectory, then .cleanup() at the end)"
        )
    return notebook


def _write_kernelspec(folder: Path) -> None:
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    (folder / _KERNEL).mkdir()
    (folder / _KERNEL / "kernel.json").write_text(json.dumps(spec))


def main(names: list[str]) -> None:
    """Execute the named notebooks (all of them by default) and save them."""
    paths = [HERE / name for name in names] or sorted(HERE.glob("*.ipynb"))
    for path in paths:
        notebook = execute(path, cwd=HERE)
        notebook.metadata["kernelspec"] = {
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
            "name": "python3",
        }
        nbformat.write(notebook, path)
        print(f"executed {path.name}")


if __name__ == "__main__":
    main(sys.argv[1:])
