"""llama.cpp backend over GGUF files (llama-cpp-python), reusing the KV cache across the turns of an episode."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from duomem.errors import ModelError
from duomem.llm.base import Batching, Candidate, Completion, Constraint, Message, Scores
from duomem.llm.chat_template import render_chat
from duomem.llm.constrain import continuation_ids, gbnf, log_softmax_at, log_softmax_row, turn_shape
from duomem.llm.registry import gguf_metadata

SCORE_SEQUENCES = 64
"""Sequences of the llama.cpp context: the prompt (sequence 0) and up to 63 candidates scored in one decode."""
SCORE_BATCH_TOKENS = 256
"""Candidate tokens per decode of ``score`` (each returns a row of logits: 256 x vocab floats, 50 MB for SmolLM2)."""

PREFIX_SHARE_TOKENS = 512
"""A prompt that leaves this many tokens or more to evaluate is looked up in the shared prefix store first, and
its evaluated state added to it after (an episode's first prompt: its two few-shot examples alone are 800-2,000
tokens; later turns evaluate tens)."""
PREFIX_STORE_BYTES = 1 << 30
"""What the store's states may take on disk (one is about 50 MB for a 2,000-token prompt of SmolLM2-135M); the
oldest go first, the newest always stays."""

_PARAMS_LOCK = threading.RLock()
"""Held while llama-cpp-python's global defaults or its log callback are swapped for a load."""


@functools.cache
def cpu_has_amx() -> bool:
    """Whether this CPU has Intel AMX tiles (Linux: the ``amx_tile`` flag in /proc/cpuinfo)."""
    try:
        return "amx_tile" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


def plain_weights_needed(lora: bool) -> bool:
    """llama.cpp's extra CPU buffer types (AMX, repacked weights) are turned off with a LoRA adapter, which cannot
    use them ("cannot use buft 'AMX'"), and on any CPU with AMX. Seen with llama.cpp 0.3.36 on a Xeon with
    amx_int8: the first decode with an adapter crashes the process, and so does every decode from a thread other
    than the one that loaded the model (a server's request threads). Elsewhere the extra types stay (on AVX2 they
    repack Q4_K/Q4_0 weights for speed; the 135M student's Q4_1 weights are not repacked)."""
    return lora or cpu_has_amx()


@contextlib.contextmanager
def load_defaults(n_seq_max: int | None, plain_weights: bool) -> Iterator[None]:
    """Make ``Llama`` create its context with ``n_seq_max`` sequences in one unified KV cache (None: llama.cpp's
    defaults) and, with ``plain_weights`` (see :func:`plain_weights_needed`), keep the model's weights in plain
    CPU buffers.

    llama-cpp-python 0.3.36 sets none of these from its constructor, so the defaults it starts from are amended
    while the model loads. A unified cache holds ``n_ctx`` cells shared by all sequences; copying the prompt's
    sequence to a candidate's only tags its cells (nothing is copied)."""
    import llama_cpp.llama_cpp as lib

    context_defaults, model_defaults = lib.llama_context_default_params, lib.llama_model_default_params

    def context_params():
        p = context_defaults()
        if n_seq_max is not None:
            p.n_seq_max = n_seq_max
            p.kv_unified = True
        return p

    def model_params():
        p = model_defaults()
        if plain_weights:
            p.use_extra_bufts = False
        return p

    with _PARAMS_LOCK:
        lib.llama_context_default_params, lib.llama_model_default_params = context_params, model_params
        try:
            yield
        finally:
            lib.llama_context_default_params, lib.llama_model_default_params = context_defaults, model_defaults


@contextlib.contextmanager
def _quiet_load() -> Iterator[list[str]]:
    """Hold back what llama.cpp logs while a model loads (with a LoRA adapter on a CPU with AMX it prints one
    "cannot use buft 'AMX', fallback to CPU" line per adapted tensor: hundreds of lines the user cannot act on);
    the lines are yielded, so that a failed load can quote them. Afterwards llama-cpp-python's own logger (quiet
    unless verbose) is back in place."""
    import llama_cpp
    import llama_cpp._logger as default_log

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", errors="replace"))

    with _PARAMS_LOCK:
        llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
        try:
            yield lines
        finally:
            llama_cpp.llama_log_set(default_log.llama_log_callback, ctypes.c_void_p(0))


