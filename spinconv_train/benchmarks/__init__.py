"""Benchmark batches, timing and memory helpers, and the reference-code harness.

Nothing here is imported by the training code; import the submodules explicitly
(``spinconv_train.benchmarks.structures``, ``.timing``, ``.reference``, ``.flops``).
"""
