"""The model: reference numbers, each switch doing what it says, timm interface, any input size."""
from __future__ import annotations

import io
import json
import re

import pytest
import timm
import timm.optim
import torch
from fvcore.nn import FlopCountAnalysis

import sepvit  # registers the models with timm
from sepvit import (
    BLOCK_PATTERNS,
    DepthwiseSeparableSelfAttention,
    GroupedSelfAttention,
    SepViTBlock,
    SepViTConfig,
    record_attention,
)
from sepvit.layers import window_partition, window_reverse

# (params M, fvcore MACs G) of the authors' models at 224 (reference notes).
REFERENCE = {
    "sepvit_lite": (3.66, 0.57),
    "sepvit_tiny": (31.18, 4.53),
    "sepvit_small": (46.57, 7.48),
    "sepvit_base": (82.38, 13.08),
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fvcore_macs(model: torch.nn.Module, size: int) -> int:
    counter = FlopCountAnalysis(model.eval(), torch.randn(1, 3, size, size))
    counter.unsupported_ops_warnings(False)
    counter.uncalled_modules_warnings(False)
    return counter.total()


def set_fused(model: torch.nn.Module, fused: bool) -> None:
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = fused


def micro(**changes) -> SepViTConfig:
    """A 32 px model small enough for fast tests, with every switch still active."""
    base = dict(embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 2, 4))
    return SepViTConfig.preset("sepvit_micro_32", **{**base, **changes})


# ---------------------------------------------------------------------------------- reference numbers
@pytest.mark.parametrize("name", list(REFERENCE))
def test_params_and_fvcore_macs_match_reference(name):
    params_ref, macs_ref = REFERENCE[name]
    model = timm.create_model(name, fused_attn=False)
    assert abs(n_params(model) / 1e6 / params_ref - 1) < 0.005
    assert abs(fvcore_macs(model, 224) / 1e9 / macs_ref - 1) < 0.015


def test_zero_window_token_removes_exactly_the_authors_token_parameters():
    learnable = timm.create_model("sepvit_tiny")
    zero = timm.create_model("sepvit_tiny", window_token="zero")
    assert n_params(learnable) - n_params(zero) == 14_592


def test_learnable_tokens_start_at_zero_so_both_token_kinds_agree_at_init():
    torch.manual_seed(0)
    learnable = micro().build().eval()
    zero = micro(window_token="zero").build().eval()
    missing = zero.load_state_dict(learnable.state_dict(), strict=False)
    assert all(".window_token." in k for k in missing.unexpected_keys) and missing.unexpected_keys
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(learnable(x), zero(x))


