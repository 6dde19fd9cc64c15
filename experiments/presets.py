"""Re-runs the published presets, one at a time, and writes the results table.

    python experiments/presets.py                           # every preset, seeds 0, 1 and 2
    python experiments/presets.py --only=simclr,brave --seeds=0
    python experiments/presets.py --only=held-out           # the default presets on builtin:scenes
    python experiments/presets.py --only=pretext-on-patterns --seeds=0  # pretext tasks on patterns
    python experiments/presets.py --table-only              # rewrite the tables from results.json

Each run is `python -m jaxssl.main --config=PRESET --workdir=... --config.seed=N` in a fresh
process; its `eval/summary.json` becomes one row of `experiments/results/results.json` (keyed by
preset, seed and commit, so older commits' rows stay on record). The tables in
`experiments/results/presets.md`, README.md and experiments/README.md (between the
`<!-- presets:begin -->` and `<!-- presets:end -->` markers) are written from that file and show,
per preset, the newest commit at which it was measured.

Two tables. `presets`: every `:quick` preset (and the default presets of BraVe and BYOL) on the
data it was tuned on. `held-out`: every image method's default preset on `builtin:scenes`, data no
preset was tuned on (`--config.data.name=builtin:scenes`, nothing else changed), within the
`<!-- held-out:begin -->` / `<!-- held-out:end -->` markers.

A row counts only if it was measured on a clean checkout with the library versions pinned in
constraints.txt: the harness refuses to run otherwise (`--allow-unpinned` / `--allow-dirty`
record such rows, marked, for investigation).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "experiments" / "results"
HELD_OUT_DATA = "builtin:scenes"
# A preset beats the baselines only with this margin (kNN points over the better baseline).
MARGIN = 2.0
# Changes to shared code after which earlier rows no longer describe what the code computes:
# (commit, what changed). A preset whose newest rows predate one of them is marked stale in the
# tables until it is re-measured.
NUMBER_CHANGES = (
    ("1bed1e8", "augmentation on dm-pix: torchvision's grayscale weights, dm-pix's HSV round trip"),
)


@dataclasses.dataclass(frozen=True)
class Preset:
  config: str  # the --config argument
  note: str = ""  # what the reader must know about the row (e.g. a documented exception)
  required_margin: float = MARGIN
  data: str = ""  # --config.data.name, when not the preset's own

  @property
  def name(self) -> str:
    """The preset's key in results.json and its name in the tables."""
    return f"{self.config} on {self.data}" if self.data else self.config

  def command_flags(self) -> list[str]:
    return [f"--config={self.config}"] + ([f"--config.data.name={self.data}"] if self.data else [])


