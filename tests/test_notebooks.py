"""The notebooks run top to bottom against the emulator, and their saved outputs match.

Each notebook is executed headlessly with this interpreter as its kernel (see
``notebooks/execute.py``), in a temporary folder and without ``TWILIO_*``
variables; a cell that raises, or a notebook that leaves temporary files
behind, fails the test. The saved copies must have been
executed top to bottom, and their tables must equal what the code prints
now, except in cells tagged ``varies`` (timings, ports, timestamps).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = sorted(path.name for path in NOTEBOOKS.glob("*.ipynb"))


def load_runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "notebook_runner", NOTEBOOKS / "execute.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("notebooks")


@pytest.fixture(scope="module")
def executed(workdir: Path) -> dict[str, Any]:
    """Every notebook, run once for all the tests of this module."""
    runner = load_runner()
    return {name: runner.execute(NOTEBOOKS / name, cwd=workdir) for name in NAMES}


def code_cells(notebook: Any) -> list[Any]:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def shown(cell: Any) -> list[str]:
    """What a cell displays as text, streams (progress, logs) aside."""
    return [
        output.data["text/plain"]
        for output in cell.outputs
        if output.output_type in ("execute_result", "display_data")
    ]


def test_there_are_notebooks() -> None:
    assert "01_quick_start.ipynb" in NAMES
    assert "02_presence_analysis.ipynb" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_every_notebook_runs_without_an_error(
    name: str, executed: dict[str, Any]
) -> None:
    for cell in code_cells(executed[name]):
        assert cell.execution_count is not None
        assert all(output.output_type != "error" for output in cell.outputs)


@pytest.mark.parametrize("name", NAMES)
def test_saved_outputs_were_made_top_to_bottom(name: str) -> None:
    saved = nbformat.read(NOTEBOOKS / name, as_version=4)
    counts = [cell.execution_count for cell in code_cells(saved)]

    assert counts == list(range(1, len(counts) + 1))
    assert all(
        output.output_type != "error"
        for cell in code_cells(saved)
        for output in cell.outputs
    )
    assert saved.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("name", NAMES)
def test_saved_outputs_are_in_step_with_the_code(
    name: str, executed: dict[str, Any]
) -> None:
    saved = nbformat.read(NOTEBOOKS / name, as_version=4)
    fresh = code_cells(executed[name])

    assert [cell.source for cell in code_cells(saved)] == [c.source for c in fresh]
    for old, new in zip(code_cells(saved), fresh, strict=True):
        if "varies" in old.metadata.get("tags", []):
            continue
        assert shown(old) == shown(new), f"rerun notebooks/execute.py: {old.source}"


@pytest.mark.parametrize("name", NAMES)
def test_saved_outputs_hold_no_progress_bars(name: str) -> None:
    saved = nbformat.read(NOTEBOOKS / name, as_version=4)
    streams = [
        output.text
        for cell in code_cells(saved)
        for output in cell.outputs
        if output.output_type == "stream"
    ]

    assert streams, "the notebooks print and log something"
    assert not [text for text in streams if "\r" in text or "users/s" in text]


def test_a_notebook_that_leaves_temporary_files_fails(tmp_path: Path) -> None:
    careless = nbformat.v4.new_notebook()
    careless.cells = [
        nbformat.v4.new_code_cell(
            "import tempfile\nfolder = tempfile.mkdtemp(prefix='conv_frames_')"
        )
    ]
    path = tmp_path / "careless.ipynb"
    nbformat.write(careless, path)
    runner = load_runner()

    with pytest.raises(
        runner.LeftBehind, match=r"careless\.ipynb left \['conv_frames_"
    ):
        runner.execute(path, cwd=tmp_path)


def test_the_analysis_draws_its_plots_and_saves_the_readme_picture(
    executed: dict[str, Any], workdir: Path
) -> None:
    notebook = executed["02_presence_analysis.ipynb"]
    images = [
        output
        for cell in code_cells(notebook)
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]

    assert len(images) == 3
    assert (workdir / "presence_shares.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (NOTEBOOKS / "presence_shares.png").exists()
