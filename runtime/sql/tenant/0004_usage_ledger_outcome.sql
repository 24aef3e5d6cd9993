-- Tenant migration 0004: how each metered call ended, and whether its token counts are the
-- provider's own. A stream the client cancelled, or the provider cut, is still recorded with the
-- tokens produced so far; when the provider reported no usage they were counted by the runtime and
-- the row says so, so finance can tell measured from estimated spend.
ALTER TABLE usage_ledger
    ADD COLUMN outcome text NOT NULL DEFAULT 'complete'
        CHECK (outcome IN ('complete', 'cancelled', 'upstream_cut')),
    ADD COLUMN usage_estimated boolean NOT NULL DEFAULT false;
