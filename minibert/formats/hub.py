"""Models by name: a local directory, or a HuggingFace Hub id downloaded by huggingface_hub.

    resolve_model_dir("weights/ms-marco-MiniLM-L-6-v2")        # a directory that exists: used as it is
    resolve_model_dir("cross-encoder/ms-marco-MiniLM-L6-v2")   # a Hub id: <HF cache>/models--.../snapshots/<commit>

This is the one place where a model's name or path becomes a model directory: CrossEncoder,
SentenceEncoder, every `--model` of the command line and `minibert fetch` come through here.
huggingface_hub does the HTTP (resume, retries, tokens, redirects, its cache and its progress
bars); this module decides which files a minibert model needs (choose_files: the weights
minibert reads, safetensors before .bin, and nothing else) and turns huggingface_hub's
exceptions into minibert's.

A name is a Hub id only when it has the form "owner/name", does not start as a path does (./,
../, /, ~) and its first part is not a folder here; anything else is a local path, and a path
that names no model directory fails at once, without asking the Hub.

A Hub model goes to the standard cache that transformers and sentence-transformers share
(`cache_folder`, else HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), so a model
one of them already downloaded is used where it is, with no second copy. The settings are read
from the environment when a model is resolved, not when huggingface_hub was imported:
HF_ENDPOINT (the Hub or a mirror), HF_TOKEN, HF_HUB_OFFLINE=1 (the cache only, as
local_files_only=True), HF_HUB_ETAG_TIMEOUT (seconds to wait for the Hub's first answer; 5 here).

The Hub is asked first with one request that huggingface_hub makes without retries (its own
"fast fallback to the cache"): when that gets no answer, the cache is used, or the model is
missing, within seconds (a refused connection at once, a silent Hub after HF_HUB_ETAG_TIMEOUT),
not after huggingface_hub's five retries (23.5 s of waiting, or minutes for a silent Hub). huggingface_hub's log lines (its retry warnings) are hidden while minibert talks to the
Hub, since minibert reports every failure itself; HF_HUB_VERBOSITY shows them.
"""

import difflib
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from minibert.errors import ConfigError, FetchError, MinibertError, ModelNotFoundError
from minibert.formats.checkpoint import check_fetch_complete

DEFAULT_ENDPOINT = "https://huggingface.co"
# Seconds to wait for the Hub's answer to a metadata request, unless HF_HUB_ETAG_TIMEOUT says otherwise
# (huggingface_hub's own default is 10): the Hub answers in well under a second when it is there at all.
DEFAULT_TIMEOUT = 5.0

# chat_template.jinja: a decoder reranker's chat template, as transformers saves it (else tokenizer_config.json's)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja")
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                               "1_Pooling/config.json")
# (single file, index of its shards), in minibert's (and transformers') order of preference.
WEIGHTS = (("model.safetensors", "model.safetensors.index.json"),
           ("pytorch_model.bin", "pytorch_model.bin.index.json"))
_OTHER_WEIGHTS = (".safetensors", ".bin", ".h5", ".msgpack", ".onnx", ".ckpt", ".pt", ".pth", ".gguf")
# huggingface_hub's rule for a repository id: "name" or "owner/name", at most 96 characters.
REPO_ID = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_.-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*")


class RepoNotFoundError(ModelNotFoundError, FetchError):
    """No such repository or revision on the Hub (or a private repository the token cannot read), or a
    repository with no config.json (no transformers model)."""


class AccessDeniedError(FetchError):
    """A gated or private repository that the token cannot read, or a token the Hub rejects."""


class HubUnreachableError(FetchError):
    """No usable answer from the Hub (refused, timed out, 5xx), and nothing usable in the cache."""


class NotCachedError(HubUnreachableError, ModelNotFoundError):
    """A Hub id while the Hub cannot be reached, and not in the HuggingFace cache: no model by that name here."""


class IntegrityError(FetchError):
    """Bytes whose size or hash differ from what the Hub (or a wheel's RECORD) announced."""


def is_repo_id(name) -> bool:
    """Whether `name` is a valid Hub repository id, "owner/name" or "name" (what `minibert fetch` takes)."""
    return isinstance(name, str) and len(name) <= 96 and bool(REPO_ID.fullmatch(name)) and ".." not in name \
        and not name.endswith((".", "-"))


def is_hub_id(name) -> bool:
    """Whether a model name that is no local directory is looked up on the Hub: "owner/name", whose owner is
    not a folder here. A name of one part, or one that starts as a path does (./, ../, /, ~), is a path."""
    return is_repo_id(name) and "/" in name and not Path(name.partition("/")[0]).is_dir()


