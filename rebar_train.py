"""Trains and evaluates an SBN with one of the REBAR paper's estimators.

  python rebar_train.py \
      --hparams="model=SBNDynamicRebar,learning_rate=0.0003,n_layer=2,task=sbn"

Prints, per epoch, `Step N: [values]` and the log gradient variance on stdout
(reference section 7); everything else goes to absl logging on stderr.
"""

import json
import os
import random
import sys

from absl import app
from absl import flags
from absl import logging

from rebar import data
from rebar.hparams import HParamsError, parse_hparams

FLAGS = flags.FLAGS
flags.DEFINE_string('hparams', '', 'Hyperparameters, "name=value,...".')
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
flags.DEFINE_bool('download', True,
                  'Download missing data (from the URL flags).')
flags.DEFINE_integer('checkpoint_secs', 300,
                     'Seconds between checkpoints (also saved at exit).')
flags.DEFINE_bool('final_eval', False,
                  'Also evaluate when training ends (if the last epoch did '
                  'not).')
flags.DEFINE_integer('eval_images', 0,
                     'Evaluate on the first N validation and test images '
                     '(0: all, as the original).')
flags.DEFINE_integer('threads', 0,
                     'TensorFlow intra- and inter-op threads (0: one per '
                     'core). Set it when runs share a machine.')
flags.DEFINE_bool('xla', True,
                  'Compile the training steps with XLA (same math, faster).')
data.define_flags()


def fail(message):
  """Ends the program with one clear line on stderr."""
  sys.stderr.write('rebar_train.py: error: %s\n' % message)
  sys.exit(2)


def run_seed(run_dir, requested):
  """The run's seed: recorded at its start so that resuming keeps it."""
  path = os.path.join(run_dir, 'run.json')
  if os.path.exists(path):
    with open(path) as f:
      recorded = json.load(f)['seed']
    if requested is not None and requested != recorded:
      logging.warning('Run directory %s was started with seed %d; resuming '
                      'with it, not --seed=%d.', run_dir, recorded, requested)
    return recorded
  seed = requested if requested is not None else random.randrange(2 ** 31)
  with open(path, 'w') as f:
    json.dump({'seed': seed}, f)
  return seed


def main(argv):
  del argv
  try:
    hparams = parse_hparams(FLAGS.hparams)
  except HParamsError as e:
    fail('--hparams: %s' % e)
  if FLAGS.eval_images < 0:
    fail('--eval_images must be 0 (all) or positive, got %d'
         % FLAGS.eval_images)
  if FLAGS.eval_samples <= 0 or FLAGS.eval_samples % 100:
    fail('--eval_samples must be a positive multiple of 100, got %d'
         % FLAGS.eval_samples)
  if (hparams.model in ('SBNRebar', 'SBNDynamicRebar', 'SBNTrackGradVariances')
      and hparams.quadratic and not hparams.quadratic_fix
      and hparams.n_layer >= 2):
    logging.warning('quadratic=true with n_layer=%d uses the original\'s '
                    'biased REBAR control variate (q layers above the first); '
                    'add quadratic_fix=true for the unbiased form.',
                    hparams.n_layer)
  run_dir = os.path.join(FLAGS.working_dir, hparams.run_name())
  try:
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, 'hparams.json'), 'w') as f:
      json.dump(hparams.values(), f, indent=2, sort_keys=True)
  except OSError as e:
    fail('cannot write the run directory %s (%s); pass a writable '
         '--working_dir' % (run_dir, e.strerror or e))
  seed = run_seed(run_dir, FLAGS.seed)

  try:
    data.ensure_data(hparams.task, hparams.dynamic_b, FLAGS.data_dir,
                     data.urls_from_flags(), download=FLAGS.download)
    train, valid, test = data.load_data(hparams, FLAGS.data_dir,
                                        compact=True)
  except data.DataError as e:
    fail(str(e))

  # TensorFlow is imported only now, so that argument and data errors are
  # reported at once.
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from rebar import models  # pylint: disable=g-import-not-at-top
  from rebar import runtime  # pylint: disable=g-import-not-at-top
  from rebar import train as training  # pylint: disable=g-import-not-at-top
  runtime.configure(FLAGS.threads, models.MODEL_CLASSES[
      hparams.model].xla_fusion_emitters(hparams))
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
  try:
    training.train(model, trainer, valid, test, run_dir, seed,
                   FLAGS.max_steps, FLAGS.eval_freq,
                   eval_samples=FLAGS.eval_samples,
                   checkpoint_secs=FLAGS.checkpoint_secs,
                   final_eval=FLAGS.final_eval,
                   out=lambda line: print(line, flush=True))
  except KeyboardInterrupt:
    sys.stderr.write('Interrupted; checkpoint saved in %s\n' % run_dir)
    sys.exit(130)


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == '__main__':
  run()
