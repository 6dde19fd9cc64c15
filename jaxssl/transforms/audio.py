"""On-device audio features: log-mel spectrograms and SpecAugment masking (pure JAX).

Computed inside the jitted train step from raw waveforms, so the host only crops audio.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxssl.transforms import augment


@dataclasses.dataclass(frozen=True)
class SpectrogramSpec:
  """Static log-mel settings (hashable, jit-static).

  Attributes:
    sample_rate: waveform samples per second.
    frame_length: FFT window in samples (Hann window, no zero padding beyond it).
    frame_step: hop between windows in samples.
    num_mel_bins: mel filters (triangular, HTK mel scale).
    lower_hz, upper_hz: the filters span [lower_hz, upper_hz]; upper_hz 0 means Nyquist.
    log_offset: log(mel + offset) keeps silence finite.
  """

  sample_rate: int = 16000
  frame_length: int = 512
  frame_step: int = 160
  num_mel_bins: int = 80
  lower_hz: float = 80.0
  upper_hz: float = 0.0
  log_offset: float = 1e-6

  def num_frames(self, num_samples: int) -> int:
    return 1 + (num_samples - self.frame_length) // self.frame_step


def hz_to_mel(hz):
  return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_filterbank(spec: SpectrogramSpec) -> np.ndarray:
  """[frame_length // 2 + 1, num_mel_bins] triangular filters, evenly spaced in mel."""
  upper = spec.upper_hz or spec.sample_rate / 2
  edges = np.linspace(hz_to_mel(spec.lower_hz), hz_to_mel(upper), spec.num_mel_bins + 2)
  bins = hz_to_mel(np.linspace(0, spec.sample_rate / 2, spec.frame_length // 2 + 1))[:, None]
  lower, centre, higher = edges[:-2], edges[1:-1], edges[2:]
  rising = (bins - lower) / (centre - lower)
  falling = (higher - bins) / (higher - centre)
  return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def log_mel_spectrogram(waveforms: jax.Array, spec: SpectrogramSpec) -> jax.Array:
  """[B, S] waveforms -> [B, frames, num_mel_bins] log-mel power spectrograms (float32)."""
  waveforms = waveforms.astype(jnp.promote_types(waveforms.dtype, jnp.float32))
  num_frames = spec.num_frames(waveforms.shape[-1])
  if num_frames < 1:
    raise ValueError(f'Audio crops of {waveforms.shape[-1]} samples are shorter than one FFT window of {spec.frame_length}; lengthen the audio view or lower config.audio.frame_length.')
  index = spec.frame_step * np.arange(num_frames)[:, None] + np.arange(spec.frame_length)[None]
  window = np.hanning(spec.frame_length + 1)[:-1]  # periodic Hann
  frames = waveforms[..., index] * jnp.asarray(window, waveforms.dtype)
  power = jnp.abs(jnp.fft.rfft(frames, axis=-1)) ** 2
  mel = power @ jnp.asarray(mel_filterbank(spec), power.dtype)
  return jnp.log(mel + spec.log_offset)


def spec_augment(rng: jax.Array, spectrograms: jax.Array, num_time_masks: int, max_time_width: int, num_freq_masks: int, max_freq_width: int) -> jax.Array:
  """SpecAugment masking (Park et al. 2019): zero random time and frequency bands, per example.

  `spectrograms` is [B, T, F]; each example draws its own bands from its own key.
  """
  if not (num_time_masks or num_freq_masks):
    return spectrograms
  batch, time, freq = spectrograms.shape

  def bands(key, count, max_width, size):
    width_key, start_key = jax.random.split(key)
    width = jax.random.randint(width_key, (count,), 0, max_width + 1)
    start = jax.random.randint(start_key, (count,), 0, jnp.maximum(size - width, 0) + 1)
    position = jnp.arange(size)
    return jnp.any((position[None] >= start[:, None]) & (position[None] < (start + width)[:, None]), axis=0)

  def one(key, spectrogram):
    time_key, freq_key = jax.random.split(key)
    masked_time = bands(time_key, num_time_masks, max_time_width, time) if num_time_masks else jnp.zeros(time, bool)
    masked_freq = bands(freq_key, num_freq_masks, max_freq_width, freq) if num_freq_masks else jnp.zeros(freq, bool)
    return jnp.where(masked_time[:, None] | masked_freq[None, :], 0.0, spectrogram)

  # Keys sharded like the batch, as `augment.augment_images` does: example i always uses key i.
  keys = augment._match_batch_sharding(jax.random.split(rng, batch), spectrograms)  # pylint: disable=protected-access
  with augment._mesh_context(spectrograms):  # pylint: disable=protected-access
    return jax.vmap(one)(keys, spectrograms)
