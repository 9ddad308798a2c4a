"""Runs the experiments of a config: every setting x model x learning rate x trial.

  python -m rebar.sweep configs/generative_mnist.json --working_dir=/data/runs \
      --workers=4

Each run is a separate `rebar_train.py` process writing to
`working_dir/<hparams name>`, so a sweep shares its layout with hand-started
runs and `rebar.report` reads both alike. `--workers` runs go at once, each
with `--threads` set to its share of the cores. A run whose `finished.json`
shows it reached `max_steps` is skipped; any other run is (re)started with
the same command, which resumes it from its last checkpoint. A failing run is
recorded in `working_dir/sweep_status.json` (exit code and the end of its
log) and the others carry on; the exit code is 1 if any failed.

`--print_commands` prints one shell line per run instead of running them, for
a cluster scheduler (Slurm array, GNU parallel, xargs) on shared storage.

The config format is described in README.md ("Reproducing the paper's
tables") and checked by `load_config`, which `rebar.report` shares.
"""

import argparse
import collections
import dataclasses
import datetime
import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time

from rebar.hparams import HParamsError, parse_hparams

STATUS_FILE = 'sweep_status.json'
LOG_FILE = 'log.txt'  # in the run directory: stdout and stderr of each attempt
LOG_TAIL_LINES = 40

# Config keys: name -> (required, accepted types, meaning for error messages).
_CONFIG_KEYS = {
    'name': (False, (str,), 'a short name'),
    'description': (False, (str,), 'free text'),
    'source': (False, (str, list), 'provenance, free text'),
    'notes': (False, (str, list), 'free text'),
    'hparams': (False, (str,), 'an hparams fragment applied to every run'),
    'settings': (True, (dict,), 'setting name -> hparams fragment'),
    'models': (True, (list,), 'a list of model names'),
    'learning_rates': (True, (list,), 'a list of positive numbers'),
    'trials': (True, (int, list), 'a count N (trials 1..N) or a list of ints'),
    'seed_from_trial': (False, (bool,),
                        'true: --seed=<trial>; false: rebar_train draws one'),
    'max_steps': (True, (int,), 'a positive int'),
    'eval_freq': (True, (int,), 'evaluation interval in epochs'),
    'flags': (False, (dict,), 'extra rebar_train flags, name -> value'),
    'selection': (True, (dict,), 'the learning-rate selection rule'),
    'published': (False, (dict, type(None)),
                  '{"file": ..., "table": ...} or null'),
}
# Extra rebar_train flags a config may set. The sweep sets the others itself
# (hparams, working_dir, max_steps, eval_freq, seed, threads, data flags).
EXTRA_FLAGS = {'final_eval': bool, 'eval_images': int, 'eval_samples': int,
               'checkpoint_secs': int}
# Selection metrics: per trial, the best value over its records; per learning
# rate, the mean over trials; the highest mean wins.
SELECTION_METRICS = ('valid_iw_bound', 'train_elbo')
# Hparams the sweep sets per run; a setting or the common fragment must not.
_SWEPT_HPARAMS = ('model', 'learning_rate', 'trial')
# Data flags passed through to every run (value None: not passed).
DATA_FLAGS = ('data_dir', 'download', 'mnist_binarized_url', 'mnist_url',
              'omniglot_url')


class ConfigError(ValueError):
  """A config that cannot be used; the message is one line naming the fix."""


class SweepError(RuntimeError):
  """An environment problem (e.g. an unwritable working dir); one line."""


@dataclasses.dataclass
class Config:
  """A checked config; `path` is where it was read from."""
  path: pathlib.Path
  name: str
  hparams: str
  settings: dict
  models: list
  learning_rates: list
  trials: list
  seed_from_trial: bool
  max_steps: int
  eval_freq: int
  flags: dict
  selection: dict
  published: dict  # {'file': absolute path, 'table': name} or None
  raw: dict  # the file's content, for the report's provenance


@dataclasses.dataclass(frozen=True)
class Run:
  """One rebar_train invocation of a sweep."""
  setting: str
  model: str
  learning_rate: float
  trial: int
  hparams: str  # the --hparams string
  name: str  # the run directory name, as rebar_train computes it
  seed: int  # None: drawn by rebar_train

  def run_dir(self, working_dir):
    return os.path.join(working_dir, self.name)


