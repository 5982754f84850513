"""Action selection over a known set of commands, shared by the backends: the tokens of candidate continuations
(for ``ChatModel.score``), GBNF grammars (llama.cpp) and token tries (transformers) for constrained decoding.

How a candidate is tokenized. The conversation is rendered once more with an assistant message whose content is a
sentinel; what follows the generation prompt splits into ``before`` + content + ``after`` (``""`` and
``"<|im_end|>\\n"`` for ChatML). A candidate's continuation is ``before + text + after`` (``ends_turn``) or
``before + text``. Its tokens are taken as a *suffix*: the prompt's text from just after its last special token
(``<|im_start|>``) is tokenized together with the continuation, and those tail tokens must equal the prompt's own
last tokens, or the call fails with a :class:`ModelError` (the prompt's tokens are then not a prefix of
prompt + candidate). Special tokens always split the text, so this is exactly the suffix of tokenizing the whole
rendered conversation, without re-tokenizing a long prompt once per candidate. An ``ends_turn`` continuation is
cut just after its first end-of-turn token (the newline ChatML puts after ``<|im_end|>`` is not scored); a model
without a chat template (plain text, ``\\n``-terminated turns) ends its turn with the newline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from duomem.errors import ModelError
from duomem.llm.base import THINK_PREFIX, Candidate, Constraint, Message

SENTINEL = "\u2063duomem\u2063candidate\u2063"
"""Stands for the assistant's content when the turn's shape is rendered (invisible separators: never in a prompt)."""
END_MARKERS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>", "<|endoftext|>", "</s>")
"""End-of-turn texts of common chat templates (used where only text is known, e.g. an OpenAI-compatible server)."""


@dataclass(frozen=True)
class TurnShape:
    """An assistant turn after the generation prompt: ``before`` + content + ``after``."""

    before: str
    after: str

    def text(self, candidate: Candidate) -> str:
        """The continuation text of ``candidate`` (``after`` only when it ends the turn)."""
        return self.before + candidate.text + (self.after if candidate.ends_turn else "")

    def text_to_end(self, candidate: Candidate) -> str:
        """Like :meth:`text`, but ``after`` cut just after its first end-of-turn marker (text-only backends)."""
        if not candidate.ends_turn:
            return self.before + candidate.text
        cuts = [i + len(m) for m in END_MARKERS if (i := self.after.find(m)) >= 0]
        return self.before + candidate.text + (self.after[:min(cuts)] if cuts else self.after)


def turn_shape(render: Callable[[Sequence[Message], bool], str], messages: Sequence[Message], prompt_text: str,
               has_template: bool) -> TurnShape:
    """How ``render`` continues ``prompt_text`` (``render(messages, True)``) with an assistant message."""
    if not has_template:  # plain text: turns are separated by blank lines, the agent stops at the newline
        return TurnShape("", "\n")
    full = render([*messages, {"role": "assistant", "content": SENTINEL}], False)
    if not full.startswith(prompt_text) or full.count(SENTINEL) != 1:
        raise ModelError("the model's chat template does not render an assistant turn as a continuation of its "
                         "generation prompt, so commands cannot be scored or constrained; use --actions free")
    before, after = full[len(prompt_text):].split(SENTINEL)
    return TurnShape(before, after)


class TokenView(Protocol):
    """What :func:`continuation_ids` needs from a backend's tokenizer."""

    def tokenize_raw(self, text: str) -> list[int]:
        """Token ids of ``text``, special tokens parsed, no BOS added."""
        ...

    def special_text(self, token: int) -> str | None:
        """The text of ``token`` if it is a special (control) token, else None."""
        ...

    def is_end(self, token: int) -> bool:
        """Whether ``token`` ends a turn (end-of-turn / end-of-generation)."""
        ...


def continuation_ids(view: TokenView, prompt_text: str, prompt_ids: Sequence[int], shape: TurnShape,
                     candidates: Sequence[Candidate]) -> list[list[int]]:
    """The token ids each candidate adds after ``prompt_ids`` (see the module's notes)."""
    tail, tail_ids = prompt_text, None
    for j in range(len(prompt_ids) - 1, -1, -1):
        special = view.special_text(prompt_ids[j])
        if special:
            at = prompt_text.rfind(special)
            if at >= 0:
                tail, tail_ids = prompt_text[at + len(special):], list(prompt_ids[j + 1:])
            break
    if tail_ids is None or view.tokenize_raw(tail) != tail_ids:
        tail, tail_ids = prompt_text, view.tokenize_raw(prompt_text)  # no special token to split at: all of it
    out: list[list[int]] = []
    for cand in candidates:
        ids = view.tokenize_raw(tail + shape.text(cand))
        if ids[:len(tail_ids)] != tail_ids:
            raise ModelError(f"the prompt's last tokens change when {cand.text!r} follows them, so it cannot be "
                             "scored as a continuation of the prompt; use --actions free")
        cont = ids[len(tail_ids):]
        if cand.ends_turn:
            stop = next((i for i, t in enumerate(cont) if view.is_end(t)), None)
            if stop is not None:
                cont = cont[:stop + 1]
        out.append(cont)
    return out


def constraint_candidates(constraint: Constraint) -> list[Candidate]:
    """The token paths a constrained completion may take: each command ending the turn, and the ``think:``
    prefix (free text follows it)."""
    if not constraint.commands and not constraint.allow_think:
        raise ModelError("a constrained completion needs at least one command (or thoughts allowed)")
    cands = [Candidate(c) for c in dict.fromkeys(constraint.commands)]
    if constraint.allow_think:
        cands.append(Candidate(THINK_PREFIX, ends_turn=False))
    return cands


