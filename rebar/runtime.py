"""Process-level settings shared by rebar_train and the benchmark: thread
pools and resident memory (docs/performance.md)."""

import ctypes
import functools
import logging
import os

from absl import logging as absl_logging
import tensorflow as tf

# madvise advice: reclaim these pages now (Linux 5.4 and later).
MADV_PAGEOUT = 21


@functools.lru_cache(maxsize=None)
def _libc():
  try:
    return ctypes.CDLL(None, use_errno=True)
  except OSError:
    return None


def release_free_memory():
  """Hands the C heap's free pages back to the OS (glibc's malloc_trim).

  XLA frees most of what a compilation allocated, but glibc keeps those
  pages, so without this the resident set stays at the compilation's peak
  and a later compilation (an epoch's short last batch, the evaluation)
  raises it further. A no-op without glibc.
  """
  libc = _libc()
  if libc is not None and hasattr(libc, 'malloc_trim'):
    libc.malloc_trim(0)


def release_library_pages():
  """Asks the kernel to reclaim the pages of read-only file mappings.

  Importing TensorFlow 2.21 leaves about 380 MB of its shared libraries
  resident (relocation tables, and the static initialisers that register
  thousands of ops and kernels across its code); about 220 MB of that is
  never touched again. Pages that are needed later fault back in from the
  file. Pages other processes also map are left alone by the kernel.

  Returns:
    MB of mappings advised (0 where /proc or MADV_PAGEOUT is missing).
  """
  libc = _libc()
  if libc is None or not os.path.exists('/proc/self/maps'):
    return 0
  madvise = libc.madvise
  madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
  advised = 0
  with open('/proc/self/maps') as f:
    for line in f:
      fields = line.split()
      if len(fields) < 6 or 'w' in fields[1] or not fields[5].startswith('/'):
        continue
      start, end = (int(a, 16) for a in fields[0].split('-'))
      if madvise(start, end - start, MADV_PAGEOUT) == 0:
        advised += end - start
  return advised >> 20


# XLA's switch between its CPU kernel emitters.
FUSION_EMITTERS_FLAG = 'xla_cpu_use_fusion_emitters'


def weighted_layers(hparams):
  """Stochastic layers, a nonlinear one counting twice (its deterministic
  hidden layers): what the number of distinct kernels of a REBAR-type step,
  and so its compilation memory, grows with."""
  return hparams.n_layer * (2 if hparams.nonlinear else 1)


# Where XLA's older CPU emitters replace its fusion emitters: (models, rule
# on the hparams, what the rule is). With the fusion emitters these steps
# peaked above 1 GB while compiling; docs/performance.md has the figures.
OLDER_EMITTERS = (
    (('SBNDynamicRebar', 'SBNRelax', 'SBNRebarPerLayer'),
     lambda h: weighted_layers(h) > 2, 'more than two weighted layers'),
    (('SBNTrackGradVariances',), lambda h: h.n_layer >= 2,
     'two or more stochastic layers'),
)


def xla_fusion_emitters(hparams):
  """Whether a run of `hparams` should compile with XLA's fusion emitters
  (the faster kernels, at about 2 MB of compilation memory per distinct
  kernel), from the OLDER_EMITTERS table."""
  return not any(hparams.model in names and rule(hparams)
                 for names, rule, _ in OLDER_EMITTERS)


def use_xla_fusion_emitters(enabled):
  """Chooses XLA's CPU kernel emitters for this process.

  XLA emits each distinct fused kernel through MLIR by default (its fusion
  emitters) and holds every kernel's module until all are compiled: about
  2 MB per distinct kernel, so a step with ~250 of them (SBNTrackGradVariances,
  two layers) peaked at about 1 GB while compiling. Its older emitters
  compile the same HLO in about 240 MB less, and the kernels they emit run
  15-30% slower (docs/performance.md). XLA reads XLA_FLAGS once, at the first
  compilation in the process, so call this before anything is compiled; a
  setting of the flag in the user's own XLA_FLAGS is left as it is.
  """
  if enabled or _fusion_emitters_setting() is not None:
    return
  os.environ['XLA_FLAGS'] = ' '.join(filter(None, [
      os.environ.get('XLA_FLAGS', ''), '--%s=false' % FUSION_EMITTERS_FLAG]))


def _fusion_emitters_setting():
  """The value XLA_FLAGS gives the fusion-emitters flag (the last one
  wins), lower-cased; None where it is not set."""
  setting = None
  for flag in os.environ.get('XLA_FLAGS', '').split():
    name, _, value = flag.lstrip('-').partition('=')
    if name == FUSION_EMITTERS_FLAG:
      setting = value.lower()
  return setting


def xla_fusion_emitters_enabled():
  """False where XLA_FLAGS turns XLA's CPU fusion emitters off."""
  return _fusion_emitters_setting() not in ('false', '0')


class TensorFlowInfoFilter(logging.Filter):
  """Drops the absl log records below WARNING that TensorFlow's own Python
  code writes."""

  package = os.path.dirname(tf.__file__) + os.sep

  def filter(self, record):
    return (record.levelno >= logging.WARNING
            or not record.pathname.startswith(self.package))


def configure(threads=0, xla_fusion_emitters=True):
  """Thread pools (`threads` per pool, default one per core), XLA's kernel
  emitters (use_xla_fusion_emitters) and the release of TensorFlow's
  import-time library pages. Call once, after importing TensorFlow and
  before building anything.

  Explicit pools: with TensorFlow's defaults, XLA step times on 2 cores
  varied by 2x from block to block (docs/performance.md).

  Returns:
    Whether XLA's fusion emitters are in effect (a user's own XLA_FLAGS
    win): evaluation compiles with XLA only then (evaluation.make_iw_bound_fn).
  """
  threads = threads or os.cpu_count() or 1
  # TensorFlow's own Python INFO lines (e.g. the checkpoint saver's
  # "Sharding callback duration" at every save, through absl logging) would
  # drown the run's progress lines on stderr; its warnings stay.
  tf.get_logger().setLevel(logging.WARNING)
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, TensorFlowInfoFilter) for f in handler.filters):
    handler.addFilter(TensorFlowInfoFilter())
  try:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
  except RuntimeError:
    # TensorFlow's pools are fixed once it has run anything: a command
    # called in-process after other TensorFlow work (the tests) keeps them.
    absl_logging.warning('TensorFlow is already initialised in this process; '
                         'its thread pools stay as they are, not %d',
                         threads)
  use_xla_fusion_emitters(xla_fusion_emitters)
  release_library_pages()
  return xla_fusion_emitters_enabled()
