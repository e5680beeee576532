"""A GGUF model converted once into a plain folder: same weights, tokens and logits, and
later loads never touch the GGUF file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from synque.llm import gguf_cache
from synque.llm.gguf_cache import converted_folder, load_gguf, model_cache_dir, save_converted
from tests.conftest import needs_smollm2


def test_the_cache_folder_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(gguf_cache.ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert model_cache_dir() == tmp_path / ".cache" / "synque" / "models"
    monkeypatch.setenv(gguf_cache.ENV, str(tmp_path / "models"))
    assert model_cache_dir() == tmp_path / "models"
    monkeypatch.setenv(gguf_cache.ENV, "off")
    assert model_cache_dir() is None
    assert converted_folder(tmp_path) is None


def test_a_replaced_gguf_file_gets_a_new_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(gguf_cache.ENV, str(tmp_path / "models"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"one")
    first = converted_folder(gguf)
    assert first == converted_folder(gguf) and first.parent == tmp_path / "models"
    os.utime(gguf, ns=(0, gguf.stat().st_mtime_ns + 10**9))
    assert converted_folder(gguf) != first
    assert converted_folder(tmp_path / "on-the-hub.gguf") is None  # not a local file


def _tiny_model_and_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "</s>": 1, "good": 2, "film": 3, "bad": 4}
    backend = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", eos_token="</s>"
    )
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return tokenizer, LlamaForCausalLM(config).eval()


def test_a_saved_conversion_reloads_the_same_model_and_a_lost_race_changes_nothing(
    tmp_path: Path,
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer, net = _tiny_model_and_tokenizer()
    folder = tmp_path / "models" / "tiny-0123"
    assert save_converted(tokenizer, net, folder)
    again = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    ids = torch.tensor([AutoTokenizer.from_pretrained(str(folder))("good film bad")["input_ids"]])
    assert ids.tolist() == [tokenizer("good film bad")["input_ids"]]
    with torch.no_grad():
        assert torch.equal(net(ids).logits, again(ids).logits)
    written = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    # a second job finished its copy after ours: it keeps what is there and leaves no part
    assert not save_converted(tokenizer, net, folder)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == written
    assert [p.name for p in folder.parent.iterdir()] == ["tiny-0123"]


@pytest.mark.slow  # one GGUF load of SmolLM2: ~20 s
@needs_smollm2
def test_smollm2_loads_from_its_conversion_with_the_same_weights_and_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM

    from synque.llm.local import smollm2_gguf
    from synque.train.causal_lm import load_base

    monkeypatch.setenv(gguf_cache.ENV, str(tmp_path / "models"))
    path = smollm2_gguf()
    tokenizer, net = load_gguf(str(path.parent), path.name, torch.float32)
    assert converted_folder(path).is_dir()

    sources: list[str] = []
    original = AutoModelForCausalLM.from_pretrained

    def spy(source, *args, **kwargs):
        sources.append(kwargs.get("gguf_file") or str(source))
        return original(source, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    tokenizer2, net2 = load_gguf(str(path.parent), path.name, torch.float32)
    _, trainable = load_base("smollm2", None, torch.float32)  # the LoRA trainer's base
    assert sources == [str(converted_folder(path))] * 2  # never the GGUF file again

    messages = [{"role": "user", "content": "Is this review positive? A fine film."}]
    texts = [
        t.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        for t in (tokenizer, tokenizer2)
    ]
    assert texts[0] == texts[1]
    ids = tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    assert tokenizer2(texts[1], add_special_tokens=False)["input_ids"] == ids
    assert tokenizer2.eos_token == tokenizer.eos_token
    weights = net.state_dict()
    for other in (net2, trainable):
        assert other.state_dict().keys() == weights.keys()
        assert all(torch.equal(other.state_dict()[k], v) for k, v in weights.items())
    with torch.no_grad():
        batch = torch.tensor([ids])
        assert torch.equal(net(batch).logits, net2.eval()(batch).logits)
