import subprocess

from skipjump.provenance import PACKAGE, code_version, provenance


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_code_version_names_the_commit_the_package_came_from_and_whether_it_was_edited(tmp_path):
    package = tmp_path / "repo" / "pkg"
    package.mkdir(parents=True)
    (package / "mod.py").write_text("x = 1\n")
    assert code_version(package) == "unknown"  # no git repository yet
    git(tmp_path / "repo", "init", "-q")
    git(tmp_path / "repo", "add", ".")
    git(tmp_path / "repo", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    commit = git(tmp_path / "repo", "rev-parse", "--short", "HEAD")
    assert code_version(package) == commit
    (tmp_path / "repo" / "notes.txt").write_text("outside the package\n")
    assert code_version(package) == commit  # only the package's own files count
    (package / "mod.py").write_text("x = 2\n")
    assert code_version(package) == commit + "+dirty"


def test_provenance_reports_this_package():
    assert provenance()["code"] == code_version(PACKAGE)
