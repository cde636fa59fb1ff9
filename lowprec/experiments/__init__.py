"""The experiments behind lowprec's design notes, shipped with the package.

    python -m lowprec.experiments.ablation          the NVFP4 recipe ablation
    python -m lowprec.experiments.matmul_shares     NVFP4 share of weight-matmul MACs
    python -m lowprec.experiments.planner.<name>    the planner's validation

The ablation and the planner's experiments write their raw records and summaries under
the current directory's ``experiments/<name>/`` by default (run from the repository root:
the folders whose README.md gives the commands and the results); ``--out`` (``--dir``)
changes that.
"""
