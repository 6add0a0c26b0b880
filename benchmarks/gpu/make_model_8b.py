"""A random-weight Llama-3.1-8B-shaped checkpoint for SGLang (GPU validation only).

Shape and config keys as ../shared/calibration/sglang_0.5.17_h100_llama8b (32 layers, 32 heads,
8 KV heads, head_dim 128, hidden 4096, intermediate 14336, vocab 128256, bf16, N(0, 0.02) weights,
unit norms); written straight with safetensors, without importing transformers.
usage: python3 make_model_8b.py OUTDIR
"""

import json
import os
import sys
import time

import torch
from safetensors.torch import save_file

out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/model"
os.makedirs(out, exist_ok=True)
H, L, NH, NKV, V, INTER, D = 4096, 32, 32, 8, 128256, 14336, 128
CFG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": H, "intermediate_size": INTER, "num_hidden_layers": L,
    "num_attention_heads": NH, "num_key_value_heads": NKV, "head_dim": D,
    "vocab_size": V, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0, "hidden_act": "silu", "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "bos_token_id": 128000, "eos_token_id": 128001,
    "attention_bias": False, "mlp_bias": False, "initializer_range": 0.02,
}  # fmt: skip
t0 = time.time()
g = torch.Generator(device="cuda").manual_seed(0)


def r(*shape: int) -> torch.Tensor:
    return torch.empty(*shape, device="cuda", dtype=torch.bfloat16).normal_(0.0, 0.02, generator=g).cpu()


def one(n: int) -> torch.Tensor:
    return torch.ones(n, dtype=torch.bfloat16)


sd = {"model.embed_tokens.weight": r(V, H), "model.norm.weight": one(H), "lm_head.weight": r(V, H)}
for i in range(L):
    p = f"model.layers.{i}."
    sd[p + "self_attn.q_proj.weight"] = r(NH * D, H)
    sd[p + "self_attn.k_proj.weight"] = r(NKV * D, H)
    sd[p + "self_attn.v_proj.weight"] = r(NKV * D, H)
    sd[p + "self_attn.o_proj.weight"] = r(H, NH * D)
    sd[p + "mlp.gate_proj.weight"] = r(INTER, H)
    sd[p + "mlp.up_proj.weight"] = r(INTER, H)
    sd[p + "mlp.down_proj.weight"] = r(H, INTER)
    sd[p + "input_layernorm.weight"] = one(H)
    sd[p + "post_attention_layernorm.weight"] = one(H)
save_file(sd, f"{out}/model.safetensors", metadata={"format": "pt"})
with open(f"{out}/config.json", "w") as f:
    json.dump(CFG, f, indent=1)
with open(f"{out}/generation_config.json", "w") as f:
    json.dump({"bos_token_id": 128000, "eos_token_id": 128001}, f)
n = sum(v.numel() for v in sd.values())
print(f"model written to {out}: {n / 1e9:.3f}B params, {time.time() - t0:.1f}s", flush=True)
