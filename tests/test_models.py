"""Model resolution: local dirs, PEFT adapters (merged == unmerged outputs), aliases, bad inputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_model

from collapse_bench.errors import CollapseBenchError
from collapse_bench.models import find_source, load_model
from collapse_bench.models.registry import assemble_parts


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
    with pytest.raises(CollapseBenchError, match=r"neither config\.json"):
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


def test_hash_covers_every_checkpoint_file_but_the_ignore_list(tiny_model_dir: Path, tmp_path: Path) -> None:
    """files-v2: a changed chat template, model code or tokenizer file is a different checkpoint; the documented
    ignore list (hidden paths, README.md, lineage.yaml, the harness's collapse_bench_* files) is not."""
    import shutil

    from collapse_bench.models.resolve import IGNORED_NAMES, dir_sha256

    assert IGNORED_NAMES == ("README.md", "lineage.yaml")
    ckpt = Path(shutil.copytree(tiny_model_dir, tmp_path / "ckpt"))
    assert (ckpt / "chat_template.jinja").is_file()  # transformers writes the template there, outside *.json
    base = dir_sha256(ckpt)
    assert dir_sha256(tiny_model_dir) == base  # content, not location
    for rel, text in (
        ("README.md", "# card"),
        ("lineage.yaml", "parent: null\nstage: x\n"),
        (".gitattributes", "*"),
        (".cache/huggingface/download/x.lock", ""),
        ("collapse_bench_source.json", "{}"),
        ("sub/.hidden", "h"),
    ):
        (ckpt / rel).parent.mkdir(parents=True, exist_ok=True)
        (ckpt / rel).write_text(text)
        assert dir_sha256(ckpt) == base, rel
    seen = {base}
    for rel, text in (
        ("chat_template.jinja", "{{ messages }}"),
        ("modeling_x.py", "X = 1"),
        ("configuration_x.py", "Y = 1"),
        ("tokenizer.model", "spm"),
        ("vocab.txt", "a\nb"),
        ("sub/extra.bin", "w"),
        ("modeling_x.py", "X = 2"),
    ):
        (ckpt / rel).parent.mkdir(parents=True, exist_ok=True)
        (ckpt / rel).write_text(text)
        digest = dir_sha256(ckpt)
        assert digest not in seen, rel  # every change of a hashed file is a new hash
        seen.add(digest)
    (ckpt / "vocab.txt").rename(ckpt / "vocab2.txt")  # a renamed file is a different checkpoint too
    assert dir_sha256(ckpt) not in seen


def test_hash_follows_symlinks_like_the_hf_cache(tiny_model_dir: Path, tmp_path: Path) -> None:
    from collapse_bench.models.resolve import dir_sha256

    blobs, snap = tmp_path / "blobs", tmp_path / "snapshot"
    blobs.mkdir()
    snap.mkdir()
    for f in tiny_model_dir.iterdir():
        (blobs / f.name).write_bytes(f.read_bytes())
        (snap / f.name).symlink_to(Path("..") / "blobs" / f.name)
    assert dir_sha256(snap) == dir_sha256(tiny_model_dir)  # the targets' content is hashed
    (blobs / "chat_template.jinja").write_text("changed")
    assert dir_sha256(snap) != dir_sha256(tiny_model_dir)
    (snap / "dangling.json").symlink_to(tmp_path / "nowhere.json")
    with pytest.raises(CollapseBenchError, match="broken symbolic link"):
        dir_sha256(snap)


def test_display_name_is_never_a_path(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    src = find_source(str(tiny_model_dir))
    assert src.name == "tiny-llama" and src.given == str(tiny_model_dir) and src.sha256_scheme == "files-v2"
    named = Path(shutil.copytree(tiny_model_dir, tmp_path / "stage" / "model"))
    (named / "lineage.yaml").write_text("name: chain/01-sft\nparent: tiny-llama\nstage: sft\n")
    assert find_source(str(named)).name == "chain/01-sft"  # the lineage name
    assert find_source(str(named)).sha256 == src.sha256  # lineage.yaml names, it is not hashed


def test_adapter_base_cycles_are_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    """An adapter whose base is itself, or a cycle of adapters, is refused (it was a RecursionError)."""

    def adapter(path: Path, base: str) -> Path:
        path.mkdir()
        (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": base}))
        (path / "adapter_model.safetensors").write_bytes(b"x")
        return path

    own = adapter(tmp_path / "own", str(tmp_path / "own"))
    with pytest.raises(CollapseBenchError, match="leads back to itself"):
        find_source(str(own))
    a = adapter(tmp_path / "a", str(tmp_path / "b"))
    adapter(tmp_path / "b", str(tmp_path / "c"))
    adapter(tmp_path / "c", str(a))
    with pytest.raises(CollapseBenchError, match=r"leads back to itself .*/a -> .*/b -> .*/c -> .*/a\)"):
        find_source(str(a))
    stacked = make_adapter(tiny_model_dir, tmp_path / "real")  # a real adapter on a real base still resolves
    src = find_source(str(stacked))
    assert src.kind == "peft" and src.base.name == "tiny-llama" and src.name == "real"
