import pytest
import torch
from timm.layers import SEModule

from pulmo.errors import ConfigError
from pulmo.models import create_model, model_names
from pulmo.models.layers.attention import (
    ATTENTION_BLOCKS,
    ComponentAttention,
    SESpatialAttention,
    SpatialAttention,
    SqueezeExcite,
)

# Every registered model, with the keyword variants the registry-wide test runs.
CASES = {
    "resnet18_attn": [{"attn": attn} for attn in ATTENTION_BLOCKS],
    "conv_vit": [
        {"conv": conv, "attention": att, "vit": vit, "input_size": (64, 32)}
        for conv, att, vit in [(False, False, "deit_tiny_patch16_224"), (True, False, "deit_tiny_patch16_224"),
                               (True, True, "deit_tiny_patch16_224"), (True, True, "deit_tiny_distilled_patch16_224")]
    ],
    "efficientnet_lite0": [{"pretrained": ""}],
    "vbreathnet": [{}],
    "small_cnn": [{}, {"widths": (8, 8, 16, 16), "drop_rate": 0.0}],
    "transfer": [{"backbone": "mobilenet_v2"}, {"backbone": "efficientnet_lite0"}],
}
CNNS = {"resnet18_attn", "efficientnet_lite0", "vbreathnet", "transfer", "small_cnn"}
MULTI_TASK = {"rr_lstm"}  # dict outputs; forward/backward over every variant in test_resp_rate_core.py
VARIANTS = [(name, kwargs) for name, cases in CASES.items() for kwargs in cases]


def test_cases_cover_the_registry():
    assert set(CASES) | MULTI_TASK == set(model_names())


@pytest.mark.parametrize("name, kwargs", VARIANTS, ids=lambda v: str(v))
def test_forward_backward_every_parameter_gets_a_gradient(name, kwargs):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, in_chans=1, **kwargs)
    x = torch.randn(2, 1, 64, 32)
    out = model(x)
    assert out.shape == (2, 4) and model.num_classes == 4
    out.square().sum().backward()
    for pname, p in model.named_parameters():
        if not p.requires_grad:  # frozen backbones of the transfer baselines
            continue
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    if name in CNNS:
        assert hasattr(model, "cam_layer")


@pytest.mark.parametrize("attn, cls", [("se", SqueezeExcite), ("spatial", SpatialAttention),
                                       ("se_spatial", SESpatialAttention), ("component", ComponentAttention)])
def test_every_residual_module_has_its_attention_block(attn, cls):
    model = create_model("resnet18_attn", attn=attn)
    assert sum(isinstance(m, cls) for m in model.modules()) == 8  # 4 stages x 2 modules
    plain = create_model("resnet18_attn", attn="none")
    assert not any(isinstance(m, tuple(c for c in ATTENTION_BLOCKS.values() if c)) for m in plain.modules())


def test_export_matches_eager():
    model = create_model("resnet18_attn", attn="se_spatial").eval()
    x = torch.randn(1, 1, 64, 32)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), model(x))


def test_squeeze_excite_matches_timm_reference():
    torch.manual_seed(0)
    ours, ref = SqueezeExcite(32, reduction=16), SEModule(32, rd_ratio=1 / 16, rd_divisor=1)
    with torch.no_grad():
        ref.fc1.weight.copy_(ours.fc1.weight[:, :, None, None])
        ref.fc1.bias.copy_(ours.fc1.bias)
        ref.fc2.weight.copy_(ours.fc2.weight[:, :, None, None])
        ref.fc2.bias.copy_(ours.fc2.bias)
    x = torch.randn(2, 32, 5, 7)
    torch.testing.assert_close(ours(x), ref(x))


def test_spatial_component_and_combined_follow_equations():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 7)
    sp = SpatialAttention(8)
    a_sp = torch.sigmoid(torch.einsum("bchw,c->bhw", x, sp.conv.weight[0, :, 0, 0]) + sp.conv.bias)[:, None]
    torch.testing.assert_close(sp(x), a_sp * x)  # eqs. 3-4: one weight per location
    co = ComponentAttention(8)
    a_co = torch.sigmoid(torch.einsum("bchw,dc->bdhw", x, co.conv.weight[:, :, 0, 0]) + co.conv.bias[None, :, None, None])
    torch.testing.assert_close(co(x), a_co * x)  # eqs. 6-7: one weight per element
    both = SESpatialAttention(8, reduction=4)
    expected = both.se.attention(x) * both.spatial.attention(x) * x  # eq. 5
    torch.testing.assert_close(both(x), expected)


def test_errors():
    with pytest.raises(ConfigError, match="unknown attention 'cbam'"):
        create_model("resnet18_attn", attn="cbam")
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("resnet1000")
    with pytest.raises(ConfigError, match="invalid arguments for model 'resnet18_attn'.*pretrained"):
        create_model("resnet18_attn", pretrained="deit.pth")
    with pytest.raises(ValueError, match=r"\(B, C, F, T\)"):
        create_model("resnet18_attn")(torch.randn(1, 64, 32))
