"""Models by name: a local directory, or a HuggingFace Hub id downloaded by huggingface_hub.

    resolve_model_dir("weights/ms-marco-MiniLM-L-6-v2")        # a directory that exists: used as it is
    resolve_model_dir("cross-encoder/ms-marco-MiniLM-L6-v2")   # a Hub id: <HF cache>/models--.../snapshots/<commit>

This is the one place where a model's name or path becomes a model directory: CrossEncoder,
SentenceEncoder, every `--model` of the command line and `minibert fetch` come through here.
huggingface_hub does the HTTP (resume, retries, tokens, redirects, its cache and its progress
bars); this module decides which files a minibert model needs (choose_files: the weights
minibert reads, safetensors before .bin, and nothing else) and turns huggingface_hub's
exceptions into minibert's.

A Hub model goes to the standard cache that transformers and sentence-transformers share
(`cache_folder`, else HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), so a model
one of them already downloaded is used where it is, with no second copy. The settings are read
from the environment when a model is resolved, not when huggingface_hub was imported:
HF_ENDPOINT (the Hub or a mirror), HF_TOKEN, HF_HUB_OFFLINE=1 (the cache only, as
local_files_only=True).
"""

import json
import os
import re
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from minibert.errors import ConfigError, FetchError, MinibertError, ModelNotFoundError
from minibert.formats.checkpoint import check_fetch_complete

DEFAULT_ENDPOINT = "https://huggingface.co"

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                               "1_Pooling/config.json")
# (single file, index of its shards), in minibert's (and transformers') order of preference.
WEIGHTS = (("model.safetensors", "model.safetensors.index.json"),
           ("pytorch_model.bin", "pytorch_model.bin.index.json"))
_OTHER_WEIGHTS = (".safetensors", ".bin", ".h5", ".msgpack", ".onnx", ".ckpt", ".pt", ".pth", ".gguf")
# huggingface_hub's rule for a repository id: "name" or "owner/name", at most 96 characters.
REPO_ID = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_.-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*")


class RepoNotFoundError(ModelNotFoundError, FetchError):
    """No such repository or revision on the Hub (or a private repository the token cannot read)."""


class AccessDeniedError(FetchError):
    """A gated or private repository that the token cannot read, or a token the Hub rejects."""


class HubUnreachableError(FetchError):
    """No usable answer from the Hub (refused, timed out, 5xx), and nothing usable in the cache."""


class IntegrityError(FetchError):
    """Bytes whose size or hash differ from what the Hub (or a wheel's RECORD) announced."""


def is_repo_id(name) -> bool:
    return isinstance(name, str) and len(name) <= 96 and bool(REPO_ID.fullmatch(name)) and ".." not in name \
        and not name.endswith((".", "-"))


def resolve_model_dir(name_or_path, *, revision=None, token=None, cache_folder=None, local_files_only=False,
                      show_progress=None) -> Path:
    """The model directory that `name_or_path` names: a local directory, or a Hub id's snapshot.

    A path that exists wins (as in sentence-transformers); a file is refused with the directory it
    is in. Anything else that reads as a Hub id ("owner/name" or "name") is downloaded into the
    HuggingFace cache at `revision` (branch, tag or commit; default main), only the files minibert
    needs, or taken from the cache alone with local_files_only=True or HF_HUB_OFFLINE=1 (and when
    the Hub cannot be reached but the cache holds the model). show_progress=False hides
    huggingface_hub's download bars; None leaves its own setting.
    """
    path = Path(os.fspath(name_or_path))
    if path.is_dir():
        check_fetch_complete(path)  # a folder an unfinished `minibert fetch` left is refused before anything is read
        return path
    if path.exists():
        raise ModelNotFoundError(f"{path} is a file; expected a model directory (the folder holding config.json, "
                                 f"the weights and the tokenizer{_parent_hint(path)})")
    name = os.fspath(name_or_path)
    if not is_repo_id(name):
        raise ModelNotFoundError(f"{path}: no such model directory (expected a folder with config.json, the weights "
                                 "and tokenizer.json or vocab.txt, or a Hub id 'owner/name')")
    return download(name, revision=revision, token=token, cache_folder=cache_folder,
                    local_files_only=local_files_only, show_progress=show_progress, local_path=path)


