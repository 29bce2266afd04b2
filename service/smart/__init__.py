"""The PGx profile SMART on FHIR app (mounted by service.main under settings.smart_app_path)."""
