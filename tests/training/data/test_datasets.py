"""Training data sets: VOC lists + labels, image folders, synthetic sets; errors; augmentation; batching."""
import json

import numpy as np
import pytest
from PIL import Image
from seam.training.data.augment import (
    AugmentConfig,
    AugmentedDataset,
    augment,
    color_jitter,
    random_crop,
    random_resize_long,
)
from seam.training.data.datasets import (
    DatasetError,
    build_dataset,
    detect_dataset_kind,
    eval_items,
    load_folder,
    load_synth,
    load_voc,
    shared_voc12_dir,
)
from seam.training.data.loader import EpochBatchSampler, make_loader
from seam.training.data.synth import generate

from seam.common.classes import VOC_CLASSES


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root, n=12, seed=0, size=48)
    return root


def _img(path, colour=(200, 30, 30), size=(40, 30)):
    Image.fromarray(np.full((size[1], size[0], 3), colour, np.uint8)).save(path)


def test_synth_set_loads_with_its_classes(synth_set):
    ds = load_synth(synth_set)
    assert ds.class_names == ["background", "disc", "square", "triangle", "ring", "cross"]
    assert ds.num_classes == 6 and len(ds) == 9  # 12 images, 3 in val
    table = np.load(synth_set / "cls_labels.npy", allow_pickle=True).item()
    for i, row in zip(ds.ids, ds.labels, strict=True):
        assert np.array_equal(row, table[i])
    assert ds.gt_dir == synth_set / "SegmentationClass"
    assert detect_dataset_kind(synth_set) == "synth"
    assert build_dataset("auto", synth_set).fingerprint() == ds.fingerprint()
    val = load_synth(synth_set, split="val")
    assert len(val) == 3 and val.fingerprint() != ds.fingerprint()


def test_eval_items_default_to_the_training_list(synth_set):
    ds = load_synth(synth_set)
    items = eval_items(ds, None)
    assert [i for i, _, _ in items] == ds.ids
    val_items = eval_items(ds, synth_set / "ImageSets" / "Segmentation" / "val.txt")
    assert len(val_items) == 3 and all(lab == ds.label_indices(i) for i, _, lab in val_items)


def test_voc_layout_with_own_list_and_labels(tmp_path):
    root = tmp_path / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    for i in ("2007_000032", "2007_000039"):
        _img(root / "JPEGImages" / f"{i}.jpg")
    lst = tmp_path / "mine.txt"
    lst.write_text("/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n2007_000039\n")
    labels = tmp_path / "cls.npy"
    v1, v2 = np.zeros(20, np.float32), np.zeros(20, np.float32)
    v1[[0, 14]] = 1
    v2[6] = 1
    np.save(labels, {"2007_000032": v1, "2007_000039": v2})
    ds = load_voc(root, lst, labels)
    assert ds.class_names == list(VOC_CLASSES) and ds.ids == ["2007_000032", "2007_000039"]
    assert ds.label_indices("2007_000032") == [0, 14] and ds.gt_dir is None
    assert eval_items(ds, None) == []  # no SegmentationClass/: nothing to score
    bad = tmp_path / "bad.txt"
    bad.write_text("2007_000032\n2008_999999\n")
    with pytest.raises(DatasetError, match="not found"):
        load_voc(root, bad, labels)
    np.save(labels, {"2007_000032": v1})
    with pytest.raises(DatasetError, match="no labels"):
        load_voc(root, lst, labels)


def test_voc_defaults_are_the_authors_files():
    shared = shared_voc12_dir()
    if not (shared / "train_aug.txt").is_file():
        pytest.skip("shared voc12 lists absent")
    assert len((shared / "train_aug.txt").read_text().splitlines()) == 10582
    table = np.load(shared / "cls_labels.npy", allow_pickle=True).item()
    assert len(next(iter(table.values()))) == 20


def _folder(tmp_path, labels_text, suffix=".csv"):
    d = tmp_path / "imgs"
    d.mkdir()
    _img(d / "a.jpg", (220, 20, 20))
    _img(d / "b.png", (20, 20, 220))
    _img(d / "c.jpg", (20, 220, 20))
    (d / f"labels{suffix}").write_text(labels_text)
    return d


def test_folder_with_csv_labels(tmp_path):
    d = _folder(tmp_path, "image,labels\na.jpg,cat;dog\nb.png,bird\nc.jpg,\"dog,bird\"\n")
    ds = load_folder(d)
    assert ds.class_names == ["background", "bird", "cat", "dog"]  # sorted names from the file
    assert ds.ids == ["a", "b", "c"] and ds.paths[1].name == "b.png"
    assert ds.labels.tolist() == [[0, 1, 1], [1, 0, 0], [1, 0, 1]]
    assert detect_dataset_kind(d) == "folder"
    ds2 = load_folder(d, classes="dog,cat,bird,fish")  # explicit order, extra class allowed
    assert ds2.class_names == ["background", "dog", "cat", "bird", "fish"]
    assert ds2.labels[0].tolist() == [1, 1, 0, 0]


