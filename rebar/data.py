"""Datasets of reference section 2: download, verify, cache and load.

Three datasets, each made of raw files fetched from a URL:
  binarized_mnist  Larochelle's static binarization: three `.amat` text files.
  mnist            LeCun's `train-images-idx3-ubyte.gz` (grey levels), used
                   only for dynamic binarization (`dynamic_b`).
  omniglot         The IWAE authors' `chardata.mat`.

Raw files land in `data_dir`, are verified against pinned sizes and
checksums (Omniglot, whose checksum is not published: against the one
recorded in `chardata.mat.sha256` on its first download) and are converted
once into uncompressed `.npz` caches that load in a fraction of a second:

  binarized_mnist.npz   train/valid/test: uint8 in {0,1}, shape (n, 784).
  mnist_train_grey.npz  train: uint8 0..255, the first 50,000 training
                        images, shape (50000, 784).
  omniglot.npz          train/valid/test: uint8 in {0,1}, binarized, shuffled
                        and split as reference 2 prescribes.
  omniglot_grey.npz     train/valid/test: float32 grey levels, shuffled and
                        split the same way but not binarized (task `omni`
                        with `dynamic_b`). Built on first need only, as no
                        published run uses it.

Each cache has a record `<cache>.sha256` (size, mtime, sha256) written when
it is built; a cache that no longer matches it, or whose data fails the zip's
CRCs when read, is rebuilt from the raw files.

Each source is a list of locations tried in order (docs/data.md lists the
defaults and mirrors); each file's download has a deadline, past which what
arrived is kept in `<file>.part` for the next try to resume.

`download` and `ensure_data` fetch what is missing; `load_data` never
downloads (it builds a missing cache from raw files already present).
This module does not import TensorFlow; scipy and requests are imported only
where they are needed, so that importing it and loading a cache stay fast.
"""

import dataclasses
import functools
import gzip
import hashlib
import json
import os
import re
import socket
import sys
import time
import urllib.parse
import urllib.request
import uuid
import zipfile
import zlib

from absl import logging
import numpy as np

# Locations tried in order. LeCun's site answers 404 for the training images
# since 2025; the next two are the copies that torchvision and TensorFlow
# Datasets download from, the same bytes (the pinned md5 decides).
MNIST_URLS = (
    'http://yann.lecun.com/exdb/mnist',
    'https://ossci-datasets.s3.amazonaws.com/mnist',
    'https://storage.googleapis.com/cvdf-datasets/mnist',
)
# No copy known to serve the same bytes (docs/data.md).
MNIST_BINARIZED_URLS = (
    'http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist',)
OMNIGLOT_URLS = (
    'https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat',)
DEFAULT_URLS = {
    'mnist_url': MNIST_URLS,
    'mnist_binarized_url': MNIST_BINARIZED_URLS,
    'omniglot_url': OMNIGLOT_URLS,
}
DEFAULT_DATA_DIR = os.path.expanduser(os.path.join('~', '.rebar', 'data'))

IMAGE_SIDE = 28
N_PIXELS = IMAGE_SIDE * IMAGE_SIDE
SPLITS = ('train', 'valid', 'test')
# The original trains dynamic binarization on the first 50,000 MNIST images.
MNIST_GREY_TRAIN_ROWS = 50_000
OMNIGLOT_VALID_ROWS = 1_345
OMNIGLOT_BINARIZE_SEED = 5
OMNIGLOT_SHUFFLE_SEED = 123

_CHUNK = 1 << 20
_HTTP_TIMEOUT = (10, 60)  # seconds: (connect, between two reads)
# A read timeout restarts with every byte, so a server trickling bytes would
# hold a download for days: each file gets this many seconds in all, plus one
# per _DEADLINE_BYTES_PER_S bytes of its size (an average of about 0.8
# Mbit/s). What arrived by then is kept for the next try to resume.
DOWNLOAD_DEADLINE_S = 120
_DEADLINE_BYTES_PER_S = 100_000
_UNKNOWN_SIZE = 100_000_000  # Assumed if unknown: GitHub's limit on a file.
# A temporary file of ours unchanged for this long has lost its writer; a
# younger one may be another process's write in progress.
_STALE_TMP_S = 60


class DataError(Exception):
  """A data problem the user can fix. The message is one line naming the fix."""

  def __init__(self, message):
    super().__init__(' '.join(str(message).splitlines()))


class CorruptFileError(DataError):
  """A raw file whose content is wrong (size, checksum or format).

  Attributes:
    path: the file.
    reason: what is wrong with it.
    source: where its bytes were downloaded from, if they just were.
  """

  def __init__(self, path, reason, source=None):
    rejected = f'download from {source} rejected: ' if source else ''
    super().__init__(f'{path}: {rejected}{reason}')
    self.path, self.reason, self.source = path, reason, source


class DownloadError(DataError):
  """A location that could not be fetched from; `reason` says why."""

  def __init__(self, source, reason):
    self.source = source
    self.reason = ' '.join(str(reason).splitlines())
    super().__init__(f'cannot fetch {source}: {self.reason}')


@dataclasses.dataclass(frozen=True)
class RawFile:
  """A file to download and what it must hold.

  Attributes:
    url_flag: key of the `urls` dict, and name of the flag, giving its source.
    url_is_base: the source is `<url>/<file name>`; else the URL itself.
    size: expected bytes; None if unknown.
    algo, digest: pinned checksum (hashlib name, hex); None if unknown, in
      which case one is recorded on the first download (`_record_path`).
    rows: images the file must hold; None if unknown.
  """
  url_flag: str
  url_is_base: bool
  size: int | None = None
  algo: str | None = None
  digest: str | None = None
  rows: int | None = None


