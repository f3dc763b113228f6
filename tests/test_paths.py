"""Path confinement: inside/outside the allowed roots, symlink escapes, `..`, relative paths, the opt-in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lora_trainer.errors import StudioError
from lora_trainer.paths import (
    OPT_IN_FLAG,
    PathPolicy,
    confine,
    path_policy,
    remote_access_restricted,
)
from lora_trainer.settings import StudioSettings


@pytest.fixture
def tree(tmp_path):
    """root/ (studio), models/, outside/ with a secret, and links from root to both sides."""
    root, models, outside = tmp_path / "root", tmp_path / "models", tmp_path / "outside"
    for d in (root / "proj" / "dataset", models / "Lora", outside):
        d.mkdir(parents=True)
    (outside / "secret.txt").write_text("x")
    os.symlink(outside, root / "escape")  # a link inside the root that leaves it
    os.symlink(models / "Lora", root / "loras")  # a link that stays inside the allowed roots
    return tmp_path


def roots(tree):
    return [tree / "root", tree / "models"]


def test_inside_paths_are_returned_resolved(tree):
    assert confine(tree / "root" / "proj" / "dataset", roots(tree)) == (tree / "root" / "proj" / "dataset").resolve()
    assert confine(str(tree / "models" / "Lora"), roots(tree)) == (tree / "models" / "Lora").resolve()
    assert confine(tree / "root", roots(tree)) == (tree / "root").resolve()  # the root itself
    assert confine(f"  {tree / 'root'}  ", roots(tree)) == (tree / "root").resolve()  # pasted with spaces


def test_outside_path_is_refused_with_the_roots_and_the_fix(tree):
    with pytest.raises(StudioError) as e:
        confine(tree / "outside" / "secret.txt", roots(tree))
    assert "is outside the folders LoRA Studio may use" in e.value.message
    assert str((tree / "root").resolve()) in e.value.message and str((tree / "models").resolve()) in e.value.message
    assert "Extra allowed folders" in e.value.fix and "Allow any folder" in e.value.fix


def test_sibling_with_a_common_prefix_is_outside(tree):
    (tree / "root-evil").mkdir()
    with pytest.raises(StudioError):
        confine(tree / "root-evil", roots(tree))


def test_symlink_escape_is_refused(tree):
    with pytest.raises(StudioError) as e:
        confine(tree / "root" / "escape" / "secret.txt", roots(tree))
    assert str((tree / "outside").resolve()) in e.value.message  # says where the link really goes
    with pytest.raises(StudioError):  # a file that does not exist yet, behind the link
        confine(tree / "root" / "escape" / "new" / "out.safetensors", roots(tree))


def test_symlink_into_another_root_is_fine(tree):
    assert confine(tree / "root" / "loras" / "x.safetensors", roots(tree)) == (tree / "models" / "Lora").resolve() / "x.safetensors"


def test_dotdot_is_refused(tree):
    with pytest.raises(StudioError):
        confine(tree / "root" / "proj" / ".." / ".." / "outside" / "secret.txt", roots(tree))
    with pytest.raises(StudioError):
        confine("../outside", roots(tree))
    with pytest.raises(StudioError):  # lexically root/, but `..` climbs from where the link points
        confine(tree / "root" / "escape" / "..", roots(tree))
    assert confine(tree / "root" / "proj" / ".." / "proj", roots(tree)) == (tree / "root" / "proj").resolve()


def test_relative_paths_start_at_the_first_root(tree):
    assert confine("proj/dataset", roots(tree)) == (tree / "root" / "proj" / "dataset").resolve()
    assert confine(Path("new-output"), roots(tree)) == (tree / "root").resolve() / "new-output"


def test_nonexistent_paths_under_a_root_are_allowed(tree):
    target = tree / "models" / "Lora" / "proj" / "proj-01.safetensors"
    assert confine(target, roots(tree)) == target.resolve()
    assert not target.parent.exists()  # confine makes nothing


def test_allow_any(tree):
    assert confine(tree / "outside" / "secret.txt", roots(tree), allow_any=True) == (tree / "outside" / "secret.txt").resolve()
    assert confine(tree / "outside", [], allow_any=True) == (tree / "outside").resolve()
    with pytest.raises(StudioError):
        confine(tree / "outside", [])


def test_empty_and_nul_paths(tree):
    for bad in ("", "   "):
        with pytest.raises(StudioError, match="No folder"):
            confine(bad, roots(tree))
    with pytest.raises(StudioError, match="NUL"):
        confine("a\x00b", roots(tree), allow_any=True)


def test_restricted_advice_names_the_flag(tree):
    with pytest.raises(StudioError) as e:
        confine(tree / "outside", roots(tree), restricted=True)
    assert OPT_IN_FLAG in e.value.fix


@pytest.mark.parametrize(
    "listen, share, opted_in, restricted",
    [
        (False, False, False, False),  # local only
        (False, False, True, False),
        (True, False, False, True),  # --listen
        (False, True, False, True),  # --share
        (True, True, False, True),
        (True, False, True, False),  # --listen --enable-insecure-extension-access
        (False, True, True, False),
        (True, True, True, False),
    ],
)
def test_remote_access_matrix(listen, share, opted_in, restricted):
    assert remote_access_restricted(listen, share, opted_in) is restricted


def test_policy_from_settings(tree):
    settings = StudioSettings(extra_allowed_dirs=[tree / "outside"], allow_any_path=True)
    policy = path_policy(tree / "root", settings, [tree / "models", tree / "root"])
    assert policy == PathPolicy((tree / "root", tree / "models", tree / "outside"), allow_any=True)
    assert policy.confine("proj") == (tree / "root" / "proj").resolve()
    assert policy.confine("/etc") == Path("/etc").resolve()

    restricted = path_policy(tree / "root", settings, [tree / "models"], restricted=True)
    assert restricted.allow_any is False  # the settings switch is not enough while remote-reachable
    assert restricted.confine(tree / "outside" / "secret.txt") == (tree / "outside" / "secret.txt").resolve()
    with pytest.raises(StudioError) as e:
        restricted.confine("/etc")
    assert OPT_IN_FLAG in e.value.fix
