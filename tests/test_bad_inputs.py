"""The bad-input matrix: every ordinary mistake and fault ends in a named JanusError (or `error: ...` and exit 2
from the CLI), before any work starts, and leaves no file changed, half-written or behind.

Each case asserts the exception type and the key words of the message. Node inputs are in
tests/nodes/test_node_bad_inputs.py.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from janus_core import cli, errors, load_generator, prepare_cond, sample_tokens
from janus_core.errors import (CheckpointError, DeviceError, GenerationCancelled, ImageError, InsufficientMemoryError,
                               OutputError, PayloadError, SettingError)
from janus_core.files import write_new_file
from janus_core.images import read_image
from janus_core.vq import encode_images

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cond(lm):
    return prepare_cond(lm, "a red chair")


@pytest.fixture
def no_work(lm, monkeypatch):
    """Fail the test if the decoder runs: a refused input must be refused before any work."""
    def forbidden(*a, **k):
        raise AssertionError("work started before the input was refused")
    monkeypatch.setattr(lm.model, "forward_hidden", forbidden)


def snapshot(folder: Path) -> dict:
    """name -> sha256 of every file under `folder` (hidden temporaries included)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- sampler settings -------------------------------------------------------------------------------------

SETTINGS = [
    ({"cfg": float("nan")}, "cfg must be a finite number"),
    ({"cfg": float("inf")}, "cfg must be a finite number"),
    ({"cfg": -1.0}, r"cfg must be in \[0, 100\]"),
    ({"cfg": 1e4}, r"cfg must be in \[0, 100\]"),
    ({"cfg": "5"}, "cfg must be a number"),
    ({"temperature": float("nan")}, "temperature must be a finite number"),
    ({"temperature": float("-inf")}, "temperature must be a finite number"),
    ({"temperature": -0.1}, r"temperature must be in \[0, 100\]"),
    ({"temperature": 1e-9}, "overflow the softmax"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ({"top_p": -0.5}, r"top_p must be in \(0, 1\]"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    ({"top_p": float("nan")}, "top_p must be a finite number"),
    ({"top_k": -1}, "top_k must be in 0"),
    ({"top_k": 2.5}, "top_k must be a whole number"),
    ({"seed": -1}, "seed must be in 0..18446744073709551615"),
    ({"seed": 2**64}, "seed must be in 0"),
    ({"seed": 1.5}, "seed must be a whole number"),
    ({"batch_size": 0}, "batch_size must be in 1..1024"),
    ({"batch_size": 100000}, "batch_size must be in 1..1024"),
    ({"batch_size": True}, "batch_size must be a whole number"),
    ({"progress_every": 0}, "progress_every must be in 1..576"),
]


@pytest.mark.parametrize("kwargs,message", SETTINGS, ids=[f"{next(iter(k))}={next(iter(k.values()))!r}" for k, _ in SETTINGS])
def test_sampler_settings_refused(lm, cond, no_work, kwargs, message):
    with pytest.raises(SettingError, match=message) as info:
        sample_tokens(lm, cond, **kwargs)
    assert info.value.input == next(iter(kwargs))


def test_batch_that_cannot_fit_is_refused_with_the_estimate(lm, cond, no_work, monkeypatch):
    import janus_core.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 50 << 20)
    with pytest.raises(InsufficientMemoryError, match=r"needs about .* GiB on cpu .* only 0.05 GiB is available; "
                                                      r"batch_size 64 does not fit \(about \d+ would\)"):
        sample_tokens(lm, cond, batch_size=64)


# ---- payloads ---------------------------------------------------------------------------------------------

def _init(batch=1, dtype=torch.long, size=24):
    return torch.zeros((batch, size, size), dtype=dtype)


PAYLOADS = [
    ({"init_tokens": _init()}, "init_tokens and keep_mask go together", "keep_mask"),
    ({"keep_mask": _init(dtype=torch.bool)}, "init_tokens and keep_mask go together", "init_tokens"),
    ({"init_tokens": _init(size=10), "keep_mask": _init(dtype=torch.bool)}, r"shape \(1, 10, 10\); expected", "init_tokens"),
    ({"init_tokens": _init(dtype=torch.float32), "keep_mask": _init(dtype=torch.bool)}, "integer codebook indices",
     "init_tokens"),
    ({"init_tokens": _init() + 20000, "keep_mask": _init(dtype=torch.bool)}, "outside the codebook 0..16383", "init_tokens"),
    ({"init_tokens": _init(batch=3), "keep_mask": _init(dtype=torch.bool), "batch_size": 2}, "batch 3; expected 1 or",
     "init_tokens"),
    ({"init_tokens": _init(), "keep_mask": _init(dtype=torch.float32) + 0.5}, "must be boolean", "keep_mask"),
    ({"init_tokens": _init(), "keep_mask": torch.zeros(1, 577, dtype=torch.bool)}, r"shape \(1, 577\)", "keep_mask"),
    ({"init_tokens": [[1, 2]], "keep_mask": _init(dtype=torch.bool)}, "must be a tensor", "init_tokens"),
]


@pytest.mark.parametrize("kwargs,message,name", PAYLOADS)
def test_sampler_payloads_refused(lm, cond, no_work, kwargs, message, name):
    with pytest.raises(PayloadError, match=message) as info:
        sample_tokens(lm, cond, **kwargs)
    assert info.value.input == name


def test_cond_of_the_wrong_type_or_tokenizer(lm, cond, make_checkpoint, no_work):
    with pytest.raises(PayloadError, match="cond must be a JanusCond"):
        sample_tokens(lm, "a red chair")
    with pytest.raises(PayloadError, match="lm must be a JanusLM"):
        sample_tokens(object(), cond)
    other = load_generator(make_checkpoint(pro_roles=False), dtype="float32", device="cpu")
    with pytest.raises(PayloadError, match="made by the tokenizer of"):
        sample_tokens(lm, prepare_cond(other, "a red chair"))


# ---- prompts ----------------------------------------------------------------------------------------------

PROMPTS = [
    ({"prompt": None}, PayloadError, "prompt must be text, got NoneType", "prompt"),
    ({"prompt": 5}, PayloadError, "prompt must be text, got int", "prompt"),
    ({"prompt": "a \ud800 cat"}, PayloadError, "prompt is not valid Unicode .* unpaired surrogate", "prompt"),
    ({"prompt": "ok", "negative_prompt": "bad \udfff"}, PayloadError, "negative_prompt is not valid Unicode",
     "negative_prompt"),
    ({"prompt": "cat " * 30000}, PayloadError, "prompt too long: .* at most 448 tokens", "prompt"),
    ({"prompt": "ok", "negative_prompt": "blurry " * 30000}, PayloadError, "negative_prompt too long", "negative_prompt"),
    ({"prompt": "ok", "prompt_format": "chatml"}, SettingError, "prompt_format must be one of", "prompt_format"),
]


@pytest.mark.parametrize("kwargs,exc,message,name", PROMPTS)
def test_prompts_refused(lm, kwargs, exc, message, name):
    with pytest.raises(exc, match=message) as info:
        prepare_cond(lm, **kwargs)
    assert info.value.input == name


# ---- image arrays -----------------------------------------------------------------------------------------

IMAGES = [
    (torch.zeros(1, 64, 64, 3, dtype=torch.uint8), "must hold floats in 0..1, got uint8. If they are 0..255 bytes, divide"),
    (np.full((1, 64, 64, 3), 200, dtype=np.uint8), "got uint8"),
    (torch.full((1, 64, 64, 3), 200.0), "found values 200..200. They look like 0..255 values"),
    (torch.full((1, 64, 64, 3), -0.5), "must be in 0..1, found values -0.5"),
    (torch.full((1, 64, 64, 3), float("nan")), "NaN or infinite"),
    (torch.full((1, 64, 64, 3), float("inf")), "NaN or infinite"),
    (torch.zeros(1, 64, 64, 4), "RGBA: composite or drop the alpha"),
    (torch.zeros(64, 64), r"has shape \(64, 64\); expected \[B, H, W, 3\]"),
    (torch.zeros(0, 64, 64, 3), "is empty"),
    (torch.zeros(1, 1, 1, 3).expand(1, 9000, 9000, 3), "81 megapixels, over the 64 MP"),
    ([[0.5]], "must be an image tensor"),
]


@pytest.mark.parametrize("images,message", IMAGES, ids=range(len(IMAGES)))
def test_encode_images_refuses_bad_arrays(vq, images, message):
    with pytest.raises(ImageError, match=message) as info:
        encode_images(vq, images)
    assert info.value.input == "images"


def test_extreme_aspect_ratio_encodes_without_a_giant_resize(vq):
    wide = torch.rand(1, 12, 6000, 3, generator=torch.Generator().manual_seed(0))
    assert encode_images(vq, wide).tokens.shape == (1, 24, 24)


# ---- image files ------------------------------------------------------------------------------------------

def _png(path, im):
    im.save(path)
    return path


def test_image_files_refused(tmp_path):
    cases = {
        "missing.png": "no such file",
        "notes.png": "not an image file",
        "truncated.png": "truncated or corrupt",
        "bomb.png": "decompression bomb",
    }
    (tmp_path / "notes.png").write_text("hello, not an image")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(buf, "PNG")
    (tmp_path / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    Image.new("1", (9000, 9000)).save(tmp_path / "bomb.png")  # tiny file, 81 megapixels declared
    for name, message in cases.items():
        with pytest.raises(ImageError, match=message):
            read_image(tmp_path / name)


def test_image_modes_are_read_deliberately(tmp_path):
    g16 = np.full((8, 8), 32768, dtype=np.uint16)
    a = read_image(_png(tmp_path / "g16.png", Image.fromarray(g16)))
    assert a.shape == (8, 8, 3) and abs(float(a.mean()) - 32768 / 65535) < 1e-6  # scaled, not clipped to white
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red -> white
    assert torch.allclose(read_image(_png(tmp_path / "rgba.png", rgba)), torch.ones(4, 4, 3))
    half = Image.new("LA", (4, 4), (0, 128))
    assert torch.allclose(read_image(_png(tmp_path / "la.png", half)), torch.full((4, 4, 3), 127 / 255), atol=1e-2)
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    assert torch.allclose(read_image(_png(tmp_path / "p.png", pal))[0, 0], torch.tensor([0.0, 0.0, 1.0]))
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    red = read_image(tmp_path / "cmyk.jpg")[0, 0]
    assert red[0] > 0.9 and red[1] < 0.1 and red[2] < 0.1


# ---- checkpoints ------------------------------------------------------------------------------------------

@pytest.fixture
def ckpt_copy(tiny_ckpt, tmp_path):
    return Path(shutil.copytree(tiny_ckpt, tmp_path / "ckpt"))


def _edit_config(folder, fn):
    cfg = json.loads((folder / "config.json").read_text())
    out = fn(cfg)
    (folder / "config.json").write_text(json.dumps(cfg if out is None else out))


def _rewrite_header(path: Path, fn):
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = fn(json.loads(data[8 : 8 + n]))
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n :])


