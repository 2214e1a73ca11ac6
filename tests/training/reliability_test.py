"""Preemption, hard kills, damaged checkpoints and bad input, through main.py
in real subprocesses, compared with an uninterrupted run bit for bit (run
in this process, as the runs that need no signal are, where both are built
alike; where their calls differ, every run in a subprocess compiled as
users compile: helpers.env_with_xla_emitters)."""

import os
import shutil
import signal
import subprocess

import numpy as np
import pytest

from bn_study.training import checkpoints
from bn_study.training import preemption
from tests import helpers
from tests.helpers import ROOT


def _flags(data_dir, *extra):
  # 8 steps per epoch, 24 in all; train/* written every 2 steps, so a stop at
  # an odd step leaves one step's metrics unwritten.
  return [f'--config.dataset={helpers.LEARNABLE}',
          f'--config.data_dir={data_dir}', '--config.log_every_steps=2',
          '--config.num_epochs=3', *extra]


def _command(workdir, data_dir, *extra):
  return helpers.main_command(workdir, *_flags(data_dir, *extra))


def _main(workdir, data_dir, *extra, self_signal=None, xla_emitters=False,
          config='configs/tiny.py'):
  """main.py in a subprocess; `xla_emitters`: compiled as users compile,
  for runs whose calls differ from the run they are compared with
  (helpers.env_with_xla_emitters)."""
  env = helpers.env_with_xla_emitters() if xla_emitters else dict(os.environ)
  env.pop(preemption.SELF_SIGNAL_ENV, None)
  if self_signal:
    env[preemption.SELF_SIGNAL_ENV] = self_signal
  return helpers.run_main(workdir, *_flags(data_dir, *extra), env=env,
                          config=config)


