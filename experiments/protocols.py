"""Every evaluation protocol on the backbones of an image and a video preset, as one table.

    python experiments/protocols.py                                  # BYOL :quick and BraVe :quick
    python experiments/protocols.py --presets=configs/simclr.py:quick --workdir=/tmp/protocols

Each preset is pretrained first (`python -m jaxssl.main`) unless its workdir already holds an
exported backbone; then `configs/eval/{knn,linear,finetune,semisup}.py` run on it with their
default settings, the linear probe in both modes (pre-extracted features, and the standard
random crops). Every protocol is its own `jaxssl.main` run, so the table measures exactly what a
user's command gives. Prints a markdown table (protocol, best setting, top-1, split sizes, wall
seconds) and writes it with the commit to `WORKDIR/protocols.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (name, eval config, extra flags)
PROTOCOLS = (
    ("knn", "knn", []),
    ("linear (features)", "linear", []),
    ("linear (augmented)", "linear", ["--config.linear.mode=augmented"]),
    ("finetune", "finetune", []),
    ("semisup", "semisup", []),
)


def run(flags: list[str], log_path: Path) -> float:
  """Runs `python -m jaxssl.main FLAGS`, its output to `log_path`; returns the wall seconds."""
  start = time.time()
  with open(log_path, "w") as log:
    completed = subprocess.run([sys.executable, "-m", "jaxssl.main", *flags], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)
  if completed.returncode:
    raise SystemExit(f"error: `python -m jaxssl.main {' '.join(flags)}` failed; its output is in {log_path}.")
  return time.time() - start


def slug(preset: str) -> str:
  return preset.removeprefix("configs/").replace(".py", "").replace(":", "_").replace(",", "_")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--presets", default="configs/byol.py:quick,configs/brave.py:quick")
  parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "jaxssl_protocols"))
  args = parser.parse_args()
  workdir = Path(args.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  commit = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
  rows = []
  for preset in [p.strip() for p in args.presets.split(",") if p.strip()]:
    pretrained = workdir / slug(preset)
    if not (pretrained / "export" / "backbone").is_dir():
      print(f"pretraining {preset} ...", flush=True)
      seconds = run([f"--config={preset}", f"--workdir={pretrained}"], workdir / f"{slug(preset)}.log")
      print(f"  {seconds:.0f} s", flush=True)
    for name, config, flags in PROTOCOLS:
      out = workdir / f"{slug(preset)}_{name.replace(' ', '_').replace('(', '').replace(')', '')}"
      print(f"{preset}: {name} ...", flush=True)
      seconds = run([f"--config=configs/eval/{config}.py", f"--config.backbone={pretrained}", f"--workdir={out}", *flags], Path(f"{out}.log"))
      with open(out / "eval" / f"{config}.json") as f:
        result = json.load(f)
      rows.append({
          "preset": preset, "protocol": name, "best_setting": result["best_setting"], "top1": round(result["best_top1"], 1),
          "split_sizes": result["split_sizes"], "wall_seconds": round(seconds, 1), "commit": commit,
      })
      print(f"  top-1 {result['best_top1']:.1f} ({result['best_setting']}), {seconds:.0f} s", flush=True)
  (workdir / "protocols.json").write_text(json.dumps(rows, indent=1))
  print("\n| preset | protocol | best setting | top-1 | split sizes | wall s | commit |\n|---|---|---|---|---|---|---|")
  for r in rows:
    sizes = ", ".join(f"{k} {v}" for k, v in r["split_sizes"].items())
    print(f"| `{r['preset']}` | {r['protocol']} | {r['best_setting']} | {r['top1']} | {sizes} | {r['wall_seconds']:.0f} | {r['commit']} |")


if __name__ == "__main__":
  main()
