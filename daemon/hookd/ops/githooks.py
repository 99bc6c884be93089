"""``hookd hooks install-git`` / ``uninstall-git``: git hooks that record commits, checkouts,
merges and rewrites (amend, rebase) through ``hookd-emit``.

Each installed hook is a small POSIX ``sh`` script. It reads the commit id and branch at once
(one ``git rev-parse``), does the rest (author, subject, files changed) in a detached background
process that ends with one ``hookd-emit`` call, then ``exec``s the hook that was there before, if
any, so git sees that hook's exit status as before. git never waits on hookd, and a missing or
failing hookd never fails a git command.

A hook already in place is kept as ``<name>.hookd-orig`` beside ours and still runs; installing
again only refreshes our scripts; uninstalling puts the original back. The hooks directory is
the one git uses, ``core.hooksPath`` included (``git rev-parse --git-path hooks``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hookd.errors import ConfigError, HookdError

HOOKS = ("post-commit", "post-checkout", "post-merge", "post-rewrite")
#: Marks a hook file as ours (install refreshes it, uninstall removes it).
MARKER = "# hookd-git-hook v1"
ORIG_SUFFIX = ".hookd-orig"
#: Most file names listed in one event (the count is always complete).
MAX_FILES = 100

# The part every hook shares: JSON assembly in one awk, fed "key<TAB>value" lines and
# "file<TAB>added<TAB>deleted<TAB>path" lines from `git diff --numstat`.
_COMMON = r"""
hookd_json() {
    awk -F '	' -v max=__MAX_FILES__ '
        function esc(s) {
            gsub(/\\/, "\\\\\\\\", s); gsub(/"/, "\\\"", s); gsub(/\t/, "\\t", s); gsub(/\r/, "\\r", s)
            gsub(/[\001-\010\013\014\016-\037]/, "?", s)  # other control characters: not JSON
            return "\"" s "\""
        }
        $1 == "file" {
            n++
            if ($2 ~ /^[0-9]+$/) { ins += $2; del += $3 }
            if (n <= max) files = files (n > 1 ? "," : "") esc(substr($0, length($1 $2 $3) + 4))
            next
        }
        $1 ~ /^json:/ { kv = kv sep "\"" substr($1, 6) "\":" substr($0, length($1) + 2); sep = ","; next }
        { kv = kv sep "\"" $1 "\":" esc(substr($0, length($1) + 2)); sep = "," }
        END {
            printf "{%s,\"files_changed\":%d,\"insertions\":%d,\"deletions\":%d,\"files\":[%s]", kv, n, ins, del, files
            if (n > max) printf ",\"files_truncated\":true"
            print "}"
        }'
}
hookd_commit_info() {  # $1: commit
    git log -1 --no-show-signature --format='author	%an%nauthor_email	%ae%nsubject	%s' "$1" --
}
hookd_now() {  # epoch seconds when the hook ran: the event's ts, so that the background sends
    # (which may reach hookd in any order) still sort as git ran them. %N is GNU/busybox; where
    # date does not know it, whole seconds.
    hookd_t=$(date +%s.%N 2>/dev/null)
    case $hookd_t in
        ''|*[!0-9.]*|*.) hookd_t=$(date +%s 2>/dev/null) ;;
    esac
    case $hookd_t in
        ''|*[!0-9.]*) ;;
        *) printf '%s' "$hookd_t" ;;
    esac
}
hookd_branch() {  # the branch checked out, or the one a rebase in progress rewrites (HEAD is detached then)
    hookd_b=${1:-$(git rev-parse --abbrev-ref HEAD 2>/dev/null)}
    if [ "$hookd_b" = HEAD ]; then
        for hookd_d in rebase-merge rebase-apply; do
            hookd_f=$(git rev-parse --git-path "$hookd_d/head-name" 2>/dev/null)
            if [ -f "$hookd_f" ]; then
                read -r hookd_b < "$hookd_f"
                hookd_b=${hookd_b#refs/heads/}
                break
            fi
        done
    fi
    printf '%s' "$hookd_b"
}
hookd_numstat() {  # git diff arguments; -z: names unquoted (a newline in a name becomes a space)
    git diff --numstat -z --no-renames "$@" -- | tr '\n\0' ' \n' | sed 's/^/file	/'
}
"""

_TEMPLATE = r"""#!/bin/sh
__MARKER__
# Installed by `hookd hooks install-git`; removed by `hookd hooks uninstall-git`.
# Records this __HOOK__ event in hookd without making git wait, then runs the hook that was
# here before (__HOOK____ORIG__), whose exit status git sees as usual.
HOOKD_EMIT=${HOOKD_EMIT:-__EMIT__}
hookd_top=$(git rev-parse --show-toplevel 2>/dev/null || pwd)
__COMMON__
hookd_ts=$(hookd_now)
__PRELUDE__
if [ -x "$HOOKD_EMIT" ]; then
__BODY__
else
    echo "hookd: $HOOKD_EMIT is missing, so this __HOOK__ hook records nothing:" \
        "run \`hookd hooks install-git\` again, or \`hookd hooks uninstall-git\`" >&2
fi
if [ -x "$0__ORIG__" ]; then
__EXEC_ORIG__
fi
exit 0
"""

# Each body reads what can change under it (HEAD) at once and leaves the rest to a background
# process with no terminal and no pipes of git's, so that git returns immediately.
_BODIES = {
    "post-commit": r"""
    { read -r hookd_sha; read -r hookd_branch; } <<EOF
$(git rev-parse HEAD --abbrev-ref HEAD 2>/dev/null)
EOF
    hookd_rebasing=false
    if [ "$hookd_branch" = HEAD ]; then  # a rebase picking commits: name the branch it rewrites
        hookd_branch=$(hookd_branch HEAD)
        [ "$hookd_branch" = HEAD ] || hookd_rebasing=true
    fi
    (
        {
            [ -z "$hookd_ts" ] || printf 'json:ts\t%s\n' "$hookd_ts"
            printf 'repo\t%s\nsha\t%s\nbranch\t%s\njson:rebasing\t%s\n' \
                "$hookd_top" "$hookd_sha" "$hookd_branch" "$hookd_rebasing"
            hookd_commit_info "$hookd_sha"
            if git rev-parse -q --verify "$hookd_sha^" >/dev/null; then
                hookd_numstat "$hookd_sha^" "$hookd_sha"
            else
                hookd_numstat "$(git hash-object -t tree /dev/null)" "$hookd_sha"
            fi
        } | hookd_json | "$HOOKD_EMIT" git_commit
    ) </dev/null >/dev/null 2>&1 &
""",
    "post-checkout": r"""
    hookd_from=${1:-} hookd_to=${2:-} hookd_kind=branch
    [ "${3:-1}" = 1 ] || hookd_kind=files
    hookd_branch=$(git rev-parse --abbrev-ref HEAD 2>/dev/null)
    (
        {
            [ -z "$hookd_ts" ] || printf 'json:ts\t%s\n' "$hookd_ts"
            printf 'repo\t%s\nsha\t%s\nbranch\t%s\nfrom\t%s\nkind\t%s\n' \
                "$hookd_top" "$hookd_to" "$hookd_branch" "$hookd_from" "$hookd_kind"
            hookd_commit_info "$hookd_to"
            case $hookd_from in
                *[!0]*) [ "$hookd_from" = "$hookd_to" ] || hookd_numstat "$hookd_from" "$hookd_to" ;;
            esac
        } | hookd_json | "$HOOKD_EMIT" git_checkout
    ) </dev/null >/dev/null 2>&1 &