# --- llama.cpp: GBNF ----------------------------------------------------------------------------------------------
def _gbnf_literal(text: str) -> str:
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
               .replace("\t", "\\t"))
    return f'"{escaped}"'


def _radix_rules(commands: Iterable[str]) -> list[str]:
    """GBNF rules ``command ::= ...`` (and ``c1``, ``c2``, ... below it) for exactly ``commands``, factored as a
    radix tree: commands sharing a prefix share one rule for what follows it. The language is the flat
    alternation's, so decoding under it is the same; llama.cpp advances one parse stack per branch of the current
    node rather than one per command (ScienceWorld lists 400-3,400 commands a turn)."""
    rules: dict[str, str] = {}

    def node(name: str, group: list[str]) -> None:
        by_first: dict[str, list[str]] = {}
        for c in sorted(c for c in group if c):
            by_first.setdefault(c[0], []).append(c)
        alts = []
        for members in by_first.values():
            prefix = members[0]
            for m in members[1:]:  # the branch's longest common prefix
                while not m.startswith(prefix):
                    prefix = prefix[:-1]
            tails = [m[len(prefix):] for m in members]
            if tails == [""]:
                alts.append(_gbnf_literal(prefix))
                continue
            child = f"c{len(rules) + 1}"
            rules[child] = ""  # numbered before its own children
            alts.append(f"{_gbnf_literal(prefix)} {child}")
            node(child, tails)
        body = " | ".join(alts)
        rules[name] = f"{name} ::= ({body})?" if "" in group else f"{name} ::= {body}"

    node("command", list(dict.fromkeys(commands)))
    return [rules.pop("command"), *rules.values()]


def gbnf(constraint: Constraint) -> str:
    """A GBNF grammar: exactly one of the commands (:func:`_radix_rules`), or ``think:`` and some free text without
    a newline; an optional newline may end either (the agent's stop string)."""
    constraint_candidates(constraint)  # the emptiness check
    branches, rules = [], []
    if constraint.commands:
        branches.append("command")
        rules += _radix_rules(constraint.commands)
    if constraint.allow_think:
        branches.append("thought")
        rules.append(f"thought ::= {_gbnf_literal(THINK_PREFIX)} \" \"? [^\\n ] [^\\n]*")  # a thought says something
    return "\n".join([f'root ::= ({" | ".join(branches)}) "\\n"?', *rules]) + "\n"


# --- transformers: a token trie -----------------------------------------------------------------------------------
@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    free: bool = False
    """After this node any token may follow until a newline (the ``think:`` prefix ends here)."""


class ChoiceTrie:
    """The allowed next tokens of a constrained completion, from the tokens generated so far.

    ``paths`` are token sequences (each command with its end-of-turn token; the ``think:`` prefix marked
    ``free``). After a free path any token may follow until one whose text holds a newline, then only the end
    tokens."""

    def __init__(self, paths: Iterable[tuple[Sequence[int], bool]], end_ids: Iterable[int],
                 has_newline: Callable[[int], bool]) -> None:
        self.root = _Node()
        self.end_ids = sorted(set(end_ids))
        self.has_newline = has_newline
        for ids, free in paths:
            node = self.root
            for t in ids:
                node = node.children.setdefault(int(t), _Node())
            node.free = node.free or free

    def allowed(self, generated: Sequence[int]) -> list[int] | None:
        """Token ids allowed next (None: any)."""
        node = self.root
        for i, t in enumerate(generated):
            if node.free:
                rest = generated[i:]
                if any(self.has_newline(int(x)) or int(x) in self.end_ids for x in rest):
                    return self.end_ids
                return None
            nxt = node.children.get(int(t))
            if nxt is None:
                return self.end_ids  # off the trie (cannot happen under the mask): end the turn
            node = nxt
        if node.free:
            return None
        return sorted(node.children) if node.children else self.end_ids


class ChoiceLogitsProcessor:
    """A transformers logits processor masking every token :class:`ChoiceTrie` does not allow (rows share one
    prompt length: the tokens after ``prompt_len`` are the generated ones)."""

    def __init__(self, trie: ChoiceTrie, prompt_len: int) -> None:
        self.trie = trie
        self.prompt_len = prompt_len

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        for row in range(scores.shape[0]):
            allowed = self.trie.allowed(input_ids[row, self.prompt_len:].tolist())
            if allowed is None:
                continue
            keep = scores[row, allowed].clone()
            scores[row, :] = -math.inf
            scores[row, allowed] = keep
        return scores


def log_softmax_at(rows: Any, targets: Sequence[int]) -> list[float]:
    """``log_softmax(rows[i])[targets[i]]`` for each row of a 2-D float array (numpy), in float64."""
    import numpy as np

    rows = np.asarray(rows)
    peak = rows.max(axis=1)
    lse = peak.astype(np.float64) + np.log(np.exp(rows - peak[:, None]).sum(axis=1, dtype=np.float64))
    picked = rows[np.arange(len(targets)), np.asarray(targets, dtype=np.int64)].astype(np.float64)
    return (picked - lse).tolist()


def log_softmax_row(row: Any) -> Any:
    """``log_softmax(row)`` of one 1-D float array (numpy), in float64."""
    import numpy as np

    row = np.asarray(row, dtype=np.float64)
    peak = row.max()
    return row - (peak + np.log(np.exp(row - peak).sum()))
