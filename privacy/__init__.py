"""De-identification, pure: what may leave the gateway of each reading (R3).

`keys` (versioned HMAC keys), `operators` (pseudonymise, mask, generalise, validators),
`policy` (the per-field policy file, `policy.yaml`), `deidentify` (the hot-path applier with
the face-consent check), `fieldmap` (vendor → canonical field map behind docs/privacy.md),
`audit` (the tamper-evident audit chain). `baseline` is the interim allow-list.
"""