# Sizes and checksums from the mirror's README (the public files).
RAW_FILES = {
    'binarized_mnist_train.amat': RawFile(
        'mnist_binarized_url', True, 78_400_000, 'sha256',
        'ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d',
        50_000),
    'binarized_mnist_valid.amat': RawFile(
        'mnist_binarized_url', True, 15_680_000, 'sha256',
        '1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2',
        10_000),
    'binarized_mnist_test.amat': RawFile(
        'mnist_binarized_url', True, 15_680_000, 'sha256',
        'e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c',
        10_000),
    'train-images-idx3-ubyte.gz': RawFile(
        'mnist_url', True, 9_912_422, 'md5',
        'f68b3c2dcbeaaa9fbdd348bbdeb94873', 60_000),
    'chardata.mat': RawFile('omniglot_url', False),
}

DATASETS = {
    'binarized_mnist': ('binarized_mnist_train.amat',
                        'binarized_mnist_valid.amat',
                        'binarized_mnist_test.amat'),
    'mnist': ('train-images-idx3-ubyte.gz',),
    'omniglot': ('chardata.mat',),
}


def _fix_hint(datasets, data_dir):
  return (f'run `python download_data.py --datasets={",".join(datasets)} '
          f'--data_dir={data_dir}` (point --mnist_binarized_url, --mnist_url '
          'or --omniglot_url at a mirror or a local copy if the default URLs '
          'are unreachable)')


# ---------------------------------------------------------------- flags


