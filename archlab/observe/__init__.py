"""The observer: watches every dataset's objectives (archlab.contract.objectives) on the ``dq`` topic and
the pipeline's health, and opens and resolves alerts on ``<dataset>.alerts`` (archlab.core.alerts).

:mod:`~archlab.observe.evaluate` measures objectives and decides changes (pure functions),
:mod:`~archlab.observe.signals` parses and folds the inputs, :mod:`~archlab.observe.app` is the faust
app, :mod:`~archlab.observe.alerts` the open alerts and their one writer, :mod:`~archlab.observe.webhook`
the optional webhook, :mod:`~archlab.observe.history` the alerts' lake table, and
:mod:`~archlab.observe.run` puts them together for ``services/observer``.
"""