def resolve_model_dir(name_or_path, *, revision=None, token=None, cache_folder=None, local_files_only=False,
                      show_progress=None) -> Path:
    """The model directory that `name_or_path` names: a local directory, or a Hub id's snapshot.

    A path that exists wins (as in sentence-transformers); a file, or a folder with neither
    config.json nor modules.json, is refused (ModelNotFoundError) with the model directories near it.
    A Hub id (is_hub_id: "owner/name") is downloaded into the HuggingFace cache at `revision`
    (branch, tag or commit; default main), only the files minibert needs, or taken from the cache
    alone with local_files_only=True or HF_HUB_OFFLINE=1 (and when the Hub cannot be reached but the
    cache holds the model). Any other name is a local path that is not there: ModelNotFoundError at
    once. show_progress=False hides huggingface_hub's download bars; None leaves its own setting.
    """
    name = os.fspath(name_or_path)
    path = Path(name).expanduser() if name.startswith("~") else Path(name)
    if path.is_dir():
        check_fetch_complete(path)  # a folder an unfinished `minibert fetch` left is refused before anything is read
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            inside = _model_dirs(path)[:3]
            where = f"; the model directories in it: {', '.join(p.name for p in inside)}" if inside else ""
            raise ModelNotFoundError(f"{path} is not a model directory: it holds no config.json{where}")
        return path
    if path.exists():
        raise ModelNotFoundError(f"{path} is a file; expected a model directory (the folder holding config.json, "
                                 f"the weights and the tokenizer{_parent_hint(path)})")
    if not is_hub_id(name):
        near = _near(path)
        raise ModelNotFoundError(f"no such model directory {path}; did you mean {near}?" if near else
                                 f"no such model directory {path} (expected a folder with config.json, the weights "
                                 "and tokenizer.json or vocab.txt, or a Hub id 'owner/name')")
    return download(name, revision=revision, token=token, cache_folder=cache_folder,
                    local_files_only=local_files_only, show_progress=show_progress, local_path=path)


def _parent_hint(path: Path) -> str:
    parent = path.resolve().parent
    return f": {parent}?" if (parent / "config.json").is_file() else ""


