"""The folder that takes what an offline GPU host lacks to it (Ray and pydantic for CPython 3.12
on x86-64 Linux, pruned and packed with xz; the GPU workload's data), built here, installed there.

Run: make gpu-bundle      (.venv/bin/python bench/gpu_bundle.py [--out gpu-bundle]); on the host,
     bench/gpu_check.sh runs `python3 bench/gpu_bundle.py install --bundle B --work W --python P`

The host (docs/development.md, "GPU") has Python 3.12 with torch, torchvision and the packages in
HOST_PACKAGES, no network, no Ray and no pydantic. This script resolves Ray (with the extras
swap uses: default for Ray Jobs and metrics, train) and pydantic for that target from the
package registry, pinned to the versions of .venv, keeps what the host does not already have
(and what swap never imports, LEFT_OUT), installs the wheels into one folder, prunes it and packs
it as site.tar.xz. Beside it: Debian's Fashion-MNIST files as they are, and manifest.json (every
package, file, size and SHA-256). swap itself is not packed: it is the repository, which travels
with the bundle, installed editable on the host (`install`: standard library only, for the
host's python3).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / ".gpu-bundle-build"  # wheels and the staged folder; git-ignored, reused
LIMIT = 60 * 2**20  # bytes: what the host visit can carry beside the repository

RAY, PYDANTIC = "2.60.0", "2.14.4"  # the versions in .venv, which every test here runs
ROOTS = [f"ray[default,train]=={RAY}", f"pydantic=={PYDANTIC}"]
TARGET = [
    "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
    "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
    "--only-binary=:all:",
]  # fmt: skip
MARKERS = {  # the host, for requirement markers
    "python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
    "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
    "implementation_name": "cpython", "platform_python_implementation": "CPython",
}  # fmt: skip
# What the host's python3 already holds (with whatever those need): never packed.
HOST_PACKAGES = [
    "numpy", "pyyaml", "rich", "matplotlib", "prometheus-client", "pyarrow", "pandas",
    "aiohttp", "grpcio", "protobuf", "requests", "scikit-learn", "scipy", "filelock", "pytest",
]  # fmt: skip
# Packed even so: a host may hold versions older than Ray or pydantic accept (pure Python).
NEWER_THAN_HOST = {
    "typing-extensions": "pydantic 2.14 needs typing-extensions >= 4.16",
    "packaging": "Ray 2.60 needs packaging >= 24.2",
}
# Packed though only a package LEFT_OUT requires it: Ray imports it.
ALSO = {
    "googleapis-common-protos": "the dashboard's reporter agent imports google.rpc through "
    "opencensus; it is required only by google-api-core, which is left out",
}
# Required by Ray's extras, never imported by swap's use of Ray (jobs, train, metrics).
LEFT_OUT = {
    "virtualenv": "Ray's pip/uv runtime environments only; swap's check asks for none (6 MB)",
    "py-spy": "the dashboard's stack traces and flame graphs only (3 MB)",
    "google-api-core": "declared by opencensus; only Ray Data's BigQuery source imports it "
    "(it brings google-auth and cryptography, 5 MB)",
}
PRUNED = ["ray/jars", "ray/rllib", "ray/serve", "ray/llm", "bin"]  # Java, RLlib, Serve, LLM, CLIs
STRIPPED = ["ray/_raylet.so", "ray/core/src/ray/gcs/gcs_server", "ray/core/src/ray/raylet/raylet"]
FASHION_MNIST = [
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
]  # fmt: skip
DATA = Path("/usr/share/datasets/fashion-mnist")  # Debian: apt-get install dataset-fashion-mnist
HOST_LIKE_ENV = BUILD / "host312"  # the rehearsal's stand-in for the host's python3
HOST_LIKE = [  # the host's packages a 3.12 rehearsal here can install (no CUDA torch)
    "numpy", "pyyaml", "rich", "prometheus-client", "pyarrow", "pandas", "aiohttp", "grpcio",
    "protobuf", "requests", "filelock", "pytest",
]  # fmt: skip


def main() -> None:
    if sys.argv[1:2] == ["install"]:
        return install(install_arguments(sys.argv[2:]))
    if sys.argv[1:2] == ["host-like"]:
        return build_host_like(sys.argv[2])
    args = arguments()
    check_pins()
    args.out.mkdir(parents=True, exist_ok=True)
    packages = packages_to_pack()
    wheels = download(packages)
    site = pack_site(wheels, args.out)
    data = copy_data(args.data, args.out / "fashion-mnist")
    write_manifest(args.out, packages, site, data)
    total = folder_bytes(args.out)  # everything the host gets, the manifest included
    print(
        f"{args.out}: {total:,} bytes ({total / 2**20:.2f} MiB) of at most {LIMIT / 2**20:.0f} "
        f"MiB: site.tar.xz {site['bytes'] / 2**20:.2f} MiB, fashion-mnist "
        f"{sum(f['bytes'] for f in data.values()) / 2**20:.2f} MiB"
    )
    if total > LIMIT:
        sys.exit(
            f"gpu_bundle: {args.out} is {total / 2**20:.2f} MiB, over the {LIMIT / 2**20:.0f} "
            "MiB the host visit carries"
        )


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "gpu-bundle", help="the bundle folder")
    parser.add_argument("--data", type=Path, default=DATA, help="Fashion-MNIST's four .gz files")
    return parser.parse_args()


def check_pins() -> None:
    """The pins must be what .venv runs, or the host would test another Ray than this machine."""
    from importlib.metadata import version

    here = {"ray": version("ray"), "pydantic": version("pydantic")}
    if here != {"ray": RAY, "pydantic": PYDANTIC}:
        sys.exit(
            f"gpu_bundle: the pins (ray {RAY}, pydantic {PYDANTIC}) differ from this "
            f"environment's {here}; change RAY and PYDANTIC in {__file__}"
        )


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], check=True)


def resolve(requirements: list[str], name: str) -> list[dict[str, Any]]:
    """What pip would install for the host (a dry run: metadata only), pinned to .venv's
    versions where .venv has the package."""
    BUILD.mkdir(exist_ok=True)
    constraints = BUILD / "constraints.txt"
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    constraints.write_text(frozen)
    report = BUILD / f"{name}.json"
    pip(
        "install",
        "--quiet",
        "--dry-run",
        "--ignore-installed",
        "--target",
        str(BUILD / "none"),
        "--report",
        str(report),
        "-c",
        str(constraints),
        *TARGET,
        *requirements,
    )
    return json.loads(report.read_text())["install"]


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def packages_to_pack() -> dict[str, str]:
    """name -> version of every package to pack: the roots' requirements, walked for the
    host's markers, less what the host has and what is LEFT_OUT (and what only they need)."""
    from packaging.requirements import Requirement

    host = {canonical(p["metadata"]["name"]) for p in resolve(HOST_PACKAGES, "host")}
    resolved = {canonical(p["metadata"]["name"]): p for p in resolve(ROOTS, "bundle")}
    wanted: dict[str, set[str]] = {}
    queue = [(canonical(Requirement(r).name), set(Requirement(r).extras)) for r in ROOTS]
    queue += [(name, set()) for name in ALSO]
    while queue:
        name, extras = queue.pop()
        if name in LEFT_OUT or (name in host and name not in NEWER_THAN_HOST):
            continue
        if name in wanted and extras <= wanted[name]:
            continue
        wanted[name] = wanted.get(name, set()) | extras
        for text in resolved[name]["metadata"].get("requires_dist", []):
            requirement = Requirement(text)
            applies = requirement.marker is None or any(
                requirement.marker.evaluate({**MARKERS, "extra": extra})
                for extra in ("", *wanted[name])
            )
            if applies and canonical(requirement.name) in resolved:
                queue.append((canonical(requirement.name), set(requirement.extras)))
    return {name: resolved[name]["metadata"]["version"] for name in sorted(wanted)}


