"""The package layering stated in pyproject.toml ([tool.importlinter]) holds: no package imports one above
it (in particular `cards` and `feedback` never import `hooks`: the CDS Hooks models live below them in
`service.cdshooks`), and the runtime never imports the benchmark or the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_linter_contracts_are_kept():
    exe = Path(sys.executable).parent / "lint-imports"  # installed with the test extras
    assert exe.is_file(), "import-linter is missing: pip install -e '.[test]'"
    out = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_the_old_schemas_module_still_re_exports_the_models():
    """Code written against `service.hooks.schemas` (parallel branches) keeps working."""
    from service.cdshooks import models
    from service.hooks import schemas

    assert schemas.Card is models.Card and schemas.HookRequest is models.HookRequest
    assert set(schemas.__all__) == {n for n in dir(models) if isinstance(getattr(models, n), type)
                                    and getattr(models, n).__module__ == models.__name__ and not n.startswith("_")}