def load_config(path):
  """Reads and checks a config JSON file; raises ConfigError (one line)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise ConfigError('config file %s does not exist; pass the path of a '
                      'config JSON such as configs/smoke/smoke.json' % path)
  try:
    with open(path) as f:
      raw = json.load(f)
  except json.JSONDecodeError as e:
    raise ConfigError('config %s is not valid JSON (line %d column %d: %s); '
                      'fix the file' % (path, e.lineno, e.colno, e.msg)) from None
  except (OSError, UnicodeDecodeError) as e:
    raise ConfigError('cannot read config %s (%s); check the file'
                      % (path, e)) from None

  def bad(message):
    return ConfigError('config %s: %s' % (path, message))

  if not isinstance(raw, dict):
    raise bad('the top level must be a JSON object; see README.md '
              '"Reproducing the paper\'s tables" for the format')
  for key in raw:
    if key not in _CONFIG_KEYS:
      raise bad('unknown key %r; valid keys: %s'
                % (key, ', '.join(_CONFIG_KEYS)))
  for key, (required, types, meaning) in _CONFIG_KEYS.items():
    if key not in raw:
      if required:
        raise bad('missing key %r (%s); add it' % (key, meaning))
      continue
    value = raw[key]
    # bool is an int in Python; only `seed_from_trial` may be one.
    if not isinstance(value, types) or (
        isinstance(value, bool) and bool not in types):
      raise bad('%r must be %s, got %r' % (key, meaning, value))

  settings = raw['settings']
  if not settings or not all(isinstance(k, str) and isinstance(v, str)
                             for k, v in settings.items()):
    raise bad('"settings" must map setting names to hparams strings, e.g. '
              '{"linear_1_layer": "n_layer=1,nonlinear=false"}')
  models = raw['models']
  if not models or not all(isinstance(m, str) for m in models):
    raise bad('"models" must be a non-empty list of model names')
  if len(set(models)) != len(models):
    raise bad('"models" lists a model twice; list each once')
  rates = raw['learning_rates']
  if not rates or not all(isinstance(r, (int, float)) and
                          not isinstance(r, bool) and r > 0 for r in rates):
    raise bad('"learning_rates" must be a non-empty list of positive numbers')
  rates = [float(r) for r in rates]
  if len(set(rates)) != len(rates):
    raise bad('"learning_rates" lists a rate twice; list each once')
  trials = raw['trials']
  if isinstance(trials, int):
    trials = list(range(1, trials + 1))
  if not trials or not all(isinstance(t, int) and not isinstance(t, bool)
                           for t in trials) or len(set(trials)) != len(trials):
    raise bad('"trials" must be a positive count or a list of distinct ints')
  if raw['max_steps'] <= 0:
    raise bad('"max_steps" must be positive')
  if raw['eval_freq'] < 0:
    raise bad('"eval_freq" must be 0 (never) or a number of epochs')

  extra = raw.get('flags', {})
  for flag, value in extra.items():
    if flag not in EXTRA_FLAGS:
      raise bad('"flags" has %r, which the sweep does not pass on; allowed: '
                '%s (the sweep sets the others itself)'
                % (flag, ', '.join(EXTRA_FLAGS)))
    kind = EXTRA_FLAGS[flag]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
      raise bad('flag %r takes a%s %s, got %r'
                % (flag, 'n' if kind is int else '', kind.__name__, value))

  selection = raw['selection']
  unknown = set(selection) - {'metric', 'description'}
  if unknown:
    raise bad('"selection" has unknown key(s) %s; it takes "metric" and '
              '"description"' % ', '.join(sorted(unknown)))
  if selection.get('metric') not in SELECTION_METRICS:
    raise bad('"selection.metric" must be one of %s, got %r'
              % (', '.join(SELECTION_METRICS), selection.get('metric')))

  published = raw.get('published')
  if published is not None:
    if set(published) != {'file', 'table'} or not all(
        isinstance(v, str) for v in published.values()):
      raise bad('"published" must be {"file": <path relative to the config>, '
                '"table": <name in that file>} or null')
    published = {'file': str((path.parent / published['file']).resolve()),
                 'table': published['table']}

  config = Config(path=path.resolve(), name=raw.get('name', path.stem),
                  hparams=raw.get('hparams', ''), settings=dict(settings),
                  models=list(models), learning_rates=rates, trials=trials,
                  seed_from_trial=raw.get('seed_from_trial', True),
                  max_steps=raw['max_steps'], eval_freq=raw['eval_freq'],
                  flags=dict(extra), selection=dict(selection),
                  published=published, raw=raw)
  expand_runs(config)  # checks every hparams string now, not mid-sweep
  return config


def expand_runs(config):
  """The runs of a config, in the order settings x models x rates x trials.

  Raises ConfigError if an hparams string is invalid or two runs would share
  a run directory.
  """
  runs = []
  seen = {}
  for setting, fragment in config.settings.items():
    for part in (config.hparams, fragment):
      for item in part.split(','):
        name = item.split('=', 1)[0].strip()
        if name in _SWEPT_HPARAMS:
          raise ConfigError(
              'config %s: setting %r sets %s, which the sweep sets per run; '
              'use "models", "learning_rates" or "trials" instead'
              % (config.path, setting, name))
    for model in config.models:
      for rate in config.learning_rates:
        for trial in config.trials:
          text = ','.join(p for p in (
              config.hparams, fragment, 'model=%s' % model,
              'learning_rate=%r' % rate, 'trial=%d' % trial) if p)
          try:
            name = parse_hparams(text).run_name()
          except HParamsError as e:
            raise ConfigError('config %s: setting %r, model %s: %s'
                              % (config.path, setting, model, e)) from None
          if name in seen:
            raise ConfigError('config %s: settings %r and %r give the same '
                              'runs; make them differ' %
                              (config.path, seen[name], setting))
          seen[name] = setting
          runs.append(Run(setting, model, rate, trial, text, name,
                          trial if config.seed_from_trial else None))
  return runs


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


def run_command(run, config, working_dir, max_steps, threads, data_flags):
  """The argv of one run: [python, rebar_train.py, flags...]."""
  argv = [sys.executable, train_script(), '--hparams=' + run.hparams,
          '--working_dir=' + working_dir, '--max_steps=%d' % max_steps,
          '--eval_freq=%d' % config.eval_freq]
  if run.seed is not None:
    argv.append('--seed=%d' % run.seed)
  for flag, value in config.flags.items():
    if isinstance(value, bool):
      argv.append('--%s=%s' % (flag, 'true' if value else 'false'))
    else:
      argv.append('--%s=%s' % (flag, value))
  if threads:
    argv.append('--threads=%d' % threads)
  for flag in DATA_FLAGS:
    if data_flags.get(flag) is not None:
      argv.append('--%s=%s' % (flag, data_flags[flag]))
  return argv


def finished_step(run_dir):
  """The step in `finished.json`, or None if the run has not finished."""
  try:
    with open(os.path.join(run_dir, 'finished.json')) as f:
      return int(json.load(f)['step'])
  except (OSError, ValueError, KeyError, TypeError):
    return None


def is_finished(run_dir, max_steps):
  """True if the run reached `max_steps` (it may have been run further)."""
  step = finished_step(run_dir)
  return step is not None and step >= max_steps


def cpu_count():
  """Cores this process may use (the affinity mask where there is one)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def fair_threads(workers, cores=None):
  """TensorFlow threads per run so that `workers` runs share the cores."""
  return max(1, (cores or cpu_count()) // max(1, workers))


def log_tail(path, offset=0, lines=LOG_TAIL_LINES):
  """The last `lines` lines of `path` written after byte `offset`."""
  try:
    with open(path, 'rb') as f:
      f.seek(offset)
      text = f.read().decode('utf-8', 'replace')
  except OSError:
    return []
  return text.splitlines()[-lines:]


def _now():
  return datetime.datetime.now().astimezone().isoformat(timespec='seconds')


class StatusFile:
  """`working_dir/sweep_status.json`, rewritten atomically on every change.

  Holds one entry per run directory name. Entries of runs that are not in
  this sweep (another config sharing the working dir) are kept as they were.
  """

  def __init__(self, working_dir, config):
    self.path = os.path.join(working_dir, STATUS_FILE)
    self.runs = {}
    try:
      with open(self.path) as f:
        self.runs = json.load(f).get('runs', {})
    except FileNotFoundError:
      pass
    except (OSError, ValueError, AttributeError):
      # A damaged status file only loses the history of other sweeps.
      self.runs = {}
    self.sweep = {'config': str(config.path), 'name': config.name,
                  'started': _now(), 'ended': None, 'counts': {}}
    self.names = []

  def update(self, name, **fields):
    if name not in self.names:
      self.names.append(name)
      self.runs[name] = {}
    self.runs[name].update(fields)

  def write(self):
    counts = collections.Counter(self.runs[n]['status'] for n in self.names)
    self.sweep['counts'] = dict(sorted(counts.items()))
    content = {'last_sweep': self.sweep, 'runs': self.runs}
    tmp = self.path + '.tmp'
    with open(tmp, 'w') as f:
      json.dump(content, f, indent=2)
      f.write('\n')
    os.replace(tmp, self.path)


# How a run that a stop signal ended exits: 128 + the signal number when it
# saved a checkpoint (rebar_train), minus the number when it was killed.
_STOPPED_CODES = frozenset(
    code for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for code in (128 + sig, -sig))


def _raise_interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt


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
  try:
    os.makedirs(working_dir, exist_ok=True)
    status = StatusFile(working_dir, config)
    status.write()
  except OSError as e:
    raise SweepError('cannot write to the working dir %s (%s); pass a '
                     'writable --working_dir' % (working_dir,
                                                 e.strerror or e)) from None
  runs = expand_runs(config)
  todo = collections.deque()
  for run in runs:
    fields = dict(setting=run.setting, model=run.model,
                  learning_rate=run.learning_rate, trial=run.trial,
                  hparams=run.hparams, config=str(config.path),
                  command=shlex.join(run_command(
                      run, config, working_dir, max_steps, threads,
                      data_flags)),
                  returncode=None, log_tail=[])
    if is_finished(run.run_dir(working_dir), max_steps):
      status.update(run.name, status='skipped', **fields,
                    step=finished_step(run.run_dir(working_dir)))
    else:
      status.update(run.name, status='pending', **fields)
      todo.append(run)
  status.write()
  out('%d runs: %d already finished, %d to run, %d at a time with %d '
      'thread(s) each' % (len(runs), len(runs) - len(todo), len(todo),
                          workers, threads))
  _prefetch_data(todo, data_flags, out)

  running = {}  # Popen -> (run, log file, log offset, start time)
  started = 0
  previous_handlers = {sig: signal.signal(sig, _raise_interrupt)
                       for sig in (signal.SIGTERM, signal.SIGHUP)}
  try:
    while todo or running:
      while todo and len(running) < workers:
        run = todo.popleft()
        started += 1
        running[_start(run, config, working_dir, max_steps, threads,
                       data_flags, status)] = run
        out('[%d/%d] started %s %s lr=%g trial=%d'
            % (started, started + len(todo), run.setting, run.model,
               run.learning_rate, run.trial))
      time.sleep(poll_s)
      for process in [p for p in running if p.poll() is not None]:
        run = running.pop(process)
        _finish(process, run, working_dir, max_steps, status, out)
  except KeyboardInterrupt:
    # Runs are in sessions of their own (so that a terminal's Ctrl-C reaches
    # only the sweep): give each one interrupt, then let it save.
    for process in running:
      if process.poll() is None:
        process.send_signal(signal.SIGINT)
    for process, run in running.items():
      try:
        process.wait(timeout=120)
      except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
      _finish(process, run, working_dir, max_steps, status, out,
              interrupted=True)
    status.sweep['ended'] = _now()
    status.sweep['interrupted'] = True
    status.write()
    raise
  finally:
    for sig, handler in previous_handlers.items():
      signal.signal(sig, handler)
  status.sweep['ended'] = _now()
  status.write()
  return {name: status.runs[name] for name in status.names}


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
  for task, dynamic_b in sorted({(parse_hparams(r.hparams).task,
                                  parse_hparams(r.hparams).dynamic_b)
                                 for r in runs}):
    try:
      data.ensure_data(task, dynamic_b, data_dir, urls, download=True,
                       progress=False)
    except (data.DataError, OSError) as e:
      out('warning: data for task=%s not ready (%s); its runs will fail'
          % (task, e))


def _start(run, config, working_dir, max_steps, threads, data_flags, status):
  run_dir = run.run_dir(working_dir)
  os.makedirs(run_dir, exist_ok=True)
  log_path = os.path.join(run_dir, LOG_FILE)
  argv = run_command(run, config, working_dir, max_steps, threads, data_flags)
  log = open(log_path, 'ab')
  offset = log.tell()
  log.write(('==== %s sweep attempt: %s\n' % (_now(), shlex.join(argv)))
            .encode())
  log.flush()
  process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL,
                             start_new_session=True)
  log.close()  # the child holds its own descriptor
  process.log_path, process.log_offset = log_path, offset
  process.start_time = time.time()
  status.update(run.name, status='running', started=_now(), ended=None,
                command=shlex.join(argv), log=log_path, returncode=None,
                log_tail=[])
  status.write()
  return process


