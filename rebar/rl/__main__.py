"""Trains a policy with one policy-gradient method on one Gymnasium task.

  python -m rebar.rl --env=CartPole-v1 --method=relax --seed=1 \
      --max_episodes=1000 --working_dir=runs/rl

Prints a line per --log_every episodes (episodes, mean return over the last
100, the policy-gradient log variance, steps per second) and writes
metrics.jsonl, TensorBoard summaries and checkpoints to
working_dir/<settings name>; the same command resumes a stopped run. The
run ends at --max_episodes or, with --stop_when_solved (default), when the
mean return of the last solved_window episodes reaches the task's
threshold.
"""

import os
import random
import sys

from absl import flags
from absl import logging

from rebar import cli
from rebar import quiet
from rebar import rundir
from rebar.hparams import HParamsError
from rebar.rl import settings as settings_lib

NAME = 'rebar.rl'
TENSORBOARD_DIR = 'tensorboard'


def define_flags(flag_values):
  """Defines the command's flags on `flag_values`."""
  flags.DEFINE_string('env', None, 'Gymnasium environment: %s (default: '
                      'the --hparams env, else CartPole-v1).'
                      % ', '.join(settings_lib.TASKS), flag_values=flag_values)
  flags.DEFINE_string('method', None, 'Estimator: %s (default: the --hparams '
                      'method, else a2c).' % ', '.join(settings_lib.METHODS),
                      flag_values=flag_values)
  flags.DEFINE_string('hparams', '', 'Further settings, "name=value,..." '
                      '(listed at the end of --help).',
                      flag_values=flag_values)
  flags.DEFINE_integer('seed', None, 'Fixes all randomness (default: drawn '
                       'once and recorded in the run directory). Without a '
                       'trial in --hparams it is also the trial, so that each '
                       'seed has its own run directory.',
                       flag_values=flag_values)
  flags.DEFINE_integer('max_episodes', 1000, 'Stop after this many episodes.',
                       lower_bound=1, flag_values=flag_values)
  flags.DEFINE_string('working_dir', '/tmp/rebar_rl',
                      'Runs go to working_dir/<settings name>.',
                      flag_values=flag_values)
  flags.DEFINE_integer('log_every', 10, 'Episodes per printed line and '
                       'record (the log variance is over their updates).',
                       lower_bound=1, flag_values=flag_values)
  flags.DEFINE_integer('checkpoint_secs', 120, 'Seconds between checkpoints '
                       '(taken at record boundaries; also at exit).',
                       lower_bound=0, flag_values=flag_values)
  flags.DEFINE_bool('stop_when_solved', True, 'End the run when the task is '
                    'solved.', flag_values=flag_values)
  cli.define_threads_flag(flag_values)


COMMAND = cli.Command(
    name=NAME, prog='python -m rebar.rl', synopsis='[flags]',
    description=cli.first_paragraph(__doc__) + ' ' + ' '.join(
        settings_lib.describe().split()),
    define_flags=define_flags)


def settings_from(args):
  """RLSettings from --hparams with --env and --method over it, and --seed
  as the trial where --hparams gives none."""
  pairs = settings_lib.parse_pairs(args.hparams)
  if args.seed is not None:
    pairs.setdefault('trial', args.seed)
  for name in ('env', 'method'):
    value = getattr(args, name)
    if value is None:
      continue
    if name in pairs and pairs[name] != value:
      raise HParamsError('--%s=%s and --hparams %s=%s disagree; give one'
                         % (name, value, name, pairs[name]))
    pairs[name] = value
  return settings_lib.parse_settings(**pairs)


def run_seed(run_dir, requested):
  """The seed recorded in run_dir/run.json, written at the run's start."""
  path = os.path.join(run_dir, 'run.json')
  if os.path.exists(path):
    recorded = rundir.read_json(path)['seed']
    if requested is not None and requested != recorded:
      logging.warning('Run directory %s was started with seed %d; resuming '
                      'with it, not --seed=%d.', run_dir, recorded, requested)
    return recorded
  seed = requested if requested is not None else random.randrange(2 ** 31)
  rundir.write_json(path, {'seed': seed})
  return seed


def main(argv=None):
  """Runs the command line `argv` (without the program name); returns the
  exit status."""
  args = COMMAND.parse(sys.argv[1:] if argv is None else argv)
  try:
    settings = settings_from(args)
  except HParamsError as e:
    cli.fail(NAME, str(e))
  from rebar.rl import envs  # pylint: disable=g-import-not-at-top
  try:
    envs.make_env(settings.env).close()
  except envs.EnvError as e:
    cli.fail(NAME, str(e))
  run_dir = os.path.join(args.working_dir, settings.run_name())
  try:
    os.makedirs(run_dir, exist_ok=True)
    lock = rundir.RunDirLock(run_dir).acquire()
    rundir.write_json(os.path.join(run_dir, 'hparams.json'),
                      settings.values())
    seed = run_seed(run_dir, args.seed)
  except rundir.RunDirError as e:
    cli.fail(NAME, str(e))
  except OSError as e:
    cli.fail(NAME, 'cannot write the run directory %s (%s); pass a writable '
             '--working_dir' % (run_dir, e.strerror or e))
  quiet.import_tensorflow()
  # pylint: disable=g-import-not-at-top
  from rebar import runtime
  from rebar.rl import train
  # pylint: enable=g-import-not-at-top
  runtime.configure(args.threads)
  logging.info('Run directory %s, seed %d', run_dir, seed)
  stop = rundir.StopRequest()
  try:
    with stop.installed():
      train.train(settings, run_dir, seed, args.max_episodes,
                  log_every=args.log_every,
                  checkpoint_secs=args.checkpoint_secs,
                  stop_when_solved=args.stop_when_solved,
                  out=lambda line: print(line, flush=True), stop=stop,
                  tensorboard_dir=os.path.join(args.working_dir,
                                               TENSORBOARD_DIR,
                                               settings.short_name()))
  except rundir.Stopped as e:
    sys.stderr.write('%s: %s; checkpoint saved in %s; run the same command '
                     'to resume\n' % (NAME, e, run_dir))
    return 128 + e.signum
  except rundir.Diverged as e:
    cli.fail(NAME, str(e), code=1)
  except (rundir.RunDirError, envs.EnvError, HParamsError) as e:
    cli.fail(NAME, str(e))
  finally:
    lock.release()
  return 0


if __name__ == '__main__':
  sys.exit(main())
