r"""`python -m bn_study.report RUNS_DIR ... --out=OUT`: a Markdown report with
plots from training runs. The report lives in bn_study/studies/report.py.
Importing this module defines no flags and starts nothing.
"""

from bn_study.studies.report import write_report

__all__ = ['write_report']

if __name__ == '__main__':
  from bn_study.studies import report  # pylint: disable=g-import-not-at-top
  report.program()