def _first_key(header):
    return next(k for k in header if k != "__metadata__")


CONFIGS = [
    (lambda c: [c], "must hold a JSON object .* got a JSON list"),
    (lambda c: c["text_config"].update(hidden_size="64"), "hidden_size must be a positive whole number, got '64'"),
    (lambda c: c["text_config"].update(num_hidden_layers=-2), "num_hidden_layers must be a positive whole number"),
    (lambda c: c["text_config"].update(num_attention_heads=True), "num_attention_heads must be a positive whole"),
    (lambda c: c["text_config"].update(rms_norm_eps="tiny"), "rms_norm_eps must be a positive finite number"),
    (lambda c: c.update(text_config=[1, 2]), "language model settings must be a JSON object"),
    (lambda c: c["text_config"].update(vocab_size=300), "tokenizer.json produces ids up to .* only 300 rows"),
]


@pytest.mark.parametrize("edit,message", CONFIGS, ids=range(len(CONFIGS)))
def test_malformed_configs(ckpt_copy, edit, message):
    _edit_config(ckpt_copy, edit)
    with pytest.raises(CheckpointError, match=message):
        load_generator(ckpt_copy, device="cpu")


HEADERS = [
    (lambda h: [1, 2], "malformed safetensors header .* JSON list"),
    (lambda h: {**h, _first_key(h): {k: v for k, v in h[_first_key(h)].items() if k != "data_offsets"}},
     "malformed header entry"),
    (lambda h: {**h, _first_key(h): {**h[_first_key(h)], "shape": [*h[_first_key(h)]["shape"][:-1],
                                                                   h[_first_key(h)]["shape"][-1] * 2]}},
     "byte range holds .* bytes but shape"),
    (lambda h: {**h, _first_key(h): {**h[_first_key(h)], "data_offsets": [0, 10**12]}}, "truncated file"),
    (lambda h: {**h, _first_key(h): {**h[_first_key(h)], "data_offsets": "0-10"}}, "malformed data_offsets"),
    (lambda h: {**h, _first_key(h): {**h[_first_key(h)], "dtype": "F8_E9"}}, "unsupported dtype"),
]