""",
    "post-merge": r"""
    { read -r hookd_sha; read -r hookd_orig; read -r hookd_branch; } <<EOF
$(git rev-parse HEAD ORIG_HEAD --abbrev-ref HEAD 2>/dev/null)
EOF
    hookd_squash=false
    [ "${1:-0}" = 1 ] && hookd_squash=true
    if [ "$hookd_squash" = true ]; then  # nothing committed: no reflog entry, ORIG_HEAD is stale
        hookd_orig=
        hookd_message=$(head -n 1 "$(git rev-parse --git-path SQUASH_MSG)" 2>/dev/null)
    else
        hookd_message=$(git reflog -1 --format=%gs 2>/dev/null)
    fi
    (
        {
            [ -z "$hookd_ts" ] || printf 'json:ts\t%s\n' "$hookd_ts"
            printf 'repo\t%s\nsha\t%s\nbranch\t%s\nfrom\t%s\njson:squash\t%s\n' \
                "$hookd_top" "$hookd_sha" "$hookd_branch" "$hookd_orig" "$hookd_squash"
            printf 'message\t%s\n' "$hookd_message"
            hookd_commit_info "$hookd_sha"
            if [ "$hookd_squash" = true ]; then
                hookd_numstat --cached HEAD  # what the squash staged
            elif [ -n "$hookd_orig" ]; then
                hookd_numstat "$hookd_orig" "$hookd_sha"
            fi
        } | hookd_json | "$HOOKD_EMIT" git_merge
    ) </dev/null >/dev/null 2>&1 &
""",
    "post-rewrite": r"""
    hookd_kind=${1:-} hookd_branch=$(hookd_branch) hookd_sha=$(git rev-parse HEAD 2>/dev/null)
    (
        {
            [ -z "$hookd_ts" ] || printf 'json:ts\t%s\n' "$hookd_ts"
            printf 'repo\t%s\nsha\t%s\nbranch\t%s\nkind\t%s\n' "$hookd_top" "$hookd_sha" "$hookd_branch" "$hookd_kind"
            hookd_commit_info "$hookd_sha"
            # git's list, "old new" per rewritten commit: shas are hex, safe in JSON as they are.
            printf '%s\n' "$hookd_rewritten" | awk -v max=__MAX_FILES__ '
                NF >= 2 { n++; if (n <= max) l = l (n > 1 ? "," : "") "{\"old\":\"" $1 "\",\"new\":\"" $2 "\"}" }
                END { printf "json:rewritten_count\t%d\njson:rewritten\t[%s]\n", n, l
                      if (n > max) print "json:rewritten_truncated\ttrue" }'
        } | hookd_json | "$HOOKD_EMIT" git_rewrite
    ) </dev/null >/dev/null 2>&1 &
