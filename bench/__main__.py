"""`python -m bench [options]`: the same as `pgx-cds bench` (run from the repository root)."""

from service.cli import app

if __name__ == "__main__":
    app(["bench", *__import__("sys").argv[1:]])
