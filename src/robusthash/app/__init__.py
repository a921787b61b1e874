"""The application layer: the command line (:mod:`~robusthash.app.cli`), the experiment runner
(:mod:`~robusthash.app.experiment`), the model zoo (:mod:`~robusthash.app.zoo`) and the report
(:mod:`~robusthash.app.report`). It drives the core library (data, models, losses, attacks, defences, metrics,
robustness), which never imports it: typed records (:mod:`robusthash.records`, :mod:`robusthash.results`) cross
the line.
"""
