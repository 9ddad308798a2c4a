"""Datasets of reference section 2, and the ARSM paper's MNIST: download,
verify, cache and load.

Four datasets, each made of raw files fetched from a URL:
  binarized_mnist  Larochelle's static binarization: three `.amat` text files.
  mnist            LeCun's `train-images-idx3-ubyte.gz` (grey levels), used
                   only for dynamic binarization (`dynamic_b`).
  mnist_threshold  The same training images and LeCun's
                   `t10k-images-idx3-ubyte.gz`, binarized at grey > 0.5 (the
                   ARSM paper's MNIST; `binarization='threshold'`).
  omniglot         The IWAE authors' `chardata.mat`.
The first three are reference section 2's; a raw file two datasets share
(the training images) is downloaded once.

Raw files land in `data_dir`, are verified against pinned sizes and
checksums (Omniglot, whose checksum is not published: against the one
recorded in `chardata.mat.sha256` on its first download) and are converted
once into uncompressed `.npz` caches that load in a fraction of a second:

  binarized_mnist.npz   train/valid/test: uint8 in {0,1}, shape (n, 784).
  mnist_train_grey.npz  train: uint8 0..255, the first 50,000 training
                        images, shape (50000, 784).
  mnist_threshold.npz   train/valid/test: uint8 in {0,1}, pixel 1 iff grey
                        byte >= 128; valid the first 5,000 training images,
                        train the other 55,000, test the 10,000 test images.
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
downloads (it builds a missing cache from raw files already present). The
command-line flags that set `data_dir` and the locations (--data_dir and the
URL flags) are rebar.cli's, with this module's defaults.

Its pieces live in modules of their own, whose public names it re-exports:
  rebar.data_files    errors, atomic writes, sizes and checksums;
  rebar.data_fetch    `fetch` of one file: http(s) with resume, retries and
                      a deadline, or a copy from a path;
  rebar.data_raw      the raw files' table, locations and checksum records;
  rebar.data_readers  the raw files' formats, and Omniglot's preprocessing;
  rebar.data_caches   the `.npz` caches' checks, records and writes.
None imports TensorFlow, and scipy and requests are imported only where
needed, so that importing this module and loading a cache stay fast.
"""

import dataclasses
import functools
import os
import zipfile
import zlib

from absl import logging
import numpy as np

from rebar import data_caches
from rebar import data_files
from rebar import data_raw
# The binarizations a run may ask for besides its task's own data ('').
from rebar.hparams import BINARIZATIONS
# Re-exported: the data layer's public names, where callers know them.
# pylint: disable=unused-import,g-importing-member
from rebar.data_fetch import DOWNLOAD_DEADLINE_S
from rebar.data_fetch import download_deadline
from rebar.data_fetch import fetch
from rebar.data_files import CorruptFileError
from rebar.data_files import DataError
from rebar.data_files import DownloadError
from rebar.data_files import Expected
from rebar.data_files import file_digest
from rebar.data_raw import RAW_FILES
from rebar.data_raw import RawFile
from rebar.data_raw import sources_for
from rebar.data_raw import split_locations
from rebar.data_readers import IMAGE_SIDE
from rebar.data_readers import MNIST_THRESHOLD_VALID_ROWS
from rebar.data_readers import N_PIXELS
from rebar.data_readers import OMNIGLOT_BINARIZE_SEED
from rebar.data_readers import OMNIGLOT_SHUFFLE_SEED
from rebar.data_readers import OMNIGLOT_VALID_ROWS
from rebar.data_readers import preprocess_omniglot
from rebar.data_readers import read_amat
from rebar.data_readers import read_idx_images
from rebar.data_readers import read_omniglot_mat
from rebar.data_readers import threshold_mnist
# pylint: enable=unused-import,g-importing-member

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

SPLITS = ('train', 'valid', 'test')
# The original trains dynamic binarization on the first 50,000 MNIST images.
MNIST_GREY_TRAIN_ROWS = 50_000

DATASETS = {
    'binarized_mnist': ('binarized_mnist_train.amat',
                        'binarized_mnist_valid.amat',
                        'binarized_mnist_test.amat'),
    'mnist': ('train-images-idx3-ubyte.gz',),
    'mnist_threshold': ('train-images-idx3-ubyte.gz',
                        't10k-images-idx3-ubyte.gz'),
    'omniglot': ('chardata.mat',),
}
# Reference section 2's, which download_data fetches by default.
REFERENCE_DATASETS = ('binarized_mnist', 'mnist', 'omniglot')


