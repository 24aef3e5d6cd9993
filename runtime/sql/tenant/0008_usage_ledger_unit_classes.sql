-- Tenant migration 0008: cost as the provider computes it. Each ledger row says how many of its input
-- tokens were read from the provider's prompt cache or written to it, and how many of its output
-- tokens were reasoning: parts of `input_tokens` and `output_tokens`, each priced at its own class
-- (the price book's `cached_input_per_mtok`, `cache_write_per_mtok`, `reasoning_per_mtok`), never
-- counted twice. Rows from before carry zeros (they were priced as plain input and output).
ALTER TABLE usage_ledger
    ADD COLUMN cached_input_tokens bigint NOT NULL DEFAULT 0 CHECK (cached_input_tokens >= 0),
    ADD COLUMN cache_write_tokens  bigint NOT NULL DEFAULT 0 CHECK (cache_write_tokens >= 0),
    ADD COLUMN reasoning_tokens    bigint NOT NULL DEFAULT 0 CHECK (reasoning_tokens >= 0),
    ADD CONSTRAINT usage_ledger_classes_within
        CHECK (cached_input_tokens + cache_write_tokens <= input_tokens
               AND reasoning_tokens <= output_tokens);

-- The ledger's append with the classes (one array per column, as before).
DROP FUNCTION ledger_append(text, text, uuid[], uuid[], text[], text[], text[], bigint[], bigint[],
                            bigint[], text[], text[], boolean[]);
CREATE FUNCTION ledger_append(
    p_tenant text, p_schema text, p_ids uuid[], p_request_ids uuid[], p_subjects text[],
    p_providers text[], p_models text[], p_input bigint[], p_output bigint[], p_cost bigint[],
    p_versions text[], p_outcomes text[], p_estimated boolean[], p_cached bigint[],
    p_cache_write bigint[], p_reasoning bigint[]) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant, true), set_config('search_path', p_schema, true);
    INSERT INTO usage_ledger (id, tenant_id, request_id, subject, provider, model, input_tokens,
                              output_tokens, cost_micro_usd, price_book_version, outcome,
                              usage_estimated, cached_input_tokens, cache_write_tokens,
                              reasoning_tokens)
    SELECT i, p_tenant, r, s, p, m, ti, t_o, c, v, o, e, ca, cw, re
      FROM unnest(p_ids, p_request_ids, p_subjects, p_providers, p_models, p_input, p_output,
                  p_cost, p_versions, p_outcomes, p_estimated, p_cached, p_cache_write, p_reasoning)
           AS u(i, r, s, p, m, ti, t_o, c, v, o, e, ca, cw, re);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
