"""partition.auto_configure: the pure decision on synthetic samples, the sampling shell on real
files, and one dj-process run that logs the choice and records it in job_summary.json."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from djworker.autoconf import (MODALITIES, SampleStats, choose_partition_size, decide, detect_modality,
                               sample_input)
from djworker.sources import input_files
from djworker.storage import Storage
from tests.support.engine import dj_process, events, make_recipe, summary

GiB = 1024 ** 3
TEXT_OPS = ["clean_links_mapper", "whitespace_normalization_mapper", "text_length_filter"]


def text_rows(n: int, words: int = 80) -> list[dict[str, Any]]:
    return [{"text": " ".join(["token"] * words) + f" {i}", "id": i} for i in range(n)]


def image_rows(n: int) -> list[dict[str, Any]]:
    return [{"text": "<__dj__image> a cat", "images": [f"imgs/{i}.jpg"], "id": i} for i in range(n)]


def video_rows(n: int) -> list[dict[str, Any]]:
    return [{"text": "<__dj__video> a clip", "videos": [f"s3://b/clips/{i}.mp4"], "id": i} for i in range(n)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def stats(modality: str, arrow_bytes: float = 500.0, media: dict[str, float] | None = None) -> SampleStats:
    return SampleStats(rows=1000, arrow_bytes_per_row=arrow_bytes, raw_bytes_per_row=arrow_bytes,
                       modality=modality, media_per_row=media or {})


# ---- modality detection (pure) ---------------------------------------------------------
@pytest.mark.parametrize("rows, modality", [
    (text_rows(50), "text"),
    (image_rows(50), "image"),
    (video_rows(50), "video"),
    ([{"text": "x", "audios": ["a.wav"]}] * 10, "audio"),
    ([{"text": "x", "images": ["a.png"], "videos": ["v.mkv"]}] * 10, "multimodal"),
    ([{"text": "x", "cover": "https://cdn.example.com/c.webp?w=200"}] * 10, "image"),  # paths in any field count
    ([{"text": "see https://example.com/cat.jpg for a photo"}] * 10, "text"),  # a URL in prose is not an attachment
    (text_rows(99) + image_rows(1), "text"),  # one stray image in a hundred rows does not make a dataset visual
])
def test_modality_comes_from_the_samples_fields(rows, modality):
    assert detect_modality(rows, "text")[0] == modality


# ---- the decision (pure) ------------------------------------------------------------------
@pytest.mark.parametrize("modality", sorted(MODALITIES))
def test_a_big_dataset_gets_the_modality_default_within_its_maximum(modality):
    choice = decide(stats(modality), ["clean_links_mapper"], mem_bytes=64 * GiB, cpus=2, total_rows_estimate=10**7)
    assert choice.size == MODALITIES[modality].default <= MODALITIES[modality].max
    assert choice.as_dict()["binding"] == "op_mix" and choice.modality == modality


@pytest.mark.parametrize("total, cpus", [(600, 2), (100, 4), (10_000, 16), (5, 2), (1_000_000, 64)])
def test_there_are_always_a_few_partitions_per_worker(total, cpus):
    choice = decide(stats("text"), TEXT_OPS, mem_bytes=64 * GiB, cpus=cpus, total_rows_estimate=total)
    partitions = math.ceil(total / choice.size)
    assert partitions >= min(total, max(8, 4 * cpus))
    assert 1 <= choice.size <= MODALITIES["text"].max


def test_memory_bounds_the_partition_and_names_the_reason():
    fat = stats("text", arrow_bytes=50 * 1024 * 1024)  # 50 MiB documents
    choice = decide(fat, TEXT_OPS, mem_bytes=2 * GiB, cpus=2, total_rows_estimate=10**6)
    assert choice.size == 3 and choice.as_dict()["binding"] == "memory"  # 512 MiB / (3 x 50 MiB)
    assert "memory" in choice.reason and choice.max_size_mb <= 256


def test_decoded_media_counts_against_memory():
    video = stats("video", arrow_bytes=120, media={"video": 1.0})
    roomy = decide(video, ["video_split_by_scene_mapper"], mem_bytes=64 * GiB, cpus=2, total_rows_estimate=10**6)
    tight = decide(video, ["video_split_by_scene_mapper"], mem_bytes=4 * GiB, cpus=2, total_rows_estimate=10**6)
    assert roomy.size == MODALITIES["video"].default
    assert tight.size == 3 and tight.as_dict()["binding"] == "memory"  # 1 GiB per worker / ~256 MiB per clip


def test_a_long_or_heavy_op_mix_shrinks_partitions():
    light = decide(stats("image"), ["image_shape_filter"], mem_bytes=64 * GiB, cpus=2, total_rows_estimate=10**6)
    heavy = decide(stats("image"), ["image_captioning_mapper", "image_blur_mapper", "image_face_blur_mapper",
                                    "image_deduplicator", "image_aesthetics_filter"],
                   mem_bytes=64 * GiB, cpus=2, total_rows_estimate=10**6)
    assert heavy.size < light.size == MODALITIES["image"].default
    assert heavy.as_dict()["complexity_factor"] > 1


def test_the_choice_is_serialisable_with_its_reasons():
    choice = decide(stats("text"), TEXT_OPS, mem_bytes=8 * GiB, cpus=2, total_rows_estimate=600)
    record = orjson.loads(orjson.dumps(choice.as_dict()))
    assert record["size"] == choice.size == 75 and record["modality"] == "text"
    assert {"reason", "binding", "limits", "arrow_bytes_per_row", "op_cost", "mem_bytes", "cpus",
            "total_rows_estimate"} <= set(record)


# ---- sampling the input (shell, real files) ---------------------------------------------------
@pytest.mark.parametrize("rows, modality, bound", [
    (text_rows(3000), "text", MODALITIES["text"].max),
    (image_rows(3000), "image", MODALITIES["image"].default),
    (video_rows(3000), "video", MODALITIES["video"].default),
])
def test_choose_partition_size_on_synthetic_datasets(tmp_path, rows, modality, bound):
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    recipe = type("R", (), {"dataset_path": str(path), "text_key": "text", "np": 2,
                            "ops": [("clean_links_mapper", {})]})()
    choice = choose_partition_size(Storage(), recipe, mem_bytes=16 * GiB)
    assert choice.modality == modality and 1 <= choice.size <= bound
    assert math.ceil(3000 / choice.size) >= 8
    assert choice.as_dict()["total_rows_estimate"] == 3000  # small input: read to the end, counted exactly
    assert choice.as_dict()["arrow_bytes_per_row"] > 0


def test_a_big_input_is_sampled_within_a_byte_budget_and_its_rows_estimated(tmp_path):
    rows = text_rows(20_000, words=20)
    path = write_jsonl(tmp_path / "big.jsonl", rows)
    files = input_files(Storage(), str(path))
    got, total = sample_input(Storage(), files, "text", k=200, byte_budget=200_000)
    assert got.rows == 200 and got.modality == "text"
    assert abs(total - 20_000) / 20_000 < 0.1  # from bytes: the planner, not the sampler, reads it all


def test_dj_process_auto_configure_logs_and_records_the_choice(tmp_path):
    recipe = make_recipe(tmp_path, rows=600, partition={"size": 500, "auto_configure": True})
    proc = dj_process(recipe, "ac")
    assert proc.returncode == 0, proc.stderr
    info = [e for e in events(tmp_path, "ac") if e["event_type"] == "INFO" and e.get("auto_config")]
    assert len(info) == 1
    chosen = info[0]["auto_config"]
    s = summary(tmp_path, "ac")
    assert s["auto_config"] == chosen and s["partition_size"] == chosen["size"]
    assert chosen["modality"] == "text" and chosen["total_rows_estimate"] == 600
    assert s["num_partitions"] >= 4 * 2  # np: 2 in make_recipe
    assert chosen["reason"] in info[0]["message"]
