"""The application: the ``research-env`` command line and the product commands.

Why a package of its own, named ``research_app``: the project's floors are the env
(``research_env``, no torch), the algorithms that train a model against it
(``algorithms``), and this, the top floor that puts both to work for a person at a
terminal. It is the only package that imports both lower floors for a user-facing
purpose, so it is where the CLI and everything a reader looks at live; nothing below
imports it, by name or by string. The name says which floor it is (the application) and
keeps the project's ``research_`` prefix; ``benchmarks/`` stays a sibling that holds the
speed and cost measurements, which may import this package but never the reverse.

- :mod:`~research_app.cli`: the ``research-env`` entry point and its command table.
- :mod:`~research_app.train`: ``research-env train`` (GRPO, PPO, REINFORCE, SFT, SB3).
- :mod:`~research_app.harness`: play a policy over a split and score it into one
  :class:`~research_app.harness.EvalResult`: ``evaluate_scripted`` for the oracle and
  random policies, ``evaluate_model`` / ``evaluate_baselines`` for a language model.
- :mod:`~research_app.baselines`: what the search agent is measured against with the
  same model: ``direct`` (no retrieval) and ``rag`` (retrieve once, answer).
- :mod:`~research_app.judge`: an optional LLM-as-judge score next to EM and F1.
- :mod:`~research_app.report`: results as markdown tables, ``results.json`` and
  transcripts.
- :mod:`~research_app.evaluate`: ``research-env eval``.
- :mod:`~research_app.demo`: ``research-env demo``, a policy learning to search end to
  end; :mod:`~research_app.demo_report` writes its report (table, curves, transcripts),
  :mod:`~research_app.memory` measures each stage's peak memory.
- :mod:`~research_app.ablate`: ``research-env ablate`` (seeds x variants), with
  :mod:`~research_app.ablate_report` and :mod:`~research_app.claims`.
- :mod:`~research_app.compare`: ``research-env compare`` (two runs' fingerprints).
- :mod:`~research_app.view`: ``research-env view``, the token-level HTML page
  (:mod:`~research_app.view_page`).

The numbers themselves (means over episodes, questions counted, pass@k, markdown tables)
come from :mod:`research_env.metrics`, which the trainer's per-step metrics share.
Importing this package needs no torch: the language-model paths import it when they run.
"""