def check_adapter(model: Path, adapter: Path) -> None:
    """An adapter llama.cpp would crash on is refused first: it must be a GGUF LoRA for the model's architecture
    (llama.cpp aborts the process on some malformed adapter files instead of reporting them)."""
    if not adapter.is_file():
        raise ModelError(f"adapter file {adapter} does not exist; export one with `duomem distill export`")
    meta = gguf_metadata(adapter, ("general.type", "adapter.type", "general.architecture"))
    if meta.get("general.type") != "adapter" or meta.get("adapter.type") != "lora":
        raise ModelError(f"{adapter} is not a GGUF LoRA adapter (general.type {meta.get('general.type')!r}); "
                         "export one with `duomem distill export`")
    arch = meta.get("general.architecture")
    model_arch = gguf_metadata(model, ("general.architecture",)).get("general.architecture")
    if arch != model_arch:
        raise ModelError(f"{adapter} is a LoRA for {arch!r} models, but {model} is a {model_arch!r} model")


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class LlamaCppChatModel(Batching):
    """A GGUF chat model on llama.cpp.

    The prompt is rendered with the model's own chat template and tokenized here, so the same conversation gives the
    same tokens in every backend. llama.cpp keeps the evaluated tokens: when the next prompt extends the last one
    (an agent's growing history), only the new tokens are evaluated.
    """

    def __init__(self, path: Path, name: str | None = None, n_ctx: int = 8192, n_threads: int | None = None,
                 seed: int = 0, lora_path: Path | None = None, chat_template: str | None = None) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - a hard dependency
            raise ModelError("llama-cpp-python is not installed: pip install llama-cpp-python==0.3.36") from exc
        if lora_path is not None:
            check_adapter(Path(path), Path(lora_path))
        threads = n_threads or min(2, os.cpu_count() or 1)
        with _quiet_load() as log:
            try:
                with load_defaults(SCORE_SEQUENCES, plain_weights=plain_weights_needed(lora_path is not None)):
                    self._llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                      seed=seed, verbose=False, lora_path=str(lora_path) if lora_path else None)
            except (ValueError, RuntimeError) as exc:
                said = " ".join(line.strip() for line in log if "error" in line.lower())[-300:]
                raise ModelError(f"llama.cpp cannot load {path}: {exc}" + (f" ({said})" if said else "")) from exc
        import llama_cpp as lib

        self._lib = lib
        self._vocab = lib.llama_model_get_vocab(self._llm._model.model)
        self._n_seq = int(lib.llama_n_seq_max(self._llm._ctx.ctx))
        self._score_batch = None  # a llama_batch, allocated at the first score()
        self._special: dict[int, str | None] = {}
        self.name = name or Path(path).stem
        self.path = Path(path)
        self.lora_path = lora_path
        self.threads = threads
        meta = self._llm.metadata
        self.context_length = min(n_ctx, int(meta.get(f"{meta.get('general.architecture', '')}.context_length",
                                                      n_ctx)))
        self.chat_template = chat_template or meta.get("tokenizer.chat_template")
        self._bos = self._token_text(self._llm.token_bos())
        self._eos = self._token_text(self._llm.token_eos())
        self._add_bos = meta.get("tokenizer.ggml.add_bos_token", "false") == "true"
        self._last_tokens: list[int] = []
        self._prefixes: Path | None = None

    def share_prefixes(self, directory: Path | None) -> None:
        """Keep long prompts' evaluated states in ``directory`` and start from the longest one that a new prompt
        extends (None: off). The worker processes of a run share one directory, so an episode's first prompt
        (instructions and the type's few-shot examples) is evaluated once per run and type rather than once per
        episode: the prompt's tokens and their positions are the same, so the cached cells are what evaluating
        them again would give."""
        self._prefixes = Path(directory) if directory is not None else None
        if self._prefixes is not None:
            self._prefixes.mkdir(parents=True, exist_ok=True)

    def _resume_prefix(self, tokens: Sequence[int]) -> None:
        """Before ``tokens`` are evaluated: if the store holds a state whose tokens ``tokens`` extend further than
        the context's own, load it into sequence 0 (a failed load leaves an empty context: a cold start)."""
        if self._prefixes is None:
            return
        llm = self._llm
        have = _common_prefix(llm.input_ids[:llm.n_tokens].tolist(), tokens)
        if len(tokens) - have < PREFIX_SHARE_TOKENS:
            return
        import numpy as np

        best, longest = None, have + PREFIX_SHARE_TOKENS // 2
        for path in self._prefixes.glob("*.tokens"):
            try:
                stored = np.fromfile(path, dtype=np.int32)
            except OSError:
                continue
            n = _common_prefix(stored.tolist(), tokens)
            if n > longest:
                best, longest = path.with_suffix(".state"), n
        if best is None:
            return
        llm._ctx.kv_cache_clear()
        llm.n_tokens, llm._requires_eval, self._last_tokens = 0, True, []
        out = (self._lib.llama_token * llm.n_ctx())()
        count = ctypes.c_size_t(0)
        if self._lib.llama_state_seq_load_file(llm._ctx.ctx, str(best).encode(), 0, out, llm.n_ctx(),
                                               ctypes.byref(count)) == 0:
            llm._ctx.kv_cache_clear()
            return
        n = count.value
        llm.input_ids[:n] = out[:n]
        llm.n_tokens = n
        self._last_tokens = list(out[:n])

    def _keep_prefix(self, evaluated: int) -> None:
        """After a call that evaluated ``evaluated`` tokens: a long evaluation's state goes into the store (the
        state first, its tokens last, each renamed into place: a reader sees whole entries only)."""
        if self._prefixes is None or evaluated < PREFIX_SHARE_TOKENS:
            return
        import hashlib

        import numpy as np

        llm = self._llm
        tokens = np.asarray(llm.input_ids[:llm.n_tokens], dtype=np.int32)
        name = self._prefixes / hashlib.sha256(tokens.tobytes()).hexdigest()[:20]
        part = self._prefixes / f".{name.name}.{os.getpid()}"
        ids = (self._lib.llama_token * len(tokens))(*tokens.tolist())
        if self._lib.llama_state_seq_save_file(llm._ctx.ctx, str(part).encode(), 0, ids, len(tokens)) == 0:
            part.unlink(missing_ok=True)
            return
        os.replace(part, name.with_suffix(".state"))
        tokens.tofile(part)
        os.replace(part, name.with_suffix(".tokens"))
        sizes = {}
        for entry in self._prefixes.glob("*.tokens"):
            with contextlib.suppress(OSError):  # another worker's eviction
                sizes[entry] = (entry.stat().st_mtime, entry.with_suffix(".state").stat().st_size)
        total = sum(size for _, size in sizes.values())
        for old in sorted(sizes, key=lambda e: sizes[e][0])[:-1]:
            if total <= PREFIX_STORE_BYTES:
                break
            old.unlink(missing_ok=True)
            old.with_suffix(".state").unlink(missing_ok=True)
            total -= sizes[old][1]

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages`` (chat template, or plain concatenation for base models)."""
        if not self.chat_template:
            text = "\n\n".join(m["content"] for m in messages)
            return text + "\n" if add_generation_prompt else text
        return render_chat(self.chat_template, messages, self._bos, self._eos, add_generation_prompt)

    def tokenize_raw(self, text: str) -> list[int]:
        """Token ids of ``text``, special tokens parsed, no BOS."""
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def special_text(self, token: int) -> str | None:
        if token not in self._special:
            control = bool(self._lib.llama_vocab_is_control(self._vocab, token))
            self._special[token] = self._token_text(token) if control else None
        return self._special[token]

    def is_end(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    def tokenize(self, text: str) -> list[int]:
        tokens = self.tokenize_raw(text)
        bos = self._llm.token_bos()
        if self._add_bos and bos >= 0 and (not tokens or tokens[0] != bos):
            tokens.insert(0, bos)
        return tokens

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.tokenize(self.render(messages)))

    def complete(self, messages: Sequence[Message], max_tokens: int = 64, stop: Sequence[str] = (),
                 temperature: float = 0.0, seed: int | None = None, choices: Constraint | None = None) -> Completion:
        grammar = None
        if choices is not None:
            from llama_cpp import LlamaGrammar

            grammar = LlamaGrammar.from_string(gbnf(choices), verbose=False)
        tokens = self.tokenize(self.render(messages))
        if len(tokens) + max_tokens > self.context_length:
            raise ModelError(f"prompt of {len(tokens)} tokens + {max_tokens} new ones exceeds the context of "
                             f"{self.context_length}; lower the history budget")
        self._resume_prefix(tokens)
        cached = _common_prefix(self._last_tokens, tokens)
        start = time.perf_counter()
        out = self._llm.create_completion(prompt=tokens, max_tokens=max_tokens, temperature=temperature,
                                          top_p=1.0, top_k=0 if temperature > 0 else 40, repeat_penalty=1.0,
                                          stop=list(stop) or None,
                                          seed=seed, grammar=grammar)
        seconds = time.perf_counter() - start
        choice = out["choices"][0]
        usage = out["usage"]
        self._last_tokens = tokens + self.tokenize(choice["text"])[int(self._add_bos):]
        self._keep_prefix(len(tokens) - cached)
        return Completion(text=choice["text"], prompt_tokens=usage["prompt_tokens"],
                          completion_tokens=usage["completion_tokens"], seconds=seconds, cached_tokens=cached,
                          finish_reason=choice.get("finish_reason") or "stop")

    # --- scoring ----------------------------------------------------------------------------------------------
    def score(self, messages: Sequence[Message], candidates: Sequence[Candidate]) -> Scores:
        """Score each candidate as the assistant's turn (see :meth:`ChatModel.score`).

        The prompt lives in sequence 0 of the KV cache, as for :meth:`complete`: only the tokens after the part
        already cached are evaluated (at least the last one, whose logits give each candidate's first token).
        Candidates are then decoded together, each in its own sequence that shares the prompt's cells
        (``llama_memory_seq_cp``), with logits only at candidate positions; their sequences are removed after, so
        the next call still finds the prompt cached."""
        start = time.perf_counter()
        prompt_text = self.render(messages)
        prompt = self.tokenize(prompt_text)
        shape = turn_shape(self.render, messages, prompt_text, bool(self.chat_template))
        conts = continuation_ids(self, prompt_text, prompt, shape, candidates)
        longest = max((len(c) for c in conts), default=0)
        if len(prompt) + longest > self.context_length:
            raise ModelError(f"prompt of {len(prompt)} tokens + a candidate of {longest} exceeds the context of "
                             f"{self.context_length}; lower the history budget")
        llm = self._llm
        self._resume_prefix(prompt)
        cached = _common_prefix(llm.input_ids[:llm.n_tokens].tolist(), prompt)
        keep = min(cached, max(len(prompt) - 2, 0))  # two tokens at least: see _score_candidates
        if not llm._ctx.kv_cache_seq_rm(-1, keep, -1):
            llm.reset()
            llm._ctx.kv_cache_clear()
            keep = 0
        llm.n_tokens = keep
        try:
            llm.eval(prompt[keep:])
            self._keep_prefix(len(prompt) - keep)
            first = self._logit_rows(self._lib.llama_get_logits_ith(llm._ctx.ctx, -1), 1)
            evaluated = len(prompt) - keep + self._score_candidates(len(prompt), conts, first, out := [])
        finally:
            llm._requires_eval = True  # the last logits are a candidate's now: complete() re-evaluates one token
        self._last_tokens = list(prompt)
        return Scores(logprobs=out, n_tokens=[len(c) for c in conts], prompt_tokens=len(prompt),
                      cached_tokens=min(cached, len(prompt)), evaluated_tokens=evaluated,
                      seconds=time.perf_counter() - start)

    def _logit_rows(self, pointer, n_rows: int):
        import numpy as np

        n_vocab = self._llm.n_vocab()
        return np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)),
                                     shape=(n_rows, n_vocab)).copy()

    def _score_candidates(self, n_prompt: int, conts: list[list[int]], first, out: list[float]) -> int:
        """Append each candidate's summed log-probability to ``out``; returns the tokens decoded.

        Candidates that start alike share their common tokens: a token of the batch belongs to every candidate
        sequence whose tokens so far are the same (a prefix tree laid out in the batch), so ``go to cabinet``
        is decoded once for all the cabinets."""
        lib, llm = self._lib, self._llm
        mem = lib.llama_get_memory(llm._ctx.ctx)
        budget = min(SCORE_BATCH_TOKENS, llm.n_batch, llm.n_ctx() - n_prompt)
        if self._score_batch is None:
            self._score_batch = lib.llama_batch_init(min(SCORE_BATCH_TOKENS, llm.n_batch), 0, self._n_seq)
        batch = self._score_batch
        head = log_softmax_row(first[0])
        totals = [float(head[c[0]]) if c else 0.0 for c in conts]
        pending = [i for i, c in enumerate(conts) if len(c) > 1]  # the last token is predicted, never fed
        decoded = 0
        while pending:
            group: list[int] = []
            nodes: dict[tuple[int, ...], list[int]] = {}  # fed prefix -> the sequences (1-based) sharing it
            for i in list(pending):
                fed = conts[i][:-1]
                new = sum(1 for j in range(len(fed)) if tuple(fed[:j + 1]) not in nodes)
                if len(group) >= self._n_seq - 1 or len(nodes) + new > budget:
                    break
                group.append(i)
                pending.remove(i)
                for j in range(len(fed)):
                    nodes.setdefault(tuple(fed[:j + 1]), []).append(len(group))
            if not group:
                raise ModelError(f"a candidate of {len(conts[pending[0]])} tokens does not fit one scoring batch "
                                 f"({budget} tokens) or the context")
            row_of: dict[tuple[int, ...], int] = {}
            for k, (prefix, seqs) in enumerate(sorted(nodes.items())):  # a prefix sorts before its extensions
                row_of[prefix] = k
                batch.token[k] = prefix[-1]
                batch.pos[k] = n_prompt + len(prefix) - 1
                batch.n_seq_id[k] = len(seqs)
                for n, seq in enumerate(seqs):
                    batch.seq_id[k][n] = seq
                batch.logits[k] = 1
            batch.n_tokens = len(nodes)
            for seq in range(1, len(group) + 1):
                lib.llama_memory_seq_cp(mem, 0, seq, -1, -1)
            try:
                rc = lib.llama_decode(llm._ctx.ctx, batch)
                if rc != 0:
                    raise ModelError(f"llama.cpp could not decode the candidates (llama_decode returned {rc})")
                rows = self._logit_rows(lib.llama_get_logits(llm._ctx.ctx), len(nodes))
            finally:
                for seq in range(1, len(group) + 1):
                    lib.llama_memory_seq_rm(mem, seq, -1, -1)
            picks = [(i, row_of[tuple(conts[i][:j + 1])], conts[i][j + 1])
                     for i in group for j in range(len(conts[i]) - 1)]
            for (i, _, _), lp in zip(picks, log_softmax_at(rows[[r for _, r, _ in picks]], [t for _, _, t in picks]),
                                     strict=True):
                totals[i] += lp
            decoded += len(nodes)
        out.extend(totals)
        return decoded

    def decode_speed(self, n_tokens: int = 128, context: int = 1000) -> dict[str, float]:
        """Raw llama.cpp speed, no agent around it: the prefill rate of a ``context``-token prompt (game text, as
        the agent sends) and the greedy decode rate right after it, at that context length."""
        text = ("You arrive at countertop 1. On the countertop 1, you see a apple 2, a bread 1, a butterknife 3, "
                "a cup 1, a dishsponge 2, a egg 3, a fork 1, a knife 2, a lettuce 1, and a mug 3.\n> go to ")
        unit = self.tokenize(text)
        context = max(1, min(context, self.context_length - n_tokens - 8))
        tokens = (unit * (context // len(unit) + 1))[:context]
        self._llm.reset()
        start = time.perf_counter()
        first_token_at = 0.0
        produced = 0
        for _ in self._llm.generate(tokens, temp=0.0, repeat_penalty=1.0):
            produced += 1
            if produced == 1:
                first_token_at = time.perf_counter()
            if produced > n_tokens:
                break
        end = time.perf_counter()
        produced -= 1
        self.reset_cache()
        return {"prompt_tokens": len(tokens), "prompt_tokens_per_s": len(tokens) / (first_token_at - start),
                "decode_tokens_per_s": produced / (end - first_token_at), "decode_tokens": produced,
                "threads": self.threads}

    def reset_cache(self) -> None:
        """Forget the cached prompt: the next call evaluates its whole prompt (a cold turn, for timing)."""
        self._llm.reset()
        self._last_tokens = []

    def close(self) -> None:
        if self._score_batch is not None:
            self._lib.llama_batch_free(self._score_batch)
            self._score_batch = None
        self._llm.close()