def download(packages: dict[str, str]) -> list[Path]:
    """The packages' wheels for the host, from the registry (or BUILD/wheels, once fetched)."""
    folder = BUILD / "wheels"
    pins = [f"{name}=={version}" for name, version in packages.items()]
    pip("download", "--quiet", "--no-deps", "--dest", str(folder), *TARGET, *pins)
    chosen = [w for w in folder.glob("*.whl") if wheel_pin(w) in packages.items()]
    missing = set(packages) - {wheel_pin(w)[0] for w in chosen}
    if missing:
        sys.exit(f"gpu_bundle: no wheel in {folder} for {', '.join(sorted(missing))}")
    return sorted(chosen)


def wheel_pin(wheel: Path) -> tuple[str, str]:
    name, version = wheel.name.split("-")[:2]
    return canonical(name), version


def pack_site(wheels: list[Path], out: Path) -> dict[str, Any]:
    """The wheels installed into one folder, pruned and stripped, as out/site.tar.xz. Packing
    takes minutes on 2 cores: an unchanged set of wheels and rules reuses the last archive."""
    key = digest("\n".join([*(w.name for w in wheels), *PRUNED, *STRIPPED]).encode())
    archive, stamp = out / "site.tar.xz", BUILD / "site.key"
    if archive.exists() and stamp.exists() and stamp.read_text() == key:
        print(f"{archive}: up to date")
        return {
            "bytes": archive.stat().st_size,
            "key": key,
            **json.loads((BUILD / "site.json").read_text()),
        }
    stage = BUILD / "site"
    shutil.rmtree(stage, ignore_errors=True)
    pip(
        "install",
        "--quiet",
        "--no-deps",
        "--no-compile",
        "--target",
        str(stage),
        *TARGET,
        *map(str, wheels),
    )
    unpacked = folder_bytes(stage)
    for path in PRUNED:
        shutil.rmtree(stage / path)
    for source_map in stage.glob("ray/dashboard/**/*.map"):
        source_map.unlink()  # the dashboard's JavaScript source maps: 6 MB, for debugging it
    if shutil.which("strip"):  # symbols: a third of the three binaries
        subprocess.run(
            ["strip", "--strip-unneeded", *(str(stage / p) for p in STRIPPED)], check=True
        )
    info = {"unpacked_bytes": unpacked, "installed_bytes": folder_bytes(stage)}
    print(f"packing {stage} ({info['installed_bytes'] / 2**20:.0f} MiB) into {archive} ...")
    started = time.perf_counter()
    partial = archive.with_suffix(".xz.partial")
    with partial.open("wb") as sink:
        tar = subprocess.Popen(["tar", "-C", str(stage), "-cf", "-", "."], stdout=subprocess.PIPE)
        subprocess.run(["xz", "-9", "-T0"], stdin=tar.stdout, stdout=sink, check=True)
        if tar.wait():
            sys.exit("gpu_bundle: tar failed")
    partial.replace(archive)
    info["pack_seconds"] = round(time.perf_counter() - started, 1)
    (BUILD / "site.json").write_text(json.dumps(info))
    stamp.write_text(key)
    return {"bytes": archive.stat().st_size, "key": key, **info}


