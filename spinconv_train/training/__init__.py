"""The training loop and its parts: session (run state), hooks, optimiser, schedule, dry run."""