def define_flags():
  """Defines --data_dir and the three URL flags; safe to call twice."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  tried = ' A comma-separated list is tried in order.'
  definitions = (
      ('data_dir', DEFAULT_DATA_DIR,
       'Directory for downloaded files and their caches (default '
       '~/.rebar/data, expanded).'),
      ('mnist_url', ','.join(MNIST_URLS),
       'Base location (http(s)://, file:// or a directory) of '
       'train-images-idx3-ubyte.gz, used for dynamic binarization.' + tried),
      ('mnist_binarized_url', ','.join(MNIST_BINARIZED_URLS),
       'Base location (http(s)://, file:// or a directory) of '
       'binarized_mnist_{train,valid,test}.amat.' + tried),
      ('omniglot_url', ','.join(OMNIGLOT_URLS),
       'Location (http(s)://, file:// or a path) of the file chardata.mat.'
       + tried),
  )
  for name, default, help_text in definitions:
    if name not in flags.FLAGS:
      flags.DEFINE_string(name, default, help_text)


def urls_from_flags(flag_values=None):
  """The `urls` dict of `download`/`ensure_data`, read from parsed flags.

  Each value is the tuple of locations its flag lists.
  """
  if flag_values is None:
    from absl import flags  # pylint: disable=g-import-not-at-top
    flag_values = flags.FLAGS
  return {name: split_locations(flag_values[name].value)
          for name in DEFAULT_URLS}


def split_locations(value):
  """The locations a `urls` value names, in order, as a tuple.

  A string is a comma-separated list (as the flags take); a list or tuple
  holds one location per item, so a location may contain a comma there.
  """
  if value is None:
    return ()
  items = value.split(',') if isinstance(value, str) else value
  return tuple(item.strip() for item in items if item and item.strip())


# ---------------------------------------------------------------- readers


def read_amat(path, n_rows):
  """Reads a binarized-MNIST `.amat` file into uint8 (n_rows, 784) of 0/1.

  The format is strict, as the pinned files are: each line holds 784
  characters '0' or '1', each followed by a space, the last by a newline.
  That fixed layout lets the parse be a reshape of the bytes.

  Raises:
    CorruptFileError: the file is not exactly `n_rows` such lines.
  """
  with open(path, 'rb') as f:
    raw = f.read()
  line_bytes = 2 * N_PIXELS
  if len(raw) != n_rows * line_bytes:
    raise CorruptFileError(
        path, f'{len(raw)} bytes, expected {n_rows} lines of {N_PIXELS} '
        f'values ({n_rows * line_bytes} bytes)')
  chars = np.frombuffer(raw, np.uint8).reshape(n_rows, N_PIXELS, 2)
  separators = chars[:, :, 1]
  if not (np.all(separators[:, :-1] == ord(' ')) and
          np.all(separators[:, -1] == ord('\n'))):
    raise CorruptFileError(
        path, f'lines are not {N_PIXELS} space-separated single characters')
  # Characters below '0' wrap around to large values and fail the check too.
  values = chars[:, :, 0] - np.uint8(ord('0'))
  if values.size and values.max() > 1:
    raise CorruptFileError(path, 'holds values other than 0 and 1')
  return values


def read_idx_images(path, n_images=None):
  """Reads a gzipped IDX image file (magic 2051) into uint8 (n, 784).

  Raises:
    CorruptFileError: not gzip, wrong magic or image size, truncated, or not
      `n_images` images (when given).
  """
  try:
    with gzip.open(path, 'rb') as f:
      raw = f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise CorruptFileError(path, f'not a readable gzip file ({e})') from e
  if len(raw) < 16:
    raise CorruptFileError(path, 'shorter than an IDX header')
  magic, n, rows, cols = (int(v) for v in np.frombuffer(raw, '>u4', 4))
  if magic != 2051:
    raise CorruptFileError(path, f'IDX magic {magic}, expected 2051')
  if (rows, cols) != (IMAGE_SIDE, IMAGE_SIDE):
    raise CorruptFileError(path, f'images are {rows}x{cols}, expected 28x28')
  if len(raw) != 16 + n * N_PIXELS:
    raise CorruptFileError(
        path, f'{len(raw) - 16} pixel bytes for {n} images of {N_PIXELS}')
  if n_images is not None and n != n_images:
    raise CorruptFileError(path, f'{n} images, expected {n_images}')
  return np.frombuffer(raw, np.uint8, offset=16).reshape(n, N_PIXELS)


def read_omniglot_mat(path):
  """Reads `chardata.mat`: returns its arrays `data`, `testdata` (784 x N).

  Raises:
    CorruptFileError: unreadable, a key missing, wrong shape, or values that
      are not grey levels in [0, 1].
  """
  import scipy.io  # pylint: disable=g-import-not-at-top  (slow to import)
  try:
    mat = scipy.io.loadmat(path)
  except Exception as e:  # scipy raises many types for a damaged file.
    raise CorruptFileError(path, f'not a readable MATLAB file ({e})') from e
  arrays = []
  for key in ('data', 'testdata'):
    if key not in mat:
      raise CorruptFileError(path, f'has no {key!r} array')
    x = mat[key]
    if (x.ndim != 2 or x.shape[0] != N_PIXELS or x.shape[1] == 0 or
        not np.issubdtype(x.dtype, np.number)):
      raise CorruptFileError(
          path, f'{key!r} is {x.dtype} {x.shape}, expected 784 x N numbers')
    if not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
      raise CorruptFileError(path, f'{key!r} has values outside [0, 1]')
    arrays.append(x)
  return tuple(arrays)


def preprocess_omniglot(data, testdata, binarize,
                        n_valid=OMNIGLOT_VALID_ROWS):
  """Turns the `.mat` arrays into (train, valid, test) rows (reference 2).

  Args:
    data, testdata: 784 x N arrays whose columns are 28x28 images stored
      column-major.
    binarize: sample x = (uniform < grey) with numpy's global seed 5, train
      then test; the caller's global numpy RNG state is restored afterwards.
    n_valid: rows of the shuffled training set kept, at its end, for
      validation.

  Returns:
    (train, valid, test), each (n, 784) with pixel (row r, column c) at
    r * 28 + c: bool if `binarize`, else the dtype of the input.
  """
  def to_rows(images):
    # The original's double reshape; it transposes each stored image back.
    return images.T.reshape((-1, IMAGE_SIDE, IMAGE_SIDE)).reshape(
        (-1, N_PIXELS), order='F')

  train, test = to_rows(data), to_rows(testdata)
  if binarize:
    state = np.random.get_state()
    try:
      np.random.seed(OMNIGLOT_BINARIZE_SEED)
      # Train first, then test: the order fixes which draws each set gets.
      train = np.random.rand(*train.shape) < train
      test = np.random.rand(*test.shape) < test
    finally:
      np.random.set_state(state)
  n_train = train.shape[0]
  if not 0 <= n_valid <= n_train:
    raise ValueError(f'cannot keep {n_valid} of {n_train} rows for validation')
  train = train[np.random.RandomState(OMNIGLOT_SHUFFLE_SEED).permutation(
      n_train)]
  return train[:n_train - n_valid], train[n_train - n_valid:], test


# ---------------------------------------------------------------- caches


def _raw_path(data_dir, name):
  return os.path.join(data_dir, name)


def _build_binarized_mnist(data_dir):
  names = DATASETS['binarized_mnist']
  return {split: read_amat(_raw_path(data_dir, name), RAW_FILES[name].rows)
          for split, name in zip(SPLITS, names)}


def _build_mnist_grey(data_dir):
  name, = DATASETS['mnist']
  path = _raw_path(data_dir, name)
  images = read_idx_images(path, RAW_FILES[name].rows)
  if images.shape[0] < MNIST_GREY_TRAIN_ROWS:
    raise CorruptFileError(path, f'{images.shape[0]} images, fewer than '
                           f'{MNIST_GREY_TRAIN_ROWS}')
  return {'train': images[:MNIST_GREY_TRAIN_ROWS]}


def _build_omniglot(data_dir, binarize):
  name, = DATASETS['omniglot']
  data, testdata = read_omniglot_mat(_raw_path(data_dir, name))
  splits = preprocess_omniglot(data, testdata, binarize)
  dtype = np.uint8 if binarize else np.float32
  return {key: x.astype(dtype) for key, x in zip(SPLITS, splits)}


@dataclasses.dataclass(frozen=True)
class _Cache:
  """A cache file: the dataset it comes from and the arrays it holds.

  `rows` returns {key: expected row count, or None if unknown}; it is a
  function so that it reads the module's tables when called.
  """
  dataset: str
  dtype: type
  build: object  # data_dir -> {key: array}
  rows: object   # () -> {key: int | None}


def _binarized_rows():
  return {split: RAW_FILES[name].rows
          for split, name in zip(SPLITS, DATASETS['binarized_mnist'])}


def _omniglot_rows():
  return {'train': None, 'valid': OMNIGLOT_VALID_ROWS, 'test': None}


_CACHES = {
    'binarized_mnist.npz': _Cache('binarized_mnist', np.uint8,
                                  _build_binarized_mnist, _binarized_rows),
    'mnist_train_grey.npz': _Cache(
        'mnist', np.uint8, _build_mnist_grey,
        lambda: {'train': MNIST_GREY_TRAIN_ROWS}),
    'omniglot.npz': _Cache(
        'omniglot', np.uint8,
        functools.partial(_build_omniglot, binarize=True), _omniglot_rows),
    'omniglot_grey.npz': _Cache(
        'omniglot', np.float32,
        functools.partial(_build_omniglot, binarize=False), _omniglot_rows),
}
# What `download` builds for each dataset.
_DOWNLOAD_CACHES = {
    'binarized_mnist': ('binarized_mnist.npz',),
    'mnist': ('mnist_train_grey.npz',),
    'omniglot': ('omniglot.npz',),
}


def _caches_for(task, dynamic_b):
  if task in ('sbn', 'sp'):
    return ('binarized_mnist.npz',) + (
        ('mnist_train_grey.npz',) if dynamic_b else ())
  if task == 'omni':
    return ('omniglot_grey.npz',) if dynamic_b else ('omniglot.npz',)
  raise DataError(f'unknown task {task!r}; choose sbn, sp or omni')


def datasets_for(task, dynamic_b):
  """Names of the datasets a run of `task` needs."""
  return tuple(_CACHES[c].dataset for c in _caches_for(task, dynamic_b))


def _npz_layout(path):
  """{key: (shape, dtype)} of an `.npz` file, read from the headers only."""
  layout = {}
  with zipfile.ZipFile(path) as zf:
    for member in zf.namelist():
      with zf.open(member) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
          shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
          shape, _, dtype = np.lib.format.read_array_header_2_0(f)
      layout[member.removesuffix('.npy')] = (shape, dtype)
  return layout


def _cache_is_valid(path, cache):
  """Whether cache `path` holds the arrays `cache` needs, as when built."""
  if not os.path.exists(path):
    return False
  try:
    layout = _npz_layout(path)
  except (OSError, ValueError, zipfile.BadZipFile):
    logging.warning('cache %s is unreadable; rebuilding it', path)
    return False
  for key, rows in cache.rows().items():
    if key not in layout:
      return False
    shape, dtype = layout[key]
    if (dtype != np.dtype(cache.dtype) or len(shape) != 2 or
        shape[1] != N_PIXELS or (rows is not None and shape[0] != rows)):
      logging.warning('cache %s does not hold the expected arrays; '
                      'rebuilding it', path)
      return False
  return _cache_intact(path)


def _cache_record_path(path):
  return path + '.sha256'


def _read_cache_record(path):
  """The fields recorded for cache `path`, or None if none can be read."""
  try:
    with open(_cache_record_path(path)) as f:
      fields = json.load(f)
    return {'size': int(fields['size']), 'mtime_ns': int(fields['mtime_ns']),
            'sha256': str(fields['sha256'])}
  except (OSError, ValueError, KeyError, TypeError):
    return None


def _record_cache(path, stat, digest):
  """Writes the size, mtime and sha256 of cache `path` beside it."""
  fields = {'file': os.path.basename(path), 'size': stat.st_size,
            'mtime_ns': stat.st_mtime_ns, 'sha256': digest}
  _write_atomic(_cache_record_path(path), lambda f: f.write(
      json.dumps(fields, indent=1).encode() + b'\n'))


def _zip_damage(path):
  """Why the members of zip `path` fail their CRCs, or None if none does."""
  try:
    with zipfile.ZipFile(path) as zf:
      bad = zf.testzip()
  except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
    return str(e)
  return None if bad is None else f'{bad} fails its CRC'


def _cache_intact(path):
  """Whether cache `path` holds the bytes recorded when it was built.

  A size and mtime equal to the record's are taken as proof, so that a load
  costs a stat; a changed mtime costs a full sha256. A cache without a record
  (built by older code, or by a build cut short before writing it) is read
  in full against the zip's CRCs, then recorded; where the record cannot be
  written (a read-only --data_dir) that check is repeated on each load.
  """
  try:
    stat = os.stat(path)
    record = _read_cache_record(path)
    if record is not None:
      if (record['size'], record['mtime_ns']) == (stat.st_size,
                                                  stat.st_mtime_ns):
        return True
      if record['size'] != stat.st_size:
        logging.warning('cache %s is %d bytes, not the %d recorded in %s; '
                        'rebuilding it', path, stat.st_size, record['size'],
                        _cache_record_path(path))
        return False
      digest = file_digest(path)
      if digest != record['sha256']:
        logging.warning('cache %s does not match the sha256 recorded in %s '
                        'when it was built; rebuilding it', path,
                        _cache_record_path(path))
        return False
    else:
      damage = _zip_damage(path)
      if damage is not None:
        logging.warning('cache %s is damaged (%s); rebuilding it', path,
                        damage)
        return False
      digest = file_digest(path)
  except OSError as e:
    logging.warning('cache %s is unreadable (%s); rebuilding it', path, e)
    return False
  try:
    _record_cache(path, stat, digest)
  except OSError as e:
    logging.info('cannot record the checksum of cache %s (%s)', path, e)
  return True


def _write_cache(path, arrays):
  """Writes `arrays` to cache `path`, then its record."""
  # Without the old record first, a kill between the two writes would leave
  # a new cache beside a record it fails, and a needless rebuild.
  _remove(_cache_record_path(path))
  _write_atomic(path, lambda f: np.savez(f, **arrays))
  _record_cache(path, os.stat(path), file_digest(path))


def _remove_leftovers(data_dir):
  """Deletes temporary files that interrupted writes of ours left behind."""
  targets = sorted({
      *_CACHES, *(_cache_record_path(c) for c in _CACHES),
      *(os.path.basename(_record_path(data_dir, n)) for n in RAW_FILES)})
  # The names `_write_atomic` gives them, and no other.
  pattern = re.compile(r'(?:%s)\.[0-9a-f]{8}\.tmp' %
                       '|'.join(re.escape(t) for t in targets))
  try:
    names = os.listdir(data_dir)
  except OSError:
    return
  now = time.time()
  for name in names:
    if not pattern.fullmatch(name):
      continue
    path = os.path.join(data_dir, name)
    try:
      if now - os.stat(path).st_mtime > _STALE_TMP_S:
        os.remove(path)
        logging.info('removed %s, left by an interrupted write', path)
    except OSError:
      pass  # Gone already, or not ours to remove: harmless either way.


# ---------------------------------------------------------------- files


def _make_dir(data_dir):
  try:
    os.makedirs(data_dir, exist_ok=True)
  except OSError as e:
    raise DataError(f'cannot create data directory {data_dir} '
                    f'({e.strerror}); pass a writable --data_dir') from e
  if not os.access(data_dir, os.W_OK):
    raise DataError(f'data directory {data_dir} is not writable; pass a '
                    'writable --data_dir')


def _remove(path):
  try:
    os.remove(path)
  except FileNotFoundError:
    pass


def _write_atomic(path, write):
  """Calls write(file) on a temporary file, then renames it to `path`."""
  tmp = f'{path}.{uuid.uuid4().hex[:8]}.tmp'
  try:
    with open(tmp, 'xb') as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    _remove(tmp)
    raise


def file_digest(path, algo='sha256'):
  """Hex digest of a file's bytes."""
  with open(path, 'rb') as f:
    return hashlib.file_digest(f, algo).hexdigest()


