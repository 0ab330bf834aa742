"""The fidelity measure on a live engine: the shipped prompt set (prompts) and the run that reads each tag's
token log-probabilities and compares them with the reference tag's (run). The arithmetic is tuner.fidelity;
how a study stores and reuses the result is tuner.quality.stored."""
