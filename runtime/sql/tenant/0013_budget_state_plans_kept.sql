-- Tenant migration 0013: the budget-state functions keep their plans.
--
-- `tenant_budget_state` and `tenant_subject_budget_state` were SQL functions returning a record:
-- Postgres cannot inline those, and plans a SQL function's query afresh on every call (a quarter of
-- a millisecond here, on every admission statement and every `/v1/usage`). As PL/pgSQL functions
-- (same names, arguments and results) their query plans are kept for the session.
CREATE OR REPLACE FUNCTION tenant_budget_state(p_tenant text, p_at timestamptz,
                                               OUT spent bigint, OUT held bigint)
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT coalesce(sum(cost_micro_usd), 0)::bigint INTO spent FROM usage_daily
     WHERE tenant_id = p_tenant AND day >= date_trunc('month', p_at AT TIME ZONE 'UTC')::date;
    SELECT coalesce(sum(amount_micro_usd), 0)::bigint INTO held FROM budget_holds
     WHERE tenant_id = p_tenant AND expires_at > p_at;
END
$$;

CREATE OR REPLACE FUNCTION tenant_subject_budget_state(p_tenant text, p_subject text,
                                                       p_at timestamptz,
                                                       OUT spent bigint, OUT held bigint)
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT coalesce(sum(cost_micro_usd), 0)::bigint INTO spent FROM usage_subject_monthly
     WHERE tenant_id = p_tenant AND subject = p_subject
       AND month = date_trunc('month', p_at AT TIME ZONE 'UTC')::date;
    SELECT coalesce(sum(amount_micro_usd), 0)::bigint INTO held FROM budget_holds
     WHERE tenant_id = p_tenant AND subject = p_subject AND expires_at > p_at;
END
$$;