def _model_dirs(folder: Path) -> list[Path]:
    """The model directories (config.json or modules.json inside) directly in `folder`, by name."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [p for p in entries if p.is_dir() and ((p / "config.json").is_file() or (p / "modules.json").is_file())]


def _near(path: Path) -> Path | None:
    """A model directory beside `path` whose name is close to its name (a typo's target), or None."""
    close = difflib.get_close_matches(path.name, [p.name for p in _model_dirs(path.parent)], n=1, cutoff=0.6)
    return path.parent / close[0] if close else None


# ---------------------------------------------------------------------------------------------
# Downloads


def download(repo_id: str, *, revision=None, token=None, cache_folder=None, local_files_only=False,
             show_progress=None, local_path: Path | None = None) -> Path:
    """The cache's snapshot folder of `repo_id` at `revision`, with every file minibert needs.

    Online, the Hub is asked once, without retries, for config.json's metadata (check_reachable);
    with no answer, the cached snapshot is used as it is, or NotCachedError is raised. Then the
    revision is resolved (a HEAD of config.json, which also records it in the cache's refs/ so that
    it works offline later), the file list of that commit is read, and snapshot_download brings the
    chosen files of that one commit; files already in the cache are not downloaded again. Offline,
    the cached snapshot is used as it is (its files are checked when the model loads).
    """
    import huggingface_hub as hf

    settings = HubSettings.from_environment(token, cache_folder, local_files_only)
    where = f"{repo_id} at {revision or 'main'}"
    with hub_errors(repo_id, revision, settings, local_path), hub_output(show_progress):
        if not settings.offline:
            why = check_reachable(repo_id, revision, settings)
            if why is not None:
                return cached_snapshot(repo_id, revision, settings, why, local_path)
        config = hf.hf_hub_download(repo_id, "config.json", revision=revision, cache_dir=settings.cache_dir,
                                    local_files_only=settings.offline, etag_timeout=settings.timeout,
                                    **settings.http)
        folder = Path(config).parent   # <cache>/models--owner--name/snapshots/<commit>
        if settings.offline:
            return folder
        commit = folder.name

        def read_json(name: str):
            return _read_json(hf.hf_hub_download(repo_id, name, revision=commit, cache_dir=settings.cache_dir,
                                                 etag_timeout=settings.timeout, **settings.http), name, where)
        try:
            info = hf.HfApi(**settings.http).model_info(repo_id, revision=commit, timeout=settings.timeout)
            chosen = choose_files([sibling.rfilename for sibling in info.siblings or ()], read_json, where)
            hf.snapshot_download(repo_id, revision=commit, cache_dir=settings.cache_dir, allow_patterns=chosen,
                                 etag_timeout=settings.timeout, **settings.http)
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            # The Hub went away after config.json came (from the cache or the Hub): use what is cached.
    return folder


def check_reachable(repo_id: str, revision, settings: "HubSettings") -> str | None:
    """None when the Hub answers a HEAD of repo_id's config.json; else why it did not ("connection refused").

    One request with huggingface_hub's own get_hf_file_metadata, without retries and waiting at most
    settings.timeout. An answer that says no (no such repository, revision or file; a gated
    repository) raises huggingface_hub's error, which hub_errors turns into minibert's.
    """
    import huggingface_hub as hf
    from huggingface_hub import errors as hf_errors

    url = hf.hf_hub_url(repo_id, "config.json", revision=revision, endpoint=settings.endpoint)
    try:
        hf.get_hf_file_metadata(url, token=settings.token, timeout=settings.timeout, endpoint=settings.endpoint,
                                retry_on_errors=False)
    except hf_errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status is not None and (status == 429 or status >= 500):
            return f"HTTP {status}"
        raise
    except Exception as exc:
        if not is_connection_error(exc):
            raise
        return _why_unreachable(exc, settings.timeout)
    return None


def cached_snapshot(repo_id: str, revision, settings: "HubSettings", why: str, local_path: Path | None) -> Path:
    """The cached snapshot of repo_id at revision, when the Hub gave no answer (`why`); else NotCachedError."""
    import huggingface_hub as hf
    from huggingface_hub import errors as hf_errors

    try:
        config = hf.hf_hub_download(repo_id, "config.json", revision=revision, cache_dir=settings.cache_dir,
                                    local_files_only=True)
    except hf_errors.LocalEntryNotFoundError:
        at = f" at revision {revision}" if revision else ""
        local = f"no such model directory {local_path}, and " if local_path is not None else ""
        raise NotCachedError(
            f"{local}the HuggingFace Hub at {settings.endpoint} is unreachable ({why}) for the Hub id {repo_id}{at}, "
            f"which the HuggingFace cache {settings.cache_dir} does not hold; download it once where the Hub is "
            "reachable (then "
            "HF_HUB_OFFLINE=1 uses the cache alone, without trying the Hub), set HF_ENDPOINT to a mirror, or give "
            "a local model directory") from None
    return Path(config).parent


def _why_unreachable(exc: BaseException, timeout: float) -> str:
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "ConnectTimeout" in names:
        return f"no connection within {timeout:g} s"
    if names & {"ReadTimeout", "TimeoutException"} or isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    text = _first_line(exc)
    return "connection refused" if "Connection refused" in text else text


class HubSettings:
    """The Hub settings of one call, read from the arguments and the environment at call time."""

    def __init__(self, endpoint: str, token, cache_dir: Path, offline: bool, timeout: float = DEFAULT_TIMEOUT):
        self.endpoint, self.token, self.cache_dir, self.offline = endpoint, token, cache_dir, offline
        self.timeout = timeout   # seconds to wait for the answer to a metadata request (HEAD, file list)
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
        timeout = os.environ.get("HF_HUB_ETAG_TIMEOUT", "").strip()
        try:
            timeout = float(timeout) if timeout else DEFAULT_TIMEOUT
        except ValueError:
            raise ConfigError(f"HF_HUB_ETAG_TIMEOUT must be a number of seconds, found {timeout!r}") from None
        if not timeout > 0:
            raise ConfigError(f"HF_HUB_ETAG_TIMEOUT must be a positive number of seconds, found {timeout!r}")
        return cls(endpoint, token, cache_dir.expanduser(), offline, timeout)


def _true(value) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _read_json(path, name: str, where: str):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FetchError(f"{where}: {name} is not valid JSON: {exc}") from None


@contextmanager
def hub_output(show_progress: bool | None):
    """What huggingface_hub writes to stderr while the block runs: its progress bars hidden when
    `show_progress` is False, and its log lines (retry warnings) unless HF_HUB_VERBOSITY asks for them:
    minibert reports a failure itself, in one line."""
    from huggingface_hub.utils import logging as hf_logging

    quiet = not os.environ.get("HF_HUB_VERBOSITY")
    level = hf_logging.get_verbosity()
    if quiet:
        hf_logging.set_verbosity(max(level, hf_logging.ERROR))
    try:
        with progress_bars(show_progress):
            yield
    finally:
        if quiet:
            hf_logging.set_verbosity(level)


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
        names & {"ConnectError", "TimeoutException", "NetworkError", "ConnectTimeout", "ReadTimeout",
                 "RemoteProtocolError"})


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
                raise RepoNotFoundError(f"{local}{repo_id}{at} on {settings.endpoint} has no config.json, so it is "
                                        "not a transformers model") from None
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
    special_tokens_map.json, a decoder's chat_template.jinja); sentence-transformers' modules.json, sentence_bert_config.json,
    config_sentence_transformers.json and each module's config.json and weights (model.safetensors,
    else pytorch_model.bin: a Dense's or a LayerNorm's; a LogitScore's config.json holds its token ids); the weights
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
