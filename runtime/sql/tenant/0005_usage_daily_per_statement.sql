-- Tenant migration 0005: the daily totals are kept once per statement instead of once per row. The
-- ledger's writer commits the rows of concurrent requests together (group commit, one INSERT of many
-- rows); a row trigger would update the same day's totals once per row in that transaction. The
-- statement trigger reads the inserted rows from its transition table and adds them per tenant and
-- day in one upsert. Same function name, same rights (SECURITY DEFINER, allow-listed, search path
-- pinned), same sums: the totals stay equal to the ledger's.
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
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION usage_daily_add() FROM PUBLIC;
DROP TRIGGER usage_daily_add ON usage_ledger;
CREATE TRIGGER usage_daily_add AFTER INSERT ON usage_ledger
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION usage_daily_add();
