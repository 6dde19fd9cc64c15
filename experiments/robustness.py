"""Re-runs SSL for robustness with and without its auxiliary rotation loss and writes the table.

    python experiments/robustness.py                    # the :quick presets, seeds 0, 1 and 2
    python experiments/robustness.py --scale= --seeds=0 # the default presets (1200 steps)
    python experiments/robustness.py --table-only

Hendrycks et al. (2019) claim two gains from the auxiliary rotation loss: accuracy under input
corruptions, and out-of-distribution detection when the rotation loss joins the score. So each
seed trains `configs/ssl_robustness.py:SCALE` (lambda 0.5) and `:SCALE,baseline` (lambda 0), and
the table compares the corrupted accuracy of the two, and the OOD AUROC of the paper's score
(rotation loss - KL(U || p)) with the auxiliary loss against the plain classifier's maximum
softmax probability without it. Rows are kept in `experiments/results/robustness.json` (keyed by
preset, seed and commit); the table goes between the `<!-- robustness:begin -->` and
`<!-- robustness:end -->` markers of README.md and experiments/README.md. Runs refuse a dirty
checkout or unpinned library versions, as `experiments/presets.py` does.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import presets as harness  # noqa: E402  (the preset harness: running, commits, markers)

RESULTS_FILE = harness.RESULTS_DIR / "robustness.json"
CONFIG = "configs/ssl_robustness.py"
METRICS = {
    "clean": "robustness_clean_top1",
    "corrupted": "robustness_corrupted_top1",
    "auroc_msp": "robustness_ood_auroc_msp",
    "auroc_rotation": "robustness_ood_auroc_rotation_minus_kl",
}


def pair(scale: str) -> tuple[harness.Preset, harness.Preset]:
  """(with the auxiliary loss, without it) at one scale ('' is the default preset)."""
  return harness.Preset(f"{CONFIG}:{scale}" if scale else CONFIG), harness.Preset(f"{CONFIG}:{scale + ',' if scale else ''}baseline")


def scale_of(preset_name: str) -> str:
  """'configs/ssl_robustness.py:quick,baseline' -> 'quick'."""
  tokens = preset_name.removeprefix(CONFIG).lstrip(":").split(",")
  return ",".join(t for t in tokens if t and t != "baseline")


def make_row(preset: harness.Preset, seed: int, summary: dict, commit: str) -> dict:
  return {"preset": preset.name, "seed": seed, "commit": commit, **{k: summary[v] for k, v in METRICS.items()},
          "wall_seconds": summary.get("wall_seconds")}


def markdown_table(rows: list[dict]) -> str:
  """One line per (scale, seed) measured with and without the auxiliary loss at the same commit,
  newest commit per scale, and a verdict per scale over its seeds."""
  lines = [
      "| preset | commit | seed | clean: aux / none | corrupted: aux / none | OOD AUROC: aux, rotation - KL / none, max softmax | aux wins both |",
      "|---|---|---|---|---|---|---|",
  ]
  verdicts = []
  scales = dict.fromkeys(scale_of(r["preset"]) for r in rows)
  for scale in scales:
    aux, none = (p.name for p in pair(scale))
    with_aux = {(r["commit"], r["seed"]): r for r in rows if r["preset"] == aux}
    without = {(r["commit"], r["seed"]): r for r in rows if r["preset"] == none}
    both = [key for key in with_aux if key in without]
    if not both:
      continue
    newest = both[-1][0]
    wins = []
    for commit, seed in sorted(key for key in both if key[0] == newest):
      a, b = with_aux[(commit, seed)], without[(commit, seed)]
      win = a["corrupted"] > b["corrupted"] and a["auroc_rotation"] > b["auroc_msp"]
      wins.append(win)
      lines.append(
          f"| `{aux}` vs `baseline` | {commit} | {seed} | {a['clean']:.1f} / {b['clean']:.1f} | {a['corrupted']:.1f} / {b['corrupted']:.1f} | "
          f"{a['auroc_rotation']:.1f} / {b['auroc_msp']:.1f} | {'yes' if win else 'no'} |"
      )
    verdicts.append(f"`{aux}`: the auxiliary loss wins on corruptions and OOD detection for {sum(wins)} of {len(wins)} seeds.")
  if not verdicts:
    return "Not measured yet: run `python experiments/robustness.py`.\n"
  return "\n".join(lines) + "".join(f"\n\n{v}" for v in verdicts) + "\n"


def write_tables(rows: list[dict], documents=()) -> str:
  table = markdown_table(rows)
  RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
  RESULTS_FILE.write_text(json.dumps(rows, indent=1) + "\n")
  for document in documents:
    path = pathlib.Path(document)
    path.write_text(harness.replace_between_markers(path.read_text(), table, "robustness"))
  return table


def read_rows() -> list[dict]:
  return json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.exists() else []


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--scale", default="quick", help="'quick', or '' for the default preset")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "jaxssl_robustness"))
  parser.add_argument("--table-only", action="store_true")
  args = parser.parse_args()
  documents = [harness.ROOT / "README.md", harness.ROOT / "experiments" / "README.md"]
  if args.table_only:
    print(write_tables(read_rows(), documents))
    return
  commit, dirty = harness.checkout_state()
  unpinned = harness.check_environment()
  if dirty or unpinned:
    raise SystemExit(f"error: {'uncommitted changes' if dirty else 'unpinned versions: ' + '; '.join(unpinned)}; commit (or `make install`) first.")
  for seed in (int(s) for s in args.seeds.split(",")):
    for preset in pair(args.scale):
      name = preset.name.removeprefix("configs/").replace(".py", "").replace(":", "_").replace(",", "_")
      workdir = pathlib.Path(args.workdir) / f"{name}_s{seed}"
      workdir.parent.mkdir(parents=True, exist_ok=True)
      print(f"{preset.name} seed {seed}", flush=True)
      row = make_row(preset, seed, harness.run_preset(preset, seed, workdir, workdir.parent / f"{name}_s{seed}.log"), commit)
      print(f"  clean {row['clean']:.1f}, corrupted {row['corrupted']:.1f}, AUROC msp {row['auroc_msp']:.1f}, rotation {row['auroc_rotation']:.1f}", flush=True)
      write_tables(harness.merge_rows(read_rows(), [row]), documents)
  print(write_tables(read_rows(), documents))


if __name__ == "__main__":
  main()
