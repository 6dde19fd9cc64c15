"""Evaluation protocols: the kNN sweep against the single-setting kNN, the vmapped grid of linear
heads against heads trained one at a time, and a protocol run end to end on an exported backbone."""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jaxssl import checkpoint, models, parallel, train
from jaxssl.errors import UserError
from jaxssl.data import sources
from jaxssl.evaluation import finetune, knn, protocols
from jaxssl.models import functional
from tests import helpers


def _blobs(seed, count=240, dim=6, classes=3):
  rng = np.random.default_rng(seed)
  labels = np.arange(count) % classes
  centres = rng.standard_normal((classes, dim)) * 2.0
  return (centres[labels] + rng.standard_normal((count, dim))).astype(np.float32), labels


def test_knn_sweep_gives_each_settings_own_knn():
  train_features, train_labels = _blobs(0)
  test_features, test_labels = _blobs(1, count=60)
  scores = protocols.knn_sweep(train_features, train_labels, test_features, test_labels, ks=(1, 5, 50), temperatures=(0.05, 0.5), chunk_size=17)
  for k in (1, 5, 50):
    for t in (0.05, 0.5):
      assert scores[f"k={k},T={t:g}"] == pytest.approx(knn.knn_top1(train_features, train_labels, test_features, test_labels, k=k, temperature=t))


def test_vmapped_grid_matches_heads_trained_one_at_a_time():
  features, labels = _blobs(2)
  kwargs = dict(num_classes=3, epochs=3, batch_size=32, seed=0)
  heads, grid = protocols.train_linear_heads(features, labels, [0.01, 0.3], [0.0, 1e-2], **kwargs)
  grid_top1 = protocols.heads_top1(heads, features, labels)
  for chosen in (1, 2):  # two sampled settings of the 2 x 2 grid
    lr, wd = grid[chosen]
    alone, _ = protocols.train_linear_heads(features, labels, [lr], [wd], **kwargs)
    np.testing.assert_allclose(alone[0][0], heads[0][chosen], rtol=1e-5, atol=1e-6)
    assert protocols.heads_top1(alone, features, labels)[0] == pytest.approx(grid_top1[chosen])


def test_held_out_validation_split_is_stratified_and_disjoint():
  labels = np.repeat(np.arange(4), 20)
  fit, validation = protocols.held_out_split(labels, every=10)
  assert not set(fit) & set(validation) and len(fit) + len(validation) == 80
  assert np.bincount(labels[validation]).tolist() == [2, 2, 2, 2]


@pytest.mark.parametrize("protocol", ["knn", "linear", "linear_augmented", "finetune", "semisup"])
def test_protocol_runs_on_an_exported_backbone(tmp_path, protocol):
  resumable = protocol in ("linear_augmented", "finetune", "semisup")  # they checkpoint
  pretraining = helpers.tiny_byol_config()
  _, params, batch_stats = functional.split_module(models.make_backbone(pretraining.model, nnx.Rngs(0)))
  backbone = tmp_path / "run" / "export" / "backbone"
  checkpoint.export_backbone(str(backbone), params, batch_stats, pretraining.to_json_best_effort())
  config = ml_collections.ConfigDict(protocols_config(protocol.removesuffix("_augmented")))
  config.backbone = str(tmp_path / "run")
  if protocol == "linear_augmented":
    config.linear.mode = "augmented"
  protocol = config.protocol
  result = train.train_and_evaluate(config, str(tmp_path / "out"))
  with open(tmp_path / "out" / "eval" / f"{protocol}.json") as f:
    assert json.load(f) == json.loads(json.dumps(result))
  assert result["best_setting"] in result["scores"] and 0.0 <= result["best_top1"] <= 100.0
  assert result["data"] == pretraining.data.name
  assert result["image_size"] == pretraining.data.image_size  # the eval config's 0 keeps the pretraining's
  if protocol in ("linear", "finetune"):
    sizes = result["split_sizes"]
    assert sizes["validation"] > 0 and sizes["train"] > sizes["validation"]
  if protocol == "semisup":
    assert set(result["scores"]) == {"10%", "50%"} and result["best_setting"] == "50%"
    for name, fraction in (("10%", 0.1), ("50%", 0.5)):
      saved = np.loadtxt(tmp_path / "out" / "eval" / f"semisup_{name[:-1]}pct_indices.txt", dtype=np.int64)
      assert len(saved) == result["scores"][name]["labelled_examples"] == result["split_sizes"][f"train_{name}"]
  if resumable:
    # A second run finds the finished checkpoints, resumes at their last step and reports the same.
    again = train.train_and_evaluate(config, str(tmp_path / "out"))
    assert again["scores"] == result["scores"]


