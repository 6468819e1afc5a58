"""Model folders on the Hugging Face Hub: `hf://OWNER/NAME[@REVISION]` (or `hf:OWNER/NAME`) resolved to a
folder in the Hub's cache, and a folder uploaded to a repo. The only network traffic seglab makes, and only
when the user names a Hub id; HF_HUB_OFFLINE=1 reads the cache alone (read at each call, so it applies
whenever it is set). Needs `huggingface_hub` (installed with timm; `pip install huggingface_hub` otherwise)."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import SeglabError, brief
from .model_folder import FILES

PREFIXES = ("hf://", "hf:")
_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_TRUE = {"1", "true", "yes", "on"}


def hub_id(ref: Union[str, Path]) -> Optional[tuple[str, Optional[str]]]:
    """(OWNER/NAME, revision or None) when `ref` names a Hub model (`hf://OWNER/NAME[@REV]`), else None."""
    if not isinstance(ref, str):
        return None
    for prefix in PREFIXES:
        if ref.startswith(prefix):
            repo, _, revision = ref[len(prefix):].partition("@")
            if not _REPO.fullmatch(repo):
                raise SeglabError(f"{ref}: a Hub model is named hf://OWNER/NAME (optionally @REVISION), got {repo!r}")
            return repo, revision or None
    return None


def cache_dir() -> Path:
    """Where the Hub's cache is, by the variables huggingface_hub reads: HF_HUB_CACHE, else HF_HOME/hub,
    else ~/.cache/huggingface/hub (XDG_CACHE_HOME moves ~/.cache)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def offline() -> bool:
    """Whether HF_HUB_OFFLINE asks for the cache alone (read now, not when huggingface_hub was imported)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise SeglabError("hf:// model ids need huggingface_hub: pip install huggingface_hub") from None
    return huggingface_hub


def resolve_model(ref: Union[str, Path]) -> Path:
    """The local path of a model reference: a Hub id's folder in the cache (downloaded when online and not
    cached), any other reference as a Path."""
    named = hub_id(ref)
    if named is None:
        return Path(ref)
    repo, revision = named
    hub = _hub()
    cache = cache_dir()
    where = f"{ref}: not in the Hugging Face cache at {cache}"
    try:
        folder = hub.snapshot_download(repo, revision=revision, cache_dir=str(cache), allow_patterns=list(FILES),
                                       local_files_only=offline(), library_name="seglab")
    except hub.errors.LocalEntryNotFoundError:
        raise SeglabError(f"{where} (HF_HUB_OFFLINE=1); download it once online (unset HF_HUB_OFFLINE, or "
                          f"`hf download {repo}`) or point HF_HOME at the cache that holds it") from None
    except hub.errors.RepositoryNotFoundError:
        raise SeglabError(f"{ref}: no such model repository on the Hub (or it is private: log in with `hf auth login`)") from None
    except hub.errors.RevisionNotFoundError:
        raise SeglabError(f"{ref}: the repository has no revision {revision!r}") from None
    except (hub.errors.HfHubHTTPError, OSError, ValueError) as exc:
        raise SeglabError(f"{where}, and fetching it failed ({brief(exc)}); with no network, set HF_HUB_OFFLINE=1 "
                          "to read the cache alone") from None
    return Path(folder)


def push_folder(folder: Path, repo: str, private: bool = False) -> str:
    """Upload a model folder to the Hub repo OWNER/NAME (created when absent); its URL."""
    if not _REPO.fullmatch(repo):
        raise SeglabError(f"--push-to-hub {repo}: expected OWNER/NAME")
    if offline():
        raise SeglabError(f"--push-to-hub {repo}: HF_HUB_OFFLINE is set; unset it to upload")
    hub = _hub()
    api = hub.HfApi(library_name="seglab")
    try:
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo, folder_path=str(folder), repo_type="model",
                                 commit_message="Upload a seglab model folder")
    except hub.errors.LocalTokenNotFoundError:
        raise SeglabError(f"--push-to-hub {repo}: not logged in to the Hub; run `hf auth login` or set HF_TOKEN") from None
    except (hub.errors.HfHubHTTPError, OSError, ValueError) as exc:
        raise SeglabError(f"--push-to-hub {repo}: the upload failed ({brief(exc)})") from None
    return str(getattr(info, "commit_url", None) or f"https://huggingface.co/{repo}")
