"""athe.pi_runner: measure a converted bundle on the device itself (a Raspberry Pi, or any Linux
or macOS machine), honestly: per-stage latency with raw samples, energy per image from a real
meter (or a labelled estimate) with an idle baseline and a spread over repeats, the system's
state before and after, and a report you can re-read.

Needs ``athe.runtime`` and one backend runtime (``pip install 'athe[pi]'`` brings LiteRT,
matplotlib and smbus2), never torch. Importing this package imports nothing; the modules are:

* ``athe.pi_runner.inputs``   ``--input``: image folders, ImageFolder datasets, CIFAR pickles, tar
  archives (read by ``athe.runtime.readers``), camera
* ``athe.pi_runner.runner``   ``run_bundle``: one bundle, per-stage timing, energy windows
* ``athe.pi_runner.compare``  ``compare_runs``: bundles and/or policies interleaved, as ratios
* ``athe.pi_runner.meters``   one module per ``EnergyMeter`` (PMIC, INA2xx, powercap, hwmon, CSV
  log, estimate) behind one base class, and the registry of ``--energy`` names
* ``athe.pi_runner.system``   governor, clocks, temperature, throttling before/after
* ``athe.pi_runner.stats``    latency summaries per level and of per-image rows
* ``athe.pi_runner.report``   JSONL, summary JSON, CSV, PNG plots, the terminal tables
* ``athe.pi_runner.cli``      ``athe run`` / ``python -m athe.pi_runner``

Example (a tiny bundle on 64 CIFAR-10 images, 3 repeats, a labelled 6.5 W model estimate)::

    from athe.pi_runner.runner import run_bundle

    result = run_bundle("bundles/athe-mini", "../shared/data/cifar10-train.tar.gz",
                        out="runs/mini", limit=64, shuffle=0, repeat=3, energy="estimate:6.5")
    overall = result.summary["latency_ms"]["overall"]
    print(overall["p50_ms"], result.summary["accuracy"], result.files["summary"])

or from a shell: ``athe run bundles/athe-mini --input ../shared/data/cifar10-train.tar.gz
--limit 64 --shuffle 0 --energy auto --out runs/mini``.
"""