""",
}

# Before anything is recorded: post-rewrite reads git's list of rewritten commits from stdin now,
# and hands the same lines to the hook it chains.
_PRELUDE = {"post-rewrite": "hookd_rewritten=$(cat)"}
_EXEC_ORIG = {
    "post-rewrite": 'exec "$0__ORIG__" "$@" <<HOOKD_EOF\n$hookd_rewritten\nHOOKD_EOF',
}


def hook_script(name: str, emit: str) -> str:
    """The text of our ``name`` hook, calling the ``hookd-emit`` at ``emit``."""
    return (
        _TEMPLATE.replace("__COMMON__", _COMMON.strip("\n").replace("__MAX_FILES__", str(MAX_FILES)))
        .replace("__PRELUDE__", _PRELUDE.get(name, ":"))
        .replace("__EXEC_ORIG__", "    " + _EXEC_ORIG.get(name, 'exec "$0__ORIG__" "$@"').replace("\\n", "\n"))
        .replace("__BODY__", _BODIES[name].strip("\n"))
        .replace("__MAX_FILES__", str(MAX_FILES))
        .replace("__MARKER__", MARKER)
        .replace("__HOOK__", name)
        .replace("__ORIG__", ORIG_SUFFIX)
        .replace("__EMIT__", _sh_quote(emit))
    )


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _is_ours(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return MARKER.encode() in f.read(512)
    except OSError:
        return False


@dataclass
class Repo:
    hooks_dir: Path
    hooks_path_set: bool  # core.hooksPath decides the directory


def find_repo(repo: Path) -> Repo:
    if shutil.which("git") is None:
        raise HookdError("git is not installed (apt-get install git)")
    if not repo.is_dir():
        raise ConfigError(f"{repo}: no such directory; pass the path of a git repository")

    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        if out.returncode != 0:
            raise HookdError(f"{repo} is not a git repository ({out.stderr.strip()}); run `git init` there first")
        return out.stdout.strip()

    hooks = Path(git("rev-parse", "--path-format=absolute", "--git-path", "hooks"))
    # The work tree's path is not needed, only the check: git cannot find it from inside a
    # repository's .git directory, and such a path stays refused as it always was.
    if git("rev-parse", "--is-bare-repository") != "true":
        git("rev-parse", "--show-toplevel")
    configured = subprocess.run(
        ["git", "-C", str(repo), "config", "core.hooksPath"], capture_output=True, text=True
    ).stdout.strip()
    return Repo(hooks_dir=hooks, hooks_path_set=bool(configured))


def find_emit() -> str:
    """The installed ``hookd-emit``: beside this Python (a venv's bin), else on PATH."""
    here = Path(sys.executable).parent
    path = shutil.which("hookd-emit", path=str(here)) or shutil.which("hookd-emit")
    if path is None:
        raise HookdError(
            f"hookd-emit is neither in {here} nor on PATH; install hookd (`pip install .` in a clone, "
            "or run `./dev run` once) and try again"
        )
    return str(Path(path).resolve())


def install(repo: Path, emit: str | None = None) -> list[str]:
    """Install (or refresh) the hooks; returns one line per hook saying what was done."""
    r = find_repo(repo)
    emit = emit or find_emit()
    r.hooks_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    if r.hooks_path_set:
        lines.append(f"core.hooksPath is set: installing into {r.hooks_dir} (every repository using it gets them)")
    for name in HOOKS:
        path = r.hooks_dir / name
        orig = r.hooks_dir / (name + ORIG_SUFFIX)
        note = ""
        if _is_ours(path):
            what = "refreshed"
        elif path.exists() or path.is_symlink():
            if orig.exists() or orig.is_symlink():
                raise HookdError(
                    f"{path} is not hookd's, and {orig.name} is already taken; move one of them aside and run "
                    "`hookd hooks install-git` again"
                )
            path.rename(orig)
            what = "installed"
            note = f"; the existing hook is kept as {orig.name} and still runs after it"
        else:
            what = "installed"
        if orig.exists() and not note:
            note = f"; {orig.name} still runs after it"
        tmp = path.with_name(f".{name}.hookd-tmp")
        tmp.write_text(hook_script(name, emit))
        tmp.chmod(0o755)
        os.replace(tmp, path)
        lines.append(f"{name}: {what} in {r.hooks_dir}{note}")
    return lines


def uninstall(repo: Path) -> list[str]:
    """Remove our hooks and put back the ones they replaced."""
    r = find_repo(repo)
    lines = []
    for name in HOOKS:
        path = r.hooks_dir / name
        orig = r.hooks_dir / (name + ORIG_SUFFIX)
        if not _is_ours(path):
            lines.append(f"{name}: not hookd's, left alone")
            continue
        path.unlink()
        if orig.exists() or orig.is_symlink():
            orig.rename(path)
            lines.append(f"{name}: removed; the previous hook is back in place")
        else:
            lines.append(f"{name}: removed")
    return lines
