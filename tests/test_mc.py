"""Multiple choice with a decoder LM (sve.methods.multiple_choice): the heads are the LM head's
answer-token rows; every method builds and trains with them; prompts; bad items named by id.

On a tiny random causal Llama (width 32, 2 blocks) with the MiniLM tokenizer (same vocab size):
random weights, the real code path (LlamaForCausalLM's own logits are the reference)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sve.backbones import from_model
from sve.errors import ConfigError, DataError
from sve.methods import answer_token_ids, as_multiple_choice, build
from sve.methods.multiple_choice import items_from_rows, lm_head_rows, prompt

pytestmark = pytest.mark.usefixtures("one_thread")

ROWS = [
    {"id": "q1", "question": "Which gas do plants take in?",
     "choices": ["oxygen", "carbon dioxide", "helium", "neon"], "answer": 1},
    {"id": "q2", "question": "What melts ice?", "choices": ["heat", "cold", "dark", "salt"], "answer": 0},
    {"id": "q3", "question": "Which is a planet?", "choices": ["Moon", "Sun", "Mars", "Comet"], "answer": 2},
]


def _causal_llama(tokenizer, tied: bool):
    from conftest import TINY_TEXT
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(**TINY_TEXT, num_key_value_heads=1, pad_token_id=0,
                                      tie_word_embeddings=tied)).eval()
    reference = copy.deepcopy(lm)  # from_model uses the model in place
    return from_model(lm, tokenizer, name="tiny-causal-llama", max_length=64), reference


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def llama(request, minilm_tokenizer):
    return _causal_llama(minilm_tokenizer, request.param)


def _batch(backbone):
    texts = [prompt(r["question"], r["choices"]) for r in ROWS]
    return backbone.tokenize(texts), torch.tensor([r["answer"] for r in ROWS])


def _zero_shot(reference, enc, ids):
    """LlamaForCausalLM's next-token logits of the answer tokens after each prompt's last real token."""
    with torch.no_grad():
        logits = reference(**enc).logits
    last = enc["attention_mask"].sum(1) - 1  # right padding
    return logits[torch.arange(len(last)), last][:, ids]


def test_head_is_the_lm_head_logits_of_the_answer_tokens(llama):
    backbone, reference = llama
    ids = answer_token_ids(backbone.tokenizer, 4)
    assert len(set(ids)) == 4
    expected_rows = reference.get_output_embeddings().weight[ids]
    assert torch.equal(lm_head_rows(backbone, ids), expected_rows.detach())
    enc, _ = _batch(backbone)
    zero_shot = _zero_shot(reference, enc, ids)
    for name in ("sve", "lora_ensemble", "single", "deep_ensemble"):
        opts = {"init_std": 0.0} if name == "sve" else {}
        model = build(name, backbone, 3, 4, seed=0, answer_tokens=ids, **opts)
        assert not model.sve_head_weight.requires_grad and not model.sve_head_bias.requires_grad
        with torch.no_grad():
            logits = model(**enc)
        M = model.num_members
        assert logits.shape == (3, M, 4)
        # every member starts at the model's zero-shot answer (exactly: no σ jitter, LoRA B = 0)
        assert torch.allclose(logits, zero_shot[:, None].expand(-1, M, -1), atol=1e-4), name


def test_members_start_identical_up_to_sigma_jitter(llama):
    backbone, reference = llama
    ids = answer_token_ids(backbone.tokenizer, 4)
    enc, _ = _batch(backbone)
    zero_shot = _zero_shot(reference, enc, ids)
    model = build("sve", backbone, 4, 4, seed=0, answer_tokens=ids, targets="last:1")
    with torch.no_grad():
        logits = model(**enc)
    spread = (logits - zero_shot[:, None]).abs().max()
    scale = zero_shot.abs().max()
    assert 0 < spread < 0.05 * scale  # members differ only by the 1 % σ jitter
    assert (logits[:, 0] - logits[:, 1]).abs().max() > 0


@pytest.mark.parametrize("name", ["sve", "lora_ensemble", "single"])
def test_methods_train_a_step_with_the_answer_head(llama, name):
    backbone, _ = llama
    ids = answer_token_ids(backbone.tokenizer, 4)
    enc, y = _batch(backbone)
    opts = {} if name == "single" else {"targets": "last:1"}
    model = build(name, backbone, 2, 4, seed=0, answer_tokens=ids, **opts)
    head = model.sve_head_weight.detach().clone()
    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    model.train()
    logits = model(**enc)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.repeat_interleave(logits.shape[1]))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(p, b) for p, b in zip(trainable, before))
    assert torch.equal(model.sve_head_weight, head)  # the LM-head rows stay frozen
    if name == "sve":  # only the last block's layers are per-member
        assert model.layers() and all(n.startswith(backbone.blocks[-1]) for n in model.layers())


def test_trainable_answer_head_and_save_load_round_trip(llama, tmp_path):
    from sve.io import load, save

    backbone, _ = llama
    ids = answer_token_ids(backbone.tokenizer, 4)
    model = build("sve", backbone, 2, 4, seed=1, answer_tokens=ids, answer_head_trainable=True)
    assert model.sve_head_weight.requires_grad and model.sve_head_weight.shape == (2, 4, 32)
    assert torch.equal(model.sve_head_weight[0], model.sve_head_weight[1])
    with torch.no_grad():
        model.sve_head_weight[1] += 0.5  # as if trained
    save(model, tmp_path / "a.safetensors")
    again = load(backbone, tmp_path / "a.safetensors")
    assert torch.equal(again.sve_head_weight, model.sve_head_weight)
    frozen = build("svf", backbone, 1, 4, seed=1, answer_tokens=ids)
    save(frozen, tmp_path / "b.safetensors")
    assert torch.equal(load(backbone, tmp_path / "b.safetensors").sve_head_weight, frozen.sve_head_weight)


def test_a_model_without_lm_head_is_refused(tiny_llama):
    ids = answer_token_ids(tiny_llama.tokenizer, 4)  # a LlamaModel (no LM head), untied
    with pytest.raises(ConfigError, match="no LM head"):
        build("sve", tiny_llama, 2, 4, answer_tokens=ids)


# ------------------------------------------------------------------------------------ prompts, data


def test_prompt_and_items():
    text = prompt("Which gas?", ["oxygen", "helium"])
    assert text == "Question: Which gas?\nA. oxygen\nB. helium\nAnswer:"
    items = items_from_rows([{"id": "x", "question": "q", "choices": ["a", "b", "c"], "answer": "3",
                              "choice_labels": ["1", "2", "3"]}])
    assert (items[0].id, items[0].answer) == ("x", 2)


def test_classification_set_becomes_a_topic_question():
    from sve.data import Dataset

    ds = Dataset("news", "text", np.array([1, 0]), ["business", "sport"],
                 texts=["Shares rose on Monday as markets rallied.", "The striker scored twice."])
    mc = as_multiple_choice(ds, max_words=3)
    assert mc.classes == ["A", "B"] and list(mc.labels) == [1, 0]
    question = "Question: Which topic is this text about?"
    assert mc.texts[0] == f"Shares rose on\n{question}\nA. business\nB. sport\nAnswer:"
    ood = as_multiple_choice(ds.as_ood(), choices=ds.classes)
    assert list(ood.labels) == [-1, -1] and "B. sport" in ood.texts[1]


def test_multiple_choice_fields_are_re_lettered():
    from sve.data import Dataset

    ds = Dataset("arc", "text", np.array([0, 2]), ["A", "B", "C"], texts=["raw", "raw"])
    ds.fields = {"id": ["a1", "a2"], "question": ["Q1?", "Q2?"],
                 "choice_texts": [["x", "y"], ["u", "v", "w"]]}
    mc = as_multiple_choice(ds)
    assert mc.texts[0] == "Question: Q1?\nA. x\nB. y\nAnswer:" and mc.classes == ["A", "B", "C"]
    assert len(as_multiple_choice(ds, num_choices=3)) == 1


def test_answer_not_among_choices_is_reported_with_its_id():
    with pytest.raises(DataError, match="'q9'.*not among its choices"):
        items_from_rows([{"id": "q9", "question": "?", "choices": ["a", "b"], "answer": "C",
                          "choice_labels": ["A", "B"]}])
    with pytest.raises(DataError, match="'q8'.*not among its choices"):
        items_from_rows([{"id": "q8", "question": "?", "choices": ["a", "b"], "answer": 5}])
    from sve.data import Dataset

    ds = Dataset("arc", "text", np.array([0, 3]), ["A", "B", "C", "D"], texts=["raw", "raw"])
    ds.fields = {"id": ["a1", "a2"], "question": ["Q1?", "Q2?"],
                 "choice_texts": [["x", "y"], ["u", "v", "w"]]}
    with pytest.raises(DataError, match="'a2'.*not among its 3 choices"):
        as_multiple_choice(ds)


def test_bad_answer_options_are_refused(llama):
    backbone, _ = llama
    with pytest.raises(ConfigError, match="answer_tokens"):
        build("sve", backbone, 2, 4, answer_tokens=[1, 1, 2, 3])
    with pytest.raises(ConfigError, match="num_classes"):
        build("sve", backbone, 2, 3, answer_tokens=answer_token_ids(backbone.tokenizer, 4))


def test_a_multiple_choice_run_scores_bbc_topics_with_the_lm_head(tmp_path, minilm_tokenizer):
    """task: multiple_choice end to end: prompts from BBC News, the LM-head answer rows as heads,
    OOD lines posed with the ID choices; the run records that the (random) backbone was not pretrained."""
    from conftest import TINY_TEXT
    from transformers import LlamaConfig, LlamaForCausalLM

    from sve import experiments

    folder = tmp_path / "tiny-causal-llama"
    LlamaForCausalLM(LlamaConfig(**TINY_TEXT, num_key_value_heads=1, pad_token_id=0,
                                 tie_word_embeddings=True)).save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    config = experiments.ExperimentConfig(
        name="mc", backbone=f"hf:{folder}", backbone_options={"random": True}, task="multiple_choice",
        dataset="bbc-news", ood=["chatterbot"], methods=["sve"], members=2, targets="last:1", epochs=1,
        warmup_epochs=0, batch_size=8, max_length=48, max_words=12, train_limit=16, val_limit=10,
        test_limit=10, ood_limit=8)
    path = experiments.run(config, tmp_path / "runs")
    run = experiments.load_run(path)
    logits = run.logits("sve")[0]
    assert logits.shape == (10, 2, 5)  # 5 topics = 5 letters
    assert experiments.read_json(path / "backbone.json")["pretrained"] is False
    adapter = experiments.read_json(path / "sve" / "seed0" / "cost.json")
    assert adapter["heads"] == 0  # the answer head is frozen: nothing of it is trained
