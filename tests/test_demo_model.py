"""The bundled demo model (janus_core/demo_model): it ships, loads everywhere a checkpoint loads, and draws and
answers by meaning, scored from pixels by training/evaluate.py (CI-sized: a few prompts and seeds; the full
accuracy table is benchmarks/demo_accuracy.py).

The meaning checks also guard the chain: a swapped colour channel or a transposed token grid turns right pictures
into wrong ones, which the evaluator sees."""

import os
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))

from evaluate import read_picture, score  # noqa: E402
from scenes import random_scene, render  # noqa: E402

from janus_core import decode_tokens, describe, load, load_understanding, prepare_cond, sample_tokens  # noqa: E402
from janus_core.hub import DEMO_FOLDER, resolve_model  # noqa: E402
from janus_core.loader import Checkpoint  # noqa: E402

CAPTIONS = ["a red circle on a blue background", "a small yellow triangle at the top left on a black background",
            "a green square on the left on a white background", "a purple circle and an orange square on a green background"]
SEEDS = 2


@pytest.fixture(scope="module")
def demo():
    return load("demo", dtype="float32", device="cpu", with_encoder=True)


@pytest.fixture(scope="module")
def drawn(demo):
    """(caption, tokens [SEEDS, 24, 24], pictures) for every caption, cfg 5, temperature 1."""
    lm, vq = demo
    out = []
    for k, text in enumerate(CAPTIONS):
        tokens = sample_tokens(lm, prepare_cond(lm, text), seed=10 * k, batch_size=SEEDS, cfg=5.0, temperature=1.0)
        out.append((text, tokens, decode_tokens(vq, tokens)))
    return out


def _pictures(images: torch.Tensor) -> list[np.ndarray]:
    return [(img.numpy() * 255).round().astype(np.uint8) for img in images]


def _rates(results) -> dict[str, float]:
    totals: dict[str, list[bool]] = {}
    for r in results:
        for k, v in r.items():
            totals.setdefault(k, []).extend(v)
    return {k: sum(v) / len(v) for k, v in totals.items() if v}


def test_demo_ships_as_package_data_and_resolves_by_name():
    files = sorted(p.name for p in DEMO_FOLDER.iterdir())
    assert {"config.json", "tokenizer.json", "model.safetensors", "preprocessor_config.json"} <= set(files)
    assert sum(p.stat().st_size for p in DEMO_FOLDER.iterdir()) <= 40 * 2**20
    import re  # (tomllib is 3.11+; the project supports 3.10)

    block = (ROOT / "pyproject.toml").read_text().split("[tool.setuptools.package-data]", 1)[1]
    patterns = re.findall(r'"([^"]+)"', re.search(r"janus_core = \[(.*?)\]", block).group(1))
    for name in files:  # every file of the folder is installed with the package
        assert any(fnmatch(f"demo_model/{name}", p) for p in patterns), name
    assert resolve_model("demo") == DEMO_FOLDER
    with Checkpoint("demo") as ckpt:
        assert ckpt.folder == DEMO_FOLDER and ckpt.layout == "transformers"


@torch.inference_mode()
def test_transformers_loads_the_demo_and_agrees(demo):
    from transformers import JanusForConditionalGeneration

    lm, vq = demo
    hf = JanusForConditionalGeneration.from_pretrained(DEMO_FOLDER, dtype=torch.float32).eval()
    # transformers' image generation reads boi_token_id from generation_kwargs, which from_pretrained does not restore
    hf.generation_config.generation_kwargs = {"boi_token_id": lm.tokenizer.tok.token_to_id("<begin_of_image>")}
    cond = prepare_cond(lm, CAPTIONS[0])
    ours = sample_tokens(lm, cond, seed=0, cfg=5.0, temperature=0, decoding="sequential").tokens.view(1, -1)
    ids = torch.tensor([cond.cond_ids])
    theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), generation_mode="image", do_sample=False,
                         guidance_scale=5.0)
    # transformers' generate makes vision_config.num_image_tokens tokens: the tower's 144 positions here (32 px
    # patches), not the VQ's 576 (in the released models both are 576); the streams agree as far as it goes
    n = theirs.shape[1]
    assert n == 144 and torch.equal(ours[:, :n], theirs.cpu())


def test_training_reads_the_bundled_folder_back(demo):
    """export.read_folder (what `train_lm.py --init` starts from) holds exactly the weights janus_core loads."""
    from export import read_folder

    bundle = read_folder(DEMO_FOLDER)
    lm, vq = demo
    for trained, loaded in ((bundle.lm, lm.model), (bundle.vq, vq.model)):
        theirs = dict(loaded.named_parameters())
        for name, tensor in trained.named_parameters():
            assert torch.equal(tensor, theirs[name].float()), name


