"""The offline digits task: real splits on disk, PNG value mapping, candidate generators."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synque import SynqueError
from synque.data import digits, digits_io
from synque.data.digits import (
    DIGITS_STRATEGIES,
    generate_digits_set,
    load_real_digits,
    prepare_digits_task,
    split_digits,
    write_digits_candidates,
    write_image_set,
    zipf_counts,
)
from synque.data.digits_io import from_grey, read_digit_png, read_labeled_folder, to_grey
from synque.data.digits_render import block_counts

SMALL = {"n_test": 200, "n_generator": 100}


@pytest.fixture(scope="module")
def task_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One prepared task for the read-only tests (writing 1,797 PNGs takes a second)."""
    return prepare_digits_task(tmp_path_factory.mktemp("digits"), seed=3, **SMALL)


def _pngs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png"))


def _arrays(items: list[tuple[np.ndarray, str]]) -> tuple[np.ndarray, list[str]]:
    return np.stack([image for image, _ in items]), [label for _, label in items]


def test_split_is_disjoint_stratified_and_seeded() -> None:
    _, labels = load_real_digits()
    parts = split_digits(labels, seed=0, n_test=600, n_generator=400)
    sizes = {name: len(index) for name, index in parts.items()}
    assert sizes == {"real/sample": 797, "real/test": 600, "generator_fit": 400}
    union = np.concatenate(list(parts.values()))
    assert len(np.unique(union)) == len(labels) == 1797  # disjoint and complete
    share = np.bincount(labels) / len(labels)
    for name, index in parts.items():
        counts = np.bincount(labels[index], minlength=10)
        assert np.all(np.abs(counts - share * sizes[name]) <= 1.0), name  # stratified
    again = split_digits(labels, seed=0, n_test=600, n_generator=400)
    other = split_digits(labels, seed=1, n_test=600, n_generator=400)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    assert not np.array_equal(parts["real/test"], other["real/test"])


def test_split_sizes_are_checked() -> None:
    _, labels = load_real_digits()
    with pytest.raises(SynqueError, match="n_generator"):
        split_digits(labels, seed=0, n_test=600, n_generator=5)
    with pytest.raises(SynqueError, match="too few"):
        split_digits(labels, seed=0, n_test=1000, n_generator=790)


def test_grey_mapping_by_hand(tmp_path: Path) -> None:
    values = np.array([0, 1, 8, 15, 16])
    # v*255/16 = 0, 15.94, 127.5, 239.06, 255 -> rounded (halves up)
    assert to_grey(values).tolist() == [0, 16, 128, 239, 255]
    every = np.arange(17)
    assert np.array_equal(from_grey(to_grey(every)), every)
    image = np.arange(64).reshape(8, 8) % 17
    digits_io.write_digit_png(tmp_path / "a.png", image)
    with Image.open(tmp_path / "a.png") as png:
        assert (png.format, png.mode, png.size) == ("PNG", "L", (8, 8))
        assert np.array_equal(np.asarray(png), to_grey(image))
    assert np.array_equal(read_digit_png(tmp_path / "a.png"), image)
    with pytest.raises(SynqueError, match="0..16"):
        to_grey(np.array([17]))
    Image.new("RGB", (8, 8)).save(tmp_path / "rgb.png")
    with pytest.raises(SynqueError, match="rgb.png: expected an 8x8 greyscale PNG"):
        read_digit_png(tmp_path / "rgb.png")


def test_prepared_layout_holds_the_real_images(task_root: Path) -> None:
    images, labels = load_real_digits()
    parts = split_digits(labels, seed=3, **SMALL)
    sample = _pngs(task_root / "real" / "sample")
    assert len(sample) == len(parts["real/sample"]) == 1497
    assert all(p.parent == task_root / "real" / "sample" for p in sample)  # flat, unlabeled
    first = read_digit_png(sample[0])
    assert np.array_equal(first, images[parts["real/sample"][0]])
    for part in ("real/test", "generator_fit"):
        stored, names = read_labeled_folder(task_root / part)
        assert len(names) == len(parts[part])
        expected = {(images[i].tobytes(), str(labels[i])) for i in parts[part]}
        assert {(a.tobytes(), n) for a, n in zip(stored, names, strict=True)} == expected
    manifest = json.loads((task_root / "digits.json").read_text())
    assert manifest["real"]["counts"] == {
        "real/sample": 1497,
        "real/test": 200,
        "generator_fit": 100,
    }


