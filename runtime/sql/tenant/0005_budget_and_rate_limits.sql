-- Tenant migration 0005: budgets with holds and rate limits that hold across runtime processes, and
-- daily totals kept once per statement.
--
-- Before a model call the runtime calls `tenant_admit` as the tenant's own role, in one statement:
-- under a lock on the tenant's meter row it refills the tenant's two token buckets (requests and
-- model tokens per minute), refuses when either is empty (with how long to wait), then refuses when
-- the month's committed spend plus the open holds plus this call's worst case would pass the budget,
-- and otherwise records a hold for the worst case. The limits are parameters, passed from the
-- registry by the runtime: the tenant's role stores no limit it could raise. The hold's id is the id
-- the call's ledger row will have; the ledger's trigger deletes the hold in the same statement that
-- adds the row's cost to the daily totals, so spend moves from "held" to "committed" atomically. A call
-- that fails before it produced anything deletes its hold (`tenant_release`); a hold nobody settles
-- or releases (a process killed mid-call) expires. Holds and meters are working state, not data of
-- record: their writes need no fsync (a hold lost in a database crash frees its budget early; the
-- ledger row, committed durably, is what settles spend). A runtime process busy with a tenant leases
-- slices of its budget and buckets through the same function instead of asking once per call (see
-- `tenant_admit` below and `runtime/src/metering/limits.rs`).
--
-- The ledger's writer commits the rows of concurrent calls together (group commit, one statement of
-- many rows), so its trigger now runs once per statement: it reads the inserted rows from its
-- transition table and adds them to the daily totals per tenant and day in one upsert (same
-- function name, same rights: SECURITY DEFINER, allow-listed, search path pinned).
CREATE TABLE budget_holds (
    id               uuid        PRIMARY KEY,
    tenant_id        text        NOT NULL,
    amount_micro_usd bigint      NOT NULL CHECK (amount_micro_usd >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL
);
CREATE INDEX budget_holds_tenant_expires ON budget_holds (tenant_id, expires_at);
-- Tokens calls produced, appended by the ledger's trigger and consumed (deleted) by the next admission
-- under its meter lock: so a ledger commit never waits for, or holds, the meter row admissions take.
CREATE TABLE token_debits (
    tenant_id text   NOT NULL,
    produced  bigint NOT NULL CHECK (produced >= 0)
);
CREATE INDEX token_debits_tenant ON token_debits (tenant_id);
CREATE TABLE tenant_meters (
    tenant_id     text        PRIMARY KEY,
    -- Thousandths of a request / of a token; the token bucket may go negative (in debt) when calls
    -- produce more than was estimated at admission.
    request_milli bigint      NOT NULL,
    token_milli   bigint      NOT NULL,
    refilled_at   timestamptz NOT NULL
);

-- This month's (UTC) committed spend and the unexpired holds, at `p_at`: in one statement, so one
-- snapshot (a settlement committing meanwhile is seen whole or not at all). Both the admission and
-- the tenant's `/v1/usage` read the budget through it.
CREATE FUNCTION tenant_budget_state(p_tenant text, p_at timestamptz, OUT spent bigint, OUT held bigint)
    LANGUAGE sql STABLE AS $$
    SELECT (SELECT coalesce(sum(cost_micro_usd), 0)::bigint FROM usage_daily
             WHERE tenant_id = p_tenant
               AND day >= date_trunc('month', p_at AT TIME ZONE 'UTC')::date),
           (SELECT coalesce(sum(amount_micro_usd), 0)::bigint FROM budget_holds
             WHERE tenant_id = p_tenant AND expires_at > p_at)
$$;

-- The functions below are each called as one statement in a transaction of its own (one message,
-- one reply). Each first sets the transaction's tenant settings from its first two parameters (the
-- runtime passes them from the verified tenant), exactly as an explicit transaction of the tenant
-- handle would: `app.tenant_id` (the pool's second row-level check) and the search path pinned to
-- the schema the registry points at.
-- An admission takes, in one statement, between a minimum (what the call needs: its worst case, one
-- request, its estimated input tokens) and a wanted amount of budget, requests and tokens, under the
-- hold `p_hold`. A call admitted on its own holds exactly its worst case (minimum = wanted) under the
-- id its ledger row will have. A runtime process serving a busy tenant instead takes a lease: a slice
-- it then admits calls from in memory, renewed under the same hold id, which it resizes to what its
-- calls in flight still need plus a new slice, handing back (`p_*_back`) the requests and tokens of the
-- previous slice it did not use. The budget part of a slice is at most a sixteenth of what the month
-- has left beyond the minimum, so processes share the rest and the last calls of a month are
-- admitted one by one. On refusal nothing is taken and the lease's hold keeps its size.
CREATE FUNCTION tenant_admit(
    p_tenant text, p_schema text, p_hold uuid, p_amount_min bigint, p_amount_want bigint,
    p_budget bigint, p_hold_secs integer, p_rpm integer, p_tpm bigint,
    p_req_min integer, p_req_want integer, p_req_back integer,
    p_tok_min bigint, p_tok_want bigint, p_tok_back bigint,
    OUT verdict text, OUT retry_after_ms bigint, OUT spent bigint, OUT held bigint,
    OUT amount bigint, OUT requests integer, OUT tokens bigint)
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
    IF verdict IS NULL THEN
        amount := greatest(p_amount_min, 0)
                  + least(greatest(p_amount_want - p_amount_min, 0), greatest(free, 0) / 16);
        IF amount > 0 THEN
            INSERT INTO budget_holds AS h (id, tenant_id, amount_micro_usd, expires_at)
            VALUES (p_hold, p_tenant, amount, now_ts + make_interval(secs => p_hold_secs))
            ON CONFLICT (id) DO UPDATE
                SET amount_micro_usd = EXCLUDED.amount_micro_usd, expires_at = EXCLUDED.expires_at
                WHERE h.tenant_id = p_tenant;
        ELSE
            DELETE FROM budget_holds WHERE id = p_hold AND tenant_id = p_tenant;
        END IF;
        held := held - own + amount;
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

CREATE FUNCTION tenant_release(p_tenant text, p_schema text, p_hold uuid) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant, true), set_config('search_path', p_schema, true),
            set_config('synchronous_commit', 'off', true);
    DELETE FROM budget_holds WHERE id = p_hold AND tenant_id = p_tenant;
