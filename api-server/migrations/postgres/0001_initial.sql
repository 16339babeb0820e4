-- Terarchitect schema (PostgreSQL). Tables and columns keep the original app's names; additions
-- (leases, attempts, failure reasons, the stored cancel flag, memory index) are marked.

CREATE TABLE projects (
    id             UUID PRIMARY KEY,
    name           VARCHAR(255) NOT NULL,
    description    TEXT,
    project_path   TEXT,
    github_url     TEXT,
    execution_mode VARCHAR(50) NOT NULL DEFAULT 'docker' CHECK (execution_mode IN ('docker', 'local')),
    -- addition: bumped by every write that changes what worker-context returns
    revision       BIGINT NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE graphs (
    id         UUID PRIMARY KEY,
    project_id UUID NOT NULL UNIQUE REFERENCES projects (id) ON DELETE CASCADE,
    nodes      JSONB NOT NULL DEFAULT '[]',
    edges      JSONB NOT NULL DEFAULT '[]',
    version    INTEGER NOT NULL DEFAULT 1,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE kanban_boards (
    id         UUID PRIMARY KEY,
    project_id UUID NOT NULL UNIQUE REFERENCES projects (id) ON DELETE CASCADE,
    columns    JSONB NOT NULL DEFAULT '[{"id": "backlog", "title": "Backlog", "order": 0}]',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE tickets (
    id                  UUID PRIMARY KEY,
    project_id          UUID NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    column_id           TEXT NOT NULL,
    title               VARCHAR(255) NOT NULL,
    description         TEXT,
    associated_node_ids JSONB DEFAULT '[]',
    associated_edge_ids JSONB DEFAULT '[]',
    priority            VARCHAR(50) DEFAULT 'medium',
    status              VARCHAR(50) DEFAULT 'todo',
    -- addition: the cancel flag lives in the database (the original kept it in process memory)
    cancel_requested    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX tickets_project_column ON tickets (project_id, column_id, updated_at DESC);

CREATE TABLE notes (
    id         UUID PRIMARY KEY,
    project_id UUID NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    node_id    TEXT,
    edge_id    TEXT,
    title      VARCHAR(255),
    content    TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX notes_project ON notes (project_id, created_at);

CREATE TABLE execution_logs (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            UUID NOT NULL UNIQUE,
    project_id    UUID NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    ticket_id     UUID REFERENCES tickets (id) ON DELETE CASCADE,
    session_id    VARCHAR(255),
    step          VARCHAR(100),
    summary       TEXT,
    raw_output    TEXT,
    input_tokens  INTEGER,
    output_tokens INTEGER,
    success       BOOLEAN NOT NULL DEFAULT TRUE,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX execution_logs_ticket ON execution_logs (ticket_id, created_at, seq);

CREATE TABLE prs (
    id          UUID PRIMARY KEY,
    project_id  UUID NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    ticket_id   UUID NOT NULL UNIQUE REFERENCES tickets (id) ON DELETE CASCADE,
    pr_number   INTEGER,
    pr_url      TEXT,
    commit_hash VARCHAR(255),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE pr_review_comments (
    id                 UUID PRIMARY KEY,
    project_id         UUID NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    ticket_id          UUID REFERENCES tickets (id) ON DELETE SET NULL,
    pr_number          INTEGER NOT NULL,
    github_comment_id  BIGINT NOT NULL,
    author_login       VARCHAR(255),
    body               TEXT,
    comment_created_at TIMESTAMPTZ,
    addressed_at       TIMESTAMPTZ,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (project_id, pr_number, github_comment_id)
);
CREATE INDEX pr_review_comments_open ON pr_review_comments (project_id, pr_number, addressed_at);

CREATE TABLE app_settings (
    id         UUID PRIMARY KEY,
    key        VARCHAR(255) NOT NULL UNIQUE,
    value      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE agent_jobs (
    id                UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    -- addition: insertion order, the tie-breaker of the claim order
    seq               BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    ticket_id         UUID NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    project_id        UUID NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    kind              VARCHAR(50) NOT NULL CHECK (kind IN ('ticket', 'review')),
    status            VARCHAR(50) NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    pr_number         INTEGER,
    comment_body      TEXT,
    github_comment_id BIGINT,
    -- additions: lease, attempts and outcome
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempt           INTEGER NOT NULL DEFAULT 0,
    claimed_at        TIMESTAMPTZ,
    lease_seconds     INTEGER,
    lease_expires_at  TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ,
    fail_reason       VARCHAR(100),
    fail_message      TEXT,
    CHECK (kind <> 'review' OR pr_number IS NOT NULL)
);
-- At most one pending-or-running job per ticket.
CREATE UNIQUE INDEX agent_jobs_one_active_per_ticket ON agent_jobs (ticket_id)
    WHERE status IN ('pending', 'running');
CREATE INDEX agent_jobs_pending ON agent_jobs (created_at, seq) WHERE status = 'pending';
CREATE INDEX agent_jobs_pending_by_project ON agent_jobs (project_id, created_at, seq) WHERE status = 'pending';
CREATE INDEX agent_jobs_leases ON agent_jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX agent_jobs_ticket ON agent_jobs (ticket_id);

-- Wake long-polling claimers (in every api-server replica) whenever a job becomes pending,
-- including rows inserted by hand.
CREATE FUNCTION agent_jobs_notify_pending() RETURNS trigger AS $$
BEGIN
    IF NEW.status = 'pending' THEN
        PERFORM pg_notify('terarchitect_agent_jobs', NEW.project_id::text);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER agent_jobs_pending_notify
    AFTER INSERT OR UPDATE OF status ON agent_jobs
    FOR EACH ROW EXECUTE FUNCTION agent_jobs_notify_pending();

-- Memory: passages with a per-project inverted index for BM25 and optional embeddings.
CREATE TABLE memory_docs (
    id              UUID PRIMARY KEY,
    project_id      UUID NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    content         TEXT NOT NULL,
    content_hash    VARCHAR(64) NOT NULL,
    length          INTEGER NOT NULL,
    embedding       BYTEA,
    embedding_model TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (project_id, content_hash)
);

CREATE TABLE memory_terms (
    project_id UUID NOT NULL,
    term       VARCHAR(64) NOT NULL,
    doc_id     UUID NOT NULL REFERENCES memory_docs (id) ON DELETE CASCADE,
    tf         INTEGER NOT NULL,
    PRIMARY KEY (project_id, term, doc_id)
);
CREATE INDEX memory_terms_doc ON memory_terms (doc_id);