PRESETS = (
    Preset("configs/brave.py", "the quickstart (`make run`): narrow motion clip, audio broad view, 600 steps", 10.0),
    Preset("configs/brave.py:quick"),
    Preset("configs/brave.py:motion_audio", "the previous quickstart: motion + audio broad views, batch 64"),
    Preset("configs/gdt.py:quick", "time-reversal distinctive, time-shift invariant (hypothesis 8)"),
    Preset("configs/videomoco.py:quick", "motion clips; the generator drops 2 of 7 frame differences from step 150"),
    Preset("configs/simclr.py:quick"),
    Preset("configs/moco.py:quick", "MoCo v2; kNN with k=200"),
    Preset("configs/moco.py:v1,quick", "kNN with k=200"),
    Preset("configs/moco_v3.py:quick"),
    Preset("configs/npid.py:quick", "kNN with k=200"),
    Preset("configs/swav.py:quick"),
    Preset("configs/dino.py:quick"),
    Preset("configs/barlow_twins.py:quick"),
    Preset("configs/simsiam.py:quick"),
    Preset("configs/vicreg.py:quick"),
    Preset("configs/byol.py:quick", "documented exception: the bootstrap target has nothing to start from here"),
    Preset("configs/byol.py", "documented exception, 600 steps"),
    # The pretext tasks, on builtin:scenes (their CPU data: an upright, a layout, object colours).
    Preset("configs/rotnet.py:quick", "on builtin:scenes"),
    Preset("configs/rotation_decoupling.py:quick", "on builtin:scenes"),
    Preset("configs/jigsaw.py:quick", "on builtin:scenes, 48 px"),
    Preset("configs/deeppermnet.py:quick", "on builtin:scenes, 48 px"),
    Preset("configs/relative_position.py:quick", "on builtin:scenes, 48 px"),
    Preset("configs/exemplar.py:quick", "on builtin:scenes, 1280 exemplars"),
    Preset("configs/colorization.py:quick", "on builtin:scenes"),
    Preset("configs/colorization.py:quick,larsson", "on builtin:scenes, Larsson et al.'s hue/chroma head"),
    Preset("configs/context_encoder.py:quick", "on builtin:scenes, the central hole"),
    Preset("configs/transitive_invariance.py:quick", "on builtin:scenes"),
    Preset("configs/multitask.py:quick", "on builtin:scenes, 48 px: relative position and exemplar (the default adds colorization and motion segmentation)"),
)
IMAGE_METHODS = ("simclr", "moco", "moco_v3", "npid", "swav", "dino", "barlow_twins", "simsiam", "vicreg", "byol")
# The held-out presets that fail there, each with the measured reason (experiments/README.md,
# "On held-out data", has their curves). Nothing was tuned on the scenes to make a row pass.
HELD_OUT_EXCEPTIONS = {
    "swav": "documented exception: its 16 px local crops drive the embeddings to collapse by step 40 (without them: no collapse, 25.4)",
    "simsiam": "documented exception: its all-grey views (chosen on the patterns) drop the colour; still rising at 1800 steps (35.9)",
    "byol": "documented exception: the bootstrap target has nothing to start from here",
}
HELD_OUT = tuple(Preset(f"configs/{method}.py", HELD_OUT_EXCEPTIONS.get(method, ""), data=HELD_OUT_DATA) for method in IMAGE_METHODS)
# The pretext tasks' presets on the data they were not made for (issue: "record the result,
# whatever it is"): patterns have no upright, no layout and no colour tied to the class.
PRETEXT_METHODS = ("rotnet", "rotation_decoupling", "jigsaw", "deeppermnet", "relative_position", "exemplar")
PRETEXT_ON_PATTERNS = tuple(Preset(f"configs/{method}.py:quick", data="builtin:patterns") for method in PRETEXT_METHODS)
# Each table and the marker name of its block in the documents.
TABLES = {"presets": PRESETS, "held-out": HELD_OUT, "pretext-on-patterns": PRETEXT_ON_PATTERNS}


def markers(table: str) -> tuple[str, str]:
  return f"<!-- {table}:begin -->", f"<!-- {table}:end -->"


# ----------------------------------------------------------------------------------------------
# Running.
# ----------------------------------------------------------------------------------------------


def git(*args: str) -> str:
  return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


# What the harness writes itself: a second invocation in the same checkout must not count its
# predecessor's tables as uncommitted code.
OUTPUTS = ("experiments/results", "README.md", "experiments/README.md")


