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

from bn_study import checkpoints
from bn_study import compilation_cache
from bn_study import cpu
from bn_study import errors
from bn_study import feeds
from bn_study import mesh
from bn_study import predict
from bn_study import train

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
  # This process's setup, here and not on import. Huge pages for malloc
  # re-execute the process once where they help (bn_study/cpu.py;
  # BN_STUDY_HUGE_PAGES=0 opts out). TF only feeds data: it keeps off the
  # GPU/TPU that JAX uses. Orbax keeps its INFO lines to itself.
  cpu.use_huge_pages()
  feeds.hide_accelerators_from_tf()
  checkpoints.quiet_orbax_logs()
  compilation_cache.enable(FLAGS.compilation_cache_dir)
  try:
    mesh.initialize_distributed(FLAGS.coordinator_address,
                                FLAGS.num_processes, FLAGS.process_id,
                                auto=FLAGS.multihost)
    if FLAGS.predict:
      predict.print_predictions(FLAGS.config, FLAGS.workdir, FLAGS.predict)
    else:
      train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
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
