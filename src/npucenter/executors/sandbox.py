"""The job sandbox: a tenant's command never runs with the center's privileges.

NOTE(executors): the threat is a tenant who submits a job whose command is arbitrary code
(docs/security.md). Every job the center runs goes through one :class:`Sandbox`, which gives it

- **its own user**: when the center runs as root, job ``N`` runs as uid/gid ``uid_base + N``
  (no /etc/passwd entry is needed; ``setpriv`` drops to it inside the sandbox with no
  capabilities, no supplementary groups and ``no_new_privs``); its work dir is owned by that uid
  and mode 0700, so no other job can read it even by path;
- **its own filesystem view** (bubblewrap): a fresh root holding only the system (``/usr``,
  ``/etc``, ``/opt``, ``/sys`` read-only), the Python installation and npucenter's code
  (read-only), the operator's extra read-only paths, a fresh ``/proc`` and ``/dev`` (plus the
  accelerator device nodes), a size-bounded ``/tmp`` and its own work dir at ``/job``, the only
  writable place. The data directory, the store's file, other jobs' work dirs and the server's
  home are not there (and are covered by an empty tmpfs should they lie under a bound path);
- **its own namespaces**: pid, ipc, uts, cgroup, and network unless the operator shares the
  host's (``NPUCENTER_JOB_NETWORK=host``): with the default no network, a job cannot reach the
  center's API or its PostgreSQL either;
- **an allow-listed environment**: ``PATH``, locale and time zone, ``PYTHONPATH`` and the
  operator's extra names, plus the job's own ``NPUCENTER_JOB_*``/cards variables; never the
  server's secrets or database URL; ``HOME`` is the work dir;
- **resource limits** (rlimits, inherited by everything it starts): CPU seconds, address space,
  processes (per job uid), file size, open files, no core dumps; the work dir's total size is
  checked by the runner every tick (a job over it is killed and failed).

Where bubblewrap is missing or does not work (``probe``), jobs are refused with
:class:`~npucenter.errors.NotSupportedError` unless the operator opted in to running them
unisolated (``NPUCENTER_JOB_ISOLATION=none``: the allow-listed environment and the rlimits
still apply; the filesystem and the uid are the server's).
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from npucenter.errors import InvalidConfigError, NotSupportedError
from npucenter.settings import environ

__all__ = [
    "BWRAP_INSTALL_HINT",
    "ENV_ALLOW",
    "INSIDE_WORK_DIR",
    "JobBox",
    "JobIsolation",
    "JobLimits",
    "JobNetwork",
    "Sandbox",
    "SandboxPolicy",
    "directory_bytes",
    "parse_job_limits",
]

#: Where a sandboxed job sees its own work dir (its cwd and ``HOME``).
INSIDE_WORK_DIR = "/job"
BWRAP_INSTALL_HINT = "apt-get install -y bubblewrap (or: make install-sandbox)"
#: Names of the server's environment a job inherits (values as the server has them).
ENV_ALLOW: tuple[str, ...] = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "TERM",
    "PYTHONPATH",
    "PYTHONUNBUFFERED",
    "PYTHONHASHSEED",
)
_SYSTEM_RO = ("/usr", "/etc", "/opt", "/sys")
_SYSTEM_TOP = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: Accelerator device nodes a job with cards needs (GPUs, FuriosaAI RNGD, Rebellions ATOM).
_DEVICE_GLOBS = ("nvidia*", "nvidia-caps", "rngd*", "rbln*", "dri")
_GB = 1024**3


class JobIsolation(StrEnum):
    """How jobs are isolated (``NPUCENTER_JOB_ISOLATION``)."""

    AUTO = "auto"  # bubblewrap when it works here; otherwise jobs are refused
    BWRAP = "bwrap"  # bubblewrap, required: the runner refuses to start without it
    NONE = "none"  # the operator's explicit opt-in: jobs run unisolated (trusted tenants only)


class JobNetwork(StrEnum):
    """What network a sandboxed job has (``NPUCENTER_JOB_NETWORK``)."""

    NONE = "none"  # its own empty network namespace (loopback only, nothing of the host's)
    HOST = "host"  # the host's network (benchmark jobs that call an endpoint need it)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobLimits:
    """Per-job resource limits; ``None`` is no limit. Parsed from ``NPUCENTER_JOB_LIMITS``."""

    cpu_s: float | None = 24 * 3600.0  # CPU seconds per process (RLIMIT_CPU)
    memory_gb: float | None = 64.0  # address space per process (RLIMIT_AS); CUDA wants it off
    max_num_processes: int | None = 512  # processes of the job's uid (RLIMIT_NPROC; root only)
    file_size_gb: float | None = 64.0  # largest file it may write (RLIMIT_FSIZE)
    max_num_open_files: int | None = 4096  # RLIMIT_NOFILE
    disk_gb: float | None = 100.0  # total size of its work dir, checked every runner tick
    tmp_gb: float = 1.0  # size of its private /tmp (tmpfs, counts as memory)

    def __post_init__(self) -> None:
        for name in ("cpu_s", "memory_gb", "max_num_processes", "file_size_gb"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InvalidConfigError(f"NPUCENTER_JOB_LIMITS.{name}", value, "must be > 0")
        for name in ("max_num_open_files", "disk_gb"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InvalidConfigError(f"NPUCENTER_JOB_LIMITS.{name}", value, "must be > 0")
        if not self.tmp_gb > 0:
            raise InvalidConfigError("NPUCENTER_JOB_LIMITS.tmp_gb", self.tmp_gb, "must be > 0")

    def rlimits(self, *, own_uid: bool) -> list[tuple[int, int]]:
        """``(resource, value)`` pairs to set in the child (hard = soft)."""
        out: list[tuple[int, int]] = [(resource.RLIMIT_CORE, 0)]
        if self.cpu_s is not None:
            out.append((resource.RLIMIT_CPU, max(1, int(self.cpu_s))))
        if self.memory_gb is not None:
            out.append((resource.RLIMIT_AS, int(self.memory_gb * _GB)))
        if self.file_size_gb is not None:
            out.append((resource.RLIMIT_FSIZE, int(self.file_size_gb * _GB)))
        if self.max_num_open_files is not None:
            out.append((resource.RLIMIT_NOFILE, self.max_num_open_files))
        if own_uid and self.max_num_processes is not None:
            # counted per real uid: only meaningful when the job has a uid of its own
            out.append((resource.RLIMIT_NPROC, self.max_num_processes))
        return out


def parse_job_limits(text: str) -> JobLimits:
    """``"cpu_s=3600,memory_gb=16,disk_gb=off"`` -> :class:`JobLimits` (``off``: no limit)."""
    fields = {f for f in JobLimits.__dataclass_fields__}
    values: dict[str, float | int | None] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, raw = (s.strip() for s in item.partition("="))
        if not sep or name not in fields:
            raise InvalidConfigError(
                "NPUCENTER_JOB_LIMITS", item, f"expected NAME=VALUE, NAME one of {sorted(fields)}"
            )
        if raw.lower() in ("off", "none", "unlimited") and name != "tmp_gb":
            values[name] = None
            continue
        try:
            number = float(raw)
        except ValueError:
            raise InvalidConfigError(f"NPUCENTER_JOB_LIMITS.{name}", raw, "not a number") from None
        values[name] = int(number) if name.startswith("max_num_") else number
    return JobLimits(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxPolicy:
    """The operator's choices (settings) for every job's sandbox."""

    isolation: JobIsolation = JobIsolation.AUTO
    network: JobNetwork = JobNetwork.NONE
    limits: JobLimits = field(default_factory=JobLimits)
    env_allow: tuple[str, ...] = ()  # more names of the server's environment jobs inherit
    ro_paths: tuple[Path, ...] = ()  # more host paths jobs see read-only (models, data sets)
    uid_base: int = 1_500_000_000  # job N runs as uid/gid uid_base + N (when root)

    def __post_init__(self) -> None:
        if not 1000 <= self.uid_base < 2**31:
            raise InvalidConfigError("uid_base", self.uid_base, "must be in [1000, 2**31)")


@dataclass(frozen=True, slots=True, kw_only=True)
class JobBox:
    """One job's place: its host work dir, the paths it is given, and the uid it runs as."""

    job_id: int
    work_dir: Path  # on the host: writable by the job, nothing else is
    inside_work_dir: str  # the same dir as the job sees it (its cwd and HOME)
    uid: int | None  # None: the server's own uid (not root, or isolation off)
    isolated: bool

    def inside(self, name: str) -> str:
        """The path the job sees for ``name`` in its work dir."""
        return f"{self.inside_work_dir}/{name}"


