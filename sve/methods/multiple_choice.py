"""Multiple choice with a decoder LM: the pretrained LM head's logits of the answer letters.

How the paper (and BLoB, Laplace-LoRA) score ARC-Easy with LLaMA: the question and its lettered
choices form one prompt that ends in ``"Answer:"``; the model's next-token logits of the answer
tokens ``" A"``, ``" B"``, … are the class logits. For a decoder trunk whose pooled feature is the
last real token's hidden state ``h`` (``pooling="last"``, after the final norm), that is

    logit_c = h · E[t_c]        (E = the LM head's weight, V × D; t_c = the token of letter c)

so the head is the (C × D) block of LM-head rows of the answer tokens (LM heads have no bias).
SmolLM2 ties its LM head to the input embeddings (``tie_word_embeddings``), so ``E`` is the
embedding matrix; an untied LM head (LLaMA-2) is read from ``Backbone.head``, which
``load_backbone("hf:...")`` keeps for causal LMs.

``build(name, ..., answer_tokens=[t_A, t_B, ...])`` (every method takes it) puts these rows in every
member's head, bias 0, **frozen** unless ``answer_head_trainable=True`` (then each member trains its
own copy, all starting from the same rows). Members therefore differ only through what their
method trains (SVE: their singular values), and every member starts at the model's zero-shot answer
(exactly so at ``init_std=0``). ``sve.io.load`` rebuilds the head from the saved ``answer_tokens``.

Data: :func:`as_multiple_choice` turns a text dataset into prompts. A multiple-choice dataset (per-row
``fields`` ``question`` and ``choice_texts``, as ``sve.data``'s ARC sources give) keeps its
questions and answers, its choices re-lettered A, B, … (so the answer tokens are the same for every
item); a classification dataset (e.g. BBC News) becomes a topic question whose choices are the
class names. Prompts are truncated from the left (:func:`left_truncating`) so that the choices and
``"Answer:"`` always survive ``max_length``. Items with fewer choices than the widest one still get
logits for every letter (no mask); pass ``num_choices=`` to keep only items of one width.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from sve.errors import ConfigError, DataError

TASKS = ("classification", "multiple_choice")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
TOPIC_QUESTION = "Which topic is this text about?"
#: the build options every method takes (name -> default)
OPTIONS = {"answer_tokens": None, "answer_head_trainable": False}


@dataclass
class MCItem:
    """One multiple-choice item: ``answer`` is the position of the right choice in ``choices``."""

    id: str
    question: str
    choices: list[str]
    answer: int


def prompt(question: str, choices: Sequence[str], passage: str | None = None) -> str:
    """``"[<passage>\\n]Question: <question>\\nA. <choice>\\nB. <choice>...\\nAnswer:"``."""
    if len(choices) > len(LETTERS):
        raise DataError(f"an item has {len(choices)} choices; at most {len(LETTERS)} can be lettered")
    lines = [passage] if passage else []
    lines += [f"Question: {question}", *(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)), "Answer:"]
    return "\n".join(lines)


def items_from_rows(rows: Iterable[dict[str, Any]]) -> list[MCItem]:
    """:class:`MCItem` s from mappings with ``id``, ``question``, ``choices`` (texts) and ``answer``:
    the right choice's position, or its label when the row has ``choice_labels`` (ARC's
    ``answerKey``). An answer that is not among the item's choices raises ``DataError`` with its id."""
    items = []
    for n, row in enumerate(rows):
        item_id = str(row.get("id", n))
        choices = [str(c) for c in row.get("choices", [])]
        labels = [str(c) for c in row.get("choice_labels", [])] or None
        answer = row.get("answer")
        if len(choices) < 2:
            raise DataError(f"multiple-choice item {item_id!r} has {len(choices)} choices; it needs at "
                            "least 2")
        if labels is not None and len(labels) != len(choices):
            raise DataError(f"multiple-choice item {item_id!r} has {len(labels)} choice labels for "
                            f"{len(choices)} choices; give one label per choice")
        if labels is not None and str(answer) in labels:
            position = labels.index(str(answer))
        elif isinstance(answer, (int, np.integer)) and not isinstance(answer, bool) and labels is None:
            position = int(answer)
        else:
            position = -1
        if not 0 <= position < len(choices):
            among = labels if labels is not None else f"positions 0..{len(choices) - 1}"
            raise DataError(f"multiple-choice item {item_id!r}: its answer {answer!r} is not among its "
                            f"choices ({among}); fix the item's answer or drop the item")
        items.append(MCItem(item_id, str(row.get("question", "")), choices, position))
    return items


