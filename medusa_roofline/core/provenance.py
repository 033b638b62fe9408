"""Where a measurement came from: library versions, device, git commit, host.

The git commit is read straight from ``.git`` (HEAD -> loose ref or packed-refs; a ``.git``
*file* pointing at a worktree gitdir is followed), so no subprocess is needed for it. Whether the
tree is dirty cannot be read off ``.git`` simply, so that one field asks
``git --no-optional-locks status --porcelain --untracked-files=no`` (read-only: no index refresh
or lock, safe while other people commit in the same tree); it is ``None`` when git is missing.
"""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
from pathlib import Path

from .paths import REPO_ROOT


def _git_dir(root: Path) -> Path | None:
    dot_git = root / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():  # worktree / submodule: "gitdir: <path>"
        text = dot_git.read_text(errors="replace").strip()
        if text.startswith("gitdir:"):
            path = Path(text.split(":", 1)[1].strip())
            return path if path.is_absolute() else (root / path).resolve()
    return None


def _common_dir(git_dir: Path) -> Path:
    common = git_dir / "commondir"
    if common.is_file():
        path = Path(common.read_text().strip())
        return path if path.is_absolute() else (git_dir / path).resolve()
    return git_dir


def git_commit(root: Path | str = REPO_ROOT) -> str:
    """The full hex commit HEAD points at, or "" (no repository, or no commit yet)."""
    try:
        git_dir = _git_dir(Path(root))
        if git_dir is None:
            return ""
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head if _is_sha(head) else ""
        ref = head.split(":", 1)[1].strip()
        for base in (git_dir, _common_dir(git_dir)):
            loose = base / ref
            if loose.is_file():
                sha = loose.read_text().strip()
                return sha if _is_sha(sha) else ""
        for base in (git_dir, _common_dir(git_dir)):
            packed = base / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    parts = line.strip().split(" ")
                    if len(parts) == 2 and parts[1] == ref and _is_sha(parts[0]):
                        return parts[0]
    except OSError:
        return ""
    return ""


def _is_sha(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text.lower())


def git_dirty(root: Path | str = REPO_ROOT) -> bool | None:
    """True if tracked files differ from HEAD; None when it cannot be determined."""
    try:
        proc = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
            cwd=str(root), capture_output=True, text=True, timeout=20, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return bool(proc.stdout.strip())


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(device="cpu") -> str:
    import torch  # here, not at the top: jobs that only need the git fields (archive) or the CPU's name
    # (ceilings) import this module without paying for torch or transformers

    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return cpu_model()


def versions() -> dict:
    import torch  # see device_name
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda or "",
    }


def provenance(device="cpu", root: Path | str = REPO_ROOT, dirty: bool = True) -> dict:
    """Everything a result row carries about where it was measured."""
    import torch  # see device_name

    info = versions()
    info.update(
        device_name=device_name(device),
        threads=torch.get_num_threads(),
        hostname=socket.gethostname(),
        git_commit=git_commit(root),
        git_dirty=git_dirty(root) if dirty else None,
    )
    return info