# ---------------------------------------------------------------------------------- switches
def _window_isolation(block: SepViTBlock, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Change one pixel of window (0, 0); return the block output change inside and outside that window."""
    torch.manual_seed(0)
    x = torch.randn(1, 16, 16, block.norm1.normalized_shape[0])
    y = block(x)
    x2 = x.clone()
    x2[0, 1, 1] += 3.0 * torch.randn(x.shape[-1])  # not a constant: LayerNorm would erase that
    delta = (block(x2) - y).abs()
    outside = delta.clone()
    outside[0, :window, :window] = 0
    return delta[0, :window, :window].amax(), outside.amax()


@pytest.mark.parametrize("dssa", [False, True])
def test_dssa_switch_controls_whether_windows_exchange_information(dssa):
    block = SepViTBlock(16, DepthwiseSeparableSelfAttention(16, 2, 4, (4, 4), pwa=dssa)).eval()
    with torch.no_grad():  # tokens are zero at init; make them distinct so PWA has something to attend with
        if block.attn.window_token is not None:
            block.attn.window_token.tokens.normal_()
    inside, outside = _window_isolation(block, 4)
    assert inside > 1e-3
    if dssa:
        assert outside > 1e-4, "PWA must carry the change to other windows"
    else:
        assert outside == 0, "window attention alone must leave the other windows untouched"


def test_gsa_schedule_at_224_gives_16_then_4_windows_in_stage_2():
    model = timm.create_model("sepvit_tiny").eval()
    with torch.no_grad(), record_attention(model) as maps:
        model(torch.randn(1, 3, 224, 224))
    dwa = {r["block"]: r["attn"].shape[1] for r in maps if r["kind"] in ("dwa", "msa")}
    assert dwa["stages.1.blocks.0"] == 16 and dwa["stages.1.blocks.1"] == 4
    assert [dwa[f"stages.2.blocks.{i}"] for i in range(6)] == [4, 1] * 3  # grouped stage-3 blocks are global
    assert dwa["stages.0.blocks.0"] == 64 and dwa["stages.3.blocks.0"] == 1

    plain = timm.create_model("sepvit_tiny", gsa=False).eval()
    with torch.no_grad(), record_attention(plain) as maps:
        plain(torch.randn(1, 3, 224, 224))
    plain_dwa = {r["block"]: r["attn"].shape[1] for r in maps if r["kind"] in ("dwa", "msa")}
    assert plain_dwa["stages.1.blocks.1"] == 16 and plain_dwa["stages.2.blocks.1"] == 4


def test_group_size_per_stage_sets_the_grouped_window():
    cfg = micro(group_size=(1, 4, 2, 1))
    assert cfg.block_window_sizes(1) == (4, 16) and cfg.block_window_sizes(2) == (4, 8)
    assert micro(gsa=False).block_window_sizes(1) == (4, 4)
    assert micro(group_size=1).block_window_sizes(1) == (4, 4)


def test_local_only_model_has_no_grouped_windows():
    """dssa=False is the local-only model: GSA groups are DSSA blocks, so no block gets a bigger window."""
    local = micro(dssa=False)
    assert all(local.block_window_sizes(s) == (4,) * local.depths[s] for s in range(local.num_stages))
    model = local.build().eval()
    with torch.no_grad(), record_attention(model) as maps:
        model(torch.randn(1, 3, 32, 32))
    windows = {r["block"]: (r["kind"], r["attn"].shape[1]) for r in maps}
    # 8x8, 4x4, 2x2 windows in stages 1-3 (no PWA, no grouped block); stage 4's 4x4 map is one window
    assert windows["stages.0.blocks.0"] == ("dwa", 64)
    assert windows["stages.1.blocks.1"] == ("dwa", 16) and windows["stages.2.blocks.1"] == ("dwa", 4)
    assert windows["stages.3.blocks.0"] == ("msa", 1)
    assert not any(kind == "pwa" for kind, _ in windows.values())


@pytest.mark.parametrize("pattern", BLOCK_PATTERNS)
@pytest.mark.parametrize("size", [32, 37])
def test_fused_and_explicit_attention_agree(pattern, size):
    torch.manual_seed(0)
    model = micro(block_pattern=pattern).build().eval()
    for module in model.modules():  # non-zero tokens so the token path is exercised too
        if getattr(module, "tokens", None) is not None:
            torch.nn.init.normal_(module.tokens)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        set_fused(model, True)  # the micro preset itself runs the explicit path
        fused = model(x)
        set_fused(model, False)
        explicit = model(x)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["learnable", "avgpool", "dwconv"])
def test_gradients_reach_the_window_tokens(mode):
    model = micro(window_token=mode).build()
    model(torch.randn(2, 3, 32, 32)).logsumexp(-1).sum().backward()
    tokens = [m.tokens for m in model.modules() if getattr(m, "tokens", None) is not None]
    convs = [m.conv.weight for m in model.modules() if getattr(m, "conv", None) is not None]
    if mode == "learnable":
        assert len(tokens) == 4  # stage 1, stage 2 plain + grouped, stage 3 plain
        assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in tokens)
    else:
        assert tokens == []
    if mode == "dwconv":
        assert len(convs) == 4 and all(w.grad is not None and w.grad.abs().sum() > 0 for w in convs)
    else:
        assert convs == []


def test_avgpool_token_is_the_mean_of_the_windows_valid_pixels():
    attn = DepthwiseSeparableSelfAttention(8, 2, 4, (2, 2), window_token="avgpool")
    x = torch.randn(1, 7, 7, 8)  # padded to 8x8: the last row/column of windows have fewer pixels
    tokens = attn.window_token(x, grid=(2, 2), window=(4, 4), pad=(1, 1))
    torch.testing.assert_close(tokens[0, 0], x[0, :4, :4].mean((0, 1)))
    torch.testing.assert_close(tokens[0, 3], x[0, 4:, 4:].mean((0, 1)))


def test_dwconv_token_is_a_depthwise_conv_over_each_padded_window():
    attn = DepthwiseSeparableSelfAttention(8, 2, 4, (2, 2), window_token="dwconv")
    conv = attn.window_token.conv
    assert conv.weight.shape == (8, 1, 4, 4)  # one weight per pixel position and channel
    x = torch.randn(1, 7, 7, 8)  # padded to 8x8 with zeros
    tokens = attn.window_token(x, grid=(2, 2), window=(4, 4), pad=(1, 1))
    first = (x[0, :4, :4].permute(2, 0, 1) * conv.weight[:, 0]).sum((1, 2)) + conv.bias
    last = (x[0, 4:, 4:].permute(2, 0, 1) * conv.weight[:, 0, :3, :3]).sum((1, 2)) + conv.bias
    torch.testing.assert_close(tokens[0, 0], first)
    torch.testing.assert_close(tokens[0, 3], last)


@pytest.mark.parametrize("inner_shortcuts", [True, False])
def test_inner_shortcuts_follow_the_authors_code_or_the_papers_equations(inner_shortcuts):
    """DSSA recomputed from its parts: authors' code d = DWA(z) + z, out = proj(PWA(t, p) + p); paper equations
    d = DWA(z), out = proj(PWA(t, p)), with (t, p) = split(d) and z = [tokens, windows of LN(x)]."""
    torch.manual_seed(0)
    attn = DepthwiseSeparableSelfAttention(8, 2, 4, (2, 2), inner_shortcuts=inner_shortcuts).eval()
    norm = torch.nn.LayerNorm(8)
    x = torch.randn(2, 8, 8, 8)  # 2 x 2 windows of 4 x 4: no padding
    tokens = norm(attn.window_token(x, grid=(2, 2), window=(4, 4), pad=(0, 0)))
    z = torch.cat([tokens.unsqueeze(2), window_partition(norm(x), 4, 4)], dim=2)
    d = attn.dwa(z) + (z if inner_shortcuts else 0)
    pixels = d[:, :, 1:]
    mixed = attn.pwa(d[:, :, 0], pixels) + (pixels if inner_shortcuts else 0)
    expected = attn.proj(window_reverse(mixed, 4, 4, 8, 8))
    torch.testing.assert_close(attn(x, norm), expected)
    model = micro(inner_shortcuts=inner_shortcuts).build()  # the config's switch reaches every DSSA unit
    units = [m for m in model.modules() if isinstance(m, DepthwiseSeparableSelfAttention)]
    assert units and all(m.inner_shortcuts is inner_shortcuts for m in units)


def test_ope_and_cpe_switches():
    model = micro(ope=False, cpe=False).build()
    assert model.stages[0].patch_embed.proj.kernel_size == (1, 1)
    assert model.stages[1].patch_embed.proj.kernel_size == (2, 2)
    assert all(stage.cpe is None for stage in model.stages)
    model = micro().build()
    assert model.stages[1].patch_embed.proj.kernel_size == (3, 3)
    assert all(stage.cpe is not None for stage in model.stages)
    assert timm.create_model("sepvit_tiny").stages[0].patch_embed.proj.kernel_size == (7, 7)


@pytest.mark.parametrize("pattern", BLOCK_PATTERNS)
def test_every_block_pattern_trains(pattern):
    torch.manual_seed(0)
    model = micro(block_pattern=pattern, num_classes=4).build().train()
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_block_patterns_share_everything_but_the_attention():
    names = {}
    for pattern in BLOCK_PATTERNS:
        model = micro(block_pattern=pattern).build()
        names[pattern] = {n for n, _ in model.named_parameters() if ".blocks." not in n}
        kinds = {type(m).__name__ for m in model.modules()}
        assert ("SepViTBlock" in kinds) == (pattern == "sepvit")
    assert len({frozenset(v) for v in names.values()}) == 1


# ---------------------------------------------------------------------------------- serialisation
def test_state_dict_round_trips_through_a_weights_only_load():
    torch.manual_seed(0)
    model = micro().build().eval()
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "config": model.config.to_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    clone = SepViTConfig.from_dict(saved["config"]).build().eval()
    clone.load_state_dict(saved["model"])
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), clone(x))


def test_config_dict_round_trips_through_json():
    cfg = micro(group_size=(1, 3, 2, 1), window_token="avgpool", ope=False, drop_path_rate=0.1)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert SepViTConfig.from_dict(data) == cfg
    assert cfg.diff(micro()) == {"group_size": [1, 3, 2, 1], "window_token": "avgpool", "ope": False,
                                 "drop_path_rate": 0.1}


def test_every_config_field_is_a_timm_kwarg():
    model = timm.create_model("sepvit_tiny", gsa=False, block_pattern="swin", num_classes=7, drop_path_rate=0.1)
    assert model.config == SepViTConfig(gsa=False, block_pattern="swin", num_classes=7, drop_path_rate=0.1)
    model = timm.create_model("sepvit_micro_32", window_token="zero", embed_dims=[16, 32, 64, 128],
                              num_heads=[1, 2, 2, 4])
    assert model.config.embed_dims == (16, 32, 64, 128) and model.config.window_token == "zero"


# ---------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(window_size=0), "window_size must be >= 1"),
        (dict(num_heads=(3, 5, 12, 24)), "num_heads=5 does not divide embed_dims=192"),
        (dict(block_pattern="cswin"), "unknown block_pattern 'cswin'"),
        (dict(window_token="conv"), "unknown window_token 'conv'"),
        (dict(group_size=0), "group_size must be >= 1"),
        (dict(group_size=3), "the largest group size that fits is 2"),
        (dict(group_size=(2, 5, 2, 2)), "the largest group size that fits is 4"),
        (dict(window_token="zero", dssa=False), "has no effect with dssa=False"),
        (dict(block_pattern="swin", window_token="avgpool"), "only applies to block_pattern='sepvit'"),
        (dict(depths=(1, 2, 6)), "embed_dims has 4 entries but depths has 3"),
        (dict(drop_path_rate=1.5), "drop_path_rate must be in [0, 1)"),
    ],
)
def test_bad_configurations_say_what_to_change(changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        SepViTConfig(**changes)


def test_unknown_dict_field_is_refused():
    with pytest.raises(ValueError, match="unknown SepViTConfig field"):
        SepViTConfig.from_dict({"windw_size": 7})


# ---------------------------------------------------------------------------------- timm interface
def test_timm_interface():
    model = micro().build().eval()
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (2, 4, 4, 128)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 128)
    torch.testing.assert_close(model.forward_head(feats), model(x))
    final, inter = model.forward_intermediates(x)
    assert [t.shape for t in inter] == [(2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8), (2, 128, 4, 4)]
    torch.testing.assert_close(final, feats)
    model.reset_classifier(5)
    assert model(x).shape == (2, 5) and model.config.num_classes == 5
    no_wd = model.no_weight_decay()
    assert any(".window_token.tokens" in n for n in no_wd) and any(".cpe.proj.weight" in n for n in no_wd)
    assert not any(".qkv." in n for n in no_wd)


def test_timm_features_only_and_optimizer_factory():
    model = timm.create_model("sepvit_micro_32", features_only=True, out_indices=(1, 3))
    outs = model(torch.randn(1, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [64, 256] and model.feature_info.reduction() == [2, 8]
    classifier = timm.create_model("sepvit_micro_32")
    groups = timm.optim.create_optimizer_v2(classifier, "adamw", lr=1e-3, weight_decay=0.05).param_groups
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    tokens = [m.tokens for m in classifier.modules() if getattr(m, "tokens", None) is not None]
    assert tokens and all(id(t) in no_decay for t in tokens)
    layer_groups = timm.models.group_parameters(classifier, classifier.group_matcher())
    assert len(layer_groups) > 4


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = micro().build()
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for name, grad in reference.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------- input sizes
@pytest.mark.parametrize("pattern", BLOCK_PATTERNS)
@pytest.mark.parametrize("size", [(32, 32), (45, 29), (64, 64), (17, 17)])
def test_inputs_of_any_size(pattern, size):
    model = micro(block_pattern=pattern).build().eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


def test_learnable_tokens_are_resampled_to_a_new_window_grid():
    model = micro().build().eval()
    token = model.stages[0].blocks[0].attn.window_token
    with torch.no_grad():
        token.tokens.copy_(torch.arange(64.0).reshape(1, 8, 8, 1).expand(1, 8, 8, 16))
        same = token(torch.zeros(1, 32, 32, 16), grid=(8, 8), window=(4, 4), pad=(0, 0))
        coarse = token(torch.zeros(1, 16, 16, 16), grid=(4, 4), window=(4, 4), pad=(0, 0))
    assert same.shape == (1, 64, 16) and torch.equal(same[0, :, 0], torch.arange(64.0))
    assert coarse.shape == (1, 16, 16)  # bilinear: the 4x4 grid averages 2x2 neighbourhoods
    torch.testing.assert_close(coarse[0, 0, 0], torch.tensor(4.5))


def test_wrong_channel_count_is_a_clear_error():
    model = micro().build()
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, 3, height, width\)"):
        model(torch.randn(1, 1, 32, 32))


# ---------------------------------------------------------------------------------- block specs: the structure, once
def _built(cfg: SepViTConfig):
    with torch.device("meta"):
        return cfg.build()


def test_specs_state_the_authors_window_schedule_and_the_model_follows_them():
    cfg = SepViTConfig.preset("sepvit_tiny")
    specs = cfg.stage_specs()
    assert [[b.kind for b in s.blocks] for s in specs] == [["dssa"], ["dssa", "gsa"], ["dssa", "gsa"] * 3,
                                                           ["dssa", "dssa"]]
    assert [[b.label for b in s.blocks] for s in specs][:2] == [["DSSA 7->64"], ["DSSA 7->16", "GSA 14->4"]]
    assert specs[2].blocks[1].global_attention and specs[3].blocks[0].global_attention
    assert [s.reduction for s in specs] == [4, 8, 16, 32] and [s.map_size for s in specs] == [56, 28, 14, 7]
    model = _built(cfg)
    for stage_spec, stage in zip(specs, model.stages):
        assert stage.stride == stage_spec.reduction
        for spec, block in zip(stage_spec.blocks, stage.blocks):
            assert isinstance(block, SepViTBlock)
            assert isinstance(block.attn, GroupedSelfAttention) == (spec.kind == "gsa")  # GSA is named where built
            assert block.attn.window_size == spec.window and block.attn.stride == spec.stride
            assert (block.attn.window_token is not None) == (block.attn.pwa is not None) == spec.separable


@pytest.mark.parametrize("pattern,units", [
    ("swin", [("WindowMultiHeadAttention", "swin", False), ("WindowMultiHeadAttention", "swin", True)]),
    ("twins", [("WindowMultiHeadAttention", "twins_local", False), ("GlobalSubsampledAttention", "twins_global", None)]),
    ("msa", [("GlobalMultiHeadAttention", "msa", False), ("GlobalMultiHeadAttention", "msa", False)]),
    ("local", [("WindowMultiHeadAttention", "local", False), ("WindowMultiHeadAttention", "local", False)]),
])
def test_each_pattern_builds_its_units_from_the_specs(pattern, units):
    model = _built(micro(block_pattern=pattern))
    for block, (name, kind, shift) in zip(model.stages[1].blocks, units):
        assert type(block.attn).__name__ == name and block.attn.probe.kind == kind
        assert getattr(block.attn, "shift", None) == shift


def test_a_new_pattern_of_existing_kinds_is_one_table_entry(monkeypatch):
    from sepvit import config

    monkeypatch.setitem(config.PATTERN_KINDS, "local_then_global", ("local", "msa"))
    model = micro(block_pattern="local_then_global").build().eval()
    assert [type(b.attn).__name__ for b in model.stages[1].blocks] == ["WindowMultiHeadAttention",
                                                                      "GlobalMultiHeadAttention"]
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_local_pattern_keeps_windows_apart():
    """block_pattern='local': window attention only (the peers' block form), no exchange between windows."""
    spec = micro(block_pattern="local").block_spec(1, 0)  # a 16x16 map, window 4
    block = sepvit.make_block(spec).eval()
    torch.manual_seed(0)
    x = torch.randn(1, 16, 16, spec.dim)
    x2 = x.clone()
    x2[0, 1, 1] += 3.0 * torch.randn(spec.dim)
    with torch.no_grad():
        delta = (block(x2) - block(x)).abs()
    assert delta[0, :4, :4].amax() > 1e-3
    delta[0, :4, :4] = 0
    assert delta.amax() == 0


def test_summary_prints_the_specs():
    from sepvit.summary import describe

    text = describe(SepViTConfig.preset("sepvit_tiny"))
    assert "DSSA 7->16, GSA 14->4" in text and "GSA global" in text and "31,182,856" in text


# ---------------------------------------------------------------------------------- regularisation switches
def test_dropouts_sit_where_the_authors_put_them():
    model = micro(proj_drop_rate=0.1, attn_drop_rate=0.2, drop_rate=0.3).build()
    p = {name: m.p for name, m in model.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert p["head_drop"] == 0.3  # drop_rate: before the head only
    assert all(p[f"stages.{s}.pos_drop"] == 0.1 for s in range(4))  # after each patch embedding
    block = "stages.0.blocks.0"
    assert p[f"{block}.attn.proj_drop"] == p[f"{block}.mlp.drop1"] == p[f"{block}.mlp.drop2"] == 0.1
    assert p[f"{block}.attn.dwa.attn_drop"] == p[f"{block}.attn.pwa.attn_drop"] == 0.2
    swin = micro(block_pattern="swin", proj_drop_rate=0.1, attn_drop_rate=0.2).build()
    q = {name: m.p for name, m in swin.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert q[f"{block}.attn.attn_drop"] == 0.2 and q[f"{block}.attn.proj_drop"] == 0.1


@pytest.mark.parametrize("fused", [True, False])
def test_dropout_acts_in_training_only(fused, monkeypatch):
    torch.manual_seed(0)
    model = micro(proj_drop_rate=0.1, attn_drop_rate=0.2, fused_attn=fused).build()
    plain = micro(fused_attn=fused).build()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    seen = []
    original = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: seen.append(k.get("dropout_p", 0.0)) or original(*a, **k))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), plain.eval()(x), rtol=0, atol=0)
        eval_calls = seen[:]
        seen.clear()
        trained = model.train()(x)
        train_calls = seen[:]
        assert not torch.allclose(trained, plain.train()(x))
    if fused:  # the fused kernel gets the attention dropout in training only
        assert eval_calls and set(eval_calls) == {0.0} and set(train_calls) == {0.2}
    else:
        assert eval_calls == train_calls == []


def test_attention_dropout_alone_changes_training_outputs():
    torch.manual_seed(0)
    model = micro(attn_drop_rate=0.5, fused_attn=False).build().train()
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, model(x))


