"""Cloud providers (EC2, GCE, OpenStack, DigitalOcean, Azure ARM, Linode) behind Loom's
``Machines`` contract, through Apache Libcloud.

Why this shape:

* Credentials AND endpoints come only from an Airflow Connection (plain ``ConnectionInfo`` here;
  the Airflow adapter fills it), never from template files: a provider file names the Connection
  and carries only non-secret ``options`` (zone, subnet, security groups...).
* Machines are found again by a deterministic name plus Loom's cluster-id tag, so a retried task
  finds what an earlier try made instead of paying for a second machine.
* Every cloud call goes through ``guarded_call``: throttling and 5xx/connection errors are retried
  with exponential backoff and jitter; refused credentials fail at once with a message naming the
  Connection to fix; no message or log line ever contains a Connection secret.
* Libcloud is imported inside functions (no Airflow, no libcloud at import time).

Connection fields per driver (``CONNECTION_FIELDS`` holds the same table as data)::

  ec2          login=access key id -> key; password=secret access key -> secret;
               extra.region|region_name (default us-east-1) -> region;
               extra.session_token -> token; host (or extra.endpoint_url, may be a URL) -> host;
               port -> port; extra.secure (default true) -> secure;
               extra.signature_version (default "4") -> signature_version.
               A custom host (moto, a private endpoint) also switches on a response shim that
               accepts the EC2 XML namespace without its trailing slash (moto's) and moto's
               error documents; real EC2 (no host) uses libcloud's driver untouched.
  gce          login=service-account email -> user_id; extra.key|keyfile_dict (JSON key content)
               or extra.key_path (file) -> key; extra.project|project_id -> project;
               extra.zone -> datacenter; auth_type "SA".
  openstack    login -> key (user name); password -> secret; host (+port, extra.secure) -> the
               Keystone URL ex_force_auth_url (a trailing /v3 or /v2.0 is dropped: libcloud adds
               it); extra.tenant|project -> ex_tenant_name; extra.auth_version (default
               "3.x_password") -> ex_force_auth_version; extra.domain (default "Default") ->
               ex_domain_name; extra.project_domain_id (default "default") -> ex_tenant_domain_id;
               extra.region -> ex_force_service_region; api_version "2.0".
  digitalocean password=API token -> key; api_version "v2".
  azure_arm    extra.tenant_id -> tenant_id; extra.subscription_id -> subscription_id;
               login=client (application) id -> key; password=client secret -> secret;
               extra.cloud_environment (optional, e.g. AzureChinaCloud) -> cloud_environment.
  linode       password=API token -> key; api_version "4.0".
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from secrets import token_urlsafe
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache, partial
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from loom.errors import LoomError, ProviderError
from loom.providers.base import (
    ERROR,
    PENDING,
    RUNNING,
    STOPPED,
    TAG_CLUSTER_ID,
    TERMINATED,
    UNKNOWN,
    Machine,
    MachineRequest,
)

if TYPE_CHECKING:
    from libcloud.compute.base import Node, NodeDriver

log = logging.getLogger(__name__)
T = TypeVar("T")

CLOUD_DRIVERS: tuple[str, ...] = ("ec2", "gce", "openstack", "digitalocean", "azure_arm", "linode")

# (Connection field, driver argument, what it is; "required" marks the ones that must be set)
CONNECTION_FIELDS: dict[str, list[tuple[str, str, str]]] = {
    "ec2": [
        ("login", "key", "access key id (required)"),
        ("password", "secret", "secret access key (required)"),
        ("extra.region / extra.region_name", "region", "region, default us-east-1"),
        ("extra.session_token", "token", "STS session token (optional)"),
        ("host / extra.endpoint_url", "host", "custom endpoint, e.g. moto or a private endpoint"),
        ("port", "port", "custom endpoint port"),
        ("extra.secure", "secure", "false for a plain-HTTP endpoint; default true"),
        ("extra.signature_version", "signature_version", "default \"4\""),
    ],
    "gce": [
        ("login", "user_id", "service-account email (required)"),
        ("extra.key / extra.keyfile_dict", "key", "JSON key content (or extra.key_path)"),
        ("extra.key_path", "key", "path of the JSON key file on the workers"),
        ("extra.project / extra.project_id", "project", "project id (required)"),
        ("extra.zone", "datacenter", "default zone"),
    ],
    "openstack": [
        ("login", "key", "user name (required)"),
        ("password", "secret", "password (required)"),
        ("host (+ port, extra.secure)", "ex_force_auth_url", "Keystone URL (required)"),
        ("extra.tenant / extra.project", "ex_tenant_name", "project (tenant) name (required)"),
        ("extra.auth_version", "ex_force_auth_version", "default \"3.x_password\""),
        ("extra.domain", "ex_domain_name", "user domain, default \"Default\""),
        ("extra.project_domain_id", "ex_tenant_domain_id", "project domain id, default \"default\""),
        ("extra.region", "ex_force_service_region", "region (optional)"),
    ],
    "digitalocean": [("password", "key", "API token (required); api_version v2")],
    "azure_arm": [
        ("extra.tenant_id", "tenant_id", "directory (tenant) id (required)"),
        ("extra.subscription_id", "subscription_id", "subscription id (required)"),
        ("login", "key", "client (application) id (required)"),
        ("password", "secret", "client secret (required)"),
        ("extra.cloud_environment", "cloud_environment", "optional, e.g. AzureChinaCloud"),
    ],
    "linode": [("password", "key", "API token (required); api_version 4.0")],
}

# Non-secret per-provider options a provider file may set (``Provider.options``).
KNOWN_OPTIONS: dict[str, frozenset[str]] = {
    "ec2": frozenset({"security_groups", "security_group_ids", "subnet", "availability_zone",
                      "assign_public_ip", "iam_profile", "placement_group"}),
    "gce": frozenset({"zone", "network", "subnetwork", "network_tags", "disk_size", "disk_type",
                      "preemptible", "external_ip"}),
    "openstack": frozenset({"networks", "security_groups", "availability_zone", "config_drive"}),
    "digitalocean": frozenset({"region", "private_networking", "ipv6", "backups"}),
    "azure_arm": frozenset({"resource_group", "location", "network", "subnet", "storage_account",
                            "storage_account_type", "disk_size", "os_disk_delete"}),
    "linode": frozenset({"region", "private_ip"}),
}

# Options a driver cannot do without: (option, what it is).
REQUIRED_OPTIONS: dict[str, list[tuple[str, str]]] = {
    "digitalocean": [("region", "the region slug, e.g. nyc3")],
    "linode": [("region", "the region id, e.g. us-east")],
    "azure_arm": [("resource_group", "the resource group"), ("location", "the Azure region, e.g. westeurope"),
                  ("network", "the virtual network")],
}

_SECRET_WORDS = ("secret", "password", "passwd", "token", "private", "credential", "keyfile")
_AUTH_CODES = ("AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "UnauthorizedOperation",
               "UnrecognizedClientException", "InvalidAccessKeyId")
_THROTTLE_CODES = ("RequestLimitExceeded", "Throttling", "TooManyRequests", "RateLimitExceeded",
                   "ServiceUnavailable", "InternalError")
_MAX_NAME = 63
_LINODE_TAG_MAX = 50


# --- Connection data --------------------------------------------------------------------------
def _is_secret_key(name: str) -> bool:
    low = name.lower()
    return low == "key" or low.endswith("_key") or any(word in low for word in _SECRET_WORDS)


@dataclass(frozen=True, repr=False)
class ConnectionInfo:
    """The fields of an Airflow Connection, as plain data (filled by the Airflow adapter)."""

    conn_id: str
    conn_type: str | None = None
    login: str | None = None
    password: str | None = None
    host: str | None = None
    port: int | None = None
    schema: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    def __repr__(self) -> str:
        extra = {k: ("***" if _is_secret_key(k) else v) for k, v in self.extra.items()}
        password = "***" if self.password else None
        return (
            f"ConnectionInfo(conn_id={self.conn_id!r}, conn_type={self.conn_type!r}, "
            f"login={self.login!r}, password={password}, host={self.host!r}, port={self.port!r}, "
            f"schema={self.schema!r}, extra={extra!r})"
        )

    __str__ = __repr__

    def secrets(self) -> list[str]:
        """Every secret value this Connection holds, to scrub from messages."""
        found = [self.password] if self.password else []
        for key, value in self.extra.items():
            if _is_secret_key(key):
                found.extend(_strings_in(value))
        return [s for s in found if len(s) >= 4]


def _strings_in(value: Any) -> list[str]:
    """The strings of a secret value; of a JSON key (string or dict) also its secret parts."""
    if isinstance(value, dict):
        return [s for k, v in value.items() if _is_secret_key(str(k)) for s in _strings_in(v)]
    if not isinstance(value, str):
        return []
    try:
        parsed = json.loads(value)
    except ValueError:
        return [value]
    return [value, *_strings_in(parsed)] if isinstance(parsed, dict) else [value]


# --- retrying wrapper -------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """How long a throttled or unavailable cloud is retried before the task fails."""

    attempts: int = 5
    first_wait: float = 1.0  # seconds; doubles per try (with full jitter)
    max_wait: float = 30.0  # cap of one wait
    budget: float = 120.0  # cap of the total time spent in one call


@dataclass(frozen=True)
class CallContext:
    """Who is calling (for messages) and how to retry; ``secrets`` are scrubbed from messages."""

    provider: str
    conn_id: str | None
    policy: RetryPolicy = RetryPolicy()
    secrets: tuple[str, ...] = ()


def _scrub(text: str, hidden: Iterable[str]) -> str:
    for value in sorted(hidden, key=len, reverse=True):
        text = text.replace(value, "***")
    return text


def _reason(exc: BaseException, hidden: Iterable[str]) -> str:
    text = str(exc).strip() or type(exc).__name__
    text = _scrub(" ".join(text.split()), hidden)
    return text[:300] + ("..." if len(text) > 300 else "")


def classify(exc: BaseException) -> str:
    """'auth' (refused credentials), 'transient' (throttled, 5xx, network) or 'other'."""
    from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
    from libcloud.common.types import InvalidCredsError
    from libcloud.common.types import ProviderError as LibcloudProviderError

    if isinstance(exc, InvalidCredsError) or _is_google_auth_error(exc):
        return "auth"
    code: Any = None
    if isinstance(exc, BaseHTTPError):
        code = exc.code
    elif isinstance(exc, LibcloudProviderError):
        code = exc.http_code
    text = str(exc)
    if code in (401, 403) or any(c in text for c in _AUTH_CODES):
        return "auth"
    if isinstance(exc, RateLimitReachedError) or code == 429:
        return "transient"
    if isinstance(code, int) and code >= 500:
        return "transient"
    if any(c in text for c in _THROTTLE_CODES):
        return "transient"
    if _is_network_error(exc):
        return "transient"
    return "other"


def _is_google_auth_error(exc: BaseException) -> bool:
    try:
        from libcloud.common.google import GoogleAuthError
    except ImportError:  # pragma: no cover - part of libcloud
        return False
    return isinstance(exc, GoogleAuthError)


def _is_network_error(exc: BaseException) -> bool:
    import requests

    return isinstance(
        exc, (ConnectionError, TimeoutError, requests.ConnectionError, requests.Timeout)
    )


def _wait(policy: RetryPolicy) -> Callable[[Any], float]:
    """Full-jitter exponential backoff, stretched to a cloud's Retry-After when it gives one."""
    from tenacity import wait_random_exponential

    base = wait_random_exponential(multiplier=policy.first_wait, max=policy.max_wait)

    def wait(state: Any) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hint = float(getattr(exc, "retry_after", 0) or 0)
        return min(max(base(state), hint), policy.max_wait)

    return wait


