"""Files written for the Open Catalyst Project code (ocp v0.x): its configs, its trainer's
checkpoints and its released SpinConv checkpoints. Nothing is imported at package import."""
