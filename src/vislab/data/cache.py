"""Decode once: a tensor cache keyed by what was decoded, from which files, with which settings.

Decoding 50,000 JPEGs takes far longer than reading one tensor file, so every loader wraps its
decoding in `cached_tensors`. The key hashes the kind of data, `FORMAT_VERSION`, the loader's
parameters and each source file's resolved path, size and modification time: replacing or
touching a source file makes a new entry. Two layers:

- an in-process memo (a second study in the same process gets the same tensors for free);
- one `.pt` file per entry under `cache_root()`, written atomically and read back with
  `torch.load(weights_only=True)`. A corrupt or unreadable file is rebuilt, never an error.

`VISLAB_CACHE=off` turns the disk layer off (the memo stays).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from vislab.errors import VislabError

# Bump when any loader changes what it stores, so that old cache files are never reused.
FORMAT_VERSION = 2

_memo: dict[str, dict[str, torch.Tensor]] = {}


def cache_root() -> Path:
    """`$VISLAB_CACHE`, else ~/.cache/vislab. With `VISLAB_CACHE=off` this is still
    ~/.cache/vislab (where `builtin.synthetic_lfw` writes); only tensor caching is off."""
    value = os.environ.get("VISLAB_CACHE", "")
    if value and value != "off":
        return Path(value).expanduser()
    return Path.home() / ".cache" / "vislab"


def disk_cache_enabled() -> bool:
    return os.environ.get("VISLAB_CACHE", "") != "off"


def cache_key(kind: str, sources: Sequence[Path | str], params: Mapping[str, object] = {}) -> str:
    """The hex digest naming one cache entry (see the module docstring for what goes in)."""
    stamps = []
    resolve_dir = _directory_resolver()
    for source in sources:
        try:
            directory, name = os.path.split(os.path.abspath(source))
            resolved = os.path.join(resolve_dir(directory), name)
            stat = os.stat(resolved)
        except (OSError, ValueError) as error:
            raise VislabError(
                f"{source}: cannot read ({error}); check that the data root holds this file"
            ) from None
        stamps.append((resolved, stat.st_size, stat.st_mtime_ns))
    description = {"kind": kind, "version": FORMAT_VERSION, "params": params, "sources": stamps}
    text = json.dumps(description, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def _directory_resolver() -> Callable[[str], str]:
    """Like os.path.realpath for directories, memoised per directory and its parents.

    LFW's 13,233 files sit in 5,749 folders under one root: resolving each file path from
    scratch costs one lstat per component per file (seconds); this costs one per folder.
    """
    memo: dict[str, str] = {}

    def resolve_dir(directory: str) -> str:
        if directory not in memo:
            parent, name = os.path.split(directory)
            if not name or parent == directory or os.path.islink(directory):
                memo[directory] = os.path.realpath(directory)
            else:
                memo[directory] = os.path.join(resolve_dir(parent), name)
        return memo[directory]

    return resolve_dir


def cached_tensors(
    kind: str,
    sources: Sequence[Path | str],
    build: Callable[[], dict[str, torch.Tensor]],
    params: Mapping[str, object] = {},
) -> dict[str, torch.Tensor]:
    """`build()` once per (kind, sources, params); later calls return the stored tensors.

    The returned tensors are shared with the memo: treat them as read-only.
    """
    key = cache_key(kind, sources, params)
    if key in _memo:
        return dict(_memo[key])
    path = cache_root() / f"{kind}-{key[:24]}.pt"
    tensors = _read(path) if disk_cache_enabled() else None
    if tensors is None:
        tensors = build()
        if disk_cache_enabled():
            _write(path, tensors)
    _memo[key] = tensors
    return dict(tensors)


def clear_memo() -> None:
    """Forget the in-process layer (tests use this to exercise the disk layer)."""
    _memo.clear()


def _read(path: Path) -> dict[str, torch.Tensor] | None:
    """The stored dict, or None when missing, unreadable or not a dict of tensors."""
    if not path.is_file():
        return None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # any corruption (truncated zip, bad pickle, ...) means: rebuild
        return None
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        return None
    return loaded


def _write(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Atomically store `tensors` at `path`; a cache that cannot be written only warns."""
    # A view into a larger tensor would save the whole storage: store compact copies.
    compact = {
        name: t.clone() if t.untyped_storage().nbytes() != t.nbytes else t.contiguous()
        for name, t in tensors.items()
    }
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
        ) as tmp:
            tmp_name = tmp.name
            torch.save(compact, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as error:
        warnings.warn(f"vislab: could not write cache file {path} ({error}); continuing without")
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
