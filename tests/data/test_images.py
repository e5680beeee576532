"""Image tasks: folders in both layouts, the paper's ImageNet layout, one-line image errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synque import SynqueError
from synque.data.images import image_key, read_image
from synque.stages.common import load_task
from tests.conftest import needs_data
from tests.fakes.images import draw, make_image_folder, write_images


@pytest.mark.parametrize("layout", ["classes", "manifest"])
def test_image_folder_layouts(make_cfg, tmp_path: Path, layout: str) -> None:
    root = make_image_folder(tmp_path / "pets", layout=layout, n_sets=2, n=12)
    task = load_task(make_cfg("+experiment=folder_repr", f"task.root={root}"))
    assert task.modality == "image"
    assert task.candidates("all") == ["set0", "set1"]
    frame = task.load_candidate("all", "set1")
    assert frame.height == 12 and {"image", "label", "text"} <= set(frame.columns)
    assert set(frame["label"]) == {"cat", "dog", "owl"}
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in frame["image"])
    assert task.real_sample("all", 1).height == 20
    assert task.real_test("all")["label"].n_unique() == 3
    task.preflight(1, images=True, test=True)  # every image readable


def test_grey_and_rgba_images_load_as_rgb(tmp_path: Path) -> None:
    for mode in ("L", "RGBA", "P"):
        path = tmp_path / f"x_{mode}.png"
        draw(1, 0, mode=mode).save(path)
        assert read_image(path).mode == "RGB"


def test_moved_image_keeps_its_identity(tmp_path: Path) -> None:
    a = tmp_path / "a.png"
    draw(0, 3).save(a)
    b = tmp_path / "sub" / "b.png"
    b.parent.mkdir()
    b.write_bytes(a.read_bytes())
    assert image_key(a) == image_key(b)
    draw(0, 4).save(b)
    assert image_key(a) != image_key(b)


def test_bad_images_stop_before_any_run_with_one_line(make_cfg, tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "pets", n_sets=2, n=12)
    broken = sorted((root / "synthetic" / "set1" / "cat").iterdir())
    broken[0].write_bytes(b"not an image")
    broken[1].unlink()
    task = load_task(make_cfg("+experiment=folder_repr", f"task.root={root}"))
    with pytest.raises(SynqueError) as info:
        task.preflight(1, images=True)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(broken[0])) and "not a readable image" in message
    assert "(1 of 11 images of set1 are bad)" in message  # a deleted file is not listed


def test_folder_mixing_text_and_images_is_an_error(make_cfg, tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "mixed", n_sets=1, n=6)
    (root / "synthetic" / "texts.jsonl").write_text(json.dumps({"text": "hi", "label": 1}))
    with pytest.raises(SynqueError, match="mixes text files"):
        load_task(make_cfg("+experiment=folder_repr", f"task.root={root}"))


def test_manifest_without_image_column(make_cfg, tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "m", layout="manifest", n_sets=1, n=6)
    (root / "synthetic" / "set0" / "manifest.jsonl").write_text(json.dumps({"path": "0.png"}))
    task = load_task(make_cfg("+experiment=folder_repr", f"task.root={root}"))
    with pytest.raises(SynqueError, match=r"manifest.jsonl: a manifest needs an 'image' column"):
        task.load_candidate("all", "set0")


def build_imagenet_root(task) -> int:  # noqa: ANN001
    """Write a tiny image at every path the (sliced) released lists name; returns how many."""
    count = 0
    for group in task.groups():
        frames = [task.load_candidate(group, n) for n in task.candidates(group)]
        frames += [task.real_pool(group), task.real_test(group)]
        for frame in frames:
            count += write_images(frame["image"], frame["label"])
    return count


IMAGE_SLICE = ["task=image", "task.max_groups=1", "task.max_candidates=2", "task.max_examples=30"]


@needs_data
def test_imagenet_layout_remaps_both_roots(make_cfg, tmp_path: Path) -> None:
    roots = [f"task.synthetic_root={tmp_path / 'gen'}", f"task.imagenet_root={tmp_path / 'inet'}"]
    task = load_task(make_cfg(*IMAGE_SLICE, *roots))
    frame = task.load_candidate("first_split", task.candidates("first_split")[0])
    assert frame["image"][0].startswith(str(tmp_path / "gen") + "/unmet_imagenet_")
    assert frame["text"][0].startswith(f"{frame['label'][0]}: <ROOT_DATA_PATH>/")  # as released
    real = task.real_sample("first_split", 42)
    assert real.height == 100 and real["image"][0].startswith(
        str(tmp_path / "inet") + "/validation/"
    )
    fresh = task.real_sample("first_split", 7)
    assert fresh["label"].value_counts()["count"].to_list() == [20] * 5
    assert set(task.real_test("first_split")["label"]) == set(real["label"])
    assert build_imagenet_root(task) > 0
    task.preflight(42, images=True, test=True)


@needs_data
def test_imagenet_wrong_root_names_the_setting(make_cfg, tmp_path: Path) -> None:
    roots = [f"task.synthetic_root={tmp_path / 'gen'}", f"task.imagenet_root={tmp_path / 'inet'}"]
    build_imagenet_root(load_task(make_cfg(*IMAGE_SLICE, *roots)))
    wrong = load_task(make_cfg(*IMAGE_SLICE, roots[0], f"task.imagenet_root={tmp_path / 'nope'}"))
    with pytest.raises(SynqueError) as info:
        wrong.preflight(42, images=True)
    assert str(info.value).startswith(str(tmp_path / "nope"))
    assert str(info.value).endswith("check task.imagenet_root")
    with pytest.raises(SynqueError, match="^task.imagenet_root: not set; the images are listed"):
        load_task(make_cfg(*IMAGE_SLICE)).preflight(42, images=True)
    no_synth = load_task(make_cfg(*IMAGE_SLICE, roots[1]))
    with pytest.raises(SynqueError, match="^task.synthetic_root: not set; .* <ROOT_DATA_PATH>/"):
        no_synth.preflight(42, images=True)
