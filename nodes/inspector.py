"""The `ui` payload the web inspector draws: each image's 24x24 token ids and their palette colours."""

from __future__ import annotations

import torch

from ..janus_core import GRID, JanusTokens


def token_grid_ui(tokens: JanusTokens, palette: torch.Tensor) -> dict:
    """{"janus_grid": [{"index", "rows", "cols", "ids": [576 ints], "rgb": [576*3 ints], "model"} per image]}."""
    t = tokens.tokens.reshape(tokens.tokens.shape[0], GRID * GRID).long().cpu()
    pal = palette.to(torch.uint8).cpu()
    name = (tokens.model or {}).get("name", "")
    grids = []
    for i in range(t.shape[0]):
        ids = t[i]
        rgb = pal[ids.clamp(0, pal.shape[0] - 1)].reshape(-1)
        grids.append({"index": i, "rows": GRID, "cols": GRID, "ids": ids.tolist(), "rgb": rgb.tolist(),
                      "model": name})
    return {"janus_grid": grids}