def directory_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (symlinks not followed; errors skipped)."""
    total = 0
    stack = [str(path)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
    return total


class Sandbox:
    """Builds the command line, environment and pre-exec step of each job's process.

    Args:
        policy: the operator's choices.
        hidden: host paths jobs must never see (the data directory, the store's file's dir).
        bwrap: the bubblewrap binary (default: found on PATH).
    """

    def __init__(
        self,
        policy: SandboxPolicy | None = None,
        *,
        hidden: Iterable[Path] = (),
        bwrap: str | None = None,
    ) -> None:
        self.policy = policy or SandboxPolicy()
        self.hidden = tuple(Path(p).resolve() for p in hidden)
        self.bwrap = bwrap or shutil.which("bwrap")
        self.is_root = os.geteuid() == 0
        self._unavailable: str | bool | None = False  # False: not probed yet

    # --- availability -----------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """Whether jobs are isolated (isolation is not the operator's ``none``)."""
        return self.policy.isolation != JobIsolation.NONE

    def unavailable_reason(self) -> str | None:
        """Why bubblewrap cannot isolate jobs here (``None``: it can); probed once."""
        if self._unavailable is False:
            self._unavailable = self._probe()
        return self._unavailable  # type: ignore[return-value]

    def check(self) -> None:
        """Raise :class:`NotSupportedError` when jobs must be isolated and cannot be."""
        if not self.enabled:
            return
        reason = self.unavailable_reason()
        if reason is not None:
            raise NotSupportedError(
                "running a tenant's job without isolation",
                reason,
                hint=f"install bubblewrap ({BWRAP_INSTALL_HINT}), or let trusted tenants' jobs "
                "run unisolated with NPUCENTER_JOB_ISOLATION=none (see docs/security.md)",
            )

    def _probe(self) -> str | None:
        if self.bwrap is None:
            return "bubblewrap (bwrap) is not installed"
        import tempfile

        with tempfile.TemporaryDirectory(prefix="npucenter-probe-") as tmp:
            box = self.prepare(0, Path(tmp) / "work")
            argv = self.command(["true"], box)
            try:
                proc = subprocess.run(
                    argv,
                    env={"PATH": "/usr/bin:/bin"},
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=20,
                    preexec_fn=self.preexec(box),
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"bubblewrap did not run: {exc}"
        if proc.returncode != 0:
            said = proc.stderr.decode(errors="replace").strip().splitlines()
            return f"bubblewrap failed here: {said[-1] if said else proc.returncode}"
        return None

    # --- one job ----------------------------------------------------------------------------
    def prepare(self, job_id: int, work_dir: Path) -> JobBox:
        """Create the job's work dir, owned by its uid (mode 0700); its :class:`JobBox`."""
        work_dir.mkdir(parents=True, exist_ok=True)
        uid = self.policy.uid_base + job_id if (self.enabled and self.is_root) else None
        if uid is not None:
            os.chown(work_dir, uid, uid)
        os.chmod(work_dir, 0o700)
        inside = INSIDE_WORK_DIR if self.enabled else str(work_dir)
        return JobBox(
            job_id=job_id, work_dir=work_dir, inside_work_dir=inside, uid=uid, isolated=self.enabled
        )

    def environment(
        self, job_env: Mapping[str, str], box: JobBox, base: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The allow-listed part of ``base`` (the server's environment), then the job's own."""
        base = environ() if base is None else base
        allowed = set(ENV_ALLOW) | set(self.policy.env_allow)
        env = {k: v for k, v in base.items() if k in allowed and not k.startswith("NPUCENTER_")}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env["HOME"] = box.inside_work_dir
        env["TMPDIR"] = "/tmp"
        env.update(job_env)
        return env

    def command(self, argv: Sequence[str], box: JobBox) -> list[str]:
        """The argv that runs the job's ``argv`` in its sandbox (itself when not isolated)."""
        if not box.isolated:
            return list(argv)
        if self.bwrap is None:
            raise NotSupportedError("job isolation", "bubblewrap (bwrap) is not installed")
        mounts: list[tuple[str, list[str]]] = []  # (destination, bwrap args), mounted by depth
        # NOTE: the private /tmp is mounted before what lies below it (a checkout or venv under
        # /tmp, as in CI's clones), which bwrap would otherwise cover with the empty tmpfs.
        tmp_bytes = str(int(self.policy.limits.tmp_gb * _GB))
        mounts.append(("/tmp", ["--perms", "1777", "--size", tmp_bytes, "--tmpfs", "/tmp"]))
        for top in _SYSTEM_TOP:
            if os.path.islink(top):
                mounts.append((top, ["--symlink", os.readlink(top), top]))
            elif os.path.isdir(top):
                mounts.append((top, ["--ro-bind", top, top]))
        for path in (*_SYSTEM_RO, *self._software_paths(), *map(str, self.policy.ro_paths)):
            if os.path.isdir(path) or os.path.isfile(path):
                mounts.append((path, ["--ro-bind", path, path]))
        for hidden in self.hidden:
            if any(_under(hidden, Path(d)) for d, spec in mounts if spec[0] == "--ro-bind"):
                mounts.append((str(hidden), ["--tmpfs", str(hidden)]))
        mounts = _dedupe(mounts)
        args = [self.bwrap]
        made: set[str] = {"/"}
        bound: list[Path] = []  # destinations of binds: what lies under them exists already
        for dest, spec in sorted(mounts, key=lambda m: (m[0].count("/"), m[0])):
            for parent in reversed(Path(dest).parents):  # traversable parents (mode 0755)
                if str(parent) not in made and not any(_under(parent, b) for b in bound):
                    made.add(str(parent))
                    args += ["--perms", "0755", "--dir", str(parent)]
            args += spec
            made.add(dest)
            if spec[0] == "--ro-bind":
                bound.append(Path(dest))
        args += ["--proc", "/proc", "--dev", "/dev"]
        for name in _device_nodes():
            args += ["--dev-bind", name, name]
        args += ["--bind", str(box.work_dir), box.inside_work_dir]
        args += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
        if self.policy.network == JobNetwork.NONE:
            args.append("--unshare-net")
        args += ["--die-with-parent", "--new-session", "--hostname", f"job-{box.job_id}"]
        if box.uid is not None:
            # root: bwrap mounts, then setpriv drops to the job's uid with no capabilities
            args += ["--cap-drop", "ALL"]
            for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"):
                args += ["--cap-add", cap]
            args += ["--", "setpriv", f"--reuid={box.uid}", f"--regid={box.uid}"]
            args += ["--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
        else:
            # not root: an unprivileged user namespace (the kernel uid stays the server's)
            args += ["--unshare-user", "--cap-drop", "ALL", "--"]
        return [*args, "env", "-C", box.inside_work_dir, "--", *argv]

    def preexec(self, box: JobBox) -> Callable[[], None]:
        """What the child does before exec: its rlimits (inherited by all it starts)."""
        limits = self.policy.limits.rlimits(own_uid=box.uid is not None)

        def apply() -> None:
            for which, value in limits:
                resource.setrlimit(which, (value, value))

        return apply

    @staticmethod
    @functools.cache
    def _software_paths() -> tuple[str, ...]:
        """The Python installation and npucenter's code (read-only): jobs run ``python``."""
        import npucenter

        paths = {
            sys.prefix,
            sys.base_prefix,
            str(Path(os.path.realpath(sys.executable)).parent.parent),
            str(Path(npucenter.__file__).resolve().parent.parent),
        }
        for entry in environ().get("PYTHONPATH", "").split(os.pathsep):
            if entry and os.path.isdir(entry):
                paths.add(os.path.realpath(entry))
        return tuple(sorted(p for p in paths if p not in ("/", "")))


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _dedupe(mounts: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    seen: dict[str, list[str]] = {}
    for dest, spec in mounts:
        seen.setdefault(dest, spec)  # the first wins (system before software)
    # a bind under another bind of the same source tree is redundant
    out = []
    binds = {d for d, s in seen.items() if s[0] == "--ro-bind"}
    for dest, spec in seen.items():
        if spec[0] == "--ro-bind" and any(b != dest and _under(Path(dest), Path(b)) for b in binds):
            continue
        out.append((dest, spec))
    return out


def _device_nodes() -> list[str]:
    import glob

    found: list[str] = []
    for pattern in _DEVICE_GLOBS:
        found.extend(sorted(glob.glob(f"/dev/{pattern}")))
    return found