def protocols_config(protocol):
  import importlib.util

  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "eval", f"{protocol}.py")
  spec = importlib.util.spec_from_file_location(f"eval_{protocol}_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.max_train_examples, config.max_test_examples = 200, 100
  if protocol == "linear":
    config.linear.learning_rates, config.linear.weight_decays, config.linear.epochs = (0.1, 1.0), (0.0,), 2
  elif protocol in ("finetune", "semisup"):
    config.finetune.epochs, config.finetune.batch_size, config.finetune.crop_padding = 2, 50, 2
    if protocol == "semisup":
      config.semisup.fractions = (0.1, 0.5)
  else:
    config.knn.ks, config.knn.temperatures = (5, 20), (0.07,)
  return config.to_dict()


def test_semisup_subsets_are_stratified_and_seeded():
  labels = np.repeat(np.arange(4), [100, 50, 30, 7])
  subset = finetune.stratified_subset(labels, 0.1, seed=3)
  assert np.bincount(labels[subset], minlength=4).tolist() == [10, 5, 3, 1]  # at least one per class
  np.testing.assert_array_equal(subset, finetune.stratified_subset(labels, 0.1, seed=3))
  assert not np.array_equal(subset, finetune.stratified_subset(labels, 0.1, seed=4))
  with pytest.raises(UserError, match="label fraction"):
    finetune.stratified_subset(labels, 0.0, seed=0)


def test_layer_decay_gives_the_head_the_full_rate_and_the_stem_the_least():
  config = helpers.tiny_byol_config()
  _, params, _ = functional.split_module(models.make_backbone(config.model, nnx.Rngs(0)))
  params = {"backbone": params, "head": {"kernel": np.zeros((2, 2)), "bias": np.zeros(2)}}
  num_blocks = len(params["backbone"]["blocks"])
  rates = finetune.layer_rate_multipliers(params, 0.5)
  assert rates["head"]["kernel"] == 1.0
  assert rates["backbone"]["stem_conv"]["kernel"] == 0.5 ** (num_blocks + 1)
  for i in range(num_blocks):
    assert set(jax.tree.leaves(rates["backbone"]["blocks"][i])) == {0.5 ** (num_blocks - i)}
  assert set(jax.tree.leaves(finetune.layer_rate_multipliers(params, 1.0))) == {1.0}


def test_random_crop_flip_is_a_crop_of_the_padded_image():
  images = np.random.default_rng(0).integers(0, 256, (6, 5, 5, 3), dtype=np.uint8)
  out = np.asarray(finetune.random_crop_flip(jax.random.key(0), images, 1))
  floats = images.astype(np.float32) / 255.0
  for image, got in zip(floats, out):
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="reflect")
    crops = [c for i in range(3) for j in range(3) for c in (padded[i:i + 5, j:j + 5], padded[i:i + 5, j:j + 5][:, ::-1])]
    assert any(np.allclose(got, c, atol=1e-6) for c in crops)


def test_subset_files_by_index_or_by_file_name(tmp_path):
  names = [f"n0{c}_{i}.JPEG" for c in range(3) for i in range(4)]
  by_index = tmp_path / "by_index.txt"
  by_index.write_text("5\n1\n5\n")
  np.testing.assert_array_equal(protocols.read_subset(str(by_index), len(names)), [1, 5])
  # SimCLR's lists: one file name per line, maybe with more words after it.
  by_name = tmp_path / "1percent.txt"
  by_name.write_text("n02_3.JPEG\nn00_0.JPEG extra words\n\n")
  np.testing.assert_array_equal(protocols.read_subset(str(by_name), len(names), lambda: names), [0, 11])
  with pytest.raises(UserError, match="this data has none"):
    protocols.read_subset(str(by_name), len(names))
  with pytest.raises(UserError, match="1 of the 2 file names.*max_train_examples"):
    protocols.read_subset(str(by_name), len(names), lambda: names[:8])
  by_index.write_text("12\n")
  with pytest.raises(UserError, match="outside the 12 training examples"):
    protocols.read_subset(str(by_index), len(names))


