-- Tenant migration 0011: a monthly budget per subject (the verified token's `sub`: one user or
-- service of the tenant), as well as the tenant's.
--
-- Each subject's committed spend per UTC month is kept by the ledger's statement trigger (one
-- upsert per subject in the statement), the way the daily totals are, so an admission reads one row
-- instead of the subject's ledger rows. Existing rows are counted in (the pool per tenant, fenced).
-- A hold names the subject it covers when the tenant budgets per subject: a call's own hold, or a
-- runtime process's lease for that subject (leases are then taken per subject). `tenant_admit`
-- takes the subject and its budget as parameters, from the registry as the tenant's budget is (the
-- tenant's role stores no limit it could raise), and refuses a call whose worst case does not fit
-- in what is left of either budget; nothing changes for a tenant without a subject budget.
LOCK TABLE usage_ledger IN SHARE MODE;
CREATE TABLE usage_subject_monthly (
    tenant_id      text   NOT NULL,
    subject        text   NOT NULL,
    month          date   NOT NULL CHECK (month = date_trunc('month', month)::date),
    requests       bigint NOT NULL CHECK (requests >= 0),
    cost_micro_usd bigint NOT NULL CHECK (cost_micro_usd >= 0),
    PRIMARY KEY (tenant_id, subject, month)
);
INSERT INTO usage_subject_monthly (tenant_id, subject, month, requests, cost_micro_usd)
SELECT tenant_id, subject, date_trunc('month', created_at AT TIME ZONE 'UTC')::date, count(*),
       sum(cost_micro_usd)
  FROM usage_ledger GROUP BY 1, 2, 3;

ALTER TABLE budget_holds ADD COLUMN subject text;
CREATE INDEX budget_holds_tenant_subject ON budget_holds (tenant_id, subject, expires_at)
    WHERE subject IS NOT NULL;

-- This month's (UTC) committed spend of one subject and its unexpired holds, at `p_at`, in one
-- snapshot: what admissions and the tenant's `/v1/usage` read.
CREATE FUNCTION tenant_subject_budget_state(p_tenant text, p_subject text, p_at timestamptz,
                                            OUT spent bigint, OUT held bigint)
    LANGUAGE sql STABLE AS $$
    SELECT (SELECT coalesce(sum(cost_micro_usd), 0)::bigint FROM usage_subject_monthly
             WHERE tenant_id = p_tenant AND subject = p_subject
               AND month = date_trunc('month', p_at AT TIME ZONE 'UTC')::date),
           (SELECT coalesce(sum(amount_micro_usd), 0)::bigint FROM budget_holds
             WHERE tenant_id = p_tenant AND subject = p_subject AND expires_at > p_at)
$$;

-- The ledger's statement trigger, now keeping the subjects' months too (same name, same rights:
-- SECURITY DEFINER, allow-listed, search path pinned).
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
    INSERT INTO usage_subject_monthly AS s (tenant_id, subject, month, requests, cost_micro_usd)
    SELECT tenant_id, subject, date_trunc('month', created_at AT TIME ZONE 'UTC')::date, count(*),
           sum(cost_micro_usd)::bigint
      FROM added GROUP BY 1, 2, 3
    ON CONFLICT (tenant_id, subject, month) DO UPDATE
        SET requests = s.requests + EXCLUDED.requests,
            cost_micro_usd = s.cost_micro_usd + EXCLUDED.cost_micro_usd;
    INSERT INTO token_debits (tenant_id, produced)
    SELECT tenant_id, sum(output_tokens)::bigint FROM added GROUP BY 1;
    DELETE FROM budget_holds h USING added a WHERE h.id = a.id;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION usage_daily_add() FROM PUBLIC;

-- The admission (migration 0005) with the subject: `p_subject` names the hold's subject and
-- `p_subject_budget` its monthly budget (both NULL when the tenant budgets per tenant only). A call
-- fits when its worst case fits in what is left of the tenant's month and of the subject's; a
-- lease's budget slice is sized by the smaller of the two.
DROP FUNCTION tenant_admit(text, text, uuid, bigint, bigint, bigint, integer, integer, bigint, integer,
                           integer, integer, bigint, bigint, bigint);
CREATE FUNCTION tenant_admit(
    p_tenant text, p_schema text, p_hold uuid, p_amount_min bigint, p_amount_want bigint,
    p_budget bigint, p_hold_secs integer, p_rpm integer, p_tpm bigint,
    p_req_min integer, p_req_want integer, p_req_back integer,
    p_tok_min bigint, p_tok_want bigint, p_tok_back bigint,
    p_subject text, p_subject_budget bigint,
    OUT verdict text, OUT retry_after_ms bigint, OUT spent bigint, OUT held bigint,
    OUT amount bigint, OUT requests integer, OUT tokens bigint,
    OUT subject_spent bigint, OUT subject_held bigint)
    LANGUAGE plpgsql AS $$