def as_multiple_choice(ds: Any, choices: Sequence[str] | None = None, question: str = TOPIC_QUESTION,
                       num_choices: int | None = None, max_words: int | None = None) -> Any:
    """A copy of the text dataset ``ds`` whose texts are multiple-choice prompts (see the module doc).

    With per-row ``fields`` ``question`` and ``choice_texts``: the item's own question and choices
    (re-lettered A, B, …), labels unchanged (the answer's position). Otherwise: ``question`` about
    each text (cut to its first ``max_words`` words), the choices being ``choices`` (default: the
    dataset's classes; pass the ID classes for an OOD set, whose labels stay ``-1``). ``classes``
    become the letters. ``num_choices`` keeps only the items with that many choices.
    """
    if getattr(ds, "texts", None) is None:
        raise DataError(f"{getattr(ds, 'name', 'dataset')}: multiple choice needs a text dataset")
    fields = getattr(ds, "fields", None) or {}
    if "question" in fields and "choice_texts" in fields:
        questions, options = list(fields["question"]), [list(c) for c in fields["choice_texts"]]
        texts = [prompt(q, c) for q, c in zip(questions, options)]
        widths = [len(c) for c in options]
    else:
        options_all = list(choices if choices is not None else ds.classes)
        if len(options_all) < 2:
            raise DataError(f"{ds.name}: a topic question needs at least 2 choices; pass choices=[...] "
                            "(e.g. the ID dataset's classes for an OOD set)")
        texts = [prompt(question, options_all, passage=_words(t, max_words)) for t in ds.texts]
        widths = [len(options_all)] * len(texts)
    labels = np.asarray(ds.labels)
    bad = [i for i, (y, w) in enumerate(zip(labels, widths)) if y >= w]
    if bad:
        ids = fields.get("id", range(len(labels)))
        raise DataError(f"{ds.name}: multiple-choice item {list(ids)[bad[0]]!r}: its answer (position "
                        f"{labels[bad[0]]}) is not among its {widths[bad[0]]} choices; fix or drop the item")
    out = replace(ds, texts=texts, classes=list(LETTERS[:max(widths, default=0)]),
                  info={**ds.info, "multiple_choice": True})
    if num_choices is not None:
        keep = [i for i, w in enumerate(widths) if w == num_choices]
        out = replace(out.subset(keep), classes=list(LETTERS[:num_choices]))
    return out


def _words(text: str, max_words: int | None) -> str:
    words = text.split()
    return " ".join(words if max_words is None else words[:max_words])


def left_truncating(backbone: Any) -> Any:
    """Make the backbone's tokenizer cut long prompts from the left (the end holds the choices and
    ``"Answer:"``); returns the backbone."""
    tok = getattr(backbone, "tokenizer", None)
    if tok is None:
        raise ConfigError(f"backbone {getattr(backbone, 'name', '?')!r} has no tokenizer; multiple choice "
                          "needs a text backbone with one (e.g. smollm2-135m, hf:<causal LM>)")
    tok.truncation_side = "left"
    return backbone


