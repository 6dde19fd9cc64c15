"""grain input pipelines: an infinite, checkpointable training iterator of
random views and in-memory evaluation arrays.

Training pipeline (all `grain.MapDataset` steps, so every batch is a pure
function of (seed, batch index)):

    source -> shuffle (reshuffled every epoch) -> random views per record
      -> this process's rows of each global batch (drop remainder, per epoch)
      -> repeat forever -> thread / process prefetch

The order and the views are the same in every process, and each process reads
only the records of its own rows. So the global batch, and with it the run, does
not depend on how many processes share it: 2 processes x 4 devices train exactly
what 1 process x 8 devices does.

Because batches are addressed by index, the iterator state is a single batch
counter (plus a fingerprint of the pipeline settings), and the batches do not
depend on `worker_count` or the number of threads.
"""

from __future__ import annotations

import functools

from collections.abc import Sequence
import concurrent.futures
from typing import Any

from absl import flags
from absl import logging
import grain
import numpy as np

from jaxssl.data import views as views_lib
from jaxssl.data.base import DataError, evenly_spaced_indices
from jaxssl.data.sources import ArraySource

_STATE_VERSION = 1


def host_view_specs(view_configs: Sequence[Any]) -> list[dict]:
  """The host-side part of each view's config (crop size and scale, flip) for `make_train_iterator`."""
  return [dict(size=v.size, scale=tuple(v.crop_scale), flip_prob=v.flip_prob) for v in view_configs]


def _pipeline_seed(seed: int) -> int:
  # The trailing 0 keeps the seed that single-process runs have always used (the entropy of the
  # first process of a per-process seeding), so recorded results stay reproducible.
  sequence = np.random.SeedSequence([int(seed) % 2**63, 0])
  return int(sequence.generate_state(1, dtype=np.uint32)[0])


class TrainIterator(grain.DatasetIterator):
  """Infinite iterator over training batches with a JSON-serialisable state.

  `get_state()` returns a dict of plain ints (JSON-serialisable, and what
  `grain.checkpoint.CheckpointHandler` / orbax save for `DatasetIterator`s):

      {'version': 1, 'next_batch': <batches already returned>, 'seed': ...,
       'process_count': ...,
       'per_process_batch_size': ..., 'num_records': ...}

  `set_state(state)` on an iterator built with the same arguments continues
  with exactly the batches the saved iterator would have produced next.
  """

  def __init__(
      self,
      batches: grain.MapDataset,
      fingerprint: dict[str, int],
      read_options: grain.ReadOptions,
      worker_count: int,
  ):
    super().__init__()
    self._batches = batches
    self._fingerprint = dict(fingerprint)
    self._read_options = read_options
    self._worker_count = worker_count
    self._next_batch = 0
    self._iterator = self._make_iterator(0)

  def _make_iterator(self, start: int) -> grain.DatasetIterator:
    batches = self._batches[start:] if start else self._batches
    ds = batches.to_iter_dataset(self._read_options)
    if self._worker_count > 0:
      # grain's multiprocessing reads absl flags directly; outside an absl app
      # (tests, notebooks) they are unparsed, so use their defaults.
      if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
      ds = ds.mp_prefetch(
          grain.MultiprocessingOptions(num_workers=self._worker_count)
      )
    return iter(ds)

  def __next__(self) -> dict[str, np.ndarray]:
    self._assert_not_closed()
    batch = next(self._iterator)
    self._next_batch += 1
    if self._worker_count > 0:
      # Worker processes hand over batches in shared memory; copy them into
      # ordinary arrays so the shared memory is released right away.
      batch = {k: np.array(v, copy=True) for k, v in batch.items()}
    return batch

  def get_state(self) -> dict[str, int]:
    return {
        'version': _STATE_VERSION,
        'next_batch': self._next_batch,
        **self._fingerprint,
    }

  def set_state(self, state: dict[str, Any]) -> None:
    if not isinstance(state, dict) or 'next_batch' not in state:
      raise DataError(
          f'Cannot restore the data iterator from state {state!r}; it was not '
          'saved by jaxssl.data.pipeline.TrainIterator, so start without '
          'restoring the data iterator.'
      )
    changed = {
        k: (state[k], v)
        for k, v in self._fingerprint.items()
        if k in state and state[k] != v
    }
    if changed:
      logging.warning(
          'Restoring the data iterator at batch %d although the pipeline '
          'changed (saved, current): %s; the data order will differ from the '
          'uninterrupted run.', state['next_batch'], changed)
    next_batch = int(state['next_batch'])
    if next_batch < 0:
      raise DataError(f'Invalid data iterator state {state!r}.')
    self._iterator.close()
    self._next_batch = next_batch
    self._iterator = self._make_iterator(next_batch)

  def start_prefetch(self) -> None:
    self._iterator.start_prefetch()

  def close(self) -> None:
    if self._closed:
      return
    self._closed = True
    iterator = getattr(self, '_iterator', None)
    if iterator is not None:
      iterator.close()

  def __str__(self) -> str:
    return f'TrainIterator(next_batch={self._next_batch}, {self._fingerprint})'


def _with_index(num_records: int, index: int, record: dict[str, Any]) -> dict[str, Any]:
  # Past the first epoch `repeat` hands down indices beyond the source's length (the source
  # reads record index % length), so the record's position is the index modulo the length.
  return {**record, 'index': np.int32(index % num_records)}