@dataclasses.dataclass(frozen=True)
class Expected:
  """What a file must be: size and checksum (each None if unknown)."""
  size: int | None = None
  algo: str | None = None
  digest: str | None = None
  origin: str = 'pinned one'  # Where the checksum comes from, for messages.


def _record_path(data_dir, name):
  return _raw_path(data_dir, name) + '.sha256'


def _expected(name, data_dir):
  """A raw file's pinned size/checksum, or the one recorded for it, or None."""
  raw = RAW_FILES[name]
  if raw.digest is not None:
    return Expected(raw.size, raw.algo, raw.digest)
  record = _record_path(data_dir, name)
  if not os.path.exists(record):
    return None
  try:
    with open(record) as f:
      fields = json.load(f)
    return Expected(int(fields['size']), 'sha256', str(fields['sha256']),
                    f'one recorded in {record}; delete that record if the '
                    'file changed on purpose')
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise DataError(f'checksum record {record} is unreadable ({e}); delete '
                    'it to record a new one') from e


def _record_unpinned(dataset, data_dir):
  """Records size and sha256 of a dataset's files that have no pinned one."""
  for name in DATASETS[dataset]:
    record = _record_path(data_dir, name)
    if RAW_FILES[name].digest is not None or os.path.exists(record):
      continue
    path = _raw_path(data_dir, name)
    fields = {'file': name, 'size': os.path.getsize(path),
              'sha256': file_digest(path, 'sha256'),
              'note': 'recorded on first download, not verified against a '
                      'published checksum'}
    _write_atomic(record, lambda f, fields=fields: f.write(
        json.dumps(fields, indent=1).encode() + b'\n'))
    logging.warning('%s has no published checksum: recorded (not verified) '
                    'its size %d and sha256 %s in %s; later loads check it',
                    name, fields['size'], fields['sha256'], record)


