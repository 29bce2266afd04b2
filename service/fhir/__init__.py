"""FHIR stage: prefetch templates, the async FHIR client, patient data loading, order and genomic parsing.

Modules: ``prefetch`` (templates, REQUIRED_KEYS), ``client`` (FhirClient, Budget, FhirError,
validate_fhir_server), ``patient_data`` (load_patient_data, resolve_medications), ``orders``
(extract_orders), ``context`` (current medications and conditions -> the pgx stage's typed
PatientContext), ``genomics`` (build_profile). ``models`` holds the typed results (the pgx-owned ones
re-exported). This stage sits above ``service.pgx``: it builds pgx's models; pgx never imports it.
"""
