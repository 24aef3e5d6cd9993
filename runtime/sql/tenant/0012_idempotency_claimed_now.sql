-- Tenant migration 0012: an idempotency claim says whether this call claimed the key.
--
-- A request's id may now come from the client (a well-formed `X-Request-Id` is honoured), so two
-- calls can carry the same one: a client retrying with the same headers while its first attempt
-- still runs. Comparing the key's holder with the caller's request id would then let the retry
-- through and charge twice. `tenant_claim_key` now also answers `claimed`: true only when this
-- statement inserted the claim.
DROP FUNCTION tenant_claim_key(text, text, text, uuid);
CREATE FUNCTION tenant_claim_key(p_tenant text, p_schema text, p_key text, p_request uuid,
                                 OUT holder uuid, OUT claimed boolean)
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
    claimed := holder IS NOT NULL;
    IF NOT claimed THEN
        SELECT request_id INTO holder FROM idempotency_keys
         WHERE tenant_id = p_tenant AND key = p_key;
    END IF;
END
$$;
