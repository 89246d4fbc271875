"""LFW pairs files (both header formats, every malformed row) and face loading."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import pytest
import torch
from torchvision.io import encode_jpeg

from conftest import real_data
from vislab.data.lfw import (
    Pair,
    check_pairs,
    default_pairs_files,
    find_image_dir,
    list_people,
    load_faces,
    parse_pairs,
)
from vislab.errors import VislabError


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


VIEW1 = "2\nAnn_Lee\t1\t2\nBo_Wu 1 3\nAnn_Lee\t1\tBo_Wu\t2\nBo_Wu 3 Cy_Ng 1\n"


def test_view1(tmp_path: Path) -> None:
    pairs = parse_pairs(write(tmp_path / "pairs.txt", VIEW1))
    assert pairs == [
        Pair("Ann_Lee", 1, "Ann_Lee", 2, line=2),
        Pair("Bo_Wu", 1, "Bo_Wu", 3, line=3),
        Pair("Ann_Lee", 1, "Bo_Wu", 2, line=4),
        Pair("Bo_Wu", 3, "Cy_Ng", 1, line=5),
    ]
    assert [pair.same for pair in pairs] == [True, True, False, False]


def test_view2_with_crlf_and_blank_lines(tmp_path: Path) -> None:
    fold = "Ann_Lee 1 2\r\nBo_Wu 1 Cy_Ng 2\r\n"
    pairs = parse_pairs(write(tmp_path / "pairs.txt", "3\t1\r\n" + fold * 3 + "\r\n\r\n"))
    assert len(pairs) == 6 and pairs[-1] == Pair("Bo_Wu", 1, "Cy_Ng", 2, line=7)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("1\nAnn_Lee 1\nAnn_Lee 1 Bo_Wu 2\n", 2, "2 fields"),
        ("1\nAnn_Lee 1 2\nAnn_Lee 1 Bo_Wu 2 7\n", 3, "5 fields"),
        ("1\nAnn_Lee one 2\nAnn_Lee 1 Bo_Wu 2\n", 2, "index 'one'"),
        ("1\nAnn_Lee 1 2\nAnn_Lee 0 Bo_Wu 2\n", 3, "index '0'"),
        ("1\nAnn_Lee -1 2\nAnn_Lee 1 Bo_Wu 2\n", 2, "index '-1'"),
        ("1\nAnn_Lee 1 2.5\nAnn_Lee 1 Bo_Wu 2\n", 2, "index '2.5'"),
        ("1\n../etc 1 2\nAnn_Lee 1 Bo_Wu 2\n", 2, "not a plain folder name"),
        ("1\nAnn_Lee 1 2\nAnn_Lee 1 a/b 2\n", 3, "not a plain folder name"),
        ("1\nAnn\\Lee 1 2\nAnn_Lee 1 Bo_Wu 2\n", 2, "not a plain folder name"),
        ("1\nAnn..Lee 1 2\nAnn_Lee 1 Bo_Wu 2\n", 2, "not a plain folder name"),
        ("1\nAnn\x00Lee 1 2\nAnn_Lee 1 Bo_Wu 2\n", 2, "control characters"),
        ("pairs\nAnn_Lee 1 2\n", 1, "header 'pairs'"),
        ("1 2 3\nAnn_Lee 1 2\n", 1, "header '1 2 3'"),
        ("0\n", 1, "at least 1"),
        ("2\nAnn_Lee 1 2\nAnn_Lee 1 Bo_Wu 2\n", 1, "promises 4 pairs .* 2 rows"),
        ("2 1\nAnn_Lee 1 2\nAnn_Lee 1 Bo_Wu 2\n", 1, "promises 4 pairs"),
        ("\n\n3\n", 3, "promises 6 pairs"),
    ],
)
def test_malformed_pairs_name_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write(tmp_path / "pairs.txt", text)
    with pytest.raises(VislabError, match=message) as error:
        parse_pairs(path)
    assert str(error.value).startswith(f"{path}:{line}: ") and "\n" not in str(error.value)


def test_empty_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(VislabError, match="empty file"):
        parse_pairs(write(tmp_path / "empty.txt", ""))
    with pytest.raises(VislabError, match="cannot read"):
        parse_pairs(tmp_path / "absent.txt")
    with pytest.raises(VislabError, match=r"latin1\.txt:2: not UTF-8"):
        parse_pairs(write(tmp_path / "latin1.txt", "1\nJos\xe9 1 2\n".encode("latin-1")))


def test_any_text_raises_only_vislab_error(tmp_path: Path) -> None:
    rng = random.Random(0)
    alphabet = ["1", "2", " ", "\t", "\n", "\r", "A", "_", "/", ".", "-", "x", "\x00", "é", "\u2028", "\x85"]
    path = tmp_path / "fuzz.txt"
    for attempt in range(300):
        if attempt % 3 == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(30)))
        else:
            data = "".join(rng.choice(alphabet) for _ in range(rng.randrange(40))).encode()
        path.write_bytes(data)
        try:
            for pair in parse_pairs(path):
                assert pair.index1 >= 1 and pair.index2 >= 1 and "/" not in pair.name1 + pair.name2
        except VislabError:
            pass


# --- image folders -----------------------------------------------------------------------------


def face_jpeg(seed: int, grayscale: bool = False) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (1 if grayscale else 3, 250, 250), generator=generator, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return encode_jpeg(image, quality=90).numpy().tobytes()


@pytest.fixture
def lfw_root(tmp_path: Path) -> Path:
    """A data root with Ann_Lee (2 images), Bo_Wu (3) and Cy_Ng (1), plus a stray file."""
    image_dir = tmp_path / "lfw" / "lfw-deepfunneled"
    for name, count in (("Ann_Lee", 2), ("Bo_Wu", 3), ("Cy_Ng", 1)):
        for index in range(1, count + 1):
            write(image_dir / name / f"{name}_{index:04d}.jpg", face_jpeg(hash(name) % 1000 + index))
    write(image_dir / "Bo_Wu" / "notes.txt", "not an image")
    return tmp_path


def test_find_image_dir_and_default_pairs_files(lfw_root: Path, tmp_path: Path) -> None:
    assert find_image_dir(lfw_root) == lfw_root / "lfw" / "lfw-deepfunneled"
    (tmp_path / "other" / "lfw-deepfunneled").mkdir(parents=True)
    assert find_image_dir(tmp_path / "other") == tmp_path / "other" / "lfw-deepfunneled"
    with pytest.raises(VislabError, match="looked for .*lfw/lfw-deepfunneled/.*lfw/lfw/.*--data-root"):
        find_image_dir(tmp_path / "nowhere")
    assert default_pairs_files(lfw_root) == (
        lfw_root / "lfw" / "pairsDevTrain.txt",
        lfw_root / "lfw" / "pairsDevTest.txt",
    )


def test_list_people_counts_only_face_files(lfw_root: Path) -> None:
    assert list_people(find_image_dir(lfw_root)) == {"Ann_Lee": 2, "Bo_Wu": 3, "Cy_Ng": 1}


def test_check_pairs(lfw_root: Path, tmp_path: Path) -> None:
    image_dir = find_image_dir(lfw_root)
    pairs_file = write(tmp_path / "pairs.txt", VIEW1)
    check_pairs(image_dir, parse_pairs(pairs_file), pairs_file)
    past_end = write(tmp_path / "past.txt", "1\nAnn_Lee 1 3\nAnn_Lee 1 Bo_Wu 2\n")
    with pytest.raises(VislabError, match=r"past\.txt:2: Ann_Lee has 2 images .* no image 3"):
        check_pairs(image_dir, parse_pairs(past_end), past_end)
    no_folder = write(tmp_path / "missing.txt", "1\nAnn_Lee 1 2\nAnn_Lee 1 Bo_Wo 2\n")
    with pytest.raises(VislabError, match=r"missing\.txt:3: no folder 'Bo_Wo'.*did you mean: Bo_Wu"):
        check_pairs(image_dir, parse_pairs(no_folder), no_folder)


@pytest.mark.parametrize(("grayscale", "crop"), [(False, None), (True, 150)])
def test_load_faces(lfw_root: Path, grayscale: bool, crop: int | None) -> None:
    image_dir = find_image_dir(lfw_root)
    keys = [("Bo_Wu", 3), ("Ann_Lee", 1), ("Bo_Wu", 3)]
    calls = []
    faces = load_faces(
        image_dir, keys, size=64, grayscale=grayscale, crop=crop, progress=lambda done, total: calls.append((done, total))
    )
    assert faces.shape == (3, 1 if grayscale else 3, 64, 64) and faces.dtype == torch.uint8
    assert torch.equal(faces[0], faces[2]) and not torch.equal(faces[0], faces[1])
    assert calls[-1] == (3, 3)
    again = load_faces(image_dir, keys, size=64, grayscale=grayscale, crop=crop)
    assert torch.equal(faces, again)


def test_load_faces_full_size_is_the_decoded_image(lfw_root: Path) -> None:
    from torchvision.io import decode_jpeg

    image_dir = find_image_dir(lfw_root)
    face = load_faces(image_dir, [("Cy_Ng", 1)], size=250, grayscale=False, crop=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        data = bytearray((image_dir / "Cy_Ng" / "Cy_Ng_0001.jpg").read_bytes())
        expected = decode_jpeg(torch.frombuffer(data, dtype=torch.uint8))
    assert torch.equal(face[0], expected)


def test_missing_or_corrupt_face_is_named(lfw_root: Path) -> None:
    image_dir = find_image_dir(lfw_root)
    with pytest.raises(VislabError, match=r"Cy_Ng_0002\.jpg: face image not found"):
        load_faces(image_dir, [("Cy_Ng", 2)], size=32, grayscale=False, crop=None)
    (image_dir / "Ann_Lee" / "Ann_Lee_0002.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(VislabError, match=r"Ann_Lee_0002\.jpg: not a readable JPEG"):
        load_faces(image_dir, [("Ann_Lee", 1), ("Ann_Lee", 2)], size=32, grayscale=False, crop=None)
    with pytest.raises(VislabError, match="smaller than crop 300"):
        load_faces(image_dir, [("Ann_Lee", 1)], size=32, grayscale=False, crop=300)


@pytest.mark.real_data
def test_real_view1_pairs_and_a_few_faces() -> None:
    root = real_data("lfw").parent
    train_file, test_file = default_pairs_files(root)
    train, test = parse_pairs(train_file), parse_pairs(test_file)
    assert len(train) == 2200 and len(test) == 1000
    assert sum(pair.same for pair in train) == 1100 and sum(pair.same for pair in test) == 500

    def people(pairs: list[Pair]) -> set[str]:
        return {name for pair in pairs for name in (pair.name1, pair.name2)}

    assert len(people(train)) == 2132 and len(people(test)) == 963
    assert not people(train) & people(test)
    image_dir = find_image_dir(root)
    check_pairs(image_dir, test, test_file)
    keys = [(pair.name1, pair.index1) for pair in test[:4]]
    faces = load_faces(image_dir, keys, size=112, grayscale=True, crop=150)
    assert faces.shape == (4, 1, 112, 112) and faces.float().std() > 10
