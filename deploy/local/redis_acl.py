"""Writes the ACL file of the local Redis for the cluster profile (services.sh, KAFKA_NODES=3).

One user per component (ingest, alerts, console, notifier, models, recorder) with only its keys and
commands, ``default`` off: the table is in pipeline/common/redis_acl.py, derived from the key
names of pipeline/common/redis.py. The passwords are read from ``--secrets/<user>`` (written
once per state dir by services.sh, mode 600); the file holds only their SHA-256, and nothing
secret is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's pipeline package

from pipeline.common.redis import COMPONENTS  # noqa: E402
from pipeline.common.redis_acl import acl_file  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--secrets", required=True, help="folder with one password file per user")
    p.add_argument("--out", required=True, help="the ACL file to write (mode 600)")
    p.add_argument("--prefix", default="vigil:", help="redis.key_prefix of the deployment")
    args = p.parse_args(argv)
    secrets = Path(args.secrets)
    passwords = {}
    for user in COMPONENTS:
        try:
            passwords[user] = (secrets / user).read_text().strip()
        except OSError as e:
            raise SystemExit(
                f"redis_acl: cannot read the password of {user}: {e.strerror}"
            ) from None
    text = acl_file(passwords, args.prefix)
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(out)
    print(f"redis_acl: users {', '.join(COMPONENTS)} for keys {args.prefix}*, default off ({out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
