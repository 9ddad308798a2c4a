r"""Trains and evaluates an SBN with one of the REBAR paper's estimators.

  python rebar_train.py \
      --hparams="model=SBNDynamicRebar,learning_rate=0.0003,n_layer=2,task=sbn"

Prints, per epoch, `Step N: [values]` and the log gradient variance on stdout
(reference section 7); everything else goes to absl logging on stderr.
"""

import os
import random
import sys

from absl import app
from absl import flags
from absl import logging

from rebar import cli
from rebar import costs
from rebar import data
from rebar import hparams as hparams_lib
from rebar import memory
from rebar import quiet
from rebar import rundir
from rebar.hparams import HParamsError, parse_hparams

FLAGS = flags.FLAGS
# In --working_dir: one folder of TensorBoard event files per run, named by
# HParams.short_name, so that TensorBoard lists runs by readable names.
TENSORBOARD_DIR = 'tensorboard'
flags.DEFINE_string('hparams', '', 'Hyperparameters, "name=value,..." over '
                    'the defaults (listed at the end of --help).')
flags.DEFINE_string('working_dir', '/tmp/rebar',
                    'Runs go to working_dir/<hparams name>.')
flags.DEFINE_integer('eval_freq', 20, 'Evaluate every this many epochs.')
flags.DEFINE_integer('max_steps', 2000000,
                     'Stop when the step counter reaches this.')
flags.DEFINE_integer('seed', None,
                     'Fixes all randomness (default: drawn once per run and '
                     'recorded in the run directory, so a resumed run keeps '
                     'it).')
flags.DEFINE_integer('eval_samples', 100,
                     'Importance samples per image in evaluation (a multiple '
                     'of 100).')
flags.DEFINE_integer('checkpoint_secs', 300,
                     'Seconds between checkpoints (also saved at exit).')
flags.DEFINE_bool('final_eval', False,
                  'Also evaluate when training ends (if the last epoch did '
                  'not).')
flags.DEFINE_integer('eval_images', 0,
                     'Evaluate on the first N validation and test images '
                     '(0: all, as the original).')
flags.DEFINE_string('cost_table', '',
                    'Benchmark results (bench/benchmark.py\'s JSON) whose ms '
                    'per step give each train record\'s cost and log(variance '
                    'x ms) (rebar/costs.py); empty: the repository\'s '
                    'bench/results.json where it exists; none: leave them '
                    'out.')
flags.DEFINE_bool('xla', True,
                  'Compile the training steps with XLA (same math, faster).')
# Shared with the other commands: defined once, in rebar/cli.py.
cli.define_download_flag()
cli.define_threads_flag()
cli.define_data_flags()


def fail(message, code=2):
  """Ends the program with one clear line on stderr."""
  cli.fail('rebar_train.py', message, code)


def check_flags():
  """Fails on flag values that cannot work."""
  bounds = (('max_steps', 1, 'a positive number of steps'),
            ('eval_freq', 0, '0 (never) or a number of epochs'),
            ('checkpoint_secs', 0, '0 (after every block) or more seconds'),
            ('eval_images', 0, '0 (all) or a positive count'))
  for name, lowest, meaning in bounds:
    if FLAGS[name].value < lowest:
      fail('--%s must be %s, got %d' % (name, meaning, FLAGS[name].value))
  if FLAGS.eval_samples <= 0 or FLAGS.eval_samples % 100:
    fail('--eval_samples must be a positive multiple of 100, got %d'
         % FLAGS.eval_samples)


def run_seed(run_dir, requested):
  """The run's seed: recorded at its start so that resuming keeps it.

  A damaged run.json (a power cut) is rebuilt from --seed or from the seed
  the newest checkpoint holds.
  """
  path = os.path.join(run_dir, 'run.json')
  try:
    recorded = rundir.read_json(path)
  except rundir.RunDirError as e:
    recorded = None
    seed = requested
    if seed is None:
      from rebar import checkpoints  # pylint: disable=g-import-not-at-top
      seed = checkpoints.recorded_seed(run_dir)
    if seed is None and os.path.isdir(os.path.join(run_dir, 'checkpoints')):
      fail('%s and no checkpoint records the seed; pass --seed=<the run\'s '
           'seed> to rebuild it' % e)
    logging.warning('%s; rebuilding it with seed %s', e,
                    'drawn afresh' if seed is None else seed)
    requested = seed
  if recorded is not None:
    if requested is not None and requested != recorded['seed']:
      logging.warning('Run directory %s was started with seed %d; resuming '
                      'with it, not --seed=%d.', run_dir, recorded['seed'],
                      requested)
    return recorded['seed']
  seed = requested if requested is not None else random.randrange(2 ** 31)
  rundir.write_json(path, {'seed': seed})
  return seed


def prepare_run_dir(hparams):
  """Creates and locks the run directory; writes hparams.json. Returns
  (run_dir, lock)."""
  run_dir = os.path.join(FLAGS.working_dir, hparams.run_name())
  try:
    os.makedirs(run_dir, exist_ok=True)
    lock = rundir.RunDirLock(run_dir).acquire()
    for name in os.listdir(run_dir):
      if name.endswith('.tmp'):  # an atomic write cut short by a crash
        os.remove(os.path.join(run_dir, name))
    rundir.write_json(os.path.join(run_dir, 'hparams.json'), hparams.values())
  except rundir.RunDirError as e:
    fail(str(e))
  except OSError as e:
    fail('cannot write the run directory %s (%s); pass a writable '
         '--working_dir' % (run_dir, e.strerror or e))
  return run_dir, lock


