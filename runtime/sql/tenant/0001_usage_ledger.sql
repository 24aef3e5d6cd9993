-- Tenant migration 0001: the usage ledger. Runs as the migrator role with search_path set to the
-- tenant's schema; names are unqualified on purpose so every tier runs the same SQL.
CREATE TABLE usage_ledger (
    id                 uuid        PRIMARY KEY,
    tenant_id          text        NOT NULL,
    request_id         uuid        NOT NULL,
    subject            text        NOT NULL,
    provider           text        NOT NULL,
    model              text        NOT NULL,
    input_tokens       bigint      NOT NULL CHECK (input_tokens >= 0),
    output_tokens      bigint      NOT NULL CHECK (output_tokens >= 0),
    cost_micro_usd     bigint      NOT NULL CHECK (cost_micro_usd >= 0),
    price_book_version text        NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_ledger_created_at ON usage_ledger (created_at);