@pytest.mark.parametrize("name", ["proj_drop_rate", "attn_drop_rate"])
def test_dropout_rates_are_checked(name):
    with pytest.raises(ValueError, match=f"{name} must be in"):
        SepViTConfig(**{name: 1.0})


# ---------------------------------------------------------------------------------- checkpoints
def test_checkpoints_saved_before_dssa_was_a_module_still_load():
    """Workbench checkpoints of the earlier layout kept window_token/dwa/pwa/proj directly under the block."""
    torch.manual_seed(0)
    model = micro().build().eval()
    old = {re.sub(r"(blocks\.\d+)\.attn\.(window_token|dwa|pwa|proj)\.", r"\1.\2.", k): v
           for k, v in model.state_dict().items()}
    assert "stages.0.blocks.0.dwa.qkv.weight" in old and "stages.0.blocks.0.attn.dwa.qkv.weight" not in old
    torch.manual_seed(1)
    clone = micro().build().eval()
    clone.load_state_dict(old)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)


def test_init_by_name_shares_the_init_of_every_module_two_configurations_share():
    from sepvit.layers import init_by_name

    with_gsa, without_gsa = micro().build(), micro(gsa=False).build()
    init_by_name(with_gsa, seed=3)
    init_by_name(without_gsa, seed=3)
    a, b = with_gsa.state_dict(), without_gsa.state_dict()
    shared = [k for k in a if k in b and a[k].shape == b[k].shape]
    assert "stages.0.patch_embed.proj.weight" in shared and "head.weight" in shared
    assert all(torch.equal(a[k], b[k]) for k in shared)
    assert set(a) != set(b)  # GSA's own modules exist only in one of them
    again = micro().build()
    init_by_name(again, seed=4)
    assert not torch.equal(again.state_dict()["head.weight"], a["head.weight"])  # the seed still matters
    assert 0.015 < a["head.weight"].std().item() < 0.025  # still the authors' trunc-normal(0.02) draw