def copy_data(source: Path, target: Path) -> dict[str, dict[str, Any]]:
    """Debian's Fashion-MNIST files, copied as they are (gzip: xz would save only 4 MiB)."""
    missing = [name for name in FASHION_MNIST if not (source / name).exists()]
    if missing:
        sys.exit(
            f"gpu_bundle: {source} lacks {', '.join(missing)} (apt-get install "
            "dataset-fashion-mnist, or --data FOLDER)"
        )
    target.mkdir(exist_ok=True)
    files = {}
    for name in FASHION_MNIST:
        if not (target / name).exists() or digest_file(target / name) != digest_file(source / name):
            shutil.copyfile(source / name, target / name)
        files[name] = {
            "bytes": (target / name).stat().st_size,
            "sha256": digest_file(target / name),
        }
    return files


def write_manifest(
    out: Path, packages: dict[str, str], site: dict[str, Any], data: dict[str, Any]
) -> dict[str, Any]:
    """out/manifest.json: what the bundle holds and why, and every file's size and SHA-256."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    files = {
        str(path.relative_to(out)): {"bytes": path.stat().st_size, "sha256": digest_file(path)}
        for path in sorted(out.rglob("*"))
        if path.is_file() and path.name != "manifest.json"
    }
    manifest = {
        "built_by": " ".join([Path(sys.executable).name, *sys.argv]),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "repository": commit,
        "target": "CPython 3.12, manylinux x86-64; the host has " + ", ".join(HOST_PACKAGES),
        "packages": packages,
        "newer_than_host": NEWER_THAN_HOST,
        "left_out": LEFT_OUT,
        "also": ALSO,
        "pruned": [*PRUNED, "ray/dashboard/**/*.map"],
        "stripped": STRIPPED,
        "site": site,
        "data": {"fashion-mnist": data},
        "files": files,
        "limit_bytes": LIMIT,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_file(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


# The host's end: the environment ----------------------------------------------------------


SITE_DIRS = """import json, sys
print(json.dumps([p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]))"""


def install_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpu_bundle.py install", description=install.__doc__)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--python", required=True, help="the interpreter to build it on")
    parser.add_argument("--no-site", action="store_true", help="without the bundle's packages")
    return parser.parse_args(argv)


def install(args: argparse.Namespace) -> None:
    """A virtual environment in WORK/venv on `--python` that sees, in order: the bundle's
    packages (unpacked once into WORK/site), the repository (swap, installed editable, with its
    `swap` command), and the packages of `--python` itself."""
    manifest = checked_bundle(args.bundle)
    venv = args.work / "venv"
    subprocess.run([args.python, "-m", "venv", "--clear", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    paths = [] if args.no_site else [str(unpacked_site(args.bundle, args.work, manifest))]
    host = subprocess.run([args.python, "-c", SITE_DIRS], check=True, capture_output=True)
    host = host.stdout.decode().strip()
    lines = [*paths, str(REPO), f"import site; list(map(site.addsitedir, {host}))"]
    (site / "swap-gpu-check.pth").write_text("\n".join(lines) + "\n")
    install_swap_editable(site, venv)
    print(f"install: {venv} on {args.python}; its path adds {', '.join(paths)} {REPO} {host}")


def checked_bundle(bundle: Path) -> dict[str, Any]:
    """The bundle's manifest, once every file it lists is there with its size (a truncated
    copy is named here, not in a step)."""
    manifest_file = bundle / "manifest.json"
    if not manifest_file.exists():
        sys.exit(
            f"install: {manifest_file} not found: build the bundle (make gpu-bundle) and "
            "carry its folder"
        )
    manifest = json.loads(manifest_file.read_text())
    wrong = [
        name
        for name, f in manifest["files"].items()
        if not (bundle / name).exists() or (bundle / name).stat().st_size != f["bytes"]
    ]
    if wrong:
        sys.exit(f"install: {bundle}: missing or of another size: {', '.join(wrong)}")
    print(
        f"install: {bundle}: {len(manifest['files'])} files as listed (built "
        f"{manifest['built_at']} from {manifest['repository']})"
    )
    return manifest


def unpacked_site(bundle: Path, work: Path, manifest: dict[str, Any]) -> Path:
    """The bundle's site.tar.xz unpacked into WORK/site, unless this very one already is."""
    site, key = work / "site", manifest["site"]["key"]
    stamp = site / ".bundle-key"
    if stamp.exists() and stamp.read_text() == key:
        return site
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    started = time.perf_counter()
    if shutil.which("xz") and shutil.which("tar"):
        subprocess.run(["tar", "-xJf", str(bundle / "site.tar.xz"), "-C", str(site)], check=True)
    else:
        with tarfile.open(bundle / "site.tar.xz") as archive:
            archive.extractall(site, filter="data")
    stamp.write_text(key)
    print(f"install: unpacked site.tar.xz into {site} in {time.perf_counter() - started:.1f} s")
    return site