def _parent_hint(path: Path) -> str:
    parent = path.resolve().parent
    return f": {parent}?" if (parent / "config.json").is_file() else ""


# ---------------------------------------------------------------------------------------------
# Downloads


def download(repo_id: str, *, revision=None, token=None, cache_folder=None, local_files_only=False,
             show_progress=None, local_path: Path | None = None) -> Path:
    """The cache's snapshot folder of `repo_id` at `revision`, with every file minibert needs.

    Online, the revision is resolved once (a HEAD of config.json, which also records it in the
    cache's refs/ so that it works offline later), the file list of that commit is read, and
    snapshot_download brings the chosen files of that one commit; files already in the cache are
    not downloaded again. Offline, or when the Hub does not answer, the cached snapshot is used as
    it is (its files are checked when the model loads).
    """
    import huggingface_hub as hf

    settings = HubSettings.from_environment(token, cache_folder, local_files_only)
    where = f"{repo_id} at {revision or 'main'}"
    with hub_errors(repo_id, revision, settings, local_path):
        with progress_bars(show_progress):
            config = hf.hf_hub_download(repo_id, "config.json", revision=revision, cache_dir=settings.cache_dir,
                                        local_files_only=settings.offline, **settings.http)
            folder = Path(config).parent   # <cache>/models--owner--name/snapshots/<commit>
            if settings.offline:
                return folder
            commit = folder.name

            def read_json(name: str):
                return _read_json(hf.hf_hub_download(repo_id, name, revision=commit, cache_dir=settings.cache_dir,
                                                     **settings.http), name, where)
            try:
                info = hf.HfApi(**settings.http).model_info(repo_id, revision=commit)
                chosen = choose_files([sibling.rfilename for sibling in info.siblings or ()], read_json, where)
                hf.snapshot_download(repo_id, revision=commit, cache_dir=settings.cache_dir, allow_patterns=chosen,
                                     **settings.http)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                # The Hub went away after config.json came (from the cache or the Hub): use what is cached.
    return folder


