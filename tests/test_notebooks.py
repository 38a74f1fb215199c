"""The notebooks run top to bottom on a tiny generate.py run and a tiny diagnosis, and are committed clean.

Each notebook runs in a `python3` kernel of this environment (nbclient), with its input folder passed
through the environment variable its parameters cell reads (NUMINA_RUN, NUMINA_DIAGNOSIS).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import re
import sys
from pathlib import Path

import nbformat
import pytest
from experiment_scripts import load_experiment
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # end to end: run by .ci/run, not by the default loop

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
EXPLORE = NOTEBOOKS / "explore_attention.ipynb"
REPRODUCE = NOTEBOOKS / "reproduce_figures.ipynb"
SIZE = [
    "--steps",
    "3",
    "--guidance",
    "1",
    "--frames",
    "9",
    "--height",
    "64",
    "--width",
    "64",
    "--wandb",
    "disabled",
]
PROMPT = "three cats on a sofa"
KERNEL_CHECK = "import sys\nprint('kernel python:', sys.executable)"


@pytest.fixture(scope="module")
def run_dir(tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generate.py --capture-only run folder of "three cats on a sofa" (3 latent frames)."""
    generate = load_experiment("generate")
    out = tmp_path_factory.mktemp("runs")
    prompt = ["--prompt", PROMPT, "--capture-only"]
    return generate.main([*prompt, "--model", str(tiny_folder), "--out", str(out), *SIZE])


@pytest.fixture(scope="module")
def diagnosis_dir(tiny_folder: Path, countbench_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A diagnose_numerals.py output folder of the first 2 CountBench prompts."""
    diagnose = load_experiment("diagnose_numerals")
    out = tmp_path_factory.mktemp("diagnosis")
    model = ["--model", str(tiny_folder), "--countbench", str(countbench_dir), "--limit", "2"]
    return diagnose.main([*model, "--out", str(out), *SIZE])


@pytest.fixture(scope="module")
def executed(run_dir: Path, request: pytest.FixtureRequest) -> dict[Path, nbformat.NotebookNode]:
    """Both notebooks run top to bottom, at the same time (each kernel spends most of its time importing)."""
    inputs = {EXPLORE: ("NUMINA_RUN", run_dir)}
    with contextlib.suppress(pytest.skip.Exception):  # no CountBench: the reproduce test skips
        inputs[REPRODUCE] = ("NUMINA_DIAGNOSIS", request.getfixturevalue("diagnosis_dir"))
    with pytest.MonkeyPatch.context() as patch:
        for variable, folder in inputs.values():
            patch.setenv(variable, str(folder))  # kernels inherit the environment
        notebooks = asyncio.run(_execute_all(list(inputs)))
    return dict(zip(inputs, notebooks, strict=True))


async def _execute_all(paths: list[Path]) -> list[nbformat.NotebookNode]:
    return await asyncio.gather(*(_execute(path) for path in paths))


async def _execute(path: Path) -> nbformat.NotebookNode:
    """Run a notebook in this environment's python3 kernel, in its own folder; a failing cell raises."""
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(KERNEL_CHECK))
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    await client.async_execute()
    assert f"kernel python: {sys.executable}" in _printed(notebook), "the kernel is not this environment's"
    return notebook


def _outputs(notebook: nbformat.NotebookNode) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def _printed(notebook: nbformat.NotebookNode) -> str:
    return "".join(output["text"] for output in _outputs(notebook) if output["output_type"] == "stream")


def _images(notebook: nbformat.NotebookNode) -> int:
    return sum("image/png" in output.get("data", {}) for output in _outputs(notebook))


def test_explore_attention_runs_on_a_run_folder(run_dir: Path, executed: dict) -> None:
    notebook = executed[EXPLORE]
    printed = _printed(notebook)
    assert f"run folder: {run_dir}" in printed
    assert "words: three/numeral, cats/noun, on/other, a/other, sofa/other" in printed
    assert "captured words: ['three', 'cats']" in printed
    assert "showing 'three' at step 1, layer 2, head mean, latent frame 1 (prompt)" in printed
    assert "decoded video: 9 frames of 64x64" in printed
    for latent, pixel in ((0, 0), (1, 1), (2, 5)):
        assert f"latent frame {latent} -> video frame {pixel} " in printed
    assert "chosen head per latent frame {0: " in printed
    if importlib.util.find_spec("ipywidgets") is None:
        assert "ipywidgets is not installed" in printed  # the plain path ran
    # show_cross, the head x frame grid, all words' maps, the components, the grey images
    assert _images(notebook) >= 5


def test_explore_attention_finds_the_newest_run_in_a_folder_of_runs(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NUMINA_RUN", str(run_dir.parent))
    namespace = _run_first_cells(EXPLORE, 2)
    assert namespace["RUN"] == run_dir and namespace["config"]["prompt"] == PROMPT


def test_reproduce_figures_runs_on_a_diagnosis_folder(diagnosis_dir: Path, executed: dict) -> None:
    notebook = executed[REPRODUCE]
    printed = _printed(notebook)
    assert f"diagnosis folder: {diagnosis_dir}" in printed
    assert "2 prompts, " in printed
    assert "recomputed 2 of 2 stores; tables match the CSVs: True" in printed
    html = "".join(output.get("data", {}).get("text/html", "") for output in _outputs(notebook))
    assert "numeral - noun" in html  # the paired differences table
    # two diagnosis figures (raw, renormalised), two difference figures, the heat map, the example maps
    assert _images(notebook) >= 6


@pytest.mark.parametrize(
    ("path", "variable", "command"),
    [
        (EXPLORE, "NUMINA_RUN", f'python experiments/generate.py --prompt "{PROMPT}" --capture-only'),
        (REPRODUCE, "NUMINA_DIAGNOSIS", "python experiments/diagnose_numerals.py --limit 5"),
    ],
    ids=["explore", "reproduce"],
)
def test_missing_input_says_which_command_creates_it(
    path: Path, variable: str, command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, str(tmp_path / "nothing-here"))
    with pytest.raises(FileNotFoundError, match=re.escape(f"{command}\n")) as error:
        _run_first_cells(path, 2)
    assert variable in str(error.value)
    cells = nbformat.read(path, as_version=4).cells  # the introduction says how to make the input too
    assert any(command in cell.source for cell in cells if cell.cell_type == "markdown")


def _run_first_cells(path: Path, count: int) -> dict:
    """Run the notebook's first `count` code cells (parameters, input check) here, without a kernel."""
    cells = [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"][:count]
    namespace: dict = {}
    for cell in cells:
        exec(compile(cell.source, f"{path.name} cell", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("path", [EXPLORE, REPRODUCE], ids=lambda path: path.stem)
def test_committed_notebooks_are_clean(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code), "strip the outputs"
    assert path.stat().st_size < 40_000
    assert notebook.metadata.kernelspec.name == "python3"
    assert "os.environ.get(" in code[0].source  # the parameters cell comes first
