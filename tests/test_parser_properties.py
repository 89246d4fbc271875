"""Property tests (hypothesis): the LFW pairs parser, the IDX reader and the YAML config reader,
given any bytes, either return a well-formed result or raise VislabError; never anything else,
never a hang or a huge allocation. Inputs are drawn three ways: arbitrary bytes, text from the characters that matter
to the format, and small mutations of a valid file (which reach the deeper checks)."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vislab.data.lfw import parse_pairs
from vislab.data.mnist import parse_idx, read_idx
from vislab.errors import VislabError

SETTINGS = settings(max_examples=250, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _mutated(valid: bytes) -> st.SearchStrategy[bytes]:
    """`valid` with a few bytes replaced, inserted or cut, then possibly truncated."""

    @st.composite
    def build(draw) -> bytes:
        data = bytearray(valid)
        for _ in range(draw(st.integers(1, 4))):
            position = draw(st.integers(0, max(len(data) - 1, 0)))
            action = draw(st.sampled_from(["replace", "insert", "delete"]))
            byte = draw(st.integers(0, 255))
            if action == "replace" and data:
                data[position] = byte
            elif action == "insert":
                data.insert(position, byte)
            elif data:
                del data[position]
        return bytes(data[: draw(st.integers(0, len(data)))]) if draw(st.booleans()) else bytes(data)

    return build()


def _read_file(data: bytes, name: str, reader):
    """`reader(path)` on `data` written to a fresh file `name`: (path, result, None) when it
    reads, (path, None, error) when it raises VislabError (anything else fails the test)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            return path, reader(path), None
        except VislabError as error:
            return path, None, error


# --- LFW pairs ------------------------------------------------------------------------------------

VALID_PAIRS = b"2\nAnn_Lee\t1\t2\nBo_Wu\t1\t3\nAnn_Lee\t1\tBo_Wu\t3\nCy_Ng\t1\tAnn_Lee\t2\n"
PAIRS_TEXT = st.text(alphabet=st.sampled_from(list("0123456789 \t\n\r_-./\\AaBbé\x00\x85\u2028\ufeff٣+")),
                     max_size=80).map(lambda text: text.encode("utf-8"))


def _check_pairs(data: bytes) -> None:
    path, pairs, error = _read_file(data, "pairs.txt", parse_pairs)
    if error is not None:
        assert str(error) and "\n" not in str(error) and str(path) in str(error)
        return
    # Accepted: every pair is well formed, and the count matches a header.
    assert pairs
    for pair in pairs:
        assert pair.index1 >= 1 and pair.index2 >= 1
        for name in (pair.name1, pair.name2):
            assert name and "/" not in name and "\\" not in name and ".." not in name
            assert all(ord(char) >= 32 and ord(char) != 127 for char in name)
        assert (pair.name1, pair.index1) != (pair.name2, pair.index2)


@SETTINGS
@given(st.binary(max_size=200))
def test_pairs_parser_on_any_bytes(data):
    _check_pairs(data)


@SETTINGS
@given(PAIRS_TEXT)
def test_pairs_parser_on_format_like_text(data):
    _check_pairs(data)


@SETTINGS
@given(_mutated(VALID_PAIRS))
def test_pairs_parser_on_a_damaged_valid_file(data):
    _check_pairs(data)


# --- IDX ----------------------------------------------------------------------------------------


def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape) + array.tobytes()


VALID_IDX = _idx(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4))


def _check_idx(data: bytes) -> None:
    try:
        tensor = parse_idx(data, "fuzz.idx")
    except VislabError as error:
        assert "\n" not in str(error) and "fuzz.idx" in str(error)
        return
    header = 4 + 4 * data[3]
    assert tensor.numel() == len(data) - header  # the values are exactly the bytes after the header
    assert tensor.flatten().tolist() == list(data[header:])


@SETTINGS
@given(st.binary(max_size=120))
def test_idx_reader_on_any_bytes(data):
    _check_idx(data)


@SETTINGS
@given(_mutated(VALID_IDX))
def test_idx_reader_on_a_damaged_valid_file(data):
    _check_idx(data)


@SETTINGS
@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4), st.binary(max_size=64))
def test_idx_reader_with_any_header_counts_allocates_nothing_huge(shape, values):
    """Headers claiming up to (2**32 - 1)**4 values: refused by size, never allocated."""
    data = bytes([0, 0, 8, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape) + values
    _check_idx(data)


@SETTINGS
@given(st.one_of(_mutated(gzip.compress(VALID_IDX)), st.binary(max_size=80).map(lambda data: b"\x1f\x8b" + data)))
def test_gzipped_idx_reader_on_damaged_files(data):
    path, _, error = _read_file(data, "train-images-idx3-ubyte.gz", read_idx)
    if error is not None:
        assert "\n" not in str(error) and str(path) in str(error)


# --- YAML configs -------------------------------------------------------------------------------

VALID_YAML = b"epochs: 3\nseed: 1\nlr: 0.01\nmodel_name: Q1_1\naugment:\n  flip: true\n"
YAML_TEXT = st.text(alphabet=st.sampled_from(list("abcdeflprs_:-[]{},.!&*#|>'\"?%@`~ \n\t0123456789eé\x00")),
                    max_size=80).map(lambda text: text.encode("utf-8"))


def _check_yaml(data: bytes) -> None:
    from vislab.config import load_config
    from vislab.studies.cnn import Config

    _, config, error = _read_file(data, "my.yaml", lambda path: load_config(Config, yaml_file=path))
    if error is not None:
        assert str(error) and "\n" not in str(error)
        return
    assert isinstance(config, Config)


@SETTINGS
@given(st.one_of(st.binary(max_size=120), YAML_TEXT, _mutated(VALID_YAML),
                 st.integers(1, 3000).map(lambda depth: b"a: " + b"[" * depth + b"]" * depth),
                 st.integers(1, 3000).map(lambda depth: b"a: " + b"{b: " * depth + b"1" + b"}" * depth)))
def test_yaml_config_reader_on_any_bytes(data):
    _check_yaml(data)
