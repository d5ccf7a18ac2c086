"""Build the tiny random Llama model and its LoRA adapter shipped inside llem.

Run from the repository root::

    python scripts/make_tiny_model.py

It writes ``llem/data/tiny-random-llama/`` (config, safetensors weights, tokenizer) and
``llem/data/tiny-random-llama-lora/`` (a peft LoRA adapter for it). Everything is seeded,
so rebuilding gives byte-identical weights and tokenizer files. The model's output is
nonsense: it exists so that tests and demos run in milliseconds without any download.

The tokenizer is a byte-level BPE with 512 entries trained with the ``tokenizers``
library on the text below, which was written for this project; its tokenizer config
carries a short chat template (:data:`CHAT_TEMPLATE`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

SEED = 20261101
VOCAB_SIZE = 512
SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"]
#: A short chat template (``role: text`` lines, then ``assistant:``), so that llem's
#: tests exercise ``experiment.chat_template`` on the tiny model; written for llem.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)

# Text written for llem to train the tokenizer: prose about measuring inference, plus a
# little Python and some numbers, so that merges cover words, code and digits.
CORPUS = """
A language model turns a prompt into tokens, reads them all at once, and then writes one
new token at a time. The first part is called prefill and the second part is called
decode. Prefill is limited by arithmetic, decode is limited by memory bandwidth, and the
energy each part draws from the wall is different. Measuring it honestly means reading a
power counter when one exists, sampling power when only readings exist, and estimating it
from processor load when nothing else is available, and always saying which was done.
The time to the first token tells a user how long they wait before anything appears. The
gap between later tokens tells them how fast the text streams. Throughput counts tokens
per second over the whole batch, and energy per token divides the joules by the tokens
that came out. A larger batch usually raises throughput and lowers the energy per token,
until the memory is full or the padding wastes more than the batch saves.
Quantization stores weights in eight or four bits instead of sixteen or thirty two. It
saves memory, it can save energy, and it can change the text that comes out. A compiled
model may run faster after a slow first pass. A static cache keeps tensors the same shape
so the compiler can reuse its work. Beam search keeps several candidate answers alive and
costs more per token than greedy decoding. Sampling with a temperature, a top k or a top p
changes which token is chosen but barely changes the cost of choosing it.
Repeat every measurement. Warm the machine up first, wait for it to settle, subtract the
idle power if you want the part the model is responsible for, and report a mean with an
interval rather than a single lucky number. Note the driver, the library versions, the
processor and the settings, so that someone else can run the same thing next month.
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
How many joules does one answer cost? What is the capital of the country you live in?
Summarise the following report in three sentences. Write a function that returns the sum.
def tokens_per_second(tokens: int, seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    return tokens / seconds

for i in range(10):
    print(i, i * i, [x for x in range(i) if x % 2 == 0])

class Meter:
    def __init__(self, interval_s=0.1):
        self.interval_s = interval_s
        self.samples = []

    def read(self):
        return {"power_w": 42.5, "energy_j": 1234.0}

0 1 2 3 4 5 6 7 8 9 10 16 32 64 100 128 256 512 1024 2048 3.14 0.5 1e-3 99.9%
January February March April May June July August September October November December
Monday Tuesday Wednesday Thursday Friday Saturday Sunday morning evening night
""".strip()


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = CORPUS.splitlines()
    # Repeat the corpus so pair counts are stable; training is deterministic for a fixed input.
    tok.train_from_iterator(lines * 4, trainer=trainer)
    return tok


def build_model(out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = build_tokenizer()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|pad|>",
        padding_side="left",
        model_max_length=2048,
    )
    eos_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|pad|>")

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.generation_config.pad_token_id = pad_id

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    # Name the class every transformers version knows (5.x writes its own new name).
    tok_cfg_path = out / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text())
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_cfg["chat_template"] = CHAT_TEMPLATE
    (out / "chat_template.jinja").unlink(missing_ok=True)  # kept in tokenizer_config.json
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2, sort_keys=True) + "\n")
    _write_readme(out, model)


def build_lora(model_dir: Path, out: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        task_type="CAUSAL_LM",
        init_lora_weights=False,  # random A and B, so the adapter visibly changes outputs
    )
    torch.manual_seed(SEED + 1)
    peft_model = get_peft_model(model, lora)
    if out.exists():
        shutil.rmtree(out)
    peft_model.save_pretrained(out, safe_serialization=True)
    # Point the adapter at the built-in alias rather than at this machine's path.
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = "tiny-random-llama"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    readme = out / "README.md"
    readme.write_text(
        "# tiny-random-llama-lora\n\nA random LoRA adapter (rank 4 on q_proj and v_proj) for "
        "llem's built-in `tiny-random-llama`, built by `scripts/make_tiny_model.py`. "
        "It exists to test adapter loading offline.\n"
    )


def _write_readme(out: Path, model) -> None:
    n = sum(p.numel() for p in model.parameters())
    (out / "README.md").write_text(
        "# tiny-random-llama\n\n"
        f"A Llama with random weights ({n:,} parameters, 2 layers, hidden size 64) and a "
        f"byte-level BPE tokenizer of {VOCAB_SIZE} tokens, built by "
        "`scripts/make_tiny_model.py` with a fixed seed. Its output is nonsense; it exists "
        "so that llem's tests and demos run instantly and offline.\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1] / "llem" / "data"
    parser.add_argument("--out", type=Path, default=root, help="folder to write both into")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir = args.out / "tiny-random-llama"
    build_model(model_dir)
    build_lora(model_dir, args.out / "tiny-random-llama-lora")
    for d in (model_dir, args.out / "tiny-random-llama-lora"):
        size = sum(f.stat().st_size for f in d.iterdir())
        print(f"{d}: {size / 1024:.0f} KiB, files: {sorted(f.name for f in d.iterdir())}")


if __name__ == "__main__":
    main()