# ---------------------------------------------------------------- caches
# What each cache holds, and how it is built from the raw files.


def _build_binarized_mnist(data_dir):
  names = DATASETS['binarized_mnist']
  return {split: read_amat(data_raw.raw_path(data_dir, name),
                           RAW_FILES[name].rows)
          for split, name in zip(SPLITS, names)}


def _build_mnist_grey(data_dir):
  name, = DATASETS['mnist']
  path = data_raw.raw_path(data_dir, name)
  images = read_idx_images(path, RAW_FILES[name].rows)
  if images.shape[0] < MNIST_GREY_TRAIN_ROWS:
    raise CorruptFileError(path, f'{images.shape[0]} images, fewer than '
                           f'{MNIST_GREY_TRAIN_ROWS}')
  return {'train': images[:MNIST_GREY_TRAIN_ROWS]}


def _build_mnist_threshold(data_dir):
  train_name, test_name = DATASETS['mnist_threshold']
  train, valid, test = threshold_mnist(
      read_idx_images(data_raw.raw_path(data_dir, train_name),
                      RAW_FILES[train_name].rows),
      read_idx_images(data_raw.raw_path(data_dir, test_name),
                      RAW_FILES[test_name].rows),
      MNIST_THRESHOLD_VALID_ROWS)
  return {'train': train, 'valid': valid, 'test': test}


def _build_omniglot(data_dir, binarize):
  name, = DATASETS['omniglot']
  data, testdata = read_omniglot_mat(data_raw.raw_path(data_dir, name))
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


def _threshold_rows():
  train_name, test_name = DATASETS['mnist_threshold']
  return {'train': RAW_FILES[train_name].rows - MNIST_THRESHOLD_VALID_ROWS,
          'valid': MNIST_THRESHOLD_VALID_ROWS,
          'test': RAW_FILES[test_name].rows}


def _omniglot_rows():
  return {'train': None, 'valid': OMNIGLOT_VALID_ROWS, 'test': None}


_CACHES = {
    'binarized_mnist.npz': _Cache('binarized_mnist', np.uint8,
                                  _build_binarized_mnist, _binarized_rows),
    'mnist_train_grey.npz': _Cache(
        'mnist', np.uint8, _build_mnist_grey,
        lambda: {'train': MNIST_GREY_TRAIN_ROWS}),
    'mnist_threshold.npz': _Cache('mnist_threshold', np.uint8,
                                  _build_mnist_threshold, _threshold_rows),
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
    'mnist_threshold': ('mnist_threshold.npz',),
    'omniglot': ('omniglot.npz',),
}


def _caches_for(task, dynamic_b, binarization=''):
  """The caches a run of `task` loads, in the order `load_data` reads them.

  `binarization` '' is the task's own data; 'threshold' is MNIST binarized at
  grey > 0.5, for task sbn with static binarization only.
  """
  if task not in ('sbn', 'sp', 'omni'):
    raise DataError(f'unknown task {task!r}; choose sbn, sp or omni')
  if binarization not in BINARIZATIONS:
    raise DataError(f'unknown binarization {binarization!r}; choose '
                    'threshold or leave it empty')
  if binarization == 'threshold':
    if task != 'sbn' or dynamic_b:
      raise DataError('binarization=threshold binarizes MNIST: it needs '
                      f'task=sbn and dynamic_b=false (got task={task}, '
                      f'dynamic_b={str(bool(dynamic_b)).lower()}); set '
                      'those, or leave binarization empty')
    return ('mnist_threshold.npz',)
  if task in ('sbn', 'sp'):
    return ('binarized_mnist.npz',) + (
        ('mnist_train_grey.npz',) if dynamic_b else ())
  return ('omniglot_grey.npz',) if dynamic_b else ('omniglot.npz',)


def datasets_for(task, dynamic_b, binarization=''):
  """Names of the datasets a run of `task` needs."""
  return tuple(_CACHES[c].dataset
               for c in _caches_for(task, dynamic_b, binarization))


def _our_files(data_dir):
  """Names of the files we write in `data_dir` through `write_atomic`."""
  return {*_CACHES, *(data_caches.record_path(c) for c in _CACHES),
          *(os.path.basename(data_raw.record_path(data_dir, n))
            for n in RAW_FILES)}


