"""Runs a config's experiments: every setting x model x learning rate x trial.

  python -m rebar.sweep configs/generative_mnist.json --working_dir=/data/runs \
      --workers=4

Each run is a separate `rebar_train.py` process (`python -m rebar.rl` for a
config of program "rl") writing to `working_dir/<hparams name>`, so a sweep
shares its layout with hand-started runs and the report reads both alike.
`--workers` runs go at once, each with `--threads` set to its share of the
cores. A run whose `finished.json` shows it reached `max_steps` (or, for rl,
stopped because it was solved) is skipped; any other run is (re)started
with the same command, which resumes it from its last checkpoint. A failing
run is recorded in `working_dir/sweep_status.json` (exit code and the end of
its log) and the others carry on; the exit code is 1 if any failed.

`--print_commands` prints one shell line per run instead of running them, for
a cluster scheduler (Slurm array, GNU parallel, xargs) on shared storage;
the lines of an rl config run `python -m rebar.rl`, so they need the
package installed or the repository root as their working directory.

The config format is described in docs/reproduction.md ("Config format")
and checked by `rebar.config.load_config`, which `rebar.report`
shares; `rebar.sweep_runner` starts, watches and records the processes.
This module re-exports the names of both that it used to hold.
"""

import collections
import functools
import os
import pathlib
import shlex
import subprocess
import sys

from absl import flags

from rebar import cli
from rebar import sweep_runner
from rebar.hparams import parse_hparams
# Re-exported: these lived here before rebar.config and rebar.sweep_runner.
# pylint: disable=unused-import,g-importing-member
from rebar.config import Config
from rebar.config import ConfigError
from rebar.config import expand_runs
from rebar.config import EXTRA_FLAGS
from rebar.config import load_config
from rebar.config import Run
from rebar.config import SELECTION_METRICS
from rebar.sweep_runner import finished_step
from rebar.sweep_runner import is_finished
from rebar.sweep_runner import LOG_FILE
from rebar.sweep_runner import LOG_TAIL_LINES
from rebar.sweep_runner import log_tail
from rebar.sweep_runner import STATUS_FILE
from rebar.sweep_runner import StatusFile
# pylint: enable=unused-import,g-importing-member

# Data flags passed through to every run (value None: not passed).
DATA_FLAGS = ('data_dir', 'download', 'mnist_binarized_url', 'mnist_url',
              'omniglot_url')


class SweepError(RuntimeError):
  """An environment problem (e.g. an unwritable working dir); one line."""


def train_script():
  """The rebar_train.py that belongs with this `rebar` package.

  It sits beside the package both in the repository and after
  `pip install .` (a py_module next to the package in site-packages).
  Running it by path works from any directory, unlike `python -m
  rebar_train`, which needs the repository root as the working directory
  when the project is not installed.
  """
  package_dir = pathlib.Path(__file__).resolve().parent
  script = package_dir.parent / 'rebar_train.py'
  if script.is_file():
    return str(script)
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.find_spec('rebar_train')
  if spec is not None and spec.origin:
    return spec.origin
  raise SweepError('cannot find rebar_train.py beside %s; run from the '
                   'repository root or `pip install .`' % package_dir)


