"""plan_stage: which partitions of a stage are already done for this recipe, from one listing."""
from __future__ import annotations

import pytest

from djworker.checkpoint import manifest_name
from djworker.config import Strategy
from djworker.ops import build_op
from djworker.plan import Partition
from djworker.run import PartitionTask, hashes_path
from djworker.stages import plan_stage
from djworker.storage import StorageOptions

OPS = [build_op("clean_links_mapper", {}, "process[0]"), build_op("document_deduplicator", {}, "process[1]")]


def tasks(n: int, end: int) -> list[PartitionTask]:
    return [PartitionTask(job_id="j", partition=Partition(partition_id=i, path="", sample_count=10, bytes=1,
                                                          checksum=f"{i:020d}", source={}),
                          ops=OPS, strategy=Strategy.every_op, n_ops=1, op_names=[], checkpoint_root="/ck",
                          results_root="/res", intermediate_root=None, storage_options=StorageOptions(), end=end)
            for i in range(n)]


def test_a_final_stage_is_done_where_its_result_manifest_is_listed():
    ts = tasks(4, end=2)
    listing = {manifest_name(ts[1].key(2)), manifest_name(ts[3].key(2)), "stray.tmp-1"}
    skip, pending = plan_stage(ts, listing)
    assert [t.partition.partition_id for t in skip] == [1, 3]
    assert [t.partition.partition_id for t in pending] == [0, 2]


@pytest.mark.parametrize("has_state, has_hashes, done", [(True, True, True), (True, False, False), (False, True, False)])
def test_a_stage_before_a_deduplicator_needs_both_its_state_and_its_hashes(has_state, has_hashes, done):
    ts = tasks(1, end=1)
    listing = ({manifest_name(ts[0].key(1))} if has_state else set()) | \
        ({hashes_path(ts[0]).rsplit("/", 1)[-1]} if has_hashes else set())
    skip, pending = plan_stage(ts, listing)
    assert (len(skip), len(pending)) == ((1, 0) if done else (0, 1))


def test_a_checkpoint_of_another_recipe_does_not_count():
    ts = tasks(1, end=2)
    other = tasks(1, end=2)[0]
    other.ops = [build_op("clean_email_mapper", {}, "process[0]"), OPS[1]]
    assert plan_stage(ts, {manifest_name(other.key(2))}) == ([], ts)