def _check(path, expected):
  """Why the file at `path` is not what `expected` says, or None if it is."""
  if expected is None:
    return None
  size = os.path.getsize(path)
  if expected.size is not None and size != expected.size:
    return f'{size} bytes, expected {expected.size}'
  if expected.digest is not None:
    digest = file_digest(path, expected.algo)
    if digest != expected.digest:
      return (f'{expected.algo} {digest} does not match {expected.digest},'
              f' the {expected.origin}')
  return None


# ---------------------------------------------------------------- download


def _is_http(source):
  return source.lower().startswith(('http://', 'https://'))


def sources_for(name, urls):
  """The locations to try, in order, for raw file `name` under `urls`."""
  raw = RAW_FILES[name]
  found = split_locations(urls.get(raw.url_flag))
  if not found:
    raise DataError(f'no location given for --{raw.url_flag}; pass one, or a '
                    'comma-separated list')
  if not raw.url_is_base:
    return found
  return tuple(location.rstrip('/') + '/' + name if '://' in location
               else os.path.join(os.path.expanduser(location), name)
               for location in found)


def _local_path(source):
  """The filesystem path of a `file://` URL or a plain path."""
  if '://' not in source:
    return os.path.expanduser(source)
  parsed = urllib.parse.urlparse(source)
  if parsed.scheme.lower() != 'file' or parsed.netloc not in ('',
                                                              'localhost'):
    raise DownloadError(source, 'unsupported; use http(s)://, file:// or a '
                        'filesystem path')
  return urllib.request.url2pathname(parsed.path)


def download_deadline(expected):
  """Seconds the download of a file that `expected` describes may take."""
  size = expected.size if expected is not None and expected.size else (
      _UNKNOWN_SIZE)
  return DOWNLOAD_DEADLINE_S + size / _DEADLINE_BYTES_PER_S


class _DeadlinePassed(Exception):
  """Raised by `_stream_to` when a download runs past its deadline."""


