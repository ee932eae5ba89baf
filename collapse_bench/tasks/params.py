"""Each task kind's ``params`` schema (JSON Schema; ``default`` values fill omitted parameters).

They live here, apart from the kinds' code, so that loading the task registry imports no kind module (and no
torch); each kind module re-exports its schema as ``PARAMS_SCHEMA``.
"""

from __future__ import annotations

from typing import Any

_POS_INT = {"type": "integer", "minimum": 1}
_PROB = {"type": "number", "minimum": 0, "maximum": 1}

PROBE_PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "max_tokens": {"type": "integer", "minimum": 4, "default": 256},
        "tokens_per_sequence": {"type": "integer", "minimum": 2, "default": 32},
        "reservoir_size": {"type": "integer", "minimum": 16, "default": 2048},
        "seed": {"type": "integer", "minimum": 0, "default": 0},
        "batch_size": {"type": "integer", "minimum": 1, "default": 8},
    },
}

LORA_PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "top_k": {"type": "integer", "minimum": 1, "default": 10},
        "eps": {
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "default": [0.3, 0.5, 0.7],
        },
        "alignment_k": {"type": "integer", "minimum": 1, "default": 16},
        "subspace_k": {"type": "integer", "minimum": 1, "default": 64},
    },
}

LM_EVAL_PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "lm_eval_task": {"type": ["string", "null"], "default": None},  # null: the task's own name
        "include": {"type": ["string", "null"], "default": None},  # lm-eval YAML dir relative to this file; null: built-in
        "num_fewshot": {"type": ["integer", "null"], "minimum": 0, "default": None},  # null: the lm-eval YAML's
        "apply_chat_template": {"type": "boolean", "default": False},
        "refusal": {"type": "boolean", "default": False},
        "seed": {"type": "integer", "minimum": 0, "default": 0},
        "batch_size": {"type": "integer", "minimum": 1, "default": 8},
    },
}

DIVERSITY_PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "k": {"type": "integer", "minimum": 2, "default": 4},
        "temperature": {"type": "number", "exclusiveMinimum": 0, "default": 1.0},
        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 1.0},
        "max_gen_toks": {"type": "integer", "minimum": 1, "default": 48},
        "chat_template": {"type": "boolean", "default": True},
        "seed": {"type": "integer", "minimum": 0, "default": 0},
        "batch_size": {"type": "integer", "minimum": 1, "default": 8},
    },
}

PLASTICITY_PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        # data
        "source": {"enum": ["world", "data"], "default": "data"},
        "world_seed": {"type": "integer", "minimum": 0, "default": 0},
        "world_entities": {"type": "integer", "minimum": 3, "maximum": 600, "default": 12},
        "n_train": {**_POS_INT, "default": 256},
        "n_eval": {**_POS_INT, "default": 32},
        "split_seed": {"type": "integer", "minimum": 0, "default": 0},
        "prompt_template": {"type": "string", "default": ""},
        "target_template": {"type": "string", "minLength": 1, "default": "{text}"},
        "max_target_chars": {"type": ["integer", "null"], "minimum": 1, "default": None},
        "chat_template": {"type": "boolean", "default": False},
        # LoRA
        "lora_r": {**_POS_INT, "default": 8},
        "lora_alpha": {"type": "number", "exclusiveMinimum": 0, "default": 16},
        "lora_dropout": {"type": "number", "minimum": 0, "maximum": 0.9, "default": 0.05},
        "lora_target_modules": {
            "oneOf": [{"const": "all-linear"}, {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}],
            "default": "all-linear",
        },
        # optimiser
        "lr": {"type": "number", "minimum": 0, "maximum": 1, "default": 1e-3},
        "weight_decay": {"type": "number", "minimum": 0, "default": 0.0},
        "adam_betas": {
            "type": "array",
            "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
            "minItems": 2,
            "maxItems": 2,
            "default": [0.9, 0.999],
        },
        "schedule": {"enum": ["constant", "linear", "cosine"], "default": "constant"},
        "warmup_steps": {"type": "integer", "minimum": 0, "default": 0},
        "max_grad_norm": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": 1.0},
        # schedule and scale
        "steps": {**_POS_INT, "default": 24},
        "batch_size": {**_POS_INT, "default": 8},
        "micro_batch_size": {**_POS_INT, "default": 4},
        "seq_len": {"type": "integer", "minimum": 4, "default": 128},
        "eval_every": {**_POS_INT, "default": 4},
        "eval_batch_size": {**_POS_INT, "default": 16},
        "seeds": {
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": {"type": "integer", "minimum": 0},
            "default": [0],
        },
        "diag_steps": {"type": "integer", "minimum": 0, "default": 5},
        # steps_to_threshold: first eval step with bpb <= bpb_initial - fraction * (bpb_initial - target)
        "threshold_target_bpb": {"type": "number", "minimum": 0, "default": 0.0},
        "threshold_fraction": {**_PROB, "exclusiveMinimum": 0, "default": 0.25},
    },
}


KIND_PARAMS: dict[str, dict[str, Any]] = {
    "probe": PROBE_PARAMS,
    "lora": LORA_PARAMS,
    "lm_eval": LM_EVAL_PARAMS,
    "diversity": DIVERSITY_PARAMS,
    "plasticity": PLASTICITY_PARAMS,
}
