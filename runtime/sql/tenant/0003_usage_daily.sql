-- Tenant migration 0003: per-day usage totals, kept by a trigger on the ledger, so `/v1/usage` reads a
-- tenant's totals from one row per day instead of scanning its whole ledger. The tenant role may only
-- read them (the ledger stays the append-only source of truth; these are derived from it).
-- Runs as the migrator with search_path set to the tenant's schema (or `pool`); names are unqualified
-- and the function's search path is pinned to that schema (`SET search_path FROM CURRENT`).
-- Inserts wait while the totals are backfilled, so none is counted twice or missed.
LOCK TABLE usage_ledger IN SHARE MODE;
CREATE TABLE usage_daily (
    tenant_id      text   NOT NULL,
    day            date   NOT NULL,
    requests       bigint NOT NULL CHECK (requests >= 0),
    input_tokens   bigint NOT NULL CHECK (input_tokens >= 0),
    output_tokens  bigint NOT NULL CHECK (output_tokens >= 0),
    cost_micro_usd bigint NOT NULL CHECK (cost_micro_usd >= 0),
    PRIMARY KEY (tenant_id, day)
);
-- SECURITY DEFINER (the migrator) so the tenant role needs no write privilege on the totals; allow-listed
-- by the catalog check, with its search path pinned. In the pool it writes under the maintenance
-- policy, fenced to the transaction's tenant like every other maintenance write.
CREATE FUNCTION usage_daily_add() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO usage_daily AS d (tenant_id, day, requests, input_tokens, output_tokens, cost_micro_usd)
    VALUES (NEW.tenant_id, (NEW.created_at AT TIME ZONE 'UTC')::date, 1, NEW.input_tokens,
            NEW.output_tokens, NEW.cost_micro_usd)
    ON CONFLICT (tenant_id, day) DO UPDATE
        SET requests = d.requests + 1,
            input_tokens = d.input_tokens + EXCLUDED.input_tokens,
            output_tokens = d.output_tokens + EXCLUDED.output_tokens,
            cost_micro_usd = d.cost_micro_usd + EXCLUDED.cost_micro_usd;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION usage_daily_add() FROM PUBLIC;
CREATE TRIGGER usage_daily_add AFTER INSERT ON usage_ledger
    FOR EACH ROW EXECUTE FUNCTION usage_daily_add();
-- Existing rows (schema and dedicated tiers; in the pool the migrator sees no tenant's rows here, and
-- each tenant's totals are backfilled when tenantctl converges it, fenced to that tenant).
INSERT INTO usage_daily (tenant_id, day, requests, input_tokens, output_tokens, cost_micro_usd)
SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date, count(*), sum(input_tokens), sum(output_tokens),
       sum(cost_micro_usd)
  FROM usage_ledger GROUP BY 1, 2;
