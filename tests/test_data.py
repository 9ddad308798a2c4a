"""Tests of the data layer (rebar/data.py, download_data.py; reference 2).

Readers, preprocessing and the downloader run on small files written here in
the real formats; the real files are checked against the offline mirror at
<repo>/../shared/datasets where it exists.
"""

import gzip
import hashlib
import http.server
import json
import logging
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest
import scipy.io

from rebar import cli
from rebar import data

REPO = pathlib.Path(__file__).resolve().parents[1]
MIRROR = REPO.parent / 'shared' / 'datasets'
# The public files' sizes and checksums, as the mirror's README lists them.
MIRROR_FILES = {
    'binarized_mnist/binarized_mnist_train.amat': (
        78_400_000, 'sha256',
        'ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d'),
    'binarized_mnist/binarized_mnist_valid.amat': (
        15_680_000, 'sha256',
        '1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2'),
    'binarized_mnist/binarized_mnist_test.amat': (
        15_680_000, 'sha256',
        'e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c'),
    'mnist/train-images-idx3-ubyte.gz': (
        9_912_422, 'md5', 'f68b3c2dcbeaaa9fbdd348bbdeb94873'),
    'mnist/t10k-images-idx3-ubyte.gz': (
        1_648_877, 'md5', '9fb629c4189551a2d022fa330f9573f3'),
}
MIRROR_URLS = {'mnist_binarized_url': (MIRROR / 'binarized_mnist').as_uri(),
               'mnist_url': (MIRROR / 'mnist').as_uri(),
               'omniglot_url': 'unused'}
needs_mirror = pytest.mark.skipif(
    not all((MIRROR / f).is_file() for f in MIRROR_FILES),
    reason=f'the offline dataset mirror is absent at {MIRROR}')

N_OMNI_TRAIN, N_OMNI_TEST = 1400, 20  # Enough rows for the 1,345 split.
N_T10K, N_THRESHOLD_VALID = 5, 4  # The small sources' threshold split.


def hparams(task, dynamic_b=False, **more):
  return types.SimpleNamespace(task=task, dynamic_b=dynamic_b, **more)


def threshold(grey):
  """The ARSM paper's rule, from grey levels 0..255: 1 iff grey/255 > 0.5."""
  return (np.asarray(grey) / 255.0 > 0.5).astype(np.uint8)


def sha256(path):
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


# ------------------------------------------------- writers of real formats


def write_amat(path, values):
  """Larochelle's layout: a line per image, values separated by spaces."""
  lines = (' '.join(str(int(v)) for v in row) + '\n' for row in values)
  pathlib.Path(path).write_text(''.join(lines))


def write_idx(path, images, magic=2051):
  """A gzipped IDX file of uint8 images (n, 28, 28); header big-endian."""
  header = np.array([magic, *images.shape], '>u4').tobytes()
  with gzip.open(path, 'wb') as f:
    f.write(header + images.astype(np.uint8).tobytes())


def write_mat(path, **arrays):
  scipy.io.savemat(path, arrays)


def expected_omniglot(data_cols, test_cols, binarize, n_valid=1345):
  """Reference 2 for Omniglot, computed image by image from the rules."""
  def rows(cols):
    # Each column is an image stored column-major; rows are row-major.
    return np.stack([c.reshape(28, 28, order='F').ravel() for c in cols.T])
  train, test = rows(data_cols), rows(test_cols)
  if binarize:
    rng = np.random.RandomState(5)  # The stream of np.random.seed(5).
    train = rng.rand(*train.shape) < train
    test = rng.rand(*test.shape) < test
  train = train[np.random.RandomState(123).permutation(len(train))]
  return train[:-n_valid], train[-n_valid:], test


# ------------------------------------------------- fixtures


@pytest.fixture
def small_sources(tmp_path, monkeypatch):
  """Small source files of all four datasets, with the tables patched.

  The binarized files are reached by file:// URL, the others by path.
  """
  rng = np.random.RandomState(0)
  src = tmp_path / 'src'
  (src / 'binarized').mkdir(parents=True)
  (src / 'mnist').mkdir()
  binarized = {}
  for split, rows in (('train', 6), ('valid', 3), ('test', 2)):
    name = f'binarized_mnist_{split}.amat'
    binarized[split] = rng.randint(0, 2, (rows, 784)).astype(np.uint8)
    write_amat(src / 'binarized' / name, binarized[split])
    monkeypatch.setitem(data.RAW_FILES, name, data.RawFile(
        'mnist_binarized_url', True, (src / 'binarized' / name).stat().st_size,
        'sha256', sha256(src / 'binarized' / name), rows))
  images = rng.randint(0, 256, (12, 28, 28)).astype(np.uint8)
  idx = src / 'mnist' / 'train-images-idx3-ubyte.gz'
  write_idx(idx, images)
  monkeypatch.setitem(data.RAW_FILES, idx.name, data.RawFile(
      'mnist_url', True, idx.stat().st_size, 'md5',
      hashlib.md5(idx.read_bytes()).hexdigest(), 12))
  monkeypatch.setattr(data, 'MNIST_GREY_TRAIN_ROWS', 10)
  omni = {'data': rng.rand(784, N_OMNI_TRAIN),
          'testdata': rng.rand(784, N_OMNI_TEST)}
  write_mat(src / 'chardata.mat', **omni)
  # Drawn last, so that the other files are those the tests had before.
  test_images = rng.randint(0, 256, (N_T10K, 28, 28)).astype(np.uint8)
  test_images[0, 0, :4] = (127, 128, 0, 255)  # Either side of the threshold.
  t10k = src / 'mnist' / 't10k-images-idx3-ubyte.gz'
  write_idx(t10k, test_images)
  monkeypatch.setitem(data.RAW_FILES, t10k.name, data.RawFile(
      'mnist_url', True, t10k.stat().st_size, 'md5',
      hashlib.md5(t10k.read_bytes()).hexdigest(), N_T10K))
  monkeypatch.setattr(data, 'MNIST_THRESHOLD_VALID_ROWS', N_THRESHOLD_VALID)
  urls = {'mnist_binarized_url': (src / 'binarized').as_uri(),
          'mnist_url': str(src / 'mnist'),
          'omniglot_url': str(src / 'chardata.mat')}
  return types.SimpleNamespace(src=src, urls=urls, binarized=binarized,
                               grey=images.reshape(12, 784), omni=omni,
                               test_grey=test_images.reshape(N_T10K, 784),
                               data_dir=tmp_path / 'data')