@pytest.mark.parametrize("edit,message", HEADERS, ids=range(len(HEADERS)))
def test_malformed_safetensors_headers(ckpt_copy, edit, message):
    _rewrite_header(ckpt_copy / "model.safetensors", edit)
    with pytest.raises(CheckpointError, match=message):
        load_generator(ckpt_copy, device="cpu")


@pytest.mark.parametrize("index,message", [
    ({"weight_map": ["model-00001-of-00003.safetensors"]}, "needs a non-empty 'weight_map' object"),
    ([1], "needs a non-empty 'weight_map' object"),
    ({"weight_map": {"a": "../../etc/evil.safetensors"}}, "is not a shard file name in this folder"),
    ({"weight_map": {"a": 5}}, "is not a shard file name"),
    ("{not json", "not a valid shard index"),
])
def test_malformed_shard_index(make_checkpoint, tmp_path, index, message):
    d = Path(shutil.copytree(make_checkpoint("transformers", "safetensors", 3), tmp_path / "sharded"))
    text = index if isinstance(index, str) else json.dumps(index)
    (d / "model.safetensors.index.json").write_text(text)
    with pytest.raises(CheckpointError, match=message):
        load_generator(d, device="cpu")


def test_vq_tensors_that_disagree(ckpt_copy):
    path = ckpt_copy / "model.safetensors"
    sd = load_file(str(path))
    key = "model.vqmodel.decoder.conv_in.weight"
    out_c, in_c = sd[key].shape[:2]
    sd[key] = torch.zeros(out_c, in_c * 2, 3, 3)  # reads twice the channels post_quant_conv makes
    save_file(sd, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="VQ tensors do not fit together: decoder.conv_in takes 64 channels but "
                                              "receives 32"):
        load_generator(ckpt_copy, device="cpu")