def test_demo_draws_what_the_caption_asks(drawn):
    """Floors well under what the bundled weights score (benchmarks/demo_accuracy.py): a model that ignores the
    caption, or a pipeline that scrambles it, falls below them."""
    results = [score(text, pic) for text, _, images in drawn for pic in _pictures(images)]
    rates = _rates(results)
    assert rates["background"] >= 0.5 and rates["colour"] >= 0.25, rates


def test_a_broken_chain_shows_as_wrong_pictures(demo):
    """Drawn scenes through the demo VQ (encode, decode) read back right; the same tokens through a swapped colour
    channel, or decoded as a transposed grid, do not."""
    from janus_core import encode_images

    lm, vq = demo
    scenes = [random_scene(__import__("random").Random(3_000_000 + i), objects=1) for i in range(40)]
    # off the diagonal (a transposed grid moves them), on a background a swapped channel changes (not white, black
    # or green, which RGB <-> BGR leaves near themselves)
    scenes = [sc for sc in scenes if abs(sc.shapes[0].cx - sc.shapes[0].cy) > 80
              and sc.background in ("red", "blue", "orange", "yellow", "purple")][:6]
    assert len(scenes) >= 4
    pictures = torch.from_numpy(np.stack([render(sc) for sc in scenes])).float() / 255
    tokens = encode_images(vq, pictures).tokens
    back = _pictures(decode_tokens(vq, tokens))
    flipped = _pictures(decode_tokens(vq, tokens.transpose(1, 2).contiguous()))
    right = swapped = transposed = 0
    for sc, img, tr in zip(scenes, back, flipped):
        bg, objects = read_picture(img)
        obj = sc.shapes[0]
        right += bg == sc.background and any(o.colour == obj.colour for o in objects)
        swapped += read_picture(img[..., ::-1].copy())[0] == sc.background
        # the object's centre, transposed, lies elsewhere unless it sat on the diagonal
        moved = [o for o in read_picture(tr)[1] if o.colour == obj.colour]
        transposed += bool(moved) and abs(moved[0].cx - obj.cx) < 40 and abs(moved[0].cy - obj.cy) < 40
    assert right >= len(scenes) - 1, (right, len(scenes))
    assert swapped <= 1, swapped
    assert transposed <= 1, transposed


def test_demo_answers_questions_about_drawn_scenes(demo):
    lm, _ = demo
    und = load_understanding("demo", dtype="float32", device="cpu")
    right_bg = right_shape = 0
    scenes = [random_scene(__import__("random").Random(2_000_000 + i), objects=1) for i in range(4)]
    for scene in scenes:
        image = render(scene)
        bg = describe(lm, image, "What colour is the background?", max_new_tokens=6, understanding=und)[0]
        shape = describe(lm, image, "What shape is in the picture?", max_new_tokens=6, understanding=und)[0]
        right_bg += scene.background in bg.lower().split()
        right_shape += scene.shapes[0].kind in shape.lower()
    assert right_bg >= 3 and right_shape >= 2, (right_bg, right_shape)


