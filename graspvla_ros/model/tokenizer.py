"""The prompt tokenizer: InternLM2's sentencepiece model, used the way the official code uses its
Hugging Face tokenizer (``tokenizer(prompt, add_special_tokens=True)``: BOS prepended, no EOS).

The released checkpoint does not ship ``tokenizer.model``; pass the internlm2-1_8b one through
``llm_dir`` (Hugging Face layout) or put it next to config.json.
"""
from __future__ import annotations

from pathlib import Path

from graspvla_ros.model.config import TOKENIZER_FILE, ConfigError

PROMPT = "In: What action should the robot take to {instruction}?\nOut: "


def prompt_text(instruction: str) -> str:
    return PROMPT.format(instruction=instruction)


def find_tokenizer(checkpoint_dir: str | Path, llm_dir: str | Path | None) -> Path:
    candidates = ([Path(llm_dir) / TOKENIZER_FILE] if llm_dir is not None else []) + [Path(checkpoint_dir) / TOKENIZER_FILE]
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(f"{TOKENIZER_FILE} not found (looked in {', '.join(map(str, candidates))}): the checkpoint does "
                      "not ship it; pass llm_dir=<directory with internlm2-1_8b's config.json and tokenizer.model>")


class PromptTokenizer:
    def __init__(self, model_file: str | Path):
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
        self.vocab_size = self.sp.get_piece_size()
        self.bos_id, self.eos_id = self.sp.bos_id(), self.sp.eos_id()
        if self.bos_id < 0:
            raise ConfigError(f"{model_file} defines no BOS token")

    def encode(self, text: str) -> list[int]:
        """BOS + the pieces of `text` (no EOS), as add_special_tokens=True gives."""
        return [self.bos_id, *self.sp.encode(text)]

    def encode_prompt(self, instruction: str) -> list[int]:
        return self.encode(prompt_text(instruction))

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode([i for i in ids if 0 <= i < self.vocab_size])