def answer_token_ids(tokenizer: Any, num_choices: int) -> list[int]:
    """The token ids of ``" A"``, ``" B"``, … (the letter after ``"Answer:"``); each must be one token."""
    if not isinstance(num_choices, int) or not 2 <= num_choices <= len(LETTERS):
        raise ConfigError(f"num_choices={num_choices!r}: must be an integer in 2..{len(LETTERS)}")
    ids = []
    for letter in LETTERS[:num_choices]:
        tokens = tokenizer(" " + letter, add_special_tokens=False)["input_ids"]
        if len(tokens) != 1:
            raise ConfigError(f"the tokenizer splits {' ' + letter!r} into {len(tokens)} tokens {tokens}; "
                              "the answer head needs one token per letter (use a decoder LM's own tokenizer)")
        ids.append(int(tokens[0]))
    if len(set(ids)) != len(ids):
        raise ConfigError(f"the tokenizer maps the answer letters to repeated tokens {ids}; it cannot tell "
                          "the choices apart")
    return ids


def lm_head_rows(backbone: Any, token_ids: Sequence[int]) -> torch.Tensor:
    """The (C × D) LM-head rows of ``token_ids``: ``Backbone.head`` when it is an LM head, else the
    input embeddings of a model with ``tie_word_embeddings``."""
    head = getattr(backbone, "head", None)
    weight = getattr(head, "weight", None) if isinstance(head, nn.Module) else None
    name = getattr(backbone, "name", "?")
    if weight is None:
        config = getattr(backbone.model, "config", None)
        if getattr(config, "tie_word_embeddings", False) and hasattr(backbone.model, "get_input_embeddings"):
            weight = backbone.model.get_input_embeddings().weight
        else:
            raise ConfigError(f"backbone {name!r} has no LM head to read the answer logits from: it is not "
                              "tied to the input embeddings and was not kept; load the causal LM with "
                              "load_backbone('hf:<id or folder>') or from_model(AutoModelForCausalLM...)")
    bad = [t for t in token_ids if not 0 <= int(t) < weight.shape[0]]
    if bad or weight.shape[1] != backbone.feature_dim:
        raise ConfigError(f"backbone {name!r}: answer tokens {bad or list(token_ids)} do not fit its LM head "
                          f"{tuple(weight.shape)} (feature width {backbone.feature_dim})")
    return weight.detach()[torch.as_tensor([int(t) for t in token_ids])].float().clone()


def check_options(answer_tokens: Any, trainable: Any) -> None:
    """Raise ``ConfigError`` unless the options are valid (``answer_tokens``: None or a list of
    at least 2 distinct token ids; ``answer_head_trainable``: a bool)."""
    ok = answer_tokens is None or (
        isinstance(answer_tokens, (list, tuple)) and len(answer_tokens) >= 2
        and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in answer_tokens)
        and len(set(answer_tokens)) == len(answer_tokens))
    if not ok:
        raise ConfigError(f"answer_tokens={answer_tokens!r}: expected None or a list of >= 2 distinct token "
                          "ids (sve.methods.multiple_choice.answer_token_ids(tokenizer, C))")
    if not isinstance(trainable, bool):
        raise ConfigError(f"answer_head_trainable={trainable!r}: expected True or False")


def attach_answer_head(model: nn.Module, backbone: Any, answer_tokens: Sequence[int],
                       trainable: bool = False) -> nn.Module:
    """Replace the heads of a built model (``sve_head_weight`` (M', C, D), ``sve_head_bias``) by the
    LM-head rows of ``answer_tokens`` in every member, bias 0; frozen unless ``trainable``."""
    check_options(list(answer_tokens), trainable)
    weight = model.sve_head_weight
    if weight.shape[1] != len(answer_tokens):
        raise ConfigError(f"{len(answer_tokens)} answer tokens for a model with {weight.shape[1]} classes; "
                          "build it with num_classes = the number of choices")
    rows = lm_head_rows(backbone, answer_tokens).to(weight.device, weight.dtype)
    rows = rows.expand(weight.shape[0], -1, -1).clone()  # every member starts from the same rows
    model.sve_head_weight = nn.Parameter(rows, requires_grad=trainable)
    model.sve_head_bias = nn.Parameter(torch.zeros_like(model.sve_head_bias), requires_grad=trainable)
    model.config.update(answer_tokens=[int(t) for t in answer_tokens], answer_head_trainable=trainable)
    return model
