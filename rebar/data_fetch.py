"""Downloads one file into place, verified: `fetch`.

A source is an http(s):// URL, a file:// URL or a filesystem path. Bytes go
to `<dest>.part`, which becomes `dest` only once its size and checksum
match. Over http(s) a `.part` left by an earlier try is resumed with a Range
request; network errors and 5xx answers are retried with exponential
backoff; and each file has a deadline (`download_deadline`), past which what
arrived is kept in the `.part` for the next try to resume. requests is
imported only for an http(s) download, so that importing this module stays
fast.
"""

import os
import socket
import sys
import time
import urllib.parse
import urllib.request

from absl import logging

from rebar.data_files import check
from rebar.data_files import CorruptFileError
from rebar.data_files import DownloadError
from rebar.data_files import remove

_CHUNK = 1 << 20
_HTTP_TIMEOUT = (10, 60)  # seconds: (connect, between two reads)
# A read timeout restarts with every byte, so a server trickling bytes would
# hold a download for days: each file gets this many seconds in all, plus one
# per _DEADLINE_BYTES_PER_S bytes of its size (an average of about 0.8
# Mbit/s). What arrived by then is kept for the next try to resume.
DOWNLOAD_DEADLINE_S = 120
_DEADLINE_BYTES_PER_S = 100_000
_UNKNOWN_SIZE = 100_000_000  # Assumed if unknown: GitHub's limit on a file.


def _is_http(source):
  return source.lower().startswith(('http://', 'https://'))


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


def _size(path):
  return os.path.getsize(path) if os.path.exists(path) else 0


def _pause_before(attempt, backoff, deadline):
  """Sleeps the backoff before try `attempt`; False if past the deadline."""
  if not attempt:
    return True
  pause = backoff * 2 ** (attempt - 1)
  if time.monotonic() + pause >= deadline:
    return False
  time.sleep(pause)
  return True


def _request_headers(offset):
  # Identity encoding: the checksum is of the file's bytes as served.
  headers = {'Accept-Encoding': 'identity'}
  if offset:
    headers['Range'] = f'bytes={offset}-'
  return headers


def _raise_for_status(url, response):
  """DownloadError for an answer no retry mends; requests' error for 5xx."""
  status = response.status_code
  if 400 <= status < 500 and status not in (408, 429):
    raise DownloadError(url, f'HTTP {status} {response.reason}')
  response.raise_for_status()


def _stream_response(response, part, append, offset, expected, label,
                     progress, deadline):
  """Writes the body of `response` to `part`, appended if `append`."""
  length = response.headers.get('Content-Length', '')
  total = offset + int(length) if length.isdigit() else (
      expected.size if expected is not None else None)
  _stream_to(_body_chunks(response), part, append, offset, total, expected,
             label, progress, deadline)


def _raise_if_unknown_host(url, error):
  """DownloadError if `error` is a failed host name lookup, not retried."""
  lookup = _lookup_failure(error)
  if lookup is not None:
    host = urllib.parse.urlparse(url).hostname
    raise DownloadError(url, f'host {host} not found '
                        f'({lookup.strerror or lookup})') from None


def _past_deadline(url, part, seconds, error):
  """The DownloadError of a download that ran out of time."""
  last = f' (last error: {error})' if error is not None else ''
  return DownloadError(url, f'not done by its {seconds:g} s deadline{last}; '
                       f'the {_size(part)} bytes that arrived are kept in '
                       f'{part} for the next try to resume')


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
    if not _pause_before(attempt, backoff, deadline):
      break
    offset = _size(part)
    try:
      with requests.get(url, headers=_request_headers(offset), stream=True,
                        timeout=_timeouts(timeout, deadline)) as response:
        if offset and response.status_code == 416:
          return True  # `part` holds the whole file or more: check it.
        _raise_for_status(url, response)
        append = bool(offset) and response.status_code == 206 and (
            _range_start(response) == offset)
        # Set before streaming: a try that appended and then broke off
        # leaves old bytes in `part` all the same.
        resumed = resumed or append
        # Not appending, the server sent the whole file: start over.
        _stream_response(response, part, append, offset if append else 0,
                         expected, label, progress, deadline)
      return resumed
    except _DeadlinePassed:
      break
    except (requests.RequestException, urllib3.exceptions.HTTPError) as e:
      _raise_if_unknown_host(url, e)
      error = e
      logging.warning('download of %s: %s (try %d of %d)', url, e,
                      attempt + 1, retries + 1)
  else:
    raise DownloadError(url, f'failed after {retries + 1} tries: {error}')
  raise _past_deadline(url, part, seconds, error)


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
    remove(part)  # A local copy is cheap: never resume one.
  for first_try in (True, False):
    if _is_http(source):
      resumed = _http_download(source, part, expected, label, retries,
                               backoff, timeout, seconds, progress)
    else:
      _copy_local(source, part, expected, label, progress)
      resumed = False
    reason = check(part, expected)
    if reason is None:
      os.replace(part, dest)
      return
    remove(part)
    if not (resumed and first_try):
      raise CorruptFileError(dest, reason, source)
    logging.warning('%s resumed from a partial download is corrupt (%s); '
                    'downloading it again from scratch', label, reason)


