"""The processes of a sweep: started, watched, stopped and recorded.

`run_all` runs the commands of a sweep's runs (rebar_train, rebar.rl)
`workers` at a time, each in a session
of its own with its output appended to `<run dir>/log.txt`, and keeps
`working_dir/sweep_status.json` (`StatusFile`) up to date as each starts
and ends. A stop signal to the sweep (SIGINT, SIGTERM, SIGHUP) is passed on
as one SIGINT to each running run, which saves a checkpoint before it exits.
"""

import collections
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import time

from rebar.progress import Progress

STATUS_FILE = 'sweep_status.json'
LOG_FILE = 'log.txt'  # in the run directory: stdout and stderr of each attempt
LOG_TAIL_LINES = 40
# How a run that a stop signal ended exits: 128 + the signal number when it
# saved a checkpoint (rebar_train), minus the number when it was killed.
_STOPPED_CODES = frozenset(
    code for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for code in (128 + sig, -sig))


def finished_step(run_dir):
  """The step in `finished.json`, or None if the run has not finished."""
  try:
    with open(os.path.join(run_dir, 'finished.json')) as f:
      return int(json.load(f)['step'])
  except (OSError, ValueError, KeyError, TypeError):
    return None


def stopped_when_solved(run_dir):
  """True if `finished.json` says the run ended because it solved its task
  (a rebar.rl run with --stop_when_solved), short of its episode budget."""
  try:
    with open(os.path.join(run_dir, 'finished.json')) as f:
      return json.load(f).get('stopped_when_solved') is True
  except (OSError, ValueError, AttributeError):
    return False


def is_finished(run_dir, max_steps):
  """True if the run reached `max_steps` (it may have been run further), or
  stopped when it solved its task: started again, it would stop at once."""
  step = finished_step(run_dir)
  return step is not None and (step >= max_steps or
                               stopped_when_solved(run_dir))


def recorded_step(run_dir):
  """The step of the run's last metrics.jsonl record (0 if none): how far
  the run has come, read from the run's own records."""
  try:
    with open(os.path.join(run_dir, 'metrics.jsonl'), 'rb') as f:
      f.seek(0, os.SEEK_END)
      f.seek(max(0, f.tell() - 4096))
      lines = f.read().decode('utf-8', 'replace').splitlines()
  except OSError:
    return 0
  for line in reversed(lines):
    try:
      return int(json.loads(line)['step'])
    except (ValueError, KeyError, TypeError):
      continue  # a partial first line of the tail, or a damaged one
  return 0


class SweepProgress:
  """The sweep's progress line: runs finished of total and the steps done
  over all runs, with the rate and ETA of the runs' own progress."""

  def __init__(self, runs, working_dir, max_steps, write, **kwargs):
    self.run_dirs = [run.run_dir(working_dir) for run in runs]
    self.max_steps = max_steps
    self.progress = Progress('sweep', len(runs) * max_steps,
                             done=self.steps_done(), write=write, **kwargs)

  def steps_done(self):
    # A run that stopped when solved has done all it will: count its
    # unreached steps as done, so that the ETA does not wait for them.
    return sum(self.max_steps if stopped_when_solved(d)
               else min(recorded_step(d), self.max_steps)
               for d in self.run_dirs)

  def update(self, n_finished, n_running, force=False):
    if not force and not self.progress.due():
      return
    self.progress.update(
        self.steps_done(), '%d of %d runs finished, %d running'
        % (n_finished, len(self.run_dirs), n_running), force=True)


def _stderr_line(line):
  sys.stderr.write(line + '\n')
  sys.stderr.flush()


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


def _raise_interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt


def run_all(todo, working_dir, max_steps, workers, status, out, poll_s,
            progress_out=_stderr_line):
  """Runs the (run, argv) pairs of deque `todo`, `workers` at a time.

  Each entry of `status` follows its run; a run counts as finished when it
  exits 0 with a `finished.json` at `max_steps` or beyond, or one that
  says it stopped when solved (`is_finished`). A progress line
  (SweepProgress) goes to `progress_out` every 30 s and as each run ends.

  Raises:
    KeyboardInterrupt: after the running runs saved checkpoints and the
      status file says which were interrupted.
  """
  running = {}  # Popen -> run
  started = finished = 0
  progress = SweepProgress([run for run, _ in todo], working_dir, max_steps,
                           progress_out)
  previous_handlers = {sig: signal.signal(sig, _raise_interrupt)
                       for sig in (signal.SIGTERM, signal.SIGHUP)}
  try:
    while todo or running:
      while todo and len(running) < workers:
        run, argv = todo.popleft()
        started += 1
        running[_start(run, argv, working_dir, status)] = run
        out('[%d/%d] started %s %s lr=%g trial=%d'
            % (started, started + len(todo), run.setting, run.model,
               run.learning_rate, run.trial))
      time.sleep(poll_s)
      ended = [p for p in running if p.poll() is not None]
      for process in ended:
        run = running.pop(process)
        finished += _finish(process, run, working_dir, max_steps, status,
                            out) == 'finished'
      progress.update(finished, len(running), force=bool(ended))
  except KeyboardInterrupt:
    _stop(running, working_dir, max_steps, status, out)
    raise
  finally:
    for sig, handler in previous_handlers.items():
      signal.signal(sig, handler)
  status.sweep['ended'] = _now()
  status.write()


def _stop(running, working_dir, max_steps, status, out):
  """Stops the running runs, each with a checkpoint, and records them."""
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


def _start(run, argv, working_dir, status):
  run_dir = run.run_dir(working_dir)
  os.makedirs(run_dir, exist_ok=True)
  log_path = os.path.join(run_dir, LOG_FILE)
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
  if rc == 0 and is_finished(run_dir, max_steps):
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
  return state
