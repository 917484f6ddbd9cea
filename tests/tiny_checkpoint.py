"""Tiny random Janus checkpoints in both layouts, and a real tokenizer.json with Janus's special tokens.

The transformers layout is written by transformers' own `JanusForConditionalGeneration.save_pretrained`;
the original DeepSeek layout renames those same tensors (reference/janus-architecture.md §8.2) and
writes a `multi_modality` config. Used by the tests, the benchmarks and anyone trying the pack offline.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SPECIAL_TOKENS = [
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<begin_of_image>", "<end_of_image>",
    "<image_placeholder>", "<|User|>", "<|Assistant|>",
]  # fmt: skip
_CORPUS = [
    "a photo of a cat sitting on a red chair", "a watercolor painting of mountains at sunset",
    "portrait of an old man with a hat", "blurry, low quality, ugly, deformed", "User Assistant",
    "the quick brown fox jumps over the lazy dog", "0123456789 .,:;!?-'\"()",
]  # fmt: skip


def build_tokenizer(path: Path, with_pro_roles: bool = True) -> Path:
    """A byte-level BPE tokenizer.json whose special tokens are matched whole; BOS is added on encode."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [s for s in SPECIAL_TOKENS if with_pro_roles or s not in ("<|User|>", "<|Assistant|>")]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS, trainer)
    bos = SPECIAL_TOKENS[0]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, max_position_embeddings=1024, rope_theta=50000.0)
TINY_VQ = dict(base_channels=32, latent_channels=32, num_res_blocks=1, num_embeddings=16384)
# A real SigLIP-shaped tower, only narrow: 384 px / 16 = 576 patch tokens, head width 64 like SigLIP-L.
TINY_VISION = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2)
# preprocessor_config.json as the Janus-Pro repos ship it (original spelling) and as transformers writes it
PREPROCESSOR_ORIGINAL = {"background_color": [127, 127, 127], "do_normalize": True, "image_mean": [0.5, 0.5, 0.5],
                         "image_processor_type": "VLMImageProcessor", "image_size": 384, "image_std": [0.5, 0.5, 0.5],
                         "min_size": 14, "processor_class": "VLChatProcessor", "rescale_factor": 0.00392156862745098}
