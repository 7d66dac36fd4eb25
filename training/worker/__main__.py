"""`python -m seam.training.worker WORKDIR`: run (or continue) the training whose spec.json is
in WORKDIR, as the embedded service's child process does; exit 0 whatever the training's
outcome (status.json says it), 3 when another process runs it, 2 for an unreadable spec."""
from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m seam.training.worker WORKDIR", file=sys.stderr)
        return 2
    from seam.training.worker.run import AlreadyRunning, run_training

    from seam.modelrepo.trainings import read_spec

    workdir = Path(args[0])
    try:
        spec = read_spec(workdir)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    try:
        result = run_training(spec, workdir)
    except AlreadyRunning as exc:
        print(str(exc), file=sys.stderr)
        return 3
    print(result.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