def checkout_state() -> tuple[str, bool]:
  """(short commit, whether tracked files other than the harness's outputs differ from it)."""
  excluded = [f":(exclude){path}" for path in OUTPUTS]
  return git("rev-parse", "--short=7", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", *excluded))


def check_environment() -> list[str]:
  sys.path.insert(0, str(ROOT))
  from jaxssl import environment

  pins = environment.read_constraints(str(ROOT / "constraints.txt"))
  return environment.unpinned_packages(pins, environment.package_versions())


def run_preset(preset: Preset, seed: int, workdir: pathlib.Path, log_path: pathlib.Path) -> dict:
  """Runs one preset to completion in its own process; returns its eval/summary.json."""
  if workdir.exists():
    shutil.rmtree(workdir)  # a stale checkpoint would resume instead of re-measuring
  command = [sys.executable, "-m", "jaxssl.main", *preset.command_flags(), f"--workdir={workdir}", f"--config.seed={seed}"]
  start = time.time()
  with open(log_path, "w") as log:
    # This checkout's jaxssl, whatever checkout the venv was installed from.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:  # keep the progress line visible
      log.write(line)
      if line.startswith("step ") or line.startswith("error"):
        print(f"    {line.rstrip()}", flush=True)
    process.wait()
  if process.returncode:
    raise RuntimeError(f"{preset.name} seed {seed} failed (exit {process.returncode}); see {log_path}")
  with open(workdir / "eval" / "summary.json") as f:
    summary = json.load(f)
  summary["process_seconds"] = round(time.time() - start, 1)
  return summary


def make_row(preset: Preset, seed: int, summary: dict, commit: str, dirty: bool, unpinned: list[str]) -> dict:
  env = summary.get("environment", {})
  return {
      "preset": preset.name,
      "seed": seed,
      "commit": commit + ("+dirty" if dirty else ""),
      "knn_top1": summary["knn_top1"],
      "linear_top1": summary.get("linear_top1"),
      "knn_top1_random_init": summary["knn_top1_random_init"],
      "knn_top1_pixels": summary["knn_top1_pixels"],
      "steps": summary["steps"],
      "wall_seconds": summary.get("wall_seconds"),
      "measured_on": time.strftime("%Y-%m-%d"),
      "environment": env,
      "unpinned": unpinned,
  }


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
  """`new` replaces rows of `old` with the same (preset, seed, commit)."""
  key = lambda r: (r["preset"], r["seed"], r["commit"])
  replaced = {key(r) for r in new}
  return [r for r in old if key(r) not in replaced] + list(new)


# ----------------------------------------------------------------------------------------------
# Tables.
# ----------------------------------------------------------------------------------------------


def latest_rows(rows: list[dict], presets=PRESETS) -> dict[str, list[dict]]:
  """Per preset, the rows of the newest commit it was measured at (file order breaks ties)."""
  by_preset = {}
  for preset in presets:
    mine = [r for r in rows if r["preset"] == preset.name]
    if mine:
      newest = mine[-1]["commit"]
      by_preset[preset.name] = sorted((r for r in mine if r["commit"] == newest), key=lambda r: r["seed"])
  return by_preset


def predates(change: str, commit: str) -> bool:
  """Whether a row's `commit` is older than `change` (does not contain it). Unknown commits are
  not judged: a row from a clone that is not this one's ancestor cannot be placed."""
  result = subprocess.run(["git", "merge-base", "--is-ancestor", change, commit.split("+")[0]], cwd=ROOT, capture_output=True)
  return result.returncode == 1


def stale_changes(commit: str, changes=NUMBER_CHANGES, predates=predates) -> list[tuple[str, str]]:
  """The changes of `changes` that a row measured at `commit` predates."""
  return [(change, what) for change, what in changes if predates(change, commit)]


def margin(row: dict) -> float:
  """kNN points above the better of the two baselines."""
  return row["knn_top1"] - max(row["knn_top1_random_init"], row["knn_top1_pixels"])


def _per_seed(values: list[str]) -> str:
  """One value when every seed gives it, else each seed's in seed order."""
  return values[0] if len(set(values)) == 1 else " / ".join(values)


def _environment_key(row: dict) -> str | None:
  """What a row's number depends on besides the code: library versions, device and CPU."""
  env = row.get("environment")
  return json.dumps({k: env.get(k) for k in ("packages", "device_kind", "cpu")}, sort_keys=True) if env else None


def machine_labels(rows: list[dict]) -> dict[str, str]:
  """A letter (A, B, ...) for each distinct environment of `rows`, in a stable order."""
  keys = sorted({k for k in map(_environment_key, rows) if k})
  return {key: chr(ord("A") + i) for i, key in enumerate(keys)}


def _environment_line(labels: dict[str, str]) -> str:
  lines = []
  for text, label in labels.items():
    env = json.loads(text)
    packages = ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items() if k in ("jax", "jaxlib", "flax", "optax", "numpy"))
    cpu = env.get("cpu") or {}
    lines.append(f"**{label}**: {packages}; device {env.get('device_kind')}; {cpu.get('model')} ({'/'.join(cpu.get('features', []))}), {cpu.get('cores')} cores")
  return ("Machines (the `on` column; the same commit can give other bits on another CPU): " + "; ".join(lines) + ".") if lines else ""