PREPROCESSOR_TRANSFORMERS = {"do_normalize": True, "do_pad": True, "do_rescale": True, "do_resize": True,
                             "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "JanusImageProcessor",
                             "image_std": [0.5, 0.5, 0.5], "min_size": 14, "processor_class": "JanusProcessor",
                             "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"height": 384, "width": 384}}


def build_hf_model(text: dict | None = None, vq: dict | None = None, seed: int = 0, vision: dict | None = None):
    """transformers' Janus with tiny dimensions and weights spread enough that greedy choices are not near-ties."""
    from transformers import JanusConfig, JanusForConditionalGeneration

    text = {**TINY_TEXT, **(text or {})}
    vq = {**TINY_VQ, **(vq or {})}
    h = text["hidden_size"]
    config = JanusConfig(
        text_config={"model_type": "llama", **text},
        vision_config=dict(**{**TINY_VISION, **(vision or {})}, projection_dim=h),
        vq_config=dict(projection_dim=h, image_token_embed_dim=h, **vq),
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.normal_(0.0, 1.0 / math.sqrt(fan_in))
            elif name.endswith("bias"):
                p.normal_(0.0, 0.02)
            else:  # norm weights
                p.fill_(1.0).add_(torch.randn_like(p) * 0.05)
    return model


def _set_generation_config(model, tokenizer_path: Path) -> None:
    tok = Tokenizer.from_file(str(tokenizer_path))
    gc = model.generation_config
    gc.pad_token_id = tok.token_to_id("<｜▁pad▁｜>")
    gc.bos_token_id = tok.token_to_id("<｜begin▁of▁sentence｜>")
    gc.eos_token_id = tok.token_to_id("<｜end▁of▁sentence｜>")
    gc.generation_kwargs = {"boi_token_id": tok.token_to_id("<begin_of_image>")}
    model.config.image_token_id = tok.token_to_id("<image_placeholder>")  # transformers' default is Pro-1B's id


# transformers key -> original key (reference §8.2)
_TO_ORIGINAL = [
    (r"^model\.language_model\.", "language_model.model."),
    (r"^lm_head\.", "language_model.lm_head."),
    (r"^model\.aligner\.fc1\.", "aligner.layers.0."),
    (r"^model\.aligner\.hidden_layers\.0\.", "aligner.layers.2."),
    (r"^model\.generation_embeddings\.", "gen_embed."),
    (r"^model\.generation_aligner\.fc1\.", "gen_aligner.layers.0."),
    (r"^model\.generation_aligner\.hidden_layers\.0\.", "gen_aligner.layers.2."),
    (r"^model\.generation_head\.proj_out\.", "gen_head.output_mlp_projector."),
    (r"^model\.generation_head\.vision_head\.", "gen_head.vision_head."),
    (r"^model\.vqmodel\.", "gen_vision_model."),
    (r"\.encoder\.down\.", ".encoder.conv_blocks."),
    (r"\.decoder\.up\.", ".decoder.conv_blocks."),
    (r"\.block\.(\d+)\.", r".res.\1."),
    (r"\.mid\.block_1\.", ".mid.0."),
    (r"\.mid\.attn_1\.", ".mid.1."),
    (r"\.mid\.block_2\.", ".mid.2."),
]


# transformers tower names -> timm / original names (reference §8.2, inverted); q/k/v are fused below
_VISION_TO_ORIGINAL = [
    (r"^model\.vision_model\.", "vision_model.vision_tower."),
    (r"\.embeddings\.patch_embedding\.", ".patch_embed.proj."),
    (r"\.post_layernorm\.", ".norm."),
    (r"\.encoder\.layers\.(\d+)\.", r".blocks.\1."),
    (r"\.layer_norm1\.", ".norm1."),
    (r"\.layer_norm2\.", ".norm2."),
    (r"\.self_attn\.projection_layer\.", ".attn.proj."),
]


def _vision_to_original(sd: dict) -> dict:
    out = {}
    for key, value in sd.items():
        if key.endswith("embeddings.position_embedding.weight"):
            out["vision_model.vision_tower.pos_embed"] = value[None]  # [N, D] -> timm's [1, N, D]
            continue
        m = re.search(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$", key)
        if m:
            if m.group(2) == "q":
                base = key[: m.start(2)]
                fused = torch.cat([sd[f"{base}{x}_proj.{m.group(3)}"] for x in "qkv"])
                out[f"vision_model.vision_tower.blocks.{m.group(1)}.attn.qkv.{m.group(3)}"] = fused
            continue
        new = key
        for pattern, repl in _VISION_TO_ORIGINAL:
            new = re.sub(pattern, repl, new)
        out[new] = value
    return out


def to_original_state_dict(sd: dict) -> dict:
    vision = {k: v for k, v in sd.items() if k.startswith("model.vision_model.")}
    out = _vision_to_original(vision)
    for key, value in sd.items():
        if key in vision:
            continue
        new = key
        for pattern, repl in _TO_ORIGINAL:
            new = re.sub(pattern, repl, new)
        out[new] = value
    # documented tensors of the original that inference never reads
    out["gen_vision_model.quantize.codebook_used"] = torch.zeros(65536)
    width = out["vision_model.vision_tower.norm.weight"].shape[0]
    out["vision_model.vision_tower.attn_pool.latent"] = torch.zeros(1, 1, width)  # the unused attention-pool head
    out["vision_model.vision_tower.attn_pool.q.weight"] = torch.zeros(width, width)
    out["vision_model.vision_tower.attn_pool.q.bias"] = torch.zeros(width)
    return out


def original_config(hf_config) -> dict:
    t = hf_config.text_config
    h = t.hidden_size
    vq = hf_config.vq_config
    vision_width = hf_config.vision_config.hidden_size
    return {
        "model_type": "multi_modality",
        "architectures": ["MultiModalityCausalLM"],
        "language_config": {
            "model_type": "llama", "hidden_size": h, "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_hidden_layers, "num_attention_heads": t.num_attention_heads,
            "num_key_value_heads": t.num_key_value_heads, "vocab_size": t.vocab_size,
            "max_position_embeddings": t.max_position_embeddings, "rope_theta": t.rope_parameters["rope_theta"],
            "rms_norm_eps": t.rms_norm_eps, "torch_dtype": "float32",
        },
        "gen_vision_config": {"cls": "VQ-16", "model_type": "gen_vision",
                              "params": {"image_token_size": vq.num_embeddings, "n_embed": vq.embed_dim}},
        "gen_aligner_config": {"cls": "MlpProjector", "model_type": "gen_aligner",
                               "params": {"depth": 2, "input_dim": vq.embed_dim, "n_embed": h,
                                          "projector_type": "mlp_gelu"}},
        "gen_head_config": {"cls": "vision_head", "model_type": "gen_head",
                            "params": {"image_token_embed": h, "image_token_size": vq.num_embeddings, "n_embed": h}},
        "aligner_config": {"cls": "MlpProjector", "model_type": "aligner",
                           "params": {"depth": 2, "input_dim": vision_width, "n_embed": h,
                                      "projector_type": "mlp_gelu"}},
        "vision_config": {"cls": "CLIPVisionTower", "model_type": "vision",
                          "params": {"model_name": "siglip_large_patch16_384", "image_size": 384,
                                     "select_feature": "same", "select_layer": -1}},
    }  # fmt: skip


def _write_tensors(sd: dict, folder: Path, fmt: str, shards: int) -> None:
    from safetensors.torch import save_file

    ext, stem = (".safetensors", "model") if fmt == "safetensors" else (".bin", "pytorch_model")
    keys = list(sd)
    groups = [keys[i::shards] for i in range(shards)]

    def save(part: dict, path: Path):
        part = {k: v.cpu().contiguous().clone() for k, v in part.items()}  # built on a GPU: written from host memory
        if fmt == "safetensors":
            save_file(part, str(path), metadata={"format": "pt"})
        else:
            torch.save(part, path)

    if shards == 1:
        save(sd, folder / f"{stem}{ext}")
        return
    weight_map = {}
    for i, group in enumerate(groups):
        name = f"{stem}-{i + 1:05d}-of-{shards:05d}{ext}"
        save({k: sd[k] for k in group}, folder / name)
        weight_map.update({k: name for k in group})
    (folder / f"{stem}{ext}.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def write_checkpoint(model, folder: Path, layout: str = "transformers", fmt: str = "safetensors",
                     shards: int = 1, dtype: torch.dtype = torch.float32, pro_roles: bool = True) -> Path:
    """Write `model` (transformers Janus) as a checkpoint folder in the given layout and weight format."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok_path = build_tokenizer(folder / "tokenizer.json", with_pro_roles=pro_roles)
    _set_generation_config(model, tok_path)
    preprocessor = PREPROCESSOR_TRANSFORMERS if layout == "transformers" else PREPROCESSOR_ORIGINAL
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    if layout == "transformers" and fmt == "safetensors" and shards == 1 and dtype == torch.float32:
        model.save_pretrained(folder)  # transformers' own writer for the canonical case
        return folder
    sd = {k: v.to(dtype) for k, v in model.state_dict().items()}
    if layout == "transformers":
        model.config.save_pretrained(folder)
        model.generation_config.save_pretrained(folder)
    else:
        sd = to_original_state_dict(sd)
        (folder / "config.json").write_text(json.dumps(original_config(model.config), indent=2))
    _write_tensors(sd, folder, fmt, shards)
    return folder
