"""GDT: the pair masks of every hypothesis against hand-written tables, the loss against a hand
computation, the host views and time reversal, one step on 1 vs 8 devices, the paper preset traced."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import gdt as gdt_config
from jaxssl import losses, methods, optim, parallel, train
from jaxssl.data import builtin_av, video
from jaxssl.errors import UserError
from jaxssl.evaluation import evaluator
from jaxssl.methods import gdt
from jaxssl.transforms import augment
from tests import helpers  # noqa: F401  (puts the repository root on sys.path)

# --- the pair masks ------------------------------------------------------------------------------
#
# Samples of a 2-video batch in a readable order: video 0's clips, video 0's audio, video 1's
# clips, video 1's audio; within a modality the transforms the hypothesis samples, in the
# official order v, vR, v2, v2R ('R' reversed, '2' the second time window).
# '+' positive pair, '-' negative pair, '.' not compared.

# Hypothesis 8 (distinctive to time reversal, invariant to time shift), all 16 x 16 pairs
# (rows and columns: v vR v2 v2R a aR a2 a2R of video 0, then the same of video 1).
HYPOTHESIS_8 = """
....+-+-....----
....-+-+....----
....+-+-....----
....-+-+....----
+-+-....----....
-+-+....----....
+-+-....----....
-+-+....----....
....----....+-+-
....----....-+-+
....----....+-+-
....----....-+-+
----....+-+-....
----....-+-+....
----....+-+-....
----....-+-+....
"""

# The same-video block (rows: the clips, columns: the audio) of every hypothesis; every other
# cross-modal pair is a negative (another video) and same-modality pairs are never compared.
SAME_VIDEO_BLOCKS = {
    1: ["+"],  # transforms: v
    2: ["+-", "-+"],  # v, vR: the reversed audio is a hard negative
    3: ["++", "++"],  # v, vR
    4: ["+-", "-+"],  # v, v2: the shifted audio is a hard negative
    5: ["++", "++"],  # v, v2
    6: ["+---", "-+--", "--+-", "---+"],  # v, vR, v2, v2R
    7: ["++--", "++--", "--++", "--++"],
    8: ["+-+-", "-+-+", "+-+-", "-+-+"],
    9: ["++++", "++++", "++++", "++++"],
}


def _readable_descriptors(transforms, num_videos=2):
  """(video, window, reversed, modality) in the order of the tables above."""
  rows = [(b, w, r, m) for b in range(num_videos) for m in (gdt.VIDEO, gdt.AUDIO) for (w, r) in transforms]
  return tuple(np.asarray(column) for column in zip(*rows))


def _full_table(block, num_videos=2):
  """The M x M table of a same-video block: '.' within a modality, '-' across videos."""
  t = len(block)
  rows = []
  for b in range(num_videos):
    for m in range(2):
      for i in range(t):
        row = ""
        for b2 in range(num_videos):
          for m2 in range(2):
            for j in range(t):
              if m == m2:
                row += "."
              elif b != b2:
                row += "-"
              else:
                row += block[i][j] if m == gdt.VIDEO else block[j][i]
        rows.append(row)
  return rows


def _as_table(positive, compared):
  return ["".join("+" if p and c else ("-" if c else ".") for p, c in zip(prow, crow)) for prow, crow in zip(positive, compared)]


def test_hand_written_table_of_hypothesis_8_is_its_block():
  assert HYPOTHESIS_8.split() == _full_table(SAME_VIDEO_BLOCKS[8])


@pytest.mark.parametrize("number", sorted(gdt.HYPOTHESES))
def test_pair_masks_of_every_hypothesis(number):
  reversal, shift = gdt.HYPOTHESES[number]
  transforms = gdt.sampled_transforms(reversal, shift)
  assert len(transforms) == len(SAME_VIDEO_BLOCKS[number])
  positive, compared = gdt.pair_masks(*_readable_descriptors(transforms), reversal=reversal, shift=shift)
  assert _as_table(positive, compared) == _full_table(SAME_VIDEO_BLOCKS[number])
  assert (positive == positive.T).all() and (compared == compared.T).all()


def test_ignored_transformation_present_in_the_batch_is_not_compared():
  """'ignore' leaves pairs of one video that differ in the ignored transformation out of the loss,
  unless they also differ in a 'variant' one (then they are negatives); other videos stay negatives."""
  every = gdt.sampled_transforms("variant", "variant")  # v vR v2 v2R
  positive, compared = gdt.pair_masks(*_readable_descriptors(every), reversal="variant", shift="ignore")
  block = ["+-.-", "-+-.", ".-+-", "-.-+"]
  assert _as_table(positive, compared) == _full_table(block)


def test_official_numbering_and_unknown_switches():
  config = gdt_config.get_config()
  config.gdt.hypothesis = 3
  assert gdt.hypothesis_switches(config) == ("invariant", "ignore")
  config.gdt.hypothesis = 0
  assert gdt.hypothesis_switches(config) == ("variant", "invariant")
  with pytest.raises(UserError, match="config.gdt.shift"):
    gdt.pair_masks(np.zeros(2), np.zeros(2), np.zeros(2), np.arange(2), reversal="variant", shift="distinct")


def test_method_order_of_samples():
  """The method stacks clips then audio, transform by transform, video by video."""
  transforms = gdt.sampled_transforms("variant", "invariant")
  d = gdt.sample_descriptors(3, transforms)
  np.testing.assert_array_equal(d["modality"], [0] * 12 + [1] * 12)
  np.testing.assert_array_equal(d["video"][:6], [0, 1, 2, 0, 1, 2])
  np.testing.assert_array_equal(d["window"][:12], [0] * 6 + [1] * 6)
  np.testing.assert_array_equal(d["reversed"][:12], [0, 0, 0, 1, 1, 1] * 2)


# --- the loss ------------------------------------------------------------------------------------


def _hand_gdt_loss(similarity, positive, compared, temperature):
  """-log(e^{s_ij} / (e^{s_ij} + sum over the row's negatives e^{s_ik})), averaged over positives."""
  terms = []
  m = len(similarity)
  for i in range(m):
    negatives = [k for k in range(m) if compared[i, k] and not positive[i, k]]
    for j in range(m):
      if positive[i, j] and compared[i, j]:
        numerator = np.exp(similarity[i, j] / temperature)
        denominator = numerator + sum(np.exp(similarity[i, k] / temperature) for k in negatives)
        terms.append(-np.log(numerator / denominator))
  return np.mean(terms)


@pytest.mark.parametrize("number", [1, 3, 6, 8])
def test_gdt_loss_matches_hand_computation(number):
  reversal, shift = gdt.HYPOTHESES[number]
  transforms = gdt.sampled_transforms(reversal, shift)
  positive, compared = gdt.pair_masks(*_readable_descriptors(transforms), reversal=reversal, shift=shift)
  z = np.random.default_rng(number).normal(size=(len(positive), 5))
  z /= np.linalg.norm(z, axis=-1, keepdims=True)
  similarity = z @ z.T
  got = losses.masked_info_nce(jnp.asarray(similarity, jnp.float32), positive, compared, 0.07)
  np.testing.assert_allclose(got, _hand_gdt_loss(similarity, positive, compared, 0.07), rtol=1e-5)


def test_basecase_is_symmetric_cross_modal_infonce():
  """Hypothesis 1 is the official code's basecase: 0.5 CE(v -> a) + 0.5 CE(a -> v) over the batch."""
  rng = np.random.default_rng(0)
  v, a = (x / np.linalg.norm(x, axis=-1, keepdims=True) for x in rng.normal(size=(2, 4, 6)))
  logits = v @ a.T / 0.07
  log_softmax = lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True))
  expected = -0.5 * (np.diag(log_softmax(logits)).mean() + np.diag(log_softmax(logits.T)).mean())
  d = gdt.sample_descriptors(4, gdt.sampled_transforms("ignore", "ignore"))
  positive, compared = gdt.pair_masks(d["video"], d["window"], d["reversed"], d["modality"], reversal="ignore", shift="ignore")
  z = np.concatenate([v, a])
  np.testing.assert_allclose(losses.masked_info_nce(jnp.asarray(z @ z.T), positive, compared, 0.07), expected, rtol=1e-5)


