"""How a run uses W&B, decided once before any work: "online", "offline" or "disabled".

Modes, first match wins (`resolve_mode`):
    1. `enabled=False` -> "disabled";
    2. the `mode` argument ("online", "offline", "disabled"; wandb's "dryrun" means offline);
    3. the `WANDB_MODE` environment variable (`WANDB_DISABLED=true` also disables);
    4. "online" when an API key is available (`WANDB_API_KEY`, or a netrc entry for the W&B host
       of `WANDB_BASE_URL`, https://api.wandb.ai by default), otherwise "offline".
Scripts pass their mode through `check_mode` before any work: it refuses an online mode that could not
start (no key, or a server that does not answer or rejects the key: one request, `SERVER_TIMEOUT`
seconds at most, instead of wandb.init's 90 s of retries after the work), and turns an online mode
that was only inferred from a stored key into offline, with a warning, when the server cannot be used.

May import only the standard library.
"""

from __future__ import annotations

import base64
import json
import logging
import netrc
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

Mode = Literal["online", "offline", "disabled"]

DEFAULT_BASE_URL = "https://api.wandb.ai"
SERVER_TIMEOUT = 10.0  # seconds for the server check's one request (wandb's own login check uses 10)
_MODE_ALIASES: dict[str, Mode] = {
    "online": "online",
    "run": "online",
    "offline": "offline",
    "dryrun": "offline",
    "disabled": "disabled",
}
_TRUE = ("1", "true", "yes", "on")


def _netrc_path(environ: Mapping[str, str]) -> Path:
    """Where wandb (and curl) look for the netrc file: `NETRC`, else ~/.netrc."""
    if environ.get("NETRC"):
        return Path(environ["NETRC"]).expanduser()
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".netrc"


def _base_url(environ: Mapping[str, str]) -> str:
    """The W&B server wandb would use: `WANDB_BASE_URL`, else api.wandb.ai."""
    return (environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def _api_key(environ: Mapping[str, str]) -> str | None:
    """The key wandb would log in with: `WANDB_API_KEY`, else the netrc password for the W&B host."""
    key = environ.get("WANDB_API_KEY", "").strip()
    if key:
        return key
    host = urlsplit(_base_url(environ)).netloc
    if not host:
        return None
    try:
        entry = netrc.netrc(str(_netrc_path(environ))).authenticators(host)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return None
    return entry[2] if entry and entry[2] else None


def has_api_key(environ: Mapping[str, str] | None = None) -> bool:
    """Whether an online run could authenticate without a prompt.

    True when `WANDB_API_KEY` is set or the netrc file has a password for the W&B host
    (`WANDB_BASE_URL`, default api.wandb.ai). The key is not checked against the server:
    that would need the network, which this decision must not touch (`server_problem` does).
    """
    return _api_key(os.environ if environ is None else environ) is not None


def resolve_mode(
    mode: str | None = None,
    *,
    enabled: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Mode:
    """Decide once how W&B is used: "online", "offline" or "disabled" (order in the module doc).

    Offline is the default so that nothing ever waits on the network or a login prompt; a
    logged-in user gets online runs without having to ask for them.
    """
    env = os.environ if environ is None else environ
    if not enabled:
        return "disabled"
    if mode is None:
        if env.get("WANDB_DISABLED", "").strip().lower() in _TRUE:
            return "disabled"
        mode = env.get("WANDB_MODE", "").strip() or None
        source = "WANDB_MODE"
    else:
        source = "mode"
    if mode is None:
        return "online" if has_api_key(env) else "offline"
    try:
        return _MODE_ALIASES[mode.lower()]
    except KeyError:
        raise ValueError(
            f"Unknown W&B mode {mode!r} (from {source}); use 'online', 'offline' or 'disabled'."
        ) from None


def server_problem(environ: Mapping[str, str] | None = None, timeout: float = SERVER_TIMEOUT) -> str | None:
    """Why an online run could not start now, in words; None when the W&B server answers and knows the key.

    One GraphQL `viewer` request (what wandb's own login check asks), through urllib, so the usual
    proxy variables (HTTPS_PROXY, NO_PROXY) and SSL_CERT_FILE apply; `timeout` bounds it all, name
    lookup included. Without it, an unreachable server costs wandb.init's 90 s of retries and a
    traceback, after the work.
    """
    env = os.environ if environ is None else environ
    base = _base_url(env)
    token = base64.b64encode(f"api:{_api_key(env) or ''}".encode()).decode()
    request = urllib.request.Request(
        f"{base}/graphql",
        data=json.dumps({"query": "query Viewer { viewer { id } }"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
        method="POST",
    )
    answers: list[str | None] = []
    asking = threading.Thread(
        target=lambda: answers.append(_viewer_problem(request, base, timeout)), daemon=True
    )
    asking.start()
    asking.join(timeout)  # a name lookup is not bound by the socket's timeout
    if not answers:
        return f"the W&B server {base} could not be reached (no answer within {timeout:g} s)"
    return answers[0]


def _viewer_problem(request: urllib.request.Request, base: str, timeout: float) -> str | None:
    """`server_problem`'s request to the server at `base`, and the reading of its answer."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            return f"the W&B server {base} rejected the API key (HTTP {error.code})"
        return f"the W&B server {base} answered HTTP {error.code} ({error.reason})"
    except OSError as error:  # URLError (refused, unknown host, ...) or a timeout while reading
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError):
            reason = f"no answer within {timeout:g} s"
        return f"the W&B server {base} could not be reached ({reason})"
    try:
        viewer = json.loads(body)["data"]["viewer"]
    except (ValueError, KeyError, TypeError):
        return f"{base} did not answer as a W&B server"
    return None if viewer else f"the W&B server {base} knows no user for the API key"


def check_mode(
    mode: str | None = None, environ: Mapping[str, str] | None = None, *, timeout: float = SERVER_TIMEOUT
) -> Mode:
    """The W&B mode a script should run in, checked before its work: wandb would fail (or prompt, or
    retry for 90 s) only once the run starts, after the work.

    An online mode that was asked for (`mode`, or WANDB_MODE) is refused with a ValueError that says
    what to do when there is no API key, or when the server does not answer or rejects the key: a run
    asked to be online must not silently stay on this machine. An online mode that was only inferred
    from a stored key becomes offline in that case, with a warning that says why and how to upload.
    """
    env = os.environ if environ is None else environ
    resolved = resolve_mode(mode, environ=env)
    if resolved != "online":
        return resolved
    if not has_api_key(env):
        raise ValueError(
            "W&B online mode needs an API key and none was found (WANDB_API_KEY, or a netrc entry "
            "written by `wandb login`); log in, or use --wandb offline and upload later with `wandb sync`."
        )
    problem = server_problem(env, timeout)
    if problem is None:
        return "online"
    if mode is not None or env.get("WANDB_MODE", "").strip():
        raise ValueError(
            f"W&B online mode cannot start: {problem}. Nothing was run. Check the network (and "
            "WANDB_BASE_URL) or the key (`wandb login --relogin`), or use --wandb offline and upload the "
            "run later with `wandb sync <run folder>/wandb/offline-run-*`."
        )
    logger.warning(
        "W&B: an API key was found, so this run would be online, but %s; it is recorded offline instead "
        "(upload it later with `wandb sync <run folder>/wandb/offline-run-*`; --wandb online makes this "
        "an error, --wandb offline silences it).",
        problem,
    )
    return "offline"
