"""Entry point for `spark-submit` (cluster deployments): the `pgx-cds screen` command with the Spark engine.

    spark-submit --master k8s://https://<api> ... local:///opt/pgx-cds/service/spark_submit.py \\
        --input s3a://bucket/export/ --output /shared/screen-out

The Spark master, executors and resources come from spark-submit (or the Spark operator); `--engine spark`
is implied.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from service.cli import app

    args = list(sys.argv[1:] if argv is None else argv)
    if "--engine" not in args:
        args += ["--engine", "spark"]
    app(["screen", *args])


if __name__ == "__main__":
    main()