# --- the method ----------------------------------------------------------------------------------


def tiny_config(**gdt_overrides):
  c = gdt_config.get_config()
  c.batch_size = 8
  c.total_steps = 4
  c.optimizer.warmup_steps = 0
  c.gdt.clip = gdt_config._clip("rgb", 4, 1, 8, flip_prob=0.5)
  c.gdt.video_backbone = "small3d"  # the CPU presets' network; the paper test traces R(2+1)D-18
  c.gdt.video_width_multiplier = 0.25
  c.gdt.audio_width_multiplier = 0.0625
  c.audio.num_mel_bins = 16
  c.model.projector_hidden_dim = 16
  c.model.projection_dim = 8
  for key, value in gdt_overrides.items():
    c.gdt[key] = value
  c.lock()
  return c


IDENTITY = augment.AugmentSpec(brightness=0, contrast=0, saturation=0, hue=0, jitter_prob=0, grayscale_prob=0, blur_prob=0, solarize_prob=0)


@pytest.fixture(scope="module")
def setup():
  config = tiny_config()
  method = methods.make_method(config, num_classes=builtin_av.NUM_CLASSES)
  labels = np.arange(config.batch_size) % builtin_av.NUM_CLASSES
  rendered = builtin_av.render(labels, np.random.default_rng(0))
  records = [
      {"video": v, "audio": a.astype(np.float32) / 32767, "label": np.int32(l)}
      for v, a, l in zip(rendered["video"], rendered["audio"], labels)
  ]
  transform = train.make_host_transform(method, builtin_av.MovingShapesSource.__new__(builtin_av.MovingShapesSource))
  views = [transform.random_map(r, np.random.default_rng(i)) for i, r in enumerate(records)]
  batch = {k: np.stack([r[k] for r in views]) for k in views[0]}
  tx = optim.make_optimizer(config)
  state = jax.jit(lambda rng: train.create_train_state(method, tx, rng))(jax.random.key(0))
  return config, method, tx, state, batch, records


