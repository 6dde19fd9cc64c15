"""The preset harness's table writer and the pinned-environment check, on a small fake result set."""

import importlib.util
import pathlib
import sys

import pytest

from jaxssl import environment

_HARNESS = pathlib.Path(__file__).resolve().parent.parent / "experiments" / "presets.py"


@pytest.fixture(scope="module")
def harness():
  spec = importlib.util.spec_from_file_location("presets_harness", _HARNESS)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


def _row(preset, seed, commit, knn, random_init=13.2, pixels=32.5):
  return {
      "preset": preset,
      "seed": seed,
      "commit": commit,
      "knn_top1": knn,
      "linear_top1": knn + 1.0,
      "knn_top1_random_init": random_init,
      "knn_top1_pixels": pixels,
      "steps": 10,
      "wall_seconds": 100.0,
      "environment": {"packages": {"jax": "0.12.0.1"}, "device_kind": "cpu", "cpu": {"model": "Fake CPU", "features": ["avx2"], "cores": 2}},
      "unpinned": [],
  }


def test_table_shows_newest_commit_and_judges_every_seed(harness):
  presets = (harness.Preset("a.py:quick"), harness.Preset("b.py:quick", "a note", 10.0), harness.Preset("c.py"))
  rows = [
      _row("a.py:quick", 0, "old0000", 10.0),  # superseded by the newer commit below
      _row("a.py:quick", 0, "new1111", 40.0),
      _row("a.py:quick", 1, "new1111", 34.0),  # 1.5 above pixels: below the 2-point margin
      _row("b.py:quick", 0, "new1111", 50.0),
      _row("b.py:quick", 1, "new1111", 45.0, random_init=15.1),
  ]
  lines = harness.markdown_table(rows, presets).splitlines()
  a_line = next(line for line in lines if line.startswith("| `a.py:quick`"))
  b_line = next(line for line in lines if line.startswith("| `b.py:quick`"))
  c_line = next(line for line in lines if line.startswith("| `c.py`"))
  assert "new1111" in a_line and "old0000" not in a_line
  assert "40.0 (s0) / 34.0 (s1)" in a_line
  assert "| 13.2 | 32.5 |" in a_line  # a baseline every seed shares is shown once
  assert "| no (worst +1.5, needs +2) |" in a_line
  assert "| yes (worst +12.5, needs +10) |" in b_line and "a note" in b_line
  assert "| 13.2 / 15.1 | 32.5 |" in b_line  # per-seed baselines, in seed order
  assert "not measured" in c_line
  assert any("**A**: jax 0.12.0.1; device cpu; Fake CPU (avx2), 2 cores" in line for line in lines)
  assert a_line.split(" | ")[2] == "A"  # the machine column names the legend's entry


def test_table_names_each_rows_machine(harness):
  other = _row("a.py:quick", 1, "new1111", 41.0)
  other["environment"] = {**other["environment"], "cpu": {"model": "Other CPU", "features": ["avx512f"], "cores": 2}}
  rows = [_row("a.py:quick", 0, "new1111", 40.0), other]
  lines = harness.markdown_table(rows, (harness.Preset("a.py:quick"),)).splitlines()
  a_line = next(line for line in lines if line.startswith("| `a.py:quick`"))
  assert a_line.split(" | ")[2] == "A / B"  # per seed, in seed order
  legend = next(line for line in lines if line.startswith("Machines"))
  assert "**A**: jax 0.12.0.1; device cpu; Fake CPU (avx2)" in legend and "**B**: jax 0.12.0.1; device cpu; Other CPU (avx512f)" in legend


def test_table_flags_rows_from_unpinned_or_dirty_runs(harness):
  row = _row("a.py:quick", 0, "abc1234+dirty", 40.0)
  row["unpinned"] = ["jax 0.13 (constraints.txt pins 0.12)"]
  line = next(l for l in harness.markdown_table([row], (harness.Preset("a.py:quick"),)).splitlines() if l.startswith("| `a"))
  assert "unpinned versions" in line and "dirty tree" in line


def test_table_marks_rows_measured_before_a_change_of_shared_code(harness):
  rows = [_row("a.py:quick", 0, "old0000", 40.0), _row("b.py:quick", 0, "new1111", 40.0)]
  presets = (harness.Preset("a.py:quick"), harness.Preset("b.py:quick"))
  changes = (("chg2222", "the augmentation changed"),)
  older = {"old0000"}
  lines = harness.markdown_table(rows, presets, changes, predates=lambda change, commit: commit in older).splitlines()
  a_line = next(l for l in lines if l.startswith("| `a"))
  b_line = next(l for l in lines if l.startswith("| `b"))
  assert "**stale**: predates chg2222" in a_line
  assert "stale" not in b_line
  assert "Rows marked stale were measured before chg2222 (the augmentation changed)" in "\n".join(lines)


