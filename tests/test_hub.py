"""Models by Hub id (minibert.hub.resolve_model_dir), against a Hub-like server on 127.0.0.1.

CrossEncoder("owner/name"), SentenceEncoder("owner/name") and every --model take a Hub id as
sentence-transformers does: only the files minibert needs go into the standard HuggingFace cache,
a model that sentence-transformers already put there is used with no second copy, the cache alone
serves offline, and a local directory always wins. Never the real Hub (tests/conftest.py).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hub_server import (  # noqa: F401
    MODEL_REPO,
    NEEDED,
    HubServer,
    folder,
    hf_cache_env,
    hub,
    model_files,
    model_repo,
)

from minibert import CrossEncoder, ModelFormatError, SentenceEncoder
from minibert.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, format_score, main
from minibert.errors import ModelNotFoundError
from minibert.formats.hub import (
    AccessDeniedError,
    HubUnreachableError,
    RepoNotFoundError,
    resolve_model_dir,
)

PAIRS = [("what is the capital of france", "paris is the capital of france"),
         ("what is the capital of france", "the cat sat on the mat")]
TOKEN = "hf_test_secret_0123456789"
REPO = Path(__file__).resolve().parents[1]


def bodies(hub) -> list[str]:
    """The paths of every GET for file bytes (resolve or CDN): what was downloaded."""
    return [path for method, path, _ in hub.requests(method="GET") if "/resolve/" in path or "/cdn/" in path]


def snapshots(hf_home: Path) -> Path:
    return hf_home / "hub" / f"models--{MODEL_REPO.replace('/', '--')}" / "snapshots"


# ---------------------------------------------------------------------------------------------
# A Hub id: the needed files, into the HuggingFace cache


def test_hub_id_downloads_only_the_needed_files_into_the_hf_cache(hub, model_repo, model_files, tiny_model_dir,
                                                                  tmp_path):
    ce = CrossEncoder(MODEL_REPO)

    assert ce.path == snapshots(tmp_path / "hf-home") / model_repo.main
    got = folder(ce.path)
    assert set(got) == NEEDED
    assert all(got[name] == model_files[name] for name in NEEDED)
    for name in ("README.md", "pytorch_model.bin", "onnx/model.onnx", ".gitattributes"):
        assert hub.file_requests(name) == [], f"{name} was downloaded"
    np.testing.assert_array_equal(ce.predict(PAIRS), CrossEncoder(tiny_model_dir()).predict(PAIRS))


def test_second_load_downloads_nothing_and_the_sentence_encoder_shares_the_snapshot(hub, model_repo, tmp_path):
    ce = CrossEncoder(MODEL_REPO)
    downloaded = bodies(hub)

    se = SentenceEncoder(MODEL_REPO)
    CrossEncoder(MODEL_REPO)

    assert bodies(hub) == downloaded
    assert se.path == ce.path and se.encode("paris").shape == (32,)


def test_revision_tag_and_cache_folder(hub, model_repo, model_files, tmp_path):
    first = model_repo.main
    model_repo.tags["v1.0"] = first
    model_repo.push({**model_files, "vocab.txt": model_files["vocab.txt"] + b"extra\n"})

    old = CrossEncoder(MODEL_REPO, revision="v1.0", cache_folder=tmp_path / "elsewhere")
    new = CrossEncoder(MODEL_REPO)

    assert old.path == tmp_path / "elsewhere" / f"models--{MODEL_REPO.replace('/', '--')}" / "snapshots" / first
    assert (old.path / "vocab.txt").read_bytes() == model_files["vocab.txt"]
    assert new.path.name == model_repo.main != first
    with pytest.raises(RepoNotFoundError, match=f"{MODEL_REPO} on {hub.url} has no revision 'v9'"):
        CrossEncoder(MODEL_REPO, revision="v9")


def test_all_files_come_from_the_commit_the_revision_resolved_to(hub, model_repo, model_files):
    listed = model_repo.main
    changed = {name: data + b" " if name.endswith(".txt") else data for name, data in model_files.items()}
    hub.after_listing = lambda: model_repo.push(changed)  # main moves on while the files download

    ce = CrossEncoder(MODEL_REPO)

    assert ce.path.name == listed != model_repo.main
    assert (ce.path / "vocab.txt").read_bytes() == model_files["vocab.txt"]


def test_a_local_directory_wins_over_the_hub_id(hub, model_repo, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model_dir(seed=3), tmp_path / MODEL_REPO)

    assert resolve_model_dir(MODEL_REPO) == Path(MODEL_REPO)
    assert CrossEncoder(MODEL_REPO).path == Path(MODEL_REPO)
    assert hub.requests() == []


# ---------------------------------------------------------------------------------------------
# Offline, and a cache another library filled


def test_offline_and_local_files_only_use_the_cache_alone(hub, model_repo, tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match=rf"{MODEL_REPO} is not in the HuggingFace cache .*"
                                                 r"local_files_only=True: nothing is downloaded"):
        CrossEncoder(MODEL_REPO, local_files_only=True)
    assert hub.requests() == []
    path = CrossEncoder(MODEL_REPO).path
    before = len(hub.requests())

    assert CrossEncoder(MODEL_REPO, local_files_only=True).path == path
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert SentenceEncoder(MODEL_REPO).path == path
    assert len(hub.requests()) == before
    with pytest.raises(ModelNotFoundError, match=r"not in the HuggingFace cache .*HF_HUB_OFFLINE=1"):
        CrossEncoder("someone/else")


def test_an_unreachable_hub_falls_back_to_the_cache(hub, model_repo, monkeypatch):
    path = CrossEncoder(MODEL_REPO).path
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    assert CrossEncoder(MODEL_REPO).path == path


def test_an_unreachable_hub_without_the_model_in_the_cache(hub, monkeypatch):
    import huggingface_hub.utils._http as hf_http

    monkeypatch.setattr(hf_http.time, "sleep", lambda seconds: None)  # huggingface_hub's retries, without the waits
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(HubUnreachableError, match=r"the HuggingFace Hub at http://127.0.0.1:9 is unreachable "
                                                  rf"\(connection refused\) for the Hub id {MODEL_REPO}, which the "
                                                  "HuggingFace cache"):
        CrossEncoder(MODEL_REPO)


def test_a_model_sentence_transformers_downloaded_is_used_with_no_second_copy(hub, model_repo, tmp_path):
    pytest.importorskip("sentence_transformers")  # the [golden] extra, installed by the README's test command
    hf_home = tmp_path / "hf-home"
    script = ("import sys; from sentence_transformers import SentenceTransformer; "
              f"m = SentenceTransformer({MODEL_REPO!r}, device='cpu'); "
              "sys.stdout.buffer.write(m.encode(['paris is the capital of france']).astype('float32').tobytes())")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, env=hf_cache_env(hub, hf_home),
                          timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    reference = np.frombuffer(done.stdout, dtype=np.float32)
    blobs = sorted(p.name for p in (hf_home / "hub" / f"models--{MODEL_REPO.replace('/', '--')}" / "blobs").iterdir())
    downloaded = bodies(hub)

    se = SentenceEncoder(MODEL_REPO)

    assert bodies(hub) == downloaded, "minibert downloaded again what sentence-transformers had"
    assert sorted(p.name for p in (se.path.parent.parent / "blobs").iterdir()) == blobs
    np.testing.assert_allclose(se.encode(["paris is the capital of france"])[0], reference, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# Names that name nothing, and refusals


def test_a_file_is_refused_with_the_directory_that_holds_it(tiny_model_dir):
    config = tiny_model_dir() / "config.json"
    with pytest.raises(ModelNotFoundError, match=rf"{config} is a file; expected a model directory .*"
                                                 rf": {tiny_model_dir()}\?"):
        CrossEncoder(config)
    assert issubclass(ModelNotFoundError, ModelFormatError)


def test_a_missing_repository_names_the_path_and_the_endpoint(hub):
    with pytest.raises(RepoNotFoundError, match=rf"no such model directory nobody/typo, and no repository "
                                                rf"nobody/typo on {hub.url}; if it is private, set HF_TOKEN"):
        CrossEncoder("nobody/typo")
    assert issubclass(RepoNotFoundError, ModelNotFoundError)


def test_a_gated_repository_says_where_to_accept_and_sends_the_token_only_to_the_hub(hub, model_files,
                                                                                     monkeypatch):
    hub.add_repo("org/gated", model_files, lfs={"model.safetensors"}, gated_token=TOKEN)
    with pytest.raises(AccessDeniedError, match=rf"org/gated is a gated repository: accept its conditions at "
                                                rf"{hub.url}/org/gated; set HF_TOKEN"):
        CrossEncoder("org/gated")

    ce = CrossEncoder("org/gated", token=TOKEN)

    assert ce.path.name == hub.repos["org/gated"].main
    hub_requests = [h for _, p, h in hub.requests() if not p.startswith("/cdn/")]
    cdn_requests = hub.requests("/cdn/")
    assert cdn_requests and all("authorization" not in h for _, _, h in cdn_requests)
    assert {h.get("authorization") for h in hub_requests[-3:]} == {f"Bearer {TOKEN}"}


# ---------------------------------------------------------------------------------------------
# The command line


def test_cli_model_by_hub_id_and_revision(hub, model_repo, model_files, tmp_path, capsys):
    first = model_repo.main
    model_repo.push({**model_files, "vocab.txt": model_files["vocab.txt"] + b"extra\n"})
    passages = tmp_path / "passages.txt"
    passages.write_text("paris is the capital of france\n")

    status = main(["rank", "--model", MODEL_REPO, "--revision", first, "--query", PAIRS[0][0], str(passages)])

    out, err = capsys.readouterr()
    assert (status, err) == (EXIT_OK, "")  # no download bars: stderr is not a terminal
    expected = SentenceEncoder(snapshots(tmp_path / "hf-home") / first).rank(PAIRS[0][0], [PAIRS[0][1]])
    assert out.split("\t")[:3] == ["1", format_score(expected[0]["score"]), "0"]
    assert (snapshots(tmp_path / "hf-home") / first / "vocab.txt").read_bytes() == model_files["vocab.txt"]


@pytest.mark.parametrize("model, status, fragment", [
    ("nobody/nothing", EXIT_USAGE, "no such model directory nobody/nothing, and no repository"),
    ("org/gated", EXIT_FAILURE, "gated repository"),
])
def test_cli_hub_failures_are_one_line(hub, model_files, model, status, fragment, capsys):
    hub.add_repo("org/gated", model_files, gated_token=TOKEN)
    got = main(["rank", "--model", model, "--query", "q", "-"])
    out, err = capsys.readouterr()
    assert (got, out) == (status, "")
    assert err.startswith("minibert: error: ") and err.count("\n") == 1 and fragment in err, err


# ---------------------------------------------------------------------------------------------
# A name that is not a Hub id never goes to the Hub; a Hub that cannot be reached fails fast


@pytest.mark.parametrize("name", ["tiny-l1", "weights/all-MiniLM-L6", "./someone/model", "../someone/model",
                                  "~/someone/model", "/nowhere/someone/model"])
def test_a_name_that_is_not_a_hub_id_is_a_local_path_and_fails_at_once(hub, model_repo, name, tmp_path,
                                                                       monkeypatch):
    """No owner/name shape, a path's start (./ ../ / ~), or a first part that is a folder here: a path."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights" / "all-MiniLM-L6-v2").mkdir(parents=True)   # `weights` is a local folder
    (tmp_path / "weights" / "all-MiniLM-L6-v2" / "config.json").write_text("{}")
    hub.add_repo("weights/all-MiniLM-L6", hub.repos[MODEL_REPO].commits[hub.repos[MODEL_REPO].main])
    hub.add_repo("tiny-l1", hub.repos[MODEL_REPO].commits[hub.repos[MODEL_REPO].main])

    with pytest.raises(ModelNotFoundError, match="no such model directory") as caught:
        CrossEncoder(name)

    assert hub.requests() == [], "a local path was looked up on the Hub"
    assert "Hub" not in str(caught.value).replace("a Hub id", "")
    if name == "weights/all-MiniLM-L6":
        assert "weights/all-MiniLM-L6-v2?" in str(caught.value)   # the folder that is there