class HubSettings:
    """The Hub settings of one call, read from the arguments and the environment at call time."""

    def __init__(self, endpoint: str, token, cache_dir: Path, offline: bool):
        self.endpoint, self.token, self.cache_dir, self.offline = endpoint, token, cache_dir, offline
        self.http = {"endpoint": endpoint, "token": token}

    @classmethod
    def from_environment(cls, token=None, cache_folder=None, local_files_only=False) -> "HubSettings":
        import huggingface_hub.constants as hf_constants

        endpoint = (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        if not re.match(r"https?://[^/]", endpoint):
            raise ConfigError(f"HF_ENDPOINT must be an http(s) URL such as {DEFAULT_ENDPOINT}, found {endpoint!r}")
        if cache_folder is not None:
            cache_dir = Path(cache_folder)
        elif os.environ.get("HF_HUB_CACHE"):
            cache_dir = Path(os.environ["HF_HUB_CACHE"])
        elif os.environ.get("HF_HOME"):
            cache_dir = Path(os.environ["HF_HOME"]) / "hub"
        else:
            cache_dir = Path(hf_constants.HF_HUB_CACHE)
        offline = bool(local_files_only) or _true(os.environ.get("HF_HUB_OFFLINE"))
        return cls(endpoint, token, cache_dir.expanduser(), offline)


def _true(value) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _read_json(path, name: str, where: str):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FetchError(f"{where}: {name} is not valid JSON: {exc}") from None


@contextmanager
def progress_bars(show: bool | None):
    """huggingface_hub's progress bars hidden while the block runs when `show` is False."""
    if show is not False:
        yield
        return
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def is_connection_error(exc: BaseException) -> bool:
    """A refused, reset or timed-out connection, whichever HTTP library huggingface_hub runs on."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return isinstance(exc, (ConnectionError, TimeoutError)) or bool(
        names & {"ConnectError", "TimeoutException", "NetworkError", "ConnectTimeout", "ReadTimeout"})


@contextmanager
def hub_errors(repo_id: str, revision, settings: HubSettings, local_path: Path | None = None):
    """huggingface_hub's exceptions -> minibert's, each saying what was asked of which endpoint."""
    from huggingface_hub import errors as hf_errors

    at = f" at revision {revision}" if revision else ""
    if settings.token is not None:
        token_hint = "the token given must belong to an account that has access"
    elif os.environ.get("HF_TOKEN"):
        token_hint = "HF_TOKEN is set, but its account must have access"
    else:
        token_hint = "set HF_TOKEN (or pass token=) to a token of an account that has access"
    local = f"no such model directory {local_path}, and " if local_path is not None else ""
    try:
        yield
    except MinibertError:
        raise
    except hf_errors.GatedRepoError:
        raise AccessDeniedError(f"{repo_id} is a gated repository: accept its conditions at "
                                f"{settings.endpoint}/{repo_id}; {token_hint}") from None
    except hf_errors.RevisionNotFoundError:
        raise RepoNotFoundError(f"{repo_id} on {settings.endpoint} has no revision {revision!r}") from None
    except hf_errors.RepositoryNotFoundError:
        raise RepoNotFoundError(f"{local}no repository {repo_id} on {settings.endpoint}; if it is private, "
                                f"{token_hint}") from None
    except hf_errors.EntryNotFoundError as exc:
        if not isinstance(exc, hf_errors.LocalEntryNotFoundError):  # the Hub said: no such file
            if "config.json" in str(exc):
                raise FetchError(f"{repo_id}{at} on {settings.endpoint} has no config.json, so it is not a "
                                 "transformers model") from None
            raise FetchError(f"{repo_id}{at} on {settings.endpoint}: {_first_line(exc)}") from None
        if settings.offline:
            why = "HF_HUB_OFFLINE=1" if _true(os.environ.get("HF_HUB_OFFLINE")) else "local_files_only=True"
            raise ModelNotFoundError(f"{local}{repo_id}{at} is not in the HuggingFace cache {settings.cache_dir} "
                                     f"({why}: nothing is downloaded)") from None
        raise HubUnreachableError(f"{local}could not reach the HuggingFace Hub at {settings.endpoint} for "
                                  f"{repo_id}{at}, and it is not in the cache {settings.cache_dir}: {_first_line(exc)}; "
                                  "check the network, or set HF_ENDPOINT to a reachable mirror") from None
    except hf_errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise AccessDeniedError(f"{settings.endpoint} refused access to {repo_id} (HTTP {status}); "
                                    f"{token_hint}") from None
        raise HubUnreachableError(f"the HuggingFace Hub at {settings.endpoint} failed for {repo_id}{at}: "
                                  f"{_first_line(exc)}") from None
    except (OSError, ValueError) as exc:
        if is_connection_error(exc) or isinstance(exc, hf_errors.OfflineModeIsEnabled):
            raise HubUnreachableError(f"could not reach the HuggingFace Hub at {settings.endpoint} for {repo_id}: "
                                      f"{_first_line(exc)}") from None
        if isinstance(exc, hf_errors.HFValidationError):
            raise ConfigError(f"{repo_id!r} is not a Hub id: {_first_line(exc)}") from None
        raise FetchError(f"{repo_id}{at} from {settings.endpoint}: {_first_line(exc)}") from None
    except Exception as exc:
        if not is_connection_error(exc):
            raise
        raise HubUnreachableError(f"could not reach the HuggingFace Hub at {settings.endpoint} for {repo_id}: "
                                  f"{_first_line(exc)}; check the network, or set HF_ENDPOINT to a reachable "
                                  "mirror") from None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Which files


def choose_files(available, read_json, where: str) -> list[str]:
    """The files of `available` that a minibert model directory needs, the weights last.

    config.json; the tokenizer (tokenizer.json, vocab.txt, tokenizer_config.json,
    special_tokens_map.json); sentence-transformers' modules.json, sentence_bert_config.json,
    config_sentence_transformers.json and each module's config.json and weights (model.safetensors,
    else pytorch_model.bin: a Dense's or a LayerNorm's); the weights
    (model.safetensors, else its shards and index, else pytorch_model.bin, else its shards and
    index). `read_json(name)` gives the parsed content of one of them: it is called for
    modules.json and for the index of a sharded checkpoint. `where` names the source in messages.
    """
    available = set(available)
    if "config.json" not in available:
        raise FetchError(f"{where}: no config.json, so not a transformers model")
    if not {"tokenizer.json", "vocab.txt"} & available:
        raise FetchError(f"{where}: no tokenizer.json or vocab.txt, so no tokenizer for minibert to read")
    weights = _pick_weights(available, where)  # before anything is read: a repository without weights fails first
    chosen = ["config.json"] + [name for name in TOKENIZER_FILES if name in available]
    chosen += [name for name in SENTENCE_TRANSFORMERS_FILES if name in available]
    if "modules.json" in available:
        for path in _module_paths(read_json("modules.json"), where):
            # 1_Pooling has a config.json; 2_Normalize often none; a Dense or LayerNorm its weights beside it.
            own_weights = [f"{path}/{name}" for name, _ in WEIGHTS if f"{path}/{name}" in available][:1]
            for name in [f"{path}/config.json", *own_weights]:
                if name in available and name not in chosen:
                    chosen.append(name)
    return chosen + _with_shards(weights, available, read_json, where)


def _module_paths(modules, where: str) -> list[str]:
    """The folders named by sentence-transformers' modules.json ('' is the model itself)."""
    if not isinstance(modules, list):
        raise FetchError(f"{where}: modules.json is not a list of modules")
    paths = []
    for module in modules:
        path = module.get("path") if isinstance(module, dict) else None
        if isinstance(path, str) and path.strip("/"):
            paths.append(safe_name(path.strip("/"), where))
    return paths