class _Handler(http.server.BaseHTTPRequestHandler):
  """Serves `server.files`, honouring single `bytes=N-` ranges if asked.

  Records each request's path and Range header; with `server.trickle` set,
  sends a byte every `trickle` seconds (20 at most) instead of the body.
  """

  def do_GET(self):  # pylint: disable=invalid-name
    server = self.server
    range_header = self.headers.get('Range')
    server.requests.append(range_header)
    server.paths.append(self.path)
    body = server.files.get(self.path)
    if body is None:
      self.send_error(404)
      return
    start = 0
    if range_header and server.honour_range:
      start = int(range_header.removeprefix('bytes=').split('-')[0])
      if start >= len(body):
        self.send_response(416)
        self.send_header('Content-Range', f'bytes */{len(body)}')
        self.send_header('Content-Length', '0')
        self.end_headers()
        return
      self.send_response(206)
      self.send_header('Content-Range',
                       f'bytes {start}-{len(body) - 1}/{len(body)}')
    else:
      self.send_response(200)
    payload = body[start:]
    self.send_header('Content-Length', str(len(payload)))
    self.end_headers()
    if server.drop_after is not None:  # Announce all, send part, hang up.
      payload, server.drop_after = payload[:server.drop_after], None
    trickle = server.trickle  # As it was when this request came.
    if trickle is not None:
      for i in range(min(len(payload), 20)):
        try:
          self.wfile.write(payload[i:i + 1])
        except OSError:
          return  # The client gave up.
        time.sleep(trickle)
      return
    self.wfile.write(payload)

  def log_message(self, *args):
    pass


def clear_proxies(monkeypatch):
  """Lets requests connect directly, as the tests' hosts are not proxied."""
  for name in ('http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY',
               'all_proxy', 'ALL_PROXY'):
    monkeypatch.delenv(name, raising=False)


@pytest.fixture
def http_server(monkeypatch):
  clear_proxies(monkeypatch)
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
  server.files, server.requests, server.paths = {}, [], []
  server.honour_range, server.drop_after, server.trickle = True, None, None
  server.url = f'http://127.0.0.1:{server.server_address[1]}'
  thread = threading.Thread(target=server.serve_forever, args=(0.05,),
                            daemon=True)
  thread.start()
  yield server
  server.shutdown()
  server.server_close()
  thread.join()


@pytest.fixture
def payload(tmp_path):
  """A 3 MB file (several download chunks), its bytes and its Expected."""
  body = np.random.RandomState(1).bytes(3_000_000)
  path = tmp_path / 'payload.bin'
  path.write_bytes(body)
  expected = data.Expected(len(body), 'sha256',
                           hashlib.sha256(body).hexdigest())
  return types.SimpleNamespace(path=path, body=body, expected=expected)


def assert_nothing_left(dest):
  assert not os.path.exists(dest)
  assert not os.path.exists(f'{dest}.part')


# ------------------------------------------------- readers


def test_read_amat(tmp_path):
  values = np.random.RandomState(2).randint(0, 2, (4, 784))
  write_amat(tmp_path / 'x.amat', values)
  got = data.read_amat(tmp_path / 'x.amat', 4)
  assert got.dtype == np.uint8 and got.shape == (4, 784)
  np.testing.assert_array_equal(got, values)


@pytest.mark.parametrize('damage', ['rows', 'truncated', 'value', 'tab'])
def test_read_amat_rejects_bad_files(tmp_path, damage):
  values = np.zeros((3, 784), int)
  n_rows = 3
  if damage == 'rows':
    n_rows = 4
  if damage == 'value':
    values[1, 5] = 2
  write_amat(tmp_path / 'x.amat', values)
  raw = (tmp_path / 'x.amat').read_bytes()
  if damage == 'truncated':
    raw = raw[:-3]
  if damage == 'tab':
    raw = raw.replace(b' ', b'\t', 1)
  (tmp_path / 'x.amat').write_bytes(raw)
  with pytest.raises(data.CorruptFileError):
    data.read_amat(tmp_path / 'x.amat', n_rows)


def test_read_idx_images(tmp_path):
  images = np.random.RandomState(3).randint(0, 256, (5, 28, 28))
  write_idx(tmp_path / 'x.gz', images)
  got = data.read_idx_images(tmp_path / 'x.gz', 5)
  assert got.dtype == np.uint8
  np.testing.assert_array_equal(got, images.reshape(5, 784))


@pytest.mark.parametrize('damage', ['magic', 'count', 'truncated',
                                    'not_gzip', 'gzip_cut'])
def test_read_idx_images_rejects_bad_files(tmp_path, damage):
  path = tmp_path / 'x.gz'
  images = np.zeros((5, 28, 28), np.uint8)
  write_idx(path, images, magic=2049 if damage == 'magic' else 2051)
  n_images = 6 if damage == 'count' else 5
  if damage == 'truncated':  # A valid gzip stream of too few pixels.
    with gzip.open(path, 'wb') as f:
      f.write(np.array([2051, 5, 28, 28], '>u4').tobytes() + bytes(100))
  if damage == 'not_gzip':
    path.write_bytes(b'plain text')
  if damage == 'gzip_cut':
    path.write_bytes(path.read_bytes()[:-10])
  with pytest.raises(data.CorruptFileError):
    data.read_idx_images(path, n_images)


def test_threshold_mnist_rule_and_split():
  grey = np.random.RandomState(6).randint(0, 256, (7, 784)).astype(np.uint8)
  grey[0, :4] = (127, 128, 0, 255)
  train, valid, test = data.threshold_mnist(grey, grey[:2], n_valid=3)
  for got, want in ((train, grey[3:]), (valid, grey[:3]), (test, grey[:2])):
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, threshold(want))
  assert valid[0, :4].tolist() == [0, 1, 0, 1]


def test_read_omniglot_mat(tmp_path):
  train, test = np.random.rand(784, 7), np.random.rand(784, 3)
  write_mat(tmp_path / 'c.mat', data=train, testdata=test)
  got_train, got_test = data.read_omniglot_mat(tmp_path / 'c.mat')
  np.testing.assert_array_equal(got_train, train)
  np.testing.assert_array_equal(got_test, test)


