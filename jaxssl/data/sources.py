"""Random-access data sources that feed the grain pipelines.

Every source implements grain's `RandomAccessDataSource` protocol (`__len__`
and `__getitem__`) and returns records

    {'image': uint8[H, W, 3], 'label': np.int32}

where the label is -1 when the data is unlabelled (`source.has_labels` is then
False). Image sizes may differ between records; the pipeline crops and resizes
them.

`make_source(data_config, split)` picks a source from `config.data.name`:

* `builtin:patterns`, `builtin:digits`, `builtin:textured_digits` -- offline datasets generated
  in memory (see `jaxssl.data.builtin`);
* `tfds:<name>` -- a TFDS dataset prepared in ArrayRecord format, e.g.
  `tfds:cifar10` (`config.data.data_dir`, `image_key`, `label_key` apply);
* `folder:<path>` -- a folder of images, either with one sub-folder per class
  or flat (unlabelled). With `<path>/train` and `<path>/test` (the split
  names), those are the splits, labelled by class name; otherwise every 10th
  image of each class is held out for evaluation (`folder_split`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging
import numpy as np
from PIL import Image

from jaxssl.data.base import DataError, DataSpec, evenly_spaced_indices

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')

SOURCE_FORMS = (
    'builtin:patterns',
    'builtin:textured_digits',
    'builtin:digits',
    'tfds:<dataset name>',
    'folder:<path to images>',
)


def _to_rgb_uint8(image: Any, what: str) -> np.ndarray:
  """Converts an [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] image to RGB uint8."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise DataError(
        f'{what} has shape {image.shape}, which is not an image; point '
        'config.data.image_key at an [H, W, C] image feature with 1, 3 or 4 '
        'channels.'
    )
  if image.dtype != np.uint8:
    if np.issubdtype(image.dtype, np.floating) and image.max(initial=0) <= 1.0:
      image = image * 255.0
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  elif image.shape[-1] == 4:
    image = image[..., :3]
  return image


class ArraySource:
  """A source over in-memory arrays `{'image': [N, H, W, C], 'label': [N]}`.

  `label` is optional (records then get label -1). Images may be uint8 with 1,
  3 or 4 channels, or [N, H, W] greyscale.
  """

  def __init__(self, arrays: Mapping[str, np.ndarray]):
    if 'image' not in arrays:
      raise DataError(
          'ArraySource needs an "image" array but got keys '
          f'{sorted(arrays)}; pass {{"image": uint8[N, H, W, 3], '
          '"label": int[N]}.'
      )
    images = np.asarray(arrays['image'])
    if images.ndim not in (3, 4):
      raise DataError(
          f'ArraySource images have shape {images.shape}; pass images as '
          'uint8[N, H, W, 3] (or [N, H, W] greyscale).'
      )
    self._images = images
    labels = arrays.get('label')
    if labels is None:
      self._labels = np.full(len(images), -1, np.int32)
    else:
      self._labels = np.asarray(labels).astype(np.int32, copy=False)
      if self._labels.shape != (len(images),):
        raise DataError(
            f'ArraySource has {len(images)} images but labels of shape '
            f'{self._labels.shape}; pass one integer label per image.'
        )
    self.has_labels = bool(len(self._labels)) and bool(
        (self._labels >= 0).any()
    )
    self.num_classes = int(self._labels.max()) + 1 if self.has_labels else None

  @property
  def arrays(self) -> dict[str, np.ndarray]:
    """The raw arrays (not converted to RGB)."""
    return {'image': self._images, 'label': self._labels}

  def __len__(self) -> int:
    return len(self._images)

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    return {
        'image': _to_rgb_uint8(self._images[index], 'ArraySource image'),
        'label': np.int32(self._labels[index]),
    }

  def __repr__(self) -> str:
    return f'ArraySource(num_records={len(self)}, has_labels={self.has_labels})'


