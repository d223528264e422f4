"""The sepvit_* models as timm models: what timm's own tests/test_models.py checks, in our own words.

timm's suite (run against sepvit_* with the package registered) checks default cfgs, forward/backward,
feature extraction, FX tracing (timm's notrace leaves, torchvision's feature extractor) and TorchScript.
These tests hold the same properties here, plus torch.export and torch.compile(fullgraph=True).
TorchScript is not supported (README, "Decisions"): torch 2.14 deprecates torch.jit.script.
"""
from __future__ import annotations

import pytest
import timm
import torch
from timm.models import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import sepvit  # noqa: F401  (registers the models with timm)
from sepvit import PRESETS

SMALL = ["sepvit_nano_32", "sepvit_micro_32", "sepvit_micro_64", "sepvit_lite"]
LARGE = ["sepvit_tiny", "sepvit_small", "sepvit_base"]
FX_TRACER = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())


def _input(name: str, batch: int = 1, limit: int = 128) -> torch.Tensor:
    """An input at the model's size, capped at `limit` px (timm tests 224 models at 128: padded windows,
    resized window tokens)."""
    _, h, w = timm.models.get_pretrained_cfg(name).input_size
    return torch.randn(batch, 3, min(h, limit), min(w, limit), generator=torch.Generator().manual_seed(0))


def _check_default_cfg(name: str) -> None:
    with torch.device("meta"):  # shapes only: the 224 models cost nothing here
        model = timm.create_model(name).eval()
        bare = timm.create_model(name, num_classes=0, global_pool="")
    cfg, state = model.pretrained_cfg, model.state_dict()
    for key in ("input_size", "pool_size", "crop_pct", "interpolation", "mean", "std", "first_conv", "classifier",
                "num_classes"):
        assert cfg.get(key) is not None, f"{name}: pretrained cfg lacks {key}"
    assert cfg["first_conv"] + ".weight" in state and cfg["classifier"] + ".weight" in state
    assert model.output_fmt == "NHWC" and model.num_features == model.head_hidden_size > 0
    x = torch.zeros(1, *cfg["input_size"], device="meta")
    feats = model.forward_features(x)
    assert tuple(feats.shape[1:3]) == tuple(cfg["pool_size"]) and feats.shape[3] == model.num_features
    assert model.forward_head(feats, pre_logits=True).shape == (1, model.head_hidden_size)
    model.reset_classifier(0)
    assert model.num_classes == 0 and model(x).shape == (1, model.head_hidden_size)
    model.reset_classifier(0, "")
    assert tuple(model(x).shape[1:3]) == tuple(cfg["pool_size"])
    assert tuple(bare(x).shape) == (1, *cfg["pool_size"], model.num_features)


@pytest.mark.parametrize("name", list(PRESETS))
def test_default_cfgs_are_complete_and_match_the_model(name):
    _check_default_cfg(name)


@pytest.mark.parametrize("name", SMALL)
def test_forward_and_backward_reach_every_parameter(name):
    model = timm.create_model(name, num_classes=42).train()
    out = model(_input(name, batch=2))
    assert out.shape == (2, 42) and torch.isfinite(out).all()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize("name", ["sepvit_nano_32", "sepvit_lite"])
def test_fx_trace_computes_the_same_function(name):
    """timm's notrace leaves (blocks whose structure depends on the input's window grid, the input check)
    make the model symbolically traceable; the traced graph gives the same output bit for bit."""
    model = timm.create_model(name).eval()
    _, eval_nodes = get_graph_node_names(model, tracer_kwargs=FX_TRACER)
    traced = create_feature_extractor(model, return_nodes=[eval_nodes[-1]], tracer_kwargs=FX_TRACER)
    x = _input(name)
    with torch.no_grad():
        assert torch.equal(next(iter(traced(x).values())), model(x))


def test_fx_trace_in_training_gives_every_parameter_a_gradient():
    model = timm.create_model("sepvit_nano_32", num_classes=42).train()
    train_nodes, _ = get_graph_node_names(model, tracer_kwargs=FX_TRACER)
    traced = create_feature_extractor(model, train_return_nodes=[train_nodes[-1]],
                                      eval_return_nodes=[train_nodes[-1]], tracer_kwargs=FX_TRACER)
    next(iter(traced(_input("sepvit_nano_32", batch=2)).values())).mean().backward()
    assert all(p.grad is not None for p in traced.parameters())


@pytest.mark.parametrize("name", ["sepvit_nano_32", "sepvit_lite"])
def test_fx_feature_extractor_matches_forward_intermediates(name):
    torch.manual_seed(0)
    fx = timm.create_model(name, features_only=True, feature_cls="fx").eval()
    torch.manual_seed(0)  # the same weights
    getter = timm.create_model(name, features_only=True).eval()
    x = _input(name)
    with torch.no_grad():
        fx_out, getter_out = fx(x), getter(x)
    assert fx.feature_info.channels() == getter.feature_info.channels()
    assert len(fx_out) == len(getter_out) == 4
    for a, b in zip(fx_out, getter_out):  # FX features keep the model's NHWC, the getter gives NCHW
        torch.testing.assert_close(a.permute(0, 3, 1, 2), b, rtol=0, atol=0)


def test_torch_export_runs_the_same_function():
    model = timm.create_model("sepvit_nano_32").eval()
    x = _input("sepvit_nano_32", batch=2)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("fused", [True, False])
def test_torch_compile_captures_one_graph(fused):
    """fullgraph=True raises at the first graph break: the forward is one graph (dynamo, eager backend)."""
    torch._dynamo.reset()
    model = timm.create_model("sepvit_nano_32", fused_attn=fused).eval()
    x = _input("sepvit_nano_32", batch=2)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=1e-6)


@pytest.mark.slow
def test_torch_compile_with_inductor():
    torch._dynamo.reset()
    model = timm.create_model("sepvit_nano_32").eval()
    x = _input("sepvit_nano_32", batch=2)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGE)
def test_large_models_forward_backward_and_fx(name):
    model = timm.create_model(name, num_classes=42).train()
    model(_input(name, batch=2)).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    _, eval_nodes = get_graph_node_names(model, tracer_kwargs=FX_TRACER)
    traced = create_feature_extractor(model, return_nodes=[eval_nodes[-1]], tracer_kwargs=FX_TRACER)
    x = _input(name)
    with torch.no_grad():
        assert torch.equal(next(iter(traced(x).values())), model(x))