def test_the_first_run_of_the_readme_works_offline(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "janus_core", "generate", "--model", "demo", "--prompt",
                           CAPTIONS[0], "--output", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from PIL import Image

    background, objects = read_picture(Image.open(out / "00000.png"))
    # the bundled weights are weak (README, "The demo model"): the caption's colours show, not always in place
    assert {background, *(o.colour for o in objects)} & {"blue", "red"}, (background, objects)


def test_the_thirds_texture_marks_each_column_third_and_keeps_the_background():
    """render(..., "thirds") (training's --texture thirds): the background is THIRDS_LEVELS darker in the left
    third and lighter in the right one, within the grammar's allowance, and the evaluator reads the same
    background as from the smooth texture."""
    import random

    from evaluate import read_picture
    from scenes import PALETTE, SIZE, THIRDS_LEVELS

    for seed in range(4):
        scene = random_scene(random.Random(seed))
        picture = render(scene, "thirds").astype(np.float32)
        ring = picture[:2]  # the top rows: background only (shapes lie inside the picture)
        base = np.array(PALETTE[scene.background], dtype=np.float32)
        thirds = [ring[:, i * SIZE // 3 + 8 : (i + 1) * SIZE // 3 - 8].mean((0, 1)) - base for i in range(3)]
        for offset, want in zip(thirds, (-THIRDS_LEVELS, 0, THIRDS_LEVELS)):
            inside = base + want
            if np.all((inside > 2) & (inside < 253)):  # (a channel clipped at 0 or 255 cannot move)
                assert np.allclose(offset, want, atol=1.0), (scene.background, thirds)
        assert np.abs(ring - base).max() <= 15 + 4 * 2.0  # the allowance, and the pixel noise on top
        assert read_picture(render(scene, "thirds"))[0] == read_picture(render(scene))[0] == scene.background


def test_training_uses_bf16_autocast_only_where_bf16_products_are_native(monkeypatch):
    """On an AVX2-only CPU bf16 autocast is emulated (the pool encode ran 6.5x slower than float32 there), so 'auto'
    follows janus_core's dtype rule; 'on' / 'off' (and --no-amp) override it."""
    from common import use_amp

    from janus_core import loader

    cpu = torch.device("cpu")
    monkeypatch.setattr(loader, "cpu_bf16_instructions", lambda: None)
    assert use_amp("auto", cpu) is False and use_amp("on", cpu) is True
    monkeypatch.setattr(loader, "cpu_bf16_instructions", lambda: "AVX512-BF16")
    assert use_amp("auto", cpu) is True and use_amp("off", cpu) is False


def test_understanding_only_training_leaves_the_generator_bit_identical(tmp_path):
    """`train_lm.py --understanding-only` trains the tower, aligner and text head against the frozen generator, so a
    model retrained for understanding draws exactly the pictures it drew before."""
    import train_lm
    from export import read_folder

    out = tmp_path / "run"
    with pytest.raises(SystemExit, match="--init"):  # nothing to freeze without starting weights
        train_lm.main(["--vq", str(DEMO_FOLDER), "--out", str(out), "--understanding-only", "--steps", "1"])
    assert train_lm.main(["--vq", str(DEMO_FOLDER), "--init", str(DEMO_FOLDER), "--out", str(out), "--steps", "2",
                          "--und-batch", "2", "--understanding-only", "--amp", "off", "--seed", "3"]) == 0
    assert not (out / "pool").exists()  # no token pool is encoded for it
    with pytest.raises(SystemExit, match="--understanding-only setting"):  # its optimizer holds only the tower's
        train_lm.main(["--vq", str(DEMO_FOLDER), "--out", str(out), "--steps", "3", "--und-batch", "2", "--amp", "off"])
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    bundle = read_folder(DEMO_FOLDER)
    for name, tensor in bundle.lm.state_dict().items():
        assert torch.equal(state["lm"][name], tensor), name
    changed = [n for n, t in bundle.und.state_dict().items() if not torch.equal(state["und"][n], t)]
    assert any(n.startswith("vision.") for n in changed) and any(n.startswith("aligner.") for n in changed)


def test_shape_warmup_teaches_the_tower_through_a_probe_that_is_never_exported(tmp_path):
    """`--shape-warmup N` trains the tower and aligner on the shape of drawn one-object scenes through ShapeProbe
    (a training-only head) before the answer loss; the generator stays frozen, the probe rides in the checkpoint
    for resuming, and the exported folder holds no trace of it."""
    import math

    import train_lm
    from export import main as export_main
    from export import read_folder
    from safetensors import safe_open

    base = ["--vq", str(DEMO_FOLDER), "--init", str(DEMO_FOLDER), "--amp", "off", "--seed", "5", "--und-batch", "2",
            "--shape-batch", "4", "--shape-scenes", "4"]
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match="add --understanding-only"):
        train_lm.main([*base, "--out", str(out), "--steps", "2", "--shape-warmup", "1"])
    for bad in (["--shape-warmup", "2"], ["--shape-warmup", "-1"], ["--shape-aux", "nan"], ["--shape-aux", "-1"]):
        with pytest.raises(SystemExit, match="--shape-warmup must be"):
            train_lm.main([*base, "--out", str(out), "--steps", "2", "--understanding-only", *bad])
    assert not out.exists()  # refused before any work

    # one warm-up step, then one answer step with the probe's loss beside it
    assert train_lm.main([*base, "--out", str(out), "--steps", "2", "--shape-warmup", "1", "--shape-aux", "1",
                          "--understanding-only", "--save-every", "1"]) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2 and set(state["shape_probe"]) == {"query", "key.weight", "key.bias", "out.weight",
                                                                "out.bias"}
    assert state["shape_probe"]["out.weight"].shape[0] == 3 and all(
        math.isfinite(v) for t in state["shape_probe"].values() for v in t.flatten().tolist()[:8])
    bundle = read_folder(DEMO_FOLDER)
    for name, tensor in bundle.lm.state_dict().items():
        assert torch.equal(state["lm"][name], tensor), name
    changed = {n for n, t in bundle.und.state_dict().items() if not torch.equal(state["und"][n], t)}
    assert any(n.startswith("vision.") for n in changed) and any(n.startswith("aligner.") for n in changed)

    with pytest.raises(SystemExit, match="shape probe"):  # its optimizer holds the probe's parameters too
        train_lm.main([*base, "--out", str(out), "--steps", "3", "--understanding-only"])

    folder = tmp_path / "exported"
    assert export_main(["--vq", str(DEMO_FOLDER), "--lm", str(out / "checkpoint.pt"),
                        "--out", str(folder)]) == 0
    names = set()
    for file in folder.glob("*.safetensors"):
        with safe_open(file, "pt") as f:
            names |= set(f.keys())
    assert names and not [n for n in names if "probe" in n or "query" in n], sorted(names)[:5]
