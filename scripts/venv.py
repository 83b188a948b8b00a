"""Build the project's virtual environment from the committed lock, with only ``python3``.

    python3 scripts/venv.py sync [--extras dev,server] [--venv .venv]
    python3 scripts/venv.py lock [--upgrade]
    python3 scripts/venv.py latest [--venv .venv-latest]   # newest releases, outside CI
    python3 scripts/venv.py check                          # exit 1 if the lock is stale

``uv`` resolves (``uv.lock``, universal over the Python versions we support) and installs,
because it is fast and exact. It is bootstrapped into the venv at a pinned version with pip,
so a machine needs nothing but ``python3``. ``sync`` refuses to run when ``pyproject.toml``
and ``uv.lock`` disagree: a dependency edit without ``make lock`` fails CI.

PyTorch is the one exception. The lock pins ``torch==X`` but uv would take PyPI's build (CUDA,
several GB) and never looks at pip's own configuration, where some machines keep a CPU build on
disk (pip's ``find-links``). So torch and its CUDA-only dependencies are left out of the export
and torch alone is installed by pip at the locked version, which honours that configuration.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

UV_VERSION = "0.13.10"
ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "uv.lock"
# Packages pip installs itself, so its configuration (a build on disk) is honoured.
PIP_INSTALLED = ("torch",)


def run(*cmd: str | Path, **kw: object) -> None:
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kw)  # type: ignore[call-overload]


def ensure_venv(venv: Path) -> Path:
    py = venv / "bin" / "python"
    if not py.exists():
        run(sys.executable, "-m", "venv", venv)
    return py


def ensure_uv(venv: Path) -> Path:
    py = ensure_venv(venv)
    uv = venv / "bin" / "uv"
    have = ""
    if uv.exists():
        out = subprocess.run([uv, "--version"], capture_output=True, text=True, check=False)
        have = out.stdout.split()[1] if out.returncode == 0 and out.stdout else ""
    if have != UV_VERSION:
        run(py, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"uv=={UV_VERSION}")
    return uv


def uv_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("UV_NO_PROGRESS", "1")
    # uv reads no pip configuration; make its warnings about pip's local indexes go away.
    env.pop("PIP_FIND_LINKS", None)
    return env


def _accelerator_runtime(name: str) -> bool:
    """Packages that only PyPI's CUDA build of torch needs (nvidia-*, cuda-*, triton)."""
    return name.startswith(("nvidia-", "cuda-")) or name == "triton"


def pip_only_packages() -> tuple[set[str], dict[str, str]]:
    """Names left out of the uv export, and the locked versions of those pip installs.

    torch reaches its CUDA runtime through extras of other packages (cuda-toolkit[cublas,...]
    → nvidia-*), so the whole accelerator closure is followed, extras included."""
    lock = tomllib.loads(LOCK.read_text())
    packages = {p["name"]: p for p in lock.get("package", [])}
    leave_out: set[str] = set()
    versions: dict[str, str] = {}
    for name in PIP_INSTALLED:
        pkg = packages.get(name)
        if pkg is None:
            continue
        versions[name] = pkg["version"]
        leave_out.add(name)
        todo = [pkg]
        while todo:
            current = todo.pop()
            deps = list(current.get("dependencies", []))
            for extra_deps in current.get("optional-dependencies", {}).values():
                deps += extra_deps
            for dep in deps:
                dep_name = dep["name"]
                if _accelerator_runtime(dep_name) and dep_name not in leave_out:
                    leave_out.add(dep_name)
                    if dep_name in packages:
                        todo.append(packages[dep_name])
    return leave_out, versions


def lock_is_current(uv: Path) -> bool:
    out = subprocess.run(
        [uv, "lock", "--check", "--quiet"], cwd=ROOT, env=uv_env(), capture_output=True, text=True
    )
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
    return out.returncode == 0


def check(venv: Path) -> int:
    if lock_is_current(ensure_uv(venv)):
        return 0
    print(
        "pyproject.toml and uv.lock disagree: run `make lock` and commit uv.lock", file=sys.stderr
    )
    return 1


def sync(venv: Path, extras: list[str]) -> int:
    if check(venv):
        return 1
    uv = ensure_uv(venv)
    stamp = venv / ".vidgate-sync"
    key = hashlib.sha256(
        LOCK.read_bytes() + (ROOT / "pyproject.toml").read_bytes() + ",".join(extras).encode()
    ).hexdigest()
    if stamp.exists() and stamp.read_text() == key:
        return 0
    leave_out, versions = pip_only_packages()
    req = venv / "requirements.lock.txt"
    cmd: list[str | Path] = [uv, "export", "--frozen", "--quiet", "--no-emit-project"]
    cmd += ["--format", "requirements.txt", "--output-file", req]
    for extra in extras:
        cmd += ["--extra", extra]
    for name in sorted(leave_out):
        cmd += ["--no-emit-package", name]
    run(*cmd, env=uv_env())
    py = venv / "bin" / "python"
    # The export is the whole closure: resolving again would pull torch's CUDA build back in.
    run(uv, "pip", "install", "--quiet", "--no-deps", "--python", py, "-r", req, env=uv_env())
    run(uv, "pip", "install", "--quiet", "--python", py, "--no-deps", "-e", ".", env=uv_env())
    wanted = requested_pip_packages(extras)
    for name in wanted:
        if name in versions:
            run(
                py,
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                f"{name}=={versions[name]}",
            )
    stamp.write_text(key)
    return 0


def requested_pip_packages(extras: list[str]) -> list[str]:
    """The pip-installed packages that the chosen extras ask for."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(meta.get("dependencies", []))
    for extra in extras:
        specs += meta.get("optional-dependencies", {}).get(extra, [])
    names = {
        s.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip()
        for s in specs
    }
    return [n for n in PIP_INSTALLED if n in names]


def lock(venv: Path, upgrade: bool) -> int:
    uv = ensure_uv(venv)
    cmd: list[str | Path] = [uv, "lock"]
    if upgrade:
        cmd.append("--upgrade")
    run(*cmd, env=uv_env())
    return 0


def latest(venv: Path, extras: list[str]) -> int:
    """A venv with the newest releases: drift is seen when we choose to look."""
    if venv.exists():
        shutil.rmtree(venv)
    uv = ensure_uv(venv)
    py = venv / "bin" / "python"
    spec = f".[{','.join(extras)}]" if extras else "."
    run(uv, "pip", "install", "--quiet", "--python", py, "--upgrade", "-e", spec, env=uv_env())
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["sync", "lock", "latest", "check"])
    ap.add_argument("--venv", default=".venv")
    ap.add_argument("--extras", default="dev,server")
    ap.add_argument("--upgrade", action="store_true")
    args = ap.parse_args()
    venv = (Path.cwd() / args.venv).resolve()
    extras = [e for e in args.extras.split(",") if e]
    if args.command == "sync":
        return sync(venv, extras)
    if args.command == "check":
        return check(venv)
    if args.command == "lock":
        return lock(venv, args.upgrade)
    return latest(venv, extras)


if __name__ == "__main__":
    raise SystemExit(main())