TORCH_HINTS = ("weights_only", "will likely succeed", "Could this error message be improved", "add_safe_globals")


def test_corrupt_and_hostile_pickles(make_checkpoint, tmp_path):
    """The project's words (what is wrong, what to do); torch's text at most as a short detail, never its advice."""
    import pickle
    import zipfile

    d = Path(shutil.copytree(make_checkpoint("original", "bin", 1), tmp_path / "bin"))
    weights = d / "pytorch_model.bin"
    good = weights.read_bytes()

    def refused(match) -> str:
        with pytest.raises(CheckpointError, match=match) as info:
            load_generator(d, device="cpu")
        msg = str(info.value)
        assert not [h for h in TORCH_HINTS if h in msg], msg
        return msg

    weights.write_bytes(os.urandom(4096))
    refused("not a PyTorch checkpoint .* damaged or truncated; delete it and download it again")
    weights.write_bytes(good[: len(good) // 2])
    refused(r"damaged or truncated \(torch: PytorchStreamReader failed reading zip archive: failed finding central "
            r"directory\); delete it and download it again\.$")
    with zipfile.ZipFile(weights, "w") as z:  # a zip whose torch records are missing
        z.writestr("archive/data.pkl", pickle.dumps({}))
    refused(r"damaged or truncated \(torch: Expected hasRecord\(\"version\"\) to be true, but got false\); delete it")
    torch.save({"w": torch.zeros(1), "x": errors.JanusError("not a tensor")}, weights)
    msg = refused("refused: this pickle holds code or objects other than tensors")
    assert "it names janus_core.errors.JanusError" in msg and "nothing in it ran" in msg
    assert "safe fix is a safetensors copy of the weights (model.safetensors) from the model's own repo" in msg


# ---- devices ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device,message", [("cuda", "torch sees no CUDA GPU"), ("cuda:7", "CUDA"),
                                            ("mps", "MPS is not available"), ("foo", "not a device name"),
                                            ("xpu", "not supported")])
def test_unavailable_devices_list_what_is(tiny_ckpt, device, message, monkeypatch):
    if torch.cuda.is_available() and device.startswith("cuda"):
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError, match=f"{message}.*available here: auto, cpu"):
        load_generator(tiny_ckpt, device=device)


# ---- the CLI: outputs, exit codes, no tracebacks ----------------------------------------------------------

def run_main(capsys, *args):
    code = cli.main([str(a) for a in args])
    err = capsys.readouterr().err
    return code, err


GEN = ("generate", "--prompt", "a red chair", "--device", "cpu", "--threads", "1")


@pytest.mark.parametrize("extra,message", [
    (("--cfg", "nan"), "error: --cfg must be a finite number"),
    (("--temperature", "nan"), "error: --temperature must be a finite number"),
    (("--top-p", "0"), "error: --top-p must be in"),
    (("--top-k", "-1"), "error: --top-k must be in 0"),
    (("--seed", "-3"), "error: --seed must be in"),
    (("--batch-size", "0"), "error: --batch-size must be in 1..1024, got 0"),
    (("--batch-size", "100000"), "error: --batch-size must be in 1..1024"),
    (("--threads", "-1"), "error: --threads must be in 1.."),
    (("--device", "cuda:7"), "available here"),
    (("--prompt", "x\udcff"), "error: --prompt is not valid Unicode"),
    (("--negative-prompt", "x\udcff"), "error: --negative-prompt is not valid Unicode"),
])
def test_cli_user_errors_exit_2_before_loading(tiny_ckpt, tmp_path, capsys, monkeypatch, extra, message):
    if "cuda:7" in extra and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    import janus_core.loader as loader

    monkeypatch.setattr(loader, "load", lambda *a, **k: pytest.fail("the model was loaded before the error"))
    code, err = run_main(capsys, *GEN, "--model", tiny_ckpt, "--output", tmp_path / "out", *extra)
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: ") and message in err
    assert "Traceback" not in err