def make_train_iterator(
    source: Any,
    *,
    seed: int,
    per_process_batch_size: int,
    view_specs: Sequence[Any],
    process_index: int,
    local_view_spec: Any = None,
    num_local_views: int = 0,
    process_count: int,
    worker_count: int = 0,
    num_threads: int = 2,
    prefetch_batches: int = 4,
    transform: grain.transforms.RandomMap | None = None,
) -> TrainIterator:
  """Returns this process's infinite iterator of batches of random views.

  Args:
    source: a random-access source of `{'image', 'label'}` records.
    seed: data seed (shuffling and views).
    per_process_batch_size: batch size of this process.
    view_specs: one spec per view (`views.ViewSpec`, or a mapping with `size`
      and optionally `scale`, `ratio`, `flip_prob`).
    process_index: index of this process in [0, process_count).
    local_view_spec: the spec of the multi-crop local views (SwAV, DINO).
    num_local_views: how many local views to draw per record (0: none).
    process_count: number of processes; process p gets rows
      [p * b, (p + 1) * b) of every global batch of b * process_count rows and
      reads only their records.
    worker_count: number of grain worker processes (0: load in this process).
      Does not change the batches.
    num_threads: threads preparing batches in each process.
    prefetch_batches: number of batches prepared ahead.
    transform: a random map from a record to the batch's fields, replacing the
      image views of `view_specs` (e.g. the clip views of a video method).

  Returns:
    A `TrainIterator` yielding `{'view0': uint8[b, S0, S0, 3], ...,
    'label': int32[b], 'index': int32[b]}` (label -1 for unlabelled data;
    index: the record's position in `source`), plus `'local_views': uint8[b, V, s, s, 3]`
    when `num_local_views` V > 0. Each epoch of the shard
    is reshuffled; the last incomplete batch of an epoch is dropped.
  """
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(
        f'process_index={process_index} must be in [0, {process_count}).'
    )
  if per_process_batch_size < 1:
    raise DataError(
        f'The per-process batch size is {per_process_batch_size}; set '
        'config.batch_size to a positive multiple of the number of processes.'
    )
  num_records = len(source)
  global_batch = per_process_batch_size * process_count
  if num_records < global_batch:
    raise DataError(
        f'The training data has only {num_records} records, fewer than one '
        f'global batch of {global_batch} ({per_process_batch_size} per process '
        f'x {process_count} processes); set config.batch_size to at most '
        f'{max(num_records // process_count, 1) * process_count}.'
    )
  if transform is None:
    transform = views_lib.MultiViewTransform(
        view_specs, local_view_spec, num_local_views
    )
  global_batches_per_epoch = num_records // global_batch

  ds = grain.MapDataset.source(source)
  # Each record's position in the source, for methods that keep per-example state (NPID's
  # memory bank); taken before shuffling, so it is the dataset index.
  ds = ds.map_with_index(functools.partial(_with_index, num_records))
  ds = ds.seed(_pipeline_seed(seed))  # the same in every process: one global order
  ds = ds.shuffle()  # Reseeded with the epoch by the `repeat` below.
  ds = ds.random_map(transform)  # lazy: a process only computes the views of its own rows
  ds = ds.batch(per_process_batch_size, drop_remainder=True)
  # Global batch g is blocks [g * P, (g + 1) * P) of b rows; this process's part is block
  # g * P + p. Blocks of an incomplete last global batch are dropped (slices are per epoch).
  ds = ds[process_index : global_batches_per_epoch * process_count : process_count]
  ds = ds.repeat(None)

  fingerprint = {
      'seed': int(seed),
      'process_count': int(process_count),
      'per_process_batch_size': int(per_process_batch_size),
      'num_records': int(num_records),
      'num_local_views': int(num_local_views),
  }
  read_options = grain.ReadOptions(
      num_threads=max(int(num_threads), 0),
      prefetch_buffer_size=max(int(prefetch_batches), int(num_threads), 0),
  )
  return TrainIterator(ds, fingerprint, read_options, int(worker_count))


def load_eval_arrays(
    source: Any,
    image_size: int,
    max_examples: int | None = None,
    num_threads: int = 2,
) -> dict[str, np.ndarray]:
  """Loads (a subset of) a source as centre-resized in-memory arrays.

  Args:
    source: a random-access source of `{'image', 'label'}` records.
    image_size: output height and width (shorter side resized, then centre
      crop).
    max_examples: if set and smaller than the source, an evenly spaced subset
      of this many records (deterministic, covers the whole source).
    num_threads: threads used to decode and resize.

  Returns:
    `{'image': uint8[N, S, S, 3], 'label': int32[N]}` (labels -1 when the
    source is unlabelled). For an `ArraySource` whose images already have the
    right size and 3 channels (built-in data), the arrays are returned without
    copying (read-only for built-in data).
  """
  num_records = len(source)
  if num_records == 0:
    raise DataError('The evaluation data is empty; choose a non-empty split.')
  if max_examples is not None and max_examples < num_records:
    if max_examples < 1:
      raise DataError(
          f'max_examples is {max_examples}; set it to a positive number or '
          'None.'
      )
    indices = evenly_spaced_indices(num_records, max_examples)
  else:
    indices = None

  if isinstance(source, ArraySource):
    arrays = source.arrays
    images, labels = arrays['image'], arrays['label']
    if images.ndim == 4 and images.shape[1:] == (image_size, image_size, 3):
      if images.dtype == np.uint8:
        if indices is not None:
          images, labels = images[indices], labels[indices]
        return {'image': images, 'label': labels.astype(np.int32, copy=False)}

  if indices is None:
    indices = np.arange(num_records)

  def load(index: int) -> tuple[np.ndarray, np.int32]:
    record = source[int(index)]
    return (
        views_lib.center_resize(record['image'], image_size),
        np.int32(record['label']),
    )

  if num_threads > 1 and len(indices) > 1:
    with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
      loaded = list(pool.map(load, indices))
  else:
    loaded = [load(i) for i in indices]
  return {
      'image': np.stack([image for image, _ in loaded]),
      'label': np.asarray([label for _, label in loaded], np.int32),
  }
