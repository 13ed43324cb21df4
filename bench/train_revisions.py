"""The train stage of an earlier revision against this checkout's, on the same tables, in turn.

    .venv/bin/python bench/train_revisions.py --tables_root generated/bench/work_575k/warehouse \\
        --base 96e9b03 --name 575k

Checks ``--base`` out into a temporary git worktree (removed afterwards) and runs the train stage of
each checkout, ``spark-submit.sh --task both --mlflow false`` with the checkout's own library, on the
same tables in fresh processes, the base first in odd rounds and second in even ones (``--repeats``
rounds, 2 by default). Reports per run the train stage's seconds, the key and value models' seconds
(their rows' preparation and training), the launch, the median epochs and the best validation
losses; then the medians. Timings on a shared machine drift: compare the two side by side here,
not against another day's figures. Writes ``bench/results/train_revisions_<name>.{json,md}``.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
from pathlib import Path


from _common import REPO, command, options, write_results
from side_by_side import one_run

COLUMNS = (("train stage s", "train_stage_s", 1), ("key s", "key_s", 1), ("value s", "value_s", 1),
           ("launch s", "launch_s", 1), ("key median epoch s", "key_epoch_s", 2), ("key val loss", "key_val_loss", 4),
           ("value val loss", "value_val_loss", 4))


def main() -> None:
    opts, args = options({"name": "bench", "tables_root": "", "base": "", "repeats": "2"})
    name, tables, base, repeats = (opts[o] for o in ("name", "tables_root", "base", "repeats"))
    if not tables or not base or args:
        raise SystemExit("usage: train_revisions.py --tables_root DIR --base REV [--name NAME] [--repeats N]")
    scratch = Path(tempfile.mkdtemp(prefix="train_revisions_"))
    commit = subprocess.run(["git", "rev-parse", "--short", base], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout.strip())
    worktree = scratch / "base"
    subprocess.run(["git", "worktree", "add", "--detach", str(worktree), commit], cwd=REPO, check=True,
                   capture_output=True)
    checkouts = {f"base {commit}": worktree, f"this checkout ({head}{' + changes' if dirty else ''})": REPO}
    runs = []
    try:
        for r in range(int(repeats)):
            for label, repo in (checkouts.items() if r % 2 == 0 else reversed(checkouts.items())):
                runs.append({"round": r + 1, "checkout": label,
                             **one_run(str(Path(tables).resolve()), scratch / f"run_{len(runs)}", [], repo)})
                print(runs[-1], flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO, check=False)
    out = {"name": name, "command": command(__file__), "base": commit,
           "checkouts": list(checkouts), "runs": runs}
    write_results(f"train_revisions_{name}", out, markdown(out))


def markdown(out: dict) -> str:
    base, new = out["checkouts"]
    lines = [f"# The train stage: {base} against {new} ({out['name']})", "",
             f"Command: `.venv/bin/python {out['command']}`. Each checkout's `spark-submit.sh --task both --mlflow false` "
             "with its own library, on the same tables, fresh processes, in turn (the base first in odd rounds).", "",
             "| round | checkout | " + " | ".join(c[0] for c in COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    lines += [f"| {x['round']} | {x['checkout']} | " + " | ".join(f"{x[k]:.{d}f}" for _, k, d in COLUMNS) + " |"
              for x in out["runs"]]
    med = {c: {k: statistics.median(x[k] for x in out["runs"] if x["checkout"] == c) for _, k, _ in COLUMNS}
           for c in (base, new)}
    lines += ["", f"| median | {base} | {new} | {new} / base |", "|---|---|---|---|"]
    lines += [f"| {label} | {med[base][k]:.{d}f} | {med[new][k]:.{d}f} | {med[new][k] / med[base][k]:.3f} |"
              for label, k, d in COLUMNS]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