def main(argv):
  if len(argv) > 1:
    fail('unexpected arguments: %s (flags take the form --name=value; quote '
         'an --hparams value that contains spaces)' % ' '.join(argv[1:]))
  try:
    hparams = parse_hparams(FLAGS.hparams)
    memory.check_fits(hparams)
  except HParamsError as e:
    fail('--hparams: %s' % e)
  check_flags()
  cost_table = load_cost_table()
  if (hparams.model in ('SBNRebar', 'SBNDynamicRebar', 'SBNTrackGradVariances')
      and hparams.quadratic and not hparams.quadratic_fix
      and hparams.n_layer >= 2):
    logging.warning('quadratic=true with n_layer=%d uses the original\'s '
                    'biased REBAR control variate (q layers above the first); '
                    'add quadratic_fix=true for the unbiased form.',
                    hparams.n_layer)
  try:
    data.ensure_data(hparams.task, hparams.dynamic_b, FLAGS.data_dir,
                     cli.urls_from_flags(), download=FLAGS.download,
                     binarization=hparams.binarization)
    train, valid, test = data.load_data(hparams, FLAGS.data_dir,
                                        compact=True)
  except data.DataError as e:
    fail(str(e))
  if hparams.batch_size > train.shape[0]:
    fail('--hparams: batch_size %d is larger than the training set (%d '
         'images); choose at most %d' % (hparams.batch_size, train.shape[0],
                                         train.shape[0]))
  run_dir, lock = prepare_run_dir(hparams)
  seed = run_seed(run_dir, FLAGS.seed)
  stop = rundir.StopRequest()
  with stop.installed():
    train_in(run_dir, lock, hparams, seed, train, valid, test, stop,
             cost_table)


def train_in(run_dir, lock, hparams, seed, train, valid, test, stop,
             cost_table):
  """Builds the model and trains it in the locked `run_dir`; exits with a
  clear line on a stop signal, divergence or damaged state."""
  try:
    build_and_train(run_dir, hparams, seed, train, valid, test, stop,
                    cost_table)
  except rundir.Stopped as e:
    sys.stderr.write('rebar_train.py: %s; checkpoint saved in %s; run the '
                     'same command to resume\n' % (e, run_dir))
    sys.exit(128 + e.signum)
  except KeyboardInterrupt:
    sys.stderr.write('rebar_train.py: stopped at once, unsaved; run the same '
                     'command to resume from the last checkpoint in %s\n'
                     % run_dir)
    sys.exit(130)
  except rundir.Diverged as e:
    fail(str(e), code=1)
  except rundir.RunDirError as e:
    fail(str(e))
  finally:
    lock.release()


def build_and_train(run_dir, hparams, seed, train, valid, test, stop,
                    cost_table):
  # TensorFlow is imported only now, so that argument and data errors are
  # reported at once.
  import numpy as np  # pylint: disable=g-import-not-at-top
  tf = quiet.import_tensorflow()
  from rebar import models  # pylint: disable=g-import-not-at-top
  from rebar import runtime  # pylint: disable=g-import-not-at-top
  from rebar import train as training  # pylint: disable=g-import-not-at-top
  fusion_emitters = runtime.configure(FLAGS.threads,
                                      runtime.xla_fusion_emitters(hparams))
  tf.random.set_seed(seed)
  np.random.seed(seed % (2 ** 32))
  logging.info('Run directory %s, seed %d', run_dir, seed)
  try:
    model = models.build_model(
        hparams, train.mean(axis=0, dtype=np.float32), seed)
  except NotImplementedError as e:
    fail(str(e))
  if FLAGS.eval_images > 0:
    valid, test = valid[:FLAGS.eval_images], test[:FLAGS.eval_images]
  trainer = training.Trainer(model, train, jit_compile=FLAGS.xla)
  del train  # the trainer holds its own (compact) copy
  training.train(model, trainer, valid, test, run_dir, seed,
                 FLAGS.max_steps, FLAGS.eval_freq,
                 eval_samples=FLAGS.eval_samples,
                 checkpoint_secs=FLAGS.checkpoint_secs,
                 final_eval=FLAGS.final_eval,
                 out=lambda line: print(line, flush=True), stop=stop,
                 eval_jit_compile=fusion_emitters,
                 tensorboard_dir=os.path.join(
                     FLAGS.working_dir, TENSORBOARD_DIR, hparams.short_name()),
                 cost_table=cost_table)


def load_cost_table():
  """The CostTable --cost_table names, or None."""
  if FLAGS.cost_table == 'none' or (
      not FLAGS.cost_table and not costs.DEFAULT_TABLE.exists()):
    return None
  try:
    return costs.load_table(FLAGS.cost_table or None)
  except costs.CostError as e:
    fail('--cost_table: %s' % e)


def run():
  """Console-script entry point (and the script's).

  The help is rebar.cli's, so that it lists this script's flags, and the
  hparams and models, also where the main module is the console script's
  wrapper, of which absl's own help knows neither the docstring nor the
  flags.
  """
  app.run(main, flags_parser=cli.app_flags_parser(
      'rebar_train.py', __doc__, epilog=hparams_lib.describe))


if __name__ == '__main__':
  run()
