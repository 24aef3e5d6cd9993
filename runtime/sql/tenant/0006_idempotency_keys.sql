-- Tenant migration 0006: idempotency keys, so a client's retry of a model call is never charged twice.
--
-- A model call that carries an `Idempotency-Key` header claims the key, as the tenant's own role,
-- before its admission and its upstream call (`tenant_claim_key`, one statement). A key already
-- claimed in the last 24 hours is refused with the request id that claimed it: no upstream call, no
-- ledger row. A call that fails before anything was produced or recorded gives its key back
-- (`tenant_release_key`), so the client's retry is served. Claims older than 24 hours expire (the
-- claim deletes a few expired ones each time). Keys are working state, not data of record: their
-- writes need no fsync (a claim lost in a database crash lets one retry through, whose ledger row
-- is still written).
CREATE TABLE idempotency_keys (
    tenant_id   text        NOT NULL,
    key         text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_id  uuid        NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_claimed ON idempotency_keys (tenant_id, claimed_at);

-- The request id that holds `p_key` (this call's `p_request`, when it claimed it now).
CREATE FUNCTION tenant_claim_key(p_tenant text, p_schema text, p_key text, p_request uuid,
                                 OUT holder uuid)
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant, true), set_config('search_path', p_schema, true),
            set_config('synchronous_commit', 'off', true);
    DELETE FROM idempotency_keys
     WHERE tenant_id = p_tenant
       AND key IN (SELECT key FROM idempotency_keys
                    WHERE tenant_id = p_tenant AND claimed_at < now() - interval '24 hours'
                    LIMIT 16);
    INSERT INTO idempotency_keys (tenant_id, key, request_id)
    VALUES (p_tenant, p_key, p_request)
    ON CONFLICT (tenant_id, key) DO NOTHING
    RETURNING request_id INTO holder;
    IF holder IS NULL THEN
        SELECT request_id INTO holder FROM idempotency_keys
         WHERE tenant_id = p_tenant AND key = p_key;
    END IF;
END
$$;

CREATE FUNCTION tenant_release_key(p_tenant text, p_schema text, p_key text, p_request uuid)
    RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant, true), set_config('search_path', p_schema, true),
            set_config('synchronous_commit', 'off', true);
    DELETE FROM idempotency_keys
     WHERE tenant_id = p_tenant AND key = p_key AND request_id = p_request;
END
$$;
