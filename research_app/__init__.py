"""Evaluation: the product code that scores policies and writes what a reader looks at.

- :mod:`~benchmarks.eval.harness`: play a policy over a split and score it into one
  :class:`~benchmarks.eval.harness.EvalResult`: ``evaluate_scripted`` for the oracle and
  random policies, ``evaluate_model`` / ``evaluate_baselines`` for a language model.
- :mod:`~benchmarks.eval.baselines`: what the search agent is measured against with the
  same model: ``direct`` (no retrieval) and ``rag`` (retrieve once, answer).
- :mod:`~benchmarks.eval.judge`: an optional LLM-as-judge score next to EM and F1.
- :mod:`~benchmarks.eval.report`: results as markdown tables, ``results.json`` and
  transcripts.
- :mod:`~benchmarks.eval.cli`: ``research-env eval``.
- :mod:`~benchmarks.eval.demo`: ``research-env demo``, a policy learning to search end to
  end; :mod:`~benchmarks.eval.demo_report` writes its report (table, curves, transcripts).

The numbers themselves (means over episodes, questions counted, pass@k, markdown tables)
come from :mod:`research_env.metrics`, which the trainer's per-step metrics share. Both
commands are registered in ``research_env/cli.py``. The speed scripts stay one level up in
``benchmarks/``; nothing here imports them. Importing this package needs no torch: the
language-model paths import it when they run.
"""