def test_cli_messages_name_the_option_not_the_library_argument():
    parser = cli.build_parser()
    generate = parser._subparsers._group_actions[0].choices["generate"]
    describe = parser._subparsers._group_actions[0].choices["describe"]
    exc = PayloadError("max_new_tokens 600 + the prompt's 739 tokens exceed the context; use max_new_tokens <= 285 "
                       "or a shorter question.", input="max_new_tokens")
    assert cli.cli_message(exc, describe) == ("--max-new-tokens 600 + the prompt's 739 tokens exceed the context; use "
                                              "--max-new-tokens <= 285 or a shorter question.")
    # a plain word is the option only where it leads; in prose it stays a word
    exc = PayloadError("prompt too long: the prompt holds 5000 tokens", input="prompt")
    assert cli.cli_message(exc, generate) == "--prompt too long: the prompt holds 5000 tokens"
    # names that are no option of the command, or no name at all: unchanged
    assert cli.cli_message(PayloadError("init_tokens bad", input="init_tokens"), generate) == "init_tokens bad"
    assert cli.cli_message(SettingError("cfg bad", input="cfg"), describe) == "cfg bad"
    assert cli.cli_message(OutputError("--output x is a file", input="output"), generate) == "--output x is a file"


def test_cli_output_that_is_a_file(tiny_ckpt, tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep me")
    code, err = run_main(capsys, *GEN, "--model", tiny_ckpt, "--output", target)
    assert code == 2 and "is an existing file, not a folder" in err and target.read_text() == "keep me"


def test_cli_generate_twice_keeps_the_first_run(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_main(capsys, *GEN, "--model", tiny_ckpt, "--output", out, "--save-tokens", "--seed", 1)[0] == 0
    first = snapshot(out)
    assert sorted(first) == ["00000.png", "tokens.safetensors"]
    assert run_main(capsys, *GEN, "--model", tiny_ckpt, "--output", out, "--save-tokens", "--seed", 2)[0] == 0
    second = snapshot(out)
    assert sorted(second) == ["00000.png", "00001.png", "tokens.safetensors", "tokens_00001.safetensors"]
    assert all(second[k] == v for k, v in first.items())  # nothing of the first run was replaced
    dec = run_main(capsys, "decode", "--model", tiny_ckpt, "--device", "cpu", "--tokens", out / "tokens.safetensors",
                   "--output", out)
    assert dec[0] == 0 and "00002.png" in snapshot(out) and all(snapshot(out)[k] == v for k, v in second.items())


def test_cli_encode_refuses_an_existing_output_unless_overwrite(tiny_ckpt, tmp_path, capsys):
    img = tmp_path / "in.png"
    Image.new("RGB", (50, 40), (10, 200, 30)).save(img)
    out = tmp_path / "tokens.safetensors"
    out.write_bytes(b"precious")
    code, err = run_main(capsys, "encode", "--model", tiny_ckpt, "--device", "cpu", "--image", img, "--output", out)
    assert code == 2 and "already exists; nothing was overwritten" in err and out.read_bytes() == b"precious"
    code, _ = run_main(capsys, "encode", "--model", tiny_ckpt, "--device", "cpu", "--image", img, "--output", out,
                       "--overwrite")
    assert code == 0 and out.read_bytes() != b"precious" and sorted(p.name for p in tmp_path.iterdir()) == [
        "in.png", "tokens.safetensors"]


@pytest.mark.parametrize("name,content,message", [("missing.png", None, "no such file"),
                                                  ("junk.png", b"junk", "not an image file")])
def test_cli_encode_bad_image_files(tiny_ckpt, tmp_path, capsys, name, content, message):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    code, err = run_main(capsys, "encode", "--model", tiny_ckpt, "--device", "cpu", "--image", tmp_path / name,
                         "--output", tmp_path / "t.safetensors")
    assert code == 2 and message in err and "Traceback" not in err and not (tmp_path / "t.safetensors").exists()


def test_cli_convert_refuses_non_empty_output_and_leaves_it(make_checkpoint, tmp_path, capsys):
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "mine.txt").write_text("x")
    code, err = run_main(capsys, "convert", "--model", make_checkpoint("original", "bin", 1), "--output", dst)
    assert code == 2 and "is not empty" in err and snapshot(dst) == {"mine.txt": hashlib.sha256(b"x").hexdigest()}


def test_cli_checkpoint_errors_are_messages(tmp_path, capsys):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("[]")
    code, err = run_main(capsys, *GEN, "--model", tmp_path / "ckpt", "--output", tmp_path / "o")
    assert code == 2 and "must hold a JSON object" in err and "Traceback" not in err


# ---- a refused run leaves nothing behind -------------------------------------------------------------------

def _tokens_file(path: Path, tokens: torch.Tensor) -> Path:
    save_file({"tokens": tokens}, str(path))
    return path


def _typo(tmp_path, tiny_ckpt, make_checkpoint):
    return ("--model", tmp_path / "no-such-model")


def _bad_config(tmp_path, tiny_ckpt, make_checkpoint):
    d = Path(shutil.copytree(tiny_ckpt, tmp_path / "ckpt"))
    (d / "config.json").write_text("[]")
    return ("--model", d)


def _truncated_weights(tmp_path, tiny_ckpt, make_checkpoint):
    d = Path(shutil.copytree(tiny_ckpt, tmp_path / "ckpt"))
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    return ("--model", d)


def _no_tokenizer(tmp_path, tiny_ckpt, make_checkpoint):
    d = Path(shutil.copytree(tiny_ckpt, tmp_path / "ckpt"))
    (d / "tokenizer.json").unlink()
    return ("--model", d)


def _hostile_pickle(tmp_path, tiny_ckpt, make_checkpoint):
    d = Path(shutil.copytree(make_checkpoint("original", "bin", 1), tmp_path / "bin"))
    torch.save({"w": torch.zeros(1), "x": errors.JanusError("not a tensor")}, d / "pytorch_model.bin")
    return ("--model", d)


def _unknown_device(tmp_path, tiny_ckpt, make_checkpoint):
    return ("--model", tiny_ckpt, "--device", "foo")


def _offline_repo(tmp_path, tiny_ckpt, make_checkpoint):  # HF_HUB_OFFLINE=1 (tests/conftest.py)
    return ("--model", "deepseek-ai/Janus-Pro-1B", "--models-dir", tmp_path / "models")


def _long_prompt(tmp_path, tiny_ckpt, make_checkpoint):
    return ("--model", tiny_ckpt, "--prompt", "a red chair " * 10_000)


REFUSED_GENERATE = [(_typo, "neither a checkpoint folder"), (_bad_config, "must hold a JSON object"),
                    (_truncated_weights, "truncated"), (_no_tokenizer, "tokenizer.json"),
                    (_hostile_pickle, "holds code or objects other than tensors"), (_unknown_device, "not a device"),
                    (_offline_repo, "is not on this machine"), (_long_prompt, "too long")]


@pytest.mark.parametrize("make,message", REFUSED_GENERATE, ids=[f.__name__[1:] for f, _ in REFUSED_GENERATE])
def test_a_refused_generate_leaves_no_output_folder(tiny_ckpt, make_checkpoint, tmp_path, capsys, make, message):
    out = tmp_path / "new" / "out"  # neither the folder nor its parent exists
    code, err = run_main(capsys, *GEN, *make(tmp_path, tiny_ckpt, make_checkpoint), "--output", out)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "new").exists()
    assert not (tmp_path / "models").exists()  # nor the --models-dir an offline repo id would download into


