"""The numerical agreement with transformers' Janus on the tiny random checkpoint (fp32), both layouts:
max |ours - theirs| of the prompt hidden states, the generation-head logits and the VQ-decoded pixels, and
whether the greedy CFG token streams are equal. tests/test_oracle.py asserts the same with atol 1e-4.

    python benchmarks/oracle_errors.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    import torch

    from janus_core import decode_tokens, load, prepare_cond, sample_tokens
    from tests.test_oracle import _prompt_hidden
    from tests.tiny_checkpoint import build_hf_model, write_checkpoint

    torch.set_num_threads(1)
    hf = build_hf_model()
    print("| layout | hidden states max abs err | head logits max abs err | VQ pixels (0..1) max abs err | greedy stream equal |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        for layout, fmt in (("transformers", "safetensors"), ("original", "bin")):
            lm, vq = load(write_checkpoint(hf, Path(tmp) / layout, layout, fmt), dtype="float32", device="cpu")
            cond = prepare_cond(lm, "a watercolor painting of mountains")
            ids = torch.tensor([cond.cond_ids, cond.uncond_ids])
            ours = _prompt_hidden(lm, ids)
            theirs = hf.model.language_model(input_ids=ids).last_hidden_state
            e_h = (ours - theirs).abs().max().item()
            e_l = (lm.model.image_logits(ours[:, -1]) - hf.model.generation_head(theirs[:, -1])).abs().max().item()
            tokens = torch.randint(0, 16384, (2, 24, 24), generator=torch.Generator().manual_seed(0))
            px = ((hf.decode_image_tokens(tokens.view(2, -1)) + 1) / 2).clamp(0, 1)
            e_p = (decode_tokens(vq, tokens) - px).abs().max().item()
            greedy = sample_tokens(lm, cond, cfg=5.0, temperature=0).tokens.view(1, -1)
            ref = hf.generate(ids[:1], attention_mask=torch.ones_like(ids[:1]), generation_mode="image",
                              do_sample=False, guidance_scale=5.0)
            print(f"| {layout} ({fmt}) | {e_h:.2e} | {e_l:.2e} | {e_p:.2e} | {bool(torch.equal(greedy, ref))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
