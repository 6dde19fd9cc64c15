"""Writes a folder of ImageNet-sized JPEGs for timing the host pipeline on real decoding.

The datasets a user trains on (ImageNet: about 500 x 375 px, JPEG quality near 90) cannot be
downloaded here, so this cuts photos of that size from the two photographs scikit-learn ships
(`sklearn.datasets.load_sample_images`, 640 x 427 px): random 500 x 375 windows, half of them
mirrored, each saved at JPEG quality 90, into two class folders (`china/`, `flower/`).

  python experiments/make_sample_jpegs.py --out=/tmp/jpegs --count=512
  python experiments/benchmark.py --config=configs/byol.py:imagenet \
      --config.data.name=folder:/tmp/jpegs --pipeline_only --pipeline_workers=0,1,2
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images

WIDTH, HEIGHT = 500, 375  # a typical ImageNet training image


def write_sample_jpegs(out: pathlib.Path, count: int, seed: int = 0, quality: int = 90) -> list[pathlib.Path]:
  """`count` JPEGs of WIDTH x HEIGHT px, alternating between the two photographs."""
  photos = load_sample_images()
  names = [pathlib.Path(f).stem for f in photos.filenames]
  rng = np.random.default_rng(seed)
  paths = []
  for i in range(count):
    photo, name = photos.images[i % len(names)], names[i % len(names)]
    top = int(rng.integers(0, photo.shape[0] - HEIGHT + 1))
    left = int(rng.integers(0, photo.shape[1] - WIDTH + 1))
    window = photo[top : top + HEIGHT, left : left + WIDTH]
    if rng.random() < 0.5:
      window = window[:, ::-1]
    path = out / name / f"{i:05d}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(window)).save(path, quality=quality)
    paths.append(path)
  return paths


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True, help="folder to write (class sub-folders inside)")
  parser.add_argument("--count", type=int, default=512)
  args = parser.parse_args()
  paths = write_sample_jpegs(pathlib.Path(args.out), args.count)
  size = sum(p.stat().st_size for p in paths) / len(paths) / 1024
  print(f"wrote {len(paths)} JPEGs of {WIDTH} x {HEIGHT} px (mean {size:.0f} KiB) to {args.out}")


if __name__ == "__main__":
  main()
