"""Global dedup across partitions: hashes are computed per partition, `duplicates`
sees them all in input order, and the survivors are those of one whole table."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from djworker.ops.catalog import build_op
from tests.worker.ops.vectors import VECTORS, load

DEDUP_FILES = sorted(VECTORS.glob("document_*deduplicator*.jsonl"))


def partitions(n: int, seed: int) -> list[tuple[int, int]]:
    """Contiguous slices covering 0..n, some of them empty."""
    rng = random.Random(seed)
    cuts = sorted({0, n, *(rng.randint(0, n) for _ in range(rng.randint(1, 8)))})
    bounds = list(zip(cuts[:-1], cuts[1:]))
    bounds.insert(rng.randint(0, len(bounds)), (cuts[0], cuts[0]))  # an empty partition
    return bounds


def through_parquet(hashes: pa.Array) -> pa.ChunkedArray:
    """Hashes as the engine hands them over: written per partition, read back."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"hash": hashes}), sink)
    return pq.read_table(pa.BufferReader(sink.getvalue())).column("hash")


@pytest.mark.parametrize("path", DEDUP_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_partitioned_dedup_keeps_the_same_rows_as_one_table(path, seed):
    lines = load(path)
    op = build_op(lines[0]["op"], lines[0]["args"], path.name)
    table = pa.table({"text": [l["input"] for l in lines]})
    slices = partitions(len(lines), seed)
    hashes = [op.hashes(table.slice(lo, hi - lo)) for lo, hi in slices]
    assert pa.concat_arrays(hashes).equals(op.hashes(table))  # a row's hash depends on that row only
    drops = op.duplicates([through_parquet(h) for h in hashes])
    assert len(drops) == len(slices)
    kept = [lo + i for (lo, hi), drop in zip(slices, drops) for i in range(hi - lo) if i not in set(drop)]
    assert kept == [i for i, l in enumerate(lines) if l["output"] is not None]


@pytest.mark.parametrize(
    "name,args",
    [
        ("document_deduplicator", {}),
        ("document_simhash_deduplicator", {}),
        ("document_minhash_deduplicator", {}),
    ],
)
def test_first_member_in_global_input_order_survives(name, args):
    long_a = "one two three four five six seven eight nine ten eleven twelve"
    long_b = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
    op = build_op(name, args, "t")
    parts = [pa.table({"text": [long_b, long_a]}), pa.table({"text": []}), pa.table({"text": [long_a, long_b, long_a]})]
    drops = op.duplicates([op.hashes(p) for p in parts])
    assert drops == [[], [], [0, 1, 2]]


def test_near_duplicate_in_a_later_partition_is_dropped():
    op = build_op("document_simhash_deduplicator", {}, "t")
    text = "Machine learning models require large amounts of high quality training data collected from diverse sources"
    parts = [
        pa.table({"text": [text]}),
        pa.table({"text": [text.upper(), "something else entirely, long enough to have shingles of six words"]}),
    ]
    assert op.duplicates([op.hashes(p) for p in parts]) == [[], [0]]


def test_no_partitions_and_empty_partitions():
    op = build_op("document_minhash_deduplicator", {}, "t")
    assert op.duplicates([]) == []
    assert op.duplicates([op.hashes(pa.table({"text": pa.array([], pa.string())}))]) == [[]]


def test_minhash_hash_column_holds_one_band_per_entry():
    op = build_op("document_minhash_deduplicator", {}, "t")
    bands = op.hashes(pa.table({"text": [""]})).to_pylist()[0]
    assert len(bands) == 25 and all(band == bytes.fromhex("00000000ffffffff") * 10 for band in bands)


def test_optimal_param_reproduces_datajuicer_band_choices():
    import json

    from djworker.ops.dedup import optimal_param

    params = json.loads((VECTORS / "document_minhash_deduplicator.params.json").read_text())
    for key, expected in params["optimal_param"].items():
        threshold, num_perm = (part.split("=")[1] for part in key.split(","))
        assert list(optimal_param(float(threshold), int(num_perm))) == expected, key


def test_permutations_are_datajuicers():
    import json

    from djworker.ops.dedup import permutations

    params = json.loads((VECTORS / "document_minhash_deduplicator.params.json").read_text())
    a, b = permutations(256)
    assert a.tolist() == params["perm_a"] and b.tolist() == params["perm_b"]
