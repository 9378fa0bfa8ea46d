"""Desk review of a detect run: triage plots in the browser before field teams are dispatched.

- :mod:`.store` — decisions in ``RUN_DIR/review.json`` (:func:`~.store.load_decisions`,
  :func:`~.store.rejected_plot_ids`, :func:`~.store.export_hard_negatives`); light, no web imports.
- :mod:`.server` — the local web server behind ``poppyscan review``; :mod:`.run` — the run it serves
  (:class:`~.run.ReviewRun`: plots, decisions, chips, overviews); :mod:`.imagery` — chips, overview.
"""

from .store import DECISIONS, export_hard_negatives, load_decisions, rejected_plot_ids, save_decision

__all__ = ["DECISIONS", "export_hard_negatives", "load_decisions", "rejected_plot_ids", "save_decision"]
