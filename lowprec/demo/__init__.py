"""``lowprec demo``: train a small byte-level GPT on text shipped with Python, in BF16,
in the NVFP4 recipe and in a planned mix, and compare the loss curves.

corpus.py (data), model.py (the GPT), train.py (loop and configurations), report.py
(tables, JSON, plot), ablation.py (the recipe ablation), progress.py (progress bar).
"""