def test_predates_asks_git_which_commit_is_older(harness, tmp_path, monkeypatch):
  import subprocess

  def commit(message):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", message], cwd=tmp_path, check=True)
    return subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

  subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
  before, change, after = commit("a"), commit("b"), commit("c")
  monkeypatch.setattr(harness, "ROOT", tmp_path)
  assert harness.predates(change, before) and harness.predates(change, before + "+dirty")
  assert not harness.predates(change, change) and not harness.predates(change, after)
  assert not harness.predates(change, "unknown")  # a commit this clone does not have is not judged


def test_merge_replaces_only_the_same_preset_seed_and_commit(harness):
  old = [_row("a", 0, "c1", 1.0), _row("a", 1, "c1", 2.0), _row("a", 0, "c0", 3.0)]
  merged = harness.merge_rows(old, [_row("a", 0, "c1", 9.0)])
  assert sorted((r["seed"], r["commit"], r["knn_top1"]) for r in merged) == [(0, "c0", 3.0), (0, "c1", 9.0), (1, "c1", 2.0)]


def test_write_tables_fills_the_marked_block_of_each_document(harness, tmp_path):
  document, summary = tmp_path / "README.md", tmp_path / "SUMMARY.md"
  (begin, end), (held_begin, held_end) = harness.markers("presets"), harness.markers("held-out")
  patterns_begin, patterns_end = harness.markers("pretext-on-patterns")
  document.write_text(f"intro\n{begin}\nstale table\n{end}\nmiddle\n{held_begin}\nstale\n{held_end}\noutro\n")
  summary.write_text(f"{begin}\nstale\n{end}\n")
  rows = [_row("configs/simclr.py:quick", 0, "abc1234", 40.0), _row("configs/simclr.py on builtin:scenes", 0, "abc1234", 44.0)]
  # The pretext-on-patterns table has a block in neither document: refused, naming its markers.
  with pytest.raises(ValueError, match="pretext-on-patterns:begin"):
    harness.write_tables(rows, tmp_path / "results", [document, summary])
  summary.write_text(f"{begin}\nstale\n{end}\n{patterns_begin}\nstale\n{patterns_end}\n")
  harness.write_tables(rows, tmp_path / "results", [document, summary])
  assert "| `configs/rotnet.py:quick on builtin:patterns` | - | | not measured |" in summary.read_text()
  assert "40.0 (s0)" in summary.read_text()
  text = document.read_text()
  assert "stale" not in text and text.startswith("intro\n") and text.endswith("outro\n")
  presets_block = text.split(begin)[1].split(end)[0]
  held_out_block = text.split(held_begin)[1].split(held_end)[0]
  assert "40.0 (s0)" in presets_block and "44.0" not in presets_block
  assert "44.0 (s0)" in held_out_block and "40.0" not in held_out_block
  assert "## Default presets on held-out data" in (tmp_path / "results" / "presets.md").read_text()
  assert "| `configs/simclr.py:quick` | abc1234 | A | 40.0 (s0) |" in text
  assert (tmp_path / "results" / "results.json").exists() and (tmp_path / "results" / "presets.md").exists()
  with pytest.raises(ValueError, match="presets:begin"):
    harness.replace_between_markers("no markers here", "table")


def test_held_out_presets_run_the_default_preset_on_other_data(harness):
  chosen = harness.select("held-out")
  assert {p.config for p in chosen} == {f"configs/{m}.py" for m in harness.IMAGE_METHODS}
  simclr = next(p for p in chosen if p.config == "configs/simclr.py")
  assert simclr.command_flags() == ["--config=configs/simclr.py", "--config.data.name=builtin:scenes"]
  assert simclr.name == "configs/simclr.py on builtin:scenes"
  assert [p.name for p in harness.select("simclr")] == ["configs/simclr.py:quick", "configs/simclr.py on builtin:scenes"]
  with pytest.raises(SystemExit, match="matches no preset"):
    harness.select("no_such_method")


def test_unpinned_packages_names_each_difference(tmp_path):
  constraints = tmp_path / "constraints.txt"
  constraints.write_text("# pins\njax==0.12.0.1\nscikit_learn==1.7.0\nflax==0.12.12  # comment\n")
  pins = environment.read_constraints(str(constraints))
  assert pins == {"jax": "0.12.0.1", "scikit-learn": "1.7.0", "flax": "0.12.12"}
  installed = {"jax": "0.12.0.1", "scikit-learn": "1.8.0", "flax": None, "optax": "0.2"}
  assert environment.unpinned_packages(pins, installed) == [
      "scikit-learn 1.8.0 (constraints.txt pins 1.7.0)",
      "flax not installed (constraints.txt pins 0.12.12)",
  ]


