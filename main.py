"""Train and evaluate a bn_study config, or predict with its checkpoint.

  python main.py --config=configs/wbn.py --workdir=runs/wbn
  python main.py --config=configs/wbn.py --workdir=runs/wbn --config.num_epochs=3
  python main.py --config=configs/wbn.py --workdir=runs/wbn --predict=a.png,b.jpg
"""

# First, before anything worth keeping exists: re-executes with glibc's
# malloc asking for huge pages where that helps (bn_study/host_memory.py:
# a third off the CPU train step at batch 128).
from bn_study import host_memory  # pylint: disable=g-bad-import-order
host_memory.use_huge_pages()

import re  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from bn_study import compilation_cache
from bn_study import errors
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


def parse_flags(argv):
  """absl's parsing, with every bad flag a one-line message, not a traceback
  (ml_collections raises AttributeError for an unknown --config.FIELD)."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f'error: {e}', file=sys.stderr)
  except (AttributeError, KeyError) as e:
    names = re.findall(r"'([^'\\]+)", str(e).replace("\\'", "'"))
    hint = re.findall(r'Did you mean "([^"]+)"', str(e))
    bad = [a.split('=', 1)[0] for a in argv if a.startswith('--config.')
           and names and names[0] in a.split('=', 1)[0].split('.')]
    print(f'error: {bad[0] if bad else "a --config.* flag"} is not a config '
          f'field' + (f' (did you mean {hint[0]!r}?)' if hint else '') +
          '. Every field, with what it means, is in configs/default.py.',
          file=sys.stderr)
  sys.exit(2)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