def guarded_call(ctx: CallContext, operation: str, target: str | None, fn: Callable[[], T]) -> T:
    """Run one cloud call: retry throttling/5xx/network errors, turn everything else into a
    ``ProviderError`` that names the provider, the operation and the machine (never a secret)."""
    from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay

    policy = ctx.policy
    what = f"{operation} {target!r}" if target else operation

    def before_sleep(state: Any) -> None:
        exc = state.outcome.exception()
        log.warning(
            "provider %r: %s: try %d failed (%s); retrying", ctx.provider, what,
            state.attempt_number, _reason(exc, ctx.secrets),
        )

    retrying = Retrying(
        retry=retry_if_exception(lambda e: not isinstance(e, LoomError) and classify(e) == "transient"),
        stop=stop_after_attempt(max(1, policy.attempts)) | stop_after_delay(policy.budget),
        wait=_wait(policy),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return retrying(fn)
    except LoomError:
        raise
    except Exception as exc:  # noqa: BLE001 - every cloud failure becomes one actionable error
        raise _provider_error(ctx, what, exc, retrying.statistics.get("attempt_number", 1)) from exc


def _provider_error(ctx: CallContext, what: str, exc: BaseException, tries: int) -> ProviderError:
    reason = _reason(exc, ctx.secrets)
    kind = classify(exc)
    if kind == "auth":
        return ProviderError(
            f"provider {ctx.provider!r}: the cloud refused the credentials: check Airflow "
            f"Connection {ctx.conn_id!r} ({reason})"
        )
    if kind == "transient":
        return ProviderError(
            f"provider {ctx.provider!r}: {what}: the cloud is throttling or unavailable; gave up "
            f"after {tries} tries ({reason}); retry the task later"
        )
    return ProviderError(f"provider {ctx.provider!r}: {what} failed: {reason}")


# --- driver construction ----------------------------------------------------------------------
def _flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(value)


def _need(provider: str, conn: ConnectionInfo, driver_name: str, value: Any, label: str, what: str) -> Any:
    if value in (None, "", {}):
        raise ProviderError(
            f"provider {provider!r}: Airflow Connection {conn.conn_id!r} has no {label} "
            f"(needed by driver {driver_name} as {what})"
        )
    return value


def _first(extra: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if extra.get(name) not in (None, ""):
            return extra[name]
    return None


def _endpoint(conn: ConnectionInfo) -> tuple[str | None, int | None, bool | None]:
    """(host, port, secure-from-scheme) from the Connection's host, which may be a full URL."""
    raw = conn.host or conn.extra.get("endpoint_url")
    port = int(conn.port) if conn.port else None
    if not raw:
        return None, port, None
    if "://" in raw:
        url = urlsplit(raw)
        return url.hostname, url.port or port, url.scheme == "https"
    return raw, port, None


def _openstack_auth_url(conn: ConnectionInfo) -> str | None:
    raw = conn.host
    if not raw:
        return None
    if "://" not in raw:
        scheme = "https" if _flag(conn.extra.get("secure"), True) else "http"
        raw = f"{scheme}://{raw}" + (f":{conn.port}" if conn.port else "")
    elif conn.port and urlsplit(raw).port is None:
        url = urlsplit(raw)
        raw = url._replace(netloc=f"{url.netloc}:{conn.port}").geturl()
    return re.sub(r"/(v3|v2\.0)/?$", "", raw.rstrip("/"))


def driver_args(provider_name: str, driver_name: str, conn: ConnectionInfo) -> tuple[list[Any], dict[str, Any]]:
    """The positional and keyword arguments of the driver's constructor, from the Connection only
    (no network: ``driver_for`` builds the driver, which for GCE and Azure fetches a token)."""
    check_driver(provider_name, driver_name)
    need = partial(_need, provider_name, conn, driver_name)
    return _ARG_BUILDERS[driver_name](conn, need)


Need = Callable[[Any, str, str], Any]


def _ec2_args(conn: ConnectionInfo, need: Need) -> tuple[list[Any], dict[str, Any]]:
    x = conn.extra
    host, port, scheme_secure = _endpoint(conn)
    kwargs: dict[str, Any] = {
        "secret": need(conn.password, "password", "the secret access key"),
        "region": _first(x, "region", "region_name") or "us-east-1",
        "signature_version": str(x.get("signature_version") or "4"),
        "secure": _flag(x.get("secure"), scheme_secure if scheme_secure is not None else True),
    }
    if host:
        kwargs["host"] = host
    if port:
        kwargs["port"] = port
    if x.get("session_token"):
        kwargs["token"] = x["session_token"]
    return [need(conn.login, "login", "the access key id")], kwargs


def _gce_args(conn: ConnectionInfo, need: Need) -> tuple[list[Any], dict[str, Any]]:
    x = conn.extra
    key = _first(x, "key", "keyfile_dict") or x.get("key_path")
    kwargs: dict[str, Any] = {
        "key": need(key, "extra.key or extra.key_path", "the service account's JSON key"),
        "project": need(_first(x, "project", "project_id"), "extra.project", "the project id"),
        "auth_type": "SA",
    }
    if x.get("zone"):
        kwargs["datacenter"] = x["zone"]
    return [need(conn.login, "login", "the service-account email")], kwargs


def _openstack_args(conn: ConnectionInfo, need: Need) -> tuple[list[Any], dict[str, Any]]:
    x = conn.extra
    kwargs: dict[str, Any] = {
        "secret": need(conn.password, "password", "the user's password"),
        "ex_force_auth_url": need(_openstack_auth_url(conn), "host", "the Keystone auth URL"),
        "ex_force_auth_version": x.get("auth_version") or "3.x_password",
        "ex_tenant_name": need(_first(x, "tenant", "project"), "extra.tenant (or extra.project)",
                               "the project (tenant) name"),
        "ex_domain_name": x.get("domain") or "Default",
        "ex_tenant_domain_id": x.get("project_domain_id") or "default",
        "api_version": "2.0",
    }
    if x.get("region"):
        kwargs["ex_force_service_region"] = x["region"]
    return [need(conn.login, "login", "the user name")], kwargs


def _azure_args(conn: ConnectionInfo, need: Need) -> tuple[list[Any], dict[str, Any]]:
    x = conn.extra
    kwargs: dict[str, Any] = {
        "tenant_id": need(x.get("tenant_id"), "extra.tenant_id", "the directory (tenant) id"),
        "subscription_id": need(x.get("subscription_id"), "extra.subscription_id", "the subscription id"),
        "key": need(conn.login, "login", "the client (application) id"),
        "secret": need(conn.password, "password", "the client secret"),
    }
    if x.get("cloud_environment"):
        kwargs["cloud_environment"] = x["cloud_environment"]
    return [], kwargs


def _token_args(api_version: str) -> Callable[[ConnectionInfo, Need], tuple[list[Any], dict[str, Any]]]:
    def build(conn: ConnectionInfo, need: Need) -> tuple[list[Any], dict[str, Any]]:
        return [need(conn.password, "password", "the API token")], {"api_version": api_version}

    return build


_ARG_BUILDERS: dict[str, Callable[[ConnectionInfo, Need], tuple[list[Any], dict[str, Any]]]] = {
    "ec2": _ec2_args,
    "gce": _gce_args,
    "openstack": _openstack_args,
    "digitalocean": _token_args("v2"),
    "azure_arm": _azure_args,
    "linode": _token_args("4.0"),
}


def check_driver(provider_name: str, driver_name: str) -> None:
    if driver_name not in CLOUD_DRIVERS:
        raise ProviderError(
            f"provider {provider_name!r}: driver {driver_name!r} is not supported; supported cloud "
            f"drivers: {', '.join(CLOUD_DRIVERS)} (plus 'local' and 'static')"
        )


def driver_for(
    provider_name: str, driver_name: str, conn: ConnectionInfo, policy: RetryPolicy | None = None
) -> NodeDriver:
    """A libcloud NodeDriver built only from the Connection (see ``CONNECTION_FIELDS``)."""
    args, kwargs = driver_args(provider_name, driver_name, conn)
    cls = _driver_class(driver_name, custom_endpoint=bool(kwargs.get("host")))
    ctx = CallContext(provider_name, conn.conn_id, policy or RetryPolicy(), tuple(conn.secrets()))
    # GCE fetches a token (and the zone) while constructing: same retry and error rules.
    return guarded_call(ctx, f"connect ({driver_name})", None, lambda: cls(*args, **kwargs))


def _driver_class(driver_name: str, custom_endpoint: bool = False) -> Any:
    from libcloud.compute.providers import get_driver

    if driver_name == "ec2" and custom_endpoint:
        return _ec2_endpoint_driver()
    return get_driver(driver_name)  # Loom's driver names are libcloud's provider constants


@cache
def _ec2_endpoint_driver() -> Any:
    """EC2 driver for custom endpoints (moto, private clouds), built once per process.

    Libcloud reads EC2 answers in the namespace ``http://ec2.amazonaws.com/doc/2016-11-15/``
    (module constant ``NAMESPACE``); moto answers without the trailing slash, so every lookup would
    find nothing. Rather than patching the module constant (which would break real EC2 in the same
    process) this driver's responses rewrite moto's namespace to libcloud's, and read error
    documents that carry extra elements (moto's ``<Type>``) instead of crashing on them.
    """
    from libcloud.common.types import InvalidCredsError
    from libcloud.compute.drivers import ec2
    from libcloud.utils.py3 import ET

    loose_ns = ec2.NAMESPACE.rstrip("/")

    class EndpointEC2Response(ec2.EC2Response):
        def parse_body(self) -> Any:
            self.body = self.body.replace(f'xmlns="{loose_ns}"', f'xmlns="{ec2.NAMESPACE}"')
            return super().parse_body()

        def parse_error(self) -> Any:
            try:
                return super().parse_error()
            except ValueError:  # an <Error> with more than Code and Message
                pass
            errors = []
            for err in ET.XML(self.body).iter():
                if err.tag.rsplit("}", 1)[-1] != "Error":
                    continue
                parts = {child.tag.rsplit("}", 1)[-1]: child.text or "" for child in err}
                errors.append((parts.get("Code", ""), parts.get("Message", "")))
            for code, message in errors:
                if code in _AUTH_CODES:
                    raise InvalidCredsError(f"{code}: {message}")
            return "\n".join(f"{code}: {message}" for code, message in errors) or self.body

    class EndpointEC2Connection(ec2.EC2Connection):
        responseCls = EndpointEC2Response

    class EndpointEC2NodeDriver(ec2.EC2NodeDriver):
        connectionCls = EndpointEC2Connection

    return EndpointEC2NodeDriver


# --- names, tags, create arguments ------------------------------------------------------------
def machine_name(req: MachineRequest) -> str:
    """``<hostname>-c<cluster_id>``: valid on every supported cloud (lowercase letters, digits and
    single dashes, starts with a letter, at most 63). The cluster id keeps a re-created cluster of
    the same name clear of the old one's dying machines; a hostname that had to be changed or cut
    to fit gets a short hash of the original so distinct hostnames stay distinct."""
    suffix = f"-c{req.cluster_id}"
    base = re.sub(r"[^a-z0-9]+", "-", req.hostname.lower()).strip("-")
    if not base[:1].isalpha():
        base = f"n-{base}".rstrip("-")
    room = _MAX_NAME - len(suffix)
    if base != req.hostname or len(base) > room:
        digest = hashlib.sha256(req.hostname.encode()).hexdigest()[:8]
        base = f"{base[: room - len(digest) - 1].rstrip('-')}-{digest}"
    return base + suffix


def key_pair_name(req: MachineRequest) -> str:
    """The name of the cluster key imported into clouds that keep key pairs (EC2, OpenStack, DO)."""
    return f"loom-{req.cluster}-{req.cluster_id}"


def _label_safe(value: str) -> str:
    """A GCE label value: lowercase letters, digits, '_' and '-', at most 63."""
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]


def string_tags(tags: Mapping[str, str]) -> list[str]:
    """Tags for clouds whose tags are plain strings (DigitalOcean, Linode): ``key:value``."""
    return [f"{key}:{value}" for key, value in tags.items()]


def parse_string_tags(tags: Iterable[str]) -> dict[str, str]:
    return dict(tag.split(":", 1) for tag in tags if ":" in tag)


def check_options(provider_name: str, driver_name: str, options: Mapping[str, Any]) -> None:
    """Unknown option names (typos, or credentials put in the file) and missing required ones."""
    check_driver(provider_name, driver_name)
    for name, what in REQUIRED_OPTIONS.get(driver_name, []):
        _need_option(provider_name, driver_name, options, name, what)
    unknown = sorted(set(options) - KNOWN_OPTIONS[driver_name])
    if unknown:
        raise ProviderError(
            f"provider {provider_name!r}: unknown option(s) {', '.join(unknown)} for driver "
            f"{driver_name}; known: {', '.join(sorted(KNOWN_OPTIONS[driver_name]))} "
            "(credentials belong in the Airflow Connection, not in options)"
        )


def _need_option(provider_name: str, driver_name: str, options: Mapping[str, Any], name: str, what: str) -> Any:
    value = options.get(name)
    if value in (None, ""):
        raise ProviderError(
            f"provider {provider_name!r}: driver {driver_name} needs the option {name!r} ({what}) "
            "in the provider file's options"
        )
    return value


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def create_kwargs(
    driver_name: str,
    driver: NodeDriver,
    req: MachineRequest,
    options: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The exact keyword arguments of ``driver.create_node`` for this request.

    ``extra`` carries what ``ensure`` learned first: ``key_name`` (EC2/OpenStack key pair name,
    default ``key_pair_name(req)``) and ``ssh_key_id`` (DigitalOcean's id of the imported key).
    Sizes and images are built from ids (no listing call); GCE takes names as strings.
    """
    from libcloud.compute.base import NodeAuthSSHKey, NodeImage, NodeLocation, NodeSize

    check_driver(req.provider, driver_name)
    extra = extra or {}
    name = machine_name(req)
    size = NodeSize(req.flavor, req.flavor, None, None, None, None, driver)
    image = NodeImage(req.image, req.image, driver)
    if driver_name == "ec2":
        return _ec2_kwargs(driver, req, options, name, size, image, extra)
    if driver_name == "openstack":
        return _openstack_kwargs(driver, req, options, name, size, image, extra)
    if driver_name == "gce":
        return _gce_kwargs(req, options, name)
    if driver_name == "digitalocean":
        if "ssh_key_id" not in extra:
            raise ProviderError("digitalocean create_kwargs needs extra['ssh_key_id'] (ensure() imports the key)")
        region = _need_option(req.provider, driver_name, options, "region", "the region slug, e.g. nyc3")
        attrs = {"ssh_keys": [extra["ssh_key_id"]], "tags": string_tags(req.tags)}
        attrs.update({k: bool(options[k]) for k in ("private_networking", "ipv6", "backups") if k in options})
        return {
            "name": name, "size": size, "image": image,
            "location": NodeLocation(region, region, "", driver), "ex_create_attr": attrs,
        }
    if driver_name == "azure_arm":
        return _azure_kwargs(driver, req, options, name, size, NodeAuthSSHKey(req.public_key))
    return _linode_kwargs(driver, req, options, name, size, image)


def _ec2_kwargs(driver: Any, req: MachineRequest, options: Mapping[str, Any], name: str, size: Any,
                image: Any, extra: Mapping[str, Any]) -> dict[str, Any]:
    from libcloud.compute.drivers.ec2 import EC2NetworkSubnet, EC2NodeLocation, ExEC2AvailabilityZone

    kwargs: dict[str, Any] = {
        "name": name, "size": size, "image": image,
        "ex_keyname": extra.get("key_name") or key_pair_name(req),
        "ex_metadata": dict(req.tags),  # instance tags; libcloud adds Name=<name>
    }
    if options.get("security_groups"):
        kwargs["ex_security_groups"] = _as_list(options["security_groups"])
    if options.get("subnet"):
        kwargs["ex_subnet"] = EC2NetworkSubnet(options["subnet"], options["subnet"], "available")
    if options.get("security_group_ids"):
        kwargs["ex_security_group_ids"] = _as_list(options["security_group_ids"])
    if options.get("availability_zone"):
        zone = ExEC2AvailabilityZone(options["availability_zone"], "available", driver.region_name)
        kwargs["location"] = EC2NodeLocation(zone.name, zone.name, "", driver, zone)
    if options.get("assign_public_ip"):
        kwargs["ex_assign_public_ip"] = True
    if options.get("iam_profile"):
        kwargs["ex_iamprofile"] = options["iam_profile"]
    if options.get("placement_group"):
        kwargs["ex_placement_group"] = options["placement_group"]
    return kwargs


def _openstack_kwargs(driver: Any, req: MachineRequest, options: Mapping[str, Any], name: str, size: Any,
                      image: Any, extra: Mapping[str, Any]) -> dict[str, Any]:
    from libcloud.compute.drivers.openstack import OpenStackNetwork, OpenStackSecurityGroup

    kwargs: dict[str, Any] = {
        "name": name, "size": size, "image": image,
        "ex_keyname": extra.get("key_name") or key_pair_name(req),
        "ex_metadata": dict(req.tags),
    }
    if options.get("networks"):
        kwargs["networks"] = [OpenStackNetwork(n, n, None, driver) for n in _as_list(options["networks"])]
    if options.get("security_groups"):
        kwargs["ex_security_groups"] = [
            OpenStackSecurityGroup(None, None, g, "", driver) for g in _as_list(options["security_groups"])
        ]
    if options.get("availability_zone"):
        kwargs["ex_availability_zone"] = options["availability_zone"]
    if "config_drive" in options:
        kwargs["ex_config_drive"] = bool(options["config_drive"])
    return kwargs


def _gce_kwargs(req: MachineRequest, options: Mapping[str, Any], name: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "name": name,
        "size": req.flavor,  # GCE's create_node resolves names itself
        "image": req.image,
        "ex_metadata": {"ssh-keys": f"{req.sshuser}:{req.public_key}"},
        "ex_labels": {key: _label_safe(value) for key, value in req.tags.items()},
    }
    renames = {"zone": "location", "network": "ex_network", "subnetwork": "ex_subnetwork",
               "network_tags": "ex_tags", "disk_size": "ex_disk_size", "disk_type": "ex_disk_type",
               "external_ip": "external_ip"}
    kwargs.update({arg: options[opt] for opt, arg in renames.items() if options.get(opt) is not None})
    if "preemptible" in options:
        kwargs["ex_preemptible"] = bool(options["preemptible"])
    return kwargs


def _azure_image(image: str, driver: Any, location: str) -> Any:
    from libcloud.compute.drivers.azure_arm import AzureComputeGalleryImage, AzureImage

    gallery = re.fullmatch(
        r"/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.Compute/galleries/([^/]+)/images/(.+)",
        image, flags=re.IGNORECASE,
    )
    if gallery:
        return AzureComputeGalleryImage(*gallery.groups(), driver)
    parts = image.split(":")
    if len(parts) != 4:
        raise ProviderError(
            f"azure image {image!r} must be a URN 'publisher:offer:sku:version' "
            "(e.g. Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2:latest) or a gallery image id"
        )
    publisher, offer, sku, version = parts
    return AzureImage(version, sku, offer, publisher, location, driver)


def _azure_kwargs(driver: Any, req: MachineRequest, options: Mapping[str, Any], name: str, size: Any,
                  auth: Any) -> dict[str, Any]:
    from libcloud.compute.base import NodeLocation

    if req.sshuser == "root":
        raise ProviderError(
            f"provider {req.provider!r}: Azure does not allow 'root' as the admin user: set another "
            "sshuser in the image type's providermap"
        )
    location = _need_option(req.provider, "azure_arm", options, "location", "the Azure region, e.g. westeurope")
    kwargs: dict[str, Any] = {
        "name": name, "size": size, "image": _azure_image(req.image, driver, location),
        "auth": auth, "ex_user_name": req.sshuser,
        "ex_resource_group": _need_option(req.provider, "azure_arm", options, "resource_group", "the resource group"),
        "location": NodeLocation(location, location, "", driver),
        "ex_network": _need_option(req.provider, "azure_arm", options, "network", "the virtual network"),
        "ex_tags": dict(req.tags),
        "ex_os_disk_delete": bool(options.get("os_disk_delete", True)),
    }
    if options.get("subnet"):
        kwargs["ex_subnet"] = options["subnet"]
    if options.get("storage_account"):
        kwargs["ex_storage_account"] = options["storage_account"]
    else:
        kwargs["ex_use_managed_disks"] = True
    if options.get("storage_account_type"):
        kwargs["ex_storage_account_type"] = options["storage_account_type"]
    if options.get("disk_size"):
        kwargs["ex_disk_size"] = int(options["disk_size"])
    return kwargs


def _linode_kwargs(driver: Any, req: MachineRequest, options: Mapping[str, Any], name: str, size: Any,
                   image: Any) -> dict[str, Any]:
    from libcloud.compute.base import NodeLocation

    region = _need_option(req.provider, "linode", options, "region", "the region id, e.g. us-east")
    tags = string_tags(req.tags)
    too_long = [t for t in tags if len(t) > _LINODE_TAG_MAX]
    if too_long:
        raise ProviderError(
            f"provider {req.provider!r}: Linode tags are limited to {_LINODE_TAG_MAX} characters "
            f"({too_long[0]!r}): use a shorter cluster name"
        )
    return {
        "name": name, "size": size, "image": image,
        "location": NodeLocation(region, region, "", driver),
        # Linode v4 takes keys, not NodeAuthSSHKey, and insists on a root password with an image:
        # a random one nobody keeps (logins use the cluster key).
        "ex_authorized_keys": [req.public_key],
        "root_pass": token_urlsafe(24) + "aA1!",
        "ex_tags": tags,
        "ex_private_ip": bool(options.get("private_ip", False)),
    }


# --- reading nodes back -----------------------------------------------------------------------
def machine_state(state: Any) -> str:
    """libcloud NodeState -> base state."""
    from libcloud.compute.types import NodeState

    table = {
        NodeState.RUNNING: RUNNING, NodeState.PENDING: PENDING, NodeState.STARTING: PENDING,
        NodeState.REBOOTING: PENDING, NodeState.RECONFIGURING: PENDING, NodeState.MIGRATING: PENDING,
        NodeState.UPDATING: PENDING, NodeState.STOPPED: STOPPED, NodeState.STOPPING: STOPPED,
        NodeState.SUSPENDED: STOPPED, NodeState.PAUSED: STOPPED, NodeState.TERMINATED: TERMINATED,
        NodeState.ERROR: ERROR,
    }
    return table.get(state, UNKNOWN)


def node_tags(driver_name: str, node: Node) -> dict[str, str]:
    """Loom's tags on a node, from wherever its cloud keeps them."""
    extra = node.extra or {}
    if driver_name in ("digitalocean", "linode"):
        raw: Any = parse_string_tags(extra.get("tags") or [])
    elif driver_name == "gce":
        raw = extra.get("labels") or {}
    elif driver_name == "openstack":
        raw = extra.get("metadata") or {}
    else:  # ec2, azure_arm
        raw = extra.get("tags") or {}
    return {str(k): str(v) for k, v in raw.items() if str(k).startswith("loom-")}


def to_machine(driver_name: str, node: Node) -> Machine:
    ips = [ip for ip in (node.public_ips or []) + (node.private_ips or []) if ip]
    return Machine(
        id=str(node.id), name=node.name, state=machine_state(node.state),
        ip=ips[0] if ips else None, tags=node_tags(driver_name, node),
    )


# --- the Machines implementation --------------------------------------------------------------
_EC2_LIVE = ["pending", "running", "stopping", "stopped"]


class CloudMachines:
    """A cloud provider's machines (``loom.providers.base.Machines``) through one libcloud driver."""

    def __init__(
        self,
        provider: str,
        driver_name: str,
        conn_id: str | None,
        driver: NodeDriver,
        options: Mapping[str, Any] | None = None,
        *,
        policy: RetryPolicy | None = None,
        secrets: Iterable[str] = (),
    ):
        options = dict(options or {})
        check_options(provider, driver_name, options)
        self.provider = provider
        self.driver_name = driver_name
        self.driver = driver
        self.options = options
        hidden = tuple(secrets) or tuple(driver_secrets(driver_name, driver))
        self.ctx = CallContext(provider, conn_id, policy or RetryPolicy(), hidden)

    # -- contract ------------------------------------------------------------------------------
    def ensure(self, req: MachineRequest) -> Machine:
        name = machine_name(req)
        found = self._call("find", name, lambda: self._live(req))
        if found:
            log.info("provider %r: %s already exists (%s); reusing it", self.provider, name, found[0].id)
            return to_machine(self.driver_name, found[0])
        kwargs = create_kwargs(self.driver_name, self.driver, req, self.options, self._prepare_key(req))
        tries = 0

        def create() -> Node:
            nonlocal tries
            tries += 1
            if tries > 1:  # an earlier try may have made it before failing: never make two
                again = self._live(req)
                if again:
                    return again[0]
            return self.driver.create_node(**kwargs)

        node = self._call("create", name, create)
        log.info("provider %r: created %s (%s)", self.provider, name, node.id)
        return to_machine(self.driver_name, node)

    def get(self, req: MachineRequest) -> Machine | None:
        """The live machine of the request; else a terminated one the cloud still lists; else None."""
        name = machine_name(req)
        nodes = self._call("find", name, lambda: self._named(req, live_only=False))
        nodes.sort(key=lambda n: machine_state(n.state) == TERMINATED)
        return to_machine(self.driver_name, nodes[0]) if nodes else None

    def destroy(self, req: MachineRequest) -> bool:
        name = machine_name(req)
        nodes = self._call("find", name, lambda: self._live(req))
        for node in nodes:
            self._call("destroy", name, lambda node=node: self._destroy_node(node))
            log.info("provider %r: destroyed %s (%s)", self.provider, name, node.id)
        self._forget_key_if_unused(req, {n.id for n in nodes})
        return bool(nodes)

    def owned(self) -> list[Machine]:
        """Every non-terminated machine carrying Loom's cluster-id tag."""
        nodes = self._call("list", None, lambda: self._list(tagged=True))
        return [
            to_machine(self.driver_name, n) for n in nodes
            if TAG_CLUSTER_ID in node_tags(self.driver_name, n) and machine_state(n.state) != TERMINATED
        ]

    # -- internals (unguarded: always called inside ``_call``) -----------------------------------
    def _call(self, operation: str, target: str | None, fn: Callable[[], T]) -> T:
        return guarded_call(self.ctx, operation, target, fn)

    def _list(self, tagged: bool = False, filters: dict[str, Any] | None = None) -> list[Node]:
        d: Any = self.driver
        if self.driver_name == "ec2":
            ex_filters = dict(filters or {})
            if tagged:
                ex_filters.setdefault("tag-key", TAG_CLUSTER_ID)
            return d.list_nodes(ex_filters=ex_filters or None)
        if self.driver_name == "gce":
            return d.list_nodes(ex_zone="all")
        if self.driver_name == "azure_arm" and self.options.get("resource_group"):
            return d.list_nodes(ex_resource_group=self.options["resource_group"])
        return d.list_nodes()

    def _named(self, req: MachineRequest, live_only: bool = True) -> list[Node]:
        """Nodes with the request's name AND its cluster-id tag (a stranger's same-named machine
        is never touched)."""
        name = machine_name(req)
        filters = None
        if self.driver_name == "ec2":
            filters = {f"tag:{TAG_CLUSTER_ID}": str(req.cluster_id), "tag:Name": name}
            if live_only:
                filters["instance-state-name"] = list(_EC2_LIVE)
        return [
            n for n in self._list(filters=filters)
            if n.name == name
            and node_tags(self.driver_name, n).get(TAG_CLUSTER_ID) == str(req.cluster_id)
            and (not live_only or machine_state(n.state) != TERMINATED)
        ]

    def _live(self, req: MachineRequest) -> list[Node]:
        return self._named(req, live_only=True)

    def _destroy_node(self, node: Node) -> bool:
        try:
            return bool(self.driver.destroy_node(node))
        except Exception as exc:
            if _is_not_found(exc):
                return False  # gone in the meantime: what we wanted
            raise

    # -- key pairs (EC2, OpenStack, DigitalOcean keep keys as cloud resources) -------------------
    def _prepare_key(self, req: MachineRequest) -> dict[str, Any]:
        if self.driver_name not in ("ec2", "openstack", "digitalocean"):
            return {}
        name = key_pair_name(req)
        key = self._call("find key pair", name, lambda: self._find_key(req))
        if key is None:
            key = self._call("import key pair", name, lambda: self._import_key(req))
        if self.driver_name == "digitalocean":
            return {"ssh_key_id": key.extra["id"]}
        return {"key_name": key.name}

    def _find_key(self, req: MachineRequest) -> Any:
        """The cluster's key pair: by name, or (DigitalOcean refuses a key twice) by content."""
        name, material = key_pair_name(req), " ".join(req.public_key.split()[:2])
        for key in self.driver.list_key_pairs():
            same = self.driver_name == "digitalocean" and " ".join((key.public_key or "").split()[:2]) == material
            if key.name == name or same:
                return key
        return None

    def _import_key(self, req: MachineRequest) -> Any:
        name = key_pair_name(req)
        try:
            if self.driver_name == "digitalocean":
                return self.driver.create_key_pair(name, req.public_key)  # type: ignore[call-arg]
            return self.driver.import_key_pair_from_string(name, req.public_key)
        except Exception:
            key = self._find_key(req)  # a parallel task of the same cluster imported it first
            if key is None:
                raise
            return key

    def _forget_key_if_unused(self, req: MachineRequest, destroyed: set[str]) -> None:
        """Best effort: delete the cluster's key pair once none of its machines is left."""
        if self.driver_name not in ("ec2", "openstack", "digitalocean"):
            return
        try:
            filters = None
            if self.driver_name == "ec2":
                filters = {f"tag:{TAG_CLUSTER_ID}": str(req.cluster_id), "instance-state-name": list(_EC2_LIVE)}
            left = [
                n for n in self._call("list", None, lambda: self._list(filters=filters))
                if n.id not in destroyed and machine_state(n.state) != TERMINATED
                and node_tags(self.driver_name, n).get(TAG_CLUSTER_ID) == str(req.cluster_id)
            ]
            if left:
                return
            key = self._call("find key pair", key_pair_name(req), lambda: self._find_key(req))
            if key is not None and key.name == key_pair_name(req):
                self._call("delete key pair", key.name, lambda: self.driver.delete_key_pair(key))
        except ProviderError as exc:
            log.warning("provider %r: could not delete key pair %s: %s", self.provider, key_pair_name(req), exc)


def driver_secrets(driver_name: str, driver: Any) -> list[str]:
    """The secrets a built driver holds (when the caller did not pass the Connection's): its
    ``secret``, and its ``key`` where that is the credential (API tokens, GCE's JSON key)."""
    attrs = ["secret"] + (["key"] if driver_name in ("digitalocean", "linode", "gce") else [])
    found: list[str] = []
    for attr in attrs:
        value = getattr(driver, attr, None)
        found.extend(_strings_in(value) if isinstance(value, str) else _strings_in({"private_key": value}))
    return [s for s in found if len(s) >= 4]


def _is_not_found(exc: BaseException) -> bool:
    code = getattr(exc, "code", None) or getattr(exc, "http_code", None)
    text = str(exc)
    return code == 404 or "NotFound" in text or "not found" in text.lower()


def cloud_machines(
    provider_name: str,
    driver_name: str,
    conn: ConnectionInfo,
    options: Mapping[str, Any] | None = None,
    policy: RetryPolicy | None = None,
) -> CloudMachines:
    """Driver plus machines for a provider definition and its Connection, in one call."""
    check_options(provider_name, driver_name, options or {})
    driver = driver_for(provider_name, driver_name, conn, policy)
    return CloudMachines(provider_name, driver_name, conn.conn_id, driver, options,
                         policy=policy, secrets=conn.secrets())


__all__ = [
    "CLOUD_DRIVERS", "CONNECTION_FIELDS", "KNOWN_OPTIONS", "CallContext", "CloudMachines",
    "ConnectionInfo", "RetryPolicy", "classify", "cloud_machines",
    "create_kwargs", "driver_args", "driver_for", "driver_secrets", "guarded_call", "key_pair_name", "machine_name",
    "machine_state", "node_tags", "parse_string_tags", "string_tags", "to_machine",
]
