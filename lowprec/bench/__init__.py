"""lowprec's benchmarks, one module per measurement, shipped with the package.

Run one with ``python -m lowprec.bench.<name>`` (``--help`` gives its options), or all of
them with ``lowprec bench``, which runs every ``bench_*`` module here and prints one
table. Each writes one record (``common.write_results``; fields in
``lowprec/bench_schema.py``) into ``common.RESULTS``: ``bench/results/`` under the
current directory unless ``LOWPREC_BENCH_RESULTS`` says otherwise.

* ``bench_*``: the benchmarks ``lowprec bench`` runs; without a GPU the GPU ones say so
  and exit 0.
* ``sweep_variants``: every kernel variant against the reference, the fastest kept
  (``bench/gpu_check.sh``'s phase sweep_variants).
* ``kernel_sass``: SASS instructions per element, offline (needs the source checkout's
  ``csrc/`` and nvcc).
* ``common``, ``llama_blocks``: shared by the others.

Recorded results, notes and the GPU scripts stay in the repository's ``bench/``.
"""
