import pytest
import torch

from jestflow.config import ModelConfig, load_config
from jestflow.core.losses import per_example_loss, sigmoid_loss
from jestflow.model.tokenizer import Tokenizer
from jestflow.model.two_tower import TwoTower, load_model, save_model


def test_tokenizer_round_trip(tmp_path):
    tok = Tokenizer.build(["a red t-shirt", "a blue bag"], context_length=5)
    ids = tok.encode(["a red bag", "unknown words here and more"])
    assert ids.shape == (2, 5)
    assert ids[0].tolist() == [tok.ids["a"], tok.ids["red"], tok.ids["bag"], 2, 0]
    assert ids[1].tolist()[-1] == 2 and ids[1].tolist()[0] == 1  # unk, truncated, EOS kept
    tok.save(str(tmp_path / "t.json"))
    assert Tokenizer.load(str(tmp_path / "t.json")).vocab == tok.vocab


@pytest.mark.parametrize("loss", ["sigmoid", "softmax"])
def test_two_tower_shapes_and_save_load(tmp_path, loss):
    cfg = load_config("smoke", overrides=[f"model.loss={loss}"]).model
    m = TwoTower(cfg, vocab_size=20)
    images = torch.randint(0, 255, (3, 40, 40, 3), dtype=torch.uint8)  # resized to 32 inside
    tokens = torch.tensor([[3, 4, 2, 0], [5, 2, 0, 0], [2, 0, 0, 0]])
    u, v = m(images, tokens)
    assert u.shape == v.shape == (3, cfg.embed_dim)
    torch.testing.assert_close(u.norm(dim=1), torch.ones(3))
    assert torch.isfinite(per_example_loss(loss, u, v, m.log_t, m.bias)).all()
    save_model(m, str(tmp_path / "m.pt"))
    m2 = load_model(str(tmp_path / "m.pt"))
    torch.testing.assert_close(m2(images, tokens)[0], u)


def test_padding_does_not_change_text_embedding():
    """Padding is masked out of attention and pooling: the same caption with or without 5 pad tokens."""
    m = TwoTower(ModelConfig(context_length=8), vocab_size=10).eval()
    padded = m.encode_text(torch.tensor([[3, 4, 2, 0, 0, 0, 0, 0]]))
    bare = m.encode_text(torch.tensor([[3, 4, 2]]))
    torch.testing.assert_close(padded, bare)


@pytest.mark.parametrize("arch", ["vit", "hf-siglip"])
@pytest.mark.parametrize("size", ["tiny", "small"])
@pytest.mark.parametrize("stride", [1, 2])
def test_flops_match_pytorchs_flop_counter(size, stride, arch):
    """The cost model's forward FLOPs equal what torch.utils.flop_counter counts in a real forward
    (attention through the math kernel, so its matrix products are counted too); for hf-siglip, a
    transformers SiglipModel with its attention-pooling head."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from jestflow.model.factory import build_model
    from jestflow.model.tokenizer import build_tokenizer

    c = load_config("smoke", overrides=[f"model.size={size}", f"model.arch={arch}"]).model
    m = build_model(c, build_tokenizer(arch, ["a red shirt", "a blue dress on the left"], c.context_length)).eval()
    images = torch.zeros(1, c.image_size, c.image_size, 3, dtype=torch.uint8)
    tokens = torch.ones(1, c.context_length, dtype=torch.long)
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        m(images, tokens, stride)
    assert m.flops_per_example(stride) == counter.get_total_flops()


def test_sigmoid_loss_learns_on_a_fixed_batch():
    torch.manual_seed(0)
    m = TwoTower(ModelConfig(), vocab_size=30)
    images = torch.randint(0, 255, (16, 32, 32, 3), dtype=torch.uint8)
    tokens = torch.randint(3, 30, (16, 16))
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    first = None
    for _ in range(30):
        u, v = m(images, tokens)
        loss = sigmoid_loss(u, v, m.log_t, m.bias)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad(), loss.backward(), opt.step()
    assert float(loss.detach()) < 0.5 * first


def test_patch_stride_keeps_a_quarter_of_the_patches():
    cfg = ModelConfig()
    m = TwoTower(cfg, vocab_size=10).eval()
    seen = []
    m.image.blocks[0].register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[1]))
    images = torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8)
    full, coarse = m.encode_image(images), m.encode_image(images, patch_stride=2)
    assert full.shape == coarse.shape and not torch.allclose(full, coarse)
    grid = cfg.image_size // cfg.patch_size
    assert seen == [grid * grid, (grid // 2) ** 2] == [64, 16]  # the blocks see a quarter of the tokens


def test_low_resolution_view_is_the_model_on_an_explicitly_downsampled_image():
    """Flexi-JEST's cheap view (patch_stride 2) equals the same weights on the image area-downsampled
    by 2, with the position embeddings resized to the smaller grid: the whole image at patch size 2p."""
    import dataclasses

    import torch.nn.functional as F

    torch.manual_seed(0)
    cfg = ModelConfig()
    m = TwoTower(cfg, vocab_size=10).eval()
    half = TwoTower(dataclasses.replace(cfg, image_size=cfg.image_size // 2), vocab_size=10).eval()
    state = m.state_dict()
    state["image.pos"] = m.image.position(2).detach()
    half.load_state_dict(state)
    images = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    down = F.avg_pool2d(images.permute(0, 3, 1, 2).float(), 2).permute(0, 2, 3, 1)  # 3 x 16 x 16 x 3, [0, 255]
    with torch.no_grad():
        torch.testing.assert_close(m.encode_image(images, patch_stride=2), half.encode_image(down))
        # every pixel counts: change one pixel of a patch the old every-other-patch view skipped
        changed = images.clone()
        changed[:, 4, 4] = 255 - changed[:, 4, 4]
        assert not torch.allclose(m.encode_image(images, patch_stride=2), m.encode_image(changed, patch_stride=2))


def test_position_embeddings_resize_bilinearly():
    import torch.nn.functional as F

    m = TwoTower(ModelConfig(), vocab_size=10)
    g = 8
    grid = m.image.pos.reshape(1, g, g, -1).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(4, 4), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(m.image.position(2), want.permute(0, 2, 3, 1).reshape(1, 16, -1))
    assert m.image.position(1) is m.image.pos
