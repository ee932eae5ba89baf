"""Out-of-distribution accuracy, calibration and output diversity through lm-eval (kinds ``lm_eval`` and
``diversity``), on a preloaded HF model or lm-eval's vLLM model."""
