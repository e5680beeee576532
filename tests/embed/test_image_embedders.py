"""Image embedders: decoding, content keys, pixels by hand, packaged models, HF, torchvision."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from synque import SynqueError
from synque.components import build
from synque.embed import (
    EfficientNetLite0Embedder,
    HFImageEmbedder,
    InceptionFIDEmbedder,
    LibraryImageEmbedder,
    PixelEmbedder,
    read_image,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "embedder"


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def save(tmp_path: Path, name: str, array: np.ndarray, mode: str | None = None) -> str:
    path = tmp_path / name
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return str(path)


def pixels(tmp_path: Path, **settings) -> PixelEmbedder:
    return PixelEmbedder(cache_dir=tmp_path / "cache", progress=False, **settings)


def tiny_images(tmp_path: Path, count: int = 3) -> list[str]:
    """Mixed sizes and modes: the embedders must resize and convert each one."""
    rng = np.random.default_rng(0)
    shapes = [(8, 8), (13, 21, 3), (30, 17, 4)]
    return [
        save(tmp_path, f"tiny{i}.png", rng.integers(0, 256, shapes[i % 3], dtype=np.uint8))
        for i in range(count)
    ]


def test_pixels_of_a_hand_made_rgb_image_are_its_values_over_255(tmp_path: Path) -> None:
    array = np.array(
        [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], dtype=np.uint8
    )
    vec = pixels(tmp_path, size=2).embed([save(tmp_path, "a.png", array)])
    expected = [1, 0, 0, 0, 1, 0, 0, 0, 1, 10 / 255, 20 / 255, 30 / 255]  # row, column, channel
    np.testing.assert_allclose(vec[0], expected, atol=1e-7)


def test_pixels_resize_averages_blocks_with_box_filter(tmp_path: Path) -> None:
    block = np.array([[10, 20], [30, 40]], dtype=np.uint8)  # mean 25
    array = np.tile(block, (2, 2))  # every 2x2 block is `block`...
    array[2:, 2:] = 200  # ...but the last, which is constant
    vec = pixels(tmp_path, size=2, grey=True, resample="box").embed(
        [save(tmp_path, "b.png", array)]
    )
    np.testing.assert_allclose(vec[0] * 255, [25, 25, 25, 200], atol=1e-4)


def test_grey_setting_uses_luma_and_grey_files_become_three_equal_channels(tmp_path: Path) -> None:
    colour = save(tmp_path, "c.png", np.full((3, 3, 3), (100, 150, 200), np.uint8))
    luma = (100 * 299 + 150 * 587 + 200 * 114) / 1000  # ITU-R 601: 140.75
    grey_vec = pixels(tmp_path, size=3, grey=True).embed([colour])
    assert grey_vec.shape == (1, 9)
    np.testing.assert_allclose(grey_vec[0] * 255, luma, atol=1.0)

    grey_file = save(tmp_path, "g.png", np.full((4, 4), 77, np.uint8))
    assert Image.open(grey_file).mode == "L"
    rgb_vec = pixels(tmp_path, size=4).embed([grey_file])
    np.testing.assert_allclose(rgb_vec[0] * 255, 77, atol=1e-4)


def test_rgba_is_laid_over_white_and_16_bit_grey_is_scaled(tmp_path: Path) -> None:
    rgba = np.array(
        [[[0, 0, 0, 0], [200, 100, 0, 255], [0, 0, 0, 128]]], dtype=np.uint8
    )  # transparent, opaque, half transparent black
    vec = pixels(tmp_path, size=3, resample="nearest").embed([save(tmp_path, "t.png", rgba)])
    got = vec[0].reshape(3, 3, 3)[0] * 255  # first row (the one row, stretched to three)
    np.testing.assert_allclose(got[0], [255, 255, 255], atol=1e-4)
    np.testing.assert_allclose(got[1], [200, 100, 0], atol=1e-4)
    np.testing.assert_allclose(got[2], 255 * (1 - 128 / 255), atol=1.0)

    deep = np.array([[0, 32896, 65535]], dtype=np.uint16)  # 0, 50 %, 100 %
    vec16 = pixels(tmp_path, size=3, grey=True, resample="nearest").embed(
        [save(tmp_path, "d.png", deep)]
    )
    np.testing.assert_allclose(vec16[0].reshape(3, 3)[0], [0, 0.5, 1], atol=1 / 255)


def test_cache_hits_a_moved_file_and_misses_a_changed_one(tmp_path: Path) -> None:
    embedder = pixels(tmp_path, size=4)
    first = tmp_path / "one.png"
    save(tmp_path, "one.png", np.full((4, 4, 3), 50, np.uint8))
    before = embedder.embed([str(first)])
    moved = tmp_path / "elsewhere" / "renamed.png"
    moved.parent.mkdir()
    first.rename(moved)
    again = pixels(tmp_path, size=4)  # a new process would open the same cache file
    np.testing.assert_array_equal(again.embed([str(moved)]), before)
    assert again.stats["cache_hits"] == 1 and again.stats["embedded"] == 0

    Image.fromarray(np.full((4, 4, 3), 60, np.uint8)).save(moved)
    changed = again.embed([str(moved)])
    assert again.stats["embedded"] == 1
    np.testing.assert_allclose(changed[0], 60 / 255, atol=1e-6)


def test_mixed_sizes_give_one_dimension(tmp_path: Path) -> None:
    vecs = pixels(tmp_path, size=5).embed(tiny_images(tmp_path))
    assert vecs.shape == (3, 75)
    assert ((vecs >= 0) & (vecs <= 1)).all()


def test_unreadable_and_missing_files_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    with pytest.raises(SynqueError, match="broken.png: cannot be read as an image"):
        pixels(tmp_path).embed([str(broken)])
    with pytest.raises(SynqueError, match="missing.png: cannot read the file"):
        pixels(tmp_path).embed([str(tmp_path / "missing.png")])


def test_settings_are_checked_and_change_the_id(tmp_path: Path) -> None:
    with pytest.raises(SynqueError, match="embedder.dtype: unknown value 'float16'"):
        EfficientNetLite0Embedder(cache_dir=tmp_path, dtype="float16")
    with pytest.raises(SynqueError, match="embedder.size: 16 is too small"):
        EfficientNetLite0Embedder(cache_dir=tmp_path, size=16)
    ids = {
        EfficientNetLite0Embedder(cache_dir=tmp_path, size=s, dtype=d).id
        for s in (64, 224)
        for d in ("float32", "bfloat16")
    }
    assert len(ids) == 4
    assert pixels(tmp_path, grey=True).id != pixels(tmp_path).id


def test_configs_build_through_the_component_check(tmp_path: Path) -> None:
    for name, cls in [
        ("pixels", PixelEmbedder),
        ("efficientnet_lite0", EfficientNetLite0Embedder),
        ("inception_fid", InceptionFIDEmbedder),
    ]:
        node = OmegaConf.load(CONFIGS / f"{name}.yaml")
        assert isinstance(build(node, "embedder", cache_dir=tmp_path, progress=False), cls)
    node = OmegaConf.load(CONFIGS / "torchvision.yaml")
    with pytest.raises(SynqueError, match="embedder.model: required setting is missing"):
        build(node, "embedder", cache_dir=tmp_path)


def test_efficientnet_lite0_gives_finite_1280_d_features(tmp_path: Path) -> None:
    paths = tiny_images(tmp_path)
    fp32 = EfficientNetLite0Embedder(cache_dir=tmp_path / "c", progress=False).embed(paths)
    assert fp32.shape == (3, 1280) and np.isfinite(fp32).all()
    assert not np.allclose(fp32[0], fp32[1])  # different images, different vectors
    bf16 = EfficientNetLite0Embedder(
        cache_dir=tmp_path / "c", dtype="bfloat16", progress=False
    ).embed(paths)
    relative = np.linalg.norm(bf16 - fp32, axis=1) / np.linalg.norm(fp32, axis=1)
    assert relative.max() < 0.1


def test_efficientnet_features_feed_the_imagenet_classifier(tmp_path: Path) -> None:
    """The pooled features, fed to the packaged classifier head, must name the photo of Grace
    Hopper (matplotlib's sample) a military uniform (ImageNet class 652): fails when the
    weights do not load, the pooling is wrong or the channels are scrambled."""
    from matplotlib import cbook

    photo = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    embedder = EfficientNetLite0Embedder(cache_dir=tmp_path, size=224, progress=False)
    features = torch.from_numpy(embedder.embed([photo]))
    with torch.inference_mode():
        logits = embedder.model()._fc(features)
    assert int(logits.argmax()) == 652


def test_inception_fid_gives_finite_2048_d_pool_features(tmp_path: Path) -> None:
    vecs = InceptionFIDEmbedder(cache_dir=tmp_path / "c", progress=False).embed(
        tiny_images(tmp_path, 2)
    )
    assert vecs.shape == (2, 2048) and np.isfinite(vecs).all()
    assert (vecs >= 0).all()  # average pool of ReLU outputs


def test_torchvision_model_by_name_gives_the_pooled_features(tmp_path: Path) -> None:
    """Random resnet18 weights with a 10-class head (a fine-tuned checkpoint) saved to a file:
    the vectors must equal the network's pooled features (fc removed) on ImageNet-normalised
    input, computed here by hand."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    net.fc = torch.nn.Linear(512, 10)
    weights = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), weights)
    paths = tiny_images(tmp_path, 2)
    embedder = LibraryImageEmbedder(
        cache_dir=tmp_path / "c", library="torchvision", model="resnet18",
        weights=str(weights), size=32, progress=False,
    )
    vecs = embedder.embed(paths)
    resized = Image.open(paths[0]).convert("RGB").resize((32, 32), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(resized, np.float32) / 255).permute(2, 0, 1)[None]
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    net.fc = torch.nn.Identity()
    with torch.inference_mode():
        expected = net(x).numpy()
    assert vecs.shape == (2, 512)
    np.testing.assert_allclose(vecs[:1], expected, rtol=1e-4, atol=1e-5)
    wrong = LibraryImageEmbedder(
        cache_dir=tmp_path / "c", library="torchvision", model="resnet34", weights=str(weights)
    )
    with pytest.raises(SynqueError, match="resnet18.pth does not fit torchvision resnet34"):
        wrong.embed(paths)


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed")
def test_missing_optional_library_is_a_one_line_error(tmp_path: Path) -> None:
    embedder = LibraryImageEmbedder(cache_dir=tmp_path, library="timm", model="resnet18")
    with pytest.raises(SynqueError, match=r"package 'timm' is not installed \(pip install timm\)"):
        embedder.embed(tiny_images(tmp_path, 1))