def _pick_weights(available: set, where: str) -> str:
    """The weights file minibert prefers among `available`: a single file, or the index of shards."""
    for single, index in WEIGHTS:
        for name in (single, index):
            if name in available:
                return name
    others = sorted(name for name in available if name.endswith(_OTHER_WEIGHTS))
    found = f"; found only {', '.join(others)}" if others else "; it holds no weights at all"
    raise FetchError(f"{where}: no usable weights file: expected model.safetensors (or its shards with "
                     f"model.safetensors.index.json) or pytorch_model.bin (or its shards with its index){found}")


def _with_shards(weights: str, available: set, read_json, where: str) -> list[str]:
    """[weights], or for the index of a sharded checkpoint [index, shard, shard, ...]."""
    if not weights.endswith(".index.json"):
        return [weights]
    content = read_json(weights)
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise FetchError(f"{where}: {weights} has no weight_map")
    shards = sorted({safe_name(str(shard), where) for shard in weight_map.values()})
    missing = [shard for shard in shards if shard not in available]
    if missing:
        raise FetchError(f"{where}: {weights} names shards that are not there: {', '.join(missing)}")
    return [weights] + shards


def safe_name(name: str, where: str) -> str:
    """A relative '/'-separated path that stays inside the destination, or FetchError."""
    path = PurePosixPath(name)
    if not name or "\\" in name or path.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")):
        raise FetchError(f"{where}: refusing the file name {name!r}: it would leave the destination folder")
    return name
