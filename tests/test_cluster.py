"""The cluster path, run for real (issue 14, part 8).

The lines of `python -m rebar.sweep CONFIG --print_commands` are run the two
ways docs/reproduction.md shows: by GNU parallel, and as a Slurm array on a single-node
Slurm that the test starts on localhost (munged, slurmctld and slurmd, as
root, with a slurm.conf in a temporary folder). In each, one run is sent
SIGTERM half way (once its first epoch's evaluation is recorded; it stops
at its next safe point) and run again: by `parallel --resume-failed`, and by `scontrol
requeue` of the array task, which `scancel --batch --signal=TERM` stopped the
way `sbatch --signal=B:TERM@120` stops a task at its time limit. The report
of those runs must equal, number for number, the report of a local sweep of
the same config in another working dir.

The config is configs/smoke/smoke.json made to have a run stopped half way:
batch_size=250 (200 steps per epoch), 500 steps, one learning rate. On an
idle two-core machine: the local sweep 20 s, each test 30-40 s.

Checks marked "contract" in a failure message test what rebar_train promises
on a stop signal: it saves a checkpoint and exits 128 + the signal number
(143 for SIGTERM), and the resumed run records what an uninterrupted run
records (metrics.jsonl equal record by record but for `wall_s`). The other
checks do not depend on how a run stops.

Skipped, with the reason, where GNU parallel or Slurm is not installed
(`.ci/run` installs both) or Slurm cannot be started. Deselect the Slurm
test with `-m "not slurm"`.
"""

import csv
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from rebar import sweep

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE = REPO / 'configs' / 'smoke' / 'smoke.json'

BATCH_SIZE = 250
EPOCH_STEPS = 50000 // BATCH_SIZE  # MNIST's 50,000 training images
# Records at steps 200, 400, ..., 1000; the stop falls between. The seconds
# of training and evaluation left after step 200 give a loaded machine time to
# stop the run before it finishes (with 500 steps one run in three finished
# first on a busy machine).
MAX_STEPS = 1000
WALL_FIELDS = ('wall_s',)  # record fields that may differ between runs
STOP_EXIT = 128 + signal.SIGTERM  # what rebar_train promises on SIGTERM
# The batch script of docs/reproduction.md's `sbatch --array` line. `exec` makes the
# run the batch step's own process, so that a signal to the batch shell
# (`--signal=B:...`, `scancel --batch`) reaches the run itself.
SLURM_WRAP = 'eval "exec $(sed -n "${SLURM_ARRAY_TASK_ID}p" runs.txt)"'
RUN_TIMEOUT_S = 240  # for any wait on runs; a sweep here takes about 30 s


# ------------------------------------------------------------ helpers

class Checks:
  """Collects failed checks, so that one failure does not hide the others;
  `contract` ones depend on rebar_train's stop/resume promise."""

  def __init__(self):
    self.failed = []

  def expect(self, ok, message, contract=False):
    if not ok:
      self.failed.append(('contract: ' if contract else '') + message)
    return ok

  def assert_all(self, diagnostics=''):
    assert not self.failed, '\n'.join(
        ['%d check(s) failed:' % len(self.failed)] +
        ['  - ' + m for m in self.failed] + ([diagnostics] if diagnostics
                                              else []))


def write_config(path):
  """configs/smoke/smoke.json with a run long enough to stop half way."""
  raw = json.loads(SMOKE.read_text())
  raw['name'] = 'cluster'
  raw['description'] = ('configs/smoke/smoke.json with batch_size=%d, %d '
                        'steps and one learning rate (tests/test_cluster.py)'
                        % (BATCH_SIZE, MAX_STEPS))
  raw['hparams'] = ','.join(p for p in (raw.get('hparams', ''),
                                        'batch_size=%d' % BATCH_SIZE) if p)
  raw['learning_rates'] = [0.001]
  raw['max_steps'] = MAX_STEPS
  if raw.get('published'):
    raw['published']['file'] = str(
        (SMOKE.parent / raw['published']['file']).resolve())
  path.write_text(json.dumps(raw, indent=2))
  return sweep.load_config(path)


def rebar_cli(module, *args):
  return subprocess.run([sys.executable, '-m', module] + [str(a) for a in args],
                        cwd=REPO, capture_output=True, text=True, check=False,
                        timeout=RUN_TIMEOUT_S * 2)


