"""Smoke test of the sampler benchmark: tiny shape, few tokens, one repeat; all contenders must agree."""

import json

from benchmarks.bench_sampler import main


def test_bench_sampler_smoke(tmp_path):
    out = tmp_path / "sampler.json"
    assert main(["--shapes", "tiny", "--batch", "1,2", "--tokens", "4", "--repeats", "1", "--threads", "1",
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [(r["shape"], r["batch"]) for r in data["results"]] == [("tiny", 1), ("tiny", 2)]
    for r in data["results"]:
        assert r["tokens_identical"] and set(r["contenders"]) == {"a", "b", "c"}
        assert r["kv_bytes"] > 0 and r["weights_bytes"] > 0 and r["contenders"]["a"]["peak_rss"] > 0
    assert out.with_suffix(".md").read_text().startswith("## Sampler benchmark")


def test_bench_linear_smoke(tmp_path):
    from benchmarks.bench_linear import FORMS
    from benchmarks.bench_linear import main as linear_main

    assert linear_main(["--threads", "1", "--rows", "2", "--sets", "mini", "--repeats", "1", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "linear_forms.json").read_text())
    (record,) = saved["records"]
    assert record["rows"] == 2 and set(record["ms"]) == set(FORMS) and all(v > 0 for v in record["ms"].values())
    assert saved["machine"]["cpu_count"] >= 1 and "isa" in saved["machine"]
    text = (tmp_path / "linear_forms.md").read_text()
    assert "(W @ x.T).T" in text and "CPU: " in text  # every table names its CPU


def test_bench_describe_smoke(tmp_path):
    from benchmarks.bench_describe import main as describe_main

    out = tmp_path / "describe.json"
    assert describe_main(["--shapes", "tiny", "--vision", "tiny", "--tokens", "4", "--repeats", "1", "--threads", "1",
                          "--json", str(out)]) == 0
    (r,) = json.loads(out.read_text())["results"]
    assert r["tokens_identical"] and r["generated"] >= 1 and r["max_feature_diff"] < 1e-4
    for key in ("encode_s", "prefill_s", "per_token_ms", "total_s"):
        assert set(r["median"][key]) == {"ours", "transformers"} and all(v > 0 for v in r["median"][key].values())
    assert out.with_suffix(".md").read_text().startswith("## Describe benchmark")


def test_bench_e2e_smoke(tmp_path):
    from benchmarks.bench_e2e import main as e2e_main

    out = tmp_path / "e2e.json"
    assert e2e_main(["--shapes", "tiny", "--no-transformers", "--repeats", "1", "--threads", "1",
                     "--cli-variants", "float32,int8", "--json", str(out)]) == 0
    (r,) = json.loads(out.read_text())["results"]
    assert set(r["median_s"]) == {"cli-float32", "cli-int8"} and all(v > 0 for v in r["median_s"].values())
    assert "CPU: " in out.with_suffix(".md").read_text()
