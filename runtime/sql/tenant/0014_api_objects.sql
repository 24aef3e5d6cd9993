-- Tenant migration 0014: the objects of the API surface (issue 12), in the tenant's own tier.
--
-- Conversations and their messages, prompt templates and their immutable versions, the tenant's
-- members (roles granted by its admins), and the tenant's own audit chain (what its admins did
-- through the API, denied attempts included). Every row carries `tenant_id` (the pool tier's
-- row-level security keys on it) and a uuid `id` (exports and tier moves order rows by it).
--
-- What the tenant's own role may do is the grants (`runtime::schema::TENANT_TABLE_GRANTS`):
-- template versions and audit events are SELECT and INSERT only, so no statement the runtime can
-- send changes or removes one; messages are never edited either. Foreign keys name `tenant_id`
-- too, so no row can point at another tenant's object even where tenants share tables.
CREATE TABLE conversations (
    tenant_id     text        NOT NULL,
    id            uuid        NOT NULL,
    -- The subject (the token's `sub`) it belongs to: only that subject reaches it.
    subject       text        NOT NULL,
    title         text        NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    -- The model its messages are answered by, as the caller wrote it (resolved in the policy at
    -- each message), and an optional system prompt sent before its messages.
    model         text        NOT NULL,
    system_prompt text        CHECK (length(system_prompt) <= 32768),
    messages      integer     NOT NULL DEFAULT 0 CHECK (messages >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX conversations_by_subject ON conversations (tenant_id, subject, created_at DESC, id DESC);

CREATE TABLE conversation_messages (
    tenant_id       text        NOT NULL,
    id              uuid        NOT NULL,
    conversation_id uuid        NOT NULL,
    seq             integer     NOT NULL CHECK (seq >= 1),
    role            text        NOT NULL CHECK (role IN ('user', 'assistant')),
    content         text        NOT NULL,
    -- The model that answered (assistant messages) and the ledger row that metered the call.
    model           text,
    ledger_id       uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, conversation_id, seq),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE prompt_templates (
    tenant_id      text        NOT NULL,
    id             uuid        NOT NULL,
    name           text        NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    description    text        NOT NULL DEFAULT '' CHECK (length(description) <= 1000),
    latest_version integer     NOT NULL CHECK (latest_version >= 1),
    created_by     text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);

CREATE TABLE prompt_template_versions (
    tenant_id   text        NOT NULL,
    id          uuid        NOT NULL,
    template_id uuid        NOT NULL,
    version     integer     NOT NULL CHECK (version >= 1),
    body        text        NOT NULL CHECK (length(body) BETWEEN 1 AND 65536),
    -- The variables the body names, sorted: what a render must be given, exactly.
    variables   text[]      NOT NULL,
    sha256      text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, template_id, version),
    FOREIGN KEY (tenant_id, template_id) REFERENCES prompt_templates (tenant_id, id)
);

-- Roles the tenant's admins grant its subjects, on top of what their tokens carry.
CREATE TABLE members (
    tenant_id  text        NOT NULL,
    id         uuid        NOT NULL,
    subject    text        NOT NULL CHECK (length(subject) BETWEEN 1 AND 255),
    roles      text[]      NOT NULL,
    granted_by text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, subject)
);

-- The tenant's own audit chain (`runtime::audit`): the same events and encoding as the platform's
-- chain in `control.audit_events`, appended in the action's transaction.
CREATE TABLE audit_events (
    tenant_id  text        NOT NULL,
    id         uuid        NOT NULL,
    seq        bigint      NOT NULL CHECK (seq >= 1),
    at         timestamptz NOT NULL,
    actor      text        NOT NULL,
    action     text        NOT NULL,
    target     text        NOT NULL,
    outcome    text        NOT NULL CHECK (outcome ~ '^[a-z][a-z_]*$'),
    request_id text        NOT NULL,
    detail     text        NOT NULL,
    prev_hash  text        NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash       text        NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    v          bigint      NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, seq)
);
