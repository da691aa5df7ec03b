"""DataJuicer's global config: every key is implemented, mapped, accepted without effect (one
WARNING event each), or refused; unknown keys stay errors; values coerce as DataJuicer's parser
coerces them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from djworker.compat import compat_markdown
from djworker.config import load_recipe, parse_overrides
from djworker.djkeys import DJ_TYPES, IGNORED, MAPPED, REFUSED
from djworker.errors import RecipeError
from tests.support.engine import REPO, env_with, job_files, make_recipe

DJ_PROCESS = Path(sys.executable).with_name("dj-process")


def recipe(tmp: Path, text: str) -> Path:
    (tmp / "in.jsonl").write_text('{"text": "hello world, a line of text"}\n' * 3)
    path = tmp / "recipe.yaml"
    path.write_text(f"dataset_path: {tmp / 'in.jsonl'}\nexport_path: {tmp / 'out.jsonl'}\n" + text)
    return path


def test_every_datajuicer_key_has_a_status():
    from djworker.config import Recipe

    for key in DJ_TYPES:
        top = key.split(".")[0]
        assert key in IGNORED or key in MAPPED or key in REFUSED or top in Recipe.model_fields, key


def test_the_whole_config_all_keys_load_and_each_ignored_one_warns_once(tmp_path):
    text = (REPO / "tests/data/dj-config/config_all_globals.yaml").read_text()
    loaded = yaml.safe_load(text)
    r = load_recipe(recipe(tmp_path, ""), raw={**loaded, "dataset_path": str(tmp_path / "in.jsonl"),
                                                "export_path": str(tmp_path / "out.jsonl")})
    warned = sorted(w.split("'")[1] for w in r.compat_warnings)
    assert warned == sorted([k for k in loaded if k in IGNORED] + ["dataset"])
    assert all("has no effect here" in w for w in r.compat_warnings)


def test_ignored_keys_become_one_warning_event_each_in_a_real_run(tmp_path):
    path = make_recipe(tmp_path, rows=50, turbo=True, use_dag=True, use_cache=False, op_fusion=True,
                       partition={"size": 100, "mode": "manual"})
    done = subprocess.run([str(DJ_PROCESS), "--config", str(path), "--quiet", "--job_id", "j1"], cwd=tmp_path,
                          env=env_with(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    events = job_files(tmp_path, "j1").events()
    warnings = [e["message"] for e in events if e["event_type"] == "WARNING"]
    for key in ("turbo", "use_dag", "use_cache", "op_fusion", "partition.mode"):
        assert sum(f"'{key}'" in w for w in warnings) == 1, (key, warnings)
    assert any("checkpoints replace" in w for w in warnings if "'use_cache'" in w)


@pytest.mark.parametrize("text, message", [
    ("open_tracr: true\nprocess: [{text_length_filter: {}}]\n", "did you mean 'open_tracer'"),
    ("partition: {max_concurent_partitions: 2}\nprocess: [{text_length_filter: {}}]\n",
     "did you mean 'partition.max_concurrent_partitions'"),
    ("trace_num: many\nprocess: [{text_length_filter: {}}]\n", "trace_num"),
    ("encrypt_before_export: true\nprocess: [{text_length_filter: {}}]\n", "encrypted export is not supported"),
    ("export_type: parquet\nprocess: [{text_length_filter: {}}]\n", "disagrees with export_path"),
])
def test_bad_keys_and_values_are_refused_by_name(tmp_path, text, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(recipe(tmp_path, text))


def test_values_coerce_as_datajuicers_parser_does(tmp_path):
    """pile-philpaper-refine gives `max_len: 5e5`: plain YAML reads a string, jsonargparse a float."""
    r = load_recipe(recipe(tmp_path, "np: '3'\nuse_cache: 'false'\nprocess:\n"
                                     "  - average_line_length_filter: {max_len: 5e5}\n"))
    from djworker.config import build_ops

    assert build_ops(r)[0].max_len == 500000 and r.np == 3
    assert parse_overrides(["--np", "2e0"]) == {"np": 2.0}


def test_dataset_block_maps_one_local_or_s3_source(tmp_path):
    base = recipe(tmp_path, "process: [{text_length_filter: {}}]\n")
    raw = yaml.safe_load(base.read_text())
    del raw["dataset_path"]
    local = load_recipe(None, raw={**raw, "dataset": {"configs": [{"type": "local", "path": str(tmp_path / "in.jsonl")}]}})
    assert local.dataset_path == str(tmp_path / "in.jsonl")
    s3 = load_recipe(None, raw={**raw, "dataset": {"configs": [{
        "type": "remote", "source": "s3", "path": "s3://b/in.jsonl", "aws_access_key_id": "AK",
        "aws_secret_access_key": "SK", "aws_region": "us-east-2"}]}})
    assert (s3.dataset_path, s3.storage.s3.key, s3.storage.s3.secret, s3.storage.s3.region) == \
        ("s3://b/in.jsonl", "AK", "SK", "us-east-2")
    for dataset, message in [
        ({"configs": [{"type": "remote", "source": "huggingface", "path": "x/y"}]}, "'huggingface'.*not supported"),
        ({"configs": [{"type": "local", "path": "a"}, {"type": "local", "path": "b"}]}, "2 sources"),
        ({"max_sample_num": 10, "configs": [{"type": "local", "path": "a"}]}, "max_sample_num"),
    ]:
        with pytest.raises(RecipeError, match=message):
            load_recipe(None, raw={**raw, "dataset": dataset})
    with pytest.raises(RecipeError, match="one set of S3 credentials"):
        load_recipe(None, raw={**raw, "dataset_path": None, "export_aws_credentials": {"aws_region": "eu-west-1"},
                               "dataset": {"configs": [{"type": "s3", "path": "s3://b/x", "aws_region": "us-east-2"}]}})


def test_custom_operator_paths_register_ops_that_run(tmp_path):
    module = tmp_path / "my_ops.py"
    module.write_text(
        "import pyarrow as pa, pyarrow.compute as pc\n"
        "from djworker.ops.base import Mapper, register\n"
        "@register('shout_mapper')\n"
        "class Shout(Mapper):\n"
        "    def map_column(self, texts):\n"
        "        return pc.utf8_upper(texts)\n")
    path = make_recipe(tmp_path, rows=40, custom_operator_paths=[str(module)], process=[{"shout_mapper": {}}])
    done = subprocess.run([str(DJ_PROCESS), "--config", str(path), "--quiet"], cwd=tmp_path, env=env_with(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = [json.loads(line)["text"] for line in (tmp_path / "out" / "result.jsonl").read_text().splitlines()]
    assert len(out) == 40 and all(t == t.upper() for t in out)
    done = subprocess.run([str(DJ_PROCESS), "--check-recipe", str(path)], env=env_with(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "native   shout_mapper" in done.stdout, done.stdout + done.stderr
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(make_recipe(tmp_path, name="r2", custom_operator_paths=[str(tmp_path / "nope.py")]))


def check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(DJ_PROCESS), "--check-recipe", str(path)], env=env_with(), capture_output=True,
                          text=True, timeout=120)


def test_check_recipe_exit_code_and_report(tmp_path):
    ok = recipe(tmp_path, "turbo: false\nprocess: [{text_length_filter: {}}]\n")
    done = check(ok)
    assert done.returncode == 0, done.stderr
    assert "can run here" in done.stdout and "native   text_length_filter" in done.stdout
    assert "ignored  turbo" in done.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(ok.read_text().replace("text_length_filter", "language_id_score_filter"))
    done = check(bad)
    assert done.returncode == 2 and "lid.176.bin" in done.stdout
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "outputs").exists()


def test_compat_doc_is_current():
    assert (REPO / "docs" / "datajuicer-compat.md").read_text(encoding="utf-8") == compat_markdown(), \
        "regenerate it: python -m djworker.compat --write-docs docs/datajuicer-compat.md"


def test_every_op_that_cannot_run_is_named_in_one_error_before_any_work(tmp_path, monkeypatch):
    """Two ops missing their models and one fine: one run names both, and nothing is written."""
    from djworker.config import build_ops

    monkeypatch.setenv("DATA_JUICER_MODELS_CACHE", str(tmp_path / "no-models"))
    path = recipe(tmp_path, "process: [{language_id_score_filter: {}}, {text_length_filter: {}}, "
                            "{perplexity_filter: {lang: en}}]\n")
    with pytest.raises(RecipeError) as err:
        build_ops(load_recipe(path))
    message = str(err.value)
    assert message.startswith("2 ops cannot run")
    assert "process[0].language_id_score_filter" in message and "lid.176.bin" in message
    assert "process[2].perplexity_filter" in message and "en.sp.model" in message
    assert "text_length_filter" not in message
    assert not (tmp_path / "out.jsonl").exists()