@pytest.mark.parametrize("tokens,message", [(torch.full((1, 24, 24), 20000), "outside the codebook"),
                                            (torch.zeros((0, 24, 24), dtype=torch.long), "empty (batch of 0)")],
                         ids=["outside-codebook", "empty-batch"])
def test_a_refused_decode_leaves_no_output_folder(tiny_ckpt, tmp_path, capsys, tokens, message):
    file = _tokens_file(tmp_path / "t.safetensors", tokens)
    out = tmp_path / "new" / "out"
    code, err = run_main(capsys, "decode", "--model", tiny_ckpt, "--device", "cpu", "--tokens", file, "--output", out)
    assert code == 2 and message in err and not (tmp_path / "new").exists()


def test_a_refused_encode_leaves_no_output_folder(tmp_path, capsys):
    img = tmp_path / "in.png"
    Image.new("RGB", (20, 20)).save(img)
    out = tmp_path / "new" / "t.safetensors"
    code, err = run_main(capsys, "encode", "--model", tmp_path / "no-such-model", "--image", img, "--output", out)
    assert code == 2 and "neither a checkpoint folder" in err and not (tmp_path / "new").exists()


def test_a_refused_run_never_removes_an_existing_folder(tmp_path, capsys):
    empty, kept = tmp_path / "empty", tmp_path / "kept"
    empty.mkdir()
    kept.mkdir()
    (kept / "mine.txt").write_text("x")
    for out in (empty, kept, empty / "sub"):
        code, _ = run_main(capsys, *GEN, "--model", tmp_path / "no-such-model", "--output", out)
        assert code == 2
    assert empty.is_dir() and list(empty.iterdir()) == [] and snapshot(kept) == {"mine.txt": hashlib.sha256(b"x").hexdigest()}