def test_folder_with_json_labels_and_classes_file(tmp_path):
    d = _folder(tmp_path, json.dumps({"a.jpg": ["cat"], "b": ["bird", "cat"], "c": []}), ".json")
    (d / "classes.txt").write_text("background\ncat\nbird\n")
    ds = load_folder(d)
    assert ds.class_names == ["background", "cat", "bird"]
    assert ds.labels.tolist() == [[1, 0], [1, 1], [0, 0]]


def test_folder_errors_are_clear(tmp_path):
    d = _folder(tmp_path, "a.jpg,cat\nb.png,zebra\n")
    with pytest.raises(DatasetError, match="zebra"):
        load_folder(d, classes="cat,dog")
    (d / "labels.csv").write_text("a.jpg,cat\nmissing.jpg,cat\n")
    with pytest.raises(DatasetError, match="missing"):
        load_folder(d)
    (d / "labels.csv").write_text("a.jpg,cat\nb.png,cat\n")
    (d / "b.png").write_bytes(b"definitely not a png")
    with pytest.raises(DatasetError, match="unreadable"):
        load_folder(d)
    with pytest.raises(DatasetError, match="label file"):
        load_folder(tmp_path / "imgs", labels=tmp_path / "nope.csv")
    with pytest.raises(DatasetError, match="not found"):
        build_dataset("auto", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="unknown dataset kind"):
        build_dataset("coco", d)
    with pytest.raises(DatasetError, match="background"):
        load_folder(d, classes="cat,background")


def test_unreadable_image_at_load_time(tmp_path):
    d = _folder(tmp_path, "a.jpg,cat\nb.png,dog\n")
    ds = load_folder(d)
    (d / "b.png").write_bytes(b"corrupted later")
    sample = AugmentedDataset(ds, AugmentConfig(crop=32), seed=0)
    with pytest.raises(DatasetError, match="b.png"):
        sample[(1, 0)]


def test_augmentation_shapes_padding_and_determinism():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8))
    cfg = AugmentConfig(crop=64)
    assert cfg.resize_range == (64, 110)  # [448, 768] * 64 / 448
    assert AugmentConfig().resize_range == (448, 768)
    assert AugmentConfig(crop=64, resize_long=(40, 50)).resize_range == (40, 50)
    a = augment(img, cfg, np.random.default_rng([1, 2, 3]))
    b = augment(img, cfg, np.random.default_rng([1, 2, 3]))
    c = augment(img, cfg, np.random.default_rng([1, 2, 4]))
    assert a.shape == (3, 64, 64) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    small = AugmentConfig(crop=64, resize_long=(32, 32), jitter=None, flip=False)
    x = augment(img, small, np.random.default_rng(0))  # 32 x 21 placed in a 64 x 64 zero container
    nonzero = np.argwhere(np.abs(x).sum(0) > 0)
    assert (nonzero.max(0) - nonzero.min(0) + 1).tolist() == [21, 32]


def test_random_crop_and_resize_by_hand():
    arr = np.arange(5 * 7 * 1, dtype=np.float32).reshape(5, 7, 1) + 1
    out = random_crop(arr, 4, np.random.default_rng(0))
    assert out.shape == (4, 4, 1) and (out > 0).all()  # larger than the crop in both directions
    out = random_crop(arr, 9, np.random.default_rng(0))
    assert (out > 0).sum() == 35 and out.sum() == arr.sum()  # whole image inside zero padding
    im = Image.new("RGB", (100, 50))
    r = random_resize_long(im, 40, 40, np.random.default_rng(0))
    assert r.size == (40, 20)


def test_color_jitter_ranges():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    same = color_jitter(img, np.random.default_rng(0), 0, 0, 0, 0)
    assert np.array_equal(np.asarray(same), np.asarray(img))
    out = np.asarray(color_jitter(img, np.random.default_rng(0)))
    assert out.shape == (16, 16, 3) and not np.array_equal(out, np.asarray(img))


def test_batches_partition_the_global_batch_across_ranks():
    full = list(EpochBatchSampler(20, 8, seed=0, epoch=3))
    assert len(full) == 2 and all(len(b) == 8 for b in full)  # last partial batch dropped
    shares = [list(EpochBatchSampler(20, 8, seed=0, epoch=3, rank=r, world=2)) for r in range(2)]
    for i in range(2):
        assert shares[0][i] + shares[1][i] == full[i]
    assert list(EpochBatchSampler(20, 8, seed=0, epoch=3, start_batch=1)) == full[1:]
    assert list(EpochBatchSampler(20, 8, seed=0, epoch=4)) != full
    with pytest.raises(ValueError, match="divisible"):
        EpochBatchSampler(20, 8, 0, 0, world=3)


def test_loader_yields_augmented_batches(synth_set):
    ds = AugmentedDataset(load_synth(synth_set), AugmentConfig(crop=32), seed=0)
    loader = make_loader(ds, 4, epoch=0)
    batches = list(loader)
    assert len(batches) == 2
    img, label, _ = batches[0]
    assert img.shape == (4, 3, 32, 32) and label.shape == (4, 5)
    again = next(iter(make_loader(ds, 4, epoch=0)))
    assert np.array_equal(again[0].numpy(), img.numpy())
