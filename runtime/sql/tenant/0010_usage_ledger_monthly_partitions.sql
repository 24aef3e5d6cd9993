-- Tenant migration 0010: the ledger partitioned by month (UTC), so a month's rows live together: a
-- report or an export of one month reads one partition, and rows past retention go with their
-- partition. The ledger is rebuilt as a partitioned table with the same columns, checks and
-- defaults; every row is copied over (the rollups already count them: the statement trigger is
-- attached after the copy) and the old table is dropped. Grants and (in the pool) row-level
-- security are applied to the new table by the same convergence that runs this migration.
--
-- A partitioned table's primary key must hold its partition key: it is (tenant_id, id, created_at),
-- led by the tenant like every unique index of the pool (security case 41). A row's `created_at` is
-- chosen once by the runtime when the row is made, so a row written again (a batch retried after its
-- COMMIT was sent) is still refused by its key, never written twice.
--
-- `usage_ledger_partitions(from, months)` adds the monthly partitions of that span that are missing
-- (`usage_ledger_yYYYYmMM`); tenantctl calls it for this month and the next twelve on every
-- convergence, and `tenantctl migrate` for every tenant. A row of a month without a partition lands
-- in `usage_ledger_default`, never refused; that month's partition is then left to the default (a
-- partition cannot be carved out of rows the default already holds) and a notice says so.
LOCK TABLE usage_ledger IN ACCESS EXCLUSIVE MODE;
CREATE TABLE usage_ledger_monthly (LIKE usage_ledger INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (created_at);
ALTER TABLE usage_ledger RENAME TO usage_ledger_before_partitions;
-- In the pool the ledger's row-level security is forced, so the migrator (its owner) would see no
-- tenant's rows: lifted on the old table for the copy, which must take every row of every tenant.
ALTER TABLE usage_ledger_before_partitions NO FORCE ROW LEVEL SECURITY;
ALTER TABLE usage_ledger_monthly RENAME TO usage_ledger;
CREATE TABLE usage_ledger_default PARTITION OF usage_ledger DEFAULT;

CREATE FUNCTION usage_ledger_partitions(p_from date, p_months integer) RETURNS integer
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    month date;
    name text;
    added integer := 0;
BEGIN
    FOR i IN 0 .. p_months - 1 LOOP
        month := (date_trunc('month', p_from) + make_interval(months => i))::date;
        name := 'usage_ledger_' || to_char(month, '"y"YYYY"m"MM');
        CONTINUE WHEN to_regclass(name) IS NOT NULL;
        IF EXISTS (SELECT 1 FROM usage_ledger_default
                    WHERE created_at >= (month::timestamp AT TIME ZONE 'UTC')
                      AND created_at < ((month + interval '1 month')::timestamp AT TIME ZONE 'UTC')) THEN
            RAISE NOTICE 'ledger rows of % are in the default partition; that month keeps them there',
                to_char(month, 'YYYY-MM');
            CONTINUE;
        END IF;
        EXECUTE format('CREATE TABLE %I PARTITION OF usage_ledger FOR VALUES FROM (%L) TO (%L)', name,
                       month::timestamp AT TIME ZONE 'UTC',
                       (month + interval '1 month')::timestamp AT TIME ZONE 'UTC');
        added := added + 1;
    END LOOP;
    RETURN added;
END
$$;
REVOKE ALL ON FUNCTION usage_ledger_partitions(date, integer) FROM PUBLIC;

-- A partition for every month the ledger already has, then this month and the next twelve.
SELECT usage_ledger_partitions(m::date, 1)
  FROM (SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC') AS m
          FROM usage_ledger_before_partitions) months;
SELECT usage_ledger_partitions((now() AT TIME ZONE 'UTC')::date, 13);

INSERT INTO usage_ledger SELECT * FROM usage_ledger_before_partitions;
DO $$
BEGIN
    IF (SELECT count(*) FROM usage_ledger) <> (SELECT count(*) FROM usage_ledger_before_partitions) THEN
        RAISE EXCEPTION 'the partitioned ledger does not hold every row of the old one';
    END IF;
END
$$;
DROP TABLE usage_ledger_before_partitions;

ALTER TABLE usage_ledger ADD PRIMARY KEY (tenant_id, id, created_at);
CREATE INDEX usage_ledger_created_at ON usage_ledger (created_at);
CREATE INDEX usage_ledger_subject_created_at ON usage_ledger (tenant_id, subject, created_at);
CREATE INDEX usage_ledger_cost_differs ON usage_ledger (tenant_id, created_at) WHERE cost_differs;
CREATE TRIGGER usage_daily_add AFTER INSERT ON usage_ledger
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION usage_daily_add();

-- The ledger's append with each row's time, chosen by the runtime (one array per column, as before).
DROP FUNCTION ledger_append(text, text, uuid[], uuid[], text[], text[], text[], bigint[], bigint[],
                            bigint[], text[], text[], boolean[], bigint[], bigint[], bigint[], text[],
                            text[], bigint[], text[]);
CREATE FUNCTION ledger_append(
    p_tenant text, p_schema text, p_ids uuid[], p_request_ids uuid[], p_subjects text[],
    p_providers text[], p_models text[], p_input bigint[], p_output bigint[], p_cost bigint[],
    p_versions text[], p_outcomes text[], p_estimated boolean[], p_cached bigint[],
    p_cache_write bigint[], p_reasoning bigint[], p_provider_ids text[], p_provider_usage text[],
    p_provider_cost bigint[], p_tags text[], p_created timestamptz[]) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant, true), set_config('search_path', p_schema, true);
    INSERT INTO usage_ledger (id, tenant_id, request_id, subject, provider, model, input_tokens,
                              output_tokens, cost_micro_usd, price_book_version, outcome,
                              usage_estimated, cached_input_tokens, cache_write_tokens,
                              reasoning_tokens, provider_request_id, provider_usage,
                              provider_cost_micro_usd, cost_tags, cost_differs, created_at)
    SELECT i, p_tenant, r, s, p, m, ti, t_o, c, v, o, e, ca, cw, re, pi, pu::jsonb, pc, tg::jsonb,
           coalesce(pc <> c, false), at
      FROM unnest(p_ids, p_request_ids, p_subjects, p_providers, p_models, p_input, p_output,
                  p_cost, p_versions, p_outcomes, p_estimated, p_cached, p_cache_write, p_reasoning,
                  p_provider_ids, p_provider_usage, p_provider_cost, p_tags, p_created)
           AS u(i, r, s, p, m, ti, t_o, c, v, o, e, ca, cw, re, pi, pu, pc, tg, at);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