def _open_tfds(name: str, split: str, data_dir: str | None, download: bool):
  """Opens `tfds.data_source`, turning its failures into one-line DataErrors."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  # Random access needs ArrayRecord (TFDS builds TFRecord by default).
  builder_kwargs = {'file_format': 'array_record'}
  try:
    return tfds.data_source(
        name,
        split=split,
        data_dir=data_dir,
        download=download,
        builder_kwargs=builder_kwargs,
    )
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DataError(
        f'There is no TFDS dataset named {name!r}; check the spelling of '
        'config.data.name (e.g. "tfds:cifar10") against '
        'https://www.tensorflow.org/datasets/catalog.'
    ) from e
  except Exception as e:  # pylint: disable=broad-exception-caught
    error = e
  # Work out why it failed to give a useful message.
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception:  # pylint: disable=broad-exception-caught
    raise error  # pylint: disable=raise-missing-from
  root = str(builder.data_dir_root)
  build_cmd = f'tfds build {name} --data_dir={root} --file_format=array_record'
  if not builder.is_prepared():
    raise DataError(
        f'TFDS dataset {name!r} was not found in data_dir {root!r}; run '
        f'`{build_cmd}` or set config.data.data_dir to where it is prepared.'
    ) from error
  if isinstance(error, NotImplementedError):
    formats = sorted(str(f.value) for f in builder.info.available_file_formats())
    raise DataError(
        f'TFDS dataset {name!r} in {root!r} is stored as {", ".join(formats)}, '
        'which has no random access; rebuild it in ArrayRecord format with '
        f'`{build_cmd}`.'
    ) from error
  base_split = split.split('[')[0].split('+')[0].strip()
  splits = sorted(builder.info.splits)
  if splits and base_split not in splits:
    raise DataError(
        f'TFDS dataset {name!r} has no split {split!r}; its splits are '
        f'{", ".join(splits)}, so set config.data.train_split / '
        'config.data.eval_split accordingly.'
    ) from error
  raise error


class TfdsSource:
  """A TFDS dataset read through `tfds.data_source` (ArrayRecord files).

  The dataset must already be prepared in ArrayRecord format in `data_dir`
  (`tfds build <name> --file_format=array_record`), unless `download=True`.
  Records are decoded to NumPy by TFDS; greyscale images become RGB. A dataset
  without `label_key` is treated as unlabelled (labels -1).
  """

  def __init__(
      self,
      name: str,
      split: str,
      data_dir: str | None = None,
      image_key: str = 'image',
      label_key: str | None = 'label',
      download: bool = False,
  ):
    self.name = name
    self.split = split
    self.image_key = image_key
    self._data_dir = data_dir
    self._data = _open_tfds(name, split, data_dir, download)
    features = self._data.dataset_info.features
    feature_names = sorted(features.keys())
    if image_key not in features:
      raise DataError(
          f'TFDS dataset {name!r} has no feature {image_key!r} (its features '
          f'are {", ".join(feature_names)}); set config.data.image_key to the '
          'image feature.'
      )
    self.has_labels = False
    self.num_classes = None
    if label_key and label_key in features:
      feature = features[label_key]
      dtype = np.dtype(getattr(feature, 'np_dtype', np.int64))
      if tuple(getattr(feature, 'shape', ())) == () and np.issubdtype(
          dtype, np.integer
      ):
        self.has_labels = True
        self.num_classes = getattr(feature, 'num_classes', None)
      else:
        logging.warning(
            'TFDS feature %r of %r is not a scalar integer label; treating the '
            'data as unlabelled.', label_key, name)
    self.label_key = label_key if self.has_labels else None

  def __len__(self) -> int:
    return len(self._data)

  def __getitem__(self, index: int) -> dict[str, Any]:
    example = self._data[int(index)]
    image = _to_rgb_uint8(
        example[self.image_key], f'TFDS feature {self.image_key!r}'
    )
    label = np.int32(example[self.label_key]) if self.has_labels else -1
    return {'image': image, 'label': np.int32(label)}

  def record_names(self, indices: Sequence[int]) -> list[str] | None:
    """The `file_name` feature of the records at `indices` (ImageNet's, e.g.
    'n01440764_10026.JPEG'), read without decoding the images; None without one."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    if 'file_name' not in self._data.dataset_info.features:
      return None
    names = tfds.data_source(
        self.name, split=self.split, data_dir=self._data_dir, download=False,
        builder_kwargs={'file_format': 'array_record'},
        decoders={self.image_key: tfds.decode.SkipDecoding()},
    )
    as_text = lambda v: v.decode() if isinstance(v, bytes) else str(v)
    return [as_text(names[int(i)]['file_name']) for i in indices]

  def __repr__(self) -> str:
    return (
        f'TfdsSource({self.name!r}, split={self.split!r}, '
        f'num_records={len(self)}, has_labels={self.has_labels})'
    )


def _list_images(folder: str, extensions: tuple[str, ...]) -> list[str]:
  """All image files below `folder` (recursively), in a deterministic order."""
  found = []
  for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
    dirnames.sort()
    found.extend(
        os.path.join(dirpath, f)
        for f in sorted(filenames)
        if f.lower().endswith(extensions) and not f.startswith('.')
    )
  return found


