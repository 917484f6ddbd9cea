"""Memory a run needs, estimated before anything is allocated, against the memory the device has free.

A batch that cannot fit is refused with the estimate, what is available and the largest batch that fits,
instead of an allocator error (or the machine swapping) minutes into a run.
"""

from __future__ import annotations

import os

import torch

from .errors import InsufficientMemoryError
from .model import KVCache

HEADROOM = 1.25  # allocator slack and temporaries the estimate does not itemise


def available_bytes(device: torch.device) -> int | None:
    """Free memory on `device` that this process can still use; None when it cannot be known."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "mps":
        mps = getattr(torch, "mps", None)
        if mps is not None and hasattr(mps, "recommended_max_memory"):
            return int(mps.recommended_max_memory() - mps.driver_allocated_memory())
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def sampling_bytes(cfg, image_vocab: int, batch: int, prompt_len: int, dtype: torch.dtype, width: int = 1,
                   noise_rows: int = 0) -> int:
    """KV cache + the prefill's widest activations + per-step logits work for `batch` images (2 rows each);
    `width` positions per step (the Jacobi window: a longer cache and `width` logits rows per image);
    `noise_rows` Exp(1) rows per image held besides (zipar's ring of rows drawn ahead)."""
    rows, max_len = 2 * batch, prompt_len + 576 + width - 1
    elem = torch.empty((), dtype=dtype).element_size()
    cache = KVCache.nbytes(cfg, rows, max_len, dtype)
    qkv = (cfg.num_heads + 2 * cfg.num_kv_heads) * cfg.head_dim
    prefill = rows * prompt_len * (3 * cfg.hidden_size + qkv + 3 * cfg.intermediate_size) * elem
    scores = rows * cfg.num_heads * prompt_len * prompt_len * 4  # attention weights if SDPA takes its math path
    tables = 2 * rows * max_len * cfg.head_dim * elem  # per-row rotary tables (left-padded prompts)
    # head output, CFG mix, probabilities, noise (+ its ring), top-p sort (float32), per position of a step
    logits = (6 * width + (width if width > 1 else 0)) * rows * image_vocab * 4 + batch * noise_rows * image_vocab * 4
    return int(HEADROOM * (cache + prefill + scores + tables + logits))


def describing_bytes(cfg, vision, vocab: int, images: int, prompt_len: int, max_new: int, dtype: torch.dtype) -> int:
    """KV cache + prefill activations + the tower's widest activations + per-token logits for `images` rows."""
    rows, max_len = images, prompt_len + max_new
    elem = torch.empty((), dtype=dtype).element_size()
    cache = KVCache.nbytes(cfg, rows, max_len, dtype)
    qkv = (cfg.num_heads + 2 * cfg.num_kv_heads) * cfg.head_dim
    prefill = rows * prompt_len * (3 * cfg.hidden_size + qkv + 3 * cfg.intermediate_size + vocab // 64) * elem
    scores = rows * cfg.num_heads * prompt_len * prompt_len * 4
    tower = rows * vision.num_positions * (4 * vision.width + vision.mlp_hidden) * 4
    logits = 4 * rows * vocab * 4
    return int(HEADROOM * (cache + prefill + scores + tower + logits))


def check_fits(what: str, need: int, device: torch.device, per_item: int, items: int, item_name: str,
               advice: str) -> None:
    """Refuse a run whose estimate `need` exceeds the memory available on `device`."""
    have = available_bytes(device)
    if have is None or need <= have:
        return
    fits = max(0, items - -(-(need - have) // max(per_item, 1)))
    gib = 1 << 30
    raise InsufficientMemoryError(
        f"{what} needs about {need / gib:.2f} GiB on {device} (KV cache and activations) but only {have / gib:.2f} "
        f"GiB is available; {item_name} {items} does not fit (about {fits} would). {advice}",
        input=item_name,
    )