def data_flags(data_dir):
  return ['--data_dir=%s' % data_dir, '--download=false']


def write_commands(config, working_dir, data_dir, path):
  """`--print_commands` of `config` into `path`; returns its lines."""
  result = rebar_cli('rebar.sweep', config.path, '--working_dir=%s'
                     % working_dir, '--threads=1', '--print_commands',
                     *data_flags(data_dir))
  assert result.returncode == 0, result.stderr
  path.write_text(result.stdout)
  lines = result.stdout.splitlines()
  assert len(lines) == len(sweep.expand_runs(config))
  return lines


def write_report(config, working_dir, out):
  result = rebar_cli('rebar.report', config.path, '--working_dir=%s'
                     % working_dir, '--out=%s' % out, '--no_figures')
  assert result.returncode == 0, result.stdout + result.stderr
  return out


def report_content(out):
  """(report.csv rows, report.md lines but the one naming paths and time)."""
  with open(out / 'report.csv') as f:
    rows = list(csv.DictReader(f))
  lines = [l for l in (out / 'report.md').read_text().splitlines()
           if not l.startswith('Config `')]
  return rows, lines


def check_reports_equal(checks, ours, local):
  rows, lines = report_content(ours)
  local_rows, local_lines = report_content(local)
  checks.expect(all(r['steps_max'] == str(MAX_STEPS) and
                    r['trials_with_data'] == '1' for r in local_rows),
                'the local sweep\'s report lacks runs: %s' % local_rows)
  for row, local_row in zip(rows, local_rows):
    checks.expect(row == local_row, 'report.csv row differs from the local '
                  'sweep\'s:\n    ours  %s\n    local %s' % (row, local_row))
  checks.expect(len(rows) == len(local_rows), 'report.csv has %d rows, the '
                'local sweep\'s %d' % (len(rows), len(local_rows)))
  checks.expect(lines == local_lines, 'report.md differs from the local '
                'sweep\'s (but for its "Config ..." line):\n%s\n---- local:\n%s'
                % ('\n'.join(lines), '\n'.join(local_lines)))


def records(run_dir):
  """metrics.jsonl without the wall-clock fields; a partly written last
  line is left out."""
  result = []
  try:
    with open(run_dir / 'metrics.jsonl') as f:
      for line in f:
        try:
          record = json.loads(line)
        except ValueError:
          continue
        result.append({k: v for k, v in record.items()
                       if k not in WALL_FIELDS})
  except FileNotFoundError:
    pass
  return result


def check_records_equal(checks, run, ours, local, contract):
  mine = records(pathlib.Path(run.run_dir(str(ours))))
  theirs = records(pathlib.Path(run.run_dir(str(local))))
  if mine == theirs:
    return
  first = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b),
               min(len(mine), len(theirs)))
  checks.expect(False, '%s%s: metrics.jsonl differs from the local sweep\'s '
                '(but for %s) from record %d on; (kind, step) of ours %s, of '
                'the local run %s; ours there %s, local %s' % (
                    run.model, ' (stopped and resumed)' if contract else '',
                    ', '.join(WALL_FIELDS), first,
                    [(r['kind'], r['step']) for r in mine],
                    [(r['kind'], r['step']) for r in theirs],
                    mine[first:first + 1], theirs[first:first + 1]),
                contract=contract)


def checkpoint_steps(run_dir):
  try:
    names = os.listdir(run_dir / 'checkpoints')
  except FileNotFoundError:
    return []
  return sorted(int(m.group(1)) for m in
                (re.fullmatch(r'ckpt-(\d+)\.index', n) for n in names) if m)


def check_stopped(checks, run_dir):
  """What a run stopped half way has left: a checkpoint at or after its
  first epoch's evaluation (the next safe point: right there or between two
  blocks of steps later), no finished.json."""
  steps = checkpoint_steps(run_dir)
  checks.expect(any(EPOCH_STEPS <= s < MAX_STEPS for s in steps),
                'the run stopped by SIGTERM after its evaluation at step %d '
                'saved no checkpoint from step %d to %d (checkpoints at %s)'
                % (EPOCH_STEPS, EPOCH_STEPS, MAX_STEPS - 1, steps or 'none'),
                contract=True)
  checks.expect(not (run_dir / 'finished.json').exists(),
                'the run stopped half way wrote finished.json')