def test_the_folder_is_made_at_the_first_write_and_removed_when_that_write_fails(tiny_ckpt, tmp_path, capsys,
                                                                                 monkeypatch):
    file = _tokens_file(tmp_path / "t.safetensors", torch.zeros((1, 24, 24), dtype=torch.long))
    out = tmp_path / "a" / "b"
    real_save = Image.Image.save

    def full(self, fp, *a, **k):
        assert Path(fp).parent == out  # the folder exists once the first PNG is written ...
        raise OSError(errno.ENOSPC, "No space left on device")  # (a patched full disk: the real one is below)
    monkeypatch.setattr(Image.Image, "save", full)
    code, err = run_main(capsys, "decode", "--model", tiny_ckpt, "--device", "cpu", "--tokens", file, "--output", out)
    assert code == 2 and "the disk is full" in err
    assert not (tmp_path / "a").exists()  # ... and a failed write takes it away again, parents included
    monkeypatch.setattr(Image.Image, "save", real_save)
    code, _ = run_main(capsys, "decode", "--model", tiny_ckpt, "--device", "cpu", "--tokens", file, "--output", out)
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["00000.png"]


def test_a_failed_convert_removes_what_it_wrote(make_checkpoint, tmp_path, capsys, monkeypatch):
    import safetensors.torch

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    dst, existing = tmp_path / "new" / "converted", tmp_path / "existing"
    existing.mkdir()
    for out in (dst, existing):
        code, err = run_main(capsys, "convert", "--model", make_checkpoint("original", "bin", 2), "--output", out)
        assert code == 2 and "the disk is full" in err
    assert not (tmp_path / "new").exists()  # the copied config / tokenizer files went with the folder
    assert existing.is_dir() and list(existing.iterdir()) == []  # an existing folder stays, emptied of our files


def test_save_tokens_leaves_no_folder_when_the_write_fails(tiny_fs, tmp_path, monkeypatch):
    from janus_core.payloads import JanusTokens
    from janus_core.tokens_io import save_tokens

    tokens = JanusTokens(tokens=torch.randint(0, 16384, (16, 24, 24)))  # ~74 KB: more than the 64 KiB tmpfs
    if tiny_fs is not None:  # a real ENOSPC
        root = tiny_fs
    else:  # no mount allowed here: a write that fails the same way
        import janus_core.tokens_io as tokens_io

        root = tmp_path
        monkeypatch.setattr(tokens_io, "write_bytes",
                            lambda *a, **k: (_ for _ in ()).throw(OutputError("cannot write: the disk is full")))
    with pytest.raises(OutputError, match="the disk is full"):
        save_tokens(tokens, root / "a" / "b" / "t.safetensors")
    assert not (root / "a").exists()


# ---- faults: full and read-only file systems, crashes mid-write --------------------------------------------

def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0


