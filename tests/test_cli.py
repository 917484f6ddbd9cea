"""`python -m janus_core` end to end on the tiny checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from janus_core import load, prepare_cond, sample_tokens
from janus_core.tokens_io import load_tokens

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, ok=True):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "janus_core", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_generate_decode_encode(tiny_ckpt, tmp_path):
    out = tmp_path / "gen"
    run_cli("generate", "--model", tiny_ckpt, "--prompt", "a red chair", "--seed", 3, "--batch-size", 2,
            "--cfg", 4.5, "--top-k", 100, "--device", "cpu", "--threads", 1, "--output", out, "--save-tokens",
            "--dtype", "float32")
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["00000.png", "00001.png"]
    with Image.open(pngs[1]) as im:
        assert im.size == (384, 384)
        assert im.text["prompt"] == "a red chair" and im.text["seed"] == "4"
        assert json.loads(im.text["settings"])["cfg"] == 4.5
        generated = np.asarray(im.convert("RGB"))
    tokens = load_tokens(out / "tokens.safetensors")
    assert tokens.tokens.shape == (2, 24, 24) and tokens.tokens.dtype == torch.int64 and tokens.seeds == [3, 4]
    lm, _ = load(tiny_ckpt, dtype="float32", device="cpu")
    same = sample_tokens(lm, prepare_cond(lm, "a red chair"), seed=3, batch_size=2, cfg=4.5, top_k=100)
    assert torch.equal(tokens.tokens, same.tokens)

    dec = tmp_path / "dec"
    run_cli("decode", "--model", tiny_ckpt, "--tokens", out / "tokens.safetensors", "--device", "cpu", "--output", dec)
    with Image.open(dec / "00001.png") as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), generated)

    enc = tmp_path / "enc.safetensors"
    run_cli("encode", "--model", tiny_ckpt, "--image", pngs[0], pngs[1], "--device", "cpu", "--output", enc)
    assert load_tokens(enc).tokens.shape == (2, 24, 24)


def test_generate_quantized(tiny_ckpt, tmp_path):
    out = tmp_path / "q"
    proc = run_cli("generate", "--model", tiny_ckpt, "--prompt", "a red chair", "--seed", 5, "--quantize", "int8",
                   "--device", "cpu", "--threads", 1, "--output", out, "--save-tokens")
    from janus_core.loader import auto_dtype_reason

    dtype, why = auto_dtype_reason(torch.device("cpu"))
    assert f"dtype auto -> {str(dtype).replace('torch.', '')} ({why})" in proc.stderr  # what auto chose, and why
    tokens = load_tokens(out / "tokens.safetensors")
    assert tokens.settings["quantize"] == "int8"
    lm, _ = load(tiny_ckpt, dtype=dtype, device="cpu", quantize="int8")
    assert torch.equal(tokens.tokens, sample_tokens(lm, prepare_cond(lm, "a red chair"), seed=5).tokens)
    bad = run_cli("generate", "--model", tiny_ckpt, "--prompt", "x", "--quantize", "int3", "--output", out, ok=False)
    assert bad.returncode == 2 and "invalid choice: 'int3'" in bad.stderr and "int8" in bad.stderr


def test_convert_bin_to_safetensors(make_checkpoint, tmp_path):
    src = make_checkpoint("original", "bin", 2)
    dst = tmp_path / "converted"
    run_cli("convert", "--model", src, "--output", dst)
    assert sorted(p.name for p in dst.glob("*.safetensors")) == ["model-00001-of-00002.safetensors",
                                                                 "model-00002-of-00002.safetensors"]
    assert (dst / "model.safetensors.index.json").is_file() and (dst / "tokenizer.json").is_file()
    assert not list(dst.glob("*.bin*"))
    a, _ = load(src, dtype="float32", device="cpu")
    b, _ = load(dst, dtype="float32", device="cpu")
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    again = run_cli("convert", "--model", src, "--output", dst, ok=False)
    assert again.returncode == 2 and "not empty" in again.stderr


@pytest.mark.parametrize("model,message", [("/nonexistent/folder", "neither a checkpoint folder"),
                                           ("deepseek-ai/Janus-Pro-1B", "deepseek-ai/Janus-Pro-1B is not on this "
                                                                        "machine and the Hugging Face hub cannot be "
                                                                        "reached")])
def test_bad_model_argument(tmp_path, model, message):
    proc = run_cli("generate", "--model", model, "--models-dir", tmp_path, "--prompt", "x", "--output", tmp_path / "o",
                   ok=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_describe_prints_what_the_library_answers(tiny_ckpt, loaded, understanding, tmp_path):
    from janus_core import describe

    rng = np.random.default_rng(0)
    a, b = tmp_path / "a.png", tmp_path / "b.jpg"
    Image.fromarray(rng.integers(0, 256, (40, 70, 4), dtype=np.uint8), "RGBA").save(a)
    Image.fromarray(rng.integers(0, 256, (90, 30, 3), dtype=np.uint8)).save(b)
    args = ("describe", "--model", tiny_ckpt, "--image", a, b, "--question", "what is this?", "--max-new-tokens", 6,
            "--temperature", 0.7, "--seed", 5, "--device", "cpu", "--threads", 1)
    printed = json.loads(run_cli(*args, "--json").stdout)
    pictures = [Image.open(a), Image.open(b)]
    expected = describe(loaded[0], pictures, "what is this?", max_new_tokens=6, temperature=0.7, seed=5,
                        understanding=understanding)
    assert [p["image"] for p in printed] == [str(a), str(b)]
    assert [p["answer"] for p in printed] == expected
    plain = run_cli(*args).stdout
    assert plain == f"== {a}\n{expected[0]}\n== {b}\n{expected[1]}\n"


def test_describe_user_errors_exit_2(tiny_ckpt, tmp_path):
    img = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(img)
    bad = run_cli("describe", "--model", tiny_ckpt, "--image", img, "--max-new-tokens", 0, "--device", "cpu", ok=False)
    assert bad.returncode == 2 and "error: --max-new-tokens must be in 1..1048576, got 0" in bad.stderr
    missing = run_cli("describe", "--model", tiny_ckpt, "--image", tmp_path / "nope.png", ok=False)
    assert missing.returncode == 2 and "error: --image" in missing.stderr and "nope.png" in missing.stderr


def test_describe_default_answer_length_is_capped_and_said(tiny_ckpt, tmp_path):
    """The default --max-new-tokens 512 does not fit after the tiny model's 717-position prompt + image: the answer
    is capped at what fits (307 of 1024 positions), one note on stderr says so, and the run succeeds."""
    img = tmp_path / "a.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(img)
    ok = run_cli("describe", "--model", tiny_ckpt, "--image", img, "--question", "cat?", "--device", "cpu",
                 "--threads", 1, "--json")
    assert "note: answers capped at 307 tokens: the question and image take 717 of the model's 1024 context " \
           "positions (--max-new-tokens was 512)." in ok.stderr
    assert len(json.loads(ok.stdout)) == 1 and "note:" not in ok.stdout
    full = run_cli("describe", "--model", tiny_ckpt, "--image", img, "--question", "word " * 120, "--device", "cpu",
                   ok=False)
    assert full.returncode == 2 and "error: --question and image take" in full.stderr and "no room" in full.stderr


def test_help_shows_every_default_and_ends_with_an_example():
    import argparse

    from janus_core import cli

    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {"generate", "decode", "encode", "describe", "convert"}
    for name, sp in commands.items():
        formatter = sp._get_formatter()
        for action in sp._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flag = action.option_strings[-1]
            text = formatter._expand_help(action)  # the option's line as --help prints it
            assert text and "\n" not in text, (name, flag)
            if action.required:
                assert text.endswith("(required)"), (name, flag, text)
            else:
                assert "default" in text, (name, flag, text)
                if action.default not in (None, False, ""):
                    assert f"(default: {action.default})" in text, (name, flag, text)
            if "auto" in (action.choices or []) or action.default == "auto":
                assert "auto =" in text, (name, flag, text)  # says what auto picks
        lines = sp.format_help().rstrip().splitlines()
        assert lines[-2] == "example:" and lines[-1].strip().startswith(f"python -m janus_core {name} --model "), name
    assert "--vq-dtype" not in commands["describe"].format_help()  # describe never runs the VQ
    shown = " ".join(run_cli("generate", "--help").stdout.split())  # end to end, as a user types it (unwrapped)
    for line in ("(default: 0)", "(default: 1)", "(default: 5.0)", "(default: 1.0)", "(default: auto)"):
        assert line in shown
    assert "example: python -m janus_core generate --model" in shown
    described = " ".join(run_cli("describe", "--help").stdout.split())
    assert "(default: Describe this image in detail.)" in described and "(default: 512)" in described


def test_generate_zipar_says_its_forwards_and_refuses_a_lead_out_of_range(tiny_ckpt, tmp_path):
    out = tmp_path / "z"
    proc = run_cli("generate", "--model", tiny_ckpt, "--prompt", "a red chair", "--seed", 2, "--decoding", "zipar",
                   "--window", 6, "--device", "cpu", "--threads", 1, "--dtype", "float32", "--output", out,
                   "--save-tokens")
    assert "1 image: 576 tokens each in 162 forwards (zipar, rows 6 tokens apart (lossy))" in proc.stderr
    tokens = load_tokens(out / "tokens.safetensors")
    assert tokens.settings["decoding"] == "zipar" and tokens.settings["window"] == 6
    lm, _ = load(tiny_ckpt, dtype="float32", device="cpu")
    same = sample_tokens(lm, prepare_cond(lm, "a red chair"), seed=2, decoding="zipar", window=6)
    assert torch.equal(tokens.tokens, same.tokens)
    bad = run_cli("generate", "--model", tiny_ckpt, "--prompt", "x", "--decoding", "zipar", "--window", 30,
                  "--output", tmp_path / "never", ok=False)
    assert bad.returncode == 2 and "error: --window must be in 4..24, got 30" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "never").exists()
