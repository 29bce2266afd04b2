"""Population screening (`pgx-cds screen`): every patient of a FHIR Bulk Data export through the hooks' engine.

- :mod:`service.screen.findings`: one patient's evaluation (service.evaluate) -> worklist findings;
- :mod:`service.screen.summary`: counts without identifiers (summary.json, report.html);
- :mod:`service.screen.source`: reading NDJSON (gzip too) and grouping resources by patient on disk;
- :mod:`service.screen.local`: the embedded engine (process pool);
- :mod:`service.screen.report`: the self-contained HTML report;
- :mod:`service.screen.bulk`: the Bulk Data ``$export`` client (SMART Backend Services);
- :mod:`service.screen.spark`: the Spark engine (same per-patient function, grouped by Spark);
- :mod:`service.screen.run`: the command's orchestration (summary.json, report, formats).
"""
