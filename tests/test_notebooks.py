"""The Colab notebooks run top to bottom on a CPU with a tiny setting: their parameter cell is
replaced, shell lines (`!pip ...`) are skipped, every other cell runs as written."""

import json
import os
import textwrap

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_notebook(path: str, parameters: str) -> dict:
  """Executes the code cells of `path` in one namespace, the parameter cell (the one that sets
  REPO and CONFIG) replaced by `parameters`; returns the namespace."""
  with open(path) as f:
    notebook = json.load(f)
  namespace = {"__name__": "__main__"}
  replaced = False
  for index, cell in enumerate(c for c in notebook["cells"] if c["cell_type"] == "code"):
    source = "".join(cell["source"])
    if "REPO =" in source and "CONFIG =" in source:
      source, replaced = parameters, True
    source = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("!", "%")))
    exec(compile(source, f"{os.path.basename(path)} cell {index}", "exec"), namespace)  # pylint: disable=exec-used
  assert replaced, f"{path} has no parameter cell"
  return namespace


def _tiny_config_file(tmp_path, body: str) -> str:
  path = tmp_path / "tiny_config.py"
  path.write_text(textwrap.dedent(body))
  return str(path)


def test_image_notebook(tmp_path, monkeypatch):
  monkeypatch.setenv("MPLBACKEND", "Agg")
  config = _tiny_config_file(tmp_path, """
      from tests import helpers

      def get_config():
        return helpers.tiny_byol_config()
  """)
  namespace = run_notebook(
      os.path.join(_ROOT, "notebooks", "image_pretraining.ipynb"),
      f"REPO = {_ROOT!r}\nCONFIG = {config!r}\nOVERRIDES = {{}}\nWORKDIR = {str(tmp_path / 'run')!r}\n"
      "EVAL_OVERRIDES = {'max_train_examples': 200, 'max_test_examples': 100}\nFINETUNE_STEPS = 2\n",
  )
  assert namespace["summary"]["steps"] == 6
  assert 0.0 <= namespace["linear"]["best_top1"] <= 100.0
  assert os.path.exists(tmp_path / "run_knn" / "eval" / "knn.json")


def test_brave_notebook(tmp_path, monkeypatch):
  monkeypatch.setenv("MPLBACKEND", "Agg")
  config = _tiny_config_file(tmp_path, """
      from tests import test_brave

      def get_config():
        return test_brave.tiny_config()
  """)
  namespace = run_notebook(
      os.path.join(_ROOT, "notebooks", "brave_audio_visual.ipynb"),
      f"REPO = {_ROOT!r}\nCONFIG = {config!r}\nOVERRIDES = {{}}\nWORKDIR = {str(tmp_path / 'run')!r}\n"
      "EVAL_OVERRIDES = {'max_train_examples': 60, 'max_test_examples': 30}\n"
      "SEMISUP_FRACTIONS = (0.5,)\nFINETUNE_OVERRIDES = {'finetune.epochs': 1, 'finetune.batch_size': 16}\n",
  )
  assert namespace["summary"]["steps"] == 4
  assert "knn_top1" in namespace["summary"]
  assert 25 <= namespace["semisup"]["scores"]["50%"]["labelled_examples"] <= 35  # half of each class of 60 clips, rounded
  assert os.path.exists(tmp_path / "run_knn" / "eval" / "knn.json")


@pytest.mark.parametrize("name", ["image_pretraining.ipynb", "brave_audio_visual.ipynb"])
def test_notebooks_are_saved_without_outputs(name):
  with open(os.path.join(_ROOT, "notebooks", name)) as f:
    notebook = json.load(f)
  assert notebook["nbformat"] == 4 and notebook["metadata"]["accelerator"] == "TPU"
  assert all(not c.get("outputs") for c in notebook["cells"] if c["cell_type"] == "code")
