"""Train and evaluate a bn_study config, or predict with its checkpoint.

  python main.py --config=configs/wbn.py --workdir=runs/wbn
  python main.py --config=configs/wbn.py --workdir=runs/wbn --config.num_epochs=3
  python main.py --config=configs/wbn.py --workdir=runs/wbn --predict=a.png,b.jpg
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from bn_study import errors
from bn_study.runtime import compilation_cache
from bn_study.runtime import process
from bn_study.training import loop
from bn_study.training import predict

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Where checkpoints, events and config.json go.')
flags.DEFINE_list('predict', None,
                  'Image files (PNG/JPEG) to classify with the latest checkpoint '
                  'in --workdir, instead of training.')
flags.DEFINE_bool('multihost', False,
                  'Join a multi-host job whose peers JAX finds by itself '
                  '(Cloud TPU slices, SLURM).')
flags.DEFINE_string('coordinator_address', None,
                    'host:port of process 0, for a multi-process job anywhere '
                    'else; with --num_processes and --process_id.')
flags.DEFINE_integer('num_processes', None, 'Processes in the job.')
flags.DEFINE_integer('process_id', None, 'This process, 0..num_processes-1.')
flags.DEFINE_string('compilation_cache_dir', compilation_cache.DEFAULT_DIR,
                    'JAX\'s persistent compilation cache, so relaunches skip '
                    'compiling; empty turns it off.')
config_flags.DEFINE_config_file('config', None, 'A config file in configs/.',
                                 lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    process.setup(FLAGS.compilation_cache_dir, FLAGS.coordinator_address,
                  FLAGS.num_processes, FLAGS.process_id, FLAGS.multihost)
    if FLAGS.predict:
      predict.print_predictions(FLAGS.config, FLAGS.workdir, FLAGS.predict)
    else:
      loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except errors.UserError as e:
    logging.error('%s', e)
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except errors.Preempted as e:
    logging.warning('%s', e)
    print(f'preempted: {e}', file=sys.stderr)
    sys.exit(errors.Preempted.EXIT_STATUS)


if __name__ == '__main__':
  app.run(main, flags_parser=errors.parse_flags)