@pytest.fixture(scope='module')
def reference(learnable_data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('reference')
  code, err = helpers.main_here(workdir, *_flags(learnable_data_dir))
  assert code == 0, err[-3000:]
  return workdir, helpers.final_result(workdir)


def _latest(workdir):
  return checkpoints.Checkpoints(str(workdir), read_only=True).latest_step()


def test_sigterm_and_sigkill_mid_epoch_and_at_boundaries_change_nothing(
    reference, learnable_data_dir, tmp_path):
  data = learnable_data_dir
  # SIGTERM mid-epoch, between two log steps: checkpoint at that step (a
  # call of one step ends there).
  proc = _main(tmp_path, data, '--config.steps_per_call=1',
               self_signal='5:SIGTERM')
  assert proc.returncode == 143, proc.stderr[-3000:]
  assert 'preempted: Stopped by a signal at step 5' in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert _latest(tmp_path) == 5
  # SIGTERM at the end of an epoch: its own checkpoint serves.
  proc = _main(tmp_path, data, self_signal='8:SIGTERM')
  assert proc.returncode == 143, proc.stderr[-3000:]
  assert 'at step 8' in proc.stderr and _latest(tmp_path) == 8
  # SIGKILL mid-epoch: back to the last complete checkpoint.
  proc = _main(tmp_path, data, self_signal='13:SIGKILL')
  assert proc.returncode == -signal.SIGKILL
  assert _latest(tmp_path) == 8
  # SIGKILL after an epoch's last step, before its eval and checkpoint.
  proc = _main(tmp_path, data, self_signal='16:SIGKILL')
  assert proc.returncode == -signal.SIGKILL
  assert _latest(tmp_path) == 8
  proc = _main(tmp_path, data)
  assert proc.returncode == 0, proc.stderr[-3000:]
  helpers.assert_same_result(helpers.final_result(tmp_path), reference[1])


AUGMENTED = ('--config.augment=crop_flip', '--config.normalize=per_channel')


ON_DEVICE = ('--config.data_on_device=on', '--config.steps_per_call=3',
             '--config.log_every_steps=8')


def test_sigterm_and_resume_with_augmentation_is_bit_exact(
    learnable_data_dir, tmp_path):
  # Each image's crop and flip is a function of (seed, epoch, example): the
  # resumed run sees the images an uninterrupted one saw. Straight: tf.data,
  # one step per call. Stopped: the data on the device, 3 steps per call, a
  # SIGTERM during the call of steps 8-10, resumed.
  straight = tmp_path / 'straight'
  proc = _main(straight, learnable_data_dir, *AUGMENTED,
               '--config.data_on_device=off', '--config.steps_per_call=1',
               '--config.log_every_steps=8', xla_emitters=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  stopped = tmp_path / 'stopped'
  proc = _main(stopped, learnable_data_dir, *AUGMENTED, *ON_DEVICE,
               self_signal='10:SIGTERM', xla_emitters=True)
  assert proc.returncode == 143, proc.stderr[-3000:]
  assert 'data on the devices' in proc.stderr
  assert _latest(stopped) == 11
  proc = _main(stopped, learnable_data_dir, *AUGMENTED, *ON_DEVICE,
               xla_emitters=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  helpers.assert_same_result(helpers.final_result(stopped),
                            helpers.final_result(straight))


# airbench94's recipe at width 8: 8 steps an epoch, 2.5 epochs (20 steps,
# the last mid-epoch), lookahead every 5, the whitening bias trained 1 epoch.
AIRBENCH = ('--config.model.width=8', '--config.batch_size=8',
            '--config.eval_batch_size=7', '--config.num_epochs=2.5',
            '--config.model.whiten_bias_epochs=1', '--config.log_every_steps=4')


def test_airbench_sigterm_and_resume_is_bit_exact(learnable_data_dir,
                                                  tmp_path):
  # Its whitening fit (data_init.npz), lookahead's averages in the
  # optimizer state, frozen params, the fractional last epoch and TTA.
  straight = tmp_path / 'straight'
  airbench = dict(xla_emitters=True, config='configs/airbench94.py')
  proc = _main(straight, learnable_data_dir, *AIRBENCH,
               '--config.data_on_device=off', '--config.steps_per_call=1',
               **airbench)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # The whitening kernel is the fit one, untouched by 20 steps.
  with np.load(straight / 'data_init.npz') as fit:
    np.testing.assert_array_equal(
        helpers.final_result(straight)[1]["['params']['whiten']['kernel']"],
        fit['whiten/kernel'])
  stopped = tmp_path / 'stopped'
  proc = _main(stopped, learnable_data_dir, *AIRBENCH,
               '--config.steps_per_call=2', self_signal='7:SIGTERM',
               **airbench)
  assert proc.returncode == 143, proc.stderr[-3000:]
  assert _latest(stopped) == 8
  proc = _main(stopped, learnable_data_dir, *AIRBENCH,
               '--config.steps_per_call=2', **airbench)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got, want = helpers.final_result(stopped), helpers.final_result(straight)
  assert want[0] == 20
  (step, _), = want[2]['eval_tta/accuracy']
  assert step == 20
  helpers.assert_same_result(got, want)


def test_sigterm_from_outside_saves_and_explains(learnable_data_dir, tmp_path):
  proc = subprocess.Popen(
      _command(tmp_path, learnable_data_dir, '--config.num_epochs=50'),
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  for line in proc.stdout:  # Wait until it is training.
    if 'train/loss' in line:
      proc.send_signal(signal.SIGTERM)
      break
  output = proc.stdout.read()
  assert proc.wait(timeout=300) == 143, output[-3000:]
  assert 'Traceback' not in output
  step = int(output.split('Stopped by a signal at step ')[1].split(';')[0])
  assert 0 < step < 400 and _latest(tmp_path) == step


# orbax's failed read leaves tensorstore callbacks for the event loop it has
# closed; in this process they surface, at garbage collection, as ignored
# exceptions (a main.py process exits first).
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_damaged_latest_checkpoint_falls_back_to_the_previous(
    reference, learnable_data_dir, tmp_path, caplog):
  workdir = tmp_path / 'run'
  shutil.copytree(reference[0], workdir)
  # Damage the final checkpoint (step 24): its array data is gone.
  state_dir = workdir / 'checkpoints' / '24' / checkpoints.STATE
  for path in state_dir.rglob('*'):
    if path.is_file() and 'ocdbt' in str(path.relative_to(state_dir)):
      path.unlink()
  code, err = helpers.main_here(workdir, *_flags(learnable_data_dir))
  assert code == 0, err[-3000:]
  warned = caplog.text  # absl's log, in this process.
  assert 'The checkpoint at step 24' in warned
  assert 'could not be read' in warned and 'resumes from step 16' in warned
  assert (workdir / 'checkpoints' / '24.unreadable').is_dir()
  helpers.assert_same_result(helpers.final_result(workdir), reference[1])


BAD_INPUTS = [
    (['--config.model.norm=batchnorm'],
     "model.norm='batchnorm' is not supported; allowed: none, batch"),
    (['--config.model.placement=after'],
     "model.placement='after' is not supported; allowed: input, pre_act"),
    (['--config.batch_size=0'], 'batch_size=0 must be a positive integer'),
    (['--config.num_epochs=-1'], 'num_epochs=-1 must be a number > 0'),
    (['--config.learning_rate=-0.1'], 'learning_rate=-0.1 must be a number > 0'),
    (['--config.model.norm=ghost_batch', '--config.model.virtual_batch_size=3'],
     'model.virtual_batch_size=3 does not divide batch_size=8'),
    (['--config.dataset=cifar11'], "dataset='cifar11' is not a TFDS dataset"),
    (['--config.dataset=mnist', '--config.download=False'],
     "dataset='mnist' is not prepared in data_dir="),
    (['--config.model.bn_momentum=1.5'],
     'model.bn_momentum=1.5 must be a number in [0, 1]'),
    (['--config.model.nrom=batch'],
     "--config.model.nrom is not a config field (did you mean 'norm'?)"),
    (['--config.batch_size=abc'], 'flag --config.batch_size=abc: invalid'),
    (['--config=configs/nope.py'],
     '--config=configs/nope.py: no such config file'),
    # {tmp}: this test's tmp_path. raises.py is written by the test.
    (['--config={tmp}/raises.py'],
     "raised NameError: name 'batch' is not defined ({tmp}/raises.py, line 6: "
     "config.model.norm = batch)"),
    (['--config=configs/sweeps/seed_study.py'],
     '--config=configs/sweeps/seed_study.py has no get_config()'),
    (['--config=configs/tiny.py:x'],
     '--config=configs/tiny.py:x: get_config() takes 0 positional arguments'),
    (['--workdir={tmp}/a_file'], "a_file' is a file, not a directory"),
    (['--workdir=/proc/bn_study/run'],
     "--workdir='/proc/bn_study/run' cannot be created"),
    (['--config.learning_rate=1e30', '--config.optimizer=sgd',
      '--config.model.norm=none'],
     'Training diverged: the loss or gradient norm is not finite at step'),
]

# A config file with a typo: the message shows its own line, not ml_collections'.
_RAISES = """from configs import tiny


def get_config():
  config = tiny.get_config()
  config.model.norm = batch
  return config
"""


def _with(command, flags):
  """command with flags added; a --config= or --workdir= among them takes
  the place of the command's own (--config must come before its overrides)."""
  own = {f.split('=', 1)[0]: f for f in flags
         if f.startswith(('--config=', '--workdir='))}
  return ([own.get(a.split('=', 1)[0], a) for a in command] +
          [f for f in flags if f not in own.values()])


def _bad_input_argv(tmp_path, data_dir, flags):
  flags = [f.format(tmp=tmp_path) for f in flags]
  if '--config.download=False' in flags:
    data_dir = str(tmp_path / 'empty')
  return _with(_command(tmp_path / 'run', data_dir, '--config.batch_size=8',
                        '--config.eval_batch_size=8')[2:], flags)


@pytest.mark.parametrize('flags,message', BAD_INPUTS,
                         ids=[' '.join(f) for f, _ in BAD_INPUTS])
def test_bad_input_is_one_message_no_traceback(
    learnable_data_dir, tmp_path, monkeypatch, flags, message):
  """Through main.py's own flag parsing and main(), in this process: every
  one of these is caught before any work but the divergence."""
  monkeypatch.chdir(ROOT)
  (tmp_path / 'raises.py').write_text(_RAISES)
  (tmp_path / 'a_file').write_text('')
  code, err = helpers.main_in_process(
      _bad_input_argv(tmp_path, learnable_data_dir, flags))
  message = message.format(tmp=tmp_path)
  assert code == 2, (flags, err[-2000:])
  assert message in err, (flags, err[-2000:])
  assert 'Traceback' not in err, (flags, err[-2000:])
  if 'diverged' in message:
    assert 'learning_rate=1e+30' in err
    assert _latest(tmp_path / 'run') is None


def test_bad_input_in_a_process_exits_2_with_one_line(learnable_data_dir,
                                                      tmp_path):
  """As a user runs it, on 8 devices (a count set before JAX starts)."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                      ' --xla_force_host_platform_device_count=8')
  proc = subprocess.run(
      _command(tmp_path, learnable_data_dir, '--config.batch_size=12',
               '--config.eval_batch_size=16'),
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
      check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert 'batch_size=12 is not divisible by the 8 devices' in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert proc.stderr.count('error: ') == 1