class ImageFolderSource:
  """Images in a folder, decoded with PIL and converted to RGB.

  If `root` has sub-folders containing images, each sub-folder is a class:
  labels index the sorted sub-folder names (`class_names`) and images directly
  in `root` are ignored. Otherwise the images directly in `root` are used
  unlabelled (label -1). Pass the training split's `class_names` to label an
  evaluation split by class name, whichever classes it has.
  """

  def __init__(
      self,
      root: str,
      extensions: Sequence[str] = IMAGE_EXTENSIONS,
      class_names: Sequence[str] | None = None,
  ):
    self.root = os.fspath(root)
    extensions = tuple(e.lower() for e in extensions)
    if not os.path.isdir(self.root):
      raise DataError(
          f'Image folder {self.root!r} does not exist; set config.data.name to '
          '"folder:<path>" with an existing folder of images.'
      )
    subdirs = sorted(
        e.name
        for e in os.scandir(self.root)
        if e.is_dir() and not e.name.startswith('.')
    )
    paths, labels, own_names = [], [], []
    for subdir in subdirs:
      files = _list_images(os.path.join(self.root, subdir), extensions)
      if files:
        labels.extend([len(own_names)] * len(files))
        own_names.append(subdir)
        paths.extend(files)
    top_level = sorted(
        e.path
        for e in os.scandir(self.root)
        if e.is_file()
        and e.name.lower().endswith(extensions)
        and not e.name.startswith('.')
    )
    if own_names:
      if top_level:
        logging.warning(
            'Ignoring %d images directly in %s because it has class '
            'sub-folders.', len(top_level), self.root)
      self.has_labels = True
    else:
      paths = top_level
      labels = [-1] * len(paths)
      self.has_labels = False
    if not paths:
      raise DataError(
          f'Image folder {self.root!r} contains no images with extensions '
          f'{", ".join(extensions)}; put images in it (or in one sub-folder per '
          'class).'
      )
    if class_names and self.has_labels and tuple(class_names) != tuple(own_names):
      unknown = sorted(set(own_names) - set(class_names))
      if unknown:
        raise DataError(
            f'Image folder {self.root!r} has classes the training split does '
            f'not have ({", ".join(unknown)}); give both splits the same '
            'class sub-folders.'
        )
      index = {name: i for i, name in enumerate(class_names)}
      labels = [index[own_names[label]] for label in labels]
      own_names = list(class_names)
    self.class_names = tuple(own_names)
    self.paths = tuple(paths)
    self._labels = np.asarray(labels, np.int32)

  def __len__(self) -> int:
    return len(self.paths)

  @property
  def labels(self) -> np.ndarray:
    """Every record's label, without decoding an image."""
    return self._labels

  def record_names(self, indices: Sequence[int]) -> list[str]:
    """The file names (without folders) of the records at `indices`."""
    return [os.path.basename(self.paths[int(i)]) for i in indices]

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    path = self.paths[index]
    try:
      with Image.open(path) as image:
        array = np.asarray(image.convert('RGB'))
    except Image.DecompressionBombError as e:
      raise DataError(
          f'Image {path!r} is too large to decode safely ({e}); shrink the file '
          'or remove it from the folder.'
      ) from e
    except (OSError, ValueError) as e:
      raise DataError(
          f'Could not decode image {path!r} ({e}); delete or replace the file.'
      ) from e
    return {'image': array, 'label': np.int32(self._labels[index])}

  def __repr__(self) -> str:
    return (
        f'ImageFolderSource({self.root!r}, num_records={len(self)}, '
        f'classes={len(self.class_names)})'
    )


# Without an evaluation folder, every HELD_OUT_EVERY-th image of each class is
# held out for evaluation (and not trained on).
HELD_OUT_EVERY = 10


def held_out_indices(labels: np.ndarray, every: int = HELD_OUT_EVERY) -> np.ndarray:
  """Every `every`-th record of each class (in file order): a deterministic held-out split."""
  held_out = []
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    held_out.extend(members[every - 1::every])
  return np.sort(np.asarray(held_out, np.int64))


