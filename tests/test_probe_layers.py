"""Big checkpoints on one machine: ``--probe-layers`` keeps the d x d scatter families on fewer layers (the summary is
unchanged), the memory estimate matches the tensors a run allocates, a run that cannot fit is refused before the pass,
and a model split over ``cpu`` + ``disk`` offload (accelerate big-model inference) gives the plain run's metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import close

from collapse_bench.errors import CollapseBenchError
from collapse_bench.evaluate import EvaluateRequest, evaluate
from collapse_bench.metrics import registry
from collapse_bench.models import load_model
from collapse_bench.models.tiny import build_tiny_model
from collapse_bench.probe import memory
from collapse_bench.probe.corpus import TokenizedText
from collapse_bench.probe.runner import ProbeInputs, run_probe
from collapse_bench.probe.task import summary_layers

SCATTER = ("effective_rank", "participation_ratio", "dataset_entropy")  # prefixes of the wrapped families' metrics


@pytest.fixture(scope="module")
def deep_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("deep") / "tiny-8", layers=8)


def run(model: Path, data_dir: Path, out: Path, **extra) -> dict:
    req = EvaluateRequest(
        model=str(model), tasks=["probe_quick"], limit=12, batch_size=4, device="cpu", progress=False,
        data_dir=str(data_dir), output=str(out), **extra,
    )  # fmt: skip
    return evaluate(req)[1]["tasks"]["probe_quick"]


def test_card_layers_keep_the_summary_and_drop_only_the_scatter_families_elsewhere(
    deep_tiny: Path, data_dir: Path, tmp_path: Path
) -> None:
    full = run(deep_tiny, data_dir, tmp_path / "all.json")
    card = run(deep_tiny, data_dir, tmp_path / "card.json", options={"probe_layers": "card"})
    layers = summary_layers(9)
    assert card["scatter_layers"] == layers == [2, 4, 6, 7] and "scatter_layers" not in full
    assert set(card["metrics"]) == set(full["metrics"])
    moved = [k for k, v in full["metrics"].items() if not close(card["metrics"][k], v, 1e-12)]
    assert not moved, moved  # the summary reads the card layers only
    dropped = set()
    for name, series in full["per_layer"].items():
        got = card["per_layer"][name]
        if any(got[i] is None and series[i] is not None for i in range(9) if i not in layers):
            dropped.add(name)
        assert all(close(got[i], series[i], 1e-12) for i in layers), name  # card layers: the all-layers values
    assert any(n.startswith(SCATTER[0]) for n in dropped) and any(n.startswith(SCATTER[2]) for n in dropped)
    for name in ("curvature", "layer_cosine", "intrinsic_dimension", "anisotropy"):  # not scatter: every layer kept
        assert name not in dropped and card["per_layer"][name] == full["per_layer"][name], name


def state_bytes(obj: object) -> int:
    """Bytes of every tensor an accumulator holds (LayerSubset: its members'), the pending dataset-entropy rows aside."""
    if hasattr(obj, "accs"):
        return sum(state_bytes(a) for a in obj.accs)  # type: ignore[attr-defined]
    return sum(v.nbytes for k, v in vars(obj).items() if isinstance(v, torch.Tensor))


@pytest.mark.parametrize("chosen", [None, [2, 4, 6, 7], [0, 8]])
def test_the_estimate_is_the_state_a_run_allocates(deep_tiny: Path, chosen: list[int] | None) -> None:
    loaded = load_model(str(deep_tiny), device="cpu")
    gen = torch.Generator().manual_seed(0)
    texts = [TokenizedText(torch.randint(3, 512, (24,), generator=gen).tolist(), 48, list(range(1, 24, 4))) for _ in range(10)]
    inputs = ProbeInputs(texts, [i % 3 for i in range(10)], 0)
    factory = registry.probe_accumulators(
        n_domains=3, reservoir_size=32, seed=0, layers=None if chosen is None else (lambda n, d: chosen)
    )
    accs, _ = run_probe(loaded.model, inputs, factory, batch_size=4, progress=False)
    for a in accs:  # fold the pending dataset-entropy rows, so only the persistent state remains
        for member in getattr(a, "accs", [a]):
            if hasattr(member, "_flush"):
                with torch.inference_mode():
                    member._flush()
    est = memory.estimate(
        n_hidden=9, dim=64, scatter_layers=9 if chosen is None else len(chosen), vocab=512, batch_tokens=0,
        reservoir=32, n_domains=3, intermediate=int(loaded.model.config.intermediate_size), flush_every=0,
    )  # fmt: skip
    assert sum(state_bytes(a) for a in accs) == est.accumulators


def test_a_run_that_cannot_fit_is_refused_before_the_pass(
    deep_tiny: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1024)
    out = tmp_path / "r.json"
    with pytest.raises(CollapseBenchError, match=r"exceeds the 0\.00 GiB free on cpu; use --probe-layers card"):
        run(deep_tiny, data_dir, out)
    assert not out.exists()


def test_layer_specs() -> None:
    assert memory.parse_layers(None) == "auto" and memory.parse_layers("3,1,3") == [1, 3]
    for bad in ("", "x", "-1", "1,a"):
        if bad:
            with pytest.raises(CollapseBenchError, match="--probe-layers"):
                memory.parse_layers(bad)
    assert memory.resolve_layers("auto", 81, 8192, [20, 40, 60, 79]) == [20, 40, 60, 79]
    assert memory.resolve_layers("auto", 31, 576, [8, 15, 22, 29]) is None
    with pytest.raises(CollapseBenchError, match=r"0\.\.8"):
        memory.resolve_layers([3, 9], 9, 64, [2, 4, 6, 7])
    # the scaling table's headline: 81 layers at d = 8192, one scatter family = 43.5 GB (float64 d x d per layer)
    assert pytest.approx(43.5, abs=0.05) == 81 * 8192 * 8192 * 8 / 1e9


def test_cpu_and_disk_offload_equal_the_plain_run(deep_tiny: Path, data_dir: Path, tmp_path: Path) -> None:
    plain = run(deep_tiny, data_dir, tmp_path / "plain.json")
    split = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
    split.update({f"model.layers.{i}": "cpu" if i < 4 else "disk" for i in range(8)})
    offload = tmp_path / "offload"
    mapped = run(deep_tiny, data_dir, tmp_path / "mapped.json", device_map=split, offload_folder=str(offload))
    loaded = load_model(str(deep_tiny), device="cpu", device_map=split, offload_folder=str(offload))
    devices = {name.split(".")[2]: p.device.type for name, p in loaded.model.named_parameters() if ".layers." in name}
    assert devices == {**dict.fromkeys("0123", "cpu"), **dict.fromkeys("4567", "meta")}  # the disk half is streamed in
    assert set(loaded.model.hf_device_map.values()) == {"cpu", "disk"}
    assert set(mapped["metrics"]) == set(plain["metrics"])
    moved = [k for k, v in plain["metrics"].items() if not close(mapped["metrics"][k], v, 1e-9)]
    assert not moved, moved
    assert all(all(close(a, b, 1e-9) for a, b in zip(mapped["per_layer"][k], plain["per_layer"][k])) for k in plain["per_layer"])
    saved = json.loads((tmp_path / "mapped.json").read_text())
    assert saved["model"]["device"] == "cpu"


def test_free_host_memory_is_memavailable_not_free_pages() -> None:
    """The refusal compares against what the kernel could hand out (psutil's ``available``: MemAvailable), so page
    cache does not count as used."""
    import psutil  # a dependency of accelerate

    ours, theirs = memory.available_bytes("cpu"), psutil.virtual_memory().available
    assert ours is not None and abs(ours - theirs) <= 0.05 * theirs


SPLIT = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
SPLIT.update({f"model.layers.{i}": "cpu" if i < 4 else "disk" for i in range(8)})


def test_lm_eval_on_an_offloaded_model_equals_the_plain_run(deep_tiny: Path, data_dir: Path, tmp_path: Path) -> None:
    """lm-eval's requests on the cpu + disk split: the same accuracy and per-item log-likelihoods as the plain run."""
    from collapse_bench.ood.samples import samples_path

    def lm(out: Path, **extra: object) -> tuple[dict, list[dict]]:
        req = EvaluateRequest(
            model=str(deep_tiny), tasks=["world_mc"], limit=12, batch_size=4, device="cpu", progress=False,
            data_dir=str(data_dir), output=str(out), **extra,  # type: ignore[arg-type]
        )  # fmt: skip
        block = evaluate(req)[1]["tasks"]["world_mc"]
        return block, [json.loads(line) for line in samples_path(out).read_text().splitlines()]

    plain, rec_plain = lm(tmp_path / "plain.json")
    mapped, rec_mapped = lm(tmp_path / "mapped.json", device_map=SPLIT, offload_folder=str(tmp_path / "offload"))
    assert mapped["counts"] == plain["counts"] and len(rec_mapped) == len(rec_plain) == plain["counts"]["docs"]
    for key in ("acc", "acc_norm"):
        assert mapped["metrics"][key] == plain["metrics"][key], key
    for a, b in zip(rec_mapped, rec_plain):
        assert a["doc_id"] == b["doc_id"] and max(abs(x - y) for x, y in zip(a["loglik"], b["loglik"])) <= 1e-5


def test_plasticity_refuses_an_offloaded_model_before_writing(deep_tiny: Path, data_dir: Path, tmp_path: Path) -> None:
    """Plasticity trains a LoRA on the loaded model: weights streamed from disk (on ``meta``) cannot be trained — one
    clear error, no result file (a multi-device map that keeps every weight on a device trains as usual; GPU only)."""
    common = dict(model=str(deep_tiny), tasks=["plasticity_quick"], limit=8, batch_size=4, device="cpu", progress=False)
    out = tmp_path / "mapped.json"
    with pytest.raises(CollapseBenchError, match="not on one offloaded by --device-map"):
        evaluate(
            EvaluateRequest(
                **common, data_dir=str(data_dir), output=str(out), device_map=SPLIT, offload_folder=str(tmp_path / "o")
            )
        )  # type: ignore[arg-type]
    assert not out.exists()