@pytest.mark.parametrize('arrays', [
    {'data': np.zeros((784, 4))},
    {'data': np.zeros((100, 4)), 'testdata': np.zeros((100, 2))},
    {'data': np.full((784, 4), 2.0), 'testdata': np.zeros((784, 2))},
    None,
], ids=['no_testdata', 'wrong_rows', 'not_grey', 'not_mat'])
def test_read_omniglot_mat_rejects_bad_files(tmp_path, arrays):
  path = tmp_path / 'c.mat'
  if arrays is None:
    path.write_bytes(b'MATLAB? no')
  else:
    write_mat(path, **arrays)
  with pytest.raises(data.CorruptFileError):
    data.read_omniglot_mat(path)


# ------------------------------------------------- Omniglot preprocessing


@pytest.mark.parametrize('binarize', [True, False])
def test_preprocess_omniglot_follows_the_rules(binarize):
  rng = np.random.RandomState(4)
  cols, test_cols = rng.rand(784, 30), rng.rand(784, 6)
  np.random.seed(77)
  before = np.random.get_state()[1].copy()
  got = data.preprocess_omniglot(cols, test_cols, binarize, n_valid=7)
  # The caller's global RNG state is untouched.
  np.testing.assert_array_equal(np.random.get_state()[1], before)
  want = expected_omniglot(cols, test_cols, binarize, n_valid=7)
  for g, w, rows in zip(got, want, (23, 7, 6)):
    assert g.shape == (rows, 784)
    np.testing.assert_array_equal(g, w)


def test_omniglot_rows_are_row_major_images():
  image = np.zeros((28, 28))
  image[3, 17] = 1.0  # Row 3, column 17.
  cols = np.zeros((784, 2))
  test_cols = image.ravel(order='F')[:, None]  # Stored column-major.
  for binarize in (True, False):
    _, _, test = data.preprocess_omniglot(cols, test_cols, binarize, 1)
    assert np.flatnonzero(test[0]).tolist() == [3 * 28 + 17]


def test_load_omniglot_default_split(small_sources):
  src, data_dir = small_sources, small_sources.data_dir
  assert data.download(['omniglot'], data_dir, src.urls) == {'omniglot': None}
  np.random.seed(11)
  draw = np.random.rand()
  np.random.seed(11)
  for dynamic_b in (False, True):
    got = data.load_data(hparams('omni', dynamic_b), data_dir)
    want = expected_omniglot(src.omni['data'], src.omni['testdata'],
                             binarize=not dynamic_b)
    for g, w, rows in zip(got, want, (N_OMNI_TRAIN - 1345, 1345,
                                      N_OMNI_TEST)):
      assert g.dtype == np.float32 and g.shape == (rows, 784)
      np.testing.assert_array_equal(g, w.astype(np.float32))
  assert np.random.rand() == draw  # Loading left the global RNG alone.
  assert (data_dir / 'omniglot_grey.npz').exists()


def test_omniglot_checksum_recorded_then_verified(small_sources):
  src, data_dir = small_sources, small_sources.data_dir
  data.download(['omniglot'], data_dir, src.urls)
  record = json.loads((data_dir / 'chardata.mat.sha256').read_text())
  assert record['sha256'] == sha256(src.src / 'chardata.mat')
  assert record['size'] == (src.src / 'chardata.mat').stat().st_size
  # A changed raw file is caught by the record once the cache must be rebuilt.
  (data_dir / 'omniglot.npz').unlink()
  with open(data_dir / 'chardata.mat', 'ab') as f:
    f.write(b'x')
  with pytest.raises(data.DataError, match='`download_data --datasets='):
    data.load_data(hparams('omni'), data_dir)
  assert not (data_dir / 'chardata.mat').exists()
  assert data.download(['omniglot'], data_dir, src.urls) == {'omniglot': None}
  assert (data_dir / 'chardata.mat').read_bytes() == (
      src.src / 'chardata.mat').read_bytes()


def test_omniglot_invalid_mat_is_rejected_and_not_recorded(small_sources):
  src, data_dir = small_sources, small_sources.data_dir
  write_mat(src.src / 'chardata.mat', data=src.omni['data'])  # No testdata.
  error = data.download(['omniglot'], data_dir, src.urls)['omniglot']
  assert 'testdata' in error
  assert '--omniglot_url' in error and '\n' not in error
  assert not (data_dir / 'chardata.mat').exists()
  assert not (data_dir / 'chardata.mat.sha256').exists()
  assert not (data_dir / 'omniglot.npz').exists()


# ------------------------------------------------- fetch


@pytest.mark.parametrize('as_url', [False, True])
def test_fetch_local_source(tmp_path, payload, as_url):
  source = payload.path.as_uri() if as_url else str(payload.path)
  dest = tmp_path / 'out.bin'
  data.fetch(source, str(dest), payload.expected)
  assert dest.read_bytes() == payload.body
  assert not (tmp_path / 'out.bin.part').exists()


