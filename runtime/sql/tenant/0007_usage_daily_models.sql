-- Tenant migration 0007: per-day totals by provider and model, kept by the ledger's statement
-- trigger like the per-day totals, so a month's report by model reads one row per day and model
-- instead of the month's ledger rows (a month of ten million calls is a few hundred rows here). The
-- tenant role may only read them. Existing rows are counted in (the pool per tenant, fenced).
LOCK TABLE usage_ledger IN SHARE MODE;
CREATE TABLE usage_daily_models (
    tenant_id      text   NOT NULL,
    day            date   NOT NULL,
    provider       text   NOT NULL,
    model          text   NOT NULL,
    requests       bigint NOT NULL CHECK (requests >= 0),
    input_tokens   bigint NOT NULL CHECK (input_tokens >= 0),
    output_tokens  bigint NOT NULL CHECK (output_tokens >= 0),
    cost_micro_usd bigint NOT NULL CHECK (cost_micro_usd >= 0),
    PRIMARY KEY (tenant_id, day, provider, model)
);
INSERT INTO usage_daily_models (tenant_id, day, provider, model, requests, input_tokens,
                                output_tokens, cost_micro_usd)
SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date, provider, model, count(*),
       sum(input_tokens), sum(output_tokens), sum(cost_micro_usd)
  FROM usage_ledger GROUP BY 1, 2, 3, 4;

-- The ledger's statement trigger, now keeping both rollups (same name, same rights: SECURITY
-- DEFINER, allow-listed, search path pinned).
CREATE OR REPLACE FUNCTION usage_daily_add() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO usage_daily AS d (tenant_id, day, requests, input_tokens, output_tokens, cost_micro_usd)
    SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date, count(*), sum(input_tokens)::bigint,
           sum(output_tokens)::bigint, sum(cost_micro_usd)::bigint
      FROM added GROUP BY 1, 2
    ON CONFLICT (tenant_id, day) DO UPDATE
        SET requests = d.requests + EXCLUDED.requests,
            input_tokens = d.input_tokens + EXCLUDED.input_tokens,
            output_tokens = d.output_tokens + EXCLUDED.output_tokens,
            cost_micro_usd = d.cost_micro_usd + EXCLUDED.cost_micro_usd;
    INSERT INTO usage_daily_models AS d (tenant_id, day, provider, model, requests, input_tokens,
                                         output_tokens, cost_micro_usd)
    SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date, provider, model, count(*),
           sum(input_tokens)::bigint, sum(output_tokens)::bigint, sum(cost_micro_usd)::bigint
      FROM added GROUP BY 1, 2, 3, 4
    ON CONFLICT (tenant_id, day, provider, model) DO UPDATE
        SET requests = d.requests + EXCLUDED.requests,
            input_tokens = d.input_tokens + EXCLUDED.input_tokens,
            output_tokens = d.output_tokens + EXCLUDED.output_tokens,
            cost_micro_usd = d.cost_micro_usd + EXCLUDED.cost_micro_usd;
    INSERT INTO token_debits (tenant_id, produced)
    SELECT tenant_id, sum(output_tokens)::bigint FROM added GROUP BY 1;
    DELETE FROM budget_holds h USING added a WHERE h.id = a.id;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION usage_daily_add() FROM PUBLIC;
