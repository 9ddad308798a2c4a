"""Readers of the raw files' formats, and Omniglot's preprocessing.

  read_amat           Larochelle's binarized MNIST `.amat` text files.
  read_idx_images     LeCun's gzipped IDX image files.
  read_omniglot_mat   The IWAE authors' `chardata.mat`.
  preprocess_omniglot Its shuffle, split and binarization (reference 2).
  threshold_mnist     MNIST binarized at grey > 0.5 and split as the ARSM
                      paper's (TensorFlow's old tutorial split).

Each reader checks the format strictly and raises CorruptFileError (naming
the file and what is wrong) rather than return wrong arrays. scipy is
imported only when a `.mat` file is read, as it is slow to import.
"""

import gzip
import zlib

import numpy as np

from rebar.data_files import CorruptFileError

IMAGE_SIDE = 28
N_PIXELS = IMAGE_SIDE * IMAGE_SIDE
OMNIGLOT_VALID_ROWS = 1_345
OMNIGLOT_BINARIZE_SEED = 5
OMNIGLOT_SHUFFLE_SEED = 123
# The ARSM paper's MNIST: pixel 1 iff grey / 255 > 0.5, i.e. grey byte >= 128;
# the first 5,000 training images are its validation set.
MNIST_THRESHOLD_GREY = 128
MNIST_THRESHOLD_VALID_ROWS = 5_000


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


def threshold_mnist(train_images, test_images,
                    n_valid=MNIST_THRESHOLD_VALID_ROWS):
  """Binarizes MNIST at grey > 0.5 and splits it as the ARSM paper does.

  Args:
    train_images, test_images: uint8 grey levels (n, 784), as
      `read_idx_images` returns them.
    n_valid: leading training images kept for validation (TensorFlow's old
      tutorial split: the first 5,000).

  Returns:
    (train, valid, test), uint8 0/1 of shape (n, 784): train the training
    images after the first `n_valid`, valid those, test all test images.
  """
  def binarize(images):
    return (images >= MNIST_THRESHOLD_GREY).astype(np.uint8)

  n_train = train_images.shape[0]
  if not 0 <= n_valid <= n_train:
    raise ValueError(f'cannot keep {n_valid} of {n_train} rows for validation')
  return (binarize(train_images[n_valid:]), binarize(train_images[:n_valid]),
          binarize(test_images))
