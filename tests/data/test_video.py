"""Clip sampling, looping, audio alignment, spectrograms, per-clip augmentation and video sources."""


import jax
import numpy as np
import pytest

from jaxssl.data import builtin_av, video
from jaxssl.transforms import audio, augment, clip_ops
from jaxssl.data.base import DataError


def test_clip_indices_with_stride_and_start():
  np.testing.assert_array_equal(video.clip_frame_indices(100, 4, 3, 10), [10, 13, 16, 19])


def test_clip_longer_than_video_loops():
  # A 6-frame video seen as an 8-frame clip with stride 2 from frame 0: 0 2 4 0 2 4 0 2.
  np.testing.assert_array_equal(video.clip_frame_indices(6, 8, 2, 0), [0, 2, 4, 0, 2, 4, 0, 2])


def test_sample_start_fits_clip_or_is_zero():
  rng = np.random.default_rng(0)
  starts = [video.sample_start(rng, 20, 4, 2) for _ in range(200)]  # span 7: starts in [0, 13]
  assert min(starts) == 0 and max(starts) == 13
  assert video.sample_start(rng, 5, 4, 2) == 0  # span 7 > 5 frames: loop from the first frame


def test_audio_window_matches_clip_time():
  # Frames 30..45 (16 frames, stride 1) at 10 fps = 3.0 s .. 4.6 s; at 8 kHz: samples 24000 .. 36800.
  assert video.audio_window(30, 16, 1, 10.0, 8000) == (24000, 12800)
  # The crop of a ramp holds exactly those samples; past the end the track loops.
  ramp = np.arange(40000, dtype=np.float32)
  crop = video.crop_audio(ramp, *video.audio_window(30, 16, 1, 10.0, 8000))
  np.testing.assert_array_equal(crop, np.arange(24000, 36800))
  looped = video.crop_audio(ramp, 39990, 20)
  np.testing.assert_array_equal(looped, np.r_[np.arange(39990, 40000), np.arange(10)])