def test_prepare_is_idempotent_and_refuses_another_split(task_root: Path) -> None:
    marker = _pngs(task_root / "real" / "test")[0]
    stamp = marker.stat().st_mtime_ns
    assert prepare_digits_task(task_root, seed=3, **SMALL) == task_root
    assert marker.stat().st_mtime_ns == stamp  # left as it is
    with pytest.raises(SynqueError, match=r"digits\.json: the real split was prepared with"):
        prepare_digits_task(task_root, seed=4, **SMALL)


def test_a_deleted_part_is_made_again(task_root: Path) -> None:
    root = task_root
    before = read_labeled_folder(root / "generator_fit")
    shutil.rmtree(root / "generator_fit")
    prepare_digits_task(root, seed=3, **SMALL)
    after = read_labeled_folder(root / "generator_fit")
    assert np.array_equal(before[0], after[0]) and before[1] == after[1]


def test_killed_prepare_is_finished_by_the_next_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(folder: Path, items: object) -> Path:
        raise KeyboardInterrupt  # the process dies after real/sample, before the others

    monkeypatch.setattr(digits, "write_image_set", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare_digits_task(tmp_path, seed=0, **SMALL)
    assert (tmp_path / "real" / "sample").is_dir()
    assert not (tmp_path / "digits.json").exists()  # not marked complete
    assert not (tmp_path / "real" / "test").exists()
    (tmp_path / "real" / "sample" / "junk.png").write_bytes(b"left over")
    monkeypatch.undo()
    prepare_digits_task(tmp_path, seed=0, **SMALL)
    assert len(_pngs(tmp_path / "real" / "sample")) == 1497  # rewritten, junk gone
    assert len(_pngs(tmp_path / "real" / "test")) == 200
    assert not list(tmp_path.rglob(".*.tmp-*"))


def test_write_image_set_is_atomic(tmp_path: Path) -> None:
    image = np.full((8, 8), 16, dtype=np.uint8)
    folder = write_image_set(tmp_path / "set", [(image, "3"), (image * 0, "7"), (image, "3")])
    assert sorted(str(p.relative_to(folder)) for p in _pngs(folder)) == [
        "3/0000.png",
        "3/0002.png",
        "7/0001.png",
    ]

    with pytest.raises(RuntimeError):
        write_image_set(tmp_path / "set", _Failing(image))
    with pytest.raises(RuntimeError):
        write_image_set(tmp_path / "half", _Failing(image))
    assert not (tmp_path / "half").exists()
    assert len(_pngs(tmp_path / "set")) == 3  # the old complete set survives
    assert [p.name for p in tmp_path.iterdir()] == ["set"]  # no temporary folder left
    write_image_set(tmp_path / "set", [(image, "5")])
    assert [str(p.relative_to(tmp_path)) for p in _pngs(tmp_path)] == ["set/5/0000.png"]


class _Failing(list):
    """A sequence whose second item fails to read, as a crashing generator would."""

    def __init__(self, image: np.ndarray) -> None:
        super().__init__([(image, "1"), (image, "2")])

    def __iter__(self):
        yield self[0]
        raise RuntimeError("died half way")


def test_block_counts_by_hand() -> None:
    bitmap = np.zeros((1, 32, 32), dtype=bool)
    bitmap[0, :4, :4] = True  # one full block
    bitmap[0, 4:6, 8:12] = True  # half a block
    bitmap[0, 31, 31] = True  # one pixel of the last block
    counts = block_counts(bitmap)[0]
    assert counts.shape == (8, 8)
    assert (counts[0, 0], counts[1, 2], counts[7, 7]) == (16, 8, 1)
    assert counts.sum() == 16 + 8 + 1


@pytest.mark.parametrize("strategy", sorted(DIGITS_STRATEGIES))
def test_every_strategy_yields_n_labeled_images(strategy: str, task_root: Path) -> None:
    items = generate_digits_set(strategy, n=150, seed=0, fit_root=task_root / "generator_fit")
    images, labels = _arrays(items)
    assert images.shape == (150, 8, 8) and images.dtype == np.uint8
    assert images.max() <= 16 and images.max() > 0
    assert set(labels) <= {str(d) for d in range(10)}
    counts = Counter(labels)
    if not {"zipf", "label_noise"} & set(DIGITS_STRATEGIES[strategy]):
        assert sorted(counts.values()) == [15] * 10  # balanced
    else:
        assert len(counts) == 10


def test_generation_is_deterministic_per_seed(task_root: Path) -> None:
    fit = task_root / "generator_fit"
    for strategy in ("font_aug_heavy", "pca_gaussian"):
        first, labels = _arrays(generate_digits_set(strategy, n=60, seed=5, fit_root=fit))
        again, labels_again = _arrays(generate_digits_set(strategy, n=60, seed=5, fit_root=fit))
        other, _ = _arrays(generate_digits_set(strategy, n=60, seed=6, fit_root=fit))
        assert np.array_equal(first, again) and labels == labels_again
        assert not np.array_equal(first, other)


def test_zipf_counts_by_hand() -> None:
    # weights 1, 1/2, 1/3 (sum 11/6): 100 * (6/11, 3/11, 2/11) = 54.55, 27.27, 18.18;
    # floors 54, 27, 18 leave 1 for the largest remainder (0.55).
    assert zipf_counts(100, 3, 1.0).tolist() == [55, 27, 18]
    assert zipf_counts(1000, 10, 2.0).sum() == 1000


def test_zipf_strategy_is_skewed(task_root: Path) -> None:
    items = generate_digits_set(
        "zipf_imbalance", n=1000, seed=2, fit_root=task_root / "generator_fit"
    )
    counts = sorted(Counter(label for _, label in items).values(), reverse=True)
    assert counts == zipf_counts(1000, 10, DIGITS_STRATEGIES["zipf_imbalance"]["zipf"]).tolist()
    assert counts[0] > 20 * counts[-1]


def test_label_noise_flips_forty_percent_of_the_clean_source(task_root: Path) -> None:
    fit = task_root / "generator_fit"
    noisy, noisy_labels = _arrays(
        generate_digits_set("label_noise_40", n=500, seed=1, fit_root=fit)
    )
    clean, clean_labels = _arrays(generate_digits_set("pca_gaussian", n=500, seed=1, fit_root=fit))
    assert np.array_equal(noisy, clean)  # a label-free proxy sees the very same images
    flipped = sum(a != b for a, b in zip(noisy_labels, clean_labels, strict=True))
    assert flipped == 200


def test_pca_sampler_reads_only_generator_fit(
    task_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fit = task_root / "generator_fit"
    reads: list[Path] = []
    real_reader = digits_io.read_digit_png
    monkeypatch.setattr(digits_io, "read_digit_png", lambda p: reads.append(p) or real_reader(p))
    items = generate_digits_set("pca_gaussian", n=100, seed=0, fit_root=fit)
    assert len(reads) == 100 and all(fit in p.parents for p in reads)
    # A fit folder on its own (no real/ next to it) gives the same set.
    alone = tmp_path / "fit_only"
    write_image_set(alone, list(zip(*read_labeled_folder(fit), strict=True)))
    moved = generate_digits_set("pca_gaussian", n=100, seed=0, fit_root=alone)
    assert np.array_equal(_arrays(items)[0], _arrays(moved)[0])


def test_strategy_errors_are_one_line(task_root: Path) -> None:
    with pytest.raises(SynqueError, match="did you mean 'font_clean'"):
        generate_digits_set("font_clen", seed=0)
    with pytest.raises(
        SynqueError, match="unknown option 'rotation' \\(did you mean 'rotation_deg'"
    ):
        generate_digits_set("font_clean", seed=0, rotation=5)
    with pytest.raises(SynqueError, match="pca_gaussian needs fit_root"):
        generate_digits_set("pca_gaussian", n=10, seed=0)
    custom = generate_digits_set("my_font", n=20, seed=0, kind="font", faces=["DejaVuSerif"])
    assert len(custom) == 20


def test_write_candidates_once_per_recipe(task_root: Path) -> None:
    chosen = {"font_clean": {}, "pca_gaussian_coarse": {}}
    folders = write_digits_candidates(task_root, seed=0, n=40, strategies=chosen)
    assert set(folders) == set(chosen)
    assert all(len(_pngs(folder)) == 40 for folder in folders.values())
    stamp = _pngs(folders["font_clean"])[0].stat().st_mtime_ns
    write_digits_candidates(task_root, seed=0, n=40, strategies=chosen)
    assert _pngs(folders["font_clean"])[0].stat().st_mtime_ns == stamp
    with pytest.raises(SynqueError, match="candidate 'font_clean' was prepared with"):
        write_digits_candidates(task_root, seed=1, n=40, strategies={"font_clean": {}})


def test_fonts_fall_back_to_matplotlibs_faces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the system DejaVu fonts, the faces matplotlib ships (those with digits) serve."""
    from synque.data import digits_render

    caches = (digits_render.available_faces, digits_render._glyph)
    monkeypatch.setattr(digits_render, "FONT_DIRS", (tmp_path / "no-fonts",))
    for cache in caches:
        cache.cache_clear()
    try:
        faces = digits_render.available_faces()
        assert faces and not any(face.endswith("Display") for face in faces)
        images, labels = _arrays(generate_digits_set("font_aug_light", n=40, seed=0))
        assert images.shape == (40, 8, 8) and len(set(labels)) == 10
    finally:
        for cache in caches:
            cache.cache_clear()
