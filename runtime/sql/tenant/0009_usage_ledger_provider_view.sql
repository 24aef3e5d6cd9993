-- Tenant migration 0009: each ledger row says what the provider said of the call, next to our own
-- figures, so finance can trace it to the provider's records and see where the two disagree:
-- `provider_request_id` (OpenAI's and Anthropic's response id, Bedrock's x-amzn-RequestId),
-- `provider_usage` (the usage object as the provider sent it, at most 2 KB), and
-- `provider_cost_micro_usd` (the provider's own cost where it reports one, rounded up to the micro-USD
-- as ours is). `cost_differs` says the provider's cost differs from ours (kept by a check, so it
-- cannot disagree with the two costs), and the partial index below finds those rows without a scan
-- (a column of its own, so the planner knows how rare they are).
-- `cost_tags` are the tenant's cost-allocation tags from its manifest (with `tenant` and `tier`) at
-- the time of the call, as its AWS resources carry them. Rows from before have no provider figures and
-- empty tags.
ALTER TABLE usage_ledger
    ADD COLUMN provider_request_id     text   CHECK (length(provider_request_id) BETWEEN 1 AND 256),
    ADD COLUMN provider_usage          jsonb  CHECK (length(provider_usage::text) <= 4096),
    ADD COLUMN provider_cost_micro_usd bigint CHECK (provider_cost_micro_usd >= 0),
    ADD COLUMN cost_tags               jsonb  NOT NULL DEFAULT '{}'
        CHECK (jsonb_typeof(cost_tags) = 'object'),
    ADD COLUMN cost_differs            boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT usage_ledger_cost_differs_says_so
        CHECK (cost_differs = coalesce(provider_cost_micro_usd <> cost_micro_usd, false));
CREATE INDEX usage_ledger_cost_differs ON usage_ledger (tenant_id, created_at) WHERE cost_differs;

-- The ledger's append with the provider's figures and the tags (one array per column, as before).
DROP FUNCTION ledger_append(text, text, uuid[], uuid[], text[], text[], text[], bigint[], bigint[],
                            bigint[], text[], text[], boolean[], bigint[], bigint[], bigint[]);
CREATE FUNCTION ledger_append(
    p_tenant text, p_schema text, p_ids uuid[], p_request_ids uuid[], p_subjects text[],
    p_providers text[], p_models text[], p_input bigint[], p_output bigint[], p_cost bigint[],
    p_versions text[], p_outcomes text[], p_estimated boolean[], p_cached bigint[],
    p_cache_write bigint[], p_reasoning bigint[], p_provider_ids text[], p_provider_usage text[],
    p_provider_cost bigint[], p_tags text[]) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant, true), set_config('search_path', p_schema, true);
    INSERT INTO usage_ledger (id, tenant_id, request_id, subject, provider, model, input_tokens,
                              output_tokens, cost_micro_usd, price_book_version, outcome,
                              usage_estimated, cached_input_tokens, cache_write_tokens,
                              reasoning_tokens, provider_request_id, provider_usage,
                              provider_cost_micro_usd, cost_tags, cost_differs)
    SELECT i, p_tenant, r, s, p, m, ti, t_o, c, v, o, e, ca, cw, re, pi, pu::jsonb, pc, tg::jsonb,
           coalesce(pc <> c, false)
      FROM unnest(p_ids, p_request_ids, p_subjects, p_providers, p_models, p_input, p_output,
                  p_cost, p_versions, p_outcomes, p_estimated, p_cached, p_cache_write, p_reasoning,
                  p_provider_ids, p_provider_usage, p_provider_cost, p_tags)
           AS u(i, r, s, p, m, ti, t_o, c, v, o, e, ca, cw, re, pi, pu, pc, tg);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