def _record(frames=24, size=16):
  """A video whose frame t is filled with value t, and audio whose sample s is s (fps 12, 8 kHz)."""
  video_array = np.broadcast_to(np.arange(frames, dtype=np.uint8)[:, None, None, None], (frames, size, size, 3)).copy()
  audio_track = np.arange(frames * 8000 // 12, dtype=np.float32)
  return {"video": video_array, "audio": audio_track, "label": np.int32(3)}


def test_views_transform_aligns_audio_with_broad_frames():
  narrow = video.ClipViewSpec("rgb", 4, 1, 8, crop_scale=(1.0, 1.0), flip_prob=0.0)
  frames_view = video.ClipViewSpec("rgb", 6, 2, 8, crop_scale=(1.0, 1.0), flip_prob=0.0)
  audio_view = video.ClipViewSpec("audio", 6, 2)
  transform = video.ClipViewsTransform(narrow, [frames_view, audio_view], fps=12.0, sample_rate=8000)
  for seed in range(5):
    out = transform.random_map(_record(), np.random.default_rng(seed))
    assert out["narrow"].shape == (4, 8, 8, 3) and out["label"] == 3
    first_frame = int(out["broad0"][0, 0, 0, 0])
    np.testing.assert_array_equal(out["broad0"][:, 0, 0, 0], first_frame + 2 * np.arange(6))
    # The audio of the broad window starts at first_frame / 12 s and lasts 12 frames = 1 s.
    assert out["broad1"].shape == (8000,)
    assert out["broad1"][0] == round(first_frame * 8000 / 12)


def test_synced_starts_share_the_first_frame():
  spec = video.ClipViewSpec("rgb", 4, 1, 8, crop_scale=(1.0, 1.0), flip_prob=0.0)
  broad = video.ClipViewSpec("rgb", 4, 3, 8, crop_scale=(1.0, 1.0), flip_prob=0.0)
  synced = video.ClipViewsTransform(spec, [broad], 12.0, 0, synced_starts=True)
  independent = video.ClipViewsTransform(spec, [broad], 12.0, 0)
  firsts = lambda t, s: (t.random_map(_record(), np.random.default_rng(s))[k][0, 0, 0, 0] for k in ("narrow", "broad0"))
  assert all(a == b for a, b in (firsts(synced, s) for s in range(10)))
  assert any(a != b for a, b in (firsts(independent, s) for s in range(10)))


def test_crop_and_flip_are_the_same_for_every_frame():
  rng = np.random.default_rng(0)
  frame = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
  clip = np.stack([frame] * 5)
  spec = video.ClipViewSpec("rgb", 5, 1, 8, crop_scale=(0.2, 0.6), flip_prob=0.5)
  for seed in range(4):
    out = video.spatial_view(clip, spec, np.random.default_rng(seed))
    for t in range(1, 5):
      np.testing.assert_array_equal(out[t], out[0])


def test_on_device_augmentation_is_per_clip():
  rng = np.random.default_rng(1)
  frame = rng.integers(0, 256, (4, 1, 8, 8, 3), dtype=np.uint8)
  clips = np.repeat(frame, 3, axis=1)  # every frame of a clip identical
  spec = augment.AugmentSpec(jitter_prob=1.0, grayscale_prob=0.5, blur_prob=0.5, hue=0.3)
  out = np.asarray(clip_ops.augment_clips(jax.random.key(0), clips, spec))
  for t in range(1, 3):
    np.testing.assert_allclose(out[:, t], out[:, 0], atol=1e-6)  # same decisions for every frame
  assert np.abs(out[:, 0] - clips[:, 0] / 255.0).max() > 0.05  # and something did change
  assert np.abs(out[0, 0] - out[1, 0]).max() > 0  # clips draw independently


def _numpy_log_mel(wave, sample_rate, frame_length, frame_step, bins, lower_hz):
  """Reference written from the definitions: explicit DFT per frame, triangular HTK-mel filters."""
  mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
  n = np.arange(frame_length)
  window = 0.5 - 0.5 * np.cos(2 * np.pi * n / frame_length)
  frequencies = np.arange(frame_length // 2 + 1) * sample_rate / frame_length
  dft = np.exp(-2j * np.pi * np.outer(np.arange(frame_length // 2 + 1), n) / frame_length)
  points = np.linspace(mel(lower_hz), mel(sample_rate / 2), bins + 2)
  filters = np.zeros((len(frequencies), bins))
  for m in range(bins):
    left, centre, right = points[m], points[m + 1], points[m + 2]
    for i, f in enumerate(frequencies):
      x = mel(f)
      if left < x <= centre:
        filters[i, m] = (x - left) / (centre - left)
      elif centre < x < right:
        filters[i, m] = (right - x) / (right - centre)
  rows = []
  for start in range(0, len(wave) - frame_length + 1, frame_step):
    power = np.abs(dft @ (wave[start : start + frame_length] * window)) ** 2
    rows.append(np.log(power @ filters + 1e-6))
  return np.array(rows)


def test_log_mel_matches_numpy_reference():
  rng = np.random.default_rng(0)
  time = np.arange(2000) / 4000
  wave = 0.5 * np.sin(2 * np.pi * 440 * time) + 0.1 * rng.standard_normal(2000)
  spec = audio.SpectrogramSpec(sample_rate=4000, frame_length=128, frame_step=64, num_mel_bins=16, lower_hz=50.0)
  ours = np.asarray(audio.log_mel_spectrogram(jax.numpy.asarray(wave[None], jax.numpy.float32), spec))[0]
  reference = _numpy_log_mel(wave, 4000, 128, 64, 16, 50.0)
  assert ours.shape == reference.shape == (30, 16)
  np.testing.assert_allclose(ours, reference, atol=2e-3)
  # The 440 Hz tone lands in the mel bin whose centre is nearest 440 Hz.
  assert abs(np.argmax(ours.mean(0)) - np.argmax(reference.mean(0))) == 0


def test_spec_augment_masks_bands():
  spectrograms = np.ones((3, 20, 10), np.float32)
  out = np.asarray(audio.spec_augment(jax.random.key(0), spectrograms, 1, 5, 1, 3))
  for example in out:
    zero_rows = np.all(example == 0, axis=1).sum()
    zero_cols = np.all(example == 0, axis=0).sum()
    assert zero_rows <= 5 and zero_cols <= 3
    assert np.isin(example, (0.0, 1.0)).all()


def test_builtin_moving_shapes_is_deterministic_and_labelled():
  labels = np.arange(8)
  first, second = (builtin_av.render(labels, np.random.default_rng(5)) for _ in range(2))
  np.testing.assert_array_equal(first["video"], second["video"])
  np.testing.assert_array_equal(first["audio"], second["audio"])
  a = builtin_av.MovingShapesSource("test")
  record = a[0]
  assert record["video"].shape == (builtin_av.NUM_FRAMES, 32, 32, 3)
  assert record["audio"].shape == (int(builtin_av.NUM_FRAMES / builtin_av.FPS * builtin_av.AUDIO_SAMPLE_RATE),)
  assert sorted(np.unique(a.labels)) == list(range(builtin_av.NUM_CLASSES))
  # The tone's pitch identifies the class.
  spectrum = np.abs(np.fft.rfft(record["audio"]))
  peak_hz = np.argmax(spectrum) * builtin_av.AUDIO_SAMPLE_RATE / len(record["audio"])
  assert abs(peak_hz / builtin_av.CLASS_PITCHES[record["label"]] - 1) < 0.05


def test_video_folder_source_decodes_frames_and_audio(tmp_path):
  av = pytest.importorskip("av")
  folder = tmp_path / "videos" / "waves"
  folder.mkdir(parents=True)
  path = str(folder / "clip.mp4")
  with av.open(path, "w") as container:
    stream = container.add_stream("mpeg4", rate=10)
    stream.width = stream.height = 32
    stream.pix_fmt = "yuv420p"
    sound = container.add_stream("aac", rate=8000)
    for t in range(12):
      frame = np.full((32, 32, 3), 20 * t, np.uint8)
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
    samples = (0.5 * np.sin(2 * np.pi * 500 * np.arange(9600) / 8000)).astype(np.float32)
    for start in range(0, 9600, 1024):
      chunk = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="fltp", layout="mono")
      chunk.sample_rate = 8000
      for packet in sound.encode(chunk):
        container.mux(packet)
    for packet in sound.encode():
      container.mux(packet)
  source = video.VideoFolderSource(str(tmp_path / "videos"), audio_sample_rate=8000)
  assert len(source) == 1 and source.class_names == ("waves",) and source.fps == pytest.approx(10)
  record = source[0]
  assert record["video"].shape == (12, 32, 32, 3) and record["label"] == 0
  np.testing.assert_allclose(record["video"][:, 16, 16].mean(-1), 20 * np.arange(12), atol=6)
  assert abs(len(record["audio"]) - 9600) < 2048
  spectrum = np.abs(np.fft.rfft(record["audio"]))
  assert abs(np.argmax(spectrum) * 8000 / len(record["audio"]) - 500) < 20


def test_video_folder_source_errors_name_the_fix(tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    video.VideoFolderSource(str(tmp_path / "missing"))
  with pytest.raises(DataError, match="contains no videos"):
    video.VideoFolderSource(str(tmp_path))


def test_tfds_video_source_under_mock_data():
  import tensorflow_datasets as tfds  # noqa: PLC0415 - imports TensorFlow, so only in this test

  with tfds.testing.mock_data(num_examples=1, policy=tfds.testing.MockPolicy.USE_CODE):
    source = video.TfdsVideoSource("ucf101", "train", fps=25.0)
    record = source[0]
  assert len(source) == 1 and source.has_labels
  assert record["video"].ndim == 4 and record["video"].shape[-1] == 3 and record["video"].dtype == np.uint8