def test_record_names_of_folders_and_subsets(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top

  for label in ("cat", "dog"):
    (tmp_path / label).mkdir()
    for i in range(3):
      Image.new("RGB", (4, 4)).save(tmp_path / label / f"{label}_{i}.png")
  folder = sources.ImageFolderSource(str(tmp_path))
  assert sources.record_names(folder, [0, 4]) == ["cat_0.png", "dog_1.png"]
  subset = sources.SubsetSource(folder, np.array([5, 2]))
  assert sources.record_names(subset, [1, 0]) == ["cat_2.png", "dog_2.png"]
  assert sources.record_names(sources.ArraySource({"image": np.zeros((2, 4, 4, 3), np.uint8)}), [0]) is None


@pytest.fixture(scope="module")
def brave_export(tmp_path_factory):
  """A BraVe run's exported narrow backbone (motion: frame differences of 4-frame 16 px clips), untrained."""
  from configs import brave as brave_config  # noqa: PLC0415
  from jaxssl import methods  # noqa: PLC0415

  c = brave_config.get_config()
  c.brave.narrow = brave_config._view("motion", 4, 1, 16, "small3d", 0.25)  # pylint: disable=protected-access
  c.brave.broad_views = [brave_config._view("motion", 4, 2, 8, "small3d", 0.25)]  # pylint: disable=protected-access
  method = methods.make_method(c)
  params, extra = method.init(jax.random.key(0))
  workdir = tmp_path_factory.mktemp("brave_run")
  checkpoint.export_backbone(str(workdir / "export" / "backbone"), params["backbone"], extra["batch_stats"]["backbone"], c.to_json_best_effort())
  return workdir, method, params, extra


def test_knn_protocol_runs_on_a_video_backbone(tmp_path, brave_export):
  """(Fine-tuning a video backbone, the semi-supervised protocol, runs in the BraVe notebook's test.)"""
  workdir, _, _, _ = brave_export
  config = ml_collections.ConfigDict(protocols_config("knn"))
  config.backbone = str(workdir)
  config.max_train_examples, config.max_test_examples = 60, 30
  result = train.train_and_evaluate(config, str(tmp_path / "out"))
  assert result["data"] == "builtin:moving_shapes"
  assert result["clip"] == {"frames": 4, "stride": 1, "size": 16, "modality": "motion"}
  assert result["split_sizes"] == {"train": 60, "test": 30}
  assert result["best_setting"] in result["scores"] and 0.0 <= result["best_top1"] <= 100.0


def test_a_video_backbone_embeds_as_its_method_does(brave_export):
  """The protocols rebuild the exported narrow backbone and its input (frame differences) from the
  stored config: their features equal the method's own `embed` of the same normalised clips."""
  from jaxssl import export  # noqa: PLC0415
  from jaxssl.evaluation import pretrained  # noqa: PLC0415
  from jaxssl.transforms import augment  # noqa: PLC0415

  workdir, method, params, extra = brave_export
  loaded = pretrained.load(str(workdir / "export" / "backbone"))
  assert loaded.input_key == "clip" and loaded.clip_view.modality == "motion"
  clips = np.random.default_rng(0).integers(0, 256, (3, 4, 16, 16, 3), dtype=np.uint8)
  expected = np.asarray(method.embed(params, extra, augment.normalize(clips)))
  np.testing.assert_allclose(loaded.features(clips, 8, parallel.make_mesh()), expected, rtol=1e-5, atol=1e-5)
  module = export.load_backbone(str(workdir / "export" / "backbone"))
  np.testing.assert_allclose(np.asarray(module(method.backbone_input(augment.normalize(clips)))), expected, rtol=1e-5, atol=1e-5)
  with pytest.raises(UserError, match="video backbone of a brave run.*--format=orbax"):
    export.export(str(workdir), "torch")


def test_finetuning_crops_every_frame_of_a_clip_alike():
  """Each clip is one crop (and maybe flip) of its padded frames, the same in every frame."""
  clips = np.random.default_rng(1).integers(0, 256, (5, 3, 6, 6, 3), dtype=np.uint8)
  out = np.asarray(finetune.random_crop_flip(jax.random.key(2), clips, 2))
  for clip, got in zip(clips.astype(np.float32) / 255.0, out):
    padded = np.pad(clip, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    crops = [c for i in range(5) for j in range(5) for c in (padded[:, i:i + 6, j:j + 6], padded[:, i:i + 6, j:j + 6][:, :, ::-1])]
    assert any(np.allclose(got, c, atol=1e-6) for c in crops)


def test_augmented_grid_on_eight_devices_matches_heads_trained_alone_on_one(tmp_path):
  """The standard (crop-augmented) linear protocol: the vmapped grid, its batches split over 8
  devices, gives each sampled setting the head it gets trained alone on one device."""
  from jaxssl.evaluation import pretrained  # noqa: PLC0415

  config = helpers.tiny_byol_config()
  _, params, batch_stats = functional.split_module(models.make_backbone(config.model, nnx.Rngs(0)))
  checkpoint.export_backbone(str(tmp_path / "backbone"), params, batch_stats, config.to_json_best_effort())
  loaded = pretrained.load(str(tmp_path / "backbone"))
  rng = np.random.default_rng(0)
  images, labels = rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8), np.arange(64) % 4
  dim = loaded.features(images[:8], 8, parallel.make_mesh()).shape[1]
  kwargs = dict(mean=np.zeros(dim), std=np.ones(dim), num_classes=4, epochs=2, batch_size=16, padding=2, seed=0, checkpoint_dir=None,
                checkpoint_every=100, log=lambda _: None)
  heads, grid = protocols.train_linear_heads_augmented(loaded, images, labels, [0.01, 0.3], [0.0, 1e-2], mesh=parallel.make_mesh(), **kwargs)
  assert len(grid) == 4 and float(np.abs(heads[0]).max()) > 0
  chosen = 2  # one sampled setting (each run compiles the frozen backbone's step anew)
  lr, wd = grid[chosen]
  alone, _ = protocols.train_linear_heads_augmented(loaded, images, labels, [lr], [wd], mesh=parallel.make_mesh(jax.devices()[:1]), **kwargs)
  np.testing.assert_allclose(alone[0][0], heads[0][chosen], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(alone[1][0], heads[1][chosen], rtol=1e-4, atol=1e-5)


def _pretext_config(name: str) -> ml_collections.ConfigDict:
  """Tiny configs of the image methods whose backbone reads something other than RGB."""
  import importlib  # noqa: PLC0415

  module, preset, overrides = {
      "zhang": ("colorization", "quick", {"colorization.target_cells": 4}),
      "larsson": ("colorization", "quick,larsson", {"colorization.target_cells": 4}),
      "relative_position": ("relative_position", "quick", {"relative_position.patch_size": 4, "relative_position.hidden_dim": 16}),
      "jigsaw": ("jigsaw", "quick", {"jigsaw.tile_size": 4, "jigsaw.tile_dim": 8, "jigsaw.hidden_dim": 16, "jigsaw.num_permutations": 10}),
  }[name]
  return helpers.tiny_config(importlib.import_module(f"configs.{module}").get_config(preset), **overrides)


@pytest.mark.parametrize("name", ["zhang", "larsson", "relative_position", "jigsaw"])
def test_a_pretext_backbone_is_fed_as_its_method_feeds_it(tmp_path, name):
  """Colorization's backbone reads lightness or grey, jigsaw's and relative position's images
  normalised per channel: the protocols rebuild that input from the exported config, so their
  features equal the method's own `embed` (with RGB fed as is, they would not)."""
  from jaxssl import methods  # noqa: PLC0415
  from jaxssl.evaluation import pretrained  # noqa: PLC0415
  from jaxssl.transforms import augment  # noqa: PLC0415

  config = _pretext_config(name)
  method = methods.make_method(config)
  params, extra = method.init(jax.random.key(0))
  checkpoint.export_backbone(str(tmp_path / "backbone"), params["backbone"], extra["batch_stats"]["backbone"], config.to_json_best_effort())
  loaded = pretrained.load(str(tmp_path / "backbone"))
  images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
  expected = np.asarray(method.embed(params, extra, augment.normalize(images)))
  np.testing.assert_allclose(loaded.features(images, 8, parallel.make_mesh()), expected, rtol=1e-5, atol=1e-5)
  rgb_fed, _ = loaded.backbone(loaded.params, loaded.batch_stats, augment.normalize(images), train=False)
  assert np.abs(np.asarray(rgb_fed) - expected).max() > 1e-3  # the input transform matters
