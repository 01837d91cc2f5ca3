"""Byte-stable safetensors writing for the fixture scripts (tools/make_*_fixtures.py).

The Rust writer behind `safetensors` emits __metadata__ in hash order, so the same tensors can give different
bytes run to run; fixtures are committed, so we write the header ourselves: metadata sorted, tensors sorted by
name (or in the order given), 8-byte padded header, then read the file back and check every tensor and the
metadata round-trip.
"""
import json
import os

import numpy as np
import safetensors
from safetensors.numpy import load_file

_DTYPES = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
           np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.uint8): "U8"}


def write_deterministic(path, arrays, metadata, sort_keys=True):
    """arrays: name -> numpy array (torch tensors: pass .contiguous().numpy()); metadata values become str.
    Returns the file size in bytes."""
    metadata = {k: str(v) for k, v in metadata.items()}
    header, blobs, off = {"__metadata__": dict(sorted(metadata.items()))}, [], 0
    for k in (sorted(arrays) if sort_keys else arrays):
        a = np.ascontiguousarray(arrays[k])
        b = a.tobytes()
        header[k] = {"dtype": _DTYPES[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)
    back = load_file(path)
    assert set(back) == set(arrays) and all(np.array_equal(back[k], np.asarray(arrays[k])) for k in arrays)
    with safetensors.safe_open(path, "np") as f:
        assert f.metadata() == metadata
    return os.path.getsize(path)
