"""Training modules: normalisers, element references, EMA, optimisers, schedulers, metrics."""