def finished_step(run_dir):
  """The step in the run's finished.json, or None."""
  try:
    with open(os.path.join(run_dir, 'finished.json')) as f:
      return json.load(f)['step']
  except (OSError, ValueError, KeyError, TypeError):
    return None


def check_finished(checks, config, working_dir):
  for run in sweep.expand_runs(config):
    checks.expect(
        finished_step(run.run_dir(str(working_dir))) == MAX_STEPS,
        '%s did not finish: finished.json shows %s' % (
            run.model, finished_step(run.run_dir(str(working_dir)))))


def process_argv(pid):
  try:
    with open('/proc/%s/cmdline' % pid, 'rb') as f:
      raw = f.read()
  except OSError:
    return []
  return [a.decode('utf-8', 'replace') for a in raw.split(b'\0')[:-1]]


def alive(pid):
  """True unless the process is gone or a zombie."""
  try:
    with open('/proc/%d/stat' % pid) as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except (OSError, IndexError):
    return False


def train_pids(working_dir, hparams=None):
  """PIDs of the rebar_train processes of `working_dir` (and `hparams`),
  found by their argv: the run itself, not a shell around it."""
  pids = []
  for pid in os.listdir('/proc'):
    if not pid.isdigit() or int(pid) == os.getpid():
      continue
    argv = process_argv(pid)
    if (len(argv) > 1 and argv[1].endswith('rebar_train.py') and
        '--working_dir=%s' % working_dir in argv and
        (hparams is None or '--hparams=' + hparams in argv) and
        alive(int(pid))):
      pids.append(int(pid))
  return pids


def kill_leftovers(working_dir):
  """Kills, by PID, runs of `working_dir` that a failed test left going."""
  for pid in train_pids(working_dir):
    try:
      os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
      pass


def stop_half_way(run, working_dir, send, ended, diagnostics):
  """Waits for `run` to record its first epoch's evaluation, then stops it
  with `send(pid)` and waits for the process to end. `ended()`: whether
  what runs the line (GNU parallel, the Slurm task) has ended."""
  run_dir = pathlib.Path(run.run_dir(str(working_dir)))
  deadline = time.time() + RUN_TIMEOUT_S
  while not any(r['kind'] == 'test' and r['step'] == EPOCH_STEPS
                for r in records(run_dir)):
    if finished_step(str(run_dir)) is not None:
      pytest.fail('%s finished before it could be stopped half way; make '
                  'MAX_STEPS larger%s' % (run.model, diagnostics()))
    if ended() and not train_pids(working_dir, run.hparams):
      pytest.fail('%s ended before its evaluation at step %d%s'
                  % (run.model, EPOCH_STEPS, diagnostics()))
    if time.time() > deadline:
      pytest.fail('%s recorded no evaluation at step %d within %d s%s'
                  % (run.model, EPOCH_STEPS, RUN_TIMEOUT_S, diagnostics()))
    time.sleep(0.05)
  pids = train_pids(working_dir, run.hparams)
  if len(pids) != 1:
    pytest.fail('expected one rebar_train process of %s, found %s%s'
                % (run.model, pids, diagnostics()))
  send(pids[0])
  deadline = time.time() + RUN_TIMEOUT_S
  while alive(pids[0]):
    if time.time() > deadline:
      pytest.fail('%s (pid %d) still runs %d s after SIGTERM%s'
                  % (run.model, pids[0], RUN_TIMEOUT_S, diagnostics()))
    time.sleep(0.1)
  return pids[0]


# TensorFlow's start-up chatter, left out of the log tails in messages.
NOISE = re.compile(r'[IWE]0000 00:00:|WARNING: All log messages before|To '
                   r'enable the following instructions|Instructions for '
                   r'updating|Use `tf.train.CheckpointManager`')


def tail(path, lines=15):
  try:
    text = pathlib.Path(path).read_text(errors='replace')
  except OSError as e:
    return '(%s)' % e
  return '\n'.join([l for l in text.splitlines()
                    if not NOISE.match(l)][-lines:])


# ------------------------------------------------------------ fixtures

@pytest.fixture(scope='module')
def cluster_config(tmp_path_factory):
  return write_config(tmp_path_factory.mktemp('config') / 'cluster.json')


