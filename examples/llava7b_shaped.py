"""A LLaVA-1.5-7B-shaped checkpoint with random weights, written the way the Hub lays it out, to measure what quota's
"your own model" path costs at 7B scale without downloading anything.

    python examples/llava7b_shaped.py --out ck7b            # bf16 safetensors + an offline-built processor

The shapes are LLaVA-1.5-7B's: a CLIP ViT-L/14 tower at 336 px (24 layers, width 1024; features of layer -2, the
CLS token dropped: 576 visual tokens), a two-layer GELU projector, and a Llama-2-7B language model (32 layers,
width 4096, MLP 11008, 32 heads). Weights are seeded normal(0, 0.02) draws (norms 1, biases 0): the answers are
noise, but every cost (memory, time, bytes on disk) is the real model's. The processor is built offline with the
test suite's byte-level BPE tokenizer (:mod:`tests.checkpoints`) and LLaVA's CLIP image processor; run from the
repository root. The script prints one JSON line: the folder's size and the seconds spent writing it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.checkpoints: the offline tokenizer builder

IMAGE, PATCH = 336, 14


def config(image_token_id: int, pad_token_id: int, eos_token_id: int, bos_token_id: int, text_layers: int = 32,
           vision_layers: int = 24):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=vision_layers, num_attention_heads=16,
                              image_size=IMAGE, patch_size=PATCH, projection_dim=768)
    text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=text_layers,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
                       pad_token_id=pad_token_id, eos_token_id=eos_token_id, bos_token_id=bos_token_id)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token_id,
                       vision_feature_layer=-2, vision_feature_select_strategy="default",
                       image_seq_length=(IMAGE // PATCH) ** 2, projector_hidden_act="gelu")


@torch.no_grad()
def random_model(cfg, device: str, seed: int):
    """The model of ``cfg`` in bfloat16 on ``device``, every weight drawn at once on the device (no float32 copy)."""
    from transformers import LlavaForConditionalGeneration

    with torch.device("meta"):
        model = LlavaForConditionalGeneration(cfg)
    model = model.to_empty(device=device).to(torch.bfloat16)
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() == 1:  # norms' weights 1, biases 0
            p.fill_(1.0 if name.endswith("weight") else 0.0)
        else:
            p.normal_(0.0, 0.02, generator=gen)
    for module in model.modules():  # buffers left empty by to_empty (rotary inverse frequencies, position ids)
        if hasattr(module, "inv_freq") and hasattr(module, "rope_init_fn"):
            inv_freq, module.attention_scaling = module.rope_init_fn(module.config, device)
            module.inv_freq.copy_(inv_freq)
            if hasattr(module, "original_inv_freq"):
                module.original_inv_freq = module.inv_freq
        if hasattr(module, "position_ids") and isinstance(getattr(module, "position_ids"), torch.Tensor):
            module.position_ids.copy_(torch.arange(module.position_ids.shape[-1], device=device)[None])
    return model.eval()


def write(out: Path, device: str, seed: int, text_layers: int = 32, vision_layers: int = 24) -> dict:
    from transformers import CLIPImageProcessor

    from tests.checkpoints import TEMPLATES, tiny_tokenizer

    tok = tiny_tokenizer("llava")
    cfg = config(tok.convert_tokens_to_ids("<image>"), tok.pad_token_id, tok.eos_token_id, tok.bos_token_id,
                 text_layers, vision_layers)
    cfg.architectures = ["LlavaForConditionalGeneration"]
    start = time.time()
    model = random_model(cfg, device, seed)
    built = time.time() - start
    start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size="2GB")
    tok.save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}).save_pretrained(out)
    (out / "processor_config.json").write_text(json.dumps(dict(
        processor_class="LlavaProcessor", patch_size=PATCH, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, image_token="<image>"), indent=2) + "\n")
    (out / "chat_template.jinja").write_text(TEMPLATES["llava"])
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    return {"folder": str(out), "parameters": sum(p.numel() for p in model.parameters()), "bytes": size,
            "build_s": round(built, 1), "save_s": round(time.time() - start, 1), "dtype": "bfloat16"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-layers", type=int, default=32, help="decoder layers (32: LLaVA-1.5-7B; fewer: a smoke test)")
    parser.add_argument("--vision-layers", type=int, default=24, help="vision encoder layers (24: CLIP ViT-L)")
    args = parser.parse_args()
    print(json.dumps(write(args.out, args.device, args.seed, args.text_layers, args.vision_layers)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
