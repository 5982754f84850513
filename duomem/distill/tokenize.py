"""Chat examples to token ids and labels: loss on the assistant turns only, prompts exactly as at inference."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

from duomem.errors import DataError
from duomem.llm.base import Message
from duomem.llm.hf import HFBundle, encode, render


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    """``-100`` where no loss is taken (everything but the assistant turns)."""

    @property
    def trained_tokens(self) -> int:
        return sum(label != -100 for label in self.labels)


def assistant_spans(bundle: HFBundle, messages: Sequence[Message]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant turn (its text and end-of-turn mark).

    A span starts where the prompt for that turn (rendered with the generation prompt, as at inference) ends, so
    the model learns to continue exactly the text it will be given."""
    full = render(bundle, messages, add_generation_prompt=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render(bundle, messages[:i], add_generation_prompt=True)
        upto = render(bundle, messages[: i + 1], add_generation_prompt=False)
        if not full.startswith(prompt) or not full.startswith(upto):
            raise DataError("the chat template does not render conversations incrementally; cannot mask turns")
        spans.append((len(prompt), len(upto)))
    return full, spans


def tokenize_example(bundle: HFBundle, messages: Sequence[Message]) -> TokenizedExample:
    """Tokenize the whole conversation once; label the tokens that fall inside assistant spans."""
    full, spans = assistant_spans(bundle, messages)
    pieces: list[tuple[str, bool]] = []
    cursor = 0
    for start, end in spans:
        pieces.append((full[cursor:start], False))
        pieces.append((full[start:end], True))
        cursor = end
    pieces.append((full[cursor:], False))
    input_ids: list[int] = []
    labels: list[int] = []
    first = True
    for text, trained in pieces:
        if not text:
            continue
        ids = encode(bundle, text) if first else bundle.tokenizer(text, add_special_tokens=False)["input_ids"]
        first = False
        input_ids += ids
        labels += ids if trained else [-100] * len(ids)
    return TokenizedExample(input_ids=input_ids, labels=labels)


_BUNDLE: list[HFBundle] = []


def _init(bundle: HFBundle) -> None:
    _BUNDLE.append(bundle)


def _one(messages: Sequence[Message]) -> TokenizedExample:
    return tokenize_example(_BUNDLE[0], messages)


def tokenize_examples(bundle: HFBundle, examples: Sequence[Sequence[Message]],
                      workers: int | None = None) -> list[TokenizedExample]:
    """:func:`tokenize_example` for every example, in order, over ``workers`` processes (default: every core):
    rendering each turn's prompt is CPU work that grows with the square of the turns, so a full-size dataset
    (3,356 examples, 6.9M tokens) takes minutes on one core."""
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(examples) < 64:
        return [tokenize_example(bundle, m) for m in examples]
    import multiprocessing as mp

    light = replace(bundle, model=None)  # the tokenizer and template travel, not the weights
    with mp.get_context("spawn").Pool(workers, initializer=_init, initargs=(light,)) as pool:
        return pool.map(_one, examples, chunksize=16)
