"""Deduplicators: exact MD5, SimHash and MinHash-LSH (also under its Ray name).

`hashes` runs per partition; `duplicates` sees every partition's hashes in global
input order and keeps the first row of each duplicate cluster, which is what DJ
does over one whole dataset.

Over 300 lines: the three deduplicators share their hashing and clustering helpers, and
splitting them would only move those helpers into a fourth module."""
from __future__ import annotations

import functools
import hashlib
import string
from itertools import combinations
from typing import ClassVar, Literal, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import regex
from pydantic import field_validator, model_validator

from .base import Deduplicator, register
from .text_utils import as_array, model_required, text_list

MERSENNE_PRIME = np.uint64((1 << 61) - 1)
MAX_HASH = np.uint64((1 << 32) - 1)


def first_codes(values: pa.ChunkedArray) -> np.ndarray:
    """Per row, the row index of the first row holding the same value."""
    codes = pc.dictionary_encode(values).combine_chunks().indices.to_numpy(zero_copy_only=False)
    _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    return first[inverse]


def component_minimum(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per node, the smallest node index of its connected component (edges a[i]-b[i])."""
    labels = np.arange(n)
    while len(a):
        low = np.minimum(labels[a], labels[b])
        new = labels.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        while not np.array_equal(new, new[new]):  # pointer jumping: labels only ever point lower
            new = new[new]
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


def drops_of(groups: np.ndarray, sizes: list[int]) -> list[list[int]]:
    """Per partition, the positions of the rows that are not the first of their group."""
    return split_drops(groups == np.arange(len(groups)), sizes)


def split_drops(survives: np.ndarray, sizes: list[int]) -> list[list[int]]:
    """Per partition, the positions of the rows that do not survive."""
    drops, start = [], 0
    for size in sizes:
        drops.append(np.flatnonzero(~survives[start : start + size]).tolist())
        start += size
    return drops


@functools.cache
def compiled(pattern: str) -> regex.Pattern:
    return regex.compile(pattern)


class ShingleDeduplicator(Deduplicator):
    """Shared text preparation and shingling of the SimHash and MinHash ops."""

    tokenization: str = "space"
    window_size: int = 6
    lowercase: bool = True
    ignore_pattern: Optional[str] = None

    punctuation: ClassVar[regex.Pattern] = regex.compile(r"\p{P}")

    @field_validator("ignore_pattern")
    @classmethod
    def _compiles(cls, value: Optional[str]) -> Optional[str]:
        if value:
            try:
                compiled(value)  # a bad pattern fails the recipe, not a partition
            except regex.error as err:
                raise ValueError(f"not a valid regex: {err}") from None
        return value

    def prepared(self, text: str) -> str:
        if self.lowercase:
            text = text.lower()
        if self.ignore_pattern:
            text = compiled(self.ignore_pattern).sub("", text)
        return text

    def tokens(self, text: str) -> list[str]:
        if self.tokenization == "space":
            return [t for t in text.split(" ") if t]  # ASCII space only: '\n' and '\t' stay inside tokens
        return self.punctuation.split(text)  # empty and whitespace-bearing pieces are kept

    def shingles(self, text: str) -> list[str]:
        text, n = self.prepared(text), self.window_size
        if self.tokenization == "character":
            return [text[i : i + n] for i in range(len(text) - n + 1)]
        tokens = self.tokens(text)
        return [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


@register("document_deduplicator")
class DocumentDeduplicator(Deduplicator):
    """Exact dedup on the MD5 of the (lowercased, de-punctuated) stripped text; every
    whitespace-only text hashes like ''."""

    lowercase: bool = False
    ignore_non_character: bool = False

    non_character: ClassVar[regex.Pattern] = regex.compile(rf"\s+|\d+|[{regex.escape(string.punctuation)}]")

    def digest(self, text: str) -> str:
        if self.lowercase:
            text = text.lower()
        if self.ignore_non_character:
            text = self.non_character.sub("", text)
        return hashlib.md5(text.strip().encode("utf-8")).hexdigest()

    def hashes(self, table: pa.Table) -> pa.Array:
        return pa.array([self.digest(t) for t in text_list(self.op_name, self.texts(table))], pa.string())

    def groups(self, hashes: list[pa.Array]) -> np.ndarray:
        every = pa.chunked_array([as_array(h).cast(pa.string()) for h in hashes], pa.string())
        return first_codes(every)

    def duplicates(self, hashes: list[pa.Array]) -> list[list[int]]:
        return drops_of(self.groups(hashes), [len(h) for h in hashes])


def md5_prefix64(shingles: list[str]) -> np.ndarray:
    """simhash-pybind's unsigned_hash: the first 8 bytes of each MD5 digest, big-endian."""
    raw = b"".join(hashlib.md5(s.encode("utf-8")).digest()[:8] for s in shingles)
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64)