def test_a_folder_without_config_json_is_no_model_and_names_the_models_inside(tmp_path):
    (tmp_path / "weights" / "all-MiniLM-L6-v2").mkdir(parents=True)
    (tmp_path / "weights" / "all-MiniLM-L6-v2" / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match=r"weights is not a model directory: it holds no config.json; "
                                                 r"the model directories in it: all-MiniLM-L6-v2"):
        CrossEncoder(tmp_path / "weights")


def test_an_unreachable_hub_is_asked_once_without_retries(monkeypatch, tmp_path):
    """huggingface_hub's HEAD with 5 retries and waits of 1+2+4+8+8 s (23.5 s in all) is not used."""
    import huggingface_hub.constants
    import huggingface_hub.utils._http as hf_http

    waits = []
    monkeypatch.setattr(hf_http.time, "sleep", waits.append)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))   # HF_ENDPOINT: conftest's closed port
    with pytest.raises(HubUnreachableError, match=r"the HuggingFace Hub at http://127.0.0.1:9 is unreachable "
                                                  r"\(.*\).*HF_HUB_OFFLINE=1") as caught:
        CrossEncoder(MODEL_REPO)
    assert waits == [], "huggingface_hub retried"
    assert str(tmp_path / "hf-home" / "hub") in str(caught.value)
    assert isinstance(caught.value, ModelNotFoundError)   # the command line: exit status 2, as for any missing model