@pytest.fixture(scope='module')
def local(cluster_config, mirror_data_dir, tmp_path_factory):
  """The config swept locally (two workers, one thread each) and reported:
  what the cluster runs must reproduce."""
  w = tmp_path_factory.mktemp('local')
  result = rebar_cli('rebar.sweep', cluster_config.path, '--working_dir=%s'
                     % w, '--workers=2', '--threads=1',
                     *data_flags(mirror_data_dir))
  assert result.returncode == 0, result.stdout + result.stderr
  return {'w': w, 'report': write_report(cluster_config, w, w / 'report')}


@pytest.fixture(scope='module')
def gnu_parallel():
  path = shutil.which('parallel')
  if path is None:
    pytest.skip('GNU parallel is not installed (`parallel` is not on PATH; '
                'Debian package "parallel", which .ci/run installs)')
  version = subprocess.run([path, '--version'], capture_output=True,
                           text=True, check=False)
  if 'GNU parallel' not in version.stdout:
    pytest.skip('%s is not GNU parallel (moreutils\' parallel?): `parallel '
                '--version` printed %r' % (path, version.stdout[:80]))
  return path


def stopped_run(config):
  """The run to stop: the slowest (REBAR), so that the stop falls half way."""
  runs = sweep.expand_runs(config)
  return next((r for r in runs if r.model == 'SBNRebar'), runs[-1])


# ------------------------------------------------------------ GNU parallel

def read_joblog(path):
  """GNU parallel's --joblog: one dict per ended attempt, in order."""
  try:
    with open(path) as f:
      return list(csv.DictReader(f, delimiter='\t'))
  except FileNotFoundError:
    return []


def test_gnu_parallel_run_stopped_and_resumed_reports_as_a_local_sweep(
    gnu_parallel, local, cluster_config, mirror_data_dir, tmp_path):
  config = cluster_config
  w = tmp_path / 'runs'
  runs_txt = tmp_path / 'runs.txt'
  write_commands(config, w, mirror_data_dir, runs_txt)
  runs = sweep.expand_runs(config)
  stopped = stopped_run(config)
  seq = str(runs.index(stopped) + 1)
  joblog = tmp_path / 'jobs.log'
  command = [gnu_parallel, '--will-cite', '-j', '2', '--joblog', str(joblog)]
  output = tmp_path / 'parallel.out'

  def diagnostics():
    return '\nparallel output:\n%s\njoblog:\n%s' % (tail(output, 40),
                                                   tail(joblog))

  checks = Checks()
  try:
    with open(runs_txt) as stdin, open(output, 'wb') as out:
      process = subprocess.Popen(command, stdin=stdin, stdout=out,
                                 stderr=subprocess.STDOUT, cwd=tmp_path,
                                 start_new_session=True)
    try:
      stop_half_way(stopped, w, lambda pid: os.kill(pid, signal.SIGTERM),
                    lambda: any(r['Seq'] == seq for r in read_joblog(joblog)),
                    diagnostics)
      process.wait(timeout=RUN_TIMEOUT_S)
    finally:
      if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    first = {row['Seq']: row for row in read_joblog(joblog)}
    checks.expect(set(first) == {str(i + 1) for i in range(len(runs))},
                  'the joblog lacks lines: %s' % first)
    for s, row in first.items():
      if s != seq:
        checks.expect((row['Exitval'], row['Signal']) == ('0', '0'),
                      'line %s failed: %s' % (s, row))
    row = first.get(seq, {})
    checks.expect(
        (row.get('Exitval'), row.get('Signal')) == (str(STOP_EXIT), '0'),
        'on SIGTERM rebar_train should exit %d; GNU parallel recorded exit '
        'value %s, signal %s' % (STOP_EXIT, row.get('Exitval'),
                                 row.get('Signal')), contract=True)
    check_stopped(checks, pathlib.Path(stopped.run_dir(str(w))))

    # README: the same command with --resume-failed runs the failed lines.
    with open(runs_txt) as stdin, open(output, 'ab') as out:
      result = subprocess.run(command + ['--resume-failed'], stdin=stdin,
                              stdout=out, stderr=subprocess.STDOUT,
                              cwd=tmp_path, timeout=RUN_TIMEOUT_S,
                              check=False)
    again = read_joblog(joblog)[len(first):]
    checks.expect([(r['Seq'], r['Exitval'], r['Signal']) for r in again]
                  == [(seq, '0', '0')], '--resume-failed should have run '
                  'line %s again, once, exiting 0; it ran %s (exit %d)'
                  % (seq, again, result.returncode))
  finally:
    kill_leftovers(w)
  check_outcome(checks, config, w, tmp_path, local, runs, stopped,
                diagnostics)


