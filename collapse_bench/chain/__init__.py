"""Post-training chains: recipes, stage data and training, leakage checks, and the chain runner."""