# ---------------------------------------------------------------- get, load


def _get_cache(cache_name, data_dir, urls, progress=True):
  """Path of a valid cache file, built from the raw files if missing.

  Raw files are downloaded only when `urls` is given. One whose content is
  found wrong while building is deleted, and downloaded again once if it was
  not just downloaded.
  """
  cache = _CACHES[cache_name]
  path = os.path.join(data_dir, cache_name)
  data_caches.remove_leftovers(data_dir, _our_files(data_dir))
  if data_caches.is_valid(path, cache.dtype, cache.rows()):
    return path
  for attempt in range(2):
    fetched = {name for name in DATASETS[cache.dataset]
               if data_raw.get_raw(name, data_dir, urls, cache.dataset,
                                   progress)}
    logging.info('building %s from raw files', path)
    try:
      arrays = cache.build(data_dir)
    except CorruptFileError as e:
      data_files.remove(e.path)
      logging.warning('%s; deleted it', e)
      if urls is None:
        raise DataError(f'{e}; deleted it; '
                        + data_raw.fix_hint([cache.dataset], data_dir)) from e
      if attempt or os.path.basename(e.path) in fetched:
        flag = RAW_FILES[os.path.basename(e.path)].url_flag
        raise DataError(f'{e}; deleted it; set --{flag} to a good copy') from e
      continue
    data_files.make_dir(data_dir)
    try:
      data_raw.record_unpinned(DATASETS[cache.dataset], data_dir)
      data_caches.write(path, arrays)
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
                binarization='', progress=True):
  """Makes sure the caches a run of `task` needs are in `data_dir`.

  `binarization` is the run's hparam ('' or 'threshold', see _caches_for).

  Downloads what is missing if `download`; otherwise, or if that fails,
  raises DataError naming download_data.py and its flags.

  Returns:
    The names of the datasets the run uses.
  """
  data_dir = os.path.expanduser(data_dir)
  urls = DEFAULT_URLS if urls is None else urls
  for cache_name in _caches_for(task, dynamic_b, binarization):
    dataset = _CACHES[cache_name].dataset
    try:
      _get_cache(cache_name, data_dir, urls if download else None, progress)
    except DataError as e:
      if not download:
        raise
      raise DataError(f'could not get {dataset}: {e}; '
                      + data_raw.fix_hint([dataset], data_dir)) from e
  return datasets_for(task, dynamic_b, binarization)


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
      data_files.remove(path)
      data_files.remove(data_caches.record_path(path))


def load_data(hparams, data_dir, compact=False):
  """(train, valid, test) float32 arrays of shape (n, 784), reference 2.

  `hparams` is any object with attributes `task` and `dynamic_b`, and
  optionally `binarization` ('' if absent; 'threshold': MNIST binarized at
  grey > 0.5, split 55,000 / 5,000 / 10,000). Never downloads: a missing
  cache is built from raw files in `data_dir` if they are there, else
  DataError names the fix; so is a damaged one. With
  `compact`, binary sets are returned as uint8 0/1 (the same values, a
  quarter of the memory; grey training sets stay float32).
  """
  data_dir = os.path.expanduser(data_dir)
  task, dynamic_b = hparams.task, bool(hparams.dynamic_b)
  binarization = getattr(hparams, 'binarization', '')
  cache_names = _caches_for(task, dynamic_b, binarization)
  for cache_name in cache_names:  # Missing data is reported before loading.
    _get_cache(cache_name, data_dir, None)

  def as_float(npz, key):
    # One uint8 array at a time, so no more than one is held beside the
    # float32 results.
    values = npz[key]
    if compact and values.dtype == np.uint8:
      return values
    return values.astype(np.float32)

  if task == 'omni' or binarization:  # One cache of all three splits.
    return _read_cache(cache_names[0], data_dir, lambda f: tuple(
        as_float(f, key) for key in SPLITS))
  keys = ('valid', 'test') if dynamic_b else SPLITS
  binary = _read_cache(cache_names[0], data_dir, lambda f: {
      key: as_float(f, key) for key in keys})
  if not dynamic_b:
    return binary['train'], binary['valid'], binary['test']
  train = _read_cache(cache_names[1], data_dir,
                      lambda f: f['train'].astype(np.float32))
  train /= np.float32(255)  # Grey levels in [0, 1].
  return train, binary['valid'], binary['test']
