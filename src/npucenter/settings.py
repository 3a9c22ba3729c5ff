"""Settings of the center, read once from the environment (and flags) at the edge.

Owns: the data directory (platformdirs), the database URL, the admin key, the client's URL
and key, the center's tariff, the fleet file and how `up` serves it (routing policy, virtual
fleet), the job runner's knobs, the user catalog paths, and what a child process inherits. The
one module that reads ``os.environ`` (the others call :meth:`Settings.from_env`,
:func:`catalog_paths_from_env`, :func:`environ` or :func:`parent_pid`). Nothing here does I/O
beyond reading ``os.environ`` and creating the data directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from npucenter.errors import InvalidConfigError
from npucenter.policy.admission.types import AdmissionPolicy

__all__ = [
    "DEFAULT_ROUTING_POLICY",
    "DEFAULT_URL",
    "ENV_ADMIN_KEY",
    "ENV_ADMISSION_INTERVAL",
    "ENV_ADMISSION_POLICY",
    "ENV_API_KEY",
    "ENV_CATALOG",
    "ENV_CORS_ORIGINS",
    "ENV_DATABASE_URL",
    "ENV_DATA_DIR",
    "ENV_DRAIN",
    "ENV_ENGINE_HOST",
    "ENV_EXECUTOR",
    "ENV_FLEET",
    "ENV_JOB_ENV_ALLOW",
    "ENV_JOB_ISOLATION",
    "ENV_JOB_LIMITS",
    "ENV_JOB_NETWORK",
    "ENV_JOB_RO_PATHS",
    "ENV_JOB_RUNNER",
    "ENV_JOB_TELEMETRY",
    "ENV_OPEN_ENDPOINTS",
    "ENV_PARENT_PID",
    "ENV_RAY_ADDRESS",
    "ENV_ROUTING_POLICY",
    "ENV_TARIFF",
    "ENV_URL",
    "ENV_VIRTUAL_FLEET",
    "OPEN_ENDPOINT_GROUPS",
    "Settings",
    "catalog_paths_from_env",
    "default_data_dir",
    "environ",
    "normalize_database_url",
    "parent_pid",
    "parse_tariff",
    "secret_from_env",
]

ENV_DATABASE_URL = "NPUCENTER_DATABASE_URL"
ENV_ADMIN_KEY = "NPUCENTER_ADMIN_KEY"
ENV_URL = "NPUCENTER_URL"
ENV_API_KEY = "NPUCENTER_API_KEY"
ENV_DATA_DIR = "NPUCENTER_DATA_DIR"
#: The center's own price list, e.g. ``rngd=1.0,h100=2.0,default=0.5`` (USD per device-hour).
ENV_TARIFF = "NPUCENTER_TARIFF"
#: A fleet YAML; its ``tariff_usd_per_device_hour`` is the tariff when NPUCENTER_TARIFF is unset.
ENV_FLEET = "NPUCENTER_FLEET"
#: ``0`` stops `npucenter up` from running admitted jobs as local processes.
ENV_JOB_RUNNER = "NPUCENTER_JOB_RUNNER"
#: A telemetry reader (nvml, furiosa-smi, rbln-smi) that measures the power of jobs' cards.
ENV_JOB_TELEMETRY = "NPUCENTER_JOB_TELEMETRY"
#: Seconds between the job runner's periodic admission ticks.
ENV_ADMISSION_INTERVAL = "NPUCENTER_ADMISSION_INTERVAL_S"
#: Seconds a replica scaled down may finish its requests before it is stopped (default 60).
ENV_DRAIN = "NPUCENTER_DRAIN_S"
#: The live admission cycle's policy knobs, ``knob=value,...`` (docs/admission.md).
ENV_ADMISSION_POLICY = "NPUCENTER_ADMISSION_POLICY"
#: The gateway's routing policy in `npucenter up` (default ``prefix-affinity``).
ENV_ROUTING_POLICY = "NPUCENTER_ROUTING_POLICY"
#: ``0``: `npucenter up` registers no fleet and launches no replicas (an external executor).
ENV_VIRTUAL_FLEET = "NPUCENTER_VIRTUAL_FLEET"
#: User catalog files, separated by ``os.pathsep`` (applied after the user catalog directory).
ENV_CATALOG = "NPUCENTER_CATALOG"
#: Set by executors for the engines they start: an engine exits when that pid is gone.
ENV_PARENT_PID = "NPUCENTER_PARENT_PID"
#: Job sandbox (docs/security.md): ``auto`` (bubblewrap, else refuse jobs) | ``bwrap`` | ``none``.
ENV_JOB_ISOLATION = "NPUCENTER_JOB_ISOLATION"
#: A sandboxed job's network: ``none`` (default) | ``host``.
ENV_JOB_NETWORK = "NPUCENTER_JOB_NETWORK"
#: Per-job limits, e.g. ``cpu_s=3600,memory_gb=16,max_num_processes=256,disk_gb=50`` (``off``).
ENV_JOB_LIMITS = "NPUCENTER_JOB_LIMITS"
#: More names of the server's environment jobs inherit (comma-separated; never NPUCENTER_*).
ENV_JOB_ENV_ALLOW = "NPUCENTER_JOB_ENV_ALLOW"
#: More host paths jobs see read-only (``os.pathsep``-separated: models, data sets).
ENV_JOB_RO_PATHS = "NPUCENTER_JOB_RO_PATHS"
#: Where deployment replicas run: ``local`` (default) | ``ray``.
ENV_EXECUTOR = "NPUCENTER_EXECUTOR"
#: The Ray cluster for ``NPUCENTER_EXECUTOR=ray`` (``auto``, ``127.0.0.1:6379``, ``ray://...``).
ENV_RAY_ADDRESS = "NPUCENTER_RAY_ADDRESS"
#: What /metrics, /docs and /openapi.json show to clients off loopback: ``metrics,docs`` (or
#: ``all``) opens them; default none (loopback and admin keys only). See docs/reliability.md.
ENV_OPEN_ENDPOINTS = "NPUCENTER_OPEN_ENDPOINTS"
OPEN_ENDPOINT_GROUPS = ("metrics", "docs", "results")  # results: the console's proving ground
#: Browser origins allowed to call /v1 (CORS), comma-separated; ``*`` any; default none.
ENV_CORS_ORIGINS = "NPUCENTER_CORS_ORIGINS"
#: The address engines listen on (local executor: 127.0.0.1; Ray: each node's own address).
ENV_ENGINE_HOST = "NPUCENTER_ENGINE_HOST"
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_ROUTING_POLICY = "prefix-affinity"


def _open_endpoints(text: str) -> frozenset[str]:
    names = {part.strip().lower() for part in text.split(",") if part.strip()}
    if names & {"all", "*"}:
        return frozenset(OPEN_ENDPOINT_GROUPS)
    return frozenset(names - {"none"})


def default_data_dir() -> Path:
    """The user's data directory for npucenter (e.g. ``~/.local/share/npucenter``)."""
    return Path(platformdirs.user_data_dir("npucenter", appauthor=False))


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the server and the CLI client need to know about where things are.

    ``database_url`` defaults to SQLite in ``data_dir``; a PostgreSQL URL
    (``postgresql://user@host/db``) is used with the psycopg 3 driver.
    ``tariff_usd_per_device_hour`` is the center's own price list (device id or alias, or
    ``"default"`` for every other device, -> USD per device-hour), a business setting of the
    operator and never a device figure; empty means unpriced unless the fleet file has one.
    """

    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str = ""
    admin_key: str | None = None
    url: str = DEFAULT_URL
    url_given: bool = False  # NPUCENTER_URL was set (else ``url`` is the local default)
    api_key: str | None = None
    tariff_usd_per_device_hour: Mapping[str, float] = field(default_factory=dict)
    fleet_path: Path | None = None
    run_jobs: bool = True  # `npucenter up` runs admitted jobs as local processes
    admission_interval_s: float = 2.0  # the job runner's periodic admission tick
    drain_s: float = 60.0  # a replica scaled down finishes its requests for at most this long
    admission_policy: str = ""  # knob=value,... of policy.admission.AdmissionPolicy; "" default
    job_telemetry: str | None = None  # reader of this node's cards for jobs' measured energy
    routing_policy: str = DEFAULT_ROUTING_POLICY  # the gateway's, in `npucenter up`
    launch_fleet: bool = True  # `npucenter up` registers the fleet and launches its replicas
    job_isolation: str = "auto"  # auto | bwrap | none (executors/sandbox.py)
    job_network: str = "none"  # none | host
    job_limits: str = ""  # NAME=VALUE,... (executors/sandbox.py JobLimits); "" = defaults
    job_env_allow: tuple[str, ...] = ()
    job_ro_paths: tuple[Path, ...] = ()
    executor: str = "local"  # local | ray: where deployment replicas (and jobs) run
    ray_address: str | None = None  # the Ray cluster when executor == "ray"
    open_endpoints: frozenset[str] = frozenset()  # of OPEN_ENDPOINT_GROUPS, open off loopback
    engine_host: str | None = None  # where engines listen; None: the executor's default
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call /v1 ("*": any)

    def __post_init__(self) -> None:
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.data_dir / 'npucenter.db'}")
        object.__setattr__(self, "database_url", normalize_database_url(self.database_url))
        if self.admin_key is not None and len(self.admin_key) < 16:
            raise InvalidConfigError(
                ENV_ADMIN_KEY,
                "<hidden>",
                "an admin key must be at least 16 characters",
                hint="generate one with `python -c 'import secrets; print(secrets.token_urlsafe())'`",
            )
        for device, price in self.tariff_usd_per_device_hour.items():
            if not price >= 0:
                raise InvalidConfigError(f"{ENV_TARIFF}.{device}", price, "must be >= 0")
        if not self.admission_interval_s > 0:
            raise InvalidConfigError(
                ENV_ADMISSION_INTERVAL, self.admission_interval_s, "must be > 0 seconds"
            )
        AdmissionPolicy.from_text(self.admission_policy)  # refuse a bad one at start
        for name, value, valid in (
            (ENV_JOB_ISOLATION, self.job_isolation, ("auto", "bwrap", "none")),
            (ENV_JOB_NETWORK, self.job_network, ("none", "host")),
            (ENV_EXECUTOR, self.executor, ("local", "ray")),
        ):
            if value not in valid:
                raise InvalidConfigError(name, value, f"must be one of {', '.join(valid)}")
        unknown = set(self.open_endpoints) - set(OPEN_ENDPOINT_GROUPS)
        if unknown:
            raise InvalidConfigError(
                ENV_OPEN_ENDPOINTS, ",".join(sorted(unknown)), "choose from metrics, docs, all"
            )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, data_dir: Path | str | None = None
    ) -> Settings:
        """Settings from ``env`` (default ``os.environ``); ``data_dir`` overrides the env."""
        env = os.environ if env is None else env
        chosen_dir = data_dir or env.get(ENV_DATA_DIR) or default_data_dir()
        return cls(
            data_dir=Path(chosen_dir).expanduser(),
            database_url=env.get(ENV_DATABASE_URL, ""),
            admin_key=env.get(ENV_ADMIN_KEY) or None,
            url=(env.get(ENV_URL) or DEFAULT_URL).rstrip("/"),
            url_given=bool(env.get(ENV_URL)),
            api_key=env.get(ENV_API_KEY) or None,
            tariff_usd_per_device_hour=parse_tariff(env.get(ENV_TARIFF, "")),
            fleet_path=Path(env[ENV_FLEET]).expanduser() if env.get(ENV_FLEET) else None,
            open_endpoints=_open_endpoints(env.get(ENV_OPEN_ENDPOINTS, "")),
            cors_origins=tuple(
                o.strip().rstrip("/") for o in env.get(ENV_CORS_ORIGINS, "").split(",") if o.strip()
            ),
            run_jobs=env.get(ENV_JOB_RUNNER, "1") != "0",
            admission_interval_s=_positive_float(env.get(ENV_ADMISSION_INTERVAL), 2.0),
            drain_s=_seconds(ENV_DRAIN, env.get(ENV_DRAIN), 60.0),
            admission_policy=env.get(ENV_ADMISSION_POLICY, ""),
            job_telemetry=env.get(ENV_JOB_TELEMETRY) or None,
            routing_policy=env.get(ENV_ROUTING_POLICY, DEFAULT_ROUTING_POLICY),
            launch_fleet=env.get(ENV_VIRTUAL_FLEET, "1") != "0",
            job_isolation=(env.get(ENV_JOB_ISOLATION) or "auto").lower(),
            job_network=(env.get(ENV_JOB_NETWORK) or "none").lower(),
            job_limits=env.get(ENV_JOB_LIMITS, ""),
            job_env_allow=tuple(
                n.strip() for n in env.get(ENV_JOB_ENV_ALLOW, "").split(",") if n.strip()
            ),
            job_ro_paths=tuple(
                Path(p).expanduser() for p in env.get(ENV_JOB_RO_PATHS, "").split(os.pathsep) if p
            ),
            executor=(env.get(ENV_EXECUTOR) or "local").lower(),
            ray_address=env.get(ENV_RAY_ADDRESS) or None,
            engine_host=env.get(ENV_ENGINE_HOST) or None,
        )

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is SQLite (the embedded default)."""
        return self.database_url.startswith("sqlite")

    def ensure_data_dir(self) -> Path:
        """Create the data directory when the database lives in it; return it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.data_dir


def catalog_paths_from_env(env: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """The user catalog files named by ``NPUCENTER_CATALOG`` (``env`` default ``os.environ``).

    Read alone (not through :class:`Settings`) so that catalog commands do not depend on the
    server's settings being valid.
    """
    text = (os.environ if env is None else env).get(ENV_CATALOG, "")
    return tuple(Path(p) for p in text.split(os.pathsep) if p)


def environ() -> dict[str, str]:
    """A copy of this process's environment: what a child process (engine, job) inherits."""
    return dict(os.environ)