def markdown_table(rows: list[dict], presets=PRESETS, changes=NUMBER_CHANGES, predates=predates) -> str:
  """The results table: one line per preset, every seed's kNN, both baselines, the verdict."""
  latest = latest_rows(rows, presets)
  # Letters from every row on record, so that each machine keeps its letter in every table.
  labels = machine_labels(rows)
  shown = {_environment_key(r) for rs in latest.values() for r in rs}
  stale_seen = set()
  lines = [
      "| preset | commit | on | kNN per seed | random init | raw pixels | linear (mean) | wall s (mean) | beats both baselines by the margin on every seed | note |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for preset in presets:
    mine = latest.get(preset.name)
    if not mine:
      lines.append(f"| `{preset.name}` | - | | not measured | | | | | | {preset.note} |")
      continue
    machines = _per_seed([labels.get(_environment_key(r), "?") for r in mine])
    knn = " / ".join(f"{r['knn_top1']:.1f} (s{r['seed']})" for r in mine)
    random_init, pixels = (_per_seed([f"{r[key]:.1f}" for r in mine]) for key in ("knn_top1_random_init", "knn_top1_pixels"))
    linear = [r["linear_top1"] for r in mine if r.get("linear_top1") is not None]
    walls = [r["wall_seconds"] for r in mine if r.get("wall_seconds") is not None]
    worst = min(margin(r) for r in mine)
    passed = all(margin(r) >= preset.required_margin for r in mine)
    verdict = f"{'yes' if passed else 'no'} (worst {worst:+.1f}, needs +{preset.required_margin:g})"
    flags = [f for f in ("unpinned versions" if any(r.get("unpinned") for r in mine) else "", "dirty tree" if any("dirty" in r["commit"] for r in mine) else "") if f]
    stale = stale_changes(mine[0]["commit"], changes, predates)
    stale_seen.update(stale)
    note = "; ".join(filter(None, [*(f"**stale**: predates {change}" for change, _ in stale), preset.note, *flags]))
    lines.append(
        f"| `{preset.name}` | {mine[0]['commit']} | {machines} | {knn} | {random_init} | {pixels} | "
        f"{sum(linear) / len(linear) if linear else float('nan'):.1f} | {sum(walls) / len(walls) if walls else float('nan'):.0f} | {verdict} | {note} |"
    )
  environment = _environment_line({key: label for key, label in labels.items() if key in shown})
  legend = [f"Rows marked stale were measured before {change} ({what}) and await re-measurement." for change, what in sorted(stale_seen)]
  return "\n".join(lines) + "".join("\n\n" + text for text in (*legend, environment) if text) + "\n"


def replace_between_markers(text: str, table: str, name: str = "presets") -> str:
  begin, end = markers(name)
  if begin not in text or end not in text:
    raise ValueError(f"the file has no {begin} ... {end} block to put the table in")
  head, rest = text.split(begin, 1)
  _, tail = rest.split(end, 1)
  return f"{head}{begin}\n{table}{end}{tail}"


def write_tables(rows: list[dict], results_dir: pathlib.Path, documents=(), tables=None) -> str:
  """Writes results.json, presets.md (every table) and each table's block in `documents`."""
  tables = {name: markdown_table(rows, presets) for name, presets in (tables or TABLES).items()}
  results_dir.mkdir(parents=True, exist_ok=True)
  (results_dir / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
  titles = {
      "presets": "Presets on the data they were tuned on",
      "held-out": f"Default presets on held-out data ({HELD_OUT_DATA})",
      "pretext-on-patterns": "Pretext-task presets on builtin:patterns",
  }
  (results_dir / "presets.md").write_text(
      "# Preset results\n\nWritten by `python experiments/presets.py`; do not edit by hand.\n\n"
      + "\n".join(f"## {titles.get(name, name)}\n\n{table}" for name, table in tables.items())
  )
  # A document shows the tables whose marker block it has; every table must land in one.
  shown = set()
  for document in documents:
    path = pathlib.Path(document)
    text = path.read_text()
    for name, table in tables.items():
      if markers(name)[0] in text:
        text = replace_between_markers(text, table, name)
        shown.add(name)
    path.write_text(text)
  if documents and (missing := sorted(set(tables) - shown)):
    raise ValueError(f"no document has a block for the table(s) {missing}; add {[markers(n) for n in missing]} to one of {[str(d) for d in documents]}.")
  return "\n".join(tables.values())


def read_rows(results_dir: pathlib.Path) -> list[dict]:
  path = results_dir / "results.json"
  return json.loads(path.read_text()) if path.exists() else []


# ----------------------------------------------------------------------------------------------


def _split_only(only: str, names: set[str]) -> list[str]:
  """`only`'s comma-separated entries, where a preset whose own name holds commas (e.g.
  `configs/colorization.py:quick,larsson`) stays one entry: the longest run of pieces that names a
  preset wins."""
  pieces = [w.strip() for w in only.split(",") if w.strip()]
  known = names | {n.removeprefix("configs/") for n in names}
  entries, start = [], 0
  while start < len(pieces):
    end = next((e for e in range(len(pieces), start + 1, -1) if ",".join(pieces[start:e]) in known), start + 1)
    entries.append(",".join(pieces[start:end]))
    start = end
  return entries


def select(only: str) -> list[Preset]:
  """Presets named (or prefixed) in `only`, or whole tables by name ('presets', 'held-out')."""
  everything = [p for presets in TABLES.values() for p in presets]
  if not only:
    return everything
  wanted = _split_only(only, {p.name for p in everything})
  chosen = [
      p for p in everything
      if any(p.name == w or p.name == f"configs/{w}" or p.name.removeprefix("configs/").startswith(w) or p in TABLES.get(w, ()) for w in wanted)
  ]
  if not chosen:
    raise SystemExit(f"error: --only={only} matches no preset; choose table names {list(TABLES)} or presets from {[p.name for p in everything]}.")
  return chosen


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--only", default="", help="comma-separated preset names or prefixes, e.g. simclr,configs/brave.py")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "jaxssl_presets"))
  parser.add_argument("--table-only", action="store_true", help="rewrite the tables from results.json, run nothing")
  parser.add_argument("--allow-unpinned", action="store_true", help="record rows measured with other library versions")
  parser.add_argument("--allow-dirty", action="store_true", help="record rows measured on uncommitted changes")
  args = parser.parse_args()
  documents = [ROOT / "README.md", ROOT / "experiments" / "README.md"]

  rows = read_rows(RESULTS_DIR)
  if args.table_only:
    print(write_tables(rows, RESULTS_DIR, documents))
    return
  commit, dirty = checkout_state()
  unpinned = check_environment()
  if unpinned and not args.allow_unpinned:
    raise SystemExit("error: installed versions differ from constraints.txt: " + "; ".join(unpinned) + ". Run `make install` (or pass --allow-unpinned to record the difference).")
  if dirty and not args.allow_dirty:
    raise SystemExit("error: tracked files have uncommitted changes, so no commit names this code; commit first (or pass --allow-dirty).")
  seeds = [int(s) for s in args.seeds.split(",")]
  presets = select(args.only)
  print(f"{len(presets) * len(seeds)} runs at {commit}{' (dirty)' if dirty else ''}, one at a time", flush=True)
  for preset in presets:
    for seed in seeds:
      print(f"{preset.name} seed {seed}", flush=True)
      name = preset.name.removeprefix("configs/").replace(".py", "").replace(" on ", "_").replace(":", "_").replace(",", "_")
      workdir = pathlib.Path(args.workdir) / f"{name}_s{seed}"
      workdir.parent.mkdir(parents=True, exist_ok=True)
      summary = run_preset(preset, seed, workdir, workdir.parent / f"{name}_s{seed}.log")
      row = make_row(preset, seed, summary, commit, dirty, unpinned)
      print(f"  kNN {row['knn_top1']:.1f} (random init {row['knn_top1_random_init']:.1f}, pixels {row['knn_top1_pixels']:.1f}), {row['wall_seconds']} s", flush=True)
      rows = merge_rows(read_rows(RESULTS_DIR), [row])  # re-read: another invocation may have written
      write_tables(rows, RESULTS_DIR, documents)
  print(write_tables(read_rows(RESULTS_DIR), RESULTS_DIR, documents))


if __name__ == "__main__":
  main()