def folder_split(root: str, split: str, train_split: str, eval_split: str):
  """The `split` of an image folder.

  `<root>/<train_split>` and `<root>/<eval_split>` are the two splits when both
  exist, the evaluation one labelled by the training one's class names. When
  there is no evaluation folder, the evaluation split is every
  HELD_OUT_EVERY-th image of each class of the training images (`<root>/<train_split>`,
  else `<root>` itself) and training uses the rest, so no image is both.
  """
  train_dir, eval_dir = (os.path.join(root, s) for s in (train_split, eval_split))
  has_train, has_eval = os.path.isdir(train_dir), os.path.isdir(eval_dir)
  if has_eval and not has_train:
    raise DataError(
        f'Image folder {root!r} has a {eval_split!r} folder but no '
        f'{train_split!r} folder; put the training images in {train_dir!r}.'
    )
  if has_train and has_eval:
    train = ImageFolderSource(train_dir)
    if split == train_split:
      return train
    return ImageFolderSource(eval_dir, class_names=train.class_names or None)
  images = ImageFolderSource(train_dir if has_train else root)
  held_out = held_out_indices(images.labels)
  if split == eval_split:
    logging.warning(
        'Image folder %s has no %r folder: evaluating on every %dth image of '
        'each class (%d images), which training does not use.',
        root, eval_split, HELD_OUT_EVERY, len(held_out))
    return SubsetSource(images, held_out)
  return SubsetSource(images, np.setdiff1d(np.arange(len(images)), held_out))


class SubsetSource:
  """The records of `source` at `indices`, renumbered 0..len-1; other attributes are the source's."""

  def __init__(self, source: Any, indices: np.ndarray):
    self._source = source
    self._indices = np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self._source[int(self._indices[int(index)])]

  @property
  def arrays(self) -> dict[str, np.ndarray]:
    return {k: v[self._indices] for k, v in self._source.arrays.items()}

  def record_names(self, indices: Sequence[int]) -> list[str] | None:
    return record_names(self._source, self._indices[np.asarray(indices, np.int64)])

  def __getattr__(self, name: str) -> Any:  # has_labels, num_classes, fps, ...
    if name.startswith('__') or name in ('_source', '_indices'):
      raise AttributeError(name)
    return getattr(self._source, name)

  def __repr__(self) -> str:
    return f'SubsetSource({len(self)} of {self._source!r})'


def record_names(source: Any, indices: Sequence[int]) -> list[str] | None:
  """File names of the records at `indices` (an image folder's file names, a TFDS
  dataset's `file_name` feature), for subset lists written by name; None when
  the source has none (built-in data)."""
  names = getattr(source, 'record_names', None)
  return names(indices) if names is not None else None


def restrict_to_train_examples(source: Any, count: int) -> Any:
  """`source` cut to `count` evenly spaced records (`config.data.train_examples`; 0: all).

  Pretraining reads the subset; evaluation still uses the whole split for its kNN references,
  so the baselines are the same as without a subset.
  """
  count = int(count or 0)
  if not count:
    return source
  if not 0 < count <= len(source):
    raise DataError(
        f'config.data.train_examples={count} is not a number of records of the '
        f'{len(source)}-record training split; set it between 1 and {len(source)}, '
        'or to 0 to train on all of them.'
    )
  return SubsetSource(source, evenly_spaced_indices(len(source), count))


def make_source(data_config: Any, split: str):
  """Returns the source for `data_config.name` and `split`.

  Args:
    data_config: a `DataSpec`, or `config.data` (parsed by `DataSpec.from_config`).
    split: the split to read, e.g. `config.data.train_split`.
  """
  spec = DataSpec.from_config(data_config)
  if spec.kind == 'video':
    from jaxssl.data import video  # pylint: disable=g-import-not-at-top

    return video.make_video_source(spec, split)
  name = spec.name
  if not isinstance(name, str) or ':' not in name:
    raise DataError(
        f'config.data.name {name!r} is not a valid data source; use one of '
        f'{", ".join(SOURCE_FORMS)}.'
    )
  kind, _, rest = name.partition(':')
  kind = kind.strip().lower()
  rest = rest.strip()
  if kind == 'builtin':
    from jaxssl.data import builtin  # pylint: disable=g-import-not-at-top

    return ArraySource(builtin.load_builtin(rest, split, image_size=spec.image_size, seed=spec.seed))
  if kind == 'tfds':
    return TfdsSource(
        rest,
        split,
        data_dir=spec.data_dir,
        image_key=spec.image_key,
        label_key=spec.label_key,
        download=spec.download,
    )
  if kind == 'folder':
    return folder_split(
        os.path.expanduser(rest), split, spec.train_split, spec.eval_split
    )
  raise DataError(
      f'config.data.name {name!r} has an unknown prefix {kind!r}; use one of '
      f'{", ".join(SOURCE_FORMS)}.'
  )
