"""The local engine of sweeps: each run a `python main.py` subprocess on this
machine, `parallel` of them at once, each writing its own train.log."""

import concurrent.futures
import time
from typing import Dict, Sequence

from bn_study.studies import jobs as jobs_lib


def run_one(job: jobs_lib.Job) -> str:
  """Runs `job` to its end: 'done' or 'failed' (printed, with the log's end)."""
  start = time.time()
  log = jobs_lib.RunLog(job.workdir, job.argv)
  try:
    code = jobs_lib.launch(job, log).wait()
  finally:
    log.close()
  if code == 0:
    print(f'done    {job.name} ({time.time() - start:.0f} s)', flush=True)
    return 'done'
  print(jobs_lib.failure(job.name, f'exit {code}', job.workdir), flush=True)
  return 'failed'


def run(jobs: Sequence[jobs_lib.Job], parallel: int = 1) -> Dict[str, str]:
  """Runs `jobs`, `parallel` at once; {name: 'done'|'failed'}."""
  # Threads suffice: each only waits on its subprocess.
  with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
    return dict(zip([j.name for j in jobs], pool.map(run_one, jobs)))