DECLARE
    m tenant_meters%ROWTYPE;
    now_ts timestamptz := clock_timestamp();
    elapsed_ms bigint;
    req bigint;
    tok bigint;
    need bigint := least(greatest(p_tok_min, 0), p_tpm) * 1000;
    debt bigint;
    own bigint;
    free bigint;
    subject_free bigint;
    own_subject bigint := 0;
    refilled timestamptz;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant, true), set_config('search_path', p_schema, true),
            set_config('synchronous_commit', 'off', true);
    SELECT * INTO m FROM tenant_meters WHERE tenant_id = p_tenant FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO tenant_meters (tenant_id, request_milli, token_milli, refilled_at)
        VALUES (p_tenant, p_rpm::bigint * 1000, p_tpm * 1000, now_ts)
        ON CONFLICT (tenant_id) DO NOTHING;
        SELECT * INTO m FROM tenant_meters WHERE tenant_id = p_tenant FOR UPDATE;
    END IF;
    WITH d AS (DELETE FROM token_debits WHERE tenant_id = p_tenant RETURNING produced)
    SELECT coalesce(sum(produced), 0)::bigint INTO debt FROM d;
    -- A full minute refills a bucket completely; capping the elapsed time keeps the products in range.
    -- What a lease hands back returns to its bucket, never past the bucket's size.
    -- Whole milliseconds only, and the meter's clock moves by exactly those: rounding each
    -- statement's elapsed time would refill a busy tenant's buckets faster than its rate.
    elapsed_ms := greatest(0, floor(extract(epoch FROM now_ts - m.refilled_at) * 1000)::bigint);
    IF elapsed_ms >= 60000 THEN
        elapsed_ms := 60000;
        refilled := now_ts;
    ELSE
        refilled := m.refilled_at + elapsed_ms * interval '1 millisecond';
    END IF;
    req := least(p_rpm::bigint * 1000,
                 m.request_milli + elapsed_ms * p_rpm / 60 + greatest(p_req_back, 0)::bigint * 1000);
    tok := least(p_tpm * 1000, m.token_milli + elapsed_ms * p_tpm / 60 + greatest(p_tok_back, 0) * 1000)
           - debt * 1000;
    retry_after_ms := 0;
    amount := 0;
    requests := 0;
    tokens := 0;
    subject_spent := 0;
    subject_held := 0;
    IF p_req_min > 0 AND req < p_req_min::bigint * 1000 THEN
        verdict := 'requests';
        retry_after_ms := ((p_req_min::bigint * 1000 - req) * 60 + p_rpm - 1) / p_rpm;
    ELSIF p_req_min > 0 AND (tok < need OR tok <= 0) THEN
        verdict := 'tokens';
        retry_after_ms := ((greatest(need, 1) - tok) * 60 + p_tpm - 1) / p_tpm;
    END IF;
    DELETE FROM budget_holds WHERE tenant_id = p_tenant AND expires_at <= now_ts;
    SELECT s.spent, s.held INTO spent, held FROM tenant_budget_state(p_tenant, now_ts) s;
    SELECT coalesce(sum(amount_micro_usd), 0)::bigint INTO own FROM budget_holds
     WHERE id = p_hold AND tenant_id = p_tenant;
    -- What the month has left for this hold: the budget minus committed spend and the other holds.
    free := p_budget - spent - (held - own) - greatest(p_amount_min, 0);
    -- A lease given back (no request asked for) only shrinks its hold: it is never refused.
    IF verdict IS NULL AND p_req_min > 0 AND free < 0 THEN
        verdict := 'budget';
    END IF;
    IF p_subject_budget IS NOT NULL THEN
        SELECT s.spent, s.held INTO subject_spent, subject_held
          FROM tenant_subject_budget_state(p_tenant, p_subject, now_ts) s;
        -- The hold's own amount, if it is already this subject's, is replaced, not added to.
        SELECT coalesce(sum(amount_micro_usd), 0)::bigint INTO own_subject FROM budget_holds
         WHERE id = p_hold AND tenant_id = p_tenant AND subject = p_subject;
        subject_free := p_subject_budget - subject_spent - (subject_held - own_subject)
                        - greatest(p_amount_min, 0);
        IF verdict IS NULL AND p_req_min > 0 AND subject_free < 0 THEN
            verdict := 'subject_budget';
        END IF;
        free := least(free, subject_free);
    END IF;
    IF verdict IS NULL THEN
        amount := greatest(p_amount_min, 0)
                  + least(greatest(p_amount_want - p_amount_min, 0), greatest(free, 0) / 16);
        IF amount > 0 THEN
            INSERT INTO budget_holds AS h (id, tenant_id, amount_micro_usd, expires_at, subject)
            VALUES (p_hold, p_tenant, amount, now_ts + make_interval(secs => p_hold_secs), p_subject)
            ON CONFLICT (id) DO UPDATE
                SET amount_micro_usd = EXCLUDED.amount_micro_usd, expires_at = EXCLUDED.expires_at,
                    subject = EXCLUDED.subject
                WHERE h.tenant_id = p_tenant;
        ELSE
            DELETE FROM budget_holds WHERE id = p_hold AND tenant_id = p_tenant;
        END IF;
        held := held - own + amount;
        IF p_subject_budget IS NOT NULL THEN
            subject_held := subject_held - own_subject + amount;
        END IF;
        requests := least(greatest(p_req_want, p_req_min), req / 1000)::integer;
        tokens := CASE WHEN requests > 0
                       THEN greatest(least(p_tok_min, p_tpm), least(p_tok_want, tok / 1000))
                       ELSE 0 END;
        req := req - requests::bigint * 1000;
        tok := tok - tokens * 1000;
        verdict := 'ok';
    END IF;
    UPDATE tenant_meters SET request_milli = req, token_milli = tok, refilled_at = refilled
     WHERE tenant_id = p_tenant;
END
$$;