def check_outcome(checks, config, w, tmp_path, local, runs, stopped,
                  diagnostics):
  """Every run finished, the report equals the local sweep's, and each run's
  records equal the local run's; raises with every failed check."""
  check_finished(checks, config, w)
  check_reports_equal(checks, write_report(config, w, tmp_path / 'report'),
                      local['report'])
  for run in runs:
    check_records_equal(checks, run, w, local['w'], run == stopped)
  checks.assert_all(diagnostics())


# ------------------------------------------------------------ Slurm

CRED_EXPIRE_S = 5
SLURM_PROGRAMS = ('munged', 'slurmctld', 'slurmd', 'sbatch', 'squeue',
                  'scontrol', 'scancel', 'sinfo')


def free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  try:
    for s in sockets:
      s.bind(('127.0.0.1', 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


class LocalSlurm:
  """munged, slurmctld and slurmd on localhost, all state in `root`.

  One node, `localhost`, with up to 2 CPUs (one job per CPU). No cgroups
  (this may be a container): processes are tracked by their parent PIDs
  (proctrack/linuxproc) and not confined (task/none). No accounting
  database: jobs are watched with squeue and scontrol.
  """

  def __init__(self, root):
    self.root = root
    self.conf = root / 'slurm.conf'
    self.daemons = []  # (name, Popen, log file)
    self.jobs = []
    self.env = {k: v for k, v in os.environ.items()
                if not k.startswith('SLURM_')}  # e.g. pytest run in a job
    self.env['SLURM_CONF'] = str(self.conf)

  def _start(self, name, argv, log=None):
    with open(self.root / (name + '.out'), 'wb') as out:
      process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=self.env,
                                 cwd=self.root)
    self.daemons.append((name, process, log))

  def diagnostics(self):
    parts = []
    for name, process, log in self.daemons:
      parts.append('%s (%s):\n%s' % (
          name, 'running' if process.poll() is None
          else 'exited %s' % process.returncode,
          tail(log, 10) if log else tail(self.root / (name + '.out'), 10)))
    return '\n'.join(parts)

  def start(self):
    """Starts the daemons; returns None or why the node is not usable."""
    root = self.root
    for d in ('munge', 'state', 'spool', 'log'):
      (root / d).mkdir(mode=0o700)
    key = root / 'munge' / 'munge.key'
    key.write_bytes(os.urandom(128))
    key.chmod(0o600)
    socket_path = root / 'munge' / 'munge.socket'
    if len(str(socket_path)) > 100:
      return 'the munge socket path %s is too long' % socket_path
    self._start('munged', [
        'munged', '--foreground', '--force', '--socket=%s' % socket_path,
        '--key-file=%s' % key, '--log-file=%s' % (root / 'log/munged.log'),
        '--pid-file=%s' % (root / 'munge/munged.pid'),
        '--seed-file=%s' % (root / 'munge/munged.seed')])  # logs to .out
    deadline = time.time() + 20
    while not socket_path.exists():
      if self.daemons[0][1].poll() is not None or time.time() > deadline:
        return 'munged did not start: %s' % tail(root / 'munged.out', 3)
      time.sleep(0.1)

    hardware = subprocess.run(['slurmd', '-C'], capture_output=True,
                              text=True, check=False, env=self.env).stdout
    memory = re.search(r'RealMemory=(\d+)', hardware)
    if not memory:
      return '`slurmd -C` printed no RealMemory: %r' % hardware[:200]
    cpus = min(2, len(os.sched_getaffinity(0)))
    ctld_port, slurmd_port = free_ports(2)
    self.conf.write_text('\n'.join([
        'ClusterName=rebartest',
        'SlurmctldHost=localhost(127.0.0.1)',
        'SlurmctldPort=%d' % ctld_port,
        'SlurmdPort=%d' % slurmd_port,
        'SlurmUser=root',
        'SlurmdUser=root',
        'AuthType=auth/munge',
        'CredType=cred/munge',
        # cred_expire: how long a requeued job waits before it starts
        # again (default 120 s); its credential is revoked until then.
        'AuthInfo=socket=%s,cred_expire=%d' % (socket_path, CRED_EXPIRE_S),
        'StateSaveLocation=%s' % (root / 'state'),
        'SlurmdSpoolDir=%s' % (root / 'spool'),
        'SlurmctldPidFile=%s' % (root / 'slurmctld.pid'),
        'SlurmdPidFile=%s' % (root / 'slurmd.pid'),
        'SlurmctldLogFile=%s' % (root / 'log/slurmctld.log'),
        'SlurmdLogFile=%s' % (root / 'log/slurmd.log'),
        'SlurmctldDebug=info',
        'SlurmdDebug=info',
        'ProctrackType=proctrack/linuxproc',
        'TaskPlugin=task/none',
        'JobAcctGatherType=jobacct_gather/none',
        'AccountingStorageType=accounting_storage/none',
        'JobCompType=jobcomp/none',
        'SwitchType=switch/none',
        'MpiDefault=none',
        'MailProg=/bin/true',
        'SchedulerType=sched/backfill',
        'SchedulerParameters=sched_interval=1,bf_interval=1',
        'SelectType=select/cons_tres',
        'SelectTypeParameters=CR_CPU',  # memory is not a consumable
        'ReturnToService=2',
        'MinJobAge=3600',  # scontrol shows finished jobs for the test
        'KillWait=10',
        'NodeName=localhost NodeAddr=127.0.0.1 CPUs=%d RealMemory=%s '
        'State=UNKNOWN' % (cpus, memory.group(1)),
        'PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE '
        'State=UP', '']))
    self._start('slurmctld', ['slurmctld', '-D', '-f', str(self.conf)],
                root / 'log/slurmctld.log')
    self._start('slurmd', ['slurmd', '-D', '-f', str(self.conf), '-N',
                           'localhost'], root / 'log/slurmd.log')
    deadline = time.time() + 60
    state = ''
    while time.time() < deadline:
      for name, process, log in self.daemons:
        if process.poll() is not None:
          return '%s exited %s; its log ends: %s' % (
              name, process.returncode,
              tail(log, 3) if log and os.path.exists(log)
              else tail(root / (name + '.out'), 3))
      result = self.run(['sinfo', '-h', '-N', '-n', 'localhost', '-o', '%T'],
                        check=False)
      state = result.stdout.strip() or result.stderr.strip()
      if state == 'idle':
        return None
      time.sleep(0.5)
    node = self.run(['scontrol', 'show', 'node', 'localhost'], check=False)
    return 'node localhost not idle after 60 s (sinfo: %r; %s)' % (
        state, ' '.join(re.findall(r'(?:State|Reason)=\S+', node.stdout)))

  def run(self, argv, check=True):
    result = subprocess.run(argv, capture_output=True, text=True,
                            check=False, env=self.env, timeout=60)
    if check and result.returncode:
      pytest.fail('`%s` exited %d: %s\n%s' % (
          ' '.join(argv), result.returncode, result.stderr.strip(),
          self.diagnostics()))
    return result

  def job(self, job_id):
    """scontrol's fields of a job (or array task) as a dict."""
    text = self.run(['scontrol', '-o', 'show', 'job', job_id]).stdout
    return dict(re.findall(r'(\w+)=(\S*)', text))

  def queued(self, job_id):
    """'task STATE' of the array's tasks still queued or running."""
    result = self.run(['squeue', '-h', '-r', '-j', job_id, '-o', '%i %T'],
                      check=False)
    return [line for line in result.stdout.split('\n') if line.strip()]

  def stop(self):
    for job in self.jobs:
      self.run(['scancel', job], check=False)
    deadline = time.time() + 30
    while self.jobs and time.time() < deadline and any(
        self.queued(j) for j in self.jobs):
      time.sleep(0.5)
    for _, process, _ in reversed(self.daemons):
      if process.poll() is None:
        process.terminate()
    for _, process, _ in reversed(self.daemons):
      try:
        process.wait(timeout=15)
      except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope='module')
