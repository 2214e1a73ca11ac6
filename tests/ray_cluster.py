r"""A two-node Ray cluster on loopback, a sweep through it, and a kill.

Run by ray_engine_test inside a network and PID namespace of its own
(`unshare -n -p -f --mount-proc`): every Ray node listens on 127.0.0.1, and
when this script ends, the kernel ends every process it started.

  python tests/ray_cluster.py SWEEP_FILE WORKDIR KILL_RUN ASHA_SWEEP OUT_JSON

1. Starts a head node and a second node, one CPU each (`ray start`), with
   token authentication and a token of their own (a fresh HOME).
2. Runs the sweep with --engine=ray. Once run KILL_RUN has its first
   checkpoint, freezes its main.py (SIGSTOP, so that it cannot finish in the
   meantime) and SIGKILLs the Ray worker process that runs it.
3. Relaunches the finished sweep.
4. Runs ASHA_SWEEP with ASHA, one run at a time so that its decisions do
   not depend on which run reaches a rung first; relaunches it.
5. Stops the cluster, and writes what happened to OUT_JSON.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
PORT = '6390'
WAIT_S = 400  # For each sweep launch (slow beside other tests); the test's
# timeout is above all four.


def ray(*args):
  cli = pathlib.Path(sys.executable).parent / 'ray'
  return subprocess.run([str(cli), *args], capture_output=True, text=True,
                        timeout=120, check=False)


def wait_for_nodes(count):
  deadline = time.time() + 60
  while True:
    status = ray('status', f'--address=127.0.0.1:{PORT}').stdout
    if status.count(' node_') >= count or time.time() > deadline:
      return status
    time.sleep(1)


def sweep(sweep_file, workdir, log, *extra):
  return subprocess.Popen(
      [sys.executable, '-m', 'bn_study.sweep', f'--sweep={sweep_file}',
       f'--workdir={workdir}', '--engine=ray',
       f'--ray_address=127.0.0.1:{PORT}', '--resources_per_run=cpu=1',
       '--max_failures=2', *extra], cwd=ROOT, stdout=log,
      stderr=subprocess.STDOUT)


def kill_worker(run_dir, proc):
  """Once `run_dir` has a checkpoint: the attempt it killed, as a dict."""
  deadline = time.time() + WAIT_S
  while time.time() < deadline and proc.poll() is None:
    ckpts = run_dir / 'checkpoints'
    steps = sorted(int(p.name) for p in ckpts.iterdir()
                   if p.name.isdigit()) if ckpts.is_dir() else []
    if steps:
      attempt = json.loads((run_dir / 'ray_attempts.json').read_text())[-1]
      os.kill(attempt['main_pid'], signal.SIGSTOP)
      # What the frozen run has written: if its last checkpoint were there,
      # the kill would not be mid-run.
      steps = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
      os.kill(attempt['worker_pid'], signal.SIGKILL)
      return {**attempt, 'checkpoints_at_kill': steps}
    time.sleep(0.01)
  return None


def main():
  sweep_file, workdir, kill_run, asha_sweep, out = sys.argv[1:]
  temp = tempfile.mkdtemp(prefix='bnray', dir='/tmp')  # Short: socket paths.
  os.environ.update(HOME=os.path.join(temp, 'home'), RAY_AUTH_MODE='token',
                    RAY_USAGE_STATS_ENABLED='0')
  result = {'seconds': {}}
  begin = time.time()

  def mark(phase):
    result['seconds'][phase] = round(time.time() - begin, 1)

  try:
    ray('get-auth-token', '--generate')
    head = ray('start', '--head', '--node-ip-address=127.0.0.1',
               f'--port={PORT}', '--num-cpus=1', '--include-dashboard=false',
               '--disable-usage-stats', f'--temp-dir={temp}',
               '--object-store-memory=100000000')
    node = ray('start', f'--address=127.0.0.1:{PORT}',
               '--node-ip-address=127.0.0.1', '--num-cpus=1',
               f'--temp-dir={temp}', '--object-store-memory=100000000')
    result['start'] = [head.returncode, node.returncode,
                       head.stderr[-2000:] + node.stderr[-2000:]]
    result['status'] = wait_for_nodes(2)
    mark('cluster up')
    logs = [pathlib.Path(workdir).parent / f'sweep_{i}.log'
            for i in range(1, 5)]
    with open(logs[0], 'wb') as log:
      proc = sweep(sweep_file, workdir, log)
      result['killed'] = kill_worker(pathlib.Path(workdir) / kill_run, proc)
      result['first_exit'] = proc.wait(timeout=WAIT_S)
    mark('sweep with a kill')
    with open(logs[1], 'wb') as log:
      result['second_exit'] = sweep(sweep_file, workdir, log).wait(
          timeout=WAIT_S)
    mark('relaunch')
    asha = ['--scheduler=asha', '--metric=eval/loss', '--grace_epochs=1',
            '--reduction_factor=2', '--max_concurrent_runs=1']
    asha_dir = pathlib.Path(workdir).parent / 'asha'
    for log_file in logs[2:]:
      with open(log_file, 'wb') as log:
        result.setdefault('asha_exits', []).append(
            sweep(asha_sweep, asha_dir, log, *asha).wait(timeout=WAIT_S))
      mark(f'asha {log_file.name}')
    result['outputs'] = [p.read_text() for p in logs]
  finally:
    ray('stop', '--force')
    pathlib.Path(out).write_text(json.dumps(result, indent=2))


if __name__ == '__main__':
  main()