def test_hf_vit_path_matches_the_model_called_directly(tmp_path: Path) -> None:
    """A tiny randomly initialised ViT saved with its image processor: its vectors mean
    nothing; the test proves the code path (Auto classes, processor, pooler output)."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
        image_size=32, patch_size=8,
    )
    folder = tmp_path / "tiny-vit"
    model = ViTModel(config).eval()
    model.save_pretrained(folder)
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    processor.save_pretrained(folder)
    paths = tiny_images(tmp_path)
    vecs = HFImageEmbedder(cache_dir=tmp_path / "c", model=str(folder), progress=False).embed(paths)
    images = [read_image(p) for p in paths]  # RGBA laid over white, as the embedder does
    with torch.inference_mode():
        expected = model(**processor(images=images, return_tensors="pt")).pooler_output.numpy()
    assert vecs.shape == (3, 32)
    np.testing.assert_allclose(vecs, expected, rtol=1e-4, atol=1e-5)
    mean_pool = HFImageEmbedder(
        cache_dir=tmp_path / "c", model=str(folder), pooling="mean", progress=False
    )
    assert mean_pool.id != HFImageEmbedder(cache_dir=tmp_path / "c", model=str(folder)).id
    assert not np.allclose(mean_pool.embed(paths), vecs)


def test_hf_clip_path_uses_the_projected_image_embedding(tmp_path: Path) -> None:
    """A tiny random CLIP (both towers) saved with its processor: meaningless vectors, but they
    must be the projected image features (projection_dim wide), as get_image_features gives."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    tower = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 37}
    config = CLIPConfig(
        text_config=tower, vision_config={**tower, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    folder = tmp_path / "tiny-clip"
    model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32)
    processor.save_pretrained(folder)
    paths = tiny_images(tmp_path, 2)
    vecs = HFImageEmbedder(cache_dir=tmp_path / "c", model=str(folder), progress=False).embed(paths)
    images = [read_image(p) for p in paths]  # RGBA laid over white, as the embedder does
    with torch.inference_mode():
        pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
        pooled = model.vision_model(pixel_values=pixel_values).pooler_output
        expected = model.visual_projection(pooled).numpy()
    assert vecs.shape == (2, 16)
    np.testing.assert_allclose(vecs, expected, rtol=1e-4, atol=1e-5)


def test_hf_model_not_available_offline_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    embedder = HFImageEmbedder(cache_dir=tmp_path, model="nobody/no-such-image-model")
    with pytest.raises(SynqueError, match="embedder.model: cannot load nobody/no-such-image-model"):
        embedder.embed(tiny_images(tmp_path, 1))