def _finish(process, run, working_dir, max_steps, status, out,
            interrupted=False):
  run_dir = run.run_dir(working_dir)
  rc = process.returncode
  wall = time.time() - process.start_time
  step = finished_step(run_dir)
  tail = log_tail(process.log_path, process.log_offset)
  if rc == 0 and step is not None and step >= max_steps:
    state, tail = 'finished', []
  elif interrupted or rc in _STOPPED_CODES:
    state = 'interrupted'
  else:
    state = 'failed'
    if rc == 0:  # exited cleanly yet short of max_steps: say so
      tail.append('rebar.sweep: exited 0 but finished.json does not show '
                  'step %d' % max_steps)
  status.update(run.name, status=state, returncode=rc, ended=_now(),
                wall_s=round(wall, 1), step=step, log_tail=tail)
  status.write()
  last = next((l for l in reversed(tail) if l.strip()), '')
  out('%s %s %s lr=%g trial=%d (exit %s, %.0f s)%s'
      % (state, run.setting, run.model, run.learning_rate, run.trial, rc,
         wall, ': ' + last if state == 'failed' else ''))


def print_commands(config, working_dir, max_steps=None, threads=0,
                   data_flags=None, out=print):
  """Prints one shell line per run (every run: finished ones exit at once)."""
  working_dir = os.path.abspath(working_dir)
  for run in expand_runs(config):
    out(shlex.join(run_command(run, config, working_dir,
                               max_steps or config.max_steps, threads,
                               dict(data_flags or {}))))