class _Progress:
  """One stderr line rewritten in place ('\\r') with the bytes done."""

  def __init__(self, label, total, enabled):
    self._label, self._total, self._enabled = label, total, enabled
    self._last = 0.0
    self._width = 0

  def update(self, done, final=False):
    now = time.monotonic()
    if not self._enabled or (not final and now - self._last < 0.2):
      return
    self._last = now
    text = f'{self._label}: {done / 1e6:.1f} MB'
    if self._total:
      text += (f' of {self._total / 1e6:.1f} MB '
               f'({100 * done / self._total:.0f}%)')
    # Pad to cover a longer previous text.
    self._width = max(self._width, len(text))
    sys.stderr.write('\r' + text.ljust(self._width) + ('\n' if final else ''))
    sys.stderr.flush()


def _stream_to(chunks, part, append, done, total, expected, label, progress,
               deadline=None):
  """Writes byte chunks to `part`; stops early past the expected size.

  Raises:
    _DeadlinePassed: the `time.monotonic()` deadline passed; what arrived
      is in `part`.
  """
  limit = expected.size if expected is not None else None
  bar = _Progress(label, total, progress)
  try:
    with open(part, 'ab' if append else 'wb') as f:
      for chunk in chunks:
        f.write(chunk)
        done += len(chunk)
        bar.update(done)
        if limit is not None and done > limit:
          break  # Longer than the file can be: the size check rejects it.
        if deadline is not None and time.monotonic() > deadline:
          raise _DeadlinePassed()
  finally:
    bar.update(done, final=True)


def _copy_local(source, part, expected, label, progress):
  path = _local_path(source)
  try:
    src = open(path, 'rb')
  except OSError as e:
    raise DownloadError(source, e.strerror or e) from e
  with src:
    total = os.fstat(src.fileno()).st_size
    _stream_to(iter(lambda: src.read(_CHUNK), b''), part, False, 0, total,
               expected, label, progress)


def _range_start(response):
  """First byte offset of a 206 response's Content-Range, or None."""
  value = response.headers.get('Content-Range', '')
  try:
    unit, rest = value.split(' ', 1)
    return int(rest.split('-', 1)[0]) if unit == 'bytes' else None
  except ValueError:
    return None


def _body_chunks(response):
  """The body of a streamed `requests` response, in pieces as they arrive."""
  raw = response.raw
  if not hasattr(raw, 'read1'):  # urllib3 < 2: a piece waits to be full.
    yield from response.iter_content(_CHUNK)
    return
  # `read1` returns whatever one socket read brings, where `iter_content`
  # blocks until a whole chunk is in: the caller's deadline is checked as
  # each byte trickles in.
  while chunk := raw.read1(_CHUNK, decode_content=True):
    yield chunk


def _lookup_failure(error):
  """The socket.gaierror (failed host name lookup) behind `error`, or None."""
  seen, pending = set(), [error]
  while pending:
    e = pending.pop()
    if not isinstance(e, BaseException) or id(e) in seen:
      continue
    seen.add(id(e))
    if isinstance(e, socket.gaierror):
      return e
    # requests and urllib3 wrap it in args, `reason` and exception chains.
    pending.extend((e.__cause__, e.__context__, getattr(e, 'reason', None),
                    *e.args))
  return None


def _timeouts(timeout, deadline):
  """(connect, read) timeouts of a request, none ending past `deadline`."""
  left = max(deadline - time.monotonic(), 0.01)
  connect, read = timeout if isinstance(timeout, tuple) else (timeout,
                                                               timeout)
  return (left if connect is None else min(connect, left),
          left if read is None else min(read, left))


def _http_download(url, part, expected, label, retries, backoff, timeout,
                   seconds, progress):
  """Streams `url` into `part`, resuming what `part` already holds.

  Network errors and 5xx answers are retried `retries` times with
  exponential backoff, each try resuming from the bytes already written,
  all within `seconds`. Failures that another try cannot mend (an unknown
  host, a 4xx answer other than 408 and 429) are not retried.

  Returns:
    Whether the final file includes bytes from an earlier request (so a
    checksum failure may be the old bytes' fault).

  Raises:
    DownloadError: the tries failed or ran out of time; `part` keeps what
      arrived, for a later call to resume.
  """
  import requests  # pylint: disable=g-import-not-at-top  (only for HTTP)
  import urllib3  # pylint: disable=g-import-not-at-top  (comes with it)
  deadline = time.monotonic() + seconds
  resumed = False
  error = None
  for attempt in range(retries + 1):
    if attempt:
      pause = backoff * 2 ** (attempt - 1)
      if time.monotonic() + pause >= deadline:
        break
      time.sleep(pause)
    offset = os.path.getsize(part) if os.path.exists(part) else 0
    # Identity encoding: the checksum is of the file's bytes as served.
    headers = {'Accept-Encoding': 'identity'}
    if offset:
      headers['Range'] = f'bytes={offset}-'
    try:
      with requests.get(url, headers=headers, stream=True,
                        timeout=_timeouts(timeout, deadline)) as response:
        status = response.status_code
        if offset and status == 416:
          return True  # `part` holds the whole file or more: check it.
        if 400 <= status < 500 and status not in (408, 429):
          raise DownloadError(url, f'HTTP {status} {response.reason}')
        response.raise_for_status()
        append = bool(offset) and status == 206 and (
            _range_start(response) == offset)
        if not append:
          offset = 0  # The server sent the whole file: start over.
        resumed = resumed or append
        length = response.headers.get('Content-Length', '')
        total = offset + int(length) if length.isdigit() else (
            expected.size if expected is not None else None)
        _stream_to(_body_chunks(response), part, append, offset, total,
                   expected, label, progress, deadline)
      return resumed
    except _DeadlinePassed:
      break
    except (requests.RequestException, urllib3.exceptions.HTTPError) as e:
      lookup = _lookup_failure(e)
      if lookup is not None:
        host = urllib.parse.urlparse(url).hostname
        raise DownloadError(url, f'host {host} not found '
                            f'({lookup.strerror or lookup})') from None
      error = e
      logging.warning('download of %s: %s (try %d of %d)', url, e,
                      attempt + 1, retries + 1)
  else:
    raise DownloadError(url, f'failed after {retries + 1} tries: {error}')
  kept = os.path.getsize(part) if os.path.exists(part) else 0
  last = f' (last error: {error})' if error is not None else ''
  raise DownloadError(url, f'not done by its {seconds:g} s deadline{last}; '
                      f'the {kept} bytes that arrived are kept in {part} for '
                      'the next try to resume')


