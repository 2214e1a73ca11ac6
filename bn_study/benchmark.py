"""`python -m bn_study.benchmark`: the benchmark, bn_study/tools/benchmark.py
(its flags and what it measures), run as a program. Importing this module
defines no flags."""

from bn_study.tools import benchmark

if __name__ == '__main__':
  benchmark.program()