def test_the_null_change_is_null_in_training_gradients_too():
    """The calibration's null change (fused_attn flipped) computes the same training step: the runner's model in
    training mode, one batch, gradients of every parameter within 1e-5 relative (measured 4e-7, docs/benchmark-log.md)
    and no systematic sign. What the two kernels' runs differ by afterwards is rounding amplified by training."""
    torch.manual_seed(0)
    config = SepViTConfig.preset("sepvit_nano_32")
    explicit, fused = config.replace(fused_attn=False).build().train(), config.replace(fused_attn=True).build().train()
    fused.load_state_dict(explicit.state_dict())
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 10
    grads = []
    for model in (explicit, fused):
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    difference = grads[1] - grads[0]
    assert grads[0].norm() > 0 and difference.norm() / grads[0].norm() < 1e-5
    assert abs(difference.mean()) < 1e-3 * grads[0].abs().mean()


@pytest.mark.parametrize("preset", ["sepvit_nano_32", "sepvit_tiny"])
def test_without_gsa_the_first_stage_already_relates_every_window_to_every_other(preset):
    """Why GSA adds no reach in SepViT's geometry (docs/benchmark-log.md, "why every GSA probe races"): stage 1's
    windows tile the image 8 x 8, so its one DSSA block's PWA is global over windows, and DWA first spreads each
    window's pixels over its places: one output pixel of stage 1 depends on the input in every window, GSA or not.
    The local-only model's (dssa=False) depends on its own window and what the 3x3 convolutions leak from the next."""
    def windows_reached(**changes):
        torch.manual_seed(0)
        cfg = SepViTConfig.preset(preset, **changes)
        model = cfg.build()
        side = cfg.img_size
        x = torch.randn(1, 3, side, side, requires_grad=True)
        model.stages[0](x)[0, 1, 1].sum().backward()  # one pixel of the top-left window
        window_px = side // 8
        reach = x.grad.abs().sum(1)[0].reshape(8, window_px, 8, window_px).sum((1, 3))
        return int((reach > 0).sum())

    assert SepViTConfig.preset(preset).stage_spec(0).blocks[0].token_grid == (8, 8)
    assert windows_reached(gsa=False) == 64
    assert windows_reached(dssa=False) <= 4