END
$$;

-- The ledger's append, as one statement committed durably (the group commit's batch or one row):
-- the rows as one array per column.
CREATE FUNCTION ledger_append(
    p_tenant text, p_schema text, p_ids uuid[], p_request_ids uuid[], p_subjects text[],
    p_providers text[], p_models text[], p_input bigint[], p_output bigint[], p_cost bigint[],
    p_versions text[], p_outcomes text[], p_estimated boolean[]) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant, true), set_config('search_path', p_schema, true);
    INSERT INTO usage_ledger (id, tenant_id, request_id, subject, provider, model, input_tokens,
                              output_tokens, cost_micro_usd, price_book_version, outcome,
                              usage_estimated)
    SELECT i, p_tenant, r, s, p, m, ti, t_o, c, v, o, e
      FROM unnest(p_ids, p_request_ids, p_subjects, p_providers, p_models, p_input, p_output,
                  p_cost, p_versions, p_outcomes, p_estimated) AS u(i, r, s, p, m, ti, t_o, c, v, o, e);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- The ledger's statement trigger: the daily totals, and the settlement: it deletes the holds of the
-- rows it adds (a row's id is its call's hold id) and appends the tokens the calls produced, for the
-- next admission to charge to the tenant's token bucket. It takes no lock an admission takes.
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
    INSERT INTO token_debits (tenant_id, produced)
    SELECT tenant_id, sum(output_tokens)::bigint FROM added GROUP BY 1;
    DELETE FROM budget_holds h USING added a WHERE h.id = a.id;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION usage_daily_add() FROM PUBLIC;
DROP TRIGGER usage_daily_add ON usage_ledger;
CREATE TRIGGER usage_daily_add AFTER INSERT ON usage_ledger
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION usage_daily_add();
