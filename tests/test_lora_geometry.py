"""LoRA / weight-update geometry: planted structure with closed-form answers, numpy/scipy references, and the
``lora`` task on real PEFT adapters and full checkpoints of the tiny Llama."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from lora_helpers import assert_one_line_error, evaluate_cli, make_adapter, np_erank, np_intruders, np_top_alignment, peft_deltas

from collapse_bench.lora.geometry import (
    effective_rank,
    intruder_counts,
    lowrank_svd,
    stable_rank,
    subspace_overlap,
    thin_svd,
    top_alignment,
    update_metrics,
)
from collapse_bench.lora.updates import layer_index, module_type

RNG = np.random.default_rng(0)


def orthonormal(m: int, k: int, seed: int = 0) -> np.ndarray:
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((m, k)))[0]


def t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x, dtype=np.float64))


# ----------------------------------------------------------------------------- spectra


@pytest.mark.parametrize("m,n,r", [(30, 20, 4), (17, 40, 6), (25, 25, 1), (12, 9, 12)])
def test_qr_trick_spectrum_equals_dense_svd(m: int, n: int, r: int) -> None:
    B, A, scale = RNG.standard_normal((m, r)), RNG.standard_normal((r, n)), 0.37
    dense = scale * B @ A
    U_ref, S_ref, Vt_ref = np.linalg.svd(dense, full_matrices=False)
    svd = lowrank_svd(t(B), t(A), scale)
    k = min(r, m, n)
    np.testing.assert_allclose(svd.S.numpy()[:k], S_ref[:k], rtol=1e-10)
    np.testing.assert_allclose(svd.dense().numpy(), dense, atol=1e-10)
    # the same singular subspaces (singular vectors are defined up to sign): equal projectors
    np.testing.assert_allclose(svd.U[:, :k].numpy() @ svd.U[:, :k].numpy().T, U_ref[:, :k] @ U_ref[:, :k].T, atol=1e-8)
    np.testing.assert_allclose(svd.V[:, :k].numpy() @ svd.V[:, :k].numpy().T, Vt_ref[:k].T @ Vt_ref[:k], atol=1e-8)


@pytest.mark.parametrize("m,n", [(40, 12), (12, 40), (30, 30)])
def test_gram_thin_svd_equals_lapack(m: int, n: int) -> None:
    W = RNG.standard_normal((m, n)) * np.logspace(0, -3, n)  # condition number ~1e3
    U_ref, S_ref, _ = np.linalg.svd(W, full_matrices=False)
    svd = thin_svd(t(W))
    np.testing.assert_allclose(svd.S.numpy(), S_ref, rtol=1e-12, atol=1e-10 * S_ref[0])  # Gram: |dS_i| ~ eps S_1^2 / S_i
    np.testing.assert_allclose(svd.dense().numpy(), W, atol=1e-12)
    np.testing.assert_allclose(svd.U.numpy().T @ svd.U.numpy(), np.eye(min(m, n)), atol=1e-9)
    np.testing.assert_allclose(np.abs(svd.U.numpy().T @ U_ref), np.eye(min(m, n)), atol=1e-6)


def test_rank_deficient_parent_still_gets_a_complete_basis() -> None:
    W = RNG.standard_normal((30, 3)) @ RNG.standard_normal((3, 10))  # rank 3 of 10
    svd = thin_svd(t(W))
    np.testing.assert_allclose(svd.U.numpy().T @ svd.U.numpy(), np.eye(10), atol=1e-10)
    np.testing.assert_allclose(svd.dense().numpy(), W, atol=1e-10)


def test_known_spectrum_gives_known_effective_rank() -> None:
    sigma = np.array([4.0, 2.0, 1.0, 1.0])  # p = (1/2, 1/4, 1/8, 1/8): H = 1.75 ln 2
    U, V = orthonormal(50, 4, 1), orthonormal(30, 4, 2)
    M = RNG.standard_normal((4, 4)) + 3 * np.eye(4)  # non-orthogonal factors: B = U diag(s) M, A = M^-1 V^T / scale
    scale = 8 / 4
    svd = lowrank_svd(t(U @ np.diag(sigma) @ M), t(np.linalg.inv(M) @ V.T / scale), scale)
    np.testing.assert_allclose(svd.S.numpy(), sigma, rtol=1e-12)
    assert effective_rank(svd.S) == pytest.approx(2**1.75, rel=1e-12)
    assert stable_rank(svd.S) == pytest.approx(22 / 16, rel=1e-12)
    W0 = RNG.standard_normal((50, 30))
    values = update_metrics(t(W0), thin_svd(t(W0)), svd, top_k=5, eps=[0.5], alignment_k=4)
    assert values["delta_norm"] == pytest.approx(math.sqrt(22) / np.linalg.norm(W0), rel=1e-12)
    assert values["delta_effective_rank"] == pytest.approx(2**1.75, rel=1e-12)
    assert values["top_alignment_chance"] == pytest.approx(4 / 50)


# ----------------------------------------------------------------------------- subspaces


def test_overlap_self_one_orthogonal_zero_half_half() -> None:
    Q = orthonormal(64, 8, 3)
    phi, angles = subspace_overlap(t(Q[:, :4]), t(Q[:, :4]))
    assert phi == pytest.approx(1.0, abs=1e-12) and max(angles) == pytest.approx(0.0, abs=1e-6)
    phi, angles = subspace_overlap(t(Q[:, :4]), t(Q[:, 4:]))
    assert phi == pytest.approx(0.0, abs=1e-12) and min(angles) == pytest.approx(math.pi / 2, abs=1e-12)
    phi, angles = subspace_overlap(t(Q[:, :4]), t(Q[:, [0, 1, 5, 6]]))
    assert phi == pytest.approx(0.5, abs=1e-12)
    np.testing.assert_allclose(angles, [0, 0, math.pi / 2, math.pi / 2], atol=1e-6)


def test_principal_angles_match_scipy_on_random_subspaces() -> None:
    Ui, Uj = orthonormal(40, 5, 4), orthonormal(40, 3, 5)
    phi, angles = subspace_overlap(t(Ui), t(Uj))
    ref = np.sort(scipy.linalg.subspace_angles(Ui, Uj))
    np.testing.assert_allclose(angles, ref, atol=1e-10)
    assert phi == pytest.approx(float((np.cos(ref) ** 2).sum() / 3), rel=1e-10)


# ----------------------------------------------------------------------------- intruders and alignment


def planted_parent(m: int = 40, n: int = 12) -> tuple[np.ndarray, ...]:
    """A tall W0 = U diag(s) V^T (its left singular vectors span only n of m dims) and a unit w outside that span."""
    Q = orthonormal(m, n + 1, 6)
    U, w = Q[:, :n], Q[:, n]
    s = np.linspace(10, 1, n)
    V = orthonormal(n, n, 7)
    return U @ np.diag(s) @ V.T, U, s, V, w


@pytest.mark.parametrize(
    "c,expected",
    [
        (0.4, {0.3: 0, 0.5: 1, 0.7: 1}),
        (0.6, {0.3: 0, 0.5: 0, 0.7: 1}),
        (0.2, {0.3: 1, 0.5: 1, 0.7: 1}),
        (0.9, {0.3: 0, 0.5: 0, 0.7: 0}),
    ],
)
def test_rotating_top_singular_vector_out_of_span_makes_one_intruder(c: float, expected: dict[float, int]) -> None:
    W0, U, s, V, w = planted_parent()
    u_new = c * U[:, 0] + math.sqrt(1 - c * c) * w  # max |cos| with every parent singular vector = c
    dW = s[0] * np.outer(u_new - U[:, 0], V[:, 0])  # rank 1: Wt keeps the spectrum, its top vector is u_new
    base = thin_svd(t(W0))
    top = thin_svd(t(W0 + dW), k=10)
    assert intruder_counts(base.U, top.U, [0.3, 0.5, 0.7]) == expected
    for eps, count in expected.items():
        assert np_intruders(W0, W0 + dW, 10, eps) == count
    delta = lowrank_svd(t((u_new - U[:, 0])[:, None]), t(V[:, :1].T), s[0])  # the same update as a rank-1 LoRA
    values = update_metrics(t(W0), base, delta, top_k=10, eps=[0.3, 0.5, 0.7], alignment_k=1)
    assert [values[f"intruder_count_eps{e:g}"] for e in (0.3, 0.5, 0.7)] == [expected[e] for e in (0.3, 0.5, 0.7)]


def test_update_inside_the_span_makes_no_intruder() -> None:
    W0, U, _s, V, _ = planted_parent()
    dW = 3.0 * np.outer(U[:, 2], V[:, 5])  # stays inside span(U)
    counts = intruder_counts(thin_svd(t(W0)).U, thin_svd(t(W0 + dW), k=10).U, [0.3, 0.5, 0.7])
    assert counts == {0.3: 0, 0.5: 0, 0.7: 0}


def test_top_alignment_closed_form() -> None:
    W0, U, _s, _V, w = planted_parent()
    a, b = 2.0, 3.0  # dW = a u_1 x^T + b w y^T, x ⟂ y: share inside span(u_1) = a^2 / (a^2 + b^2)
    x, y = orthonormal(12, 2, 8).T
    dW = a * np.outer(U[:, 0], x) + b * np.outer(w, y)
    delta = thin_svd(t(dW), complete=False)
    base = thin_svd(t(W0))
    assert top_alignment(base.U[:, :1], delta) == pytest.approx(a * a / (a * a + b * b), rel=1e-10)
    assert top_alignment(base.U, delta) == pytest.approx(a * a / (a * a + b * b), rel=1e-10)  # w is outside span(U)
    assert top_alignment(base.U[:, 1:4], delta) == pytest.approx(0.0, abs=1e-12)


def test_module_names() -> None:
    assert module_type("model.layers.3.self_attn.q_proj") == "q"
    assert module_type("model.layers.3.mlp.down_proj") == "down"
    assert module_type("transformer.h.2.attn.c_attn") == "c_attn"
    assert layer_index("model.layers.17.mlp.up_proj") == 17
    assert layer_index("transformer.h.2.attn.c_attn") == 2
    assert layer_index("lm_head") is None


# ----------------------------------------------------------------------------- the task on real adapters


@pytest.fixture(scope="module")
def adapter_result(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real PEFT adapter (rank 4, a rank/alpha pattern on some modules) evaluated with the lora task."""
    root = tmp_path_factory.mktemp("lora")
    adapter = make_adapter(tiny_model_dir, root / "adapter", seed=1, rank_pattern={"up_proj": 2}, alpha_pattern={"v_proj": 3})
    return adapter, root