@pytest.mark.parametrize('over_http', [False, True])
@pytest.mark.parametrize('damage', ['truncated', 'corrupt'])
def test_fetch_rejects_bad_bytes(tmp_path, payload, http_server, damage,
                                 over_http):
  body = bytearray(payload.body)
  if damage == 'truncated':
    del body[len(body) // 2:]
  else:
    body[1000] ^= 0xff
  (tmp_path / 'bad.bin').write_bytes(body)
  http_server.files['/bad.bin'] = bytes(body)
  source = (f'{http_server.url}/bad.bin' if over_http
            else str(tmp_path / 'bad.bin'))
  dest = str(tmp_path / 'out.bin')
  with pytest.raises(data.CorruptFileError):
    data.fetch(source, dest, payload.expected, retries=0)
  assert_nothing_left(dest)


def test_fetch_http(tmp_path, payload, http_server, capsys):
  http_server.files['/f'] = payload.body
  dest = tmp_path / 'out.bin'
  data.fetch(f'{http_server.url}/f', str(dest), payload.expected)
  assert dest.read_bytes() == payload.body
  assert http_server.requests == [None]
  assert '\r' in capsys.readouterr().err  # The progress line.


def test_fetch_http_resumes_a_partial_download(tmp_path, payload,
                                               http_server):
  http_server.files['/f'] = payload.body
  dest = tmp_path / 'out.bin'
  half = len(payload.body) // 2
  (tmp_path / 'out.bin.part').write_bytes(payload.body[:half])
  data.fetch(f'{http_server.url}/f', str(dest), payload.expected)
  assert dest.read_bytes() == payload.body
  assert http_server.requests == [f'bytes={half}-']  # Only the rest came.


def test_fetch_http_garbage_part_is_downloaded_again(tmp_path, payload,
                                                     http_server):
  http_server.files['/f'] = payload.body
  dest = tmp_path / 'out.bin'
  half = len(payload.body) // 2
  (tmp_path / 'out.bin.part').write_bytes(b'\0' * half)
  data.fetch(f'{http_server.url}/f', str(dest), payload.expected)
  assert dest.read_bytes() == payload.body
  assert http_server.requests == [f'bytes={half}-', None]
  assert not (tmp_path / 'out.bin.part').exists()


def test_fetch_http_restarts_when_range_is_ignored(tmp_path, payload,
                                                   http_server):
  http_server.files['/f'] = payload.body
  http_server.honour_range = False
  dest = tmp_path / 'out.bin'
  (tmp_path / 'out.bin.part').write_bytes(b'\0' * 1000)
  data.fetch(f'{http_server.url}/f', str(dest), payload.expected)
  assert dest.read_bytes() == payload.body
  assert len(http_server.requests) == 1


def test_fetch_http_retries_a_dropped_connection(tmp_path, payload,
                                                 http_server):
  http_server.files['/f'] = payload.body
  http_server.drop_after = 2_500_000
  dest = tmp_path / 'out.bin'
  data.fetch(f'{http_server.url}/f', str(dest), payload.expected, backoff=0)
  assert dest.read_bytes() == payload.body
  # The retry asked only for what the first try had not written.
  assert len(http_server.requests) == 2 and http_server.requests[0] is None
  assert http_server.requests[1].startswith('bytes=')


def test_fetch_http_missing_file_fails_at_once(tmp_path, payload,
                                              http_server):
  dest = str(tmp_path / 'out.bin')
  with pytest.raises(data.DataError, match='404'):
    data.fetch(f'{http_server.url}/nope', dest, payload.expected, backoff=0)
  assert http_server.requests == [None]  # A 404 is not retried.
  assert_nothing_left(dest)


def test_fetch_gives_up_on_a_trickling_server_and_keeps_its_bytes(
    tmp_path, payload, http_server):
  http_server.files['/f'] = payload.body
  http_server.trickle = 0.5  # Each read succeeds: no read timeout fires.
  dest = tmp_path / 'out.bin'
  start = time.monotonic()
  with pytest.raises(data.DataError, match='deadline') as info:
    data.fetch(f'{http_server.url}/f', str(dest), payload.expected,
               backoff=0, deadline=1.5, progress=False)
  # Given up at the first byte past the deadline, one trickle step late.
  assert 1.5 <= time.monotonic() - start < 1.5 + 0.5 + 1.0
  assert '\n' not in str(info.value)
  assert http_server.requests == [None]  # No try starts past the deadline.
  kept = (tmp_path / 'out.bin.part').read_bytes()
  assert kept and kept == payload.body[:len(kept)]
  http_server.trickle = None
  data.fetch(f'{http_server.url}/f', str(dest), payload.expected,
             progress=False)
  assert dest.read_bytes() == payload.body
  assert http_server.requests[-1] == f'bytes={len(kept)}-'


def test_fetch_http_keeps_what_arrived_for_the_next_call(tmp_path, payload,
                                                         http_server):
  http_server.files['/f'] = payload.body
  http_server.drop_after = 1_000_000
  dest = tmp_path / 'out.bin'
  with pytest.raises(data.DataError):
    data.fetch(f'{http_server.url}/f', str(dest), payload.expected,
               retries=0, progress=False)
  assert (tmp_path / 'out.bin.part').read_bytes() == payload.body[:1_000_000]
  data.fetch(f'{http_server.url}/f', str(dest), payload.expected,
             progress=False)
  assert dest.read_bytes() == payload.body
  assert http_server.requests == [None, 'bytes=1000000-']


def test_download_deadline_grows_with_the_file():
  small = data.download_deadline(data.Expected(9_912_422))
  large = data.download_deadline(data.Expected(78_400_000))
  unknown = data.download_deadline(None)
  assert 60 < small < large < 30 * 60 and 60 < unknown < 30 * 60


UNKNOWN_HOST = 'no-such-host.invalid'


@pytest.fixture
def unknown_host(monkeypatch):
  """Makes lookups of UNKNOWN_HOST fail, as DNS would; returns their list."""
  clear_proxies(monkeypatch)
  lookups = []
  real = socket.getaddrinfo

  def getaddrinfo(host, *args, **kwargs):
    if host == UNKNOWN_HOST:
      lookups.append(host)
      raise socket.gaierror(socket.EAI_NONAME, 'Name or service not known')
    return real(host, *args, **kwargs)

  monkeypatch.setattr(socket, 'getaddrinfo', getaddrinfo)
  return lookups


def test_fetch_unknown_host_fails_at_once(tmp_path, payload, unknown_host):
  dest = str(tmp_path / 'out.bin')
  with pytest.raises(data.DataError, match=f'{UNKNOWN_HOST} not found'):
    data.fetch(f'http://{UNKNOWN_HOST}/f', dest, payload.expected,
               backoff=0, progress=False)
  assert unknown_host == [UNKNOWN_HOST]  # Not retried.
  assert_nothing_left(dest)


def test_unknown_host_names_the_flag_then_the_next_location_is_tried(
    small_sources, http_server, unknown_host):
  src, data_dir = small_sources, small_sources.data_dir
  name = 'train-images-idx3-ubyte.gz'
  http_server.files[f'/mnist/{name}'] = (src.src / 'mnist' / name).read_bytes()
  urls = dict(src.urls, mnist_url=f'http://{UNKNOWN_HOST}/mnist')
  error = data.download(['mnist'], data_dir, urls, progress=False)['mnist']
  assert f'http://{UNKNOWN_HOST}/mnist/{name}' in error
  assert '--mnist_url' in error
  assert '\n' not in error and len(error) < 300
  assert unknown_host == [UNKNOWN_HOST]
  urls['mnist_url'] += f',{http_server.url}/mnist'
  assert data.download(['mnist'], data_dir, urls, progress=False) == {
      'mnist': None}
  assert unknown_host == [UNKNOWN_HOST] * 2
  assert http_server.paths == [f'/mnist/{name}']


# ------------------------------------------------- sources


def test_url_values_are_lists_tried_in_order():
  name = 'train-images-idx3-ubyte.gz'
  want = (f'http://a/mnist/{name}', os.path.join('local', name))
  assert data.sources_for(name, {'mnist_url': 'http://a/mnist/, local'}) == (
      want)
  assert data.sources_for(name, {'mnist_url': ['http://a/mnist', 'local']}) == (
      want)
  assert data.sources_for('chardata.mat', {'omniglot_url': 'c.mat'}) == (
      'c.mat',)
  assert data.sources_for(name, data.DEFAULT_URLS) == tuple(
      f'{base}/{name}' for base in (
          'http://yann.lecun.com/exdb/mnist',
          'https://ossci-datasets.s3.amazonaws.com/mnist',
          'https://storage.googleapis.com/cvdf-datasets/mnist'))
  flag_values = {key: types.SimpleNamespace(value=' x , y,')
                 for key in data.DEFAULT_URLS}
  assert cli.urls_from_flags(flag_values)['mnist_url'] == ('x', 'y')
  with pytest.raises(data.DataError, match='--mnist_url'):
    data.sources_for(name, {'mnist_url': ' , '})


def test_download_tries_each_location_in_order(small_sources, http_server):
  src, data_dir = small_sources, small_sources.data_dir
  name = 'train-images-idx3-ubyte.gz'
  good = (src.src / 'mnist' / name).read_bytes()
  other = bytearray(good)
  other[len(other) // 2] ^= 0xff  # A mirror serving other bytes.
  http_server.files[f'/other/{name}'] = bytes(other)
  http_server.files[f'/mnist/{name}'] = good
  bases = [f'{http_server.url}/{folder}' for folder in ('gone', 'other')]
  error = data.download(['mnist'], data_dir,
                        dict(src.urls, mnist_url=','.join(bases)),
                        progress=False)['mnist']
  assert '\n' not in error and '--mnist_url' in error
  assert f'{bases[0]}/{name} (HTTP 404' in error
  assert f'{bases[1]}/{name} (md5' in error
  assert not (data_dir / name).exists()
  assert not (data_dir / f'{name}.part').exists()
  bases.append(f'{http_server.url}/mnist')
  http_server.paths.clear()
  assert data.download(['mnist'], data_dir,
                       dict(src.urls, mnist_url=','.join(bases)),
                       progress=False) == {'mnist': None}
  assert http_server.paths == [f'/gone/{name}', f'/other/{name}',
                               f'/mnist/{name}']
  assert (data_dir / name).read_bytes() == good


# ------------------------------------------------- download / ensure_data


def test_download_reports_a_failing_source_and_does_the_rest(small_sources):
  src, data_dir = small_sources, small_sources.data_dir
  urls = dict(src.urls, omniglot_url=str(src.src / 'missing.mat'))
  results = data.download(list(data.DATASETS), data_dir, urls)
  assert results['binarized_mnist'] is None and results['mnist'] is None
  assert results['mnist_threshold'] is None
  assert '--omniglot_url' in results['omniglot']
  assert '\n' not in results['omniglot']
  train, valid, test = data.load_data(hparams('sbn'), data_dir)
  for got, split in zip((train, valid, test), data.SPLITS):
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, src.binarized[split])
  grey_train, valid2, _ = data.load_data(hparams('sp', True), data_dir)
  assert grey_train.dtype == np.float32
  np.testing.assert_array_equal(grey_train, src.grey[:10] / np.float32(255))
  np.testing.assert_array_equal(valid2, valid)


def test_caches_and_raw_files_stand_in_for_each_other(small_sources):
  src, data_dir = small_sources, small_sources.data_dir
  data.download(['binarized_mnist'], data_dir, src.urls)
  unreachable = {k: str(src.src / 'nowhere') for k in src.urls}
  # No cache, raw files present: built again without downloading.
  (data_dir / 'binarized_mnist.npz').unlink()
  assert data.download(['binarized_mnist'], data_dir, unreachable) == {
      'binarized_mnist': None}
  # Cache present, raw files gone: loads.
  for name in data.DATASETS['binarized_mnist']:
    (data_dir / name).unlink()
  train, _, _ = data.load_data(hparams('sbn'), data_dir)
  np.testing.assert_array_equal(train, src.binarized['train'])


def test_corrupt_raw_file_is_deleted_then_downloaded_again(small_sources):
  src, data_dir = small_sources, small_sources.data_dir
  data.download(['binarized_mnist'], data_dir, src.urls)
  (data_dir / 'binarized_mnist.npz').unlink()
  raw = data_dir / 'binarized_mnist_valid.amat'
  raw.write_bytes(raw.read_bytes().replace(b'0', b'1', 1).replace(
      b'1', b'0', 2))
  with pytest.raises(data.DataError, match='corrupt.*`download_data --datasets='):
    data.load_data(hparams('sbn'), data_dir)
  assert not raw.exists()
  assert data.download(['binarized_mnist'], data_dir, src.urls) == {
      'binarized_mnist': None}
  _, valid, _ = data.load_data(hparams('sbn'), data_dir)
  np.testing.assert_array_equal(valid, src.binarized['valid'])


def damage_middle(path, keep_mtime):
  """Flips 16 bytes in the middle of a file (inside an `.npz`'s arrays)."""
  stat = path.stat()
  raw = bytearray(path.read_bytes())
  middle = len(raw) // 2
  raw[middle:middle + 16] = bytes(b ^ 0xff for b in raw[middle:middle + 16])
  path.write_bytes(raw)
  # A failing disk leaves the mtime alone; an edit within the clock's tick
  # might too, so the test sets the one it means.
  mtime = stat.st_mtime_ns if keep_mtime else stat.st_mtime_ns + 10**9
  os.utime(path, ns=(stat.st_atime_ns, mtime))


@pytest.mark.parametrize('damage, warning', [
    ('edited', 'does not match the sha256 recorded'),
    ('bit_rot', 'CRC'),
    ('no_record', 'fails its CRC'),
])
def test_damaged_cache_is_rebuilt(small_sources, caplog, damage, warning):
  src, data_dir = small_sources, small_sources.data_dir
  data.download(['binarized_mnist'], data_dir, src.urls, progress=False)
  cache = data_dir / 'binarized_mnist.npz'
  record = data_dir / 'binarized_mnist.npz.sha256'
  if damage == 'no_record':  # As the older code left caches.
    record.unlink()
  damage_middle(cache, keep_mtime=damage == 'bit_rot')
  caplog.clear()
  got = data.load_data(hparams('sbn'), data_dir)
  for x, split in zip(got, data.SPLITS):
    np.testing.assert_array_equal(x, src.binarized[split])
  assert any(r.levelno == logging.WARNING and 'rebuilding' in r.getMessage()
             and warning in r.getMessage() for r in caplog.records)
  assert json.loads(record.read_text())['sha256'] == sha256(cache)


def test_cache_without_a_record_is_recorded_not_rebuilt(small_sources):
  src, data_dir = small_sources, small_sources.data_dir
  data.download(['binarized_mnist'], data_dir, src.urls, progress=False)
  cache = data_dir / 'binarized_mnist.npz'
  record = data_dir / 'binarized_mnist.npz.sha256'
  built = json.loads(record.read_text())
  assert built['sha256'] == sha256(cache)
  assert built['size'] == cache.stat().st_size
  record.unlink()  # As the older code left caches.
  for name in data.DATASETS['binarized_mnist']:
    (data_dir / name).unlink()  # So that a rebuild would fail.
  train, _, _ = data.load_data(hparams('sbn'), data_dir)
  np.testing.assert_array_equal(train, src.binarized['train'])
  assert json.loads(record.read_text()) == built


def test_leftover_temporary_files_are_removed(small_sources):
  src, data_dir = small_sources, small_sources.data_dir
  data.download(['binarized_mnist'], data_dir, src.urls, progress=False)
  ours = ['binarized_mnist.npz.0123abcd.tmp', 'omniglot.npz.deadbeef.tmp',
          'binarized_mnist.npz.sha256.89abcdef.tmp',
          'chardata.mat.sha256.00ff00ff.tmp']
  others = ['notes.npz.0123abcd.tmp', 'binarized_mnist.npz.tmp',
            'binarized_mnist.npz.0123abcd.tmp.keep',
            'binarized_mnist.npz.0123abcdef.tmp', 'chardata.mat.part']
  young = 'mnist_train_grey.npz.12345678.tmp'  # Maybe a write in progress.
  old = time.time() - 120
  for name in ours + others + [young]:
    (data_dir / name).write_bytes(b'x')
    if name != young:
      os.utime(data_dir / name, (old, old))
  data.load_data(hparams('sbn'), data_dir)
  left = set(os.listdir(data_dir))
  assert not left & set(ours)
  assert set(others) | {young} <= left


def test_missing_data_names_the_fix(tmp_path):
  data_dir = tmp_path / 'empty'
  for call in (lambda: data.ensure_data('sbn', True, data_dir,
                                        data.DEFAULT_URLS, download=False),
               lambda: data.load_data(hparams('omni'), data_dir)):
    with pytest.raises(data.DataError) as info:
      call()
    message = str(info.value)
    assert '\n' not in message
    # The installed command, not the script's path.
    for needed in ('`download_data --datasets=', '--mnist_binarized_url',
                   '--mnist_url', '--omniglot_url', '--data_dir'):
      assert needed in message
  assert not data_dir.exists()  # Nothing was created or downloaded.


def test_ensure_data_downloads_what_a_run_needs(small_sources):
  src, data_dir = small_sources, small_sources.data_dir
  assert data.ensure_data('sbn', True, data_dir, src.urls) == (
      'binarized_mnist', 'mnist')
  assert not (data_dir / 'chardata.mat').exists()
  failing = dict(src.urls, omniglot_url=str(src.src / 'missing.mat'))
  with pytest.raises(data.DataError, match='`download_data --datasets='):
    data.ensure_data('omni', False, data_dir, failing)


# ------------------------------------------------- threshold-binarized MNIST

THRESHOLD_FILES = ('train-images-idx3-ubyte.gz', 't10k-images-idx3-ubyte.gz')


def expected_threshold(src):
  """The small sources' (train, valid, test), from the rule and the split."""
  return (threshold(src.grey[N_THRESHOLD_VALID:]),
          threshold(src.grey[:N_THRESHOLD_VALID]), threshold(src.test_grey))


def test_load_threshold_binarized_mnist(small_sources):
  src, data_dir = small_sources, small_sources.data_dir
  assert data.download(['mnist_threshold'], data_dir, src.urls,
                       progress=False) == {'mnist_threshold': None}
  run = hparams('sbn', binarization='threshold')
  for compact in (False, True):
    got = data.load_data(run, data_dir, compact=compact)
    for x, want in zip(got, expected_threshold(src)):
      assert x.dtype == (np.uint8 if compact else np.float32)
      assert x.shape == want.shape
      np.testing.assert_array_equal(x, want)
  assert got[2][0, :4].tolist() == [0, 1, 0, 1]  # Grey 127, 128, 0, 255.
  # Its own cache only, with its record; no other dataset's files.
  assert sorted(os.listdir(data_dir)) == sorted(
      THRESHOLD_FILES + ('mnist_threshold.npz', 'mnist_threshold.npz.sha256'))
  record = json.loads((data_dir / 'mnist_threshold.npz.sha256').read_text())
  assert record['sha256'] == sha256(data_dir / 'mnist_threshold.npz')


def test_threshold_shares_the_training_images(small_sources, http_server):
  src, data_dir = small_sources, small_sources.data_dir
  for name in THRESHOLD_FILES:
    http_server.files[f'/mnist/{name}'] = (src.src / 'mnist' / name
                                           ).read_bytes()
  urls = dict(src.urls, mnist_url=f'{http_server.url}/mnist')
  assert data.download(['mnist', 'mnist_threshold'], data_dir, urls,
                       progress=False) == {'mnist': None,
                                           'mnist_threshold': None}
  assert http_server.paths == [f'/mnist/{name}' for name in THRESHOLD_FILES]
  with np.load(data_dir / 'mnist_train_grey.npz') as npz:
    np.testing.assert_array_equal(npz['train'], src.grey[:10])


def test_ensure_data_for_threshold(small_sources):
  src, data_dir = small_sources, small_sources.data_dir
  assert data.datasets_for('sbn', False, 'threshold') == ('mnist_threshold',)
  assert data.datasets_for('sbn', False) == ('binarized_mnist',)
  # Neither Larochelle's files nor Omniglot's are needed.
  urls = dict(src.urls, mnist_binarized_url=str(src.src / 'nowhere'),
              omniglot_url=str(src.src / 'nowhere.mat'))
  assert data.ensure_data('sbn', False, data_dir, urls,
                          binarization='threshold', progress=False) == (
                              'mnist_threshold',)
  assert (data_dir / 'mnist_threshold.npz').exists()
  assert not (data_dir / 'binarized_mnist.npz').exists()
  assert data.ensure_data('sbn', False, data_dir, download=False,
                          binarization='threshold') == ('mnist_threshold',)


@pytest.mark.parametrize('task, dynamic_b', [
    ('omni', False), ('omni', True), ('sbn', True), ('sp', False)])
def test_threshold_needs_static_sbn(tmp_path, task, dynamic_b):
  data_dir = tmp_path / 'data'
  for call in (
      lambda: data.datasets_for(task, dynamic_b, 'threshold'),
      lambda: data.ensure_data(task, dynamic_b, data_dir, download=False,
                               binarization='threshold'),
      lambda: data.load_data(hparams(task, dynamic_b,
                                     binarization='threshold'), data_dir)):
    with pytest.raises(data.DataError) as info:
      call()
    message = str(info.value)
    assert '\n' not in message
    assert 'task=sbn and dynamic_b=false' in message
  with pytest.raises(data.DataError, match='unknown binarization'):
    data.datasets_for('sbn', False, 'otsu')
  assert not data_dir.exists()


@pytest.mark.parametrize('damage', ['missing', 'corrupt', 'not_at_source'])
def test_missing_or_corrupt_t10k_names_the_fix(small_sources, damage):
  src, data_dir = small_sources, small_sources.data_dir
  name = 't10k-images-idx3-ubyte.gz'
  run = hparams('sbn', binarization='threshold')
  if damage == 'not_at_source':  # A location with the training images only.
    (src.src / 'train_only').mkdir()
    (src.src / 'train_only' / THRESHOLD_FILES[0]).write_bytes(
        (src.src / 'mnist' / THRESHOLD_FILES[0]).read_bytes())
    urls = dict(src.urls, mnist_url=str(src.src / 'train_only'))
    error = data.download(['mnist_threshold'], data_dir, urls,
                          progress=False)['mnist_threshold']
    assert name in error and '--mnist_url' in error
    assert '\n' not in error
    assert not (data_dir / 'mnist_threshold.npz').exists()
  else:
    data.download(['mnist_threshold'], data_dir, src.urls, progress=False)
    (data_dir / 'mnist_threshold.npz').unlink()
    if damage == 'missing':
      (data_dir / name).unlink()
    else:
      raw = bytearray((data_dir / name).read_bytes())
      raw[len(raw) // 2] ^= 0xff
      (data_dir / name).write_bytes(raw)
    with pytest.raises(data.DataError) as info:
      data.load_data(run, data_dir)
    message = str(info.value)
    assert '\n' not in message
    for needed in ('`download_data --datasets=mnist_threshold ', '--mnist_url',
                   '--data_dir'):
      assert needed in message
    assert (f'{name} was corrupt' if damage == 'corrupt'
            else 'mnist_threshold data not found') in message
    assert not (data_dir / name).exists()
    assert (data_dir / THRESHOLD_FILES[0]).exists()  # Kept: it is intact.
  assert data.ensure_data('sbn', False, data_dir, src.urls,
                          binarization='threshold', progress=False) == (
                              'mnist_threshold',)
  for x, want in zip(data.load_data(run, data_dir), expected_threshold(src)):
    np.testing.assert_array_equal(x, want)


def test_damaged_threshold_cache_is_rebuilt(small_sources, caplog):
  src, data_dir = small_sources, small_sources.data_dir
  data.download(['mnist_threshold'], data_dir, src.urls, progress=False)
  damage_middle(data_dir / 'mnist_threshold.npz', keep_mtime=True)
  caplog.clear()
  got = data.load_data(hparams('sbn', binarization='threshold'), data_dir,
                       compact=True)
  for x, want in zip(got, expected_threshold(src)):
    np.testing.assert_array_equal(x, want)
  assert any(r.levelno == logging.WARNING and 'rebuilding' in r.getMessage()
             for r in caplog.records)


def test_unwritable_data_dir(small_sources, tmp_path):
  (tmp_path / 'a_file').write_text('')
  data_dir = tmp_path / 'a_file' / 'data'
  error = data.download(['mnist'], data_dir, small_sources.urls)['mnist']
  assert '--data_dir' in error
  with pytest.raises(data.DataError, match='--data_dir'):
    data.ensure_data('sbn', False, data_dir, small_sources.urls)


def test_unknown_names_are_refused(tmp_path):
  with pytest.raises(data.DataError, match='choose'):
    data.load_data(hparams('cifar'), tmp_path)
  with pytest.raises(data.DataError, match='binarized_mnist, mnist'):
    data.download(['cifar'], tmp_path, data.DEFAULT_URLS)


def test_import_is_light():
  code = ('import sys, rebar.data; print(sorted('
          '{"tensorflow", "scipy", "requests"} & set(sys.modules)))')
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True,
                          capture_output=True, text=True)
  assert result.stdout.strip() == '[]'


def test_define_flags_twice():
  from absl import flags  # pylint: disable=g-import-not-at-top
  flag_values = flags.FlagValues()
  cli.define_data_flags(flag_values)
  cli.define_data_flags(flag_values)
  assert flag_values['data_dir'].default == os.path.expanduser(
      '~/.rebar/data')
  flag_values(['prog'])
  assert cli.urls_from_flags(flag_values) == data.DEFAULT_URLS


# ------------------------------------------------- the real files


@pytest.fixture
def mirror_dir(mirror_data_dir):
  """binarized_mnist and mnist downloaded from the mirror (conftest)."""
  return mirror_data_dir


@pytest.fixture(scope='module')
def mirror_threshold_dir(mirror_data_dir):
  """mirror_data_dir with mnist_threshold added; the caches there unchanged."""
  before = {name: sha256(mirror_data_dir / name)
            for name in ('binarized_mnist.npz', 'mnist_train_grey.npz')}
  assert data.download(['mnist_threshold'], mirror_data_dir, MIRROR_URLS,
                       progress=False) == {'mnist_threshold': None}
  assert {name: sha256(mirror_data_dir / name) for name in before} == before
  return mirror_data_dir


@needs_mirror
def test_mirror_files_match_published_checksums(mirror_threshold_dir):
  for rel, (size, algo, digest) in MIRROR_FILES.items():
    path = mirror_threshold_dir / pathlib.PurePath(rel).name
    assert path.stat().st_size == size
    assert hashlib.new(algo, path.read_bytes()).hexdigest() == digest


@needs_mirror
@pytest.mark.parametrize('task', ['sbn', 'sp'])
def test_mirror_static_binarized(mirror_dir, task):
  splits = data.load_data(hparams(task), mirror_dir)
  for x, rows in zip(splits, (50_000, 10_000, 10_000)):
    assert x.shape == (rows, 784) and x.dtype == np.float32
    assert ((x == 0) | (x == 1)).all() and x.min() == 0 and x.max() == 1


@needs_mirror
def test_mirror_dynamic_binarization_grey_levels(mirror_dir):
  train, valid, test = data.load_data(hparams('sbn', True), mirror_dir)
  assert train.shape == (50_000, 784) and train.dtype == np.float32
  assert train.min() == 0.0 and train.max() == 1.0
  with gzip.open(mirror_dir / 'train-images-idx3-ubyte.gz') as f:
    pixels = np.frombuffer(f.read()[16:], np.uint8).reshape(60_000, 784)
  np.testing.assert_array_equal(train, pixels[:50_000] / np.float32(255))
  _, static_valid, static_test = data.load_data(hparams('sbn'), mirror_dir)
  np.testing.assert_array_equal(valid, static_valid)
  np.testing.assert_array_equal(test, static_test)


@needs_mirror
def test_mirror_threshold_binarized(mirror_threshold_dir):
  train, valid, test = data.load_data(
      hparams('sbn', binarization='threshold'), mirror_threshold_dir,
      compact=True)
  for x, rows in zip((train, valid, test), (55_000, 5_000, 10_000)):
    assert x.shape == (rows, 784) and x.dtype == np.uint8
    assert ((x == 0) | (x == 1)).all()
    assert 0.12 < x.mean() < 0.15  # About 13% of MNIST's pixels are > 0.5.
  grey = data.read_idx_images(
      mirror_threshold_dir / 'train-images-idx3-ubyte.gz', 60_000)
  grey_test = data.read_idx_images(
      mirror_threshold_dir / 't10k-images-idx3-ubyte.gz', 10_000)
  # valid: the first 5,000 training images; train: the 55,000 after them.
  for i in (0, 1, 4_999):
    np.testing.assert_array_equal(valid[i], threshold(grey[i]))
  for i in (0, 1, 54_999):
    np.testing.assert_array_equal(train[i], threshold(grey[5_000 + i]))
  for i in (0, 9_999):
    np.testing.assert_array_equal(test[i], threshold(grey_test[i]))
  # All rows, a block at a time (float64 of all 60,000 would be 376 MB).
  np.testing.assert_array_equal(valid, threshold(grey[:5_000]))
  for start in range(0, 55_000, 11_000):
    np.testing.assert_array_equal(
        train[start:start + 11_000],
        threshold(grey[5_000 + start:5_000 + start + 11_000]))
  np.testing.assert_array_equal(test, threshold(grey_test))
  float_valid = data.load_data(hparams('sbn', binarization='threshold'),
                               mirror_threshold_dir)[1]
  assert float_valid.dtype == np.float32
  np.testing.assert_array_equal(float_valid, valid)


# ------------------------------------------------- download_data.py


def run_script(*args):
  return subprocess.run([sys.executable, 'download_data.py', *args],
                        cwd=REPO, capture_output=True, text=True,
                        timeout=120, check=False)


def test_script_refuses_unknown_datasets(tmp_path):
  result = run_script('--datasets=mnist,cifar', f'--data_dir={tmp_path}')
  assert result.returncode == 2
  assert result.stderr.strip().count('\n') == 0
  assert 'cifar' in result.stderr
  assert 'binarized_mnist, mnist, mnist_threshold, omniglot' in result.stderr


def test_script_reports_failures(tmp_path):
  result = run_script('--datasets=omniglot', f'--data_dir={tmp_path}',
                      f'--omniglot_url={tmp_path / "missing.mat"}')
  assert result.returncode == 1
  assert 'omniglot: FAILED' in result.stdout


@needs_mirror
def test_script_from_the_mirror_by_path(tmp_path):
  result = run_script('--datasets=mnist', f'--data_dir={tmp_path}',
                      f'--mnist_url={MIRROR / "mnist"}')
  assert result.returncode == 0, result.stderr
  assert 'mnist: ok' in result.stdout
  assert (tmp_path / 'mnist_train_grey.npz').exists()


@needs_mirror
def test_script_threshold_from_the_mirror(tmp_path):
  result = run_script('--datasets=mnist_threshold', f'--data_dir={tmp_path}',
                      f'--mnist_url={MIRROR / "mnist"}')
  assert result.returncode == 0, result.stderr
  assert 'mnist_threshold: ok' in result.stdout
  assert (tmp_path / 'mnist_threshold.npz').exists()
  assert not (tmp_path / 'mnist_train_grey.npz').exists()


def test_script_help_lists_the_datasets():
  result = run_script('--help')
  assert result.returncode == 0, result.stderr
  flat = ' '.join(result.stdout.split())
  assert 'among binarized_mnist, mnist, mnist_threshold, omniglot' in flat
  assert '(default: binarized_mnist,mnist,omniglot;' in flat