def test_host_gives_two_windows_each_with_its_own_audio(setup):
  config, method, _, _, batch, records = setup
  samples = round(4 / builtin_av.FPS * builtin_av.AUDIO_SAMPLE_RATE)
  assert batch["narrow"].shape == batch["broad0"].shape == (8, 4, 8, 8, 3)
  assert batch["narrow_audio"].shape == batch["broad1"].shape == (8, samples)
  # Replaying the record's generator: the first window's start, then the second's, drawn independently.
  for i in range(3):
    rng = np.random.default_rng(i)
    starts = [video.sample_start(rng, builtin_av.NUM_FRAMES, 4, 1) for _ in range(2)]
    for key, start in zip(("narrow_audio", "broad1"), starts):
      first, length = video.audio_window(start, 4, 1, builtin_av.FPS, builtin_av.AUDIO_SAMPLE_RATE)
      np.testing.assert_array_equal(batch[key][i], video.crop_audio(records[i]["audio"], first, length))


def test_time_reversal_flips_frames_and_spectrograms(setup):
  """vR is v played backwards and aR its spectrogram flipped along time (no augmentation)."""
  config, method, _, _, batch, _ = setup
  saved = method.clip_augment, method.config
  method.clip_augment = IDENTITY
  quiet = config.copy_and_resolve_references()
  quiet.audio.time_masks = quiet.audio.freq_masks = 0
  quiet.audio.volume_jitter = 0.0
  method.config = quiet
  try:
    b = config.batch_size
    clips = np.asarray(method.transformed_clips(jax.random.key(0), batch))
    spectrograms = np.asarray(method.transformed_spectrograms(jax.random.key(0), batch))
  finally:
    method.clip_augment, method.config = saved
  assert method.transforms == ((0, False), (0, True), (1, False), (1, True))
  assert clips.shape[0] == spectrograms.shape[0] == 4 * b
  np.testing.assert_allclose(clips[b : 2 * b], clips[:b, ::-1], atol=1e-6)
  np.testing.assert_allclose(clips[3 * b :], clips[2 * b : 3 * b, ::-1], atol=1e-6)
  np.testing.assert_allclose(spectrograms[b : 2 * b], spectrograms[:b, ::-1], atol=1e-5)
  assert not np.allclose(clips[:b], clips[2 * b : 3 * b])  # the two windows differ


def _loss_and_grads(method, state, batch, mesh):
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  fn = jax.jit(
      lambda params, extra, batch, rng: jax.value_and_grad(method.loss, has_aux=True)(params, extra, batch, rng, 0),
      in_shardings=(replicated, replicated, sharded, replicated),
  )
  (loss, aux), grads = fn(state.params, state.extra, batch, jax.random.key(7))
  return jax.device_get((loss, aux["batch_stats"], grads))


def _one_step(method, tx, config, state, batch, mesh):
  step = train.jit_train_step(train.make_train_step(method, tx, optim.learning_rate_schedule(config)), mesh)
  state = jax.device_put(jax.tree.map(np.asarray, state), parallel.replicated(mesh))
  batch = jax.device_put(batch, parallel.batch_sharded(mesh))
  new_state, metrics = step(state, batch, jax.random.key(7))
  return jax.device_get((new_state, metrics))