@pytest.fixture
def tiny_fs(tmp_path):
    """A 64 KiB tmpfs (a real full disk), or None where mounting is not allowed."""
    mnt = tmp_path / "small"
    ok = _mount_tmpfs(mnt, "size=64k")
    yield mnt if ok else None
    if ok:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_full_disk_leaves_nothing_behind(tiny_fs, tmp_path, monkeypatch):
    if tiny_fs is not None:  # a real ENOSPC from a 64 KiB tmpfs
        folder = tiny_fs
        with pytest.raises(OutputError, match="the disk is full"):
            write_new_file(folder / "00000.png", lambda tmp: tmp.write_bytes(os.urandom(1 << 20)))
    else:  # no mount allowed here: the same path through a write that fails with ENOSPC half-way
        folder = tmp_path / "patched"
        folder.mkdir()

        def half_then_full(tmp):
            assert tmp.parent == folder and not (folder / "00000.png").exists()  # never under the final name
            tmp.write_bytes(b"x" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        with pytest.raises(OutputError, match="the disk is full"):
            write_new_file(folder / "00000.png", half_then_full)
    assert list(folder.iterdir()) == []  # no truncated file, no temporary


def test_full_disk_is_found_before_the_run(tiny_fs, tiny_ckpt, capsys, monkeypatch):
    if tiny_fs is None:
        pytest.skip("mounting a tmpfs is not allowed here (covered by the patched write above)")
    import janus_core.loader as loader

    monkeypatch.setattr(loader, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    code, err = run_main(capsys, *GEN, "--model", tiny_ckpt, "--output", tiny_fs / "out", "--batch-size", 4)
    assert code == 2 and "MB free, about" in err and not (tiny_fs / "out").exists()


def test_read_only_output_is_found_before_the_run(tmp_path, tiny_ckpt, capsys, monkeypatch):
    ro = tmp_path / "ro"
    if not _mount_tmpfs(ro, "size=1m,ro"):
        pytest.skip("mounting a read-only tmpfs is not allowed here (root ignores chmod, so no other real fault)")
    try:
        import janus_core.loader as loader

        monkeypatch.setattr(loader, "load", lambda *a, **k: pytest.fail("the model was loaded"))
        code, err = run_main(capsys, *GEN, "--model", tiny_ckpt, "--output", ro / "out")
        assert code == 2 and "read-only file system" in err
        code, err = run_main(capsys, *GEN, "--model", tiny_ckpt, "--output", ro)
        assert code == 2 and "read-only file system" in err
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


def test_crash_while_writing_a_png_leaves_no_partial_file(tmp_path, monkeypatch):
    from janus_core.cli import _save_pngs

    def crash(self, fp, *a, **k):
        # written under a temporary name in the same folder: a hard kill here leaves no 00000.png at all
        assert Path(fp).parent == tmp_path and Path(fp).name != "00000.png" and not (tmp_path / "00000.png").exists()
        Path(fp).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt
    monkeypatch.setattr(Image.Image, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        _save_pngs(torch.zeros(1, 8, 8, 3), tmp_path, 0, [{}])
    assert list(tmp_path.iterdir()) == []


# ---- signals, cancel, leaks -------------------------------------------------------------------------------

def test_ctrl_c_during_sampling_exits_130_and_writes_nothing(tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    # the child is what a terminal starts, whatever started pytest: a test run launched in the background by a
    # non-interactive shell ignores SIGINT, the child would inherit that, and Python then installs no handler
    start = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "sys.argv[0] = 'janus_core'; runpy.run_module('janus_core', run_name='__main__', alter_sys=True)")
    proc = subprocess.Popen([sys.executable, "-c", start, *GEN, "--model", str(tiny_ckpt), "--batch-size", "8",
                             "--output", str(out), "--save-tokens"], cwd=ROOT, env=env, stderr=subprocess.PIPE,
                            text=True)
    seen = ""
    deadline = time.monotonic() + 120
    while "tokens:" not in seen and time.monotonic() < deadline:
        seen += proc.stderr.read(1)
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, seen + rest
    assert "interrupted: nothing was written" in rest and "Traceback" not in rest
    assert rest.lstrip("\n").count("\n") <= 1 or rest.strip().splitlines()[-1].startswith("interrupted")
    assert not out.exists()  # the folder is made with the first file, and none was written


def test_cancel_then_rerun_gives_a_fresh_runs_tokens(lm, cond):
    fresh = sample_tokens(lm, cond, seed=11, batch_size=2)
    calls = {"n": 0}

    def cancel_after_ten():
        calls["n"] += 1
        return calls["n"] >= 10
    with pytest.raises(GenerationCancelled, match="after 10 of 576"):
        sample_tokens(lm, cond, seed=11, batch_size=2, should_cancel=cancel_after_ten)
    assert torch.equal(sample_tokens(lm, cond, seed=11, batch_size=2).tokens, fresh.tokens)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_fifty_runs_in_one_process_do_not_grow_memory(lm, cond):
    """50 runs: each a refused setting, then a run cancelled part-way (the paths where caches leak)."""
    def run_once(i):
        with pytest.raises(SettingError):
            sample_tokens(lm, cond, cfg=float("nan"))
        steps = {"n": 0}

        def cancel():
            steps["n"] += 1
            return steps["n"] > 16
        with pytest.raises(GenerationCancelled):
            sample_tokens(lm, cond, seed=i, batch_size=2, should_cancel=cancel)
    for i in range(5):  # warm-up: allocator pools and lazy imports settle
        run_once(i)
    before = _rss()
    for i in range(50):
        run_once(i)
    assert _rss() - before < 20 << 20
