"""LoRA / weight-update geometry (``kind: lora``): spectra, intruder dimensions, alignment and cross-stage overlap
of the update of every adapted matrix, from weights only."""
