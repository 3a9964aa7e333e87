"""athe.evaluate: ``athe eval``, the results table, threshold sweep and verdicts of a bundle.

Its own room: it reads bundles and images through ``athe.runtime`` and ``athe.pi_runner``
(inputs, report writers) and never imports ``athe.training``, ``athe.convert`` or torch.
Importing this package imports nothing; the modules are:

* ``athe.evaluate.measure``   labelled images (a run's held-out split), the router and every
  level run once per image, ``run_eval`` (measure, analyse, write)
* ``athe.evaluate.analysis``  pure numpy: rows, the threshold sweep, the verdicts
* ``athe.evaluate.output``    ``eval.json``, CSVs, the Pareto PNG, the terminal tables
* ``athe.evaluate.cli``       the ``athe eval`` command

Example::

    from athe.evaluate.measure import run_eval

    result = run_eval("bundles/athe-mini", "../shared/data/cifar10-train.tar.gz", backend="litert",
                      threads=2, split_from="runs/athe-mini", out="eval/mini")
    for v in result.verdicts:
        print(v.status, v.claim, v.text)
"""