@functools.lru_cache(maxsize=None)
def _package_seen_from(cwd):
  """The `rebar` package directory a fresh interpreter started in `cwd`
  imports (None if it imports none): what `python -m` there will run."""
  try:
    result = subprocess.run(
        [sys.executable, '-c', 'import os, rebar; '
         'print(os.path.dirname(os.path.realpath(rebar.__file__)))'],
        cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
  except (OSError, subprocess.TimeoutExpired):
    return None
  lines = result.stdout.strip().splitlines()
  return lines[-1] if result.returncode == 0 and lines else None


def module_command(module):
  """[python, -m, module] for a module of this `rebar` package.

  A run started with it imports the package its interpreter finds from the
  working directory: the installed one (`pip install .`), or in a clone
  that is not installed, the repository root's, so the sweep must run
  there. Checked once per directory, so that a sweep elsewhere stops with
  one line instead of starting runs of another copy, or of none.
  """
  package_dir = str(pathlib.Path(__file__).resolve().parent)
  cwd = os.getcwd()
  seen = _package_seen_from(cwd)
  if seen != package_dir:
    raise SweepError(
        '`python -m %s` started in %s would import %s, not this one (%s); '
        'run the sweep from the repository root (%s) or `pip install .`'
        % (module, cwd, 'rebar from %s' % seen if seen else 'no rebar',
           package_dir, os.path.dirname(package_dir)))
  return [sys.executable, '-m', module]


def _run_flags(run, config, threads):
  """--seed, the config's flags and --threads: what every program takes."""
  argv = []
  if run.seed is not None:
    argv.append('--seed=%d' % run.seed)
  for flag, value in config.flags.items():
    if isinstance(value, bool):
      argv.append('--%s=%s' % (flag, 'true' if value else 'false'))
    else:
      argv.append('--%s=%s' % (flag, value))
  if threads:
    argv.append('--threads=%d' % threads)
  return argv


def _train_command(run, config, working_dir, max_steps, threads, data_flags):
  """[python, rebar_train.py, flags...]."""
  argv = [sys.executable, train_script(), '--hparams=' + run.hparams,
          '--working_dir=' + working_dir, '--max_steps=%d' % max_steps,
          '--eval_freq=%d' % config.eval_freq]
  argv += _run_flags(run, config, threads)
  for flag in DATA_FLAGS:
    if data_flags.get(flag) is not None:
      argv.append('--%s=%s' % (flag, data_flags[flag]))
  return argv


def _rl_command(run, config, working_dir, max_steps, threads, data_flags):
  """[python, -m, rebar.rl, flags...]; max_steps counts episodes."""
  del data_flags  # policy-gradient runs read no datasets
  return module_command('rebar.rl') + [
      '--hparams=' + run.hparams, '--working_dir=' + working_dir,
      '--max_episodes=%d' % max_steps] + _run_flags(run, config, threads)


# The command builder of each program (rebar.config.PROGRAMS).
COMMANDS = {'train': _train_command, 'rl': _rl_command}


def run_command(run, config, working_dir, max_steps, threads, data_flags):
  """The argv of one run: [python, rebar_train.py, flags...], or for a
  config of program rl [python, -m, rebar.rl, flags...]."""
  return COMMANDS[config.program](run, config, working_dir, max_steps,
                                  threads, data_flags)


def cpu_count():
  """Cores this process may use (the affinity mask where there is one)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def fair_threads(workers, cores=None):
  """TensorFlow threads per run so that `workers` runs share the cores."""
  return max(1, (cores or cpu_count()) // max(1, workers))


def run_sweep(config, working_dir, workers=1, max_steps=None, threads=0,
              data_flags=None, out=print, poll_s=0.2):
  """Runs every unfinished run of `config`, `workers` at a time.

  Args:
    config: a Config.
    working_dir: where the run directories and the status file go.
    workers: runs at once.
    max_steps: overrides the config's max_steps (quick tries).
    threads: TensorFlow threads per run (0: the fair share of the cores).
    data_flags: {flag: value} of DATA_FLAGS passed to every run.
    out: prints progress lines.
    poll_s: seconds between checks on the running processes.
  Returns:
    The status dict name -> entry of this sweep's runs.
  Raises:
    SweepError: the working dir cannot be written.
    KeyboardInterrupt: after the running runs saved checkpoints and the
      status file says which were interrupted.
  """
  working_dir = os.path.abspath(working_dir)
  max_steps = max_steps or config.max_steps
  data_flags = dict(data_flags or {})
  threads = threads or fair_threads(workers)
  status = _open_status(working_dir, config)
  runs = expand_runs(config)
  todo = _queue(runs, config, working_dir, max_steps, threads, data_flags,
                status)
  out('%d runs: %d already finished, %d to run, %d at a time with %d '
      'thread(s) each' % (len(runs), len(runs) - len(todo), len(todo),
                          workers, threads))
  if config.program_spec.datasets:
    _prefetch_data([run for run, _ in todo], data_flags, out)
  sweep_runner.run_all(todo, working_dir, max_steps, workers, status, out,
                       poll_s)
  return {name: status.runs[name] for name in status.names}


def _open_status(working_dir, config):
  """The sweep's StatusFile, written once to show the dir can be written."""
  try:
    os.makedirs(working_dir, exist_ok=True)
    status = StatusFile(working_dir, config)
    status.write()
  except OSError as e:
    raise SweepError('cannot write to the working dir %s (%s); pass a '
                     'writable --working_dir' % (working_dir,
                                                 e.strerror or e)) from None
  return status


def _queue(runs, config, working_dir, max_steps, threads, data_flags,
           status):
  """The (run, argv) pairs still to run, in order, as a deque.

  Every run gets its entry in `status`: 'skipped' if it already reached
  `max_steps`, else 'pending'.
  """
  todo = collections.deque()
  for run in runs:
    argv = run_command(run, config, working_dir, max_steps, threads,
                       data_flags)
    fields = dict(setting=run.setting, model=run.model,
                  learning_rate=run.learning_rate, trial=run.trial,
                  hparams=run.hparams, config=str(config.path),
                  command=shlex.join(argv), returncode=None, log_tail=[])
    if is_finished(run.run_dir(working_dir), max_steps):
      status.update(run.name, status='skipped', **fields,
                    step=finished_step(run.run_dir(working_dir)))
    else:
      status.update(run.name, status='pending', **fields)
      todo.append((run, argv))
  status.write()
  return todo


def _prefetch_data(runs, data_flags, out):
  """Fetches each dataset once, before runs that would race to download it.

  With --download=false nothing is fetched: each run reports missing data.
  A failure here is only announced: the runs that need the data then fail
  with the full message, and the others go ahead.
  """
  if not runs or str(data_flags.get('download', 'true')).lower() in (
      'false', '0'):
    return
  from rebar import data  # pylint: disable=g-import-not-at-top
  urls = dict(data.DEFAULT_URLS)
  urls.update({k: data_flags[k] for k in urls if data_flags.get(k)})
  data_dir = data_flags.get('data_dir') or data.DEFAULT_DATA_DIR
  needs = set()
  for run in runs:
    hparams = parse_hparams(run.hparams)
    needs.add((hparams.task, hparams.dynamic_b, hparams.binarization))
  for task, dynamic_b, binarization in sorted(needs):
    try:
      data.ensure_data(task, dynamic_b, data_dir, urls, download=True,
                       progress=False, binarization=binarization)
    except (data.DataError, OSError) as e:
      out('warning: data for task=%s not ready (%s); its runs will fail'
          % (task, e))


def print_commands(config, working_dir, max_steps=None, threads=0,
                   data_flags=None, out=print):
  """Prints one shell line per run (every run: finished ones exit at once)."""
  working_dir = os.path.abspath(working_dir)
  for run in expand_runs(config):
    out(shlex.join(run_command(run, config, working_dir,
                               max_steps or config.max_steps, threads,
                               dict(data_flags or {}))))


def define_flags(flag_values):
  """Defines the sweep's flags on `flag_values`."""
  flags.DEFINE_string('working_dir', None,
                      'Where the run directories and sweep_status.json go '
                      '(shared storage for --print_commands).',
                      flag_values=flag_values)
  flags.DEFINE_integer('workers', 1, 'Runs at once.', lower_bound=1,
                       flag_values=flag_values)
  flags.DEFINE_integer('max_steps', None,
                       'Overrides the config\'s max_steps, e.g. for a quick '
                       'try (default: the config\'s).', lower_bound=1,
                       flag_values=flag_values)
  flags.DEFINE_bool('print_commands', False,
                    'Print one shell line per run instead of running.',
                    flag_values=flag_values)
  cli.define_threads_flag(
      flag_values, 'TensorFlow threads per run (0: cores // workers; left '
      'out of --print_commands lines).', zero_means='cores // workers')
  # rebar_train's own definitions: each is passed on to every run, and only
  # where given, so that a run takes rebar_train's default otherwise.
  cli.define_download_flag(flag_values)
  cli.define_data_flags(flag_values)


COMMAND = cli.Command(
    name='rebar.sweep', prog='python -m rebar.sweep',
    synopsis='CONFIG --working_dir=DIR [flags]',
    description=cli.first_paragraph(__doc__) + ' --download, --data_dir and '
    'the URL flags are passed on to every run where given.',
    define_flags=define_flags,
    arguments=(('CONFIG', 'the config JSON, e.g. '
                'configs/generative_mnist.json'),),
    required=('working_dir',))


def parse_args(argv):
  """The parsed command line (argv without the program name): a
  cli.Parsed; exits 0 after --help, 2 on a bad command line."""
  return COMMAND.parse(argv)


def data_flags_given(args):
  """{flag: value} of DATA_FLAGS as rebar_train reads them, None for those
  not on the command line."""
  data_flags = dict.fromkeys(DATA_FLAGS)
  for flag in DATA_FLAGS:
    if args.given(flag):
      value = getattr(args, flag)
      data_flags[flag] = (('true' if value else 'false')
                          if isinstance(value, bool) else value)
  if data_flags['data_dir']:
    data_flags['data_dir'] = os.path.abspath(
        os.path.expanduser(data_flags['data_dir']))
  return data_flags


def _fail(message, code=2):
  cli.fail(COMMAND.name, message, code)


def main(argv=None):
  """Runs the command line `argv` (without the program name; default
  sys.argv's); returns the exit status."""
  args = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    config = load_config(args.config)
  except ConfigError as e:
    _fail(str(e))
  data_flags = data_flags_given(args)
  try:
    if args.print_commands:
      try:
        print_commands(config, args.working_dir, args.max_steps,
                       args.threads, data_flags)
        sys.stdout.flush()
      except BrokenPipeError:
        # The reader (e.g. `| head`) took what it wanted; not an error.
        # stdout goes to /dev/null so that the interpreter's final flush
        # does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
      return 0
    results = run_sweep(config, args.working_dir, args.workers,
                        args.max_steps, args.threads, data_flags,
                        out=lambda line: print(line, flush=True))
  except SweepError as e:
    _fail(str(e))
  except KeyboardInterrupt:
    sys.stderr.write('rebar.sweep: interrupted; running runs saved '
                     'checkpoints; run the same command to resume\n')
    return 130
  counts = collections.Counter(r['status'] for r in results.values())
  status_path = os.path.join(os.path.abspath(args.working_dir), STATUS_FILE)
  print('%d runs: %s; status in %s' % (
      len(results), ', '.join('%d %s' % (n, s)
                              for s, n in sorted(counts.items())),
      status_path))
  if counts.get('failed'):
    sys.stderr.write('rebar.sweep: %d run(s) failed; their log tails are in '
                     '%s; fix the cause and run the same command again\n'
                     % (counts['failed'], status_path))
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