def install_swap_editable(site: Path, venv: Path) -> None:
    """What `pip install -e .` leaves (the repository itself is on the path): swap's metadata,
    so that runs record its version, and the `swap` command beside the interpreter, where the
    tests look for it."""
    version = re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), re.M)[1]
    info = site / f"swap-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: swap\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("[console_scripts]\nswap = swap.cli:main\n")
    (info / "INSTALLER").write_text("gpu_check\n")
    (info / "RECORD").write_text("")
    command = venv / "bin" / "swap"
    command.write_text(
        f"#!{venv / 'bin' / 'python'}\nimport sys\n\nfrom swap.cli import main\n\n"
        "sys.exit(main())\n"
    )
    command.chmod(0o755)


def build_host_like(base: str) -> None:
    """The rehearsal's stand-in for the host's python3: a Python 3.12 environment (on `base`)
    with the host's packages that install here (not torch: its CUDA build is gigabytes), made
    once in HOST_LIKE_ENV from PyPI, pinned to .venv's versions."""
    if (HOST_LIKE_ENV / "bin" / "python").exists():
        print(f"host-like: {HOST_LIKE_ENV} (made before)")
        return
    subprocess.run([base, "-m", "venv", str(HOST_LIKE_ENV)], check=True)
    freeze = [str(REPO / ".venv/bin/python"), "-m", "pip", "freeze", "--exclude-editable"]
    frozen = subprocess.run(freeze, check=True, capture_output=True, text=True)
    constraints = HOST_LIKE_ENV / "constraints.txt"
    constraints.write_text(frozen.stdout)
    pip = str(HOST_LIKE_ENV / "bin" / "pip")
    subprocess.run([pip, "install", "--quiet", "-c", str(constraints), *HOST_LIKE], check=True)
    print(f"host-like: made {HOST_LIKE_ENV} with {', '.join(HOST_LIKE)}")


if __name__ == "__main__":
    main()