def simhash(shingles: list[str]) -> int:
    """Per-bit strict majority over the shingle hashes; ties and no shingles give 0."""
    if not shingles:
        return 0
    bits = np.unpackbits(md5_prefix64(shingles).view(np.uint8).reshape(-1, 8), axis=1)
    ones = bits.sum(axis=0, dtype=np.int64)
    majority = (2 * ones > len(shingles)).astype(np.uint8)
    return int(np.packbits(majority).view(np.uint64)[0])


def popcount64(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values).astype(np.int64)
    return np.unpackbits(values.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1, dtype=np.int64)


def near_pairs(values: np.ndarray, num_blocks: int, distance: int) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs of distinct `values` within Hamming `distance`, found exactly by
    the pigeonhole block search that simhash-pybind's find_all uses."""
    edges = np.linspace(0, 64, num_blocks + 1).astype(int)
    blocks = [sum(1 << b for b in range(lo, hi)) for lo, hi in zip(edges[:-1], edges[1:])]
    pairs_a, pairs_b = [], []
    for kept in combinations(blocks, num_blocks - distance):
        key = values & np.uint64(sum(kept))
        order = np.argsort(key, kind="stable")
        sorted_key, sorted_val = key[order], values[order]
        for step in range(1, len(values)):
            same = sorted_key[step:] == sorted_key[:-step]
            if not same.any():
                break
            close = same & (popcount64(sorted_val[step:] ^ sorted_val[:-step]) <= distance)
            pairs_a.append(order[:-step][close])
            pairs_b.append(order[step:][close])
    if not pairs_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(pairs_a), np.concatenate(pairs_b)


@register("document_simhash_deduplicator")
class DocumentSimhashDeduplicator(ShingleDeduplicator):
    """Near-dedup on 64-bit SimHash: hashes within `hamming_distance` bits are
    connected transitively; texts with fewer tokens than the window all hash to 0
    and collapse together."""

    tokenization: Literal["space", "punctuation", "character"] = "space"
    window_size: int = 6
    num_blocks: int = 6
    hamming_distance: int = 4

    hash_column: ClassVar[str] = "__dj__simhash"

    @model_validator(mode="after")
    def _distance_below_blocks(self):
        if self.hamming_distance >= self.num_blocks:  # DJ raises this ValueError only at process time
            raise ValueError(
                f"hamming_distance ({self.hamming_distance}) must be less than num_blocks ({self.num_blocks})"
            )
        return self

    def hashes(self, table: pa.Table) -> pa.Array:
        texts = text_list(self.op_name, self.texts(table))
        return pa.array([simhash(self.shingles(t)) for t in texts], pa.uint64())

    def duplicates(self, hashes: list[pa.Array]) -> list[list[int]]:
        return drops_of(self.groups(hashes), [len(h) for h in hashes])

    def groups(self, hashes: list[pa.Array]) -> np.ndarray:
        arrays = [as_array(h).to_numpy(zero_copy_only=False).astype(np.uint64) for h in hashes]
        values = np.concatenate(arrays + [np.zeros(0, np.uint64)])
        distinct, first = np.unique(values, return_index=True)
        near_a, near_b = near_pairs(distinct, self.num_blocks, self.hamming_distance)
        same = first_codes(pa.chunked_array([pa.array(values, pa.uint64())]))
        rows = np.arange(len(values))
        a = np.concatenate([rows, first[near_a]])
        b = np.concatenate([same, first[near_b]])
        return component_minimum(len(values), a, b)


@functools.cache
def permutations(count: int) -> tuple[np.ndarray, np.ndarray]:
    """DJ's (a, b) pairs: RandomState(42), one a then one b per permutation."""
    gen = np.random.RandomState(seed=42)
    pairs = [
        (gen.randint(1, MERSENNE_PRIME, dtype=np.uint64), gen.randint(0, MERSENNE_PRIME, dtype=np.uint64))
        for _ in range(count)
    ]
    a, b = np.array(pairs, dtype=np.uint64).T
    return a, b


