"""Code stores: packed, memory-mapped, encoded in chunks, resumed, refused when they belong to another model."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from robusthash import metrics
from robusthash.errors import UserError
from robusthash.evaluation import encode
from robusthash.store import CodeStore, encode_to_store


def test_store_holds_the_packed_codes_and_streams_the_in_memory_report(toy, tmp_path):
    data, model = toy
    store = encode_to_store(model, data.database, tmp_path / "s", chunk=7)
    codes = encode(model, data.database)
    assert (
        store.complete and store.count == len(data.database) and store.chunks == -(-len(data.database) // 7)
    )
    np.testing.assert_array_equal(store.codes(), metrics.pack_bits(codes.numpy() == 1))
    queries = encode(model, data.query)
    expected = metrics.retrieval_report(queries, codes, data.query.labels, data.database.labels, topk=25)
    got = store.report(queries, data.query.labels, topk=25, chunk=11)
    np.testing.assert_allclose(got["ap"], expected["ap"], rtol=0, atol=1e-12)
    np.testing.assert_equal(got["p_at_n"], expected["p_at_n"])


def test_a_killed_encoding_resumes_at_the_chunks_not_done(toy, tmp_path, monkeypatch):
    data, model = toy
    store = encode_to_store(model, data.database, tmp_path / "s", chunk=8)
    expected = np.array(store.codes())
    done, codes = store._array("done", "r+"), store._array("codes", "r+")
    done[2] = done[5] = 0  # as if killed while writing chunks 2 and 5
    codes[16:24] = 0
    codes[40:48] = 0
    done.flush()
    codes.flush()
    assert not CodeStore.open(tmp_path / "s").complete
    with pytest.raises(UserError, match="incomplete"):
        CodeStore.open(tmp_path / "s").report(encode(model, data.query), data.query.labels, topk=10)
    import robusthash.store as store_module

    encoded = []

    def recording_encode(model, dataset, device, batch_size, precision, indices):
        encoded.extend(indices.tolist())
        return encode(model, dataset, device, batch_size, precision=precision, indices=indices)

    monkeypatch.setattr(store_module, "encode", recording_encode)
    again = encode_to_store(model, data.database, tmp_path / "s", chunk=8)
    assert encoded == list(range(16, 24)) + list(range(40, 48))  # only the two chunks not done
    np.testing.assert_array_equal(again.codes(), expected)
    assert again.complete


def test_a_store_of_another_model_or_chunking_is_refused(toy, tmp_path):
    data, model = toy
    encode_to_store(model, data.database, tmp_path / "s", chunk=8)
    with pytest.raises(UserError, match="chunk"):
        encode_to_store(model, data.database, tmp_path / "s", chunk=9)
    with torch.no_grad():
        model.hash_layer.bias.add_(1.0)
    try:
        with pytest.raises(UserError, match="fingerprint"):
            encode_to_store(model, data.database, tmp_path / "s", chunk=8)
    finally:
        with torch.no_grad():
            model.hash_layer.bias.sub_(1.0)


def test_a_damaged_store_is_named(tmp_path):
    with pytest.raises(UserError, match="not a code store"):
        CodeStore.open(tmp_path)
    (tmp_path / "store.json").write_text('{"format": "something else"}')
    with pytest.raises(UserError, match="description"):
        CodeStore.open(tmp_path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda p: np.save(p / "done.npy", np.ones(5, dtype=np.uint8)),
            "done.npy holds uint8 (5,), expected uint8",
        ),
        (lambda p: np.save(p / "done.npy", np.ones(2, dtype=np.int64)), "done.npy holds int64"),
        (lambda p: (p / "done.npy").write_bytes(b"\x00" * 10), "cannot read"),
        (lambda p: (p / "done.npy").unlink(), "cannot read"),
        (
            lambda p: np.save(p / "codes.npy", np.zeros((3, 1), dtype=np.uint64)),
            "codes.npy holds uint64 (3, 1)",
        ),
        (
            lambda p: (p / "store.json").write_text(
                json.dumps({**json.loads((p / "store.json").read_text()), "chunk": 0})
            ),
            "chunk must be >= 1",
        ),
        (lambda p: (p / "store.json").write_text("[1, 2]"), "is not a robusthash-code-store/1 description"),
    ],
)
def test_every_store_file_is_checked_on_open(toy, tmp_path, damage, message):
    """A damaged file (done.npy included) is one UserError naming it, not an IndexError later."""
    data, model = toy
    encode_to_store(model, data.database, tmp_path / "s", chunk=8)
    damage(tmp_path / "s")
    with pytest.raises(UserError, match=re.escape(message)):
        CodeStore.open(tmp_path / "s")
