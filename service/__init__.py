"""pgx-cds: pharmacogenomics clinical decision support over CDS Hooks 2.0 and FHIR R4.

The request path is one line of stages, each a module with a typed result:

    hooks (CDS Hooks request)  -> fhir.patient_data  (PatientData)
                               -> fhir.genomics      (GenomicProfile)
                               -> pgx.engine         (list[Recommendation])
                               -> cards.builder      (list[Card])
"""

__version__ = "0.1.0"