def test_adapter_task_matches_peft_reference(
    adapter_result: tuple[Path, Path], tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter, root = adapter_result
    out = root / "r.json"
    code, _stdout, err = evaluate_cli([str(adapter), "--tasks", "lora", "--output", str(out)], capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    block = result["tasks"]["lora"]
    # no lineage.yaml: the adapter's base is its parent
    assert result["model"]["parent"] == tiny_model_dir.name  # display names, never paths of the disk
    assert [e["name"] for e in result["model"]["lineage"]] == [tiny_model_dir.name, adapter.name]
    ref = peft_deltas(tiny_model_dir, adapter)
    per_module = {}
    for key, (W0, dW) in ref.items():
        S = np.linalg.svd(dW, compute_uv=False)
        per_module[key] = {
            "delta_effective_rank": np_erank(S),
            "delta_stable_rank": float((S**2).sum() / S[0] ** 2),
            "delta_norm": float(np.linalg.norm(dW) / np.linalg.norm(W0)),
            "top_alignment": np_top_alignment(W0, dW, 16),
            **{f"intruder_count_eps{e:g}": np_intruders(W0, W0 + dW, 10, e) for e in (0.3, 0.5, 0.7)},
        }
    assert block["counts"]["modules"] == len(ref) == 14
    for metric in ("delta_effective_rank", "delta_stable_rank", "delta_norm", "top_alignment"):
        assert block["metrics"][metric] == pytest.approx(np.mean([v[metric] for v in per_module.values()]), rel=1e-8)
        for mtype, leaf in (("q", "q_proj"), ("up", "up_proj"), ("v", "v_proj")):
            chosen = [v[metric] for k, v in per_module.items() if k.endswith(leaf)]
            assert block["metrics"][f"{metric}:{mtype}"] == pytest.approx(np.mean(chosen), rel=1e-8)
        for layer in (0, 1):
            chosen = [v[metric] for k, v in per_module.items() if f".layers.{layer}." in k]
            assert block["per_layer"][metric][layer] == pytest.approx(np.mean(chosen), rel=1e-8)
        down = [per_module[f"model.layers.{i}.mlp.down_proj"][metric] for i in (0, 1)]
        np.testing.assert_allclose(block["per_layer"][f"{metric}:down"], down, rtol=1e-8)
    for e in (0.3, 0.5, 0.7):  # counts are summed
        metric = f"intruder_count_eps{e:g}"
        assert block["metrics"][metric] == sum(v[metric] for v in per_module.values())
        assert block["per_layer"][metric] == [
            sum(v[metric] for k, v in per_module.items() if f".layers.{i}." in k) for i in (0, 1)
        ]
    assert block["metrics"]["delta_effective_rank:up"] <= 2.0 + 1e-9  # rank_pattern gave up_proj rank 2
    q_rows = ref["model.layers.0.self_attn.q_proj"][0].shape[0]
    assert block["metrics"]["top_alignment_chance:q"] == pytest.approx(16 / q_rows)  # chance level k / m
    assert block["per_layer"]["layers"] == [0, 1]
    assert block["update"]["rank"] == [2, 4] and block["metrics"]["overlap_prev"] is None


def test_full_checkpoint_difference(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second checkpoint = the tiny model with a planted rank-2 update (sigma 0.2, 0.1) on layer 1's q_proj."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    W = model.model.layers[1].self_attn.q_proj.weight
    U, V = orthonormal(W.shape[0], 2, 9), orthonormal(W.shape[1], 2, 10)
    dW = U @ np.diag([0.2, 0.1]) @ V.T
    W0 = W.detach().double().numpy().copy()
    with torch.no_grad():
        W.add_(torch.from_numpy(dW).float())
    ft = tmp_path / "ft"
    model.save_pretrained(ft)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(ft)
    out = tmp_path / "r.json"
    code, _, err = evaluate_cli(
        [str(ft), "--tasks", "lora", "--parent", str(tiny_model_dir), "--stage", "sft", "--output", str(out)], capsys
    )
    assert code == 0, err
    result = json.loads(out.read_text())
    block = result["tasks"]["lora"]
    assert block["counts"]["modules"] == 1 and block["counts"]["unchanged"] == 13
    p = np.array([2, 1]) / 3
    assert block["metrics"]["delta_effective_rank"] == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-4)
    assert block["metrics"]["delta_stable_rank"] == pytest.approx(1.25, rel=1e-4)
    assert block["metrics"]["delta_norm:q"] == pytest.approx(math.sqrt(0.05) / np.linalg.norm(W0), rel=1e-4)
    assert block["per_layer"]["delta_norm:q"][0] is None and block["per_layer"]["delta_norm:q"][1] is not None
    assert result["model"]["parent"] == tiny_model_dir.name and result["model"]["stage"] == "sft"
    assert [e["stage"] for e in result["model"]["lineage"]] == [None, "sft"]


# ----------------------------------------------------------------------------- bad input


def test_adapter_on_wrong_base(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from collapse_bench.models.tiny import build_tiny_model

    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", seed=2, targets=["q_proj"])
    other = build_tiny_model(tmp_path / "narrow", hidden=32)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": str(other)}))
    out = tmp_path / "r.json"
    code, _, err = evaluate_cli([str(adapter), "--tasks", "lora", "--output", str(out)], capsys)
    assert_one_line_error(code, err, "does not fit base", "64x64", "32x32")
    assert not out.exists()


def test_adapter_factor_shape_mismatch(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import load_file, save_file

    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", seed=3, targets=["q_proj", "v_proj"])
    tensors = load_file(adapter / "adapter_model.safetensors")
    key = next(k for k in tensors if k.endswith("layers.1.self_attn.v_proj.lora_B.weight"))
    tensors[key] = tensors[key][:, :3].contiguous()
    save_file(tensors, adapter / "adapter_model.safetensors")
    out = tmp_path / "r.json"
    code, _, err = evaluate_cli([str(adapter), "--output", str(out), "--limit", "1"], capsys)
    assert_one_line_error(code, err, "corrupt", "v_proj", "4x64", "32x3")
    assert not out.exists()


def test_truncated_adapter_weights(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", seed=4, targets=["q_proj"])
    data = (adapter / "adapter_model.safetensors").read_bytes()
    (adapter / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    out = tmp_path / "r.json"
    code, _, err = evaluate_cli([str(adapter), "--tasks", "lora", "--output", str(out)], capsys)
    assert_one_line_error(code, err, "cannot read adapter weights")
    assert not out.exists()


def test_lora_task_needs_an_adapter_or_parent(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    code, _, err = evaluate_cli([str(tiny_model_dir), "--tasks", "lora", "--output", str(out)], capsys)
    assert_one_line_error(code, err, "PEFT adapter", "--parent")
    assert not out.exists()


def test_parent_with_other_architecture(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from collapse_bench.models.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "deeper", layers=3)
    out = tmp_path / "r.json"
    code, _, err = evaluate_cli([str(other), "--tasks", "lora", "--parent", str(tiny_model_dir), "--output", str(out)], capsys)
    assert_one_line_error(code, err, "different architectures", "layers.2")
    assert not out.exists()
