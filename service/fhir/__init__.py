"""FHIR stage: prefetch templates, the async FHIR client, patient data loading, order and genomic parsing.

Modules: ``prefetch`` (templates, REQUIRED_KEYS), ``client`` (FhirClient, Budget, FhirError,
validate_fhir_server), ``patient_data`` (load_patient_data, resolve_medications), ``orders``
(extract_orders), ``genomics`` (build_profile). ``models`` holds the typed results.
"""