def fetch(source, dest, expected=None, *, retries=3, backoff=1.0,
          timeout=_HTTP_TIMEOUT, deadline=None, progress=True):
  """Downloads `source` into `dest`, which appears only once verified.

  Bytes go to `dest + '.part'`; it is renamed to `dest` only when its size
  and checksum match `expected` (None: no check). For http(s) sources an
  existing `.part` is resumed with a Range request (appended to only if the
  server answers 206); a resumed file that fails its check is deleted and
  downloaded once more from scratch. `file://` URLs and paths are copied
  afresh, in the same streamed way.

  Args:
    source: http(s):// URL, file:// URL or filesystem path.
    dest: the file to create.
    expected: what the file must be (Expected), or None.
    retries, backoff: retries of a failed http(s) request, the first after
      `backoff` seconds, each later one after twice as long as the last.
    timeout: requests' (connect, read) timeouts, in seconds.
    deadline: seconds an http(s) download may take in all, tries and pauses
      included (None: `download_deadline(expected)`).
    progress: show a progress line on stderr.

  Raises:
    DownloadError: the source cannot be read (a `.part` holding bytes that
      did arrive is kept, for the next call to resume).
    CorruptFileError: the downloaded bytes fail the check (`path` is `dest`);
      nothing is left behind.
  """
  part = dest + '.part'
  label = os.path.basename(dest)
  seconds = download_deadline(expected) if deadline is None else deadline
  if not _is_http(source):
    _remove(part)  # A local copy is cheap: never resume one.
  for first_try in (True, False):
    if _is_http(source):
      resumed = _http_download(source, part, expected, label, retries,
                               backoff, timeout, seconds, progress)
    else:
      _copy_local(source, part, expected, label, progress)
      resumed = False
    reason = _check(part, expected)
    if reason is None:
      os.replace(part, dest)
      return
    _remove(part)
    if not (resumed and first_try):
      raise CorruptFileError(dest, reason, source)
    logging.warning('%s resumed from a partial download is corrupt (%s); '
                    'downloading it again from scratch', label, reason)


def _fetch_first(name, path, urls, expected, progress):
  """Fetches raw file `name` into `path` from the first location that works.

  Raises:
    DataError: every location failed; one line lists each and why, and names
      the flag to set.
  """
  flag = RAW_FILES[name].url_flag
  sources = sources_for(name, urls)
  failures = []
  for i, source in enumerate(sources):
    if i and (expected is None or expected.digest is None):
      # No checksum would catch a file spliced from two sources' bytes.
      _remove(path + '.part')
    try:
      fetch(source, path, expected, progress=progress)
      return
    except DataError as e:
      failures.append(f'{source} ({getattr(e, "reason", e)})')
      if i + 1 < len(sources):
        logging.warning('%s; trying %s next', e, sources[i + 1])
  raise DataError(f'could not fetch {name} from --{flag}: '
                  f'{"; ".join(failures)}; set --{flag} to a reachable copy '
                  '(a comma-separated list is tried in order)')


def _get_raw(name, data_dir, urls, dataset, progress):
  """Makes sure raw file `name` is in `data_dir` and intact.

  A file present but failing its check is deleted; it is then downloaded
  when `urls` is given, else DataError names the fix.

  Returns:
    True if the file was downloaded by this call.
  """
  path = _raw_path(data_dir, name)
  expected = _expected(name, data_dir)
  if os.path.exists(path):
    reason = _check(path, expected)
    if reason is None:
      return False
    _remove(path)
    logging.warning('%s is corrupt (%s); deleted it', path, reason)
    if urls is None:
      raise DataError(f'{path} was corrupt ({reason}) and has been deleted; '
                      + _fix_hint([dataset], data_dir))
  elif urls is None:
    raise DataError(f'{dataset} data not found in {data_dir}; '
                    + _fix_hint([dataset], data_dir))
  _make_dir(data_dir)
  try:
    _fetch_first(name, path, urls, expected, progress)
  except OSError as e:
    raise DataError(f'cannot write {path} ({e}); pass a writable '
                    '--data_dir') from e
  return True