@functools.cache
def optimal_param(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising 0.5 FP + 0.5 FN, first minimum in (b, r) order.

    Both integrands are polynomials of degree b*r <= num_perm, so Gauss-Legendre
    with num_perm/2 + 1 nodes integrates them exactly (DJ uses scipy quad)."""
    nodes, weights = np.polynomial.legendre.leggauss(num_perm // 2 + 8)

    def integral(f, lo: float, hi: float) -> float:
        return (hi - lo) / 2 * float(np.dot(weights, f((hi - lo) / 2 * nodes + (hi + lo) / 2)))

    best, best_error = (0, 0), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = integral(lambda s: 1 - (1 - s ** float(r)) ** float(b), 0.0, threshold)
            fn = integral(lambda s: (1 - s ** float(r)) ** float(b), threshold, 1.0)
            error = 0.5 * fp + 0.5 * fn
            if error < best_error:
                best, best_error = (b, r), error
    return best


def sha1_le32(shingles: set[str]) -> list[int]:
    return [int.from_bytes(hashlib.sha1(s.encode("utf-8")).digest()[:4], "little") for s in shingles]


@register("document_minhash_deduplicator")
class DocumentMinhashDeduplicator(ShingleDeduplicator):
    """MinHash-LSH: rows sharing any band's bytes are merged (union-find); Jaccard is
    never checked. Texts with fewer tokens than the window get the all-0xFFFFFFFF
    signature and collapse together."""

    tokenization: Literal["space", "punctuation", "character", "sentencepiece"] = "space"
    window_size: int = 5
    num_permutations: int = 256
    jaccard_threshold: float = 0.7
    num_bands: Optional[int] = None
    num_rows_per_band: Optional[int] = None
    tokenizer_model: Optional[str] = None

    hash_column: ClassVar[str] = "__dj__minhash"

    @model_validator(mode="after")
    def _no_model(self):
        if self.tokenization == "sentencepiece":
            raise model_required("tokenization='sentencepiece'", "a SentencePiece model (tokenizer_model)")
        bands, rows = self.bands()
        if bands * rows > self.num_permutations:
            raise ValueError(
                f"num_bands * num_rows_per_band ({bands}*{rows}) exceeds num_permutations ({self.num_permutations})"
            )
        return self

    def bands(self) -> tuple[int, int]:
        if self.num_bands is None or self.num_rows_per_band is None:
            return optimal_param(self.jaccard_threshold, self.num_permutations)
        return self.num_bands, self.num_rows_per_band

    def shingle_set(self, text: str) -> set[str]:
        return set(self.shingles(text))

    def signatures(self, texts: list[str]) -> np.ndarray:
        """(rows, num_permutations) uint64 MinHash values, with numpy's wrapping uint64
        arithmetic: ((h*a mod 2^64 + b) mod 2^64) mod (2^61-1), low 32 bits."""
        a, b = permutations(self.num_permutations)
        out = np.full((len(texts), self.num_permutations), MAX_HASH, dtype=np.uint64)
        for start in range(0, len(texts), 256):
            hashed = [sha1_le32(self.shingle_set(t)) for t in texts[start : start + 256]]
            counts = np.array([len(h) for h in hashed])
            if not counts.sum():
                continue
            hv = np.array([v for h in hashed for v in h], dtype=np.uint64)
            phv = ((hv[:, None] * a + b) % MERSENNE_PRIME) & MAX_HASH
            offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
            has = counts > 0
            out[start : start + len(hashed)][has] = np.minimum.reduceat(phv, offsets[has], axis=0)
        return out

    def hashes(self, table: pa.Table) -> pa.Array:
        texts = text_list(self.op_name, self.texts(table))
        bands, rows = self.bands()
        signature = self.signatures(texts)[:, : bands * rows].astype(">u8")
        width = rows * 8  # band i: big-endian values i*r .. i*r+r-1, concatenated
        values = [[row[j * width : (j + 1) * width] for j in range(bands)] for row in map(bytes, signature)]
        return pa.array(values, pa.list_(pa.binary()))

    def duplicates(self, hashes: list[pa.Array]) -> list[list[int]]:
        return drops_of(self.groups(hashes), [len(h) for h in hashes])

    def groups(self, hashes: list[pa.Array]) -> np.ndarray:
        total = sum(len(h) for h in hashes)
        bands, _ = self.bands()
        if not total:
            return np.zeros(0, np.int64)
        flat = pa.concat_arrays([pc.list_flatten(as_array(h)).cast(pa.binary()) for h in hashes])
        rows = np.arange(total)
        a, b = [], []
        for band in range(bands):
            a.append(rows)
            b.append(first_codes(pa.chunked_array([flat.take(pa.array(rows * bands + band))])))
        return component_minimum(total, np.concatenate(a), np.concatenate(b))


@register("ray_bts_minhash_deduplicator")
class RayBTSMinhashDeduplicator(DocumentMinhashDeduplicator):
    """DataJuicer's Ray MinHash-LSH: the same signatures, bands and transitive merging as
    document_minhash_deduplicator (only its union-find is distributed over Ray actors), so
    the same rows survive. Its actor, batch and memory knobs are accepted and have no effect:
    here the global step runs in the driver on any executor."""

    union_find_parallel_num: Union[int, str] = "auto"
    union_threshold: Optional[int] = 256
    max_pending_edge_buffer_task: Optional[int] = 20
    num_edge_buffer_task_returns: Optional[int] = 10
    max_pending_filter_tasks: Optional[int] = 20
    num_filter_task_returns: Optional[int] = 10
    merge_batch_size: Optional[int] = 1000
    minhash_batch_size: Optional[Union[int, str]] = "auto"
    memory_per_sample: Optional[float] = 0.1
    actor_memory: Optional[int] = None
    task_memory: Optional[int] = None

    _EXECUTION_KNOBS: ClassVar[frozenset[str]] = DocumentMinhashDeduplicator._EXECUTION_KNOBS | {
        "union_find_parallel_num", "union_threshold", "max_pending_edge_buffer_task", "num_edge_buffer_task_returns",
        "max_pending_filter_tasks", "num_filter_task_returns", "merge_batch_size", "minhash_batch_size",
        "memory_per_sample", "actor_memory", "task_memory"}
