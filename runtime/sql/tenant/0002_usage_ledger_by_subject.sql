-- Tenant migration 0002: per-subject usage lookups (finance reconciles spend per user or service).
-- Leading with tenant_id makes the pool tier's row-level-security predicate part of the index range.
CREATE INDEX usage_ledger_subject_created_at ON usage_ledger (tenant_id, subject, created_at);
