"""Synthetic Amazon review data, in modules by concept.

* ``release``: files of the 2018 release's shape (29 categories with metadata, measured skew,
  latent taste), ``--scale 1.0`` = 233.1M review lines, streamed with constant memory.
* ``fuzz``: rows-sized files of the 2014/2018/2023 layouts with known dirt (reconciliation tests).
* ``sampling`` (heavy-tailed draws, hashes), ``vocabulary`` (text pools), ``formats`` (line
  layouts), ``manifest`` (exact counts and the check against load/clean), ``measure`` (the skew
  of the real files the release shape is built from).

    python -m bench.gen --scale 0.001 --out DIR [--seed S] [--processes P] [--compresslevel 0-9]
    python -m bench.gen --rows N --out DIR [--format 2018] [--files K] [--bad-fraction F] ...
"""