def parent_pid() -> int | None:
    """The pid of the executor that started this engine (``NPUCENTER_PARENT_PID``), if any."""
    text = os.environ.get(ENV_PARENT_PID)
    return int(text) if text else None


def normalize_database_url(url: str) -> str:
    """Pick the psycopg 3 driver for a plain ``postgresql://``/``postgres://`` URL."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if not (url.startswith("sqlite") or url.startswith("postgresql+")):
        raise InvalidConfigError(
            ENV_DATABASE_URL,
            url.split("@")[-1],
            "only sqlite:/// and postgresql:// URLs are supported",
        )
    return url


def parse_tariff(text: str) -> dict[str, float]:
    """``"rngd=1.0,h100=2.0,default=0.5"`` -> ``{"rngd": 1.0, "h100": 2.0, "default": 0.5}``."""
    out: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        device, sep, price = item.partition("=")
        try:
            if not sep or not device.strip():
                raise ValueError(item)
            out[device.strip()] = float(price)
        except ValueError:
            raise InvalidConfigError(
                ENV_TARIFF,
                item,
                "expected DEVICE=USD_PER_DEVICE_HOUR",
                hint="e.g. rngd=1.0,h100=2.0",
            ) from None
    return out


def _positive_float(text: str | None, default: float) -> float:
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise InvalidConfigError(
            ENV_ADMISSION_INTERVAL, text, "must be a number of seconds"
        ) from None


def _seconds(name: str, text: str | None, default: float) -> float:
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise InvalidConfigError(name, text, "must be a number of seconds") from None
    if not value >= 0:
        raise InvalidConfigError(name, text, "must be >= 0 seconds")
    return value


def secret_from_env(name: str) -> str | None:
    """The value of the environment variable ``name`` (an external engine's upstream key).

    Read when needed and never stored, logged or printed; None when unset or empty.
    """
    return os.environ.get(name) or None