def _bool_text(text):
  if text.lower() in ('true', '1', 'yes'):
    return 'true'
  if text.lower() in ('false', '0', 'no'):
    return 'false'
  raise argparse.ArgumentTypeError('takes true or false, got %r' % text)


def _positive(text):
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value <= 0:
    raise argparse.ArgumentTypeError('takes a positive int, got %r' % text)
  return value


def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog='python -m rebar.sweep',
      description='Runs (or prints the commands of) every run of a config: '
                  'settings x models x learning rates x trials.')
  parser.add_argument('config', help='the config JSON, e.g. '
                      'configs/generative_mnist.json')
  parser.add_argument('--working_dir', required=True,
                      help='where the run directories and sweep_status.json '
                      'go (shared storage for --print_commands)')
  parser.add_argument('--workers', type=_positive, default=1,
                      help='runs at once (default 1)')
  parser.add_argument('--threads', type=int, default=0,
                      help='TensorFlow threads per run (default: cores // '
                      'workers; left out of --print_commands lines)')
  parser.add_argument('--max_steps', type=_positive, default=None,
                      help='override the config\'s max_steps, e.g. for a '
                      'quick try')
  parser.add_argument('--print_commands', action='store_true',
                      help='print one shell line per run instead of running')
  parser.add_argument('--data_dir', default=None,
                      help='passed to every run (default: rebar_train\'s)')
  parser.add_argument('--download', type=_bool_text, default=None,
                      help='passed to every run; false: use only data '
                      'already in --data_dir')
  for flag in ('mnist_binarized_url', 'mnist_url', 'omniglot_url'):
    parser.add_argument('--' + flag, default=None,
                        help='passed to every run (see rebar_train)')
  return parser.parse_args(argv)


def _fail(message, code=2):
  sys.stderr.write('rebar.sweep: error: %s\n' % message)
  sys.exit(code)


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    config = load_config(args.config)
  except ConfigError as e:
    _fail(str(e))
  if args.threads < 0:
    _fail('--threads must be 0 (fair share) or positive, got %d'
          % args.threads)
  data_flags = {flag: getattr(args, flag) for flag in DATA_FLAGS}
  if data_flags['data_dir']:
    data_flags['data_dir'] = os.path.abspath(
        os.path.expanduser(data_flags['data_dir']))
  try:
    if args.print_commands:
      print_commands(config, args.working_dir, args.max_steps, args.threads,
                     data_flags)
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
