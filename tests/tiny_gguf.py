"""Write llem's tiny random Llama as a GGUF file (float32 tensors), for tests of GGUF loading.

Uses the ``gguf`` package's writer; the tensor names, the q/k row order and the metadata
keys are the ones llama.cpp's GGUF files use and transformers' GGUF loader reads. The file
is about 0.6 MB and takes a fraction of a second to write.
"""

from __future__ import annotations

import json
from pathlib import Path

from llem.models import DATA_DIR

TINY = DATA_DIR / "tiny-random-llama"


def _permute(w, n_head: int):
    """HF's q/k rows in llama.cpp's order (transformers reverses this when it loads)."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, 2, dim, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: str | Path, *, scale: float = 1.0) -> Path:
    """Write the tiny model to ``path``; ``scale`` multiplies its weights (another file, same size)."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    path = Path(path)
    cfg = json.loads((TINY / "config.json").read_text())
    tok = json.loads((TINY / "tokenizer.json").read_text())
    tok_cfg = json.loads((TINY / "tokenizer_config.json").read_text())
    weights = load_file(str(TINY / "model.safetensors"))
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-random-llama")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(float(cfg.get("rope_theta") or 10000.0))
    w.add_vocab_size(cfg["vocab_size"])

    vocab = tok["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {a["content"] for a in tok["added_tokens"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])  # 3: control, 1: normal
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab["<|endoftext|>"])
    w.add_eos_token_id(vocab["<|endoftext|>"])
    w.add_pad_token_id(vocab["<|pad|>"])
    w.add_chat_template(tok_cfg["chat_template"])

    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    }
    for i in range(cfg["num_hidden_layers"]):
        for hf, gg in per_layer.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    for hf_name, gg_name in names.items():
        t = np.ascontiguousarray(weights[hf_name].astype(np.float32) * np.float32(scale))
        if gg_name.endswith("attn_q.weight"):
            t = np.ascontiguousarray(_permute(t, n_head))
        elif gg_name.endswith("attn_k.weight"):
            t = np.ascontiguousarray(_permute(t, n_kv))
        w.add_tensor(gg_name, t)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