def unreachable_run(endpoint: str, hf_home: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess, float]:
    """`minibert rank --model someone/tiny-cross-encoder` as a new process against `endpoint` -> (process, seconds)."""
    import time

    passages = tmp_path / "passages.txt"
    passages.write_text("a passage\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(hf_home), HF_HUB_OFFLINE="0", no_proxy="127.0.0.1,localhost",
               PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "minibert", "rank", "--model", MODEL_REPO, "-q", "x", str(passages)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    return done, time.monotonic() - started


# Generous bounds (process start included) on a busy machine; before, the same runs took 23.5 s (a closed port:
# huggingface_hub's five retries) and minutes (a Hub that accepts and never answers: 10 s, then 60 s per retry).
@pytest.mark.parametrize("kind, bound", [("closed port", 15.0), ("never answers", 20.0)])
def test_cli_unreachable_hub_fails_within_seconds_in_one_line(kind, bound, tmp_path):
    if kind == "closed port":
        done, seconds = unreachable_run("http://127.0.0.1:9", tmp_path / "hf-home", tmp_path)
        asked = None
    else:
        with HubServer() as silent:
            silent.faults.hang = 600.0   # accepts the connection, reads the request, never answers
            done, seconds = unreachable_run(silent.url, tmp_path / "hf-home", tmp_path)
            asked = len(silent.requests("/resolve/"))
    assert (done.returncode, done.stdout) == (EXIT_USAGE, ""), done.stderr
    assert done.stderr.startswith("minibert: error: ") and done.stderr.count("\n") == 1, done.stderr
    for fragment in ("is unreachable", "HF_HUB_OFFLINE=1", str(tmp_path / "hf-home" / "hub")):
        assert fragment in done.stderr, done.stderr
    assert "Retry" not in done.stderr
    assert asked in (None, 1), f"the Hub was asked {asked} times"
    assert seconds < bound, f"{kind}: {seconds:.1f} s"
