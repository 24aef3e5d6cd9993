-- Tenant migration 0002: per-subject usage lookups (finance reconciles spend per user or service).
CREATE INDEX usage_ledger_subject_created_at ON usage_ledger (subject, created_at);