def _close(what, a, b, tolerance):
  def check(path, x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    scale = max(1.0, float(np.abs(x).max()))
    assert np.abs(x - y).max() <= tolerance * scale, (what, path, np.abs(x - y).max(), scale)
  jax.tree_util.tree_map_with_path(check, a, b)


def test_one_step_same_on_1_and_8_devices_float64(setup):
  """Loss, gradients, batch statistics and the new state agree (colour augmentation, which always
  computes in float32, is the identity; dropout and SpecAugment stay on)."""
  config, method, tx, state, batch, _ = setup
  assert jax.device_count() == 8
  saved = method.clip_augment
  method.clip_augment = IDENTITY
  jax.config.update("jax_enable_x64", True)
  try:
    state64 = jax.tree.map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, state)
    batch64 = dict(batch, narrow_audio=batch["narrow_audio"].astype(np.float64), broad1=batch["broad1"].astype(np.float64))
    one, eight = parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh()
    loss1, stats1, grads1 = _loss_and_grads(method, state64, batch64, one)
    loss8, stats8, grads8 = _loss_and_grads(method, state64, batch64, eight)
    _close("loss", loss1, loss8, 1e-5)
    _close("gradients", grads1, grads8, 1e-5)
    _close("batch statistics", stats1, stats8, 1e-5)
    state1, metrics1 = _one_step(method, tx, config, state64, batch64, one)
    state8, metrics8 = _one_step(method, tx, config, state64, batch64, eight)
    _close("new params", state1.params, state8.params, 1e-5)
    _close("new extra", state1.extra, state8.extra, 1e-5)
    for name in ("backbone", "audio_backbone", "video_head", "audio_head"):  # every network learns
      moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), state1.params[name], jax.device_get(state64.params[name]))
      assert max(jax.tree.leaves(moved)) > 0, name
    assert np.isfinite(metrics1["loss"]) and abs(metrics1["loss"] - metrics8["loss"]) < 1e-5
  finally:
    jax.config.update("jax_enable_x64", False)
    method.clip_augment = saved


def test_eval_clips_are_centred_and_embedded_by_the_video_backbone(setup):
  config, method, _, state, _, _ = setup
  source = builtin_av.MovingShapesSource.__new__(builtin_av.MovingShapesSource)
  source.labels = np.arange(3, dtype=np.int32)
  source.videos = builtin_av.render(source.labels, np.random.default_rng(0))["video"]
  source.audio = np.zeros((3, 10), np.int16)
  arrays = evaluator.eval_array_loader(config.data.image_size, method)(source, None)
  assert arrays["clip"].shape == (3, 4, 8, 8, 3)
  features = method.embed(state.params, state.extra, augment.normalize(arrays["clip"]))
  assert features.shape == (3, 32)  # small3d at width 1/4: 4 x 8 channels
  # The sound of each centred clip, for the audio backbone's own kNN (knn_top1_audio).
  assert arrays["audio"].shape == (3, round(4 / builtin_av.FPS * builtin_av.AUDIO_SAMPLE_RATE))
  assert method.embed_audio(state.params, state.extra, arrays["audio"]).shape == (3, 32)  # ResNet-9 at 1/16


def test_config_mistakes_name_the_fix():
  with pytest.raises(UserError, match="config.gdt.reversal"):
    methods.make_method(tiny_config(reversal="distinctive"))
  config = tiny_config()
  config.unlock()
  config.gdt.clip.modality = "audio"
  with pytest.raises(UserError, match="clip.modality"):
    methods.make_method(config)


def test_paper_preset_traces_one_step():
  """The paper preset builds, and one train step traces with its shapes (nothing is computed)."""
  config = gdt_config.get_config("paper")
  method = methods.make_method(config, num_classes=400)
  assert method.transforms == ((0, False), (0, True), (1, False), (1, True))
  tx = optim.make_optimizer(config)
  state = jax.eval_shape(lambda rng: train.create_train_state(method, tx, rng), jax.random.key(0))
  b, clip, samples = config.batch_size, method.clip_view, config.audio.sample_rate  # 30 frames at 30 fps: 1 s
  frames = jax.ShapeDtypeStruct((b, clip.num_frames, clip.size, clip.size, 3), jnp.uint8)
  sound = jax.ShapeDtypeStruct((b, samples), jnp.float32)
  batch = {"narrow": frames, "narrow_audio": sound, "broad0": frames, "broad1": sound, "label": jax.ShapeDtypeStruct((b,), jnp.int32)}
  step = train.make_train_step(method, tx, optim.learning_rate_schedule(config))
  new_state, metrics = jax.eval_shape(step, state, batch, jax.random.key(0))
  assert jax.tree.map(lambda x: x.shape, new_state.params) == jax.tree.map(lambda x: x.shape, state.params)
  assert metrics["loss"].shape == ()
  assert audio_frames(config) == 99  # the official (1, 40, 99) spectrogram of 1 s


def audio_frames(config):
  from jaxssl.transforms import audio  # noqa: PLC0415

  spec = audio.SpectrogramSpec(config.audio.sample_rate, config.audio.frame_length, config.audio.frame_step, config.audio.num_mel_bins)
  return spec.num_frames(config.audio.sample_rate)