def test_this_install_matches_its_constraints():
  # `make install` installs constraints.txt exactly; a drift here would make published numbers
  # irreproducible without anyone noticing.
  pins = environment.read_constraints(str(pathlib.Path(__file__).resolve().parent.parent / "constraints.txt"))
  assert environment.unpinned_packages(pins, environment.package_versions()) == []


def test_describe_names_versions_and_device():
  described = environment.describe()
  assert described["packages"]["jax"] and described["device_kind"] and described["device_count"] >= 1


def test_the_harness_own_outputs_do_not_make_the_checkout_dirty(harness, tmp_path, monkeypatch):
  """A second invocation in the same clone runs: the tables the first one wrote are not code."""
  import subprocess

  def run(*args):
    subprocess.run(args, cwd=tmp_path, check=True, capture_output=True)

  run("git", "init", "-q")
  (tmp_path / "experiments" / "results").mkdir(parents=True)
  for name in ("README.md", "experiments/README.md", "experiments/results/results.json", "code.py"):
    (tmp_path / name).write_text("x\n")
  run("git", "add", "-A")
  run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
  monkeypatch.setattr(harness, "ROOT", tmp_path)
  for name in ("README.md", "experiments/README.md", "experiments/results/results.json"):
    (tmp_path / name).write_text("a table\n")
  assert harness.checkout_state()[1] is False
  (tmp_path / "code.py").write_text("changed\n")
  assert harness.checkout_state()[1] is True


def test_robustness_table_pairs_runs_with_and_without_the_auxiliary_loss():
  spec = importlib.util.spec_from_file_location("robustness_harness", _HARNESS.parent / "robustness.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert module.scale_of("configs/ssl_robustness.py:quick,baseline") == "quick"
  assert module.scale_of("configs/ssl_robustness.py:baseline") == ""
  aux, none = (p.name for p in module.pair("quick"))

  def row(preset, seed, corrupted, msp, rotation):
    return {"preset": preset, "seed": seed, "commit": "abc1234", "clean": 90.0, "corrupted": corrupted, "auroc_msp": msp, "auroc_rotation": rotation}

  rows = [row(aux, 0, 72.0, 70.0, 83.0), row(none, 0, 71.0, 74.0, 75.0),  # wins both
          row(aux, 1, 70.0, 70.0, 83.0), row(none, 1, 71.0, 74.0, 75.0),  # loses on corruptions
          row(aux, 2, 72.0, 70.0, 73.0)]  # no run without the auxiliary loss: not compared
  table = module.markdown_table(rows)
  seed_lines = [l for l in table.splitlines() if l.startswith("| `")]
  assert len(seed_lines) == 2
  assert seed_lines[0].endswith("| 72.0 / 71.0 | 83.0 / 74.0 | yes |")
  assert seed_lines[1].endswith("| 70.0 / 71.0 | 83.0 / 74.0 | no |")
  assert "wins on corruptions and OOD detection for 1 of 2 seeds" in table


def test_only_keeps_a_preset_whose_name_holds_a_comma(harness):
  chosen = [p.name for p in harness.select("configs/colorization.py:quick,larsson,multitask.py:quick")]
  assert chosen == ["configs/colorization.py:quick,larsson", "configs/multitask.py:quick"]


def _load(path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_compare_curves_reads_metrics_and_knn_history(tmp_path):
  curves = _load(_HARNESS.parent / "compare_curves.py")
  (tmp_path / "eval").mkdir()
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "probe_top1": 0.1}\n{"step": 3, "loss": 1.5}\n')
  (tmp_path / "eval" / "knn_history.json").write_text('[{"step": 250, "knn_top1": 18.9}, {"step": 600, "knn_top1": 25.4}]')
  assert curves.read_curve(tmp_path, "loss") == ([1, 3], [2.0, 1.5])  # step 2 has no loss
  assert curves.read_curve(tmp_path, "knn_top1") == ([250, 600], [18.9, 25.4])
  assert curves.parse_run("no local crops=/tmp/run") == ("no local crops", pathlib.Path("/tmp/run"))
  with pytest.raises(Exception, match="LABEL=WORKDIR"):
    curves.parse_run("/tmp/run")
  with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
    curves.read_curve(tmp_path / "missing", "loss")