def _get_cache(cache_name, data_dir, urls, progress=True):
  """Path of a valid cache file, built from the raw files if missing.

  Raw files are downloaded only when `urls` is given. One whose content is
  found wrong while building is deleted, and downloaded again once if it was
  not just downloaded.
  """
  cache = _CACHES[cache_name]
  path = os.path.join(data_dir, cache_name)
  _remove_leftovers(data_dir)
  if _cache_is_valid(path, cache):
    return path
  for attempt in range(2):
    fetched = {name for name in DATASETS[cache.dataset]
               if _get_raw(name, data_dir, urls, cache.dataset, progress)}
    logging.info('building %s from raw files', path)
    try:
      arrays = cache.build(data_dir)
    except CorruptFileError as e:
      _remove(e.path)
      logging.warning('%s; deleted it', e)
      if urls is None:
        raise DataError(f'{e}; deleted it; '
                        + _fix_hint([cache.dataset], data_dir)) from e
      if attempt or os.path.basename(e.path) in fetched:
        flag = RAW_FILES[os.path.basename(e.path)].url_flag
        raise DataError(f'{e}; deleted it; set --{flag} to a good copy') from e
      continue
    _make_dir(data_dir)
    try:
      _record_unpinned(cache.dataset, data_dir)
      _write_cache(path, arrays)
    except OSError as e:
      raise DataError(f'cannot write {path} ({e}); pass a writable '
                      '--data_dir') from e
    return path


def download(names, data_dir, urls=None, *, progress=True):
  """Fetches and caches each named dataset not already cached in `data_dir`.

  Args:
    names: dataset names, keys of DATASETS.
    data_dir: directory for raw files and caches (created if needed).
    urls: dict with keys 'mnist_url', 'mnist_binarized_url', 'omniglot_url'
      (None: the public defaults).
    progress: show a progress line on stderr while downloading.

  Returns:
    {name: None if ready, else the one-line reason it failed}. A failure
    does not stop or undo the other datasets.
  """
  unknown = [n for n in names if n not in DATASETS]
  if unknown:
    raise DataError(f'unknown dataset {", ".join(unknown)}; choose from '
                    f'{", ".join(DATASETS)}')
  data_dir = os.path.expanduser(data_dir)
  urls = DEFAULT_URLS if urls is None else urls
  results = {}
  for name in names:
    try:
      for cache_name in _DOWNLOAD_CACHES[name]:
        _get_cache(cache_name, data_dir, urls, progress)
      results[name] = None
    except DataError as e:
      results[name] = str(e)
    except OSError as e:  # E.g. a raw file that cannot be read.
      results[name] = str(DataError(f'{type(e).__name__}: {e}'))
  return results


def ensure_data(task, dynamic_b, data_dir, urls=None, download=True, *,
                progress=True):
  """Makes sure the caches a run of `task` needs are in `data_dir`.

  Downloads what is missing if `download`; otherwise, or if that fails,
  raises DataError naming download_data.py and its flags.

  Returns:
    The names of the datasets the run uses.
  """
  data_dir = os.path.expanduser(data_dir)
  urls = DEFAULT_URLS if urls is None else urls
  for cache_name in _caches_for(task, dynamic_b):
    dataset = _CACHES[cache_name].dataset
    try:
      _get_cache(cache_name, data_dir, urls if download else None, progress)
    except DataError as e:
      if not download:
        raise
      raise DataError(f'could not get {dataset}: {e}; '
                      + _fix_hint([dataset], data_dir)) from e
  return datasets_for(task, dynamic_b)


def _read_cache(cache_name, data_dir, read):
  """Returns read(npz) of a cache, rebuilt once if its data reads damaged.

  Damage that left the cache's mtime alone (a failing disk) passes the
  record check; the zip's CRCs, checked as each array is read, catch it.
  """
  for attempt in range(2):
    path = _get_cache(cache_name, data_dir, None)
    try:
      with np.load(path) as npz:
        return read(npz)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as e:
      if attempt:
        raise DataError(f'cache {path} reads damaged even rebuilt ({e}); '
                        'check the disk, or pass another --data_dir') from e
      logging.warning('cache %s is damaged (%s); rebuilding it', path, e)
      _remove(path)
      _remove(_cache_record_path(path))


def load_data(hparams, data_dir, compact=False):
  """(train, valid, test) float32 arrays of shape (n, 784), reference 2.

  `hparams` is any object with attributes `task` and `dynamic_b`. Never
  downloads: a missing cache is built from raw files in `data_dir` if they
  are there, else DataError names the fix; so is a damaged one. With
  `compact`, binary sets are returned as uint8 0/1 (the same values, a
  quarter of the memory; grey training sets stay float32).
  """
  data_dir = os.path.expanduser(data_dir)
  task, dynamic_b = hparams.task, bool(hparams.dynamic_b)
  caches = _caches_for(task, dynamic_b)
  for cache_name in caches:  # Any missing data is reported before loading.
    _get_cache(cache_name, data_dir, None)

  def as_float(npz, key):
    # One uint8 array at a time, so no more than one is held beside the
    # float32 results.
    values = npz[key]
    if compact and values.dtype == np.uint8:
      return values
    return values.astype(np.float32)

  if task == 'omni':
    return _read_cache(caches[0], data_dir, lambda f: tuple(
        as_float(f, key) for key in SPLITS))
  keys = ('valid', 'test') if dynamic_b else SPLITS
  binary = _read_cache(caches[0], data_dir, lambda f: {
      key: as_float(f, key) for key in keys})
  if not dynamic_b:
    return binary['train'], binary['valid'], binary['test']
  train = _read_cache(caches[1], data_dir,
                      lambda f: f['train'].astype(np.float32))
  train /= np.float32(255)  # Grey levels in [0, 1].
  return train, binary['valid'], binary['test']
