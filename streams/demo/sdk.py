"""Segment's browser SDK for the demo storefront, fetched from npm into the local cache
(``<cache_dir>/npm/analytics-next-<version>``) the way Kafka's jars come from Maven: once,
by ``streams up``, at a pinned version. Nothing is copied into the repository and the page
never loads anything from the internet: ``streams serve`` serves the bundle from there.

``npm pack`` downloads the package's tarball, which must match the pinned integrity hash
(the lock file's); it is unpacked with tarfile's ``data`` filter (no links out of the folder,
no absolute paths) into a temporary folder renamed into place, so a half-fetched copy is
never taken for a whole one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

PACKAGE = "@segment/analytics-next"
# The same version as js/package-lock.json (the browser-SDK tests); a unit test holds it.
VERSION = "1.84.3"
# The registry's integrity hash of that tarball (as in js/package-lock.json).
INTEGRITY = ("sha512-5l7cPBzScxhfJ0zdcKQI4daDvMIWWUk7hClT1xGRelnHUltIEoQ9w8+ZpFPoWJMpX8D7IA1n"
             "VAfJbpiKi3XaKw==")
BUNDLE = Path("package") / "dist" / "umd"  # index.js and its lazily loaded chunks


class SdkFetchError(RuntimeError):
    """The SDK could not be fetched (npm missing, registry unreachable, bad package)."""


def sdk_home(cache_dir: Path) -> Path:
    """Where the pinned SDK lives in the cache."""
    return cache_dir.expanduser().resolve() / "npm" / f"analytics-next-{VERSION}"


def bundle_dir(cache_dir: Path) -> Path | None:
    """The folder holding the SDK's ``index.js`` and chunks, or None when not fetched."""
    folder = sdk_home(cache_dir) / BUNDLE
    return folder if (folder / "index.js").is_file() else None


def ensure_sdk(cache_dir: Path, *, run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
               timeout: float = 180.0) -> Path:
    """The bundle folder of the pinned SDK, fetched with ``npm pack`` when missing.
    Blocks (a download of about 1 MB the first time). Raises SdkFetchError saying why."""
    found = bundle_dir(cache_dir)
    if found is not None:
        return found
    if shutil.which("npm") is None and run is subprocess.run:
        raise SdkFetchError("npm is not installed: install Node.js and npm (Debian: "
                            "apt-get install npm) for the demo storefront's browser SDK")
    home = sdk_home(cache_dir)
    home.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home.parent, prefix=".fetch-") as tmp:
        try:
            done = run(["npm", "pack", f"{PACKAGE}@{VERSION}", "--json", "--silent",
                        "--pack-destination", tmp], capture_output=True, text=True,
                       timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SdkFetchError(f"npm pack {PACKAGE}@{VERSION} failed: {exc}") from exc
        if done.returncode != 0:
            last = (done.stderr or done.stdout or "").strip().splitlines()[-1:] or ["no output"]
            raise SdkFetchError(f"npm pack {PACKAGE}@{VERSION} exited with "
                                f"{done.returncode}: {last[0][:300]}")
        try:
            filename = json.loads(done.stdout)[0]["filename"]
        except (ValueError, LookupError, TypeError) as exc:
            raise SdkFetchError(f"npm pack gave no tarball name: {done.stdout[:200]!r}") from exc
        tarball = Path(tmp) / Path(filename).name
        digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()
                                              ).decode()
        if digest != INTEGRITY:
            raise SdkFetchError(f"{PACKAGE}@{VERSION} from npm does not match the pinned "
                                "integrity hash")
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(tarball) as archive:
            archive.extractall(unpacked, filter="data")
        meta = json.loads((unpacked / "package" / "package.json").read_text())
        if (meta.get("name"), meta.get("version")) != (PACKAGE, VERSION):
            raise SdkFetchError(f"npm gave {meta.get('name')}@{meta.get('version')}, "
                                f"not {PACKAGE}@{VERSION}")
        if not (unpacked / BUNDLE / "index.js").is_file():
            raise SdkFetchError(f"{PACKAGE}@{VERSION} has no {BUNDLE}/index.js")
        if home.exists():  # a broken earlier copy
            shutil.rmtree(home)
        unpacked.rename(home)
    return home / BUNDLE