def slurm(tmp_path_factory):
  """A single-node Slurm on localhost, torn down after the module."""
  if os.geteuid() != 0:
    pytest.skip('the test starts slurmd, which must run as root to start '
                'jobs; the tests run as uid %d' % os.geteuid())
  missing = [p for p in SLURM_PROGRAMS if shutil.which(p) is None]
  if missing:
    pytest.skip('Slurm is not installed: %s not on PATH (Debian packages '
                'slurmctld, slurmd, slurm-client and munge, which .ci/run '
                'installs)' % ', '.join(missing))
  cluster = LocalSlurm(tmp_path_factory.mktemp('slurm'))
  try:
    why = cluster.start()
    if why:
      pytest.skip('Slurm could not be started on this machine: %s' % why)
    yield cluster
  finally:
    cluster.stop()


@pytest.mark.slurm
def test_slurm_array_task_preempted_and_requeued_reports_as_a_local_sweep(
    slurm, local, cluster_config, mirror_data_dir, tmp_path):
  config = cluster_config
  w = tmp_path / 'runs'
  write_commands(config, w, mirror_data_dir, tmp_path / 'runs.txt')
  runs = sweep.expand_runs(config)
  stopped = stopped_run(config)
  # docs/reproduction.md's line, with the task logs in tmp_path.
  job = slurm.run([
      'sbatch', '--parsable', '--array=1-%d' % len(runs), '--requeue',
      '--signal=B:TERM@120', '--open-mode=append',
      '--output=%s/slurm-%%A_%%a.out' % tmp_path, '--chdir=%s' % tmp_path,
      '--wrap=' + SLURM_WRAP]).stdout.strip().split(';')[0]
  slurm.jobs.append(job)
  task = '%s_%d' % (job, runs.index(stopped) + 1)

  def diagnostics():
    logs = ['%s:\n%s' % (p.name, tail(p, 8))
            for p in sorted(tmp_path.glob('slurm-*.out'))]
    return '\nsqueue: %s\n%s\n%s' % (slurm.queued(job), '\n'.join(logs),
                                     slurm.diagnostics())

  checks = Checks()
  try:
    # Pre-empted as at a time limit with --signal=B:TERM: the batch shell
    # alone is signalled; `exec` made it the run.
    stop_half_way(
        stopped, w,
        lambda pid: slurm.run(['scancel', '--batch', '--signal=TERM', task]),
        lambda: slurm.job(task).get('JobState') not in (
            'PENDING', 'CONFIGURING', 'RUNNING'), diagnostics)
    deadline = time.time() + 60
    while any(l.split()[0] == task for l in slurm.queued(job)):
      if time.time() > deadline:
        pytest.fail('task %s still queued 60 s after its run ended%s'
                    % (task, diagnostics()))
      time.sleep(0.2)
    fields = slurm.job(task)
    checks.expect(fields.get('ExitCode') == '%d:0' % STOP_EXIT,
                  'on SIGTERM rebar_train should exit %d; Slurm recorded '
                  'ExitCode=%s JobState=%s (exit status:signal)' % (
                      STOP_EXIT, fields.get('ExitCode'),
                      fields.get('JobState')), contract=True)
    check_stopped(checks, pathlib.Path(stopped.run_dir(str(w))))

    # Eligible again after cred_expire (made 5 s here; 120 s by default).
    # `scontrol update JobId=... StartTime=now` would start it at once, and
    # then slurmd may still hold the credential revoked: "Killing
    # non-startable batch JobId=...: Job credential revoked".
    slurm.run(['scontrol', 'requeue', task])
    deadline = time.time() + RUN_TIMEOUT_S
    while slurm.queued(job):
      if time.time() > deadline:
        pytest.fail('the array is still queued %d s after the requeue%s'
                    % (RUN_TIMEOUT_S, diagnostics()))
      time.sleep(0.5)
    for i in range(len(runs)):
      fields = slurm.job('%s_%d' % (job, i + 1))
      restarts = '1' if '%s_%d' % (job, i + 1) == task else '0'
      checks.expect(
          (fields.get('JobState'), fields.get('ExitCode'),
           fields.get('Restarts')) == ('COMPLETED', '0:0', restarts),
          'task %s_%d: JobState=%s ExitCode=%s Restarts=%s, expected '
          'COMPLETED 0:0 %s' % (job, i + 1, fields.get('JobState'),
                                fields.get('ExitCode'), fields.get('Restarts'),
                                restarts))
  finally:
    kill_leftovers(w)
  check_outcome(checks, config, w, tmp_path, local, runs, stopped,
                diagnostics)
