"""`regenerate` treats a run archive as untrusted: crafted archives, built from a real archive of the
tiny figures (test_archive's `packed` fixture) the way an attacker would (edit, recompute the
manifest, repack), are refused with exit status 3 and nothing is written anywhere.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from test_archive import packed  # noqa: F401 (fixture: the tiny figures rendered, and their archive)

from medusa_roofline.cli import main
from medusa_roofline.core.errors import EXIT_DIFFERENT, EXIT_TAMPERED
from medusa_roofline.core.io import sha256_file
from medusa_roofline.repro import archive
from medusa_roofline.repro.verify import INPUTS, MANIFEST


QKPV = "results/figures/tiny/a100-80gb-pcie/qkpv_medusa"
TABLE = "results/analytic/tiny/a100-80gb-pcie.csv"


def unpack_plain(tarball: Path, dest: Path) -> Path:
    with tarfile.open(tarball) as tar:
        tar.extractall(dest, filter="data")
    return dest


def rewrite_manifest(root: Path, extra_lines: str = "") -> None:
    """What an attacker does after editing: a manifest that matches every file again."""
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)
    (root / MANIFEST).write_text("".join(f"{sha256_file(root / n)}  {n}\n" for n in names) + extra_lines)


def repack(root: Path, out: Path, extra: tuple = ()) -> Path:
    """``root`` as a .tar.gz, plus raw ``(TarInfo, bytes or None)`` members."""
    with tarfile.open(out, "w:gz") as tar:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(root).as_posix())
        for info, data in extra:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def regenerate(source: Path, out: Path, capsys) -> tuple[int, str, str]:
    status = main(["regenerate", str(source), "--out", str(out)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_rejected(status: int, out_dir: Path, err: str, *needles: str) -> None:
    assert status == EXIT_TAMPERED, err
    assert not out_dir.exists(), "a rejected archive must write nothing"
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


# ---------------------------------------------------------------- finding 1: writes outside --out


@pytest.mark.parametrize("how", ["dotdot", "absolute"])
def test_a_recipe_cannot_write_outside_out(packed, tmp_path, capsys, how):  # noqa: F811
    _, tarball, _ = packed
    victim = tmp_path / "victim" / "data.csv"
    victim.parent.mkdir()
    victim.write_text("precious\n")
    root = unpack_plain(tarball, tmp_path / "evil")
    points = "../" * 30 + str(victim).lstrip("/") if how == "dotdot" else str(victim)
    edit_json(root / f"{QKPV}.recipe.json", lambda r: r["outputs"].update(points=points))
    rewrite_manifest(root)
    out = tmp_path / "out"
    status, _, err = regenerate(repack(root, tmp_path / "evil.tar.gz"), out, capsys)
    assert_rejected(status, out, err, f"recipe {QKPV}.recipe.json: outputs.points",
                    "'..' part" if how == "dotdot" else "is an absolute path")
    assert victim.read_text() == "precious\n" and list(victim.parent.iterdir()) == [victim]


def test_out_reached_through_a_symlink_is_refused(packed, tmp_path, capsys):  # noqa: F811
    _, tarball, _ = packed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "results").symlink_to(elsewhere)
    status, _, err = regenerate(tarball, out, capsys)
    assert status == EXIT_TAMPERED and "outside" in err and "outputs.points" in err
    assert not list(elsewhere.iterdir())


# ----------------------------------------------------------- finding 2: reads outside the archive


def test_an_absolute_manifest_entry_is_never_read(packed, tmp_path, capsys):  # noqa: F811
    _, tarball, _ = packed
    root = unpack_plain(tarball, tmp_path / "evil")
    secret = tmp_path / "secret.csv"
    secret.write_text((root / TABLE).read_text().replace("analytic", "SECRET"))
    edit_json(root / INPUTS, lambda d: d["files"].update({TABLE: str(secret)}))
    rewrite_manifest(root, f"{sha256_file(secret)}  {secret}\n")
    line = len((root / MANIFEST).read_text().splitlines())
    out = tmp_path / "out"
    status, _, err = regenerate(root, out, capsys)
    assert_rejected(status, out, err, f"{MANIFEST} line {line}", "is an absolute path")


def test_a_manifest_name_climbing_out_of_the_root_is_refused(packed, tmp_path, capsys):  # noqa: F811
    _, tarball, _ = packed
    root = unpack_plain(tarball, tmp_path / "deep" / "er" / "evil")
    outside = tmp_path / "hostname"
    outside.write_text("host\n")
    rewrite_manifest(root, f"{sha256_file(outside)}  ../../../hostname\n")
    out = tmp_path / "out"
    status, _, err = regenerate(repack(root, tmp_path / "evil.tar.gz"), out, capsys)
    assert_rejected(status, out, err, MANIFEST, "'../../../hostname'", "'..' part")


def test_a_sha256_mismatch_writes_nothing(packed, tmp_path, capsys):  # noqa: F811
    _, tarball, _ = packed
    root = unpack_plain(tarball, tmp_path / "edited")
    (root / f"{QKPV}.csv").write_text((root / f"{QKPV}.csv").read_text().replace("analytic", "measured", 1))
    out = tmp_path / "out"
    status, stdout, err = regenerate(repack(root, tmp_path / "edited.tar.gz"), out, capsys)
    assert_rejected(status, out, err, f"manifest: {QKPV}.csv does not match its sha256", "nothing was written")
    assert "identical" not in stdout


@pytest.mark.parametrize("garbage", ["not a manifest line", "0123  results/x.csv", f"{'a' * 64} results/x.csv"])
def test_a_malformed_manifest_is_one_line_naming_file_and_line(packed, tmp_path, capsys, garbage):  # noqa: F811
    _, tarball, _ = packed
    root = unpack_plain(tarball, tmp_path / "evil")
    lines = (root / MANIFEST).read_text().splitlines()
    lines.insert(2, garbage)
    (root / MANIFEST).write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    status, _, err = regenerate(root, out, capsys)
    assert_rejected(status, out, err, f"{MANIFEST} line 3: expected '<64 hex digits>  <name>'")
    assert len([line for line in err.splitlines() if line.startswith("rejected:")]) == 1


def test_a_malformed_recipe_is_one_line_naming_file_and_line(packed, tmp_path, capsys):  # noqa: F811
    _, tarball, _ = packed
    root = unpack_plain(tarball, tmp_path / "evil")
    recipe = root / f"{QKPV}.recipe.json"
    recipe.write_text(recipe.read_text()[:40])
    rewrite_manifest(root)
    out = tmp_path / "out"
    status, _, err = regenerate(root, out, capsys)
    assert_rejected(status, out, err, f"recipe {QKPV}.recipe.json line ", "not valid JSON")


@pytest.mark.parametrize("change, needle", [
    (lambda r: r["params"]["plot"].update(formats=["png/../../../x"]), "params.plot.formats"),
    (lambda r: r["inputs"].update(table="/etc/hostname"), "input table '/etc/hostname' is not in the archive"),
    (lambda r: r.pop("outputs"), "lacks outputs"),
])
def test_a_recipe_that_reads_or_writes_elsewhere_is_refused(packed, tmp_path, capsys, change, needle):  # noqa: F811
    _, tarball, _ = packed
    root = unpack_plain(tarball, tmp_path / "evil")
    edit_json(root / f"{QKPV}.recipe.json", change)
    rewrite_manifest(root)
    out = tmp_path / "out"
    status, _, err = regenerate(root, out, capsys)
    assert_rejected(status, out, err, needle)


def test_a_malformed_inputs_map_is_refused(packed, tmp_path, capsys):  # noqa: F811
    _, tarball, _ = packed
    root = unpack_plain(tarball, tmp_path / "evil")
    (root / INPUTS).write_text('{"files": {\n  "a": "b",\n')
    rewrite_manifest(root)
    out = tmp_path / "out"
    status, _, err = regenerate(root, out, capsys)
    assert_rejected(status, out, err, f"{INPUTS} line 3")


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize("member, data, needle", [
    (_member("results/link.csv", tarfile.SYMTYPE, "/etc/hostname"), None, "is a symbolic link"),
    (_member("results/hard.csv", tarfile.LNKTYPE, f"{TABLE}"), None, "is a hard link"),
    (_member("../escaped.csv"), b"x\n", "'..' part"),
    (_member("/tmp/absolute.csv"), b"x\n", "is an absolute path"),
    (_member("C:/windows.csv"), b"x\n", "is a Windows path"),
    (_member("results\\..\\..\\windows.csv"), b"x\n", "is a Windows path"),
    (_member("results/unlisted.csv"), b"x\n", "is not listed in MANIFEST.sha256"),
])
def test_unsafe_or_unlisted_members_are_refused_by_name(packed, tmp_path, capsys, member, data, needle):  # noqa: F811
    _, tarball, _ = packed
    root = unpack_plain(tarball, tmp_path / "x" / "unpacked")
    evil = repack(root, tmp_path / "evil.tar.gz", extra=((member, data),))
    out = tmp_path / "out"
    status, _, err = regenerate(evil, out, capsys)
    assert_rejected(status, out, err, needle, repr(member.name) if "listed" not in needle else "unlisted.csv")
    assert not (tmp_path / "x" / "escaped.csv").exists() and not (tmp_path / "escaped.csv").exists()


# ------------------------------------------------------------------------- what still works


@pytest.mark.slow
def test_a_tar_made_archive_with_dot_prefixes_and_directories_still_regenerates(packed, tmp_path, capsys):  # noqa: F811
    _, tarball, _ = packed
    root = unpack_plain(tarball, tmp_path / "unpacked")
    retarred = tmp_path / "retarred.tar.gz"
    with tarfile.open(retarred, "w:gz") as tar:
        tar.add(root, arcname=".")  # ./results/..., directory entries included, as `tar czf x -C root .`
    status, stdout, err = regenerate(retarred, tmp_path / "out", capsys)
    assert status == 0, err
    assert "manifest intact" in stdout


@pytest.mark.slow
def test_regenerated_but_different_exits_1(packed, tmp_path, capsys):  # noqa: F811
    """A self-consistent archive (manifest recomputed) whose points do not follow from its recipe."""
    _, tarball, _ = packed
    root = unpack_plain(tarball, tmp_path / "unpacked")
    (root / f"{QKPV}.csv").write_text((root / f"{QKPV}.csv").read_text().replace("analytic", "measured", 1))
    rewrite_manifest(root)
    status, stdout, err = regenerate(root, tmp_path / "out", capsys)
    assert status == EXIT_DIFFERENT, err
    assert f"MISMATCH   {QKPV}.csv" in stdout and "identical  results/figures/tiny/a100-80gb-pcie/all_ops.csv" in stdout
    assert (root / f"{QKPV}.csv").read_text() != (tmp_path / "out" / f"{QKPV}.csv").read_text()


@pytest.mark.slow
def test_out_inside_the_archive_directory_is_compared_with_the_manifest_not_itself(packed, tmp_path, capsys):  # noqa: F811
    _, tarball, _ = packed
    root = unpack_plain(tarball, tmp_path / "unpacked")
    (root / f"{QKPV}.csv").write_text("tampered\n")
    rewrite_manifest(root)
    status, stdout, _ = regenerate(root, root, capsys)  # redraws over the archive's own files
    assert status == EXIT_DIFFERENT and f"MISMATCH   {QKPV}.csv" in stdout


def test_write_archive_refuses_unsafe_member_names(tmp_path):
    for name in ("../x", "/abs", "a//b", "C:/x"):
        with pytest.raises(ValueError, match="archive member"):
            archive.write_archive(tmp_path / "a.tar.gz", {name: b"x"})
