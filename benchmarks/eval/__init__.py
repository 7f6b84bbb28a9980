"""Evaluation: the product code that scores policies and writes what a reader looks at.

- :mod:`~benchmarks.eval.harness`: play a policy over a split and score it
  (:func:`evaluate_model` for a language model, :func:`evaluate_scripted` for the oracle
  and random policies) into one :class:`EvalResult`.
- :mod:`~benchmarks.eval.report`: EvalResults as markdown tables, ``results.json`` and
  transcripts.
- :mod:`~benchmarks.eval.cli`: ``research-env eval``.
- :mod:`~benchmarks.eval.demo`: ``research-env demo``, a policy learning to search end to end;
  :mod:`~benchmarks.eval.demo_report` writes its report (table, curves, transcripts).

The metrics themselves (means over episodes, pass@k, markdown tables) live in
:mod:`research_env.metrics`, shared with the trainer. The speed scripts stay one level up in
``benchmarks/``; this package imports none of them.
"""
