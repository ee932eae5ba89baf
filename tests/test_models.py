"""Model resolution: local dirs, PEFT adapters (merged == unmerged outputs), aliases, bad inputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from collapse_bench.errors import CollapseBenchError
from collapse_bench.models import find_source, load_model
from collapse_bench.models.registry import assemble_parts

from conftest import build_tiny_model


def make_adapter(base_dir: Path, out: Path, seed: int = 1) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, cfg)
    peft_model.save_pretrained(out)
    return out


def test_local_dir_source_and_info(tiny_model_dir: Path) -> None:
    src = find_source(str(tiny_model_dir))
    assert src.kind == "local" and len(src.sha256) == 64
    assert find_source(str(tiny_model_dir)).sha256 == src.sha256  # content hash is stable
    loaded = load_model(str(tiny_model_dir), device="cpu")
    info = loaded.info
    assert info["source"] == "local" and info["dtype"] == "float32" and info["device"] == "cpu"
    assert info["num_layers"] == 2 and info["hidden_size"] == 64
    assert info["num_parameters"] == sum(p.numel() for p in loaded.model.parameters())
    assert info["lineage"] == [] and info["parent"] is None


def test_peft_adapter_is_applied(tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter")
    loaded = load_model(str(adapter), device="cpu")
    assert loaded.source.kind == "peft" and loaded.info["base"]["sha256"] == find_source(str(tiny_model_dir)).sha256
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter).eval()
    with torch.no_grad():
        merged_logits = loaded.model(ids).logits
        ref_logits = reference(ids).logits
        base_logits = base(ids).logits
    torch.testing.assert_close(merged_logits, ref_logits, rtol=1e-4, atol=1e-4)
    assert (merged_logits - base_logits).abs().max() > 1e-3  # the adapter really changed the model


def test_adapter_with_wrong_base_is_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter")
    other = build_tiny_model(tmp_path / "narrow", hidden=32)
    cfg_path = adapter / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = str(other)
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CollapseBenchError, match="does not fit base"):
        load_model(str(adapter), device="cpu")


def test_corrupt_adapter_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad-adapter"
    bad.mkdir()
    (bad / "adapter_config.json").write_text("{not json")
    with pytest.raises(CollapseBenchError, match="not a valid PEFT adapter config"):
        find_source(str(bad))


def test_directory_without_model(tmp_path: Path) -> None:
    with pytest.raises(CollapseBenchError, match="neither config.json"):
        find_source(str(tmp_path))


def test_assemble_parts_checks_sha(tmp_path: Path) -> None:
    parts = []
    for i, chunk in enumerate([b"abc", b"def", b"g"]):
        parts.append(tmp_path / f"p{i}")
        parts[-1].write_bytes(chunk)
    good = hashlib.sha256(b"abcdefg").hexdigest()
    target = assemble_parts(parts, tmp_path / "out" / "m.gguf", good)
    assert target.read_bytes() == b"abcdefg"
    with pytest.raises(CollapseBenchError, match="expected"):
        assemble_parts(list(reversed(parts)), tmp_path / "out2" / "m.gguf", good)
    assert not (tmp_path / "out2" / "m.gguf").exists()


@pytest.mark.slow
def test_smollm2_alias(smollm2) -> None:
    from collapse_bench.models.registry import ALIASES
    from collapse_bench.paths import cache_dir

    alias = ALIASES["smollm2-135m-instruct"]
    gguf = alias.locate(alias, cache_dir())
    info = smollm2.info
    assert info["source"] == "alias" and info["num_layers"] == 30 and info["hidden_size"] == 576
    assert info["sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert info["upstream"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and info["gguf_file"] == gguf.name
    assert 134_000_000 < info["num_parameters"] < 136_000_000
