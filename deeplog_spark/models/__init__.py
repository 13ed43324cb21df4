"""The non-neural detectors fitted on normal training sessions: the count model and the PCA baseline."""
